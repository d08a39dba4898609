//! The tensor table: one 96-byte entry per tensor, right after the header.

use bytemuck::{Pod, Zeroable};

/// Size of one tensor table entry in bytes.
pub const ENTRY_LEN: usize = 96;
/// Longest tensor name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 48;
/// Most dimensions a tensor can have.
pub const MAX_RANK: usize = 4;

/// Element types a blob stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// 32-bit IEEE float, 4 bytes.
    F32 = 1,
    /// 16-bit IEEE half float, 2 bytes.
    F16 = 2,
    /// bfloat16 (8-bit exponent, 7-bit mantissa), 2 bytes.
    BF16 = 3,
    /// Bytes (packed node masks: bit i of byte i/8, least significant first; golden images).
    U8 = 4,
}

impl DType {
    /// The dtype for a table entry's `dtype` value (1 to 4); `None` for any other.
    pub fn from_u32(v: u32) -> Option<DType> {
        match v {
            1 => Some(DType::F32),
            2 => Some(DType::F16),
            3 => Some(DType::BF16),
            4 => Some(DType::U8),
            _ => None,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 => 1,
        }
    }
}

/// One tensor table entry as stored on disk ([`ENTRY_LEN`] bytes, little-endian).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct TensorEntry {
    /// UTF-8, padded with zero bytes.
    pub name: [u8; MAX_NAME_LEN],
    /// [`DType`] as a number: 1 = f32, 2 = f16, 3 = bf16, 4 = u8.
    pub dtype: u32,
    /// Number of dimensions used in `shape`, 1 to [`MAX_RANK`].
    pub rank: u32,
    /// Unused dimensions are zero.
    pub shape: [u32; MAX_RANK],
    /// From the start of the data section; a multiple of 64.
    pub offset: u64,
    /// Length of the tensor's bytes: element count times dtype size.
    pub nbytes: u64,
    /// Reserved; must be zero.
    pub reserved: [u8; 8],
}

const _: () = assert!(std::mem::size_of::<TensorEntry>() == ENTRY_LEN);
