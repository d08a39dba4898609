//! The GPU path against independent references: the shared ResNet-20/56 on a CUDA GPU against
//! PyTorch's logits (`shared/data/cifar10-lossless-20/reference-logits.json`, PyTorch 1.13 on the
//! CPU), and mask and compact groups, and a serving runtime with its hot swap and field update,
//! on the GPU against the same on the CPU path (itself held to PyTorch by golden_logits.rs and
//! module_execution.rs).
//!
//! Every test skips with a message when this build has no `cuda` feature or the machine no CUDA
//! device (CI). `scripts/gpu-check.sh` runs them on a GPU machine, built by
//! `scripts/cuda-build.sh`, with `CLASSMOD_SHARED` (the shared models and PNGs) and
//! `CLASSMOD_GPU_FIXTURES` (imported models and packed directories the script makes) set.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use classmod::host::compose_eval;
use classmod::runtime::host::{ModelFile, ResNet, Tensor};
use classmod::runtime::{Device, MinScore, ModuleRuntime, OsFs, Precision, ServingConfig};

/// f32 logits on the GPU against PyTorch's CPU logits (cuBLAS sums in another order).
const F32_LOGIT_TOLERANCE: f32 = 1e-3;
/// f16 logits against PyTorch's f32 logits: 11 mantissa bits through 20-56 layers. The largest
/// differences measured on an H200 were below a tenth of this (README, "GPU").
const F16_LOGIT_TOLERANCE: f32 = 0.25;
/// GPU against the CPU path, f32, scores in [0, 1].
const F32_SCORE_TOLERANCE: f32 = 1e-3;

/// The CUDA device, or `None` with a message (no `cuda` feature, no GPU, no driver). With
/// `CLASSMOD_GPU_TESTS_DRY_RUN` set, the CPU instead (f32 only): the tests' own logic, fixtures
/// and files checked before a GPU machine's scarce minutes are spent on them.
fn gpu() -> Option<Device> {
    if std::env::var_os("CLASSMOD_GPU_TESTS_DRY_RUN").is_some() {
        eprintln!("DRY RUN: the GPU tests on the CPU, f32 only");
        return Some(Device::Cpu);
    }
    match classmod::runtime::cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("SKIPPED: no CUDA device: {e}");
            None
        }
    }
}

/// What `scripts/gpu-check.sh` prepares: r20.safetensors, r56.safetensors (imported with the
/// shared normalisation), mask20/ (10 mask modules of ResNet-20), compact20/ (10 compact ones).
/// With a GPU present its absence is a failure: the check would otherwise test nothing.
fn fixtures() -> PathBuf {
    let dir = std::env::var_os("CLASSMOD_GPU_FIXTURES")
        .map(PathBuf::from)
        .expect("CLASSMOD_GPU_FIXTURES is not set: run the GPU tests through scripts/gpu-check.sh");
    assert!(dir.join("mask20/manifest.json").exists(), "{}: no mask20/ packed directory", dir.display());
    dir
}

/// The 20 lossless PNGs as raw CHW pixels, their labels, and the reference JSON.
fn lossless_20(shared: &Path) -> (Vec<u8>, Vec<usize>, serde_json::Value) {
    let (reference, pixels) = common::reference_pngs(&shared.join("data/cifar10-lossless-20"));
    let labels = reference["labels"].as_array().unwrap().iter().map(|l| l.as_u64().unwrap() as usize).collect();
    (pixels, labels, reference)
}

/// Whether `device` can compute in `precision` (the CPU of a dry run: f32 only).
fn can(device: &Device, precision: Precision) -> bool {
    precision == Precision::F32 || !device.is_cpu()
}

fn model(fixtures: &Path, name: &str, device: &Device) -> ModelFile {
    ModelFile::read(&fixtures.join(name), device).unwrap()
}

/// The normalised batch of `pixels` on `device`.
fn batch(net: &ResNet, pixels: &[u8], device: &Device) -> Tensor {
    let spec = net.input_spec();
    let n = pixels.len() / spec.image_len();
    let mut x = vec![0f32; pixels.len()];
    spec.normalize_into(pixels, &mut x);
    Tensor::from_vec(x, (n, spec.channels, spec.height, spec.width), device).unwrap()
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max)
}

