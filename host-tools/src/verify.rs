//! `classmod verify`: what a device would check before trusting a packed directory or blob file:
//! layout, content hash, signature (when a key is given), the manifest's recorded hash, decoding,
//! and each module's golden self-test on its base.

use crate::HostError;
use std::path::Path;

use classmod_blob::{Blob, BlobKind, VerifyingKey};
use classmod_runtime::host::ModuleBlob;
use classmod_runtime::host::{base_blob, key_hex};
use classmod_runtime::io::MappedFile;
use classmod_runtime::Device;
use classmod_runtime::MinScore;
use classmod_runtime::{ModuleRuntime, ServingConfig};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct VerifyRow {
    pub file: String,
    pub kind: String,
    pub class: Option<String>,
    pub signer: Option<String>,
    /// What passed, or why the file is refused.
    pub result: Result<String, String>,
}

fn row(
    path: &Path,
    kind: &str,
    class: Option<String>,
    signer: Option<[u8; 8]>,
    result: Result<String, String>,
) -> VerifyRow {
    VerifyRow {
        file: path.file_name().map_or_else(|| path.display().to_string(), |f| f.to_string_lossy().into_owned()),
        kind: kind.into(),
        class,
        signer: signer.map(|s| key_hex(&s)),
        result,
    }
}

/// Every file a manifest lists (bases, modules, the rollback copies of unconfirmed updates, and
/// what a pending update's rollback would serve again),
/// checked by the device runtime's own loading code (without serving). An unreadable manifest
/// is an error; a bad file is a failed row.
pub fn verify_dir(dir: &Path, key: Option<&VerifyingKey>) -> Result<Vec<VerifyRow>, HostError> {
    let config = ServingConfig::new(Device::Cpu).with_key(key.cloned()).with_min_score(MinScore::Off);
    let rt = ModuleRuntime::open(dir, config)?;
    let manifest = rt.manifest();
    let mut rows = Vec::new();
    // Each base checked stays loaded while its modules are self-tested on it: the runtime keeps
    // only bases something holds, and would read and hash a base again for every module.
    let mut held = Vec::new();
    for b in &manifest.bases {
        let path = dir.join(&b.file);
        let result = rt.check_base(&b.key).map(|base| {
            held.push(base);
            "layout, hash, signature, weights".to_string()
        });
        rows.push(row(&path, "base", None, signer(&path), result.map_err(|e| e.to_string())));
    }
    for m in &manifest.modules {
        let path = dir.join(&m.file);
        let result = rt.check_module_entry(m).map(|l| {
            format!(
                "layout, hash, signature, golden self-test ({} images, max diff {:.1e})",
                l.golden_images(),
                l.self_test_diff()
            )
        });
        rows.push(row(&path, "module", Some(m.class_name.clone()), signer(&path), result.map_err(|e| e.to_string())));
        // An unconfirmed update's rollback copy must be as sound as the module: a rollback
        // would serve it.
        if let Some(copy) = m.rolled_back() {
            let path = dir.join(&copy.file);
            let result = rt.check_module_entry(&copy).map(|l| {
                format!(
                    "rollback copy: layout, hash, signature, golden self-test (max diff {:.1e})",
                    l.self_test_diff()
                )
            });
            rows.push(row(
                &path,
                "module (rollback copy)",
                Some(m.class_name.clone()),
                signer(&path),
                result.map_err(|e| e.to_string()),
            ));
        }
    }
    // A pending update (a Mender artifact not yet committed): what its rollback would serve.
    for (e, result) in rt.check_pending_restore() {
        let path = dir.join(&e.file);
        let result = result
            .map(|l| format!("pending update's rollback: golden self-test (max diff {:.1e})", l.self_test_diff()));
        rows.push(row(
            &path,
            "module (pending rollback)",
            Some(e.class_name),
            signer(&path),
            result.map_err(|e| e.to_string()),
        ));
    }
    Ok(rows)
}

/// The signer a blob's trailer names (layout checked, not the hash: this is only for display).
fn signer(path: &Path) -> Option<[u8; 8]> {
    let map = MappedFile::open(path).ok()?;
    Blob::parse(map.bytes()).ok()?.signer()
}

/// One blob file on its own: layout, hash, signature and decoding (a module's self-test needs its
/// base, which `verify_dir` finds through the manifest).
pub fn verify_file(path: &Path, key: Option<&VerifyingKey>) -> VerifyRow {
    let mut kind = "?".to_string();
    let mut class = None;
    let mut signer = None;
    let result = (|| {
        let map = MappedFile::open(path)?;
        let blob = map.blob(key)?;
        signer = blob.signer();
        match blob.kind() {
            BlobKind::Base => {
                kind = "base".into();
                base_blob::decode(&blob, &Device::Cpu)?;
            }
            BlobKind::Module => {
                let module = ModuleBlob::decode(&blob)?.module;
                kind = format!("module ({})", module.kind.name());
                class = Some(module.class_name);
            }
        }
        Ok("layout, hash, signature, contents (self-test: verify the directory)".to_string())
    })();
    row(path, &kind, class, signer, result.map_err(|e: HostError| e.to_string()))
}

/// One line on what a module computes: its kind and, for a compact module, its trunk and its
/// branch's size; and from which score it claims an image.
pub fn module_summary(m: &classmod_runtime::host::ClassModule) -> String {
    let min = match m.min_score {
        Some(s) => format!("; claims an image from score {s:.4} (calibrated)"),
        None => "; no calibrated minimum score (claims every image)".into(),
    };
    let what = match (&m.kind, m.as_compact()) {
        (_, Some(b)) => {
            let s = b.spec();
            let (h, w) = s.trunk_plane(m.input.height, m.input.width);
            format!(
                "compact: trunk = stem + stages 1..{}{} of base {}; branch {} channels wide, {} blocks, {} parameters, {} MACs per image; {} head",
                s.trunk_stages,
                match s.trunk_blocks {
                    0 => String::new(),
                    n => format!(" + {n} block(s) of stage {}", s.trunk_stages + 1),
                },
                m.base_key.short(),
                s.width,
                s.blocks,
                s.params(),
                s.macs(h, w),
                m.head.name()
            )
        }
        (kind, None) => format!(
            "{}: keeps {:.1}% of base {}'s nodes; {} head",
            kind.name(),
            100.0 * kind.kept_fraction().unwrap_or(1.0),
            m.base_key.short(),
            m.head.name()
        ),
    };
    what + &min
}
