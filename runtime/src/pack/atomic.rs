//! Crash-safe replacement of a file: write a temporary file in the same directory, fsync it,
//! rename it over the target, fsync the directory. After a power cut at any point the target is
//! either the complete old file or the complete new one. A file that is memory-mapped is thus
//! never rewritten in place.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The temporary name used while `path` is being replaced. Stale ones (from a crash) are safe to
/// delete; they are never read.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// The file-system steps of a durable write, behind a trait so that tests can cut the power
/// after any one of them (see the field-update tests).
pub trait DurableFs {
    /// Creates (or truncates) `path` and writes `bytes` to it.
    fn write_file(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Flushes `path`'s data to the disk.
    fn sync_file(&mut self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to` atomically (both in one directory).
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes renames in the directory holding `path` durable.
    fn sync_dir(&mut self, path: &Path) -> io::Result<()>;
    /// Removes the file `path`.
    fn remove(&mut self, path: &Path) -> io::Result<()>;
}

/// The real file system.
pub struct OsFs;

impl DurableFs for OsFs {
    fn write_file(&mut self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        File::create(path)?.write_all(bytes)
    }
    fn sync_file(&mut self, path: &Path) -> io::Result<()> {
        // fsync through any descriptor of the file flushes the file's data.
        fs::OpenOptions::new().write(true).open(path)?.sync_all()
    }
    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn sync_dir(&mut self, path: &Path) -> io::Result<()> {
        sync_dir(path)
    }
    fn remove(&mut self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
}

/// Atomically replaces (or creates) `path` with `bytes` through `fs`: temp file, fsync, rename,
/// fsync of the directory. On error the temp file is removed (when `fs` still can).
pub fn write_with(fs: &mut dyn DurableFs, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    // Each failure says which step and which file failed (the caller names `path`): a temp file
    // that cannot be written is not "manifest.json: Is a directory". The kind is kept, so that
    // a full disk is still a full disk.
    let name = tmp.file_name().map_or_else(|| tmp.display().to_string(), |n| n.to_string_lossy().into_owned());
    let at = |step: String| move |e: io::Error| io::Error::new(e.kind(), format!("{step}: {e}"));
    let result = (|| {
        fs.write_file(&tmp, bytes).map_err(at(format!("writing the temp file {name}")))?;
        fs.sync_file(&tmp).map_err(at(format!("syncing the temp file {name}")))?;
        fs.rename(&tmp, path).map_err(at(format!("renaming the temp file {name} into place")))?;
        fs.sync_dir(path).map_err(at("syncing the directory".to_string()))
    })();
    if result.is_err() {
        let _ = fs.remove(&tmp);
    }
    result
}

/// Atomically replaces (or creates) `path` with `bytes`.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(&mut OsFs, path, bytes)
}

/// Fsyncs the directory holding `path`, making a rename in it durable.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Directories cannot be opened for syncing on every platform; where they cannot, the rename
    // is as durable as the platform makes it.
    match File::open(dir) {
        Ok(d) => d.sync_all().or_else(|e| if cfg!(unix) { Err(e) } else { Ok(()) }),
        Err(e) if cfg!(unix) => Err(e),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_and_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("classmod-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f.bin");
        write(&p, b"old").unwrap();
        write(&p, b"new contents").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new contents");
        assert!(!temp_path(&p).exists());
        // A target in a missing directory fails cleanly.
        assert!(write(&dir.join("missing/f.bin"), b"x").is_err());
        // Issue 36, item 9: a directory where the temp file goes was reported as the target's
        // fault ("f.bin: Is a directory"): now the step and the temp file are named.
        fs::create_dir(temp_path(&p)).unwrap();
        let e = write(&p, b"x").unwrap_err();
        assert!(e.to_string().starts_with("writing the temp file .f.bin.tmp"), "{e}");
        assert_eq!(e.kind(), io::ErrorKind::IsADirectory, "the kind is kept");
        fs::remove_dir_all(&dir).unwrap();
    }
}
