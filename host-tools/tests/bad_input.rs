//! Every file the CLI reads can be broken: each case must end with one line on stderr that names
//! the file, exit code 2, and no panic.

mod common;

use std::io::Write;
use std::path::Path;

use classmod_runtime::host::{ResNetConfig, Shortcut};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// A PyTorch-style state dict of a tiny 1-channel ResNet-8, as safetensors bytes; `edit` may
/// drop or reshape entries first.
fn state_dict(edit: impl Fn(&mut Vec<(String, Vec<usize>)>)) -> Vec<u8> {
    state_dict_with(edit, |_, v| v)
}

/// [`state_dict`] with each value passed through `value(tensor name, value)`.
fn state_dict_with(edit: impl Fn(&mut Vec<(String, Vec<usize>)>), value: impl Fn(&str, f32) -> f32) -> Vec<u8> {
    let cfg =
        ResNetConfig { blocks_per_stage: 1, widths: [4, 8, 16], shortcut: Shortcut::A, in_channels: 1, num_classes: 3 };
    let mut tensors = cfg.tensor_shapes();
    edit(&mut tensors);
    let data: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .into_iter()
        .map(|(n, s)| {
            let len: usize = s.iter().product();
            let v: Vec<u8> = (0..len).flat_map(|i| value(&n, ((i % 7) as f32 + 1.0) * 0.1).to_le_bytes()).collect();
            (n, v, s)
        })
        .collect();
    let views: Vec<(String, TensorView)> =
        data.iter().map(|(n, v, s)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), v).unwrap())).collect();
    safetensors::serialize(views, None).unwrap()
}

