//! `classmod import`

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use classmod_host::import::{file_metadata, import_bytes, ImportOptions};
use classmod_runtime::host::MAX_MODEL_BYTES;
use classmod_runtime::io::regular;

use super::{check_output_dir, model_error, print_json};

#[derive(clap::Args)]
pub struct Args {
    /// PyTorch state dict exported as safetensors.
    input: PathBuf,
    /// Where to write the self-describing model.
    #[arg(long)]
    out: PathBuf,
    /// `auto`, or the expected architecture (`resnet20`, `resnet32`, `resnet56`, ...).
    #[arg(long, default_value = "auto")]
    arch: String,
    /// Per-channel mean of pixels scaled to [0, 1] (default: the file's `mean` metadata, else 0).
    #[arg(long, value_delimiter = ',')]
    mean: Option<Vec<f32>>,
    /// Per-channel standard deviation (default: the file's `std` metadata, else 1).
    #[arg(long, value_delimiter = ',')]
    std: Option<Vec<f32>>,
    /// Class names in output order, comma-separated (default: the file's `classes` metadata, else
    /// class0, class1, ...).
    #[arg(long, value_delimiter = ',')]
    class_names: Option<Vec<String>>,
    /// Input size `HxW` or `S` (default 32 for RGB, 28 for grayscale).
    #[arg(long)]
    input_size: Option<String>,
    #[arg(long)]
    json: bool,
}

fn parse_size(s: &str) -> Result<(usize, usize)> {
    let parts: Vec<&str> = s.split(['x', 'X']).collect();
    let n = |p: &str| p.trim().parse::<usize>().map_err(|_| anyhow!("--input-size `{s}`: expected HxW or S"));
    match parts[..] {
        [a] => Ok((n(a)?, n(a)?)),
        [a, b] => Ok((n(a)?, n(b)?)),
        _ => Err(anyhow!("--input-size `{s}`: expected HxW or S")),
    }
}

pub fn run(a: Args) -> Result<()> {
    let depth = match a.arch.as_str() {
        "auto" => None,
        s => Some(
            s.strip_prefix("resnet")
                .and_then(|d| d.parse::<usize>().ok())
                .ok_or_else(|| anyhow!("--arch `{s}`: expected auto or resnetN (e.g. resnet20)"))?,
        ),
    };
    let opts = ImportOptions {
        depth,
        mean: a.mean,
        std: a.std,
        class_names: a.class_names,
        input_size: a.input_size.as_deref().map(parse_size).transpose()?,
    };
    check_output_dir(&a.out)?;
    let bytes = regular::read(&a.input, MAX_MODEL_BYTES).map_err(|e| model_error(&a.input, e))?;
    let model = import_bytes(&bytes, &opts).map_err(|e| model_error(&a.input, e))?;
    model.write(&a.out).map_err(|e| model_error(&a.out, e))?;
    let m = &model.meta;
    eprintln!(
        "imported {} ({} blocks per stage, widths {:?}, shortcut {:?}, {} input channel(s), {} classes) -> {}",
        m.arch.name(),
        m.arch.blocks_per_stage,
        m.arch.widths,
        m.arch.shortcut,
        m.arch.in_channels,
        m.arch.num_classes,
        a.out.display()
    );
    // Say what came from the file rather than from the flags: it decides every later result.
    let from_file = file_metadata(&bytes).unwrap_or_default();
    if opts.mean.is_none() && opts.std.is_none() && (from_file.mean.is_some() || from_file.std.is_some()) {
        eprintln!("normalisation from the file's metadata: mean {:?}, std {:?}", m.input.mean, m.input.std);
    }
    if opts.class_names.is_none() && from_file.class_names.is_some() {
        eprintln!("{} class names from the file's metadata ({} ...)", m.class_names.len(), m.class_names[0]);
    }
    if a.json {
        print_json(&serde_json::json!({
            "arch": m.arch, "name": m.arch.name(), "input": m.input, "classes": m.class_names,
        }));
    }
    Ok(())
}
