//! The device's update inbox against what broke it from outside (issue 13): entries that are not
//! files, cannot be read, are still being written, come again, or carry a forged log line in
//! their name; a `rejected/` that is a file; an inbox inside the device directory. Real files, a
//! real FIFO and symlink, real blobs of a tiny random model packed by the runtime's own writers,
//! the real `classmod-edge` binary for the start-up check. After each case the device still
//! serves (a classification through the runtime) and nothing valid sits in `rejected/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use classmod_edge::{check_outside, Edge, EdgeOptions, LogPin, Status};
use classmod_runtime::host::ResNet;
use classmod_runtime::testing::{fixture, images, module, tiny_model::tiny_model};
use classmod_runtime::{Device, MinScore, Rule};

fn start(dir: &Path) -> Edge<LogPin> {
    Edge::start(options(dir), LogPin::default()).unwrap()
}

fn options(dir: &Path) -> EdgeOptions {
    EdgeOptions {
        board: Some("host-sim".into()),
        device: classmod_edge::DeviceChoice::Cpu,
        precision: None,
        min_score: MinScore::Off,
        ..EdgeOptions::new(dir, &["a", "b"])
    }
}

/// A fresh directory beside the fixture's.
fn inbox_for(dir: &Path, name: &str) -> PathBuf {
    let inbox = dir.with_file_name(format!("{}-{name}", dir.file_name().unwrap().to_string_lossy()));
    let _ = std::fs::remove_dir_all(&inbox);
    std::fs::create_dir_all(&inbox).unwrap();
    inbox
}

/// A new version of class `b`'s module (another mask), as blob bytes.
fn b_update(drop: usize) -> Vec<u8> {
    b_release(drop, 0)
}

