//! The tensor table: one 96-byte entry per tensor, right after the header.

use bytemuck::{Pod, Zeroable};

pub const ENTRY_LEN: usize = 96;
pub const MAX_NAME_LEN: usize = 48;
pub const MAX_RANK: usize = 4;

/// Element types a blob stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32 = 1,
    F16 = 2,
    BF16 = 3,
    /// Bytes (packed node masks: bit i of byte i/8, least significant first; golden images).
    U8 = 4,
}

impl DType {
    pub fn from_u32(v: u32) -> Option<DType> {
        match v {
            1 => Some(DType::F32),
            2 => Some(DType::F16),
            3 => Some(DType::BF16),
            4 => Some(DType::U8),
            _ => None,
        }
    }

    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 => 1,
        }
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct TensorEntry {
    /// UTF-8, padded with zero bytes.
    pub name: [u8; MAX_NAME_LEN],
    pub dtype: u32,
    pub rank: u32,
    /// Unused dimensions are zero.
    pub shape: [u32; MAX_RANK],
    /// From the start of the data section; a multiple of 64.
    pub offset: u64,
    pub nbytes: u64,
    pub reserved: [u8; 8],
}

const _: () = assert!(std::mem::size_of::<TensorEntry>() == ENTRY_LEN);
