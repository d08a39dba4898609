//! Test support: packed directories of tiny random models, built with the runtime's own
//! writers (bases, module blobs with golden vectors, manifest).

pub mod tiny_model;

use std::io;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use classmod_blob::{AlignedBytes, Blob, SigningKey, VerifyingKey};

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::model::key::key_hex;
use crate::pack::atomic::{DurableFs, OsFs};
use crate::pack::base_blob;
use crate::pack::manifest::{Manifest, ManifestBase, ManifestModule};
use crate::serve::ServingConfig;
use crate::testing::tiny_model::tiny_model;
use crate::{
    ClassId, ClassModule, Golden, ModelFile, ModelKey, ModuleBlob, ModuleGroup, ModuleHead, ModuleKind, NodeMask,
    ResNet,
};

static DIRS: AtomicUsize = AtomicUsize::new(0);

pub fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "classmod-serving-{}-{}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn images(n: usize) -> Vec<u8> {
    (0..n * 64).map(|i| (i * 53 % 256) as u8).collect()
}

/// A module of `model` for output `id`, dropping every `drop`-th node.
pub fn module(model: &ModelFile, net: &ResNet, id: u32, name: &str, drop: usize) -> ModuleBlob {
    let sites = net.relu_sites();
    let mut mask = NodeMask::ones(&sites);
    for s in mask.sites.iter_mut() {
        for i in (0..s.len()).step_by(drop) {
            s.set(i, false);
        }
    }
    let module = ClassModule {
        class_id: ClassId(id),
        class_name: name.into(),
        base_key: ModelKey::of(model).unwrap(),
        input: model.meta.input.clone(),
        kind: ModuleKind::Mask(mask),
        head: ModuleHead::Channel { class_index: id as usize },
        min_score: None,
    };
    // Two images of the model's input size (for 8x8 inputs, `images(2)`).
    let px: Vec<u8> = (0..2 * model.meta.input.image_len()).map(|i| (i * 53 % 256) as u8).collect();
    let golden = Golden::record(net, &module, px).unwrap();
    ModuleBlob { module, sites, golden, version: 0 }
}

/// `blob` (a module blob's bytes) rewritten with `n` golden images (patterned pixels, scores 0),
/// as a packer that ignores [`crate::MAX_GOLDEN_IMAGES`] would write it: hostile input for tests.
pub fn with_golden_images(blob: &[u8], n: usize) -> Vec<u8> {
    use classmod_blob::{AlignedBytes, Blob, BlobKind, BlobWriter};
    let store = AlignedBytes::new(blob);
    let blob = Blob::open(store.bytes(), None).unwrap();
    let mut w = BlobWriter::new(BlobKind::Module, blob.base_key(), blob.input_key(), blob.meta());
    for t in blob.tensors() {
        let (shape, data) = match t.name {
            "golden.images" => {
                let shape = [&[n][..], &t.shape[1..]].concat();
                let len = shape.iter().product::<usize>();
                (shape, (0..len).map(|i| (i * 31 % 253) as u8).collect())
            }
            "golden.scores" => (vec![n], vec![0; 4 * n]),
            _ => (t.shape.clone(), t.bytes.to_vec()),
        };
        w.tensor(t.name, t.dtype, &shape, data).unwrap();
    }
    w.finish(None)
}

/// A compact module of `model` for output `id` (random branch of width 8 after 2 stages, seeded)
/// with golden vectors recorded on `net`.
pub fn compact_module(model: &ModelFile, net: &ResNet, id: u32, name: &str, seed: u64) -> ModuleBlob {
    let mut module = tiny_model::tiny_compact(model, id, 2, 8, seed);
    module.class_name = name.into();
    let px: Vec<u8> = (0..2 * model.meta.input.image_len()).map(|i| (i * 53 % 256) as u8).collect();
    let golden = Golden::record(net, &module, px).unwrap();
    ModuleBlob { module, sites: vec![], golden, version: 0 }
}

pub fn hash_hex(bytes: &[u8]) -> String {
    key_hex(&Blob::parse(AlignedBytes::new(bytes).bytes()).unwrap().content_hash())
}

/// Writes base blobs, module blobs and the manifest; returns the manifest.
pub fn pack(dir: &Path, models: &[&ModelFile], modules: &[&ModuleBlob], key: Option<&SigningKey>) -> Manifest {
    let mut bases = Vec::new();
    for (i, m) in models.iter().enumerate() {
        let bytes = base_blob::encode(m, key).unwrap();
        let file = format!("base{i}.blob");
        std::fs::write(dir.join(&file), &bytes).unwrap();
        bases.push(ManifestBase {
            file,
            key: ModelKey::of(m).unwrap(),
            content_hash: hash_hex(&bytes),
            bytes: bytes.len() as u64,
            class_names: m.meta.class_names.clone(),
        });
    }
    let mut entries = Vec::new();
    for mb in modules {
        entries.push(write_module(dir, mb, &format!("{}.blob", mb.module.class_name), key));
    }
    let manifest = Manifest::new(bases, entries);
    manifest.write(dir).unwrap();
    manifest
}

