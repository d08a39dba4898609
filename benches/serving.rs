//! The device runtime on real modules of the ../shared ResNet-20 (all ten classes decomposed and
//! packed first), beside the monolithic base model in the same run: open + verify + map one module
//! blob; a cold load of k modules; swapping one module while ten are served; classifying a batch
//! of 1 and of 64 with k classes loaded, and the base model's forward on the same batch.
//! Run: `cargo bench --bench serving`. Skips (with a message) when ../shared is absent.
//! Resident memory against k, with a table and plots, comes from `classmod experiment serving`.

use std::path::{Path, PathBuf};

use classmod::fixtures::packed_resnet20;
use classmod::runtime::host::{ResNet, Tensor};
use classmod::runtime::io::MappedFile;
use classmod::runtime::Device;
use classmod::runtime::MinScore;
use classmod::runtime::{ModuleRuntime, ServingConfig};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

struct Setup {
    dir: PathBuf,
    classes: Vec<String>,
    base: ResNet,
    /// 64 test images, raw pixels.
    pixels: Vec<u8>,
}

fn setup() -> Option<Setup> {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if !shared.join("models/resnet20-cifar10.safetensors").exists() {
        eprintln!("SKIPPED: {} is absent", shared.display());
        return None;
    }
    let dir = std::env::temp_dir().join(format!("classmod-bench-serving-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("decomposing the ten classes of ResNet-20 and packing them ...");
    let packed = packed_resnet20(&shared, &(0..10).collect::<Vec<_>>(), 40, 8, &dir).expect("packs");
    let pixels = packed.test.balanced_sample(64, 1).pixels;
    let classes = packed.manifest.modules.iter().map(|m| m.class_name.clone()).collect();
    let base = ResNet::new(&packed.model, &Device::Cpu).expect("the graph builds");
    Some(Setup { dir, classes, base, pixels })
}

fn runtime(dir: &Path) -> ModuleRuntime {
    let config = ServingConfig::new(Device::Cpu).with_min_score(MinScore::Off);
    ModuleRuntime::open(dir, config).expect("opens")
}

fn serving(c: &mut Criterion) {
    let Some(s) = setup() else { return };
    let mut g = c.benchmark_group("serving");
    g.sample_size(10);

    let manifest = runtime(&s.dir).manifest();
    let module_file = s.dir.join(&manifest.modules[0].file);
    g.bench_function("open_verify_map_module", |b| {
        b.iter(|| MappedFile::open(&module_file).unwrap().blob(None).map(drop).unwrap())
    });
    for k in [1usize, 2, 5, 10] {
        g.bench_with_input(BenchmarkId::new("cold_load", k), &k, |b, &k| {
            b.iter(|| {
                let rt = runtime(&s.dir);
                for class in &s.classes[..k] {
                    rt.load(class).unwrap();
                }
                rt
            })
        });
    }
    let rt = runtime(&s.dir);
    for class in &s.classes {
        rt.load(class).unwrap();
    }
    g.bench_function("swap_one_of_10", |b| b.iter(|| rt.replace(&manifest.modules[0], &module_file).unwrap()));

    let spec = s.base.input_spec().clone();
    for batch in [1usize, 64] {
        let px = &s.pixels[..batch * spec.image_len()];
        let mut x = vec![0f32; px.len()];
        g.bench_with_input(BenchmarkId::new(format!("classify_b{batch}"), "base"), &px, |b, px| {
            b.iter(|| {
                spec.normalize_into(px, &mut x);
                let t = Tensor::from_slice(&x, (batch, spec.channels, spec.height, spec.width), &Device::Cpu).unwrap();
                s.base.forward(&t).unwrap().argmax(1).unwrap().to_vec1::<u32>().unwrap()
            })
        });
        // Unload down to k, largest first, so one runtime serves each k in turn.
        for k in [10usize, 5, 2, 1] {
            for class in &s.classes[k..] {
                let _ = rt.unload(class);
            }
            g.bench_with_input(BenchmarkId::new(format!("classify_b{batch}"), format!("k{k}")), &px, |b, px| {
                b.iter(|| rt.classify(px).unwrap())
            });
        }
        for class in &s.classes {
            rt.load(class).unwrap();
        }
    }
    g.finish();
    let _ = std::fs::remove_dir_all(&s.dir);
}

criterion_group!(benches, serving);
criterion_main!(benches);
