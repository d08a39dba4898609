//! The trigger of the real `classmod-edge`, pressed from outside while it serves (issue 36,
//! items 1 and 2): a press during a backlog of watched images is served between two batches,
//! not lost; and whatever the trigger's value file becomes (missing, a FIFO, a directory,
//! `/dev/zero`, a 1 GiB file), the device serves on and a press once it reads `1` is served.
//! The model is the runtime's tiny test model: these tests are about the device, not accuracy.

mod common;

use std::path::Path;
use std::time::Duration;

use classmod_runtime::testing::fixture;
use common::{drop_image, mkfifo, root, Running, NOBODY};

/// Sets the value file to `level` (written elsewhere and renamed, as a script should).
fn set(value: &Path, level: &str) {
    let tmp = value.with_extension("tmp");
    std::fs::write(&tmp, level).unwrap();
    std::fs::rename(&tmp, value).unwrap();
}

/// Issue 36, item 2: 64 large watched images take four batches on a Jetson Nano's profile
/// (16 a batch), each about a second on this machine; a 300 ms press during the second batch
/// was never served (the trigger was polled once a batch, and debounce wants 3 polls). Now the
/// trigger's thread sees it, and the frame is classified after that batch, before the backlog
/// ends.
#[test]
fn a_press_during_a_watch_backlog_is_served_between_batches() {
    let f = fixture(None);
    let watch = f.dir.with_extension("watch");
    std::fs::create_dir_all(&watch).unwrap();
    // Noise does not compress: a 1600 x 1600 PNG of it takes tens of ms to decode. One file,
    // hard-linked 64 times.
    let mut state = 0x2545_f491_u32;
    let big = image::RgbImage::from_fn(1600, 1600, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        image::Rgb([state as u8, (state >> 8) as u8, (state >> 16) as u8])
    });
    let original = f.dir.with_extension("big.png");
    big.save(&original).unwrap();
    for i in 0..64 {
        std::fs::hard_link(&original, watch.join(format!("img{i:03}.png"))).unwrap();
    }
    let frame = f.dir.with_extension("frame.png");
    image::GrayImage::from_fn(8, 8, |x, y| image::Luma([(x * 9 + y) as u8])).save(&frame).unwrap();
    let value = f.dir.with_extension("value");
    set(&value, "0\n");
    let mut device = Running::serve(
        &f.dir,
        "a,b",
        "jetson-nano",
        &[("--watch", &watch), ("--trigger-file", &value), ("--frame", &frame)],
    );
    // The first batch is out: the second is being classified.
    device.wait_result("img015.png");
    set(&value, "1\n");
    std::thread::sleep(Duration::from_millis(300));
    set(&value, "0\n");
    device.wait_result("frame.png");
    device.wait_result("img063.png");
    let out = device.out.lock().unwrap().clone();
    let at = out.iter().position(|l| l.contains("frame.png")).unwrap();
    assert!(at < 64, "the press was served after the whole backlog, not between batches:\n{}", out.join("\n"));
    assert_eq!(out.len(), 65, "each image and the frame once:\n{}", out.join("\n"));
    let served = device.wait_log("trigger: classifying");
    assert!(served.contains("s ago)"), "the log says how long the press waited: {served}");
    assert!(device.alive());
}

