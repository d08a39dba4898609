//! `classmod verify`: what a device would check before trusting a packed directory or blob file:
//! layout, content hash, signature (when a key is given), the manifest's recorded hash, decoding,
//! and each module's golden self-test on its base.

use std::path::Path;

use classmod_blob::{BlobKind, VerifyingKey};
use classmod_runtime::base_blob::{self, key_hex};
use classmod_runtime::manifest::Manifest;
use classmod_runtime::mapped_file::MappedFile;
use classmod_runtime::{Device, ModelError, ModuleBlob, ResNet};
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

/// Verifies one base blob: returns the model's network and its key.
fn check_base(
    path: &Path,
    key: Option<&VerifyingKey>,
    want_hash: Option<&str>,
) -> Result<(ResNet, [u8; 32]), ModelError> {
    let map = MappedFile::open(path)?;
    let blob = map.blob(key)?;
    check_hash(&blob.content_hash(), want_hash)?;
    let model = base_blob::decode(&blob, &Device::Cpu)?;
    Ok((ResNet::new(&model, &Device::Cpu)?, blob.base_key()))
}

fn check_hash(found: &[u8; 32], want: Option<&str>) -> Result<(), ModelError> {
    match want {
        Some(w) if key_hex(found) != w => {
            Err(ModelError::BlobMismatch("content hash differs from the manifest's: not the file it lists".into()))
        }
        _ => Ok(()),
    }
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

/// Every file a manifest lists. An unreadable manifest is an error; a bad file is a failed row.
pub fn verify_dir(dir: &Path, key: Option<&VerifyingKey>) -> Result<Vec<VerifyRow>, ModelError> {
    let manifest = Manifest::read(dir)?;
    let mut rows = Vec::new();
    // Per base key: its network and key, or why it was refused.
    type Checked = Result<(ResNet, [u8; 32]), String>;
    let mut bases: Vec<(String, Checked)> = Vec::new();
    for b in &manifest.bases {
        let path = dir.join(&b.file);
        let r = check_base(&path, key, Some(&b.content_hash));
        let signer = MappedFile::open(&path).ok().and_then(|m| m.blob(None).ok().and_then(|b| b.signer()));
        let r = r.map_err(|e| e.to_string());
        let result = r.as_ref().map(|_| "layout, hash, signature, weights".to_string()).map_err(String::clone);
        rows.push(row(&path, "base", None, signer, result));
        bases.push((b.key.clone(), r));
    }
    for m in &manifest.modules {
        let path = dir.join(&m.file);
        let mut signer = None;
        let result = (|| {
            let map = MappedFile::open(&path)?;
            let blob = map.blob(key)?;
            signer = blob.signer();
            check_hash(&blob.content_hash(), Some(&m.content_hash))?;
            let mb = ModuleBlob::decode(&blob)?;
            if mb.module.class_name != m.class_name || mb.module.base_key != m.base_key {
                return Err(ModelError::BlobMismatch("class or base differ from the manifest's".into()));
            }
            let (net, bkey) = match bases.iter().find(|(k, _)| *k == m.base_key) {
                Some((_, Ok(b))) => b,
                Some((_, Err(e))) => return Err(ModelError::BlobMismatch(format!("its base is refused: {e}"))),
                None => return Err(ModelError::BlobMismatch("its base is not in the manifest".into())),
            };
            let worst = mb.self_test(net, bkey)?;
            Ok(format!(
                "layout, hash, signature, golden self-test ({} images, max diff {worst:.1e})",
                mb.golden.scores.len()
            ))
        })();
        rows.push(row(&path, "module", Some(m.class_name.clone()), signer, result.map_err(|e| e.to_string())));
    }
    Ok(rows)
}

/// One blob file on its own: layout, hash, signature and decoding (a module's self-test needs its
/// base, which `verify_dir` finds through the manifest).
pub fn verify_file(path: &Path, key: Option<&VerifyingKey>) -> VerifyRow {
    let mut kind = "?";
    let mut class = None;
    let mut signer = None;
    let result = (|| {
        let map = MappedFile::open(path)?;
        let blob = map.blob(key)?;
        signer = blob.signer();
        match blob.kind() {
            BlobKind::Base => {
                kind = "base";
                base_blob::decode(&blob, &Device::Cpu)?;
            }
            BlobKind::Module => {
                kind = "module";
                class = Some(ModuleBlob::decode(&blob)?.module.class_name);
            }
        }
        Ok("layout, hash, signature, contents (self-test: verify the directory)".to_string())
    })();
    row(path, kind, class, signer, result.map_err(|e: ModelError| e.to_string()))
}
