//! The resume file, `OUT.resume` beside a run's model `OUT`: a checkpoint from which
//! `classmod train --resume` goes on exactly where the run stopped (same items, same
//! augmentation, same optimiser state, so the same weights as an uninterrupted run). Written
//! atomically at the end of every epoch and of the run, one file so that its parts always belong
//! to the same step. A safetensors file:
//! - `model` (U8): the checkpoint's model file, byte for byte (validated as any model file);
//! - `momentum.N` (F32): the optimiser's momentum buffers, in the engine's order;
//! - `order` (U32): the sampler's order of the current epoch; `losses` (F64): the losses so far;
//! - metadata `classmod.resume`: JSON with `version`, `steps_done`, `cursor`, `epoch`,
//!   `word_pos` (decimal string), `seconds` and `settings` (what must match to go on).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use classmod_runtime::host::{write_atomically, ModelFile, MAX_MODEL_BYTES};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use super::sampler::SamplerState;
use crate::HostError;

/// The metadata key.
const KEY: &str = "classmod.resume";
const VERSION: u32 = 1;

/// A run's state after `steps_done` steps.
#[derive(Debug, Clone)]
pub struct RunState {
    /// The weights (and running statistics) so far.
    pub model: ModelFile,
    /// The optimiser's momentum buffers.
    pub momentum: Vec<Vec<f32>>,
    /// Where the sampler is.
    pub sampler: SamplerState,
    /// Steps done.
    pub steps_done: usize,
    /// Each step's loss so far.
    pub losses: Vec<f64>,
    /// Seconds trained so far.
    pub seconds: f64,
    /// The run's settings (data, network, optimiser, schedule, seed...): a run goes on only
    /// with the same.
    pub settings: serde_json::Value,
}

#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
    steps_done: usize,
    cursor: usize,
    epoch: usize,
    word_pos: String,
    seconds: f64,
    settings: serde_json::Value,
}

/// `path: reason` of a resume file that cannot be used.
fn bad(path: &Path, reason: impl Into<String>) -> HostError {
    HostError::ResumeFile { path: path.to_path_buf(), reason: reason.into() }
}

