//! `classmod compose-eval` refuses what cannot be composed, with one clear line and exit code 2:
//! an empty module set, a directory of the old module-file format, modules whose input specs
//! differ, a module blob of another format version, a base blob that does not match its modules.

mod common;

use std::path::Path;

use classmod_host::pack::{pack, PackGroup};
use classmod_runtime::host::{
    ClassId, ClassModule, ModelFile, ModelMeta, ModuleHead, ModuleKind, NodeMask, ResNet, ResNetConfig, Shortcut,
    Tensor,
};
use classmod_runtime::{Device, InputSpec, ModelKey};

/// A packed directory of a tiny 1-channel 8x8 base with `mean` as its normalisation, and one
/// all-ones module per class (as `classmod decompose` writes one).
fn module_dir(dir: &Path, mean: f32) {
    let arch =
        ResNetConfig { blocks_per_stage: 1, widths: [4, 8, 16], shortcut: Shortcut::A, in_channels: 1, num_classes: 2 };
    let tensors = arch
        .tensor_shapes()
        .into_iter()
        .map(|(n, s)| {
            let len: usize = s.iter().product();
            (
                n,
                Tensor::from_vec((0..len).map(|i| 0.5 + (i % 3) as f32 * 0.1).collect::<Vec<f32>>(), s, &Device::Cpu)
                    .unwrap(),
            )
        })
        .collect();
    let input = InputSpec::new(1, 8, 8, vec![mean], vec![0.5]);
    let model = ModelFile::new(
        ModelMeta { arch: arch.into(), input: input.clone(), class_names: vec!["a".into(), "b".into()] },
        tensors,
    )
    .unwrap();
    let sites = ResNet::new(&model, &Device::Cpu).unwrap().relu_sites();
    let modules = (0..2)
        .map(|c| ClassModule {
            class_id: ClassId(c),
            class_name: ["a", "b"][c as usize].into(),
            base_key: ModelKey::of(&model).unwrap(),
            input: input.clone(),
            kind: ModuleKind::Mask(NodeMask::ones(&sites)),
            head: ModuleHead::Channel { class_index: c as usize },
            min_score: None,
        })
        .collect();
    pack(&[PackGroup::new(model, modules).unwrap()], dir, None, 1, |_, _| vec![100; 2 * 64]).unwrap();
}

fn compose(modules: &[&Path], data: &Path) -> std::process::Output {
    let mut args = vec!["compose-eval".to_string(), "--modules".into()];
    args.extend(modules.iter().map(|p| p.display().to_string()));
    args.extend(["--data".into(), data.display().to_string()]);
    common::classmod(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn fails(o: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(needle), "expected `{needle}` in: {err}");
}

#[test]
fn what_cannot_be_composed_is_refused_clearly() {
    let dir = common::scratch("compose-errors");
    let data = dir.join("data");
    for class in ["a", "b"] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        image::GrayImage::from_pixel(8, 8, image::Luma([100])).save(data.join(class).join("0.png")).unwrap();
    }
    let (one, two) = (dir.join("one"), dir.join("two"));
    module_dir(&one, 0.5);
    module_dir(&two, 0.25);

    // A well-formed set composes (the fixture is valid).
    let ok = compose(&[&one], &data);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));

    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fails(&compose(&[&empty], &data), "no module blobs");

    // A directory of the module files written before modules were blobs: named as such.
    let old = dir.join("old");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("class-000-a.module.safetensors"), b"x").unwrap();
    fails(&compose(&[&old], &data), "old format");

    fails(&compose(&[&one.join("class-000-a.blob"), &two.join("class-001-b.blob")], &data), "different input specs");

    let mut v2 = std::fs::read(one.join("class-001-b.blob")).unwrap();
    v2[8..12].copy_from_slice(&2u32.to_le_bytes());
    let v2_path = one.join("v2.blob");
    std::fs::write(&v2_path, &v2).unwrap();
    fails(&compose(&[&v2_path], &data), "v2.blob");

    // The base replaced by another model's: refused by its key.
    let base = |d: &Path| {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("base-"))
            .unwrap()
    };
    std::fs::copy(base(&two), base(&one)).unwrap();
    fails(&compose(&[&one], &data), "does not match");
    let _ = std::fs::remove_dir_all(dir);
}
