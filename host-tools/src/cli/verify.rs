//! `classmod verify`

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use classmod_host::verify::{verify_dir, verify_file, VerifyRow};

use super::keygen::read_public_key;
use super::{model_error, print_json};

#[derive(clap::Args)]
pub struct Args {
    /// A packed directory (with manifest.json) or one blob file.
    path: PathBuf,
    /// Require every blob to be signed by this public key, as a device holding it does.
    #[arg(long)]
    key: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let key = a.key.as_deref().map(read_public_key).transpose()?;
    let rows: Vec<VerifyRow> = if a.path.is_dir() {
        verify_dir(&a.path, key.as_ref()).map_err(|e| model_error(&a.path, e))?
    } else {
        vec![verify_file(&a.path, key.as_ref())]
    };
    println!("{:<30} {:<7} {:<14} {:<17} result", "file", "kind", "class", "signer");
    for r in &rows {
        let result = match &r.result {
            Ok(s) => format!("ok: {s}"),
            Err(e) => format!("REFUSED: {e}"),
        };
        println!(
            "{:<30} {:<7} {:<14} {:<17} {result}",
            r.file,
            r.kind,
            r.class.as_deref().unwrap_or("-"),
            r.signer.as_deref().unwrap_or("unsigned")
        );
    }
    if a.json {
        print_json(&serde_json::to_value(&rows)?);
    }
    let bad = rows.iter().filter(|r| r.result.is_err()).count();
    if bad > 0 {
        return Err(anyhow!("{bad} of {} file(s) refused", rows.len()));
    }
    Ok(())
}
