//! A read-only memory mapping of a blob file. Blob files are never modified in place (updates
//! write a new file and rename it over the old one), so a mapping stays valid and unchanged for
//! as long as it lives, even after its file is replaced or removed.

use std::path::{Path, PathBuf};

use classmod_blob::{Blob, BlobError, VerifyingKey, HEADER_LEN, TRAILER_LEN};

use super::regular::{self, Symlinks};
use crate::Error;
use crate::Result;

/// The largest blob file mapped: far above any base or module (ResNet-56's base is 3.4 MB), so
/// that a huge or sparse file is refused before its pages are hashed.
pub const MAX_BLOB_BYTES: u64 = 1 << 31;

/// A blob file mapped read-only (an empty file is held without a mapping).
pub struct MappedFile {
    path: PathBuf,
    map: Option<memmap2::Mmap>,
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedFile").field("path", &self.path).field("len", &self.bytes().len()).finish()
    }
}

impl MappedFile {
    /// Maps the file at `path`: a regular file (a FIFO or device is refused without being read
    /// or waited on) of at most `MAX_BLOB_BYTES` (2 GiB).
    pub fn open(path: &Path) -> Result<MappedFile> {
        let (file, len) = regular::open(path, MAX_BLOB_BYTES, Symlinks::Follow)?;
        // An empty file cannot be mapped on every platform; it is no blob either.
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the file is opened read-only and blob files are only ever replaced by
            // rename, never written in place (see the module comment).
            Some(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?)
        };
        Ok(MappedFile { path: path.to_path_buf(), map })
    }

    /// The mapped file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's bytes, as mapped.
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Parses and verifies the mapped blob (layout, hash, and signature when `key` is given).
    pub fn blob(&self, key: Option<&VerifyingKey>) -> Result<Blob<'_>> {
        if self.bytes().is_empty() {
            let min = (HEADER_LEN + TRAILER_LEN) as u64;
            return Err(Error::blob_file(&self.path, BlobError::Truncated { len: 0, min }));
        }
        Blob::open(self.bytes(), key).map_err(|e| Error::blob_file(&self.path, e))
    }
}
