//! `classmod-edge`: serve class modules on a device.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use classmod_blob::parse_public_key;
use classmod_edge::{Edge, EdgeOptions, LogPin};

#[derive(Parser)]
#[command(name = "classmod-edge", version, about = "Serve classmod class modules on a device")]
struct Args {
    /// Packed directory (`classmod pack`): manifest.json and blobs.
    dir: PathBuf,
    /// Classes to serve, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    classes: Vec<String>,
    /// Board profile name (default: detected from /proc/device-tree/model).
    #[arg(long)]
    board: Option<String>,
    /// Only accept blobs signed by this public key (`classmod keygen`).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Image files to classify at start.
    #[arg(long, num_args = 1..)]
    images: Vec<PathBuf>,
    /// Classify images dropped into this directory.
    #[arg(long)]
    watch: Option<PathBuf>,
    /// Apply module and base blobs dropped into this directory.
    #[arg(long)]
    inbox: Option<PathBuf>,
    /// Load classes that an update adds.
    #[arg(long)]
    serve_new: bool,
    /// Process the images, the inbox and the watched directory once, then exit.
    #[arg(long)]
    once: bool,
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
}

fn run(a: Args) -> Result<()> {
    let key = match &a.key {
        Some(p) => Some(
            parse_public_key(&std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
        ),
        None => None,
    };
    let opts = EdgeOptions {
        dir: a.dir.clone(),
        classes: a.classes.clone(),
        board: a.board.clone(),
        key,
        serve_new: a.serve_new,
    };
    let mut edge = Edge::start(opts, LogPin::default())?;
    if !a.images.is_empty() {
        edge.classify_files(&a.images)?;
    }
    loop {
        if let Some(inbox) = &a.inbox {
            edge.process_inbox(inbox)?;
        }
        if let Some(watch) = &a.watch {
            edge.process_watch(watch)?;
        }
        if a.once {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(a.poll_ms));
        edge.tick(a.poll_ms as u32);
    }
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("classmod-edge: {e:#}");
            ExitCode::from(2)
        }
    }
}
