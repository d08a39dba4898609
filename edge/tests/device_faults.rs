//! Faults of the device, not of what it is sent, against the real binaries (issue 36, items 5
//! to 7): they never park a valid update in `rejected/` (it waits and applies once the device
//! is whole again), and a manifest change never leaves the device serving nothing; a restart
//! with none of its classes in the directory says so with exit 4 (no restart loop), and serves
//! what the directory has of them otherwise. A module's golden set costs what the board allows.

mod common;

use std::path::Path;
use std::process::Command;

use classmod_runtime::host::ResNet;
use classmod_runtime::testing::{fixture, module, tiny_model::tiny_model, with_golden_images};
use classmod_runtime::{Device, Manifest};
use common::{drop_image, mender_workdir, names, verify, Running};

/// Another module of class `b` (mask seed `drop`), as bytes of a blob.
fn b_update(drop: usize) -> Vec<u8> {
    let m1 = tiny_model(1);
    let net = ResNet::new(&m1, &Device::Cpu).unwrap();
    module(&m1, &net, 1, "b", drop).encode(None).unwrap()
}

/// Replaces `path` by `bytes` the way a writer does: a temp file renamed over it.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("swap");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Rewrites `dir`'s manifest (as a writer does) with only the classes `keep` takes.
fn keep_only(dir: &Path, keep: impl Fn(&str) -> bool) {
    let mut m = Manifest::read(dir).unwrap();
    m.modules.retain(|e| keep(&e.class_name));
    replace(&dir.join("manifest.json"), serde_json::to_string_pretty(&m).unwrap().as_bytes());
}

fn serve(dir: &Path, classes: &str, watch: &Path, inbox: &Path) -> Running {
    Running::serve(dir, classes, "host-sim", &[("--watch", watch), ("--inbox", inbox)])
}

fn edge_once(dir: &Path, classes: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_classmod-edge"))
        .args([dir.to_str().unwrap(), "--classes", classes, "--board", "host-sim", "--device", "cpu", "--once"])
        .output()
        .unwrap()
}

/// Item 5: the device's manifest garbage, then missing, for a while: a valid update waits (said
/// once each), is never refused, and applies once the manifest is back. The lock file of earlier
/// releases as a directory or a symlink (it parked every update in `rejected/`) is nothing now.
#[test]
fn a_fault_of_the_device_never_parks_a_valid_update_in_rejected() {
    let f = fixture(None);
    let (watch, inbox) = (f.dir.with_extension("watch"), f.dir.with_extension("inbox"));
    std::fs::create_dir_all(&watch).unwrap();
    std::fs::create_dir_all(f.dir.join(".writer.lock")).unwrap();
    let mut device = serve(&f.dir, "a,b", &watch, &inbox);
    device.wait_log("loaded `b`");
    let manifest = f.dir.join("manifest.json");
    let good = std::fs::read(&manifest).unwrap();

    replace(&manifest, b"{ not a manifest");
    std::fs::write(inbox.join("b2.blob"), b_update(2)).unwrap();
    device.wait_log("update b2.blob: cannot be applied now (the device directory's manifest cannot be read now");
    drop_image(&watch, "garbage.png", 1);
    device.wait_result("garbage.png");
    std::fs::remove_file(&manifest).unwrap();
    drop_image(&watch, "missing.png", 2);
    device.wait_result("missing.png");
    assert!(names(&inbox.join("rejected")).is_empty(), "{}", device.log_text());
    replace(&manifest, &good);
    device.wait_log("update b2.blob: class `b` updated");
    assert_eq!(names(&inbox.join("done")), ["b2.blob"]);

    // The old lock file as a symlink to a file of the system: not followed, not in the way.
    std::fs::remove_dir(f.dir.join(".writer.lock")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", f.dir.join(".writer.lock")).unwrap();
    std::fs::write(inbox.join("b3.blob"), b_update(3)).unwrap();
    device.wait_log("update b3.blob: class `b` updated");
    assert!(names(&inbox.join("rejected")).is_empty(), "{}", device.log_text());
    assert!(device.alive());
    drop(device);
    assert!(edge_once(&f.dir, "a,b").status.success(), "the directory serves after a restart");
    verify(&f.dir);
}

/// Item 6: a valid manifest without the served classes (written by an operator, or a Mender
/// rollback of the only class served) ended the device at the next image ("no classes are
/// loaded", exit 2) and the unit restarted it in a loop. Now the last classes served serve on,
/// said in the log; a restart serves what the directory has of its classes, and with none of
/// them exits 4.
#[test]
fn a_manifest_change_never_leaves_the_device_serving_nothing() {
    let f = fixture(None);
    let (watch, inbox) = (f.dir.with_extension("watch"), f.dir.with_extension("inbox"));
    std::fs::create_dir_all(&watch).unwrap();
    let mut device = serve(&f.dir, "a,b", &watch, &inbox);
    device.wait_log("loaded `b`");
    // Only class c (of the other base) left in the manifest.
    keep_only(&f.dir, |class| class == "c");
    let said = device.wait_log("no longer in the directory, but still served");
    assert!(said.contains("a, b"), "{said}");
    drop_image(&watch, "after.png", 4);
    let result = device.wait_result("after.png");
    assert!(result.contains("\ta\t") || result.contains("\tb\t") || result.contains("\tnone\t"), "{result}");
    assert!(device.alive(), "{}", device.log_text());
    drop(device);

    // A restart: none of a, b in the directory: exit 4, each class said.
    let o = edge_once(&f.dir, "a,b");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("cannot load class `a`") && err.contains("cannot load class `b`"), "{err}");
    assert!(err.contains("nothing to serve"), "{err}");
    // With c among them: c serves, a and b warned about.
    let o = edge_once(&f.dir, "a,b,c");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("loaded `c`") && err.contains("warning: cannot load class `a`"), "{err}");
    verify(&f.dir);
}