/// Runs classmod and checks the failure contract; returns stderr.
fn fails_cleanly(args: &[&str], names: &str) -> String {
    let o = common::classmod(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(2), "{args:?}: exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line expected, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(err.contains(names), "{args:?}: the message should name `{names}`: {err}");
    err
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::File::create(path).unwrap().write_all(bytes).unwrap();
}

fn import(input: &Path, out: &Path) -> Vec<String> {
    vec![
        "import".into(),
        input.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--input-size".into(),
        "8".into(),
    ]
}

fn run_import(input: &Path, out: &Path, names: &str) -> String {
    let args = import(input, out);
    fails_cleanly(&args.iter().map(String::as_str).collect::<Vec<_>>(), names)
}

#[test]
fn broken_model_files() {
    let dir = common::scratch("bad-models");
    let out = dir.join("out.safetensors");

    let p = dir.join("missing.safetensors");
    write(&p, &state_dict(|t| t.retain(|(n, _)| n != "layer2.0.bn1.running_var")));
    let e = run_import(&p, &out, "missing.safetensors");
    assert!(e.contains("layer2.0.bn1.running_var") && e.contains("missing"), "{e}");

    let p = dir.join("shape.safetensors");
    write(&p, &state_dict(|t| t.iter_mut().filter(|(n, _)| n == "layer1.0.conv2.weight").for_each(|(_, s)| s[1] = 5)));
    let e = run_import(&p, &out, "shape.safetensors");
    assert!(e.contains("layer1.0.conv2.weight"), "{e}");

    let p = dir.join("extra.safetensors");
    write(&p, &state_dict(|t| t.push(("layer1.0.conv3.weight".into(), vec![4, 4, 3, 3]))));
    let e = run_import(&p, &out, "extra.safetensors");
    assert!(e.contains("layer1.0.conv3.weight"), "{e}");

    // A negative running variance imported and then classified at chance, silently.
    let p = dir.join("negvar.safetensors");
    write(&p, &state_dict_with(|_| {}, |n, v| if n == "layer2.0.bn1.running_var" { -v } else { v }));
    let e = run_import(&p, &out, "negvar.safetensors");
    assert!(e.contains("layer2.0.bn1.running_var") && e.contains("negative variance"), "{e}");

    let p = dir.join("text.safetensors");
    write(&p, b"this is not a safetensors file at all");
    run_import(&p, &out, "text.safetensors");

    let good = state_dict(|_| {});
    for cut in [0, 4, 8, 100, good.len() / 2, good.len() - 1] {
        let p = dir.join(format!("cut{cut}.safetensors"));
        write(&p, &good[..cut]);
        run_import(&p, &out, &format!("cut{cut}.safetensors"));
    }
    run_import(&dir.join("absent.safetensors"), &out, "absent.safetensors");
    assert!(!out.exists(), "no output is written for a failed import");

    // A valid import, then broken copies of the model file given to eval.
    let p = dir.join("good.safetensors");
    write(&p, &good);
    // A resize that is neither a stretch nor a crop, or a crop smaller than the input.
    for (resize, names) in
        [("squash", "--resize `squash`"), ("crop:x", "--resize `crop:x`"), ("crop:4", "shorter side of 4")]
    {
        let mut args = import(&p, &out);
        args.extend(["--resize".into(), resize.into()]);
        fails_cleanly(&args.iter().map(String::as_str).collect::<Vec<_>>(), names);
    }
    let args = import(&p, &out);
    assert!(common::classmod(&args.iter().map(String::as_str).collect::<Vec<_>>()).status.success());
    let model = std::fs::read(&out).unwrap();
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("x")).unwrap();
    for (name, bytes) in [("trunc.model", &model[..model.len() - 10]), ("raw.model", &good[..])] {
        let p = dir.join(name);
        write(&p, bytes);
        fails_cleanly(&["eval", "--model", p.to_str().unwrap(), "--data", data.to_str().unwrap()], name);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn broken_datasets() {
    let dir = common::scratch("bad-data");
    let src = dir.join("sd.safetensors");
    write(&src, &state_dict(|_| {}));
    let model = dir.join("model.safetensors");
    let args = import(&src, &model);
    assert!(common::classmod(&args.iter().map(String::as_str).collect::<Vec<_>>()).status.success());
    let eval = |data: &Path, names: &str| {
        fails_cleanly(&["eval", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap()], names)
    };

    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    eval(&empty, "empty");

    let bad_image = dir.join("badimg");
    std::fs::create_dir_all(bad_image.join("class0")).unwrap();
    write(&bad_image.join("class0/broken.png"), b"\x89PNG\r\n\x1a\n not really");
    eval(&bad_image, "broken.png");

    let idx = dir.join("idx");
    std::fs::create_dir_all(&idx).unwrap();
    let mut images = vec![0, 0, 8, 4, 0, 0, 0, 1, 0, 0, 0, 8, 0, 0, 0, 8]; // magic 0x804: wrong
    images.extend([0u8; 64]);
    write(&idx.join("t10k-images-idx3-ubyte"), &images);
    write(&idx.join("t10k-labels-idx1-ubyte"), &[0, 0, 8, 1, 0, 0, 0, 1, 0]);
    eval(&idx, "t10k-images-idx3-ubyte");

    // A real .tar.gz of an ImageFolder, cut short.
    let folder = dir.join("folder");
    std::fs::create_dir_all(folder.join("test/class0")).unwrap();
    for i in 0..20u8 {
        let img = image::GrayImage::from_fn(8, 8, |x, y| image::Luma([(x as u8 * 31) ^ (y as u8 * 17) ^ i]));
        img.save(folder.join(format!("test/class0/{i}.png"))).unwrap();
    }
    let targz = dir.join("data.tar.gz");
    let enc = flate2::write::GzEncoder::new(std::fs::File::create(&targz).unwrap(), flate2::Compression::default());
    let mut tar = tar::Builder::new(enc);
    tar.append_dir_all(".", &folder).unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    let bytes = std::fs::read(&targz).unwrap();
    let cut = dir.join("cut.tar.gz");
    write(&cut, &bytes[..bytes.len() * 2 / 3]);
    eval(&cut, "cut.tar.gz");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_flags_exit_with_2_and_no_panic() {
    let o = common::classmod(&["eval", "--model"]);
    assert_eq!(o.status.code(), Some(2));
    let o = common::classmod(&["import", "x.safetensors", "--out", "/nonexistent-dir/y.safetensors"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nonexistent-dir"));
    // `--golden 0` printed an internal matmul error with a 26-frame backtrace (issue 13, item 11):
    // now a usage error naming the flag, before anything is read.
    // `--golden 1000000` made a 30 MB module whose self-test took 7.6 s and 463 MB at every
    // device start (issue 36, item 7): at most 64 (`MAX_GOLDEN_IMAGES`), else a usage error.
    for (n, args) in [
        ("0", &["pack", "--golden", "0", "--modules", "m", "--data", "d", "--out", "o"][..]),
        ("0", &["decompose", "--golden", "0", "--model", "m", "--data", "d", "--out", "o"]),
        ("65", &["pack", "--golden", "65", "--modules", "m", "--data", "d", "--out", "o"]),
        ("1000000", &["decompose", "--golden", "1000000", "--model", "m", "--data", "d", "--out", "o"]),
    ] {
        let (cmd, o) = (args[0], common::classmod(args));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {err}");
        assert!(err.lines().next().unwrap_or("").contains(&format!("'{n}' for '--golden")), "{cmd}: {err}");
        assert!(!err.contains("panicked") && !err.contains("matmul"), "{cmd}: {err}");
    }
    // Nonsense numbers were taken, with exit 0 (issue 36, item 9): each is now a usage error
    // naming the flag, before anything is read.
    for args in [
        &["eval", "--limit", "0"][..],
        &["eval", "--batch", "0"],
        &["eval", "--batch", "1000000"],
        &["train", "--epochs", "0"],
        &["train", "--time-limit", "nan"],
        &["decompose", "--epochs", "0"],
        &["throughput", "--seconds", "nan"],
        &["throughput", "--batches", "1,0"],
        &["bench", "--min-seconds=-1"],
        &["experiment", "cost", "--watts-per-core=-5"],
        &["experiment", "open-set", "--sizes", "0"],
    ] {
        let o = common::classmod(args);
        let err = String::from_utf8_lossy(&o.stderr);
        let flag = args.iter().find(|a| a.starts_with("--")).unwrap().split('=').next().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.lines().next().unwrap_or("").contains(flag), "{args:?}: {err}");
    }
    for (flag, value) in [("--max-loss", "-1"), ("--grow-minutes", "NaN")] {
        let arg = format!("{flag}={value}");
        let o =
            common::classmod(&["decompose", "--kind", "compact", "--model", "m", "--data", "d", "--out", "o", &arg]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(flag) && err.contains("a number of at least 0"), "{err}");
    }
    // No `mender-artifact` on the PATH: one line saying how to get it, exit 2.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_classmod"))
        .args(["mender-artifact", "--packed", "p", "--device-type", "t", "--out", "x.mender"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("mender-artifact is not installed: `apt-get install mender-artifact`"), "{err}");
}

/// Files that are not files (issue 13, item 9): `/dev/zero` was read without bound (20 GB of RSS
/// before the kernel killed it) and a FIFO hung `import` and `inspect` waiting for a writer. Now
/// each is refused before a byte is read: one line naming the file, exit code 2, at once.
#[test]
fn devices_fifos_and_directories_are_refused_unread() {
    let dir = common::scratch("not-files");
    let fifo = dir.join("model.safetensors");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let out = dir.join("out.safetensors");
    let err = run_import(Path::new("/dev/zero"), &out, "/dev/zero");
    assert!(err.contains("not a regular file"), "{err}");
    let err = run_import(&fifo, &out, "model.safetensors");
    assert!(err.contains("is a FIFO, socket or device"), "{err}");
    let err = run_import(&dir, &out, "not-files");
    assert!(err.contains("is a directory"), "{err}");
    let err = fails_cleanly(&["inspect", fifo.to_str().unwrap()], "model.safetensors");
    assert!(err.contains("not a regular file"), "{err}");
    let err = fails_cleanly(&["eval", "--model", "/dev/zero", "--data", dir.to_str().unwrap()], "/dev/zero");
    assert!(err.contains("not a regular file"), "{err}");
    // A dataset that is a FIFO (it hung `eval --data` waiting for a writer).
    let good = dir.join("good.safetensors");
    write(&good, &state_dict(|_| {}));
    let model = dir.join("good.model");
    let args = import(&good, &model);
    assert!(common::classmod(&args.iter().map(String::as_str).collect::<Vec<_>>()).status.success());
    let data = dir.join("data.tar.gz");
    let c = std::ffi::CString::new(data.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let err =
        fails_cleanly(&["eval", "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap()], "data.tar.gz");
    assert!(err.contains("not a regular file"), "{err}");
}
