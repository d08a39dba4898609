//! Mender artifacts of class-module updates: the blobs of one update (the modules of some classes
//! of a packed directory, and the bases they run on) written by the real `mender-artifact` tool
//! as a `module-image` of payload type `classmod-module`, which the update module on the device
//! (`classmod-update-module`, `deploy/mender/`) installs as one transaction. Each class's module
//! version goes into the artifact's provides (`classmod.CLASS.version`), so that `mender
//! show-provides` on a device, and a Mender server's inventory, say which release of each class
//! it runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, Context, Result};
use classmod_runtime::Manifest;

/// The payload type the device's update module handles.
pub const PAYLOAD_TYPE: &str = "classmod-module";

/// What goes into one artifact, and how it is named and signed.
pub struct ArtifactSpec<'a> {
    /// A packed directory (`classmod pack`).
    pub packed: &'a Path,
    /// The classes whose modules it carries; empty: every class of the directory.
    pub classes: &'a [String],
    /// Carry the bases the modules run on (a device that has them skips them).
    pub with_bases: bool,
    /// The Mender device types it installs on.
    pub device_types: &'a [String],
    /// The artifact's name; `None`: `classmod-CLASSES-vVERSION`.
    pub name: Option<&'a str>,
    /// A Mender signing key (PEM, RSA or ECDSA), for clients with `ArtifactVerifyKey`.
    pub signing_key: Option<&'a Path>,
    /// Mender's software name and version (`--software-name/--software-version`), if given.
    pub software: Option<(&'a str, &'a str)>,
    pub out: &'a Path,
}

/// What [`write`] put into the artifact.
#[derive(Debug)]
pub struct Written {
    pub name: String,
    /// Blob files, in the packed directory.
    pub files: Vec<PathBuf>,
    /// `classmod.CLASS.version` provides: class and version.
    pub versions: Vec<(String, u64)>,
}

/// Writes the artifact of `spec` with the `mender-artifact` tool.
pub fn write(spec: &ArtifactSpec) -> Result<Written> {
    // Said before anything else is looked at: the one thing to install.
    if Command::new("mender-artifact").arg("--version").output().is_err() {
        return Err(not_installed());
    }
    let manifest = Manifest::read(spec.packed).map_err(|e| anyhow!("{}: {e}", spec.packed.display()))?;
    let modules: Vec<_> = if spec.classes.is_empty() {
        manifest.modules.iter().collect()
    } else {
        spec.classes
            .iter()
            .map(|c| {
                manifest.module(c).ok_or_else(|| {
                    let have: Vec<&str> = manifest.modules.iter().map(|m| m.class_name.as_str()).collect();
                    anyhow!("{}: no module for class `{c}` (it has {})", spec.packed.display(), have.join(", "))
                })
            })
            .collect::<Result<_>>()?
    };
    if modules.is_empty() {
        return Err(anyhow!("{}: no module to put into an artifact", spec.packed.display()));
    }
    if spec.device_types.is_empty() {
        return Err(anyhow!("give the Mender device type(s) the artifact installs on (--device-type)"));
    }
    let mut files = Vec::new();
    if spec.with_bases {
        for b in &manifest.bases {
            if modules.iter().any(|m| m.base_key == b.key) {
                files.push(spec.packed.join(&b.file));
            }
        }
    }
    files.extend(modules.iter().map(|m| spec.packed.join(&m.file)));
    let versions: Vec<(String, u64)> = modules.iter().map(|m| (m.class_name.clone(), m.version)).collect();
    let name = spec.name.map(str::to_string).unwrap_or_else(|| {
        let classes: Vec<&str> = versions.iter().map(|(c, _)| c.as_str()).collect();
        let newest = versions.iter().map(|(_, v)| *v).max().unwrap_or(0);
        format!("classmod-{}-v{newest}", classes.join("-"))
    });
    let mut cmd = Command::new("mender-artifact");
    cmd.args(["write", "module-image", "--type", PAYLOAD_TYPE, "--artifact-name", &name, "--output-path"])
        .arg(spec.out);
    for t in spec.device_types {
        cmd.args(["--device-type", t]);
    }
    for f in &files {
        cmd.arg("--file").arg(f);
    }
    for (class, version) in &versions {
        cmd.args(["--provides", &format!("classmod.{class}.version:{version}")]);
        cmd.args(["--clears-provides", &format!("classmod.{class}.*")]);
    }
    if let Some((n, v)) = spec.software {
        cmd.args(["--software-name", n, "--software-version", v]);
    }
    if let Some(k) = spec.signing_key {
        cmd.arg("--key").arg(k);
    }
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_installed()),
        Err(e) => return Err(e).context("running mender-artifact"),
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
        return Err(anyhow!("mender-artifact failed writing {}: {last}", spec.out.display()));
    }
    Ok(Written { name, files, versions })
}

fn not_installed() -> anyhow::Error {
    anyhow!(
        "mender-artifact is not installed: `apt-get install mender-artifact` (Debian, Ubuntu) or see \
         https://docs.mender.io/downloads"
    )
}
