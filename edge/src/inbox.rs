//! The update inbox on untrusted ground: which entries to apply, which to wait for, which to set
//! aside, and where each processed file goes. A writer may still be writing an entry, remove it,
//! or leave something that is not a file at all; the disk may be full; `done/` may be a file.
//! Each entry's failure is that entry's alone: it is logged with its name and set aside (or left
//! to retry when the cause can pass), and the device goes on serving and applying the others.
//!
//! The protocol for producers (README): write the blob elsewhere (or under a name starting with
//! `.` or ending in `.tmp` / `.part`, which the inbox ignores) and rename it to `NAME.blob` in the
//! inbox; a blob written in place is left alone while it is shorter than its header says.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use classmod_runtime::io::regular::{self, Symlinks};
use classmod_runtime::io::MappedFile;
use classmod_runtime::{declared_len, ErrorKind, UpdateKind, BLOB_HEADER_LEN as HEADER_LEN, BLOB_MAGIC as MAGIC};

/// What a look at one inbox entry found.
#[derive(Debug)]
pub enum Entry {
    /// A complete blob of this kind, streamed into the device's own scratch file and mapped
    /// from there: the runtime hashes and verifies the mapping, nothing is copied into memory
    /// whole, and no other writer can change or truncate what is mapped.
    Ready(UpdateKind, MappedFile),
    /// Shorter than its header says, or too short to have one yet: a writer is still at it.
    Incomplete { have: u64, want: Option<u64> },
    /// Never to be applied, and why: moved to `rejected/`.
    Refused(String),
    /// Removed between the scan and the look.
    Gone,
    /// Could not be read now for a reason that can pass (no space, a busy or interrupted read):
    /// left where it is and looked at again on the next scan.
    Retry(String),
}

/// The device's scratch copy of the inbox entry being applied, in the device directory (a temp
/// name that start-up clean-up removes).
pub const SCRATCH_FILE: &str = ".inbox-entry.tmp";

/// Whether the inbox skips `name` without a word: hidden and partial files of a writer that
/// renames (`.name`, `*.tmp`, `*.part`) and anything not named `*.blob`.
pub fn ignored(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with('.') || name.ends_with(".tmp") || name.ends_with(".part") || !name.ends_with(".blob")
}

/// Whether an I/O failure can pass without anyone touching the file: worth a retry.
pub fn transient(e: &io::Error) -> bool {
    ErrorKind::of_io(e) == ErrorKind::Transient
}

/// Reads the inbox entry at `path` if it is a complete blob of at most `max_bytes`: without
/// following a symlink, without blocking on a FIFO, and without reading more than the header
/// declares. A complete one is streamed into `scratch` (a file of the device's own, replaced
/// each time, removed by the next start's clean-up if a crash leaves it) and mapped from there.
pub fn examine(path: &Path, max_bytes: u64, scratch: &Path) -> Entry {
    let file = match open_entry(path, max_bytes) {
        Ok(f) => f,
        Err(entry) => return entry,
    };
    match read_complete(file, max_bytes, scratch) {
        Ok(entry) => entry,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Entry::Gone,
        Err(e) if transient(&e) => Entry::Retry(e.to_string()),
        Err(e) => Entry::Refused(format!("cannot be read: {e}")),
    }
}

/// `path` opened for reading if it is a regular file itself of at most `max_bytes` (not a
/// symlink, a FIFO, a device or a directory: `regular::open`, which neither follows nor blocks);
/// else what that makes of the entry.
fn open_entry(path: &Path, max_bytes: u64) -> Result<File, Entry> {
    use classmod_runtime::Error;
    match regular::open(path, max_bytes, Symlinks::Refuse) {
        Ok((file, _)) => Ok(file),
        Err(Error::Io { error, .. }) if error.kind() == io::ErrorKind::NotFound => Err(Entry::Gone),
        Err(Error::Io { error, .. }) if transient(&error) => Err(Entry::Retry(error.to_string())),
        Err(Error::Io { error, .. }) => Err(Entry::Refused(format!("cannot be opened: {error}"))),
        Err(Error::NotRegularFile { kind, .. }) => Err(Entry::Refused(format!("is {kind}, not a file"))),
        Err(Error::FileTooLarge { bytes, max, .. }) => {
            Err(Entry::Refused(format!("holds {bytes} bytes, more than the inbox takes ({max})")))
        }
        Err(e) => Err(Entry::Refused(e.to_string())),
    }
}

