//! The device directory's writer lock against the real binaries (issue 36, items 3 and 4): a
//! lock held by another process (`flock(1)`, as any writer would) never stops `classmod-edge`
//! from starting or serving; its inbox update waits, said once, nothing refused, and is applied
//! once the lock is free; the Mender update module waits for it and says so. A device directory
//! the device may only read (a read-only root file system, a directory of another user) serves.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use classmod_runtime::host::ResNet;
use classmod_runtime::testing::{fixture, module, tiny_model::tiny_model};
use classmod_runtime::{Device, DirLock};
use common::{drop_image, mender_workdir, names, verify, Running};

/// Another process holding `dir`'s writer lock until [`release`] (`flock -o`: the lock is held
/// by `flock` alone, not by `cat`, which ends when its input closes).
fn hold(dir: &Path) -> Child {
    let holder = Command::new("flock")
        .args(["--exclusive", "--close"])
        .arg(dir)
        .arg("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("flock(1), from util-linux");
    for _ in 0..500 {
        if DirLock::try_shared(dir).unwrap().is_none() {
            return holder;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    release(holder);
    panic!("flock never took {}", dir.display());
}

fn release(mut holder: Child) {
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
}

#[test]
fn a_writer_lock_held_by_another_process_never_stops_serving() {
    let f = fixture(None);
    let watch = f.dir.with_extension("watch");
    let inbox = f.dir.with_extension("inbox");
    for d in [&watch, &inbox] {
        std::fs::create_dir_all(d).unwrap();
    }
    // What a crash left behind: removed once the lock is free, not while another writer may be
    // working on it.
    std::fs::write(f.dir.join(".manifest.json.tmp"), b"half").unwrap();
    let holder = hold(&f.dir);
    let mut device = Running::serve(&f.dir, "a,b", "host-sim", &[("--watch", &watch), ("--inbox", &inbox)]);
    // It starts (before: it waited for the lock in silence), and says who holds the directory.
    let line = device.wait_log("another process is changing this directory");
    assert!(line.contains("held by process") && line.contains("flock"), "{line}");
    assert!(f.dir.join(".manifest.json.tmp").exists(), "another writer's file is left alone while it works");
    // Images are classified while the lock is held.
    for i in 0..3 {
        drop_image(&watch, &format!("held{i}.png"), i);
        device.wait_result(&format!("held{i}.png"));
    }
    // An update waits, said once, and is not refused.
    let net = ResNet::new(&tiny_model(1), &Device::Cpu).unwrap();
    std::fs::write(inbox.join("b2.blob"), module(&tiny_model(1), &net, 1, "b", 2).encode(None).unwrap()).unwrap();
    device.wait_log("update b2.blob: waits (");
    // The Mender update module, installing meanwhile, waits and says so.
    let work =
        mender_workdir(&f.dir, "a-9", &[("a.blob", module(&tiny_model(1), &net, 0, "a", 9).encode(None).unwrap())]);
    let install = Command::new(env!("CARGO_BIN_EXE_classmod-update-module"))
        .arg("ArtifactInstall")
        .arg(&work)
        .arg("--dir")
        .arg(&f.dir)
        .arg("--board")
        .arg("host-sim")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop_image(&watch, "held3.png", 3);
    device.wait_result("held3.png");
    assert!(device.alive());
    assert_eq!(device.count_log("update b2.blob: waits"), 1, "said once:\n{}", device.log_text());
    assert!(names(&inbox.join("rejected")).is_empty(), "{}", device.log_text());

    release(holder);
    let o = install.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("another process is changing the directory") && err.contains("waiting for it"), "{err}");
    assert!(err.contains("the directory is free again after"), "{err}");
    // The install is pending (Mender commits it next): the inbox's update waits for that too.
    let commit = Command::new(env!("CARGO_BIN_EXE_classmod-update-module"))
        .arg("ArtifactCommit")
        .arg(&work)
        .arg("--dir")
        .arg(&f.dir)
        .output()
        .unwrap();
    assert!(commit.status.success(), "{}", String::from_utf8_lossy(&commit.stderr));
    device.wait_log("update b2.blob: class `b` updated");
    device.wait_log(
        "removed 1 file(s) an interrupted update left behind (temp files, blobs no manifest names): .manifest.json.tmp",
    );
    assert_eq!(names(&inbox.join("done")), ["b2.blob"]);
    assert!(names(&inbox.join("rejected")).is_empty());
    drop_image(&watch, "after.png", 9);
    device.wait_result("after.png");
    drop(device);
    verify(&f.dir);
}

/// Issue 36, item 4: a device directory the device may only read (owned by root, run as
/// `nobody`; the lock file of earlier releases root's and 0600 in it; a file a crash left that
/// cannot be removed) serves images; before, it could not start ("Permission denied" on the lock).
#[test]
fn a_device_directory_the_device_may_only_read_serves() {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture(None);
    let png = f.dir.with_extension("png");
    image::GrayImage::from_fn(8, 8, |x, y| image::Luma([(x * 30 + y) as u8])).save(&png).unwrap();
    std::fs::write(f.dir.join(".writer.lock"), b"").unwrap();
    std::fs::set_permissions(f.dir.join(".writer.lock"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(f.dir.join(".manifest.json.tmp"), b"half").unwrap();
    let args = [f.dir.to_str().unwrap(), "--classes", "a,b", "--board", "host-sim", "--device", "cpu", "--once"];
    let mut run = Command::new(env!("CARGO_BIN_EXE_classmod-edge"));
    run.args(args).arg("--images").arg(&png);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::process::CommandExt;
        const NOBODY: u32 = 65534;
        run.uid(NOBODY).gid(NOBODY);
    } else {
        std::fs::set_permissions(&f.dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let o = match run.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("SKIPPED the read-only run: `nobody` cannot run the test binary here ({e})");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    std::fs::set_permissions(&f.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("leftover files cannot be removed") && err.contains("serving the directory as it is"),
        "{err}"
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), 1, "one result: {out}\n{err}");
    assert!(f.dir.join(".manifest.json.tmp").exists());
    verify(&f.dir);
}
