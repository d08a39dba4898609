//! pack / inspect / verify / keygen on modules of the ../shared ResNet-20: a packed, signed
//! directory verifies (golden self-tests included); tampering, unsigned blobs on a keyed device,
//! another key, a manifest that lies, and overwriting keys are refused with exit code 2.

mod common;

use std::path::Path;

fn run(args: &[&str]) -> std::process::Output {
    common::classmod(args)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `classmod decompose` of `classes` with 50 positives each, plus `extra` flags.
fn decompose(model: &Path, data: &Path, out: &Path, classes: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["decompose", "--model", s(model), "--data", s(data), "--out", s(out)];
    args.extend(["--classes", classes, "--n-pos", "50"]);
    args.extend(extra);
    run(&args)
}

#[test]
fn packed_blobs_verify_and_tampering_is_refused() {
    let Some(shared) = common::shared() else { return };
    let dir = common::scratch("blobs");
    let model = dir.join("r20.safetensors");
    common::import_shared(&shared, "resnet20-cifar10.safetensors", &model);
    let data = shared.join("data/cifar10-jpeg.tar.gz");
    let modules = dir.join("modules");
    let o = decompose(&model, &data, &modules, "cat,dog", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let key = dir.join("device");
    assert!(run(&["keygen", "--out", s(&key)]).status.success());
    let o = run(&["keygen", "--out", s(&key)]);
    assert_eq!(o.status.code(), Some(2), "an existing key is never overwritten");
    let (secret, public) = (dir.join("device.secret"), dir.join("device.public"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
    }

    let signed = dir.join("signed");
    let o = run(&[
        "pack",
        "--modules",
        s(&modules),
        "--data",
        s(&data),
        "--out",
        s(&signed),
        "--key",
        s(&secret),
        "--golden",
        "4",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["verify", s(&signed), "--key", s(&public), "--json"]);
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let rows = common::last_json(&o);
    assert_eq!(rows.as_array().unwrap().len(), 3, "one base, two modules");
    assert!(String::from_utf8_lossy(&o.stdout).contains("golden self-test (4 images"));

    let o = run(&["inspect", s(&signed.join("class-003-cat.blob")), "--json"]);
    assert!(o.status.success());
    let v = common::last_json(&o);
    assert_eq!(v["kind"], "Module");
    assert_eq!(v["meta"]["class_name"], "cat");
    assert!(v["signer"].is_string());

    // One payload byte of a signed module changed: refused, exit code 2, the file named.
    let tampered = dir.join("tampered");
    copy_dir(&signed, &tampered);
    let cat = tampered.join("class-003-cat.blob");
    let mut bytes = std::fs::read(&cat).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&cat, &bytes).unwrap();
    let o = run(&["verify", s(&tampered), "--key", s(&public)]);
    assert_eq!(o.status.code(), Some(2));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("class-003-cat.blob") && out.contains("REFUSED"), "{out}");
    let o = run(&["verify", s(&cat)]);
    assert_eq!(o.status.code(), Some(2), "a lone tampered file is refused too");

    // Unsigned blobs: fine without a key, refused by a device that holds one.
    let unsigned = dir.join("unsigned");
    let o = run(&["pack", "--modules", s(&modules), "--data", s(&data), "--out", s(&unsigned), "--golden", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(run(&["verify", s(&unsigned)]).status.success());
    let o = run(&["verify", s(&unsigned), "--key", s(&public)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stdout).contains("not signed"));

    // Another key.
    let other = dir.join("other");
    assert!(run(&["keygen", "--out", s(&other)]).status.success());
    let o = run(&["verify", s(&signed), "--key", s(&dir.join("other.public"))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stdout).contains("another key"));

    // A manifest that swaps two modules' files: the hashes it records give it away.
    let swapped = dir.join("swapped");
    copy_dir(&signed, &swapped);
    let text = std::fs::read_to_string(swapped.join("manifest.json")).unwrap();
    let text = text
        .replace("class-003-cat.blob", "TMP")
        .replace("class-005-dog.blob", "class-003-cat.blob")
        .replace("TMP", "class-005-dog.blob");
    std::fs::write(swapped.join("manifest.json"), text).unwrap();
    let o = run(&["verify", s(&swapped), "--key", s(&public)]);
    assert_eq!(o.status.code(), Some(2));
    // A corrupt key file and a missing manifest: one line, exit code 2.
    std::fs::write(dir.join("bad.public"), "classmod-ed25519-public-v1 xyz").unwrap();
    let o = run(&["verify", s(&signed), "--key", s(&dir.join("bad.public"))]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&o.stderr).trim().lines().count(), 1);
    // decompose's own output is a packed directory: unsigned, and it verifies as such.
    let o = run(&["verify", s(&modules)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = run(&["verify", s(&empty)]);
    assert_eq!(o.status.code(), Some(2), "a directory without manifest.json");

    // decompose writes signed blobs directly.
    let direct = dir.join("direct");
    let o = decompose(&model, &data, &direct, "ship", &["--key", s(&secret), "--golden", "3"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["verify", s(&direct), "--key", s(&public)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ship"));
    let _ = std::fs::remove_dir_all(dir);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}
