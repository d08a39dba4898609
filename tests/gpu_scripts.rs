//! The CPU-side steps of the GPU scripts (`scripts/`), run for real on any machine: argument
//! checks with their exit code 2, the stub of the CUDA driver library a GPU-less build links
//! against, and the check's refusal to run without what `gpu-prepare.sh` makes. The CUDA build
//! itself needs CUDA's wheels (700 MB) and is proven by `scripts/gpu-check.sh` on a GPU machine.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn script(name: &str, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new("bash");
    c.arg(root().join("scripts").join(name)).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn cuda_build_refuses_a_missing_or_malformed_compute_capability() {
    let o = script("cuda-build.sh", &[], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("usage: scripts/cuda-build.sh CAP"), "{}", stderr(&o));
    for bad in ["9", "sm_90", "8.7", "90;rm"] {
        let o = script("cuda-build.sh", &[bad], &[]);
        assert_eq!(o.status.code(), Some(2), "{bad}");
        assert!(stderr(&o).contains("is not like 90 or 87"), "{bad}: {}", stderr(&o));
    }
    let o = script("cuda-build.sh", &["87", "--frobnicate"], &[]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn the_driver_stub_exports_the_bound_functions_under_the_drivers_soname() {
    let dir = common::scratch("cuda-stub");
    // The shape of cudarc's bindings: declarations inside extern blocks, wrappers around them.
    let sys = dir.join("mod.rs");
    std::fs::write(
        &sys,
        "pub unsafe fn cuInit(flags: u32) -> CUresult {\n    extern \"C\" {\n        fn cuInit(flags: u32) -> CUresult;\n    }\n    cuInit(flags)\n}\n\
         pub unsafe fn cuMemAlloc_v2(p: *mut u64, n: usize) -> CUresult {\n    extern \"C\" {\n        fn cuMemAlloc_v2(p: *mut u64, n: usize) -> CUresult;\n    }\n    cuMemAlloc_v2(p, n)\n}\n\
         pub unsafe fn culib() -> &'static Lib { todo!() }\n",
    )
    .unwrap();
    let out = dir.join("link");
    let o = script("cuda-stub.sh", &[sys.to_str().unwrap(), out.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let so = out.join("libcuda.so");
    let elf = std::fs::read(&so).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    // The soname makes the binary ask for the driver's libcuda.so.1 at run time.
    assert!(elf.windows(12).any(|w| w == b"libcuda.so.1"), "no libcuda.so.1 soname");
    let c = std::fs::read_to_string(out.join("libcuda-stub.c")).unwrap();
    assert_eq!(c, "void cuInit(void) {}\nvoid cuMemAlloc_v2(void) {}\n", "only the declared driver functions");

    let o = script("cuda-stub.sh", &[dir.join("absent.rs").to_str().unwrap(), out.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("absent.rs: no such file"), "{}", stderr(&o));
    std::fs::write(&sys, "fn main() {}\n").unwrap();
    let o = script("cuda-stub.sh", &[sys.to_str().unwrap(), out.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("declares no cu* functions"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_gpu_check_refuses_to_run_without_its_prepared_folder() {
    let dir = common::scratch("gpu-check-empty");
    let out = dir.join("out");
    let o = script("gpu-check.sh", &[out.to_str().unwrap()], &[("GPU_CHECK_DIR", &dir)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is missing: run scripts/gpu-prepare.sh first"), "{}", stderr(&o));
    let o = script("gpu-check.sh", &[], &[]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("usage: scripts/gpu-check.sh OUT_DIR"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
