//! `classmod pack`

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use classmod_host::dataset::{ImageShape, Split};
use classmod_host::pack::{golden_sample, pack, read_groups};

use super::keygen::read_secret_key;
use super::{at_least_one_golden, load_data};

#[derive(clap::Args)]
pub struct Args {
    /// Module blobs, or packed directories of them (as `decompose` writes).
    #[arg(long, num_args = 1.., required = true)]
    modules: Vec<PathBuf>,
    /// Images for the golden self-test vectors: one dataset for every base, or one per base in
    /// the order the bases first appear among the modules.
    #[arg(long, num_args = 1.., required = true)]
    data: Vec<PathBuf>,
    /// Output directory: one blob per base and per module, and `manifest.json`.
    #[arg(long)]
    out: PathBuf,
    /// Sign every blob with this secret key (`classmod keygen`).
    #[arg(long = "sign-key", visible_alias = "key")]
    key: Option<PathBuf>,
    /// Golden images per module: 1 to 64. A device self-tests as many of them as its board
    /// profile says (8 on a Jetson Nano) at every load.
    #[arg(long, default_value_t = 8, value_parser = at_least_one_golden())]
    golden: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Release number of every module packed: a device refuses a module older than the newest
    /// it has committed for the class. Default: the packing time in seconds since the epoch, so
    /// that a later pack is newer.
    #[arg(long)]
    version: Option<u64>,
    /// Also write everything packed as one Mender artifact (payload type classmod-module;
    /// `classmod mender-artifact` makes one of some classes).
    #[arg(long, requires = "device_types")]
    mender_artifact: Option<PathBuf>,
    /// The Mender device type(s) the artifact installs on.
    #[arg(long = "device-type", requires = "mender_artifact")]
    device_types: Vec<String>,
    /// Sign the Mender artifact with this Mender key (PEM; see `classmod mender-artifact --help`).
    #[arg(long, requires = "mender_artifact")]
    mender_signing_key: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let key = a.key.as_deref().map(read_secret_key).transpose()?;
    let groups = read_groups(&a.modules)?;
    if a.data.len() != 1 && a.data.len() != groups.len() {
        return Err(anyhow!(
            "{} datasets for {} base models: give one --data, or one per base",
            a.data.len(),
            groups.len()
        ));
    }
    let mut sets = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let spec = &g.model.meta.input;
        let shape = ImageShape::from(spec);
        let path = &a.data[i.min(a.data.len() - 1)];
        sets.push(load_data(path, Split::Test, shape, Some(&g.model.meta.class_names), None, a.seed)?);
    }
    let golden = |g: usize, m: &classmod_runtime::host::ClassModule| {
        golden_sample(&sets[g], a.golden, a.seed ^ m.class_id.0 as u64)
    };
    let version = a.version.unwrap_or_else(classmod_host::pack::version_now);
    let manifest = pack(&groups, &a.out, key.as_ref(), version, golden)?;
    let bytes: u64 = manifest.bases.iter().map(|b| b.bytes).chain(manifest.modules.iter().map(|m| m.bytes)).sum();
    println!(
        "packed {} base model(s) and {} module(s), version {version}, into {} ({:.1} MiB, {}); manifest.json written last",
        manifest.bases.len(),
        manifest.modules.len(),
        a.out.display(),
        bytes as f64 / (1 << 20) as f64,
        if key.is_some() { "signed" } else { "unsigned" }
    );
    println!("{:<28} {:>10}", "file", "bytes");
    for (file, bytes) in
        manifest.bases.iter().map(|b| (&b.file, b.bytes)).chain(manifest.modules.iter().map(|m| (&m.file, m.bytes)))
    {
        println!("{file:<28} {bytes:>10}");
    }
    if let Some(out) = &a.mender_artifact {
        let w = classmod_host::mender_artifact::write(&classmod_host::mender_artifact::ArtifactSpec {
            packed: &a.out,
            classes: &[],
            with_bases: true,
            device_types: &a.device_types,
            name: None,
            signing_key: a.mender_signing_key.as_deref(),
            software: None,
            out,
        })?;
        println!("{}: Mender artifact {} ({} file(s))", out.display(), w.name, w.files.len());
    }
    Ok(())
}