/// Item 6, the Mender way: the device serves only class c, added by a Mender artifact not yet
/// committed (the device restarted meanwhile); the artifact is rolled back, taking c away. The
/// device serves c on, and says so.
#[test]
fn a_rollback_of_the_only_class_served_leaves_it_served() {
    let f = fixture(None);
    let (watch, inbox) = (f.dir.with_extension("watch"), f.dir.with_extension("inbox"));
    std::fs::create_dir_all(&watch).unwrap();
    // A directory without class c: the artifact adds it.
    keep_only(&f.dir, |class| class != "c");
    let m1 = tiny_model(1);
    let net = ResNet::new(&m1, &Device::Cpu).unwrap();
    let work = mender_workdir(&f.dir, "c-1", &[("c.blob", module(&m1, &net, 2, "c", 1).encode(None).unwrap())]);
    let module_state = |state: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_classmod-update-module"))
            .arg(state)
            .arg(&work)
            .args(["--dir", f.dir.to_str().unwrap(), "--board", "host-sim"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{state}: {}", String::from_utf8_lossy(&o.stderr));
    };
    module_state("ArtifactInstall");
    let mut device = serve(&f.dir, "c", &watch, &inbox);
    device.wait_log("loaded `c`");
    module_state("ArtifactRollback");
    device.wait_log("c no longer in the directory, but still served: it was all this device served");
    drop_image(&watch, "after.png", 5);
    device.wait_result("after.png");
    assert!(device.alive(), "{}", device.log_text());
    drop(device);
    let o = edge_once(&f.dir, "c");
    assert_eq!(o.status.code(), Some(4), "{}", String::from_utf8_lossy(&o.stderr));
    verify(&f.dir);
}

/// Item 7: a module carrying more golden images than a module may (65 of 64; `pack --golden
/// 1000000` made one of a million) is refused by name, before its images are read, and the
/// device serves on; one with the full 64 is self-tested on a Jetson Nano's 8 at every load.
#[test]
fn the_golden_self_test_costs_what_the_board_allows() {
    let f = fixture(None);
    let (watch, inbox) = (f.dir.with_extension("watch"), f.dir.with_extension("inbox"));
    std::fs::create_dir_all(&watch).unwrap();
    std::fs::create_dir_all(&inbox).unwrap();
    let b2 = b_update(2);
    std::fs::write(inbox.join("b-65.blob"), with_golden_images(&b2, 65)).unwrap();
    // A module of 64 golden images whose scores past the 8th are wrong: a Nano tests 8, so it
    // loads; a board testing all 64 refuses it (the test runs where it should).
    let mut full = module(&tiny_model(1), &ResNet::new(&tiny_model(1), &Device::Cpu).unwrap(), 1, "b", 3);
    let per = full.module.input.image_len();
    full.golden.images = full.golden.images.iter().copied().cycle().take(64 * per).collect();
    full.golden.scores = full.golden.scores.iter().copied().cycle().take(64).collect();
    full.golden.scores[8] += 0.5;
    std::fs::write(inbox.join("b-64.blob"), full.encode(None).unwrap()).unwrap();
    let nano = |classes: &str| {
        Command::new(env!("CARGO_BIN_EXE_classmod-edge"))
            .args([f.dir.to_str().unwrap(), "--classes", classes, "--board", "jetson-nano", "--device", "cpu"])
            .args(["--once", "--inbox", inbox.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let o = nano("a,b");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "one refused: {err}");
    assert!(err.contains("update b-65.blob REFUSED") && err.contains("65 golden images, more than the 64"), "{err}");
    assert!(err.contains("update b-64.blob: class `b` updated"), "{err}");
    assert_eq!(names(&inbox.join("rejected")), ["b-65.blob"]);
    // The host simulation tests all 64: the same module fails its self-test there.
    let o = edge_once(&f.dir, "a,b");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot load class `b`") && err.contains("golden"), "{err}");
    assert!(o.status.success(), "a serves: {err}");
    assert!(names(&inbox.join("rejected")) == ["b-65.blob"], "only the bad module is set aside");
}
