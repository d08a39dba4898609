//! Everything that can be wrong with a blob, one variant per rule of the spec.

/// Why bytes are not a valid (or trustworthy) blob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("truncated: {len} bytes, a blob has at least {min}")]
    Truncated { len: u64, min: u64 },
    #[error("not a classmod blob (bad magic)")]
    BadMagic,
    #[error("blob format version {0}; this build reads version 1")]
    UnsupportedVersion(u32),
    #[error("unknown blob kind {0}")]
    UnknownKind(u32),
    #[error("reserved header field `{0}` is not zero")]
    ReservedNotZero(&'static str),
    #[error("layout: {0}")]
    Layout(String),
    #[error("tensor #{index}: {reason}")]
    BadTensor { index: usize, reason: String },
    #[error("duplicate tensor name `{0}`")]
    DuplicateTensor(String),
    #[error("metadata is not UTF-8")]
    MetaNotUtf8,
    #[error("bad trailer: {0}")]
    BadTrailer(&'static str),
    #[error("content hash mismatch: the file is corrupt or was modified")]
    HashMismatch,
    #[error("the blob is not signed, and this device only accepts signed blobs")]
    Unsigned,
    #[error("signed by another key (key id {found}, expected {expected})")]
    WrongKey { found: String, expected: String },
    #[error("signature does not verify: the file was modified after signing")]
    BadSignature,
    #[error("no tensor named `{0}`")]
    MissingTensor(String),
    #[error("tensor `{name}`: {reason}")]
    TensorMismatch { name: String, reason: String },
    #[error("bad key file: {0}")]
    BadKey(String),
}