/// Class `b`'s module with mask seed `drop`, release `version`.
fn b_release(drop: usize, version: u64) -> Vec<u8> {
    let m1 = tiny_model(1);
    let net = ResNet::new(&m1, &Device::Cpu).unwrap();
    let mut mb = module(&m1, &net, 1, "b", drop);
    mb.version = version;
    mb.encode(None).unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The device classifies with its classes, and its directory passes what `classmod verify`
/// checks (every base, module and rollback copy the manifest names: present, hash, self-test),
/// read afresh from disk.
fn still_serves(edge: &Edge<LogPin>) {
    let result = edge.runtime.snapshot().classify(&images(2), Rule::Max, MinScore::Off).unwrap();
    assert_eq!(result.classes, ["a", "b"]);
    assert!(result.predictions.iter().all(Option::is_some));
    let fresh =
        classmod_runtime::ModuleRuntime::open(edge.runtime.dir(), classmod_runtime::testing::config(None, None))
            .expect("the directory opens");
    let manifest = fresh.manifest();
    for b in &manifest.bases {
        fresh.check_base(&b.key).unwrap_or_else(|e| panic!("base {}: {e}", b.file));
    }
    for m in &manifest.modules {
        fresh.check_module(&m.class_name).unwrap_or_else(|e| panic!("module {}: {e}", m.file));
        fresh.check_rollback_copy(&m.class_name).unwrap_or_else(|e| panic!("rollback copy of {}: {e}", m.file));
    }
}

#[test]
fn no_inbox_entry_stops_the_device_and_each_is_handled_by_itself() {
    let f = fixture(None);
    let inbox = inbox_for(&f.dir, "inbox");
    let mut edge = start(&f.dir);
    let update = b_update(7);
    // Hostile and careless entries, all at once, beside one valid update.
    std::os::unix::fs::symlink("/proc/self/mem", inbox.join("mem.blob")).unwrap();
    let fifo = std::ffi::CString::new(inbox.join("fifo.blob").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    std::fs::create_dir(inbox.join("dir.blob")).unwrap();
    std::fs::write(inbox.join("junk.blob"), vec![7u8; 4096]).unwrap();
    // 3 GiB, sparse: refused from its size (host-sim takes 256 MiB), never read.
    std::fs::File::create(inbox.join("huge.blob")).unwrap().set_len(3 << 30).unwrap();
    std::fs::write(inbox.join("evil\nupdate forged.blob: class `a` updated.blob"), vec![7u8; 300]).unwrap();
    std::fs::write(inbox.join(".b.blob"), &update).unwrap();
    std::fs::write(inbox.join("b.blob.part"), &update).unwrap();
    // `scp` into place: the first half so far.
    std::fs::write(inbox.join("slow.blob"), &update[..update.len() / 2]).unwrap();
    std::fs::write(inbox.join("b-v2.blob"), &update).unwrap();

    assert_eq!(edge.process_inbox(&inbox).unwrap(), 1, "{:#?}", edge.log);
    still_serves(&edge);
    let log = edge.log.join("\n");
    assert!(log.contains("update b-v2.blob: class `b` updated"), "{log}");
    for (name, why) in [
        ("mem.blob", "symbolic link"),
        ("fifo.blob", "FIFO"),
        ("dir.blob", "a directory"),
        ("junk.blob", "not a classmod blob"),
        ("huge.blob", "holds 3221225472 bytes, more than the inbox takes (268435456)"),
    ] {
        let line = format!("update {name} REFUSED, nothing changed: it ");
        assert!(edge.log.iter().any(|l| l.contains(&line) && l.contains(why)), "{name}: {log}");
    }
    assert!(log.contains("evil\\nupdate forged.blob"), "the newline is escaped: {log}");
    assert!(!edge.log.iter().any(|l| l.starts_with("update forged.blob")), "no forged line: {log}");
    assert!(log.contains("update slow.blob: incomplete"), "{log}");
    assert_eq!(names(&inbox.join("done")), ["b-v2.blob"]);
    assert_eq!(
        names(&inbox.join("rejected")),
        [
            "dir.blob",
            "evil\nupdate forged.blob: class `a` updated.blob",
            "fifo.blob",
            "huge.blob",
            "junk.blob",
            "mem.blob"
        ]
    );
    assert_eq!(names(&inbox), [".b.blob", "b.blob.part", "done", "rejected", "slow.blob"], "ignored and waiting");

    // The next scan says nothing new about the waiting entry; once complete, it is applied (here:
    // the same module again, i.e. already applied, which is no error).
    let lines = edge.log.len();
    assert_eq!(edge.process_inbox(&inbox).unwrap(), 0);
    assert_eq!(edge.log.len(), lines, "said once: {:#?}", &edge.log[lines..]);
    std::fs::write(inbox.join("slow.blob"), &update).unwrap();
    edge.process_inbox(&inbox).unwrap();
    assert!(edge.log.iter().any(|l| l.contains("update slow.blob: already applied (class `b` runs this module)")));
    assert_eq!(edge.led_status(), Status::Serving);
    assert_eq!(names(&inbox.join("done")), ["b-v2.blob", "slow.blob"]);
    // Delivered again under a name `done/` has: kept beside it, not lost, not refused.
    std::fs::write(inbox.join("b-v2.blob"), &update).unwrap();
    edge.process_inbox(&inbox).unwrap();
    assert_eq!(names(&inbox.join("done")), ["b-v2.blob", "b-v2.blob.1", "slow.blob"]);
    // A newer version still applies after all that.
    std::fs::write(inbox.join("b-v3.blob"), b_update(9)).unwrap();
    assert_eq!(edge.process_inbox(&inbox).unwrap(), 1, "{:#?}", edge.log);
    still_serves(&edge);
}

#[test]
fn entries_that_cannot_be_moved_or_read_leave_the_device_serving() {
    let f = fixture(None);
    let inbox = inbox_for(&f.dir, "stuck");
    let mut edge = start(&f.dir);
    // `rejected` is a file: a refused entry cannot be set aside; said once, left, skipped.
    std::fs::write(inbox.join("rejected"), b"").unwrap();
    std::fs::write(inbox.join("junk.blob"), vec![1u8; 500]).unwrap();
    std::fs::write(inbox.join("b-v2.blob"), b_update(7)).unwrap();
    // `done/<name>` a directory: the applied entry takes the next free name.
    std::fs::create_dir_all(inbox.join("done/b-v2.blob")).unwrap();
    assert_eq!(edge.process_inbox(&inbox).unwrap(), 1);
    assert_eq!(names(&inbox.join("done")), ["b-v2.blob", "b-v2.blob.1"]);
    let log = edge.log.join("\n");
    assert!(
        log.contains("junk.blob: cannot be moved to rejected/ (rejected/ is not a directory), left where it is"),
        "{log}"
    );
    let lines = edge.log.len();
    edge.process_inbox(&inbox).unwrap();
    assert_eq!(edge.log.len(), lines, "not again: {:#?}", &edge.log[lines..]);
    assert!(inbox.join("junk.blob").exists());
    still_serves(&edge);
    // The inbox itself removed under the running device: said once, the device goes on.
    std::fs::remove_dir_all(&inbox).unwrap();
    assert_eq!(edge.process_inbox(&inbox).unwrap(), 0);
    assert_eq!(edge.process_inbox(&inbox).unwrap(), 0);
    assert_eq!(edge.log.iter().filter(|l| l.contains("cannot be listed")).count(), 1, "{:#?}", edge.log);
    still_serves(&edge);
}

/// A blob the device's user cannot read (a root-owned 0600 file while the device runs
/// unprivileged stopped it at every start: EACCES, no file named): refused by name, set aside,
/// the valid update beside it applied. As root (CI), the real binary runs as `nobody` over a
/// device directory that user owns; as another user, the device in-process meets a 0000 file.
#[test]
fn a_blob_the_device_user_cannot_read_is_refused_by_name() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture(None);
    let inbox = inbox_for(&f.dir, "locked");
    let locked = inbox.join("locked.blob");
    std::fs::write(&locked, b_update(11)).unwrap();
    std::fs::write(inbox.join("b-v2.blob"), b_update(7)).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        let mut edge = start(&f.dir);
        assert_eq!(edge.process_inbox(&inbox).unwrap(), 1, "{:#?}", edge.log);
        assert!(edge.log.iter().any(|l| l.contains("update locked.blob REFUSED")), "{:#?}", edge.log);
    } else {
        const NOBODY: u32 = 65534;
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o600)).unwrap();
        for d in [&f.dir, &inbox] {
            chown_tree(d, NOBODY);
        }
        std::os::unix::fs::chown(&locked, Some(0), Some(0)).unwrap();
        use std::os::unix::process::CommandExt;
        let run = Command::new(env!("CARGO_BIN_EXE_classmod-edge"))
            .args([f.dir.to_str().unwrap(), "--classes", "a,b", "--board", "host-sim", "--device", "cpu", "--once"])
            .arg("--inbox")
            .arg(&inbox)
            .uid(NOBODY)
            .gid(NOBODY)
            .output();
        let o = match run {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                eprintln!("SKIPPED the unprivileged run: `nobody` cannot run the test binary here ({e})");
                return;
            }
            Err(e) => panic!("{e}"),
        };
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "refused, so exit 3: {err}");
        assert!(
            err.contains("update locked.blob REFUSED, nothing changed: it cannot be opened: Permission denied"),
            "{err}"
        );
        assert!(err.contains("update b-v2.blob: class `b` updated"), "{err}");
        assert!(err.contains("1 updated, 0 already present, 1 refused"), "{err}");
    }
    assert_eq!(names(&inbox.join("rejected")), ["locked.blob"]);
    assert_eq!(names(&inbox.join("done")), ["b-v2.blob"]);
    still_serves(&start(&f.dir));
}

