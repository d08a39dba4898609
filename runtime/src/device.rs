//! Choosing where tensors live: the CPU always; a CUDA GPU when this build has candle's `cuda`
//! feature (one build per board, the compute capability fixed at build time by `CUDA_COMPUTE_CAP`).

use candle_core::Device;

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

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(not(feature = "cuda"))]
    fn a_cpu_build_says_it_has_no_cuda() {
        let e = super::cuda(0).unwrap_err().to_string();
        assert!(e.contains("no CUDA support") && e.contains("--features cuda"), "{e}");
    }
}
