//! A class module as a blob (kind `Module`): metadata naming the class, its kind, its head and the
//! ReLU-site geometry (mask modules) or the branch's shape (compact modules); tensors `mask.NNN`
//! (packed bits) or `branch.*` (folded f32 weights), `head.weight`/`head.bias` (calibrated heads) and the
//! golden self-test vectors `golden.images` (u8, n x C x H x W raw pixels) and `golden.scores`
//! (f32, what the module scored on them when it was packed). The header's `base_key` is the key
//! of the base model the module runs on, its `input_key` the digest of the input spec.

use classmod_blob::{Blob, BlobKind, BlobWriter, DType, SigningKey};
use serde::{Deserialize, Serialize};

use crate::model::branch::BranchSpec;
use crate::model::file::json;
use crate::model::key::input_key;
use crate::model::network::ReluSite;
use crate::pack::parts::{self, HeadMeta, ModuleIdentity, PartsMeta, SiteMeta};
use crate::Result;
use crate::{ClassModule, Error, InputSpec, ModelKey, ModuleGroup, ResNet};

const FORMAT: &str = "classmod-module";

/// Largest score difference the golden self-test tolerates: scores are sigmoids in [0, 1]; the
/// same module on another CPU (other SIMD widths, other summation orders) differs by ~1e-6.
pub const GOLDEN_TOLERANCE: f32 = 1e-4;

/// The most golden images a module blob carries: a health check needs a few, and each costs a
/// device memory and time at every load (a blob with more is refused before they are read).
pub const MAX_GOLDEN_IMAGES: usize = 64;

/// How much of its golden set a module's self-test runs: the first `images` of them (at least
/// one), `batch` at a time, so that its memory is that of classifying a batch. A device takes
/// both from its board profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SelfTest {
    /// Golden images tested at most, the first ones of the set.
    pub images: usize,
    /// Images run at once.
    pub batch: usize,
}

impl Default for SelfTest {
    /// The whole set (at most [`MAX_GOLDEN_IMAGES`]), 16 images a batch.
    fn default() -> Self {
        SelfTest { images: MAX_GOLDEN_IMAGES, batch: 16 }
    }
}

#[derive(Serialize, Deserialize)]
struct ModuleMeta {
    format: String,
    /// [`crate::ModuleKind::name`]; absent in blobs packed before kinds were tagged (masks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    class_id: u32,
    class_name: String,
    input: InputSpec,
    head: HeadMeta,
    sites: SiteMeta,
    /// A compact module's branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    branch: Option<BranchSpec>,
    /// [`ClassModule::min_score`]; absent in blobs packed before it was calibrated (a device
    /// that predates it ignores it and never answers none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_score: Option<f32>,
    /// [`ModuleBlob::version`]; absent (0) in blobs packed before versions.
    #[serde(default)]
    version: u64,
}

/// Golden self-test vectors: raw images and the scores the module gave them when packed.
#[derive(Debug, Clone, PartialEq)]
pub struct Golden {
    /// `n * C * H * W` bytes, image after image, as the input spec's pixels.
    pub images: Vec<u8>,
    /// One score per image.
    pub scores: Vec<f32>,
}

impl Golden {
    #[cfg(feature = "host")]
    /// Runs `module` on `images` (on `base`) and records its scores.
    pub fn record(base: &ResNet, module: &ClassModule, images: Vec<u8>) -> Result<Golden> {
        let scores = golden_scores(base, module, &images, SelfTest::default().batch)?;
        Ok(Golden { images, scores })
    }
}

