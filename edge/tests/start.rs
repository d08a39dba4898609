//! What an operator scripting `classmod-edge` trips over at start (issue 13's "also" list), on
//! the real binary and a packed directory of a tiny random model: a misspelt class lists the
//! classes there are; blobs without a manifest point to `classmod pack`; running without a key
//! says so; with nothing to do the program says so and exits instead of idling.

use std::process::{Command, Output};

use classmod_runtime::testing::fixture;

fn edge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_classmod-edge")).args(args).output().unwrap()
}

#[test]
fn start_up_messages_say_what_to_do() {
    let f = fixture(None);
    let dir = f.dir.to_str().unwrap();
    let base = ["--board", "host-sim", "--device", "cpu", "--once"];

    let o = edge(&[&[dir, "--classes", "bb"][..], &base].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot load class `bb`") && err.contains("the directory has a, b, c"), "{err}");

    // Nothing to do: said, and exit 0 at once.
    let o = edge(&[&[dir, "--classes", "a"][..], &base].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("nothing to do (no --images, --watch, --inbox or trigger): exiting"), "{err}");
    assert!(err.contains("warning: no --key given: unsigned blobs and updates are accepted"), "{err}");

    std::fs::remove_file(f.dir.join("manifest.json")).unwrap();
    let o = edge(&[&[dir, "--classes", "a"][..], &base].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no manifest.json here: make the directory with `classmod pack`"), "{err}");
}