pub fn write_module(dir: &Path, mb: &ModuleBlob, file: &str, key: Option<&SigningKey>) -> ManifestModule {
    let bytes = mb.encode(key).unwrap();
    std::fs::write(dir.join(file), &bytes).unwrap();
    ManifestModule {
        file: file.into(),
        class_name: mb.module.class_name.clone(),
        class_id: mb.module.class_id.0,
        base_key: mb.module.base_key,
        content_hash: hash_hex(&bytes),
        bytes: bytes.len() as u64,
        version: mb.version,
        highest_version: mb.version,
        previous: None,
    }
}

pub fn config(budget: Option<u64>, key: Option<VerifyingKey>) -> ServingConfig {
    ServingConfig::new(Device::Cpu).with_key(key).with_budget(budget)
}

/// `n` images of `spec`'s size (for the tiny 8x8 models, `images(n)`).
pub fn images_of(spec: &crate::InputSpec, n: usize) -> Vec<u8> {
    (0..n * spec.image_len()).map(|i| (i * 53 % 256) as u8).collect()
}

/// What module `mb` alone scores on `pixels` (the reference for served scores).
pub fn alone(net: &ResNet, mb: &ModuleBlob, pixels: &[u8]) -> Vec<f32> {
    let spec = &mb.module.input;
    let n = pixels.len() / spec.image_len();
    let mut x = vec![0f32; pixels.len()];
    spec.normalize_into(pixels, &mut x);
    let x = Tensor::from_vec(x, (n, spec.channels, spec.height, spec.width), &Device::Cpu).unwrap();
    let out = ModuleGroup::new(net.clone(), vec![mb.module.clone()]).unwrap().run(&x).unwrap();
    (0..n).map(|i| out.score(0, i)).collect()
}

pub struct Fixture {
    pub dir: PathBuf,
    pub nets: [ResNet; 2],
    pub a: ModuleBlob,
    pub b: ModuleBlob,
    pub c: ModuleBlob,
}

/// The fixture with compact modules: a mask module `a` and a compact `b` of one base, a compact
/// `c` of the other.
pub fn compact_fixture() -> Fixture {
    let (m1, m2) = (tiny_model(1), tiny_model(2));
    let nets = [ResNet::new(&m1, &Device::Cpu).unwrap(), ResNet::new(&m2, &Device::Cpu).unwrap()];
    let a = module(&m1, &nets[0], 0, "a", 3);
    let b = compact_module(&m1, &nets[0], 1, "b", 11);
    let c = compact_module(&m2, &nets[1], 2, "c", 12);
    let dir = scratch();
    pack(&dir, &[&m1, &m2], &[&a, &b, &c], None);
    Fixture { dir, nets, a, b, c }
}

pub fn fixture(key: Option<&SigningKey>) -> Fixture {
    let (m1, m2) = (tiny_model(1), tiny_model(2));
    let nets = [ResNet::new(&m1, &Device::Cpu).unwrap(), ResNet::new(&m2, &Device::Cpu).unwrap()];
    let a = module(&m1, &nets[0], 0, "a", 3);
    let b = module(&m1, &nets[0], 1, "b", 5);
    let c = module(&m2, &nets[1], 2, "c", 4);
    let dir = scratch();
    pack(&dir, &[&m1, &m2], &[&a, &b, &c], key);
    Fixture { dir, nets, a, b, c }
}

/// The power goes off during step number `cut` (counting from 0): that step does half its
/// work (a write writes half its bytes) and fails, and every later step fails.
pub struct PowerCut {
    /// Steps taken so far.
    pub steps: usize,
    /// The step the power goes off in (`usize::MAX`: never; counts the steps).
    pub cut: usize,
}

impl PowerCut {
    fn step(&mut self) -> Result<bool, io::Error> {
        let n = self.steps;
        self.steps += 1;
        match n.cmp(&self.cut) {
            std::cmp::Ordering::Less => Ok(true),
            std::cmp::Ordering::Equal => Ok(false),
            std::cmp::Ordering::Greater => Err(io::Error::other("the power is off")),
        }
    }
}

fn cut() -> io::Error {
    io::Error::other("power cut")
}

impl DurableFs for PowerCut {
    fn write_file(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        if self.step()? {
            OsFs.write_file(path, bytes)
        } else {
            OsFs.write_file(path, &bytes[..bytes.len() / 2])?;
            Err(cut())
        }
    }
    fn sync_file(&mut self, path: &Path) -> io::Result<()> {
        if self.step()? {
            OsFs.sync_file(path)
        } else {
            Err(cut())
        }
    }
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        // A rename is atomic: it happened or it did not.
        if self.step()? {
            OsFs.rename(from, to)
        } else {
            Err(cut())
        }
    }
    fn sync_dir(&mut self, path: &Path) -> io::Result<()> {
        if self.step()? {
            OsFs.sync_dir(path)
        } else {
            Err(cut())
        }
    }
    fn remove(&mut self, path: &Path) -> io::Result<()> {
        if self.step()? {
            OsFs.remove(path)
        } else {
            Err(cut())
        }
    }
}