/// Gives `path` and everything under it to `uid` (and the group of that number).
fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
    if path.is_dir() {
        for e in std::fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

/// Real writers beside the scanning device: one writes a blob in place a slice at a time (as
/// `scp` or `curl -o` do), another creates and removes the same valid blob 300 times (the removal
/// between the scan and the move gave ENOENT and stopped the device). Every scan returns, nothing
/// valid is refused, the slow blob is applied once complete, and the device still serves.
#[test]
fn writers_that_are_slow_or_remove_their_files_never_get_a_valid_update_refused() {
    let f = fixture(None);
    let inbox = inbox_for(&f.dir, "writers");
    let mut edge = start(&f.dir);
    let (slow, churn) = (b_update(7), b_update(9));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let slow_writer = {
        let (path, done) = (inbox.join("slow.blob"), done.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut file = std::fs::File::create(path).unwrap();
            for part in slow.chunks(slow.len().div_ceil(20)) {
                file.write_all(part).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(15));
            }
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let churner = {
        let (path, done) = (inbox.join("churn.blob"), done.clone());
        std::thread::spawn(move || {
            for _ in 0..300 {
                std::fs::write(&path, &churn).unwrap();
                let _ = std::fs::remove_file(&path);
            }
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
    };
    let mut scans = 0;
    while done.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        edge.process_inbox(&inbox).unwrap();
        scans += 1;
    }
    slow_writer.join().unwrap();
    churner.join().unwrap();
    edge.process_inbox(&inbox).unwrap();
    let log = edge.log.join("\n");
    assert!(!log.contains("REFUSED") && !log.contains("cannot be moved"), "{scans} scans: {log}");
    assert!(names(&inbox.join("rejected")).is_empty(), "{log}");
    assert!(names(&inbox.join("done")).contains(&"slow.blob".to_string()), "{log}");
    assert!(!inbox.join("slow.blob").exists(), "{log}");
    assert_ne!(edge.led_status(), Status::Error);
    still_serves(&edge);
}

/// Issue 13, item 3, through the inbox: a replayed older release is refused with a line that says
/// what to do, set aside in `rejected/`, and the device serves on; a newer one applies; a device
/// started with `--allow-downgrade` takes the older one.
#[test]
fn a_replayed_older_release_is_refused_as_a_downgrade() {
    let f = fixture(None);
    let inbox = inbox_for(&f.dir, "replay");
    let mut edge = start(&f.dir);
    std::fs::write(inbox.join("b-v3.blob"), b_release(7, 3)).unwrap();
    assert_eq!(edge.process_inbox(&inbox).unwrap(), 1);
    std::fs::write(inbox.join("b-v2.blob"), b_release(9, 2)).unwrap();
    assert_eq!(edge.process_inbox(&inbox).unwrap(), 0);
    let log = edge.log.join("\n");
    assert!(
        log.contains(
            "update b-v2.blob REFUSED, nothing changed: class `b`: version 2 is older than version 3, the newest \
             this device has committed (a downgrade) (start with --allow-downgrade to accept it)"
        ),
        "{log}"
    );
    assert_eq!(names(&inbox.join("rejected")), ["b-v2.blob"]);
    still_serves(&edge);
    std::fs::write(inbox.join("b-v4.blob"), b_release(11, 4)).unwrap();
    assert_eq!(edge.process_inbox(&inbox).unwrap(), 1);
    drop(edge);
    let opts = EdgeOptions { allow_downgrade: true, ..options(&f.dir) };
    let mut edge = Edge::start(opts, LogPin::default()).unwrap();
    std::fs::rename(inbox.join("rejected/b-v2.blob"), inbox.join("b-v2.blob")).unwrap();
    assert_eq!(edge.process_inbox(&inbox).unwrap(), 1, "{:#?}", edge.log);
    still_serves(&edge);
}

/// Issue 13, item 7: a class an update added under --serve-new is served after a restart with
/// the same options (the set is in the manifest), also when the crash came between the commit and
/// the load (the re-delivered file completes it); --classes-only forgets it.
#[test]
fn classes_added_with_serve_new_are_served_after_a_restart() {
    let m1 = tiny_model(1);
    let net = ResNet::new(&m1, &Device::Cpu).unwrap();
    let (a, b) = (module(&m1, &net, 0, "a", 3), module(&m1, &net, 1, "b", 5));
    let device = || {
        let dir = classmod_runtime::testing::scratch();
        classmod_runtime::testing::pack(&dir, &[&m1], &[&a, &b], None);
        dir
    };
    let dir = device();
    let inbox = inbox_for(&dir, "added");
    let serving = |edge: &Edge<LogPin>| {
        let mut c: Vec<String> = edge.runtime.snapshot().class_names();
        c.sort();
        c
    };
    let opts = |dir: &Path| EdgeOptions { serve_new: true, ..options(dir) };
    let mut edge = Edge::start(opts(&dir), LogPin::default()).unwrap();
    std::fs::write(inbox.join("c.blob"), module(&m1, &net, 2, "c", 4).encode(None).unwrap()).unwrap();
    assert_eq!(edge.process_inbox(&inbox).unwrap(), 1);
    assert!(
        edge.log.iter().any(|l| l.contains("class `c` added as") && l.ends_with(", now served")),
        "{:#?}",
        edge.log
    );
    assert_eq!(serving(&edge), ["a", "b", "c"]);
    drop(edge);
    let edge = Edge::start(opts(&dir), LogPin::default()).unwrap();
    assert_eq!(serving(&edge), ["a", "b", "c"], "{:#?}", edge.log);
    assert!(edge.log.iter().any(|l| l.contains("loaded `c`, added by an update")), "{:#?}", edge.log);
    drop(edge);
    // Without --serve-new the recorded class is still served: it is the device's state.
    let edge = start(&dir);
    assert_eq!(serving(&edge), ["a", "b", "c"]);
    drop(edge);
    let edge = Edge::start(EdgeOptions { classes_only: true, ..options(&dir) }, LogPin::default()).unwrap();
    assert_eq!(serving(&edge), ["a", "b"]);
    assert!(edge.log.iter().any(|l| l.contains("--classes-only: not serving c, added by updates")), "{:#?}", edge.log);
    drop(edge);
    assert_eq!(serving(&start(&dir)), ["a", "b"], "forgotten for good");

    // A crash between the commit of class c and its load: the runtime committed it, the file is
    // still in the inbox. The restart serves a and b; the re-delivered file completes the job.
    let dir = device();
    let d = module(&m1, &net, 2, "c", 6).encode(None).unwrap();
    let rt = classmod_runtime::ModuleRuntime::open(&dir, classmod_runtime::testing::config(None, None)).unwrap();
    rt.apply_update(&mut classmod_runtime::OsFs, &d).unwrap();
    drop(rt);
    std::fs::write(inbox.join("c-again.blob"), &d).unwrap();
    let mut edge = Edge::start(opts(&dir), LogPin::default()).unwrap();
    assert_eq!(serving(&edge), ["a", "b"]);
    edge.process_inbox(&inbox).unwrap();
    assert!(edge.log.iter().any(|l| l.contains("already applied (class `c` runs this module), now served")));
    drop(edge);
    assert_eq!(serving(&start(&dir)), ["a", "b", "c"]);
}

/// Issue 13, item 5: a backlog in the watched directory is classified in the board's bounded
/// batches (host-sim: 64), the trigger and inbox served between them; `--once` works it all off.
#[test]
fn a_watched_backlog_is_classified_in_bounded_batches() {
    let f = fixture(None);
    let watch = inbox_for(&f.dir, "watch");
    for i in 0..70u32 {
        image::GrayImage::from_fn(8, 8, |x, y| image::Luma([(x * 31 + y * 7 + i) as u8]))
            .save(watch.join(format!("img{i:03}.png")))
            .unwrap();
    }
    let mut edge = start(&f.dir);
    assert_eq!(edge.board.watch_batch, 64);
    assert_eq!(edge.process_watch(&watch).unwrap().len(), 64);
    assert!(edge.watch_backlog());
    assert_eq!(edge.process_watch(&watch).unwrap().len(), 6);
    assert!(!edge.watch_backlog());
    assert_eq!(names(&watch.join("done")).len(), 70);
    drop(edge);
    // The real binary, --once: every image, in two batches.
    for n in names(&watch.join("done")) {
        std::fs::rename(watch.join("done").join(&n), watch.join(&n)).unwrap();
    }
    let o = run_edge(&[
        f.dir.to_str().unwrap(),
        "--classes",
        "a,b",
        "--board",
        "host-sim",
        "--device",
        "cpu",
        "--once",
        "--watch",
        watch.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(names(&watch.join("done")).len(), 70, "{}", String::from_utf8_lossy(&o.stderr));
}

/// The device's disk, full until told otherwise: every write fails with ENOSPC.
#[derive(Clone)]
struct Disk(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Disk {
    fn full(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn check(&self) -> std::io::Result<()> {
        if self.full() {
            return Err(std::io::Error::from(std::io::ErrorKind::StorageFull));
        }
        Ok(())
    }
}

impl classmod_runtime::DurableFs for Disk {
    fn write_file(&mut self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        self.check()?;
        classmod_runtime::OsFs.write_file(path, bytes)
    }
    fn sync_file(&mut self, path: &Path) -> std::io::Result<()> {
        classmod_runtime::OsFs.sync_file(path)
    }
    fn rename(&mut self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.check()?;
        classmod_runtime::OsFs.rename(from, to)
    }
    fn sync_dir(&mut self, path: &Path) -> std::io::Result<()> {
        classmod_runtime::OsFs.sync_dir(path)
    }
    fn remove(&mut self, path: &Path) -> std::io::Result<()> {
        classmod_runtime::OsFs.remove(path)
    }
}

/// Issue 13, item 4: a valid update that arrives while the disk is full stays in the inbox (not
/// `rejected/`), is said once, and applies on a later scan once there is room; the LED never
/// shows an error for it.
#[test]
fn a_full_disk_leaves_the_update_to_retry() {
    let f = fixture(None);
    let inbox = inbox_for(&f.dir, "full");
    let mut edge = start(&f.dir);
    let disk = Disk(std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)));
    edge.write_through(Box::new(disk.clone()));
    std::fs::write(inbox.join("b-v2.blob"), b_update(7)).unwrap();
    for _ in 0..3 {
        assert_eq!(edge.process_inbox(&inbox).unwrap(), 0);
    }
    assert_eq!(names(&inbox), ["b-v2.blob"], "left to retry, nothing set aside");
    let said: Vec<&String> = edge.log.iter().filter(|l| l.contains("cannot be applied now")).collect();
    assert_eq!(said.len(), 1, "{:#?}", edge.log);
    assert!(said[0].contains("will retry"), "{said:?}");
    assert_ne!(edge.led_status(), Status::Error);
    still_serves(&edge);
    disk.0.store(false, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(edge.process_inbox(&inbox).unwrap(), 1, "{:#?}", edge.log);
    assert_eq!(names(&inbox.join("done")), ["b-v2.blob"]);
    assert!(names(&inbox.join("rejected")).is_empty());
    assert_eq!(edge.inbox_counts().updated, 1);
    still_serves(&edge);
}

#[test]
fn an_inbox_in_the_device_directory_is_refused_at_start_and_nothing_moves() {
    let f = fixture(None);
    let before = names(&f.dir);
    let sub = f.dir.join("incoming");
    std::fs::create_dir_all(&sub).unwrap();
    let outside = inbox_for(&f.dir, "outside");
    assert!(check_outside(&f.dir, &f.dir, "--inbox").is_err());
    assert!(check_outside(&f.dir, &sub, "--watch").is_err());
    assert!(check_outside(&f.dir, &outside, "--inbox").is_ok());
    let dir = f.dir.to_str().unwrap();
    for inbox in [dir.to_string(), format!("{dir}/."), sub.to_str().unwrap().to_string()] {
        let o = Command::new(env!("CARGO_BIN_EXE_classmod-edge"))
            .args([dir, "--classes", "a", "--board", "host-sim", "--device", "cpu", "--once", "--inbox", &inbox])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{inbox}: {err}");
        assert!(err.contains("the device directory") && err.contains("nothing was moved"), "{err}");
    }
    let mut after = names(&f.dir);
    after.retain(|n| n != "incoming");
    assert_eq!(after, before, "nothing moved");
    // The same device with an inbox of its own starts, and serves.
    let o = Command::new(env!("CARGO_BIN_EXE_classmod-edge"))
        .args([dir, "--classes", "a", "--board", "host-sim", "--device", "cpu", "--once", "--inbox"])
        .arg(&outside)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Runs the real binary, failing (not hanging) if it takes longer than 30 s.
fn run_edge(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_classmod-edge"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed().as_secs() > 30 {
            child.kill().unwrap();
            panic!("classmod-edge {args:?} hung");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// A FIFO given as an image, or standing in for the manifest, hung the device (issue 13, item
/// 9): each is now refused at once with one line naming it and exit 2 (a bad file on the command
/// line is the operator's error; images dropped into the watched directory are set aside).
#[test]
fn fifos_neither_hang_nor_stop_the_device() {
    let f = fixture(None);
    let dir = f.dir.to_str().unwrap();
    let fifo = f.dir.with_extension("frame.png");
    let _ = std::fs::remove_file(&fifo);
    mkfifo(&fifo);
    let o = run_edge(&[
        dir,
        "--classes",
        "a",
        "--board",
        "host-sim",
        "--device",
        "cpu",
        "--once",
        "--images",
        fifo.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.lines().last().unwrap().contains("frame.png: is a FIFO, socket or device, not a regular file"),
        "{err}"
    );
    std::fs::remove_file(f.dir.join("manifest.json")).unwrap();
    mkfifo(&f.dir.join("manifest.json"));
    let o = run_edge(&[dir, "--classes", "a", "--board", "host-sim", "--device", "cpu", "--once"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("manifest.json") && err.contains("FIFO"), "{err}");
}
