//! One writer at a time in a device directory: an exclusive `flock` on `.writer.lock`, held by
//! whoever changes the directory (an update transaction, confirm or rollback, the start-up clean,
//! the Mender update module, the inbox of a serving process). A process that only serves takes
//! the lock shared, and only to follow a new manifest, so that it never maps the files of a
//! transaction still under way (a rollback deletes what it installed); the manifest itself is
//! replaced by an atomic rename, so it is always whole.
//!
//! `flock` (not `fcntl` record locks) because it belongs to the open file: two runtimes in one
//! process exclude each other as two processes do, and the kernel drops it when the holder dies,
//! even by `kill -9`, so a crashed writer never leaves the directory locked.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::{Error, Result};

/// The lock file's name in a device directory (a dot file: `clean` and the manifest ignore it).
pub const LOCK_FILE: &str = ".writer.lock";

/// A held lock on a device directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Waits until no other writer or reader holds `dir`, then holds it exclusively.
    pub fn exclusive(dir: &Path) -> Result<DirLock> {
        Self::take(dir, libc::LOCK_EX).map(|l| l.expect("a blocking flock returns only when held"))
    }

    /// Holds `dir` exclusively if nobody else holds it; `None` when somebody does.
    pub fn try_exclusive(dir: &Path) -> Result<Option<DirLock>> {
        Self::take(dir, libc::LOCK_EX | libc::LOCK_NB)
    }

    /// Holds `dir` shared (beside other readers) if no writer holds it; `None` when one does.
    pub fn try_shared(dir: &Path) -> Result<Option<DirLock>> {
        Self::take(dir, libc::LOCK_SH | libc::LOCK_NB)
    }

    fn take(dir: &Path, op: libc::c_int) -> Result<Option<DirLock>> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = dir.join(LOCK_FILE);
        // Never through a symlink somebody planted; never blocking on a FIFO.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        loop {
            // SAFETY: a valid open descriptor, owned by `file` for the whole call.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(Some(DirLock { _file: file }));
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock if op & libc::LOCK_NB != 0 => return Ok(None),
                _ => return Err(Error::io(&path, e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_writer_at_a_time_readers_beside_each_other_released_on_drop() {
        let dir = crate::testing::scratch();
        let held = DirLock::exclusive(&dir).unwrap();
        assert!(DirLock::try_exclusive(&dir).unwrap().is_none(), "a second open file is excluded");
        assert!(DirLock::try_shared(&dir).unwrap().is_none(), "no reader while a writer holds it");
        // Another thread waits for it, and gets it once the first is dropped.
        let d = dir.clone();
        let waiter = std::thread::spawn(move || DirLock::exclusive(&d).map(|_| ()));
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "waits while held");
        drop(held);
        waiter.join().unwrap().unwrap();
        let r1 = DirLock::try_shared(&dir).unwrap().expect("a reader");
        let r2 = DirLock::try_shared(&dir).unwrap().expect("readers together");
        assert!(DirLock::try_exclusive(&dir).unwrap().is_none(), "no writer while read");
        drop((r1, r2));
        assert!(DirLock::try_exclusive(&dir).unwrap().is_some());
        // A symlink in its place is refused, not followed.
        std::fs::remove_file(dir.join(LOCK_FILE)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.join(LOCK_FILE)).unwrap();
        assert!(DirLock::try_exclusive(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
