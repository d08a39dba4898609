//! README command 1 (`classmod demo`) end to end, shortened to a few training steps: it must find
//! Fashion-MNIST (Debian's `dataset-fashion-mnist`), train, write the model, evaluate the 10,000
//! held-out images and print the per-class table with the garment names.

mod common;

#[test]
fn the_demo_runs_end_to_end() {
    if common::fashion_mnist().is_none() {
        return;
    }
    let out = common::scratch("demo");
    let o = common::classmod(&["demo", "--steps", "60", "--out", out.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = common::last_json(&o);
    assert_eq!(v["n"], 10_000);
    // 60 steps of batch 64 (6 % of an epoch) already sit far above chance (10 %).
    assert!(v["top1"].as_f64().unwrap() > 0.5, "{v}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("Ankle boot") && stdout.contains("Trouser"), "{stdout}");
    assert!(out.join("fashion-resnet8.safetensors").exists());
    // The device part: compact modules, each classification's latency beside the full model's,
    // and the garments of the class not served counted as `none` answers or not.
    assert!(stdout.contains("compact modules of 4 + 1 classes"), "{stdout}");
    assert_eq!(stdout.matches("ms on 3 compact modules, the full model").count(), 8, "{stdout}");
    assert!(stdout.contains("of the 2 Dress images (a class not served) answered none"), "{stdout}");
    // Three classes served, one swapped for the other model's, a fourth added.
    assert!(stdout.contains("device program: serving T-shirt/top, Trouser, Pullover, Dress"), "{stdout}");
    assert!(stdout.contains("2 base models"), "{stdout}");
    let log: Vec<&str> = v["device_log"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert!(log.iter().any(|l| l.contains("class `T-shirt/top` updated") && l.contains("rollback copy")), "{log:?}");
    assert!(log.iter().any(|l| l.contains("class `Dress` added as") && l.contains("now served")), "{log:?}");
    assert!(!log.iter().any(|l| l.contains("REFUSED")), "{log:?}");
    // The trigger: one press, one classification of the frame.
    assert!(stdout.contains("device program: trigger pressed, 1 classification"), "{stdout}");
    assert_eq!(log.iter().filter(|l| l.contains("trigger: classifying")).count(), 1, "{log:?}");
    assert!(out.join("inbox/done").read_dir().unwrap().count() >= 3);
    let _ = std::fs::remove_dir_all(out);
}