/// Issue 36, item 1, on the real binary: the trigger's value file missing at start (warned),
/// then a FIFO with no writer, a directory, a link to `/dev/zero`, a 1 GiB sparse file reading
/// `0`: after each, an image dropped into the watched directory is still classified (the device
/// neither hangs nor ends), each fault is said once; then the 1 GiB file reads `1`: the press is
/// served and the recovery said.
#[test]
fn whatever_the_trigger_file_becomes_the_device_serves_on() {
    let f = fixture(None);
    let watch = f.dir.with_extension("watch");
    std::fs::create_dir_all(&watch).unwrap();
    let frame = f.dir.with_extension("frame.png");
    image::GrayImage::from_fn(8, 8, |x, y| image::Luma([(x * 9 + y) as u8])).save(&frame).unwrap();
    let value = f.dir.with_extension("value");
    let mut device = Running::serve(
        &f.dir,
        "a,b",
        "host-sim",
        &[("--watch", &watch), ("--trigger-file", &value), ("--frame", &frame)],
    );
    device.wait_log("does not exist: it reads as not pressed until it does");
    let still_serves = |device: &mut Running, i: u32| {
        drop_image(&watch, &format!("after{i}.png"), i);
        device.wait_result(&format!("after{i}.png"));
    };
    still_serves(&mut device, 0);

    mkfifo(&value);
    device.wait_log("a FIFO, not a value file");
    still_serves(&mut device, 1);

    std::fs::remove_file(&value).unwrap();
    std::fs::create_dir(&value).unwrap();
    device.wait_log("a directory, not a value file");
    still_serves(&mut device, 2);

    std::fs::remove_dir(&value).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &value).unwrap();
    device.wait_log("a character device, not a value file");
    still_serves(&mut device, 3);

    // Low, and 1 GiB (sparse): read in a few bytes, so the device's memory stays small.
    std::fs::remove_file(&value).unwrap();
    std::fs::write(&value, "0\n").unwrap();
    std::fs::OpenOptions::new().write(true).open(&value).unwrap().set_len(1 << 30).unwrap();
    device.wait_log("trigger input: readable again");
    still_serves(&mut device, 4);
    {
        use std::io::{Seek, Write};
        let mut file = std::fs::OpenOptions::new().write(true).open(&value).unwrap();
        file.seek(std::io::SeekFrom::Start(0)).unwrap();
        file.write_all(b"1").unwrap();
    }
    device.wait_result("frame.png");
    assert_eq!(device.count_log("trigger input failed"), 3, "once per cause:\n{}", device.log_text());
    // Fault lines are said once however long they last: 50 polls a second would say them often.
    assert!(device.alive(), "{}", device.log_text());
    std::fs::remove_file(&value).unwrap();
}

/// Issue 36, item 1, the last case: a trigger value file the device may not read (root's, 0600,
/// the device run as `nobody`; CI runs as root, which reads any file). Said once, read as not
/// pressed, and the device serves; before, it ended with exit 2.
#[test]
fn a_trigger_file_the_device_may_not_read_is_not_pressed() {
    use std::os::unix::fs::PermissionsExt;
    if !root() {
        eprintln!("SKIPPED: needs root, to run the device as another user than the file's owner");
        return;
    }
    let f = fixture(None);
    let watch = f.dir.with_extension("watch");
    std::fs::create_dir_all(&watch).unwrap();
    std::os::unix::fs::chown(&watch, Some(NOBODY), Some(NOBODY)).unwrap();
    let frame = f.dir.with_extension("frame.png");
    image::GrayImage::from_fn(8, 8, |x, y| image::Luma([(x * 9 + y) as u8])).save(&frame).unwrap();
    let value = f.dir.with_extension("value");
    std::fs::write(&value, "1\n").unwrap();
    std::fs::set_permissions(&value, std::fs::Permissions::from_mode(0o600)).unwrap();
    let args = [f.dir.to_str().unwrap(), "--classes", "a,b", "--board", "host-sim", "--device", "cpu"];
    let inputs = ["--watch", watch.to_str().unwrap(), "--trigger-file", value.to_str().unwrap()];
    let more = ["--frame", frame.to_str().unwrap(), "--poll-ms", "50"];
    let mut device = match Running::start_as(&[&args[..], &inputs, &more].concat(), NOBODY) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("SKIPPED: `nobody` cannot run the test binary here ({e})");
            return;
        }
    };
    device.wait_log("Permission denied");
    drop_image(&watch, "served.png", 1);
    device.wait_result("served.png");
    assert_eq!(
        device.count_log("Permission denied"),
        2,
        "the start's warning and one fault line:\n{}",
        device.log_text()
    );
    assert!(device.out.lock().unwrap().iter().all(|l| !l.contains("frame.png")), "not pressed");
    assert!(device.alive());
}
