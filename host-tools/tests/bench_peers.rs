//! `classmod bench --peers`: classmod against PyTorch, ONNX Runtime and OpenVINO on the same
//! inputs. The real comparison runs where the peers' venv is already made (it is made by the
//! first `classmod bench --peers`, a download of about 100 MB that CI does not spend); the
//! protocol's failures are tested everywhere with a stand-in interpreter.
//! Reference for the logits: PyTorch eager's, computed by the peer script from the same file.

mod common;

use std::path::{Path, PathBuf};

fn model(dir: &Path) -> Option<PathBuf> {
    let shared = common::shared()?;
    let model = dir.join("resnet20.safetensors");
    common::import_shared(&shared, "resnet20-cifar10.safetensors", &model);
    Some(model)
}

fn data() -> PathBuf {
    common::shared().expect("checked by model()").join("data/cifar10-jpeg.tar.gz")
}

/// The venv `classmod bench --peers` makes, if made and complete.
fn peer_venv() -> Option<PathBuf> {
    let venv = classmod_host::bench::peers::default_venv();
    let ok = std::process::Command::new(venv.join("bin/python"))
        .args(["-c", "import torch, onnxruntime, openvino"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(venv)
}

#[test]
fn every_engine_is_measured_and_agrees_with_pytorch() {
    let dir = common::scratch("bench-peers");
    let Some(model) = model(&dir) else { return };
    let Some(venv) = peer_venv() else {
        eprintln!(
            "SKIPPED every_engine_is_measured_and_agrees_with_pytorch: no peer venv at {} with torch, \
             onnxruntime and openvino (`classmod bench --peers` makes it)",
            classmod_host::bench::peers::default_venv().display()
        );
        return;
    };
    let out = dir.join("out");
    let o = common::classmod(&[
        "bench",
        "--peers",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data().to_str().unwrap(),
        "--venv",
        venv.to_str().unwrap(),
        "--rounds",
        "2",
        "--peer-images",
        "128",
        "--batch1-iters",
        "20",
        "--min-seconds",
        "0.1",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = common::last_json(&o);
    let engines = ["classmod", "pytorch", "onnxruntime", "openvino-latency", "openvino-throughput"];
    let c = &v["comparison"];
    assert_eq!(c["inputs"], 128);
    assert_eq!(c["rounds"].as_array().unwrap().len(), 2);
    for round in c["rounds"].as_array().unwrap() {
        for e in engines {
            for k in ["batch1_median_ms", "batch1_p90_ms", "batch_images_per_second"] {
                let f = round[e][k].as_f64().unwrap_or_else(|| panic!("{e} {k} missing: {round}"));
                assert!(f > 0.0 && f.is_finite(), "{e} {k} = {f}");
            }
            assert!(round[e]["batch1_p90_ms"].as_f64() >= round[e]["batch1_median_ms"].as_f64());
        }
    }
    // Every engine, classmod's included, computes the same network as PyTorch eager.
    for e in engines {
        let d = c["max_abs_diff"][e].as_f64().unwrap_or_else(|| panic!("no logit check for {e}"));
        assert!(d < 1e-4, "{e}: logits {d} from PyTorch's");
    }
    // classmod's own ratio to itself is 1 in every round.
    let summary = v["summary"].as_array().unwrap();
    assert_eq!(summary[0]["engine"], "classmod");
    assert_eq!(summary[0]["batch1_vs_classmod"], 1.0);
    let md = std::fs::read_to_string(out.join("engines.md")).unwrap();
    for e in engines {
        assert!(md.contains(&format!("| {e} |")), "{md}");
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("engines.json")).unwrap()).unwrap();
    assert_eq!(json["comparison"]["engines"].as_array().unwrap().len(), engines.len());
    let _ = std::fs::remove_dir_all(dir);
}

/// A venv whose `python` answers the import check and runs the given script instead of the peers'.
fn stand_in_venv(dir: &Path, script: &str) -> (PathBuf, PathBuf) {
    let venv = dir.join("venv");
    std::fs::create_dir_all(venv.join("bin")).unwrap();
    let python = venv.join("bin/python");
    std::fs::write(&python, "#!/bin/sh\n[ \"$1\" = -c ] && exit 0\nexec python3 \"$@\"\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
    let peer = dir.join("peer.py");
    std::fs::write(&peer, script).unwrap();
    (venv, peer)
}

fn run_with(dir: &Path, model: &Path, script: &str) -> std::process::Output {
    let (venv, peer) = stand_in_venv(dir, script);
    common::classmod(&[
        "bench",
        "--peers",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data().to_str().unwrap(),
        "--venv",
        venv.to_str().unwrap(),
        "--peer-script",
        peer.to_str().unwrap(),
        "--peer-images",
        "64",
        "--rounds",
        "1",
        "--batch1-iters",
        "3",
        "--min-seconds",
        "0.01",
    ])
}

#[test]
fn a_failing_or_garbled_peer_is_one_line_and_exit_2() {
    let dir = common::scratch("bench-peers-broken");
    let Some(model) = model(&dir) else { return };
    let cases = [
        // Dies before it is ready: its last line of stderr is the error.
        (
            "import sys\nsys.stderr.write('loading\\nRuntimeError: no such op\\n')\nsys.exit(1)\n",
            "RuntimeError: no such op",
        ),
        // Prints something that is not the protocol.
        ("print('hello', flush=True)\nimport sys\nsys.stdin.read()\n", "something else than their JSON"),
        // Ready, then dies in the first round.
        (
            "import json, sys\nprint(json.dumps({'ready': {'versions': {}, 'max_abs_diff_vs_pytorch_eager': {}, \
             'engines': ['onnxruntime'], 'config': None, 'reference_logits': [[0.0]*10]}}), flush=True)\n\
             sys.stdin.readline()\nsys.stderr.write('MemoryError\\n')\nsys.exit(3)\n",
            "the peer engines failed: MemoryError",
        ),
    ];
    for (i, (script, expect)) in cases.iter().enumerate() {
        let case = dir.join(format!("case{i}"));
        std::fs::create_dir_all(&case).unwrap();
        let o = run_with(&case, &model, script);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "case {i}: {err}");
        let last = err.lines().rfind(|l| !l.starts_with("peers: ")).unwrap_or("");
        assert!(last.contains(expect), "case {i}: last line {last:?} of {err}");
        assert!(!err.contains("panicked") && !err.contains("stack backtrace"), "case {i}: {err}");
    }
    // A script that is not there is named.
    let missing = dir.join("nowhere.py");
    let o = common::classmod(&[
        "bench",
        "--peers",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data().to_str().unwrap(),
        "--peer-script",
        missing.to_str().unwrap(),
        "--peer-images",
        "64",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nowhere.py"), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(dir);
}

/// `CLASSMOD_CPU_KERNEL` picks the kernel `classmod bench` runs and reports, with the same
/// answers (every kernel computes the same sums, to rounding); a name this CPU lacks is one
/// line on stderr and the fastest kernel. Reference: the default kernel's top-1 on the same
/// 128 test images.
#[test]
fn the_cpu_kernel_is_reported_and_chosen_by_the_environment() {
    let dir = common::scratch("bench-kernel");
    let Some(model) = model(&dir) else { return };
    let bench = |kernel: Option<&str>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_classmod"));
        c.args(["bench", "--no-pytorch", "--json", "--limit", "128", "--batch1-iters", "3", "--model"])
            .args([model.as_os_str(), std::ffi::OsStr::new("--data"), data().as_os_str()])
            .env_remove(classmod_runtime::host::KERNEL_ENV);
        if let Some(k) = kernel {
            c.env(classmod_runtime::host::KERNEL_ENV, k);
        }
        let o = c.output().expect("classmod runs");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (common::last_json(&o), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (default, _) = bench(None);
    let fastest = default["classmod"]["cpu_kernel"].as_str().unwrap().to_string();
    assert_eq!(fastest, classmod_runtime::host::Microkernel::available()[0].name(), "unset, the fastest");
    let (scalar, _) = bench(Some("scalar"));
    assert_eq!(scalar["classmod"]["cpu_kernel"], "scalar");
    assert_eq!(scalar["top1"], default["top1"], "the portable kernel answers as the fastest");
    let (bogus, err) = bench(Some("avx1024"));
    assert_eq!(bogus["classmod"]["cpu_kernel"].as_str(), Some(fastest.as_str()));
    assert!(err.contains("CLASSMOD_CPU_KERNEL=avx1024: no such CPU kernel"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
