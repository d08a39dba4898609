//! The Mender update module's states on a real device directory (tiny real blobs), without the
//! Mender client (tests/mender_fleet.rs drives it through the real client): what it prints for
//! the client, install as one pending update, re-runs, commit, rollback, refusals, states it does
//! not know.

mod common;

use std::path::Path;

use classmod_edge::mender::{run_state, ModuleSettings};
use classmod_runtime::host::ResNet;
use classmod_runtime::testing::{fixture, module, tiny_model::tiny_model};
use classmod_runtime::{Device, Manifest};
use common::mender_workdir;

fn settings(dir: &Path) -> ModuleSettings {
    ModuleSettings {
        dir: dir.to_path_buf(),
        key: None,
        serve_new: false,
        allow_downgrade: false,
        max_blob_bytes: 1 << 20,
        self_test: classmod_runtime::SelfTest::default(),
    }
}

fn state(s: &str, work: &Path, set: &ModuleSettings) -> (anyhow::Result<Option<String>>, String) {
    let mut out = Vec::new();
    let r = run_state(s, work, set, &mut out);
    (r, String::from_utf8(out).unwrap())
}

#[test]
fn each_state_does_its_part_and_reruns_change_nothing() {
    let f = fixture(None);
    let set = settings(&f.dir);
    let m1 = tiny_model(1);
    let net = ResNet::new(&m1, &Device::Cpu).unwrap();
    let a2 = module(&m1, &net, 0, "a", 9).encode(None).unwrap();
    let b2 = module(&m1, &net, 1, "b", 8).encode(None).unwrap();
    let work = mender_workdir(&f.dir, "ab-2", &[("a.blob", a2), ("b.blob", b2)]);
    assert_eq!(state("SupportsRollback", &work, &set).1, "Yes\n");
    assert_eq!(state("NeedsArtifactReboot", &work, &set).1, "No\n");
    for unknown in ["Download", "Cleanup", "ArtifactVerifyReboot", "SomethingNew"] {
        let (r, out) = state(unknown, &work, &set);
        assert!(r.unwrap().is_none() && out.is_empty(), "{unknown}");
    }
    let before = std::fs::read(f.dir.join("manifest.json")).unwrap();
    let (r, out) = state("ArtifactInstall", &work, &set);
    let line = r.unwrap().unwrap();
    assert!(out.is_empty());
    assert!(line.contains("update ab-2 installed, unconfirmed (updated: a, b)"), "{line}");
    assert_eq!(Manifest::read(&f.dir).unwrap().pending.unwrap().id, "ab-2");
    // A re-run after a power loss.
    assert!(state("ArtifactInstall", &work, &set).0.unwrap().unwrap().contains("already installed, pending"));
    assert!(state("ArtifactRollback", &work, &set).0.unwrap().unwrap().contains("update ab-2 rolled back"));
    assert_eq!(std::fs::read(f.dir.join("manifest.json")).unwrap(), before);
    assert!(state("ArtifactFailure", &work, &set).0.unwrap().unwrap().contains("nothing pending"));
    state("ArtifactInstall", &work, &set).0.unwrap();
    assert!(state("ArtifactCommit", &work, &set).0.unwrap().unwrap().contains("update ab-2 committed"));
    assert!(state("ArtifactCommit", &work, &set).0.unwrap().unwrap().contains("nothing pending"));
    assert!(Manifest::read(&f.dir).unwrap().pending.is_none());

    // Refusals: a file that is no blob, one larger than the board takes, an empty payload.
    let junk = mender_workdir(&f.dir, "junk", &[("x.blob", vec![7u8; 300])]);
    assert!(state("ArtifactInstall", &junk, &set).0.is_err());
    let other = mender_workdir(&f.dir, "other", &[("notes.txt", b"hello".to_vec())]);
    let e = state("ArtifactInstall", &other, &set).0.unwrap_err().to_string();
    assert!(e.contains("notes.txt is not a classmod blob"), "{e}");
    let big = mender_workdir(&f.dir, "big", &[("a.blob", vec![0u8; 2 << 20])]);
    let e = state("ArtifactInstall", &big, &set).0.unwrap_err().to_string();
    assert!(e.contains("more than this device takes"), "{e}");
    let empty = mender_workdir(&f.dir, "empty", &[]);
    assert!(state("ArtifactInstall", &empty, &set).0.unwrap_err().to_string().contains("holds no file"));
    assert!(Manifest::read(&f.dir).unwrap().pending.is_none());
}