impl RunState {
    /// The resume file of a run writing its model to `out`.
    pub fn path_for(out: &Path) -> PathBuf {
        let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(".resume");
        out.with_file_name(name)
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, HostError> {
        let model = self.model.to_bytes()?;
        let le = |v: &mut Vec<u8>, bytes: &[u8]| v.extend_from_slice(bytes);
        let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        owned.push(("model".into(), Dtype::U8, vec![model.len()], model));
        for (i, m) in self.momentum.iter().enumerate() {
            let mut b = Vec::with_capacity(m.len() * 4);
            m.iter().for_each(|x| le(&mut b, &x.to_le_bytes()));
            owned.push((format!("momentum.{i}"), Dtype::F32, vec![m.len()], b));
        }
        let mut order = Vec::with_capacity(self.sampler.order.len() * 4);
        self.sampler.order.iter().for_each(|x| le(&mut order, &x.to_le_bytes()));
        owned.push(("order".into(), Dtype::U32, vec![self.sampler.order.len()], order));
        let mut losses = Vec::with_capacity(self.losses.len() * 8);
        self.losses.iter().for_each(|x| le(&mut losses, &x.to_le_bytes()));
        owned.push(("losses".into(), Dtype::F64, vec![self.losses.len()], losses));
        let header = Header {
            version: VERSION,
            steps_done: self.steps_done,
            cursor: self.sampler.cursor,
            epoch: self.sampler.epoch,
            word_pos: self.sampler.word_pos.to_string(),
            seconds: self.seconds,
            settings: self.settings.clone(),
        };
        // Each view's bytes are its shape's by construction: neither call can fail.
        let views: Vec<_> = owned
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).expect("bytes of the shape")))
            .collect();
        let md = HashMap::from([(KEY.to_string(), serde_json::to_string(&header).expect("plain data"))]);
        Ok(safetensors::serialize(views, Some(md)).expect("valid views"))
    }

    /// Writes the file crash-safely.
    pub fn write(&self, path: &Path) -> Result<(), HostError> {
        write_atomically(path, &self.to_bytes()?).map_err(|e| HostError::io(path, e))
    }

    /// Reads a resume file (a regular file of bounded size; anything else is a typed error
    /// naming it).
    pub fn read(path: &Path) -> Result<Self, HostError> {
        let limit = 4 * MAX_MODEL_BYTES;
        let bytes = classmod_runtime::io::regular::read(path, limit).map_err(|e| bad(path, e.to_string()))?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses the bytes of the resume file `path` (named in errors). Any byte string is safe to
    /// pass.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, HostError> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(path, format!("not a resume file: {e}")))?;
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(path, e.to_string()))?;
        let json = meta.metadata().as_ref().and_then(|m| m.get(KEY)).ok_or_else(|| bad(path, format!("no `{KEY}`")))?;
        let h: Header = serde_json::from_str(json).map_err(|e| bad(path, format!("`{KEY}`: {e}")))?;
        if h.version != VERSION {
            return Err(bad(path, format!("version {} (this build reads {VERSION})", h.version)));
        }
        let word_pos = h.word_pos.parse::<u128>().map_err(|_| bad(path, "`word_pos` is not a number"))?;
        let tensor = |name: &str, dtype: Dtype, width: usize| -> Result<&[u8], HostError> {
            let t = st.tensor(name).map_err(|_| bad(path, format!("no tensor `{name}`")))?;
            if t.dtype() != dtype || t.shape().len() != 1 || t.data().len() != t.shape()[0] * width {
                return Err(bad(path, format!("`{name}` is not a vector of {dtype:?}")));
            }
            Ok(t.data())
        };
        let model = ModelFile::from_bytes(tensor("model", Dtype::U8, 1)?, &candle_core::Device::Cpu)
            .map_err(|e| bad(path, format!("its model: {e}")))?;
        let words = |b: &[u8]| b.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect::<Vec<_>>();
        let order: Vec<u32> = words(tensor("order", Dtype::U32, 4)?).into_iter().map(u32::from_le_bytes).collect();
        let losses: Vec<f64> = tensor("losses", Dtype::F64, 8)?
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let mut momentum = Vec::new();
        while let Ok(t) = tensor(&format!("momentum.{}", momentum.len()), Dtype::F32, 4) {
            momentum.push(words(t).into_iter().map(f32::from_le_bytes).collect());
        }
        let names = st.names().len();
        if names != 3 + momentum.len() {
            return Err(bad(path, format!("{names} tensors: momentum buffers not numbered 0.. or foreign tensors")));
        }
        if h.steps_done != losses.len() {
            return Err(bad(path, format!("{} steps done but {} losses", h.steps_done, losses.len())));
        }
        Ok(RunState {
            model,
            momentum,
            sampler: SamplerState { order, cursor: h.cursor, epoch: h.epoch, word_pos },
            steps_done: h.steps_done,
            losses,
            seconds: h.seconds,
            settings: h.settings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use classmod_runtime::host::{ModelMeta, ResNetConfig};
    use classmod_runtime::InputSpec;
    use classmod_train::TrainableResNet;

    fn state() -> RunState {
        let mut arch = ResNetConfig::cifar(8, 3, 4).unwrap();
        arch.widths = [4, 8, 16];
        let meta = ModelMeta {
            arch: arch.into(),
            input: InputSpec::new(3, 8, 8, vec![0.5; 3], vec![0.25; 3]),
            class_names: (0..4).map(|i| format!("c{i}")).collect(),
        };
        let net = TrainableResNet::init(meta, 1).unwrap();
        RunState {
            model: net.to_model().unwrap(),
            momentum: net.momentum().into_iter().enumerate().map(|(i, m)| vec![i as f32; m.len()]).collect(),
            sampler: SamplerState { order: vec![2, 0, 1], cursor: 1, epoch: 3, word_pos: (1u128 << 70) + 5 },
            steps_done: 2,
            losses: vec![1.5, 1.25],
            seconds: 3.5,
            settings: serde_json::json!({"lr": 0.1, "data": "x"}),
        }
    }

    fn path() -> PathBuf {
        PathBuf::from("run.safetensors.resume")
    }

    #[test]
    fn a_state_round_trips() {
        let s = state();
        let back = RunState::from_bytes(&s.to_bytes().unwrap(), &path()).unwrap();
        assert_eq!(back.momentum, s.momentum);
        assert_eq!(back.sampler, s.sampler);
        assert_eq!((back.steps_done, back.losses.clone(), back.seconds), (2, vec![1.5, 1.25], 3.5));
        assert_eq!(back.settings, s.settings);
        assert_eq!(back.model.meta, s.model.meta);
        assert_eq!(RunState::path_for(Path::new("/a/b.safetensors")), PathBuf::from("/a/b.safetensors.resume"));
    }

    /// Truncations, flipped bytes and forged headers are typed errors naming the file, never a
    /// panic or a state that is not the one written.
    #[test]
    fn damaged_files_are_refused_by_name() {
        let bytes = state().to_bytes().unwrap();
        let refused = |b: &[u8]| match RunState::from_bytes(b, &path()) {
            Err(HostError::ResumeFile { path: p, .. }) => assert_eq!(p, path()),
            Err(other) => panic!("untyped: {other}"),
            Ok(_) => panic!("accepted"),
        };
        for cut in (0..bytes.len()).step_by(97) {
            refused(&bytes[..cut]);
        }
        let mut rng = 0x9e3779b9u32;
        for _ in 0..300 {
            rng ^= rng << 13;
            rng ^= rng >> 17;
            rng ^= rng << 5;
            let mut b = bytes.clone();
            let i = rng as usize % b.len();
            b[i] ^= 1 << (rng % 8);
            let _ = RunState::from_bytes(&b, &path()); // typed result either way
        }
        let forged = |edit: &dyn Fn(&mut RunState)| {
            let mut s = state();
            edit(&mut s);
            s.to_bytes().unwrap()
        };
        refused(&forged(&|s| s.losses.push(1.0))); // steps and losses disagree
        let header = String::from_utf8_lossy(&bytes).into_owned();
        assert!(header.contains("\\\"version\\\":1"));
        let v2 = header.replacen("\\\"version\\\":1", "\\\"version\\\":2", 1);
        refused(v2.as_bytes());
    }
}
