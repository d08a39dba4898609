//! Opening a file that may be anything: every file the runtime, the device program or the CLI
//! reads is checked to be a regular file and bounded in size before a byte is read. Opened with
//! `O_NONBLOCK` (a FIFO named like a blob cannot hang the reader; on a regular file the flag does
//! nothing) and checked by `fstat` on the opened descriptor, so that what is checked is what is
//! read; optionally with `O_NOFOLLOW` (an inbox entry that is a symlink is refused, not followed).

use std::fs::{File, Metadata};
use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// Whether a symlink at the path itself is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    /// Followed (to a regular file): what a deployment may set up in a packed directory.
    Follow,
    /// Refused: what an untrusted drop directory gets.
    Refuse,
}

/// What a path is, in words, for an error.
fn kind(m: &Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else {
        "a FIFO, socket or device"
    }
}

/// `path` opened for reading, with its length, if it is a regular file of at most `max_bytes`.
/// Errors: [`Error::NotRegularFile`], [`Error::FileTooLarge`], or [`Error::Io`] (a missing file
/// is `Io` with `NotFound`).
pub fn open(path: &Path, max_bytes: u64, symlinks: Symlinks) -> Result<(File, u64)> {
    let mut opts = std::fs::OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let nofollow = if symlinks == Symlinks::Refuse { libc::O_NOFOLLOW } else { 0 };
        opts.custom_flags(libc::O_NONBLOCK | nofollow);
    }
    let not_regular = |what: &'static str| Error::NotRegularFile { path: path.to_path_buf(), kind: what };
    let file = match opts.open(path) {
        Ok(f) => f,
        // ELOOP: the path is a symlink and O_NOFOLLOW refused it.
        #[cfg(unix)]
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) && symlinks == Symlinks::Refuse => {
            return Err(not_regular("a symbolic link"))
        }
        Err(e) => {
            // A directory opens on some systems and not on others: say what it is either way.
            if let Ok(m) = std::fs::symlink_metadata(path) {
                if m.is_dir() {
                    return Err(not_regular("a directory"));
                }
            }
            return Err(Error::io(path, e));
        }
    };
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.file_type().is_file() {
        return Err(not_regular(kind(&meta)));
    }
    if meta.len() > max_bytes {
        return Err(Error::FileTooLarge { path: path.to_path_buf(), bytes: meta.len(), max: max_bytes });
    }
    Ok((file, meta.len()))
}

/// The whole of a regular file of at most `max_bytes` (following symlinks), read without
/// trusting the length `fstat` gave: a file that grows meanwhile is cut at the bound and refused.
pub fn read(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    read_with(path, max_bytes, Symlinks::Follow)
}

/// [`read`] as UTF-8 text.
pub fn read_to_string(path: &Path, max_bytes: u64) -> Result<String> {
    read_to_string_with(path, max_bytes, Symlinks::Follow)
}

/// [`read`], with a symlink at `path` followed or refused as `symlinks` says.
pub fn read_with(path: &Path, max_bytes: u64, symlinks: Symlinks) -> Result<Vec<u8>> {
    let (file, len) = open(path, max_bytes, symlinks)?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max_bytes + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(Error::FileTooLarge { path: path.to_path_buf(), bytes: bytes.len() as u64, max: max_bytes });
    }
    Ok(bytes)
}

/// [`read_with`] as UTF-8 text.
pub fn read_to_string_with(path: &Path, max_bytes: u64, symlinks: Symlinks) -> Result<String> {
    String::from_utf8(read_with(path, max_bytes, symlinks)?).map_err(|e| {
        Error::io(path, std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not UTF-8 text: {e}")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bounded_regular_files_are_read() {
        let d = crate::testing::scratch();
        let f = d.join("f");
        std::fs::write(&f, b"hello").unwrap();
        assert_eq!(read(&f, 5).unwrap(), b"hello");
        assert!(matches!(read(&f, 4), Err(Error::FileTooLarge { bytes: 5, max: 4, .. })));
        assert_eq!(read_to_string(&f, 99).unwrap(), "hello");
        std::fs::write(&f, [0xff, 0xfe]).unwrap();
        assert!(read_to_string(&f, 99).unwrap_err().to_string().contains("not UTF-8"));
        assert!(matches!(read(&d, 99), Err(Error::NotRegularFile { kind: "a directory", .. })));
        assert!(matches!(read(&d.join("absent"), 99), Err(Error::Io { .. })));
        // Unbounded devices and FIFOs: refused at once, never read, never waited on.
        assert!(matches!(read(Path::new("/dev/zero"), 1 << 30), Err(Error::NotRegularFile { .. })));
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read(&fifo, 99).unwrap_err();
        assert!(matches!(e, Error::NotRegularFile { kind: "a FIFO, socket or device", .. }), "{e}");
        assert!(e.to_string().contains(fifo.to_str().unwrap()), "names the file: {e}");
        // A symlink: followed to a regular file unless refused.
        let link = d.join("link");
        std::fs::write(&f, b"x").unwrap();
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(open(&link, 9, Symlinks::Follow).is_ok());
        assert!(matches!(open(&link, 9, Symlinks::Refuse), Err(Error::NotRegularFile { kind: "a symbolic link", .. })));
    }
}