/// The module's scores on `images`, `batch` images at a time.
fn golden_scores(base: &ResNet, module: &ClassModule, images: &[u8], batch: usize) -> Result<Vec<f32>> {
    let spec = base.input_spec();
    let per = spec.image_len();
    if per == 0 || !images.len().is_multiple_of(per) {
        return Err(Error::BadGolden { reason: format!("{} bytes are not whole images of {per}", images.len()) });
    }
    let n = images.len() / per;
    if n == 0 {
        // Without images there is no self-test: a device could not health-check the module.
        return Err(Error::BadGolden {
            reason: "no golden images (a module needs at least one for its self-test)".into(),
        });
    }
    if n > MAX_GOLDEN_IMAGES {
        return Err(too_many_golden(n));
    }
    // The route serving takes: pixels normalised into the engine's own layout.
    let group = ModuleGroup::new(base.clone(), vec![module.clone()])?;
    let mut scores = Vec::with_capacity(n);
    for chunk in images.chunks(batch.max(1) * per) {
        let out = group.run_pixels(chunk)?;
        scores.extend((0..chunk.len() / per).map(|i| out.score(0, i)));
    }
    Ok(scores)
}

fn too_many_golden(n: usize) -> Error {
    Error::BadGolden { reason: format!("{n} golden images, more than the {MAX_GOLDEN_IMAGES} a module may carry") }
}

/// A module read from a blob.
#[derive(Debug, Clone, PartialEq)]
pub struct ModuleBlob {
    /// The module.
    pub module: ClassModule,
    /// The ReLU sites of its base, as a mask module's masks are laid out (a compact module
    /// stores none: empty).
    pub sites: Vec<ReluSite>,
    /// Its golden self-test vectors.
    pub golden: Golden,
    /// Which release of its class this is: a device refuses a module older than the newest it
    /// has committed for the class (downgrade protection). `classmod pack` sets the packing time
    /// in seconds since the epoch unless told a number; 0 in blobs packed before versions. It is
    /// metadata, so the content hash and the signature cover it.
    pub version: u64,
}

impl ModuleBlob {
    #[cfg(feature = "host")]
    /// The blob bytes, signed when `key` is given.
    pub fn encode(&self, key: Option<&SigningKey>) -> Result<Vec<u8>> {
        let m = &self.module;
        let (parts, tensors) = parts::encode(m, &self.sites)?;
        let meta = ModuleMeta {
            format: FORMAT.into(),
            kind: Some(m.kind.name().into()),
            class_id: m.class_id.0,
            class_name: m.class_name.clone(),
            input: m.input.clone(),
            head: parts.head,
            sites: parts.sites,
            branch: parts.branch,
            min_score: m.min_score,
            version: self.version,
        };
        let mut w = BlobWriter::new(BlobKind::Module, m.base_key.0, input_key(&m.input), json(&meta));
        for t in tensors {
            w.tensor(&t.name, if t.u8 { DType::U8 } else { DType::F32 }, &t.shape, t.bytes)?;
        }
        let spec = &m.input;
        let per = spec.image_len();
        let n = self.golden.scores.len();
        if n > MAX_GOLDEN_IMAGES {
            return Err(too_many_golden(n));
        }
        if n == 0 || self.golden.images.len() != n * per {
            return Err(Error::BadGolden {
                reason: format!("{n} scores for {} bytes of {per}-byte images", self.golden.images.len()),
            });
        }
        w.tensor("golden.images", DType::U8, &[n, spec.channels, spec.height, spec.width], self.golden.images.clone())?;
        w.tensor_f32("golden.scores", &[n], &self.golden.scores)?;
        Ok(w.finish(key))
    }

