//! What an operator scripting `classmod-edge` trips over at start (issue 13's "also" list), on
//! the real binary and a packed directory of a tiny random model: a misspelt class lists the
//! classes there are; blobs without a manifest point to `classmod pack`; running without a key
//! says so; with nothing to do the program says so and exits instead of idling.

use std::process::{Command, Output};

use classmod_runtime::host::ResNet;
use classmod_runtime::testing::{fixture, module, tiny_model::tiny_model};
use classmod_runtime::Device;

fn edge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_classmod-edge")).args(args).output().unwrap()
}

#[test]
fn start_up_messages_say_what_to_do() {
    let f = fixture(None);
    let dir = f.dir.to_str().unwrap();
    let base = ["--board", "host-sim", "--device", "cpu", "--once"];

    // None of the classes given can be served: exit 4 (the unit does not restart on it).
    let o = edge(&[&[dir, "--classes", "bb"][..], &base].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("cannot load class `bb`") && err.contains("the directory has a, b, c"), "{err}");
    assert!(err.contains("nothing to serve"), "{err}");
    // One of them: the others serve, the misspelt one warned about.
    let o = edge(&[&[dir, "--classes", "a,bb"][..], &base].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("warning: cannot load class `bb`") && err.contains("serving the others"), "{err}");

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

/// Results on stdout, one per line (tab-separated, or JSON lines with --json), the log on stderr;
/// --require-key without a key refuses to start; --once exits 3 when an update was refused and
/// says what the inbox did: added, updated, already present, refused.
#[test]
fn results_go_to_stdout_and_refusals_have_their_own_exit_code() {
    let f = fixture(None);
    let dir = f.dir.to_str().unwrap();
    let png = f.dir.with_extension("png");
    image::GrayImage::from_fn(8, 8, |x, y| image::Luma([(x * 30 + y) as u8])).save(&png).unwrap();
    let base = [dir, "--classes", "a,b", "--board", "host-sim", "--device", "cpu", "--once"];

    let o = edge(&[&base[..], &["--images", png.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let fields: Vec<&str> = out.trim_end().split('\t').collect();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert_eq!(fields.len(), 4, "{out}");
    assert!(fields[0].ends_with(".png") && ["a", "b"].contains(&fields[1]), "{out}");
    assert!(fields[2].parse::<f32>().is_ok() && fields[3].parse::<f64>().is_ok(), "{out}");
    assert!(!String::from_utf8_lossy(&o.stderr).is_empty(), "the log is on stderr");
    let o = edge(&[&base[..], &["--json", "--images", png.to_str().unwrap()]].concat());
    let v: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert_eq!(v["class"].as_str(), Some(fields[1]));
    assert!(v["score"].is_number() && v["latency_ms"].is_number() && v["file"].is_string(), "{v}");

    let o = edge(&[&base[..], &["--require-key", "--images", png.to_str().unwrap()]].concat());
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--require-key: no --key given"));

    // One update, one already present, one new class, one refused: exit 3 and the counts.
    let inbox = f.dir.with_extension("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let m1 = tiny_model(1);
    let net = ResNet::new(&m1, &Device::Cpu).unwrap();
    std::fs::write(inbox.join("b2.blob"), module(&m1, &net, 1, "b", 2).encode(None).unwrap()).unwrap();
    std::fs::write(inbox.join("a-again.blob"), std::fs::read(f.dir.join("a.blob")).unwrap()).unwrap();
    std::fs::write(inbox.join("c1.blob"), module(&m1, &net, 2, "c", 2).encode(None).unwrap()).unwrap();
    std::fs::write(inbox.join("junk.blob"), vec![0u8; 400]).unwrap();
    let o = edge(&[&base[..], &["--inbox", inbox.to_str().unwrap()]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("inbox: 0 added, 2 updated, 1 already present, 1 refused"), "{err}");
    // Nothing refused: exit 0.
    let o = edge(&[&base[..], &["--inbox", inbox.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A blob still being written (half of it): nothing refused, but not done either; it said
    // exit 0 (issue 36, item 9). Now exit 5, saying so.
    let whole = module(&m1, &net, 1, "b", 4).encode(None).unwrap();
    std::fs::write(inbox.join("b4.blob"), &whole[..whole.len() / 2]).unwrap();
    let o = edge(&[&base[..], &["--inbox", inbox.to_str().unwrap()]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(err.contains("0 refused, 1 waiting") && err.contains("1 inbox entry not applied yet"), "{err}");
    std::fs::write(inbox.join("b4.blob"), &whole).unwrap();
    let o = edge(&[&base[..], &["--inbox", inbox.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Issue 36, item 9: one unreadable `--images` file ended a device that was also told to
/// `--watch`; now it is said and the device goes on (alone, a bad file given is still exit 2).
#[test]
fn an_unreadable_image_given_at_start_never_ends_a_watching_device() {
    let f = fixture(None);
    let dir = f.dir.to_str().unwrap();
    let watch = f.dir.with_extension("watch");
    std::fs::create_dir_all(&watch).unwrap();
    image::GrayImage::from_fn(8, 8, |x, y| image::Luma([(x * 3 + y) as u8])).save(watch.join("w.png")).unwrap();
    let bad = f.dir.with_extension("bad.png");
    std::fs::write(&bad, b"not a png").unwrap();
    let base = [dir, "--classes", "a,b", "--board", "host-sim", "--device", "cpu", "--once", "--images"];
    let o = edge(&[&base[..], &[bad.to_str().unwrap(), "--watch", watch.to_str().unwrap()]].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("bad.png: unreadable, not classified"), "{err}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("w.png"), "the watched image is classified: {err}");
    let o = edge(&[&base[..], &[bad.to_str().unwrap()]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
}
