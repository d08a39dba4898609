//! `classmod import`

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use classmod_host::import::{file_metadata, import_bytes, ImportOptions};
use classmod_runtime::host::MAX_MODEL_BYTES;
use classmod_runtime::io::regular;
use classmod_runtime::Resize;

use super::{check_output_dir, model_error, print_json};

#[derive(clap::Args)]
pub struct Args {
    /// PyTorch state dict exported as safetensors.
    input: PathBuf,
    /// Where to write the self-describing model.
    #[arg(long)]
    out: PathBuf,
    /// `auto`, or the expected architecture: a depth (`resnet20`, `resnet56`, `resnet50`, ...) or
    /// a name the tensors must give (`wide_resnet50_2`).
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
    /// Input size `HxW` or `S` (default 224 for a network with the ImageNet 7x7 stem, else 32
    /// for RGB, 28 for grayscale).
    #[arg(long)]
    input_size: Option<String>,
    /// How images of another size become the input's: `stretch`, or `crop:S` (the shorter side
    /// scaled to S, then the centre cut, torchvision's evaluation transform). Default: `crop:256`
    /// at 224x224 (256/224 of the input) for a network with the ImageNet stem, else `stretch`.
    #[arg(long)]
    resize: Option<String>,
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

fn parse_resize(s: &str) -> Result<Resize> {
    let bad = || anyhow!("--resize `{s}`: expected stretch or crop:S (e.g. crop:256)");
    match s.split_once(':') {
        None if s == "stretch" => Ok(Resize::Stretch),
        Some(("crop", side)) => Ok(Resize::CentreCrop { shorter_side: side.trim().parse().map_err(|_| bad())? }),
        _ => Err(bad()),
    }
}

pub fn run(a: Args) -> Result<()> {
    let arch = match a.arch.as_str() {
        "auto" => None,
        s if s.starts_with("resnet") || s.starts_with("wide_resnet") => Some(s.to_string()),
        s => return Err(anyhow!("--arch `{s}`: expected auto, resnetN (e.g. resnet20, resnet50) or wide_resnetN_2")),
    };
    let opts = ImportOptions {
        arch,
        mean: a.mean,
        std: a.std,
        class_names: a.class_names,
        input_size: a.input_size.as_deref().map(parse_size).transpose()?,
        resize: a.resize.as_deref().map(parse_resize).transpose()?,
    };
    check_output_dir(&a.out)?;
    let bytes = regular::read(&a.input, MAX_MODEL_BYTES).map_err(|e| model_error(&a.input, e))?;
    let model = import_bytes(&bytes, &opts).map_err(|e| model_error(&a.input, e))?;
    model.write(&a.out).map_err(|e| model_error(&a.out, e))?;
    let m = &model.meta;
    let net = m.arch.network();
    let blocks: Vec<usize> = net.stages.iter().map(|s| s.blocks).collect();
    let widths: Vec<usize> = net.stages.iter().map(|s| s.channels).collect();
    eprintln!(
        "imported {} ({blocks:?} blocks, stage widths {widths:?}, shortcut {:?}, {} input channel(s), {} classes, \
         {}x{} input, {:?}) -> {}",
        m.arch.name(),
        net.shortcut,
        net.in_channels,
        net.num_classes,
        m.input.height,
        m.input.width,
        m.input.resize,
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
