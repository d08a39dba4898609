//! The Mender update module for payload type `classmod-module`: Mender's client runs it as
//! `classmod-module STATE WORKDIR` (Update Modules v3 file API) for each state of an artifact
//! whose payload is the blobs of one update (bases and class modules), and this maps each state
//! onto the runtime's pending-update transaction over the device directory:
//!
//! | state | what it does |
//! |---|---|
//! | `SupportsRollback` | prints `Yes` |
//! | `NeedsArtifactReboot` | prints `No`: a serving `classmod-edge` follows the manifest |
//! | `ArtifactInstall` | verifies the blobs in `WORKDIR/files/`, stages them, runs each module's golden self-test, and switches all of them in one manifest rename as an unconfirmed update named after the artifact (refused: older than a committed release, another update pending, a failed self-test) |
//! | `ArtifactCommit` | confirms it: the replaced modules' files go |
//! | `ArtifactRollback`, `ArtifactFailure` | puts back what it replaced, removes what it added and what an install cut short left |
//! | anything else (`Download`, `Cleanup`, states of later client versions) | nothing |
//!
//! Every state is idempotent (the client re-runs a state after a power loss) and takes the
//! directory's writer lock, so the inbox of a serving device and this module never write at once.
//! A non-zero exit fails the state; the reason is one line on stderr, which Mender logs.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use classmod_runtime::io::MappedFile;
use classmod_runtime::prelude::*;

/// The payload type this module handles (`mender-artifact write module-image -T ...`).
pub const PAYLOAD_TYPE: &str = "classmod-module";

/// How the update module treats a device directory (the settings it shares with the serving
/// `classmod-edge`: see `deploy/classmod-edge.env`).
pub struct ModuleSettings {
    /// The device directory.
    pub dir: PathBuf,
    /// Only blobs signed by this key are installed.
    pub key: Option<VerifyingKey>,
    /// Classes an update adds are served (recorded in the manifest) by the serving device.
    pub serve_new: bool,
    /// Accept a module older than the newest committed release of its class.
    pub allow_downgrade: bool,
    /// The largest payload file read, bytes (the board profile's).
    pub max_blob_bytes: u64,
    /// How much of each module's golden set the install's self-test runs (the board profile's).
    pub self_test: SelfTest,
}

/// Runs `state` for the payload in `work`; what the client reads goes to `out`. Returns a line
/// for the log (stderr) when the state did something.
pub fn run_state(state: &str, work: &Path, settings: &ModuleSettings, out: &mut dyn Write) -> Result<Option<String>> {
    match state {
        "SupportsRollback" => writeln!(out, "Yes")?,
        "NeedsArtifactReboot" => writeln!(out, "No")?,
        "ArtifactInstall" => return install(work, settings).map(Some),
        "ArtifactCommit" => {
            let rt = runtime(settings)?;
            return Ok(Some(match rt.commit_pending(&mut OsFs)? {
                Some(id) => format!("update {id} committed"),
                None => "nothing pending to commit".into(),
            }));
        }
        "ArtifactRollback" | "ArtifactFailure" => {
            let rt = runtime(settings)?;
            let line = match rt.roll_back_pending(&mut OsFs)? {
                Some(id) => format!("update {id} rolled back"),
                None => "nothing pending to roll back".into(),
            };
            // An install killed half-way left staged files no manifest names: they go too.
            let removed = rt.clean(&mut OsFs)?;
            return Ok(Some(if removed.is_empty() { line } else { format!("{line}; removed {}", removed.join(", ")) }));
        }
        _ => {}
    }
    Ok(None)
}

fn runtime(settings: &ModuleSettings) -> Result<ModuleRuntime> {
    // It only installs: what it needs are the key and the downgrade rule.
    // A serving device's inbox may be applying an update: this waits for it, and says so in
    // Mender's log.
    let config = ServingConfig::new(Device::Cpu)
        .with_key(settings.key)
        .with_downgrades(settings.allow_downgrade)
        .with_lock_wait(LockWait::telling(|line| eprintln!("classmod-module: {line}")))
        .with_self_test(settings.self_test);
    ModuleRuntime::open(&settings.dir, config).map_err(|e| anyhow!("{}: {e}", settings.dir.display()))
}

/// ArtifactInstall: every `*.blob` of `work/files` as one pending update named after the artifact.
fn install(work: &Path, settings: &ModuleSettings) -> Result<String> {
    let name_file = work.join("header/artifact_name");
    let id = classmod_runtime::io::regular::read_to_string(&name_file, 4096)
        .with_context(|| format!("{}: the artifact's name", name_file.display()))?
        .trim()
        .to_string();
    // The name goes into the manifest and every log line: a name, not an empty or a forged one.
    if id.is_empty() {
        return Err(anyhow!("{}: the artifact's name is empty", name_file.display()));
    }
    if id.chars().any(char::is_control) {
        return Err(anyhow!(
            "{}: the artifact's name `{}` holds control characters",
            name_file.display(),
            crate::inbox::loggable(&id)
        ));
    }
    let files = work.join("files");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&files)
        .with_context(|| format!("{}: the payload", files.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(anyhow!("artifact {id}: the payload holds no file"));
    }
    let (mut maps, mut names) = (Vec::new(), Vec::new());
    for p in &paths {
        let name = p.file_name().map(|n| crate::inbox::loggable(&n.to_string_lossy())).unwrap_or_default();
        if !name.ends_with(".blob") {
            return Err(anyhow!("artifact {id}: payload file {name} is not a classmod blob (*.blob)"));
        }
        let meta = std::fs::symlink_metadata(p).with_context(|| format!("payload file {name}"))?;
        if meta.len() > settings.max_blob_bytes {
            return Err(anyhow!(
                "artifact {id}: payload file {name} holds {} bytes, more than this device takes ({})",
                meta.len(),
                settings.max_blob_bytes
            ));
        }
        maps.push(MappedFile::open(p).map_err(|e| anyhow!("artifact {id}: payload file {name}: {e}"))?);
        names.push(name);
    }
    let blobs: Vec<&[u8]> = maps.iter().map(MappedFile::bytes).collect();
    let rt = runtime(settings)?;
    let r = rt.install_pending(&mut OsFs, &id, &blobs, settings.serve_new).map_err(|e| {
        // The install names classes, not files: a payload file whose blob is bad (layout, hash,
        // signature) is named, looked for only when the install failed.
        let bad = names
            .iter()
            .zip(&blobs)
            .find_map(|(name, b)| classmod_blob::Blob::open(b, settings.key.as_ref()).err().map(|be| (name, be)));
        match bad {
            Some((name, be)) => anyhow!("artifact {id}: payload file {name}: {be}"),
            None => anyhow!("artifact {id}: {e}"),
        }
    })?;
    let mut parts = Vec::new();
    if r.already_pending {
        parts.push("already installed, pending".to_string());
    }
    for (what, list) in
        [("updated", &r.updated), ("added", &r.added), ("bases added", &r.bases), ("already running", &r.unchanged)]
    {
        if !list.is_empty() {
            parts.push(format!("{what}: {}", list.join(", ")));
        }
    }
    if parts.is_empty() {
        parts.push("nothing new: the device has every blob of it".into());
    }
    Ok(format!("update {id} installed, unconfirmed ({})", parts.join("; ")))
}