/// The whole blob, copied to `scratch` and mapped, if the file holds exactly what its header
/// declares.
fn read_complete(mut file: File, max_bytes: u64, scratch: &Path) -> io::Result<Entry> {
    let have = file.metadata()?.len();
    let mut head = [0u8; HEADER_LEN];
    let got = read_up_to(&mut file, &mut head)?;
    // Too short for a header: a writer that has just begun, if what is there so far is a blob's.
    if got < HEADER_LEN {
        let prefix = got.min(MAGIC.len());
        return Ok(if head[..prefix] == MAGIC[..prefix] {
            Entry::Incomplete { have, want: None }
        } else {
            Entry::Refused("is not a classmod blob (no blob header)".into())
        });
    }
    let (Some(kind), Some(want)) = (UpdateKind::of(&head), declared_len(&head)) else {
        return Ok(Entry::Refused("is not a classmod blob (no blob header)".into()));
    };
    if want > max_bytes {
        return Ok(Entry::Refused(format!("declares {want} bytes, more than the inbox takes ({max_bytes})")));
    }
    if have < want {
        return Ok(Entry::Incomplete { have, want: Some(want) });
    }
    if have > want {
        return Ok(Entry::Refused(format!("holds {have} bytes where its header declares {want}")));
    }
    // Streamed, a buffer at a time (want <= max_bytes, checked), to a file only the device
    // writes: mapping the entry itself would let its writer change it after the hash check, or
    // truncate it under the mapping (SIGBUS).
    let _ = std::fs::remove_file(scratch);
    let mut copy = std::fs::OpenOptions::new().write(true).create_new(true).open(scratch)?;
    copy.write_all(&head)?;
    let got = HEADER_LEN as u64 + io::copy(&mut (&mut file).take(want - HEADER_LEN as u64), &mut copy)?;
    drop(copy);
    // Shortened while it was read: a writer truncated and is writing it again.
    if got < want {
        let _ = std::fs::remove_file(scratch);
        return Ok(Entry::Incomplete { have: got, want: Some(want) });
    }
    // The runtime's error kept as it is: a mapping that failed for now is retried, not refused.
    let mapped = match MappedFile::open(scratch) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::Transient => return Ok(Entry::Retry(e.to_string())),
        Err(e) => return Ok(Entry::Refused(format!("cannot be read: {e}"))),
    };
    Ok(Entry::Ready(kind, mapped))
}

/// Reads into `buf` until it is full or the file ends; how many bytes came.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Moves `path` into `inbox/<dest>/` under its own name, or under `NAME.1`, `NAME.2` ... when
/// that is taken (by an earlier delivery of the same name, or by something that is not a file).
/// Returns the name it got.
pub fn move_into(inbox: &Path, dest: &str, path: &Path) -> io::Result<String> {
    let dir = inbox.join(dest);
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if !m.is_dir() => {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{dest}/ is not a directory")))
        }
        Ok(_) => {}
        Err(_) => std::fs::create_dir_all(&dir)?,
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    for n in 0..1000 {
        let candidate = if n == 0 { name.clone() } else { format!("{name}.{n}") };
        let to = dir.join(&candidate);
        if std::fs::symlink_metadata(&to).is_ok() {
            continue;
        }
        std::fs::rename(path, &to)?;
        return Ok(candidate);
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{dest}/ has 1000 files named {name}")))
}

/// An entry as it was when the inbox last looked: length and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    /// The entry's stamp now; `None` when it is gone.
    pub fn of(path: &Path) -> Option<Stamp> {
        let m = std::fs::symlink_metadata(path).ok()?;
        Some(Stamp { len: m.len(), modified: m.modified().ok() })
    }
}

/// What the inbox remembers between scans, so that an entry that stays where it is (waiting for
/// its writer, stuck because it could not be moved, or retried) is reported once per change,
/// not once per scan.
#[derive(Debug, Default)]
pub struct Noted {
    /// Entries not to look at again until they change.
    skip: HashMap<PathBuf, Stamp>,
    /// The last line said about each entry.
    said: HashMap<PathBuf, String>,
}