/// Issue 36, item 9: Mender's payloads and names are the update module's to check. A corrupt
/// payload file is named; an empty name and one with control characters are refused (they went
/// into the manifest and the log raw); a different payload under the pending artifact's name was
/// "already installed" and was not; an artifact that changes nothing says so, not "()".
#[test]
fn payloads_and_names_are_checked_and_said_truly() {
    let f = fixture(None);
    let set = settings(&f.dir);
    let m1 = tiny_model(1);
    let net = ResNet::new(&m1, &Device::Cpu).unwrap();
    let b2 = module(&m1, &net, 1, "b", 8).encode(None).unwrap();
    let mut flipped = b2.clone();
    let last = flipped.len() - 100;
    flipped[last] ^= 1;
    let bad = mender_workdir(
        &f.dir,
        "bad",
        &[("a.blob", module(&m1, &net, 0, "a", 9).encode(None).unwrap()), ("b.blob", flipped)],
    );
    let e = format!("{:#}", state("ArtifactInstall", &bad, &set).0.unwrap_err());
    assert!(e.contains("payload file b.blob"), "{e}");
    for (name, why) in [("", "is empty"), ("evil\x1b[2Jname", "control characters")] {
        let w = mender_workdir(&f.dir, "named", &[("b.blob", b2.clone())]);
        std::fs::write(w.join("header/artifact_name"), name).unwrap();
        let e = format!("{:#}", state("ArtifactInstall", &w, &set).0.unwrap_err());
        assert!(e.contains(why) && !e.contains('\x1b'), "{e}");
    }
    assert!(Manifest::read(&f.dir).unwrap().pending.is_none());
    let work = mender_workdir(&f.dir, "b-8", &[("b.blob", b2)]);
    state("ArtifactInstall", &work, &set).0.unwrap();
    // Another payload under the same name: refused, and the pending update is the first one.
    let other = mender_workdir(&f.dir, "b-8", &[("b.blob", module(&m1, &net, 1, "b", 6).encode(None).unwrap())]);
    let e = format!("{:#}", state("ArtifactInstall", &other, &set).0.unwrap_err());
    assert!(e.contains("with other contents"), "{e}");
    let work = mender_workdir(&f.dir, "b-8", &[("b.blob", module(&m1, &net, 1, "b", 8).encode(None).unwrap())]);
    assert!(state("ArtifactInstall", &work, &set).0.unwrap().unwrap().contains("already installed, pending"));
    state("ArtifactCommit", &work, &set).0.unwrap();
    // Only the base the device has: nothing new, said so.
    let base = mender_workdir(
        &f.dir,
        "base-again",
        &[("base.blob", classmod_runtime::host::base_blob::encode(&m1, None).unwrap())],
    );
    let line = state("ArtifactInstall", &base, &set).0.unwrap().unwrap();
    assert!(line.contains("nothing new") && !line.contains("()"), "{line}");
}

/// A serving device follows what the update module commits: an artifact that adds a base and a
/// class (recorded as served) and updates another is served at once, its rollback undone at
/// once, and the inbox waits while it is pending.
#[test]
fn a_serving_device_follows_installs_and_rollbacks_and_its_inbox_waits() {
    use classmod_edge::{Edge, EdgeOptions, LogPin};
    let (m1, m2) = (tiny_model(1), tiny_model(2));
    let (n1, n2) = (ResNet::new(&m1, &Device::Cpu).unwrap(), ResNet::new(&m2, &Device::Cpu).unwrap());
    let dir = classmod_runtime::testing::scratch();
    classmod_runtime::testing::pack(&dir, &[&m1], &[&module(&m1, &n1, 0, "a", 3), &module(&m1, &n1, 1, "b", 5)], None);
    let opts = EdgeOptions {
        board: Some("host-sim".into()),
        device: classmod_edge::DeviceChoice::Cpu,
        precision: None,
        min_score: classmod_runtime::MinScore::Off,
        ..EdgeOptions::new(&dir, &["a", "b"])
    };
    let mut edge = Edge::start(opts, LogPin::default()).unwrap();
    let served = |e: &Edge<LogPin>| e.runtime.snapshot().class_names();
    let work = mender_workdir(
        &dir,
        "add-c",
        &[
            ("base2.blob", classmod_runtime::host::base_blob::encode(&m2, None).unwrap()),
            ("c.blob", module(&m2, &n2, 2, "c", 4).encode(None).unwrap()),
            ("b.blob", module(&m1, &n1, 1, "b", 8).encode(None).unwrap()),
        ],
    );
    let set = ModuleSettings { serve_new: true, ..settings(&dir) };
    assert!(!edge.follow_manifest().unwrap(), "nothing yet");
    state("ArtifactInstall", &work, &set).0.unwrap();
    assert!(edge.follow_manifest().unwrap());
    assert_eq!(served(&edge), ["a", "b", "c"]);
    let log = edge.log.join("\n");
    assert!(log.contains("now serving the new module of b (update add-c, not yet committed)"), "{log}");
    assert!(log.contains("`c` added by an update, now served"), "{log}");
    // The inbox waits for the pending update instead of refusing.
    let inbox = dir.with_extension("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join("a2.blob"), module(&m1, &n1, 0, "a", 9).encode(None).unwrap()).unwrap();
    assert_eq!(edge.process_inbox(&inbox).unwrap(), 0);
    assert!(
        edge.log.iter().any(|l| l.contains("update a2.blob: waits (update `add-c` is installed")),
        "{:#?}",
        edge.log
    );
    assert!(inbox.join("a2.blob").exists());
    state("ArtifactRollback", &work, &set).0.unwrap();
    assert!(edge.follow_manifest().unwrap());
    assert_eq!(served(&edge), ["a", "b"]);
    assert!(edge.log.iter().any(|l| l.contains("c no longer in the directory")), "{:#?}", edge.log);
    // Now the inbox's update goes through.
    assert_eq!(edge.process_inbox(&inbox).unwrap(), 1, "{:#?}", edge.log);
}