    /// The module in a (parsed, verified) module blob.
    pub fn decode(blob: &Blob) -> Result<ModuleBlob> {
        if blob.kind() != BlobKind::Module {
            return Err(Error::WrongBlobKind { expected: "module", found: "base" });
        }
        // The kind first, alone: a newer kind's other metadata need not parse here.
        #[derive(Deserialize)]
        struct KindTag {
            #[serde(default)]
            kind: Option<String>,
        }
        let tag: KindTag = serde_json::from_str(blob.meta())
            .map_err(|e| Error::BadMetadata { key: "module blob metadata", reason: e.to_string() })?;
        parts::check_kind(tag.kind.as_deref())?;
        let meta: ModuleMeta = serde_json::from_str(blob.meta())
            .map_err(|e| Error::BadMetadata { key: "module blob metadata", reason: e.to_string() })?;
        if meta.format != FORMAT {
            return Err(Error::BadMetadata { key: "format", reason: format!("`{}` is not `{FORMAT}`", meta.format) });
        }
        if input_key(&meta.input) != blob.input_key() {
            return Err(Error::HeaderKeyMismatch { key: "input" });
        }
        let sites: Vec<ReluSite> = meta
            .sites
            .iter()
            .map(|(name, c, h, w)| ReluSite { name: name.clone(), channels: *c, height: *h, width: *w })
            .collect();
        let tensor = |name: &str, u8: bool| -> Result<Vec<u8>> {
            let t = blob.tensor(name)?;
            if t.dtype != if u8 { DType::U8 } else { DType::F32 } {
                let expected = if u8 { "u8" } else { "f32" };
                return Err(Error::TensorDtype { name: name.into(), expected, found: format!("{:?}", t.dtype) });
            }
            Ok(t.bytes.to_vec())
        };
        let id = ModuleIdentity {
            class_id: meta.class_id,
            class_name: meta.class_name,
            base_key: ModelKey(blob.base_key()),
            input: meta.input,
        };
        if meta.min_score.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
            return Err(Error::BadMetadata {
                key: "min_score",
                reason: format!("{:?} is not a score between 0 and 1", meta.min_score.unwrap_or_default()),
            });
        }
        let parts = PartsMeta { head: meta.head, sites: meta.sites, branch: meta.branch };
        let mut module = parts::decode(id, meta.kind.as_deref(), parts, tensor)?;
        module.min_score = meta.min_score;
        let spec = &module.input;
        let images = blob.tensor("golden.images")?;
        let n = images.shape.first().copied().unwrap_or(0);
        // Before a byte is copied: a hostile blob's golden set could be most of its size.
        if n > MAX_GOLDEN_IMAGES {
            return Err(too_many_golden(n));
        }
        images.expect(DType::U8, &[n, spec.channels, spec.height, spec.width])?;
        let scores = blob.tensor("golden.scores")?;
        scores.expect(DType::F32, &[n])?;
        let golden = Golden { images: images.bytes.to_vec(), scores: scores.to_f32()? };
        Ok(ModuleBlob { module, sites, golden, version: meta.version })
    }

    /// The health check of a field update: the module, run on `base` (whose key is `base_key`),
    /// reproduces its golden scores within [`GOLDEN_TOLERANCE`] (f32; the base's
    /// [`crate::Precision::golden_tolerance`] when it computes in half precision), on as many of
    /// them as `test` says. Returns the largest difference and how many images were tested.
    pub fn self_test(&self, base: &ResNet, base_key: &ModelKey, test: SelfTest) -> Result<(f32, usize)> {
        if *base_key != self.module.base_key {
            return Err(Error::WrongBase { class: self.module.class_name.clone() });
        }
        let n = self.golden.scores.len().min(test.images.max(1));
        let per = self.module.input.image_len();
        let images = self.golden.images.get(..n * per).unwrap_or(&self.golden.images);
        let found = golden_scores(base, &self.module, images, test.batch)?;
        let (mut worst, tolerance) = (0f32, base.precision().golden_tolerance());
        for (image, (&e, &f)) in self.golden.scores.iter().zip(&found).enumerate() {
            let d = (e - f).abs();
            if d.is_nan() || d > tolerance {
                return Err(Error::GoldenMismatch { image, expected: e, found: f });
            }
            worst = worst.max(d);
        }
        Ok((worst, found.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::base_blob;
    use crate::testing::tiny_model::tiny_model;
    use crate::{ClassId, ModuleHead, ModuleKind, NodeMask};
    use candle_core::Device;
    use classmod_blob::{AlignedBytes, Blob};

    fn module(base: &ResNet, key: &ModelKey, head: ModuleHead) -> ModuleBlob {
        let sites = base.relu_sites();
        let mut mask = NodeMask::ones(&sites);
        for (i, s) in mask.sites.iter_mut().enumerate() {
            s.set(i % s.len(), false);
        }
        let module = ClassModule {
            class_id: ClassId(1),
            class_name: "b".into(),
            base_key: *key,
            input: base.input_spec().clone(),
            kind: ModuleKind::Mask(mask),
            head,
            min_score: None,
        };
        let images: Vec<u8> = (0..3 * 64).map(|i| (i * 37 % 251) as u8).collect();
        let golden = Golden::record(base, &module, images).unwrap();
        ModuleBlob { module, sites, golden, version: 0 }
    }

    #[test]
    fn base_blob_round_trips_and_keys_its_content() {
        let model = tiny_model(1);
        let bytes = base_blob::encode(&model, None).unwrap();
        let store = AlignedBytes::new(&bytes);
        let blob = Blob::open(store.bytes(), None).unwrap();
        let back = base_blob::decode(&blob, &Device::Cpu).unwrap();
        assert_eq!(ModelKey::of(&back).unwrap(), ModelKey::of(&model).unwrap());
        assert_ne!(ModelKey::of(&tiny_model(2)).unwrap(), ModelKey::of(&model).unwrap());
        assert_eq!(back.meta, model.meta);
        assert!(matches!(ModuleBlob::decode(&blob), Err(Error::WrongBlobKind { .. })));
        assert_eq!(bytes, base_blob::encode(&model, None).unwrap(), "deterministic");
    }

    /// Issue 36, item 7: the golden set is bounded when packed and when read (a blob carrying
    /// more than [`MAX_GOLDEN_IMAGES`] is refused before they are copied), and a device tests
    /// the first ones of it, a batch at a time, with the same scores as all at once.
    #[test]
    fn the_golden_set_is_bounded_and_tested_in_batches() {
        let model = tiny_model(1);
        let key = ModelKey::of(&model).unwrap();
        let base = ResNet::new(&model, &Device::Cpu).unwrap();
        let mut m = module(&base, &key, ModuleHead::Channel { class_index: 1 });
        let per = m.module.input.image_len();
        let many: Vec<u8> = (0..(MAX_GOLDEN_IMAGES + 1) * per).map(|i| (i * 31 % 253) as u8).collect();
        let e = Golden::record(&base, &m.module, many.clone()).unwrap_err();
        assert!(e.to_string().contains("65 golden images, more than the 64"), "{e}");
        m.golden = Golden::record(&base, &m.module, many[..MAX_GOLDEN_IMAGES * per].to_vec()).unwrap();
        let bytes = m.encode(None).unwrap();
        // The same blob with one golden image more, written as a packer that ignores the bound
        // would: refused when read.
        let hostile = AlignedBytes::new(&crate::testing::with_golden_images(&bytes, MAX_GOLDEN_IMAGES + 1));
        let e = ModuleBlob::decode(&Blob::open(hostile.bytes(), None).unwrap()).unwrap_err();
        assert!(matches!(e, Error::BadGolden { .. }) && e.to_string().contains("65 golden images"), "{e}");
        let store = AlignedBytes::new(&bytes);
        let blob = Blob::open(store.bytes(), None).unwrap();
        // A device testing 5 of the 64, 2 at a time: the same as all 64 at once, on 5.
        let back = ModuleBlob::decode(&blob).unwrap();
        assert_eq!(back.self_test(&base, &key, SelfTest::default()).unwrap(), (0.0, MAX_GOLDEN_IMAGES));
        assert_eq!(back.self_test(&base, &key, SelfTest { images: 5, batch: 2 }).unwrap(), (0.0, 5));
        // Only those are tested: a wrong score past them is not looked at.
        let mut wrong = back.clone();
        wrong.golden.scores[5] += 0.5;
        assert_eq!(wrong.self_test(&base, &key, SelfTest { images: 5, batch: 3 }).unwrap().1, 5);
        assert!(matches!(
            wrong.self_test(&base, &key, SelfTest::default()),
            Err(Error::GoldenMismatch { image: 5, .. })
        ));
    }

    #[test]
    fn module_blob_round_trips_and_passes_its_self_test() {
        let model = tiny_model(1);
        let key = ModelKey::of(&model).unwrap();
        let base = ResNet::new(&model, &Device::Cpu).unwrap();
        for head in
            [ModuleHead::Channel { class_index: 1 }, ModuleHead::Calibrated { weight: vec![0.1; 16], bias: -0.2 }]
        {
            let m = module(&base, &key, head);
            let bytes = m.encode(None).unwrap();
            let store = AlignedBytes::new(&bytes);
            let blob = Blob::open(store.bytes(), None).unwrap();
            assert_eq!(blob.base_key(), key.0);
            let back = ModuleBlob::decode(&blob).unwrap();
            assert_eq!(back, m);
            let all = SelfTest::default();
            assert_eq!(back.self_test(&base, &key, all).unwrap().0, 0.0, "same machine, same scores");
            assert!(matches!(back.self_test(&base, &ModelKey([7; 32]), all), Err(Error::WrongBase { .. })));
            let mut wrong = back.clone();
            wrong.golden.scores[2] += 0.01;
            assert!(matches!(wrong.self_test(&base, &key, all), Err(Error::GoldenMismatch { image: 2, .. })));
            // The same module on another base (same key claimed) fails its golden check.
            let other = ResNet::new(&tiny_model(3), &Device::Cpu).unwrap();
            assert!(back.self_test(&other, &key, all).is_err());
        }
    }

    /// A module of a kind this build does not run (a newer device's) is refused by the kind's
    /// name, before its other metadata is read; a blob without a kind (packed before kinds were
    /// tagged) is a mask module.
    #[test]
    fn an_unknown_module_kind_is_refused_by_name() {
        let model = tiny_model(1);
        let key = ModelKey::of(&model).unwrap();
        let base = ResNet::new(&model, &Device::Cpu).unwrap();
        let m = module(&base, &key, ModuleHead::Channel { class_index: 1 });
        let bytes = m.encode(None).unwrap();
        let store = AlignedBytes::new(&bytes);
        let blob = Blob::open(store.bytes(), None).unwrap();
        let meta: serde_json::Value = serde_json::from_str(blob.meta()).unwrap();
        assert_eq!(meta["kind"], "mask");
        let rewrite = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut meta = meta.clone();
            edit(&mut meta);
            let mut w = BlobWriter::new(BlobKind::Module, blob.base_key(), blob.input_key(), meta.to_string());
            for t in blob.tensors() {
                w.tensor(t.name, t.dtype, &t.shape, t.bytes.to_vec()).unwrap();
            }
            let bytes = w.finish(None);
            let store = AlignedBytes::new(&bytes);
            ModuleBlob::decode(&Blob::open(store.bytes(), None).unwrap())
        };
        let err = rewrite(&|m| {
            m["kind"] = "lowrank".into();
            m["head"] = serde_json::json!({"kind": "factors", "rank": 16});
        })
        .unwrap_err();
        assert!(matches!(&err, Error::UnknownModuleKind { kind, .. } if kind == "lowrank"), "{err}");
        assert!(err.to_string().contains("`lowrank`") && err.to_string().contains("mask, compact"), "{err}");
        // A kind and a description that disagree are refused too.
        let err = rewrite(&|m| m["kind"] = "compact".into()).unwrap_err();
        assert!(matches!(err, Error::BadMetadata { key: "branch", .. }), "{err}");
        let old = rewrite(&|m| {
            m.as_object_mut().unwrap().remove("kind");
        })
        .unwrap();
        assert_eq!(old, m);
        // A calibrated minimum score travels in the metadata; one outside [0, 1] is refused.
        let calibrated = rewrite(&|m| m["min_score"] = 0.375.into()).unwrap();
        assert_eq!(calibrated.module.min_score, Some(0.375));
        let mut packed = m.clone();
        packed.module.min_score = Some(0.375);
        assert_eq!(calibrated, packed);
        let store = AlignedBytes::new(&packed.encode(None).unwrap());
        assert_eq!(ModuleBlob::decode(&Blob::open(store.bytes(), None).unwrap()).unwrap(), packed);
        for bad in [serde_json::json!(1.5), serde_json::json!(-0.1), serde_json::json!("high")] {
            assert!(rewrite(&|m| m["min_score"] = bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn golden_vectors_must_be_whole_images() {
        let model = tiny_model(1);
        let key = ModelKey::of(&model).unwrap();
        let base = ResNet::new(&model, &Device::Cpu).unwrap();
        let mut m = module(&base, &key, ModuleHead::Channel { class_index: 1 });
        m.golden.images.pop();
        assert!(m.encode(None).is_err());
        assert!(Golden::record(&base, &m.module, vec![0; 65]).is_err());
        // None at all (`classmod pack --golden 0` ended in an internal matmul error, issue 13
        // item 11): a typed error that says why.
        let e = Golden::record(&base, &m.module, vec![]).unwrap_err();
        assert!(matches!(e, Error::BadGolden { .. }) && e.to_string().contains("no golden images"), "{e}");
    }

    /// A compact module's blob: its branch's spec in the metadata (`trunk_blocks` only where
    /// the trunk runs into a stage, so that a branch without them stores what it stored before
    /// the field existed), its folded weights as `branch.*` tensors; it round-trips, passes its
    /// golden self-test, and a corrupted branch (a weight made NaN, a tensor missing) is refused
    /// with a typed error.
    #[test]
    fn compact_module_blob_round_trips_and_refuses_bad_branches() {
        use crate::model::network::TrunkEnd;
        use crate::testing::tiny_model::{compact_after, tiny_model_14};
        let model = tiny_model_14(1);
        let key = ModelKey::of(&model).unwrap();
        let base = ResNet::new(&model, &Device::Cpu).unwrap();
        for (stages, blocks) in [(1, 0), (2, 0), (2, 1)] {
            let module = compact_after(&model, 2, TrunkEnd { stages, blocks }, 8, 2, 9);
            let images: Vec<u8> = (0..3 * 64).map(|i| (i * 37 % 251) as u8).collect();
            let golden = Golden::record(&base, &module, images).unwrap();
            let m = ModuleBlob { module, sites: vec![], golden, version: 0 };
            let bytes = m.encode(None).unwrap();
            let store = AlignedBytes::new(&bytes);
            let blob = Blob::open(store.bytes(), None).unwrap();
            let meta: serde_json::Value = serde_json::from_str(blob.meta()).unwrap();
            assert_eq!(meta["kind"], "compact");
            assert_eq!(meta["branch"]["trunk_stages"], stages);
            match blocks {
                0 => assert!(meta["branch"].get("trunk_blocks").is_none(), "{meta}"),
                n => assert_eq!(meta["branch"]["trunk_blocks"], n),
            }
            assert!(blob.tensor("branch.entry.weight").is_ok() && blob.tensor("mask.000").is_err());
            let back = ModuleBlob::decode(&blob).unwrap();
            assert_eq!(back, m);
            assert_eq!(back.self_test(&base, &key, SelfTest::default()).unwrap().0, 0.0);
            let rebuilt_with = |meta: String, skip: &str, nan: bool| {
                let mut w = BlobWriter::new(BlobKind::Module, blob.base_key(), blob.input_key(), meta);
                for t in blob.tensors().filter(|t| t.name != skip) {
                    let mut b = t.bytes.to_vec();
                    if nan && t.name == "branch.block1.conv2.bias" {
                        b[..4].copy_from_slice(&f32::NAN.to_le_bytes());
                    }
                    w.tensor(t.name, t.dtype, &t.shape, b).unwrap();
                }
                let bytes = w.finish(None);
                let store = AlignedBytes::new(&bytes);
                ModuleBlob::decode(&Blob::open(store.bytes(), None).unwrap())
            };
            let rebuilt = |skip: &str, nan: bool| rebuilt_with(blob.meta().to_string(), skip, nan);
            // A key of the branch this build does not know may change what it runs on: refused.
            let mut unknown = meta.clone();
            unknown["branch"]["trunk_offset"] = 1.into();
            let err = rebuilt_with(unknown.to_string(), "", false).unwrap_err();
            assert!(err.to_string().contains("trunk_offset"), "{err}");
            assert!(matches!(rebuilt("", true), Err(Error::NonFinite { .. })));
            assert!(rebuilt("branch.block0.conv1.weight", false).is_err());
        }
    }
}
