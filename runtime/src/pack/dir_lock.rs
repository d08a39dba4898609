//! One writer at a time in a device directory: an exclusive `flock` on the directory itself,
//! held by whoever changes it (an update transaction, confirm or rollback, the start-up clean,
//! the Mender update module, the inbox of a serving process). A process that only serves takes
//! the lock shared, and only to follow a new manifest, so that it never maps the files of a
//! transaction still under way (a rollback deletes what it installed); the manifest itself is
//! replaced by an atomic rename, so it is always whole.
//!
//! `flock` (not `fcntl` record locks) because it belongs to the open file: two runtimes in one
//! process exclude each other as two processes do, and the kernel drops it when the holder dies,
//! even by `kill -9`, so a crashed writer never leaves the directory locked.
//!
//! The directory, not a lock file in it (releases before 2026-12-08 locked `.writer.lock`): a
//! reader needs no write access, so a read-only device directory (a read-only root file system)
//! or one owned by another user still serves; nothing can be deleted, replaced by a directory or
//! a symlink, or made unreadable to let a second writer in or to stop the device.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::{Error, Result};

/// A held lock on a device directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DirLock {
    _dir: File,
}

impl DirLock {
    /// Waits until no other writer or reader holds `dir`, then holds it exclusively. A serving
    /// process never calls this ([`DirLock::try_exclusive`]); a writer that may wait should say
    /// so ([`DirLock::holders`] names who it waits for).
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
        // Read-only: `flock` needs no more, whatever the lock's kind. O_DIRECTORY: a file put
        // where the directory was is refused, not locked.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(dir)
            .map_err(|e| Error::io(dir, e))?;
        loop {
            // SAFETY: a valid open descriptor, owned by `file` for the whole call.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(Some(DirLock { _dir: file }));
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock if op & libc::LOCK_NB != 0 => return Ok(None),
                _ => return Err(Error::io(dir, e)),
            }
        }
    }

    /// Who holds `dir`'s lock, as the kernel's lock table (`/proc/locks`) says: each holder's
    /// process id and name (`classmod-update-module`, `flock`), for a writer that waits to say
    /// whom for. Empty where the table cannot be read.
    pub fn holders(dir: &Path) -> Vec<(u32, String)> {
        use std::os::unix::fs::MetadataExt;
        let Ok(m) = std::fs::metadata(dir) else { return vec![] };
        // /proc/locks names a file as MAJOR:MINOR:INODE (hex device numbers, decimal inode).
        let dev = m.dev();
        let (major, minor) = (libc::major(dev), libc::minor(dev));
        let id = format!("{major:02x}:{minor:02x}:{}", m.ino());
        let Ok(table) = crate::io::regular::read_to_string(Path::new("/proc/locks"), 16 << 20) else {
            return vec![];
        };
        let mut pids: Vec<u32> = table
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // A holder: `N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF` (a waiter: `N: -> FLOCK`).
                if f.get(1) != Some(&"FLOCK") || f.get(5) != Some(&id.as_str()) {
                    return None;
                }
                f.get(4)?.parse().ok()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids.into_iter()
            .map(|pid| {
                let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                (pid, name.trim().to_string())
            })
            .collect()
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
        assert!(DirLock::holders(&dir).iter().any(|&(pid, _)| pid == std::process::id()), "this process holds it");
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
        assert!(DirLock::holders(&dir).is_empty(), "nobody holds it now");
        // The directory is the lock: no file is made in it.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        // A file where the directory should be is an error naming it, not a lock.
        let file = dir.join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        assert!(DirLock::try_shared(&file).unwrap_err().to_string().contains("not-a-dir"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Issue 36, item 4: a directory this process may only read (mode 0555; as root, which
    /// writes anyway, the same open is made) is locked shared and exclusive alike.
    #[test]
    fn a_read_only_directory_can_be_locked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::testing::scratch();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        assert!(DirLock::try_shared(&dir).unwrap().is_some());
        assert!(DirLock::try_exclusive(&dir).unwrap().is_some());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
