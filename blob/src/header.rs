//! The fixed 128-byte header at offset 0, read in place from the mapping.

use bytemuck::{Pod, Zeroable};

use crate::BlobError;

/// The header's first 8 bytes, `CLSMBLOB` in ASCII.
pub const MAGIC: [u8; 8] = *b"CLSMBLOB";
/// The format version this crate reads and writes.
pub const VERSION: u32 = 1;
/// Size of the header in bytes; the tensor table starts right after it.
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
    /// The kind for the header's `kind` value (1 or 2), else [`BlobError::UnknownKind`].
    pub fn from_u32(v: u32) -> Result<BlobKind, BlobError> {
        match v {
            1 => Ok(BlobKind::Base),
            2 => Ok(BlobKind::Module),
            other => Err(BlobError::UnknownKind(other)),
        }
    }
}

/// What the first bytes of a file say of it before the rest is read: how a device tells a blob
/// still being written (a prefix of one) from other bytes, and learns its kind and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// Not a blob: the bytes do not start with [`MAGIC`], or the header declares a length
    /// that overflows.
    NotBlob,
    /// [`MAGIC`], then a kind this crate does not know.
    UnknownKind(u32),
    /// Fewer bytes than a header, all of them as a blob starts: a writer that has just begun.
    /// The kind once its bytes (offsets 12..16) are there.
    Partial {
        /// The kind, when the prefix reaches it.
        kind: Option<BlobKind>,
    },
    /// A whole header: the blob's kind and the length of the file it declares (unchecked
    /// against anything else; [`crate::Blob::parse`] checks everything).
    Declares {
        /// What the blob holds.
        kind: BlobKind,
        /// Bytes of the whole file, trailer included.
        file_len: u64,
    },
}

/// Little-endian on disk; the fields are naturally aligned so the struct has no padding.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct Header {
    /// [`MAGIC`], `CLSMBLOB`.
    pub magic: [u8; 8],
    /// Format version; must be [`VERSION`] (1).
    pub version: u32,
    /// [`BlobKind`] as a number: 1 = base model, 2 = class module. Decode with [`Header::kind`].
    pub kind: u32,
    /// Number of entries in the tensor table.
    pub tensor_count: u32,
    /// Reserved for future use; must be zero.
    pub flags: u32,
    /// File offset of the tensor table; always [`HEADER_LEN`] (128), right after the header.
    pub table_offset: u64,
    /// File offset of the metadata JSON: right after the table, `128 + 96 * tensor_count`.
    pub meta_offset: u64,
    /// Length of the metadata JSON in bytes.
    pub meta_len: u64,
    /// File offset of the tensor data section: the first multiple of 64 at or after the end of
    /// the metadata; the gap is zero padding.
    pub data_offset: u64,
    /// Length of the tensor data section in bytes: up to the end of the last tensor's bytes (0
    /// without tensors).
    pub data_len: u64,
    /// File offset of the trailer: `data_offset + data_len`; the trailer ends the file.
    pub trailer_offset: u64,
    /// For a base: its own key. For a module: the key of the base it needs.
    pub base_key: [u8; 32],
    /// Digest of the input spec (shape, mean, std): modules of different bases compose only if
    /// theirs are equal.
    pub input_key: [u8; 16],
    /// Reserved; must be zero.
    pub reserved: [u8; 8],
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_LEN);

impl Header {
    /// The decoded `kind` field, or [`BlobError::UnknownKind`].
    pub fn kind(&self) -> Result<BlobKind, BlobError> {
        BlobKind::from_u32(u32::from_le(self.kind))
    }

    /// The length of the file this header declares (`trailer_offset` + the trailer), unchecked
    /// against anything else; `None` when it overflows. What tells a blob still being written
    /// from a whole one before the rest is read.
    pub fn file_len(&self) -> Option<u64> {
        u64::from_le(self.trailer_offset).checked_add(crate::TRAILER_LEN as u64)
    }

    /// What `prefix`, the first bytes of a file (any number of them), says of it ([`Peek`]).
    pub fn peek(prefix: &[u8]) -> Peek {
        let magic = &prefix[..prefix.len().min(MAGIC.len())];
        if magic != &MAGIC[..magic.len()] {
            return Peek::NotBlob;
        }
        let kind = match prefix.get(12..16) {
            None => return Peek::Partial { kind: None },
            Some(k) => u32::from_le_bytes(k.try_into().expect("four bytes")),
        };
        let Ok(kind) = BlobKind::from_u32(kind) else {
            return Peek::UnknownKind(kind);
        };
        match Header::read(prefix) {
            None => Peek::Partial { kind: Some(kind) },
            Some(h) => h.file_len().map_or(Peek::NotBlob, |file_len| Peek::Declares { kind, file_len }),
        }
    }

    /// The header at the start of `bytes` (copied: no alignment needed), if there are
    /// [`HEADER_LEN`] of them and they start with [`MAGIC`].
    pub fn read(bytes: &[u8]) -> Option<Header> {
        let h: Header = bytemuck::pod_read_unaligned(bytes.get(..HEADER_LEN)?);
        (h.magic == MAGIC).then_some(h)
    }
}
