//! `classmod mender-artifact`

use std::path::PathBuf;

use anyhow::Result;
use classmod_host::mender_artifact::{write, ArtifactSpec};

#[derive(clap::Args)]
pub struct Args {
    /// A packed directory (`classmod pack`).
    #[arg(long)]
    packed: PathBuf,
    /// Classes whose modules the update carries, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    classes: Vec<String>,
    /// Leave out the base blobs (every device already has them).
    #[arg(long)]
    no_base: bool,
    /// Mender device type(s) it installs on (`/var/lib/mender/device_type` of the devices).
    #[arg(long = "device-type", required = true)]
    device_types: Vec<String>,
    /// The artifact's name (default: classmod-CLASSES-vVERSION).
    #[arg(long)]
    name: Option<String>,
    /// Sign the artifact with this Mender key (PEM, RSA or ECDSA; devices check it with
    /// `ArtifactVerifyKey`). Make one: `openssl ecparam -genkey -name prime256v1 -noout -out
    /// mender-signing.pem`, public half: `openssl ec -in mender-signing.pem -pubout -out
    /// mender-verify.pem`.
    #[arg(long = "signing-key")]
    signing_key: Option<PathBuf>,
    /// Mender software name (with --software-version).
    #[arg(long, requires = "software_version")]
    software_name: Option<String>,
    #[arg(long, requires = "software_name")]
    software_version: Option<String>,
    /// The artifact file to write.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    let w = write(&ArtifactSpec {
        packed: &a.packed,
        classes: &a.classes,
        with_bases: !a.no_base,
        device_types: &a.device_types,
        name: a.name.as_deref(),
        signing_key: a.signing_key.as_deref(),
        software: a.software_name.as_deref().zip(a.software_version.as_deref()),
        out: &a.out,
    })?;
    println!(
        "{}: Mender artifact {} (payload classmod-module, {}), {} file(s)",
        a.out.display(),
        w.name,
        if a.signing_key.is_some() { "signed" } else { "unsigned" },
        w.files.len()
    );
    for (class, version) in &w.versions {
        println!("  provides classmod.{class}.version = {version}");
    }
    Ok(())
}
