//! A read-only memory mapping of a blob file. Blob files are never modified in place (updates
//! write a new file and rename it over the old one), so a mapping stays valid and unchanged for
//! as long as it lives, even after its file is replaced or removed.

use std::path::{Path, PathBuf};

use classmod_blob::{Blob, BlobError, VerifyingKey, HEADER_LEN, TRAILER_LEN};

use crate::Error;
use crate::Result;

/// A blob file mapped read-only (an empty file is held without a mapping).
pub struct MappedFile {
    path: PathBuf,
    map: Option<memmap2::Mmap>,
}

impl MappedFile {
    /// Maps the file at `path`.
    pub fn open(path: &Path) -> Result<MappedFile> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
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
