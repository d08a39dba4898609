//! `classmod inspect`

use std::path::PathBuf;

use anyhow::Result;
use classmod_runtime::host::key_hex;
use classmod_runtime::io::MappedFile;

use super::{model_error, print_json};

#[derive(clap::Args)]
pub struct Args {
    /// A blob file.
    file: PathBuf,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let map = MappedFile::open(&a.file).map_err(|e| model_error(&a.file, e))?;
    let blob = map.blob(None).map_err(|e| model_error(&a.file, e))?;
    let h = blob.header();
    println!("{}: classmod blob v1, {:?}, {} bytes", a.file.display(), blob.kind(), blob.len());
    println!("  base key      {}", key_hex(&blob.base_key()));
    println!("  input key     {}", key_hex(&blob.input_key()));
    println!("  content hash  {} (verified)", key_hex(&blob.content_hash()));
    println!("  signed        {}", blob.signer().map_or("no".to_string(), |k| format!("yes, key id {}", key_hex(&k))));
    println!(
        "  sections      table @{} ({} tensors), metadata @{} ({} B), data @{} ({} B), trailer @{}",
        u64::from_le(h.table_offset),
        u32::from_le(h.tensor_count),
        u64::from_le(h.meta_offset),
        u64::from_le(h.meta_len),
        u64::from_le(h.data_offset),
        u64::from_le(h.data_len),
        u64::from_le(h.trailer_offset)
    );
    println!("  metadata      {}", blob.meta());
    let module = (blob.kind() == classmod_blob::BlobKind::Module)
        .then(|| classmod_runtime::host::ModuleBlob::decode(&blob).map_err(|e| model_error(&a.file, e)))
        .transpose()?;
    if let Some(m) = &module {
        println!("  module        {}", classmod_host::verify::module_summary(&m.module));
        println!("  version       {}", m.version);
    }
    println!("  {:<48} {:<5} {:<18} {:>10}", "tensor", "dtype", "shape", "bytes");
    for t in blob.tensors() {
        println!(
            "  {:<48} {:<5} {:<18} {:>10}",
            t.name,
            format!("{:?}", t.dtype),
            format!("{:?}", t.shape),
            t.bytes.len()
        );
    }
    if a.json {
        let tensors: Vec<serde_json::Value> = blob
            .tensors()
            .map(|t| serde_json::json!({"name": t.name, "dtype": format!("{:?}", t.dtype), "shape": t.shape, "bytes": t.bytes.len()}))
            .collect();
        print_json(&serde_json::json!({
            "kind": format!("{:?}", blob.kind()),
            "bytes": blob.len(),
            "base_key": key_hex(&blob.base_key()),
            "input_key": key_hex(&blob.input_key()),
            "content_hash": key_hex(&blob.content_hash()),
            "signer": blob.signer().map(|k| key_hex(&k)),
            "meta": serde_json::from_str::<serde_json::Value>(blob.meta()).unwrap_or(serde_json::Value::Null),
            "tensors": tensors,
            "module": module.as_ref().map(|m| classmod_host::verify::module_summary(&m.module)),
            "version": module.as_ref().map(|m| m.version),
        }));
    }
    Ok(())
}
