//! A `classmod-edge` process running as on a device, for tests that act on it from outside
//! while it serves (press its trigger, hold its lock, change its files): its stdout (results)
//! and stderr (log) are collected line by line on threads, waited for with a deadline, and the
//! process is killed when the test ends, however it ends.

#![allow(dead_code)] // Each test file uses its part.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a test waits for what it expects before it fails (a loaded CI machine is slow).
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct Running {
    child: Child,
    /// Result lines (stdout), in order.
    pub out: Arc<Mutex<Vec<String>>>,
    /// Log lines (stderr), in order.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Running {
    /// `classmod-edge DIR --classes CLASSES --board BOARD --device cpu --poll-ms 50`, then each
    /// `(flag, path)` of `inputs` (`--watch`, `--inbox`, `--trigger-file`, `--frame`).
    pub fn serve(dir: &Path, classes: &str, board: &str, inputs: &[(&str, &Path)]) -> Running {
        let mut args = vec![dir.to_str().unwrap(), "--classes", classes, "--board", board, "--device", "cpu"];
        args.extend(["--poll-ms", "50"]);
        for (flag, path) in inputs {
            args.extend([*flag, path.to_str().unwrap()]);
        }
        Running::start(&args)
    }

    pub fn start(args: &[&str]) -> Running {
        Self::spawn(Command::new(env!("CARGO_BIN_EXE_classmod-edge")).args(args)).unwrap()
    }

    /// [`Running::start`] as the user and group `uid` (the tests run as root in CI); the
    /// error when that user cannot run the binary here.
    pub fn start_as(args: &[&str], uid: u32) -> std::io::Result<Running> {
        use std::os::unix::process::CommandExt;
        Self::spawn(Command::new(env!("CARGO_BIN_EXE_classmod-edge")).args(args).uid(uid).gid(uid))
    }

    fn spawn(command: &mut Command) -> std::io::Result<Running> {
        let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let collect = |stream: Box<dyn std::io::Read + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let into = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    into.lock().unwrap().push(line);
                }
            });
            lines
        };
        let out = collect(Box::new(child.stdout.take().unwrap()));
        let log = collect(Box::new(child.stderr.take().unwrap()));
        Ok(Running { child, out, log })
    }

    /// Waits until `lines` has a line `want` takes; panics with the log after [`PATIENCE`] or
    /// when the process ended without one.
    fn wait(&mut self, lines: &Arc<Mutex<Vec<String>>>, what: &str, want: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            if let Some(l) = lines.lock().unwrap().iter().find(|l| want(l)) {
                return l.clone();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                // The readers may still hold the last lines.
                std::thread::sleep(Duration::from_millis(200));
                if let Some(l) = lines.lock().unwrap().iter().find(|l| want(l)) {
                    return l.clone();
                }
                panic!("classmod-edge ended ({status}) before {what}:\n{}", self.log_text());
            }
            if t0.elapsed() > PATIENCE {
                panic!("no {what} after {PATIENCE:?}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for a result line containing `text`.
    pub fn wait_result(&mut self, text: &str) -> String {
        let out = self.out.clone();
        self.wait(&out, &format!("result `{text}`"), |l| l.contains(text))
    }

    /// Waits for a log line containing `text`.
    pub fn wait_log(&mut self, text: &str) -> String {
        let log = self.log.clone();
        self.wait(&log, &format!("log line `{text}`"), |l| l.contains(text))
    }

    /// How many log lines contain `text` so far.
    pub fn count_log(&self, text: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.contains(text)).count()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Whether the process still runs.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Drops an image into the watched directory the way a producer should: written elsewhere,
/// renamed in.
pub fn drop_image(watch: &Path, name: &str, seed: u32) {
    let tmp = watch.join(format!(".{name}.tmp"));
    image::GrayImage::from_fn(8, 8, |x, y| image::Luma([(x * 31 + y * 7 + seed) as u8]))
        .save_with_format(&tmp, image::ImageFormat::Png)
        .unwrap();
    std::fs::rename(&tmp, watch.join(name)).unwrap();
}

pub fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// What `classmod verify` checks of a device directory, through the same runtime calls: every
/// base, every module and every rollback copy the manifest names loads and passes its self-test.
/// Panics naming what fails.
pub fn verify(dir: &Path) {
    use classmod_runtime::{Device, MinScore, ModuleRuntime, ServingConfig};
    let rt = ModuleRuntime::open(dir, ServingConfig::new(Device::Cpu).with_min_score(MinScore::Off)).unwrap();
    let m = rt.manifest();
    for b in &m.bases {
        rt.check_base(&b.key).unwrap_or_else(|e| panic!("verify: base {}: {e}", b.file));
    }
    for e in &m.modules {
        rt.check_module_entry(e).unwrap_or_else(|err| panic!("verify: {}: {err}", e.file));
        if let Some(copy) = e.rolled_back() {
            rt.check_module_entry(&copy).unwrap_or_else(|err| panic!("verify: rollback copy {}: {err}", copy.file));
        }
    }
}

/// The user tests run the device as when they run as root: `nobody`.
pub const NOBODY: u32 = 65534;

/// Whether this process runs as root.
pub fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The names in `dir`, sorted (none when it cannot be listed).
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// A payload work directory as Mender's client lays it out (`header/artifact_name`, `files/`,
/// `tmp/`) beside `root`, for the artifact `name` carrying `blobs`.
pub fn mender_workdir(root: &Path, name: &str, blobs: &[(&str, Vec<u8>)]) -> std::path::PathBuf {
    let w = root.with_file_name(format!("{}-work-{name}", root.file_name().unwrap().to_string_lossy()));
    let _ = std::fs::remove_dir_all(&w);
    for sub in ["header", "files", "tmp"] {
        std::fs::create_dir_all(w.join(sub)).unwrap();
    }
    std::fs::write(w.join("header/artifact_name"), format!("{name}\n")).unwrap();
    for (file, bytes) in blobs {
        std::fs::write(w.join("files").join(file), bytes).unwrap();
    }
    w
}
