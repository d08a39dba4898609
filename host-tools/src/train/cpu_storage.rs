//! Moving data between candle tensors and the raw CPU storage that custom ops receive.

use candle_core::{CpuStorage, Device, Layout, Storage, Tensor};

/// The f32 values a contiguous CPU storage view holds.
pub fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("custom op: non-contiguous input"),
    }
}

/// A tensor over a copy of a CPU storage view.
pub fn tensor_of(s: &CpuStorage, l: &Layout) -> candle_core::Result<Tensor> {
    Tensor::from_slice(contiguous_f32(s, l)?, l.shape(), &Device::Cpu)
}

/// The CPU storage of a tensor's values (copied when the tensor is a view).
pub fn storage_of(t: &Tensor) -> candle_core::Result<CpuStorage> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(c) => match l.contiguous_offsets() {
            Some((0, n)) if n == c.as_slice::<f32>()?.len() => Ok(c.clone()),
            Some((a, b)) => Ok(CpuStorage::F32(c.as_slice::<f32>()?[a..b].to_vec())),
            None => candle_core::bail!("custom op: non-contiguous output"),
        },
        _ => candle_core::bail!("custom op: expected CPU storage"),
    }
}
