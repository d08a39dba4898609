//! Everything that can be wrong with a blob, one variant per rule of the spec.

/// Why bytes are not a valid (or trustworthy) blob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("truncated: {len} bytes, a blob has at least {min}")]
    /// The input is shorter than a header plus a trailer, so it cannot be a blob (check 1).
    Truncated {
        /// Length of the input, in bytes.
        len: u64,
        /// Smallest possible blob: `HEADER_LEN + TRAILER_LEN` = 256 bytes.
        min: u64,
    },
    #[error("not a classmod blob (bad magic)")]
    /// The first 8 bytes are not `CLSMBLOB`.
    BadMagic,
    #[error("blob format version {0}; this build reads version 1")]
    /// The header's `version` is not 1; carries the version found.
    UnsupportedVersion(u32),
    #[error("unknown blob kind {0}")]
    /// The header's `kind` is neither 1 (base) nor 2 (module); carries the value found.
    UnknownKind(u32),
    #[error("reserved header field `{0}` is not zero")]
    /// A header field or padding that must be zero is not: `flags`, `reserved`, or the padding
    /// between the metadata and the tensor data. Carries which one.
    ReservedNotZero(&'static str),
    #[error("layout: {0}")]
    /// The table, metadata, data or trailer is not where the format puts it (check 2): wrong
    /// offset, past the end of the file, overflowing offset + length, or misaligned bytes.
    Layout(String),
    #[error("tensor #{index}: {reason}")]
    /// A tensor table entry breaks its rules (name, dtype, rank, shape, size, 64-byte offset,
    /// bounds, zero reserved bytes, no overlap), or the writer was given such a tensor.
    BadTensor {
        /// Position of the entry in the tensor table (or of the tensor added to the writer).
        index: usize,
        /// Which rule is broken, for humans.
        reason: String,
    },
    #[error("duplicate tensor name `{0}`")]
    /// Two tensors share a name; names must be unique in a file. Carries the name.
    DuplicateTensor(String),
    #[error("metadata is not UTF-8")]
    /// The metadata section is not valid UTF-8.
    MetaNotUtf8,
    #[error("bad trailer: {0}")]
    /// The trailer breaks its rules (check 3): end magic, zero reserved bytes, `signed` 0 or 1,
    /// zero signature and key id when unsigned. Carries which rule.
    BadTrailer(&'static str),
    #[error("content hash mismatch: the file is corrupt or was modified")]
    /// The trailer's `content_hash` is not the BLAKE3 hash of the bytes before the trailer (check 5).
    HashMismatch,
    #[error("the blob is not signed, and this device only accepts signed blobs")]
    /// The device holds a public key, but the blob is unsigned (check 6).
    Unsigned,
    #[error("signed by another key (key id {found}, expected {expected})")]
    /// The blob is signed, but its `key_id` is not that of the device's key (check 6).
    WrongKey {
        /// The trailer's key id, as 16 hex digits.
        found: String,
        /// The key id of the device's public key, as 16 hex digits.
        expected: String,
    },
    #[error("signature does not verify: the file was modified after signing")]
    /// The Ed25519 signature does not verify against the device's key (check 6).
    BadSignature,
    #[error("no tensor named `{0}`")]
    /// A reader asked for a tensor the blob does not hold. Carries the name asked for.
    MissingTensor(String),
    #[error("tensor `{name}`: {reason}")]
    /// A tensor's dtype or shape is not what the reader expected (not a format violation).
    TensorMismatch {
        /// Name of the tensor.
        name: String,
        /// What was found and what was expected, for humans.
        reason: String,
    },
    #[error("bad key file: {0}")]
    /// A key file's text is not `<tag> <64 hex digits>`, or the public key is not a valid
    /// Ed25519 point. Carries the reason.
    BadKey(String),
}
