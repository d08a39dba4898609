//! Choosing where tensors live: the CPU always; a CUDA GPU when this build has candle's `cuda`
//! feature (one build per board, the compute capability fixed at build time by `CUDA_COMPUTE_CAP`).

use candle_core::{DType, Device};

use crate::Error;
use crate::Result;

/// Whether this build can run on a CUDA GPU.
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// CUDA device `ordinal`, or a typed error saying why not (no `cuda` feature, no GPU, no driver).
pub fn cuda(ordinal: usize) -> Result<Device> {
    let device = format!("CUDA device {ordinal}");
    if !CUDA_BUILT {
        return Err(Error::DeviceUnavailable {
            device,
            reason: "this build has no CUDA support; rebuild with `--features cuda`".into(),
        });
    }
    Device::new_cuda(ordinal).map_err(|e| Error::DeviceUnavailable { device, reason: e.to_string() })
}

/// The number format a network's convolutions compute in. The CPU path computes in f32 only; a
/// GPU may compute in half precision (a board profile's `f16`/`bf16`): weights are converted once
/// at load, each activation is converted at the network's entry, and pooled features come back
/// as f32, so heads, scores and everything after them stay f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Precision {
    /// Single precision: the CPU path's, and the reference.
    #[default]
    F32,
    /// IEEE half precision (Volta and later; Jetson Xavier and Orin).
    F16,
    /// bfloat16 (Ampere and later; Jetson Orin): f32's range, fewer mantissa bits than f16.
    Bf16,
}

impl Precision {
    /// Candle's type for it.
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Bf16 => DType::BF16,
        }
    }

    /// `f32`, `f16` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }

    /// Largest difference of a module's score from its golden score (recorded in f32 on the
    /// host) that the self-test accepts at this precision. f32: another summation order, ~1e-6.
    /// Half precision: 11 (f16) or 8 (bf16) mantissa bits through ~20-56 layers; the bounds are
    /// a few times the largest differences measured on the shared ResNet-20/56 modules on an
    /// H200 (`scripts/gpu-check.sh`, README "GPU"), and still far below a changed module's.
    pub fn golden_tolerance(self) -> f32 {
        match self {
            Precision::F32 => crate::pack::module_blob::GOLDEN_TOLERANCE,
            Precision::F16 => 2e-2,
            Precision::Bf16 => 8e-2,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(not(feature = "cuda"))]
    fn a_cpu_build_says_it_has_no_cuda() {
        let e = super::cuda(0).unwrap_err().to_string();
        assert!(e.contains("no CUDA support") && e.contains("--features cuda"), "{e}");
    }
}
