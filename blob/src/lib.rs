//! The classmod blob format, version 1: one file per base model or class module, laid out so a
//! device can memory-map it and read its header, tensor table and tensors in place.
//!
//! ```text
//! [header 128 B][tensor table, 96 B per tensor][metadata (UTF-8 JSON)][pad][tensor data][trailer 128 B]
//! ```
//! Every tensor starts on a 64-byte boundary of the file. The trailer holds the BLAKE3 hash of
//! everything before it and, optionally, an Ed25519 signature of that hash. The byte-level
//! specification is `docs/blob-format.md`; this crate is its only reader and writer.
//!
//! The crate knows nothing of models: metadata is opaque UTF-8 (the runtime gives it meaning),
//! tensors are names, dtypes, shapes and bytes. [`Blob::parse`] checks every offset and length
//! against the bytes present before anything is sliced, so hostile input gives a [`BlobError`],
//! never a panic or an out-of-bounds read.

#![warn(missing_docs)]

mod aligned;
mod error;
mod header;
mod reader;
mod signing;
mod table;
mod trailer;
mod writer;

pub use aligned::AlignedBytes;
pub use error::BlobError;
pub use header::{BlobKind, Header, Peek, HEADER_LEN, MAGIC, VERSION};
pub use reader::{Blob, TensorView};
pub use signing::{
    key_id, parse_public_key, parse_secret_key, public_key_text, secret_key_text, SigningKey, VerifyingKey,
    SIGNATURE_DOMAIN,
};
pub use table::{DType, TensorEntry, ENTRY_LEN, MAX_NAME_LEN, MAX_RANK};
pub use trailer::{Trailer, END_MAGIC, TRAILER_LEN};
pub use writer::BlobWriter;

/// Tensors start on multiples of this many bytes (a cache line; enough for SIMD loads).
pub const ALIGN: usize = 64;
