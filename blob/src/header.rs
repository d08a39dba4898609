//! The fixed 128-byte header at offset 0, read in place from the mapping.

use bytemuck::{Pod, Zeroable};

use crate::BlobError;

pub const MAGIC: [u8; 8] = *b"CLSMBLOB";
pub const VERSION: u32 = 1;
pub const HEADER_LEN: usize = 128;

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobKind {
    /// A base model: its weights, architecture and classes.
    Base = 1,
    /// One class module: masks, head and golden self-test vectors; needs its base.
    Module = 2,
}

impl BlobKind {
    pub fn from_u32(v: u32) -> Result<BlobKind, BlobError> {
        match v {
            1 => Ok(BlobKind::Base),
            2 => Ok(BlobKind::Module),
            other => Err(BlobError::UnknownKind(other)),
        }
    }
}

/// Little-endian on disk; the fields are naturally aligned so the struct has no padding.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct Header {
    pub magic: [u8; 8],
    pub version: u32,
    pub kind: u32,
    pub tensor_count: u32,
    pub flags: u32,
    pub table_offset: u64,
    pub meta_offset: u64,
    pub meta_len: u64,
    pub data_offset: u64,
    pub data_len: u64,
    pub trailer_offset: u64,
    /// For a base: its own key. For a module: the key of the base it needs.
    pub base_key: [u8; 32],
    /// Digest of the input spec (shape, mean, std): modules of different bases compose only if
    /// theirs are equal.
    pub input_key: [u8; 16],
    pub reserved: [u8; 8],
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_LEN);

impl Header {
    pub fn kind(&self) -> Result<BlobKind, BlobError> {
        BlobKind::from_u32(u32::from_le(self.kind))
    }
}