#[test]
fn resnet20_and_resnet56_on_the_gpu_match_pytorch_logits() {
    let Some(gpu) = gpu() else { return };
    let Some(shared) = common::shared() else { return };
    let fx = fixtures();
    let (pixels, labels, reference) = lossless_20(&shared);
    for (key, file) in [("resnet20", "r20.safetensors"), ("resnet56", "r56.safetensors")] {
        let want: Vec<Vec<f32>> = reference["logits"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect())
            .collect();
        for (precision, tolerance) in
            [(Precision::F32, F32_LOGIT_TOLERANCE), (Precision::F16, F16_LOGIT_TOLERANCE), (Precision::Bf16, f32::MAX)]
        {
            if !can(&gpu, precision) {
                continue;
            }
            let net = ResNet::new(&model(&fx, file, &gpu), &gpu).unwrap().with_precision(precision).unwrap();
            let logits = net.forward(&batch(&net, &pixels, &gpu)).unwrap().to_vec2::<f32>().unwrap();
            let diff = max_abs_diff(&logits, &want);
            let correct = logits
                .iter()
                .zip(&labels)
                .filter(|(row, &l)| row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 == l)
                .count();
            eprintln!("GPU {key} {precision}: max |logit - PyTorch| = {diff:.3e}, {correct}/20 correct");
            assert!(diff.is_finite() && diff <= tolerance, "{key} {precision}: max logit difference {diff}");
            // bf16 (8 mantissa bits) is reported, and held to finishing with sane answers only.
            let least = if precision == Precision::Bf16 { 18 } else { 20 };
            assert!(correct >= least, "{key} {precision}: {correct}/20 classified correctly");
        }
    }
}

/// Scores of every module of the packed `dir` on the 20 PNGs, on `device` in `precision`.
fn group_scores(dir: &Path, device: &Device, precision: Precision, pixels: &[u8]) -> Vec<Vec<f32>> {
    let c = compose_eval::load(&[dir.to_path_buf()], device, precision).unwrap();
    assert_eq!(c.composed.len(), 10, "{}: a group of ten modules", dir.display());
    let out = c.composed.run_pixels(pixels).unwrap();
    (0..pixels.len() / (3 * 32 * 32)).map(|i| out.scores(i)).collect()
}

fn group_on_gpu_equals_cpu(kind: &str) {
    let Some(gpu) = gpu() else { return };
    let Some(shared) = common::shared() else { return };
    let dir = fixtures().join(kind);
    let (pixels, _, _) = lossless_20(&shared);
    let cpu = group_scores(&dir, &Device::Cpu, Precision::F32, &pixels);
    let f32_ = group_scores(&dir, &gpu, Precision::F32, &pixels);
    let f16_ = if can(&gpu, Precision::F16) { group_scores(&dir, &gpu, Precision::F16, &pixels) } else { cpu.clone() };
    let (d32, d16) = (max_abs_diff(&f32_, &cpu), max_abs_diff(&f16_, &cpu));
    eprintln!("GPU {kind} group of 10: max |score - CPU path| f32 {d32:.3e}, f16 {d16:.3e}");
    assert!(d32 <= F32_SCORE_TOLERANCE, "{kind}: f32 scores differ from the CPU path's by {d32}");
    assert!(d16 <= Precision::F16.golden_tolerance(), "{kind}: f16 scores differ from the CPU path's by {d16}");
}

#[test]
fn a_mask_group_of_ten_on_the_gpu_equals_the_cpu_path() {
    group_on_gpu_equals_cpu("mask20");
}

#[test]
fn a_compact_group_of_ten_on_the_gpu_equals_the_cpu_path() {
    group_on_gpu_equals_cpu("compact20");
}

