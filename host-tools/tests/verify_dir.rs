//! `classmod verify` on a device directory checks every file its manifest names, the rollback
//! copy of an unconfirmed update included (issue 13, item 6: a rollback copy deleted behind the
//! manifest's back used to pass). Tiny random models packed by the runtime's own writers.

use classmod_host::verify::verify_dir;
use classmod_runtime::host::ResNet;
use classmod_runtime::testing::{fixture, module, tiny_model::tiny_model};
use classmod_runtime::{Device, MinScore, ModuleRuntime, OsFs, ServingConfig};

#[test]
fn verify_checks_the_rollback_copy_too() {
    let f = fixture(None);
    let config = ServingConfig::new(Device::Cpu).with_min_score(MinScore::Off);
    let rt = ModuleRuntime::open(&f.dir, config).unwrap();
    let m1 = tiny_model(1);
    let v2 = module(&m1, &ResNet::new(&m1, &Device::Cpu).unwrap(), 1, "b", 2).encode(None).unwrap();
    let report = rt.update(&mut OsFs, &v2).unwrap();
    let copy = report.previous.expect("b.blob is kept for rollback");
    drop(rt);

    let rows = verify_dir(&f.dir, None).unwrap();
    let row = rows.iter().find(|r| r.file == copy).expect("a row for the rollback copy");
    assert!(row.result.is_ok(), "{row:?}");
    assert_eq!(rows.len(), 2 + 3 + 1, "two bases, three modules, one rollback copy");

    std::fs::remove_file(f.dir.join(&copy)).unwrap();
    let rows = verify_dir(&f.dir, None).unwrap();
    let row = rows.iter().find(|r| r.file == copy).unwrap();
    assert!(row.result.as_ref().is_err_and(|e| e.contains(&copy)), "{row:?}");
    // Another file under its name fails its hash.
    std::fs::write(f.dir.join(&copy), &v2).unwrap();
    let rows = verify_dir(&f.dir, None).unwrap();
    assert!(rows.iter().find(|r| r.file == copy).unwrap().result.is_err());
    let _ = std::fs::remove_dir_all(&f.dir);
}

/// Issue 36, item 8: after an update that moves class `a` to the other base (the demo does
/// one), and after its rollback, the real `classmod verify` passes: the rollback copy was checked
/// on the new module's base and exited 2 on a healthy device.
#[test]
fn verify_passes_after_a_cross_base_update_and_its_rollback() {
    let f = fixture(None);
    let config = ServingConfig::new(Device::Cpu).with_min_score(MinScore::Off);
    let rt = ModuleRuntime::open(&f.dir, config).unwrap();
    let m2 = tiny_model(2);
    let a_on_2 = module(&m2, &ResNet::new(&m2, &Device::Cpu).unwrap(), 0, "a", 3).encode(None).unwrap();
    rt.update(&mut OsFs, &a_on_2).unwrap();
    let verify = || {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_classmod")).arg("verify").arg(&f.dir).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "{text}");
        text
    };
    verify();
    rt.rollback(&mut OsFs, "a").unwrap();
    verify();
    let _ = std::fs::remove_dir_all(&f.dir);
}

/// Issue 36, item 9: `classmod verify` looked each module up by class name, quadratic in the
/// entries (100,003 took 94 s). A manifest of 100,003 entries whose files are missing: every
/// row is there and names its file. (The time is printed, not asserted: `cargo test --
/// --nocapture` shows it.)
#[test]
fn verify_is_linear_in_the_manifest_entries() {
    let f = fixture(None);
    let mut m = classmod_runtime::Manifest::read(&f.dir).unwrap();
    let template = m.modules[0].clone();
    for i in 0..100_000 {
        m.modules.push(classmod_runtime::ManifestModule {
            file: format!("missing-{i}.blob"),
            class_name: format!("extra{i}"),
            ..template.clone()
        });
    }
    m.write(&f.dir).unwrap();
    let t = std::time::Instant::now();
    let rows = verify_dir(&f.dir, None).unwrap();
    eprintln!("verify of {} entries: {:.2} s", m.modules.len() + m.bases.len(), t.elapsed().as_secs_f64());
    assert_eq!(rows.len(), 2 + 3 + 100_000);
    let last = rows.iter().find(|r| r.file == "missing-99999.blob").unwrap();
    assert!(last.result.as_ref().is_err_and(|e| e.contains("missing-99999.blob")), "{last:?}");
    let _ = std::fs::remove_dir_all(&f.dir);
}