impl Noted {
    /// Whether `path` is to be skipped: noted with [`Noted::skip_until_changed`] and unchanged
    /// (one `stat`: a blob written in place is applied at the first scan after its last byte).
    pub fn skipped(&self, path: &Path) -> bool {
        self.skip.get(path).is_some_and(|s| Stamp::of(path) == Some(*s))
    }

    /// How many entries of `dir` are skipped (noted, and unchanged when last looked at).
    pub fn skipped_in(&self, dir: &Path) -> usize {
        self.skip.keys().filter(|p| p.parent() == Some(dir)).count()
    }

    /// Skips `path` until its length or modification time differ from `seen`: the stamp taken
    /// *before* the entry was looked at, so that bytes its writer adds meanwhile (the last
    /// ones, say) count as a change instead of being skipped for good. `None` skips nothing.
    pub fn skip_until_changed(&mut self, path: &Path, seen: Option<Stamp>) {
        if let Some(s) = seen {
            self.skip.insert(path.to_path_buf(), s);
        }
    }

    /// Whether `line` is new for `path` (then it is remembered as the last one said).
    pub fn fresh(&mut self, path: &Path, line: &str) -> bool {
        if self.said.get(path).is_some_and(|l| l == line) {
            return false;
        }
        self.said.insert(path.to_path_buf(), line.to_string());
        true
    }

    /// Forgets the entries of `dir` that its listing (`listed`, the paths read from it now)
    /// no longer has: from the listing, not a `stat` each.
    pub fn retain_listed(&mut self, dir: &Path, listed: &std::collections::HashSet<PathBuf>) {
        let keep = |p: &PathBuf| p.parent() != Some(dir) || listed.contains(p);
        self.skip.retain(|p, _| keep(p));
        self.said.retain(|p, _| keep(p));
    }
}

/// The kind a blob's header claims, read without following a symlink or blocking on a FIFO
/// (what sorts bases before modules; [`examine`] checks the rest).
pub fn peek_kind(path: &Path) -> Option<UpdateKind> {
    let mut file = open_entry(path, u64::MAX).ok()?;
    let mut head = [0u8; 16];
    (read_up_to(&mut file, &mut head).ok()? == head.len()).then(|| UpdateKind::of(&head)).flatten()
}