fn config(device: Device, precision: Precision) -> ServingConfig {
    ServingConfig::new(device).with_precision(precision).with_min_score(MinScore::Off)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// The compact module of `cat` (class 3): an update of the mask module of the same base, newer.
fn compact_cat(fixtures: &Path) -> Vec<u8> {
    let dir = fixtures.join("compact20");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("class-003"))
        .expect("compact20 holds a module of class 3");
    std::fs::read(file).unwrap()
}

#[test]
fn a_gpu_backed_runtime_loads_hot_swaps_and_updates_modules_as_the_cpu_path_does() {
    let Some(gpu) = gpu() else { return };
    let Some(shared) = common::shared() else { return };
    let fx = fixtures();
    let (pixels, _, _) = lossless_20(&shared);
    let scratch = common::scratch("gpu-runtime");
    let (gpu_dir, cpu_dir, f16_dir) = (scratch.join("gpu"), scratch.join("cpu"), scratch.join("f16"));
    for d in [&gpu_dir, &cpu_dir, &f16_dir] {
        copy_dir(&fx.join("mask20"), d);
    }
    let on_gpu = Arc::new(ModuleRuntime::open(&gpu_dir, config(gpu.clone(), Precision::F32)).unwrap());
    let on_cpu = ModuleRuntime::open(&cpu_dir, config(Device::Cpu, Precision::F32)).unwrap();
    let half = if can(&gpu, Precision::F16) { Precision::F16 } else { Precision::F32 };
    let in_f16 = ModuleRuntime::open(&f16_dir, config(gpu.clone(), half)).unwrap();
    let scores = |rt: &ModuleRuntime| rt.classify(&pixels).unwrap().scores;
    let same = |what: &str, a: &[Vec<f32>], b: &[Vec<f32>], tolerance: f32| {
        let d = max_abs_diff(a, b);
        eprintln!("GPU runtime, {what}: max |score - CPU path| = {d:.3e}");
        assert!(d <= tolerance, "{what}: scores differ from the CPU path's by {d}");
    };

    // Loading: each module's golden self-test runs on the GPU (in f16 with f16's tolerance).
    for class in ["cat", "dog", "ship"] {
        for rt in [&*on_gpu, &on_cpu, &in_f16] {
            rt.load(class).unwrap();
        }
    }
    same("three mask modules", &scores(&on_gpu), &scores(&on_cpu), F32_SCORE_TOLERANCE);
    same("three mask modules, f16", &scores(&in_f16), &scores(&on_cpu), Precision::F16.golden_tolerance());

    // A classifying thread runs on the GPU through every change below: none may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let serving = {
        let (rt, stop, pixels) = (on_gpu.clone(), stop.clone(), pixels.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                rt.classify(&pixels).expect("a classification during a change");
                n += 1;
            }
            n
        })
    };

    // Hot swap: dog out, frog in.
    for rt in [&*on_gpu, &on_cpu] {
        rt.unload("dog").unwrap();
        rt.load("frog").unwrap();
    }
    same("after swapping dog for frog", &scores(&on_gpu), &scores(&on_cpu), F32_SCORE_TOLERANCE);

    // Field update: cat's compact module replaces its mask module (staged, self-tested on the
    // GPU, committed by the manifest's rename), then rolled back to the same bytes.
    let update = compact_cat(&fx);
    let before = scores(&on_gpu);
    for rt in [&*on_gpu, &on_cpu, &in_f16] {
        rt.update(&mut OsFs, &update).unwrap();
    }
    same("after the field update of cat", &scores(&on_gpu), &scores(&on_cpu), F32_SCORE_TOLERANCE);
    assert!(max_abs_diff(&scores(&on_gpu), &before) > 1e-3, "the update changed cat's scores");
    on_gpu.rollback(&mut OsFs, "cat").unwrap();
    same("after rolling cat back", &scores(&on_gpu), &before, F32_SCORE_TOLERANCE);

    stop.store(true, Ordering::Relaxed);
    let n = serving.join().expect("the serving thread");
    eprintln!("GPU runtime: {n} classifications of 20 images ran during the swap, update and rollback");
    assert!(n > 0);
    let _ = std::fs::remove_dir_all(&scratch);
}
