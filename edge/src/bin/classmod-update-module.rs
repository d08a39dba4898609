//! `classmod-update-module STATE WORKDIR --dir DEVICE_DIR [...]`: the Mender update module for
//! payload type `classmod-module` (see `classmod_edge::mender`). Mender's client calls the
//! script `deploy/mender/classmod-module`, which reads the device's settings and runs this.
//! Exit 0: the state succeeded; 1: it failed (the reason on stderr, which Mender logs); 2: a
//! usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use clap::Parser;
use classmod_edge::mender::{run_state, ModuleSettings};

#[derive(Parser)]
#[command(name = "classmod-update-module", version, about = "Mender update module for classmod-module artifacts")]
struct Args {
    /// The state Mender runs (ArtifactInstall, ArtifactCommit, ArtifactRollback, ...).
    state: String,
    /// The payload's work directory (`files/`, `header/`, `tmp/`).
    workdir: PathBuf,
    /// The device directory `classmod-edge` serves.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Only install blobs signed by this public key (`classmod keygen`).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Refuse to install without --key.
    #[arg(long)]
    require_key: bool,
    /// Classes an update adds are served by the device (recorded in the manifest).
    #[arg(long)]
    serve_new: bool,
    /// Accept a module older than the newest committed release of its class.
    #[arg(long)]
    allow_downgrade: bool,
    /// Board profile (its largest update); default: detected.
    #[arg(long)]
    board: Option<String>,
}

fn run(a: Args) -> Result<()> {
    // States this module has nothing to do in need no settings.
    if !matches!(a.state.as_str(), "ArtifactInstall" | "ArtifactCommit" | "ArtifactRollback" | "ArtifactFailure") {
        let settings = ModuleSettings {
            dir: PathBuf::new(),
            key: None,
            serve_new: false,
            allow_downgrade: false,
            max_blob_bytes: 0,
            self_test: classmod_runtime::SelfTest::default(),
        };
        run_state(&a.state, &a.workdir, &settings, &mut std::io::stdout())?;
        return Ok(());
    }
    let dir = a.dir.ok_or_else(|| anyhow!("no device directory: give --dir (CLASSMOD_DIR in the settings)"))?;
    if a.require_key && a.key.is_none() {
        return Err(anyhow!("--require-key: no --key given"));
    }
    let key = match &a.key {
        Some(p) => Some(
            classmod_runtime::parse_public_key(&classmod_runtime::io::regular::read_to_string(p, 1 << 16)?)
                .map_err(|e| anyhow!("{}: {e}", p.display()))?,
        ),
        None => None,
    };
    let model = std::fs::read_to_string("/proc/device-tree/model").ok();
    let (board, _) =
        classmod_boards::detect(a.board.as_deref(), model.as_deref()).map_err(|n| anyhow!("unknown board `{n}`"))?;
    let settings = ModuleSettings {
        dir,
        key,
        serve_new: a.serve_new,
        allow_downgrade: a.allow_downgrade,
        max_blob_bytes: u64::from(board.max_update_mib) << 20,
        self_test: classmod_edge::board_self_test(board),
    };
    if let Some(line) = run_state(&a.state, &a.workdir, &settings, &mut std::io::stdout())? {
        eprintln!("classmod-module {}: {line}", a.state);
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    let state = args.state.clone();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("classmod-module {state}: {e:#}");
            ExitCode::from(1)
        }
    }
}