/// A name as the log shows it: control characters (a newline would forge a log line) escaped.
pub fn loggable(name: &str) -> String {
    name.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("classmod-inbox-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A blob-shaped file: a header declaring `declared` bytes in all, `len` bytes long.
    fn blob_like(path: &Path, declared: u64, len: usize) {
        let mut b = vec![0u8; len.max(HEADER_LEN)];
        b[..8].copy_from_slice(&MAGIC);
        b[12..16].copy_from_slice(&2u32.to_le_bytes());
        // The trailer ends the file.
        b[64..72].copy_from_slice(&(declared - classmod_runtime::BLOB_TRAILER_LEN as u64).to_le_bytes());
        b.truncate(len);
        std::fs::write(path, b).unwrap();
    }

    #[test]
    fn names_a_renaming_writer_uses_are_ignored() {
        for (name, skip) in
            [("cat.blob", false), (".cat.blob", true), ("cat.blob.tmp", true), ("cat.blob.part", true), ("cat", true)]
        {
            assert_eq!(ignored(OsStr::new(name)), skip, "{name}");
        }
    }

    #[test]
    fn entries_are_read_only_when_complete_and_regular() {
        let d = scratch("examine");
        let p = d.join("m.blob");
        blob_like(&p, 1000, 1000);
        assert!(
            matches!(examine(&p, 1 << 20, &d.join(".entry.tmp")), Entry::Ready(UpdateKind::Module, ref b) if b.bytes().len() == 1000)
        );
        // Written in place, not done yet: left alone, at every length below the declared one.
        for len in [0usize, 5, 127, 128, 999] {
            blob_like(&p, 1000, len);
            assert!(matches!(examine(&p, 1 << 20, &d.join(".entry.tmp")), Entry::Incomplete { .. }), "{len} bytes");
        }
        blob_like(&p, 1000, 1001);
        assert!(
            matches!(examine(&p, 1 << 20, &d.join(".entry.tmp")), Entry::Refused(ref w) if w.contains("declares 1000"))
        );
        blob_like(&p, 1000, 1000);
        assert!(
            matches!(examine(&p, 999, &d.join(".entry.tmp")), Entry::Refused(ref w) if w.contains("more than the inbox takes"))
        );
        std::fs::write(&p, b"GIF89a, a picture, not a blob of any kind; long enough to have a header ....".repeat(3))
            .unwrap();
        assert!(
            matches!(examine(&p, 1 << 20, &d.join(".entry.tmp")), Entry::Refused(ref w) if w.contains("not a classmod blob"))
        );
        assert!(matches!(examine(&d.join("gone.blob"), 1 << 20, &d.join(".entry.tmp")), Entry::Gone));
        std::fs::create_dir(d.join("dir.blob")).unwrap();
        assert!(
            matches!(examine(&d.join("dir.blob"), 1 << 20, &d.join(".entry.tmp")), Entry::Refused(ref w) if w.contains("a directory"))
        );
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/proc/self/mem", d.join("mem.blob")).unwrap();
            assert!(
                matches!(examine(&d.join("mem.blob"), 1 << 20, &d.join(".entry.tmp")), Entry::Refused(ref w) if w.contains("symbolic"))
            );
            let fifo = d.join("fifo.blob");
            let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            assert!(
                matches!(examine(&fifo, 1 << 20, &d.join(".entry.tmp")), Entry::Refused(ref w) if w.contains("FIFO"))
            );
        }
    }

    #[test]
    fn moves_find_a_free_name_and_refuse_a_destination_that_is_a_file() {
        let d = scratch("move");
        for round in 0..3 {
            std::fs::write(d.join("m.blob"), [round]).unwrap();
            let got = move_into(&d, "done", &d.join("m.blob")).unwrap();
            assert_eq!(got, ["m.blob", "m.blob.1", "m.blob.2"][round as usize]);
        }
        // `done/<name>` a directory: the next free name.
        std::fs::create_dir(d.join("done/x.blob")).unwrap();
        std::fs::write(d.join("x.blob"), b"x").unwrap();
        assert_eq!(move_into(&d, "done", &d.join("x.blob")).unwrap(), "x.blob.1");
        // `rejected` a file: a clear error, the entry stays.
        std::fs::write(d.join("rejected"), b"").unwrap();
        std::fs::write(d.join("y.blob"), b"y").unwrap();
        let e = move_into(&d, "rejected", &d.join("y.blob")).unwrap_err();
        assert!(e.to_string().contains("rejected/ is not a directory"), "{e}");
        assert!(d.join("y.blob").exists());
    }

    #[test]
    fn logged_names_cannot_forge_lines() {
        assert_eq!(
            loggable("a\nupdate x.blob: class `cat` updated\r\u{1b}[2J"),
            "a\\nupdate x.blob: class `cat` updated\\r\\u{1b}[2J"
        );
        assert_eq!(loggable("chat-Ω.blob"), "chat-Ω.blob");
    }

    #[test]
    fn noted_entries_are_skipped_until_they_change_and_said_once() {
        let d = scratch("noted");
        let p = d.join("m.blob");
        std::fs::write(&p, b"abc").unwrap();
        let mut noted = Noted::default();
        assert!(!noted.skipped(&p));
        noted.skip_until_changed(&p, Stamp::of(&p));
        assert!(noted.skipped(&p));
        std::fs::write(&p, b"abcd").unwrap();
        assert!(!noted.skipped(&p), "a writer added bytes");
        // The writer's last bytes land between the look and the note: still a change.
        let seen = Stamp::of(&p);
        std::fs::write(&p, b"abcde").unwrap();
        noted.skip_until_changed(&p, seen);
        assert!(!noted.skipped(&p), "bytes added while the entry was examined");
        noted.skip_until_changed(&p, Stamp::of(&p));
        assert_eq!(noted.skipped_in(&d), 1);
        assert!(noted.fresh(&p, "waiting") && !noted.fresh(&p, "waiting") && noted.fresh(&p, "refused"));
        std::fs::remove_file(&p).unwrap();
        noted.retain_listed(&d, &Default::default());
        assert!(noted.skip.is_empty() && noted.said.is_empty());
    }
}
