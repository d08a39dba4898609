//! classmod-edge: the device program, as a library so the demo and tests drive it in-process.
//!
//! It starts from a packed directory (manifest and blobs) and a board profile (detected or
//! named), on the CPU or the board's CUDA GPU, loads the classes it is told to serve, classifies
//! image files (given, dropped into a watched directory, or a camera frame on each trigger edge),
//! and applies module and base updates dropped into an inbox through the runtime's update
//! transaction, moving each processed file to `inbox/done/` or `inbox/rejected/`. The status LED
//! shows loading, serving, updating and error. An image that cannot be read is logged and set
//! aside; it never stops the device. Results can go to stdout, one line (or JSON line) each,
//! while the log goes to stderr; the classes updates added are part of the directory's state.

mod image_input;
pub mod inbox;
mod log_pin;
pub mod mender;
pub mod pins;
pub mod trigger_watch;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Result};
use classmod_boards::{detect, BoardProfile, Detection, StatusLed};
use classmod_runtime::prelude::*;
use classmod_runtime::MANIFEST_FILE;
use embedded_hal::digital::{InputPin, OutputPin};

pub use classmod_boards::{Status, Trigger};
pub use image_input::{pixels, ImageLimits};
pub use log_pin::LogPin;
pub use trigger_watch::{TriggerEvent, TriggerSampler, TriggerWatch};

/// Where the device computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The board's CUDA GPU when it has one and this build has the `cuda` feature, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

pub struct EdgeOptions {
    pub dir: PathBuf,
    pub classes: Vec<String>,
    /// Board name; `None`: detect from the device tree.
    pub board: Option<String>,
    pub key: Option<VerifyingKey>,
    /// Load classes that an update adds (and record them, so that a restart serves them too).
    pub serve_new: bool,
    /// Serve exactly `classes`: forget the classes updates added.
    pub classes_only: bool,
    pub device: DeviceChoice,
    /// What the GPU computes in; `None`: the board's (f16 on a GPU whose profile has it, else f32).
    /// The CPU computes in f32 only.
    pub precision: Option<Precision>,
    /// The score a module must reach to claim an image; below it on every served module the
    /// answer is `none`.
    pub min_score: MinScore,
    /// Accept module updates older than the newest committed release of their class.
    pub allow_downgrade: bool,
}

impl EdgeOptions {
    /// Serving `classes` of `dir` with the defaults of the command line: the board detected, no
    /// key, `auto` device, calibrated minimum scores, no added classes served, no downgrade.
    pub fn new(dir: &Path, classes: &[&str]) -> EdgeOptions {
        EdgeOptions {
            dir: dir.to_path_buf(),
            classes: classes.iter().map(|c| c.to_string()).collect(),
            board: None,
            key: None,
            serve_new: false,
            classes_only: false,
            device: DeviceChoice::Auto,
            precision: None,
            min_score: MinScore::Calibrated,
            allow_downgrade: false,
        }
    }
}

/// The device for `choice` on `board`, how to name it in the log, and what it computes in
/// (`precision`, else the board's: f16 where the profile's GPU has it). No silent fallback: a GPU
/// asked for, or f16 on the CPU, is an error that says why.
fn select_device(
    choice: DeviceChoice,
    precision: Option<Precision>,
    board: &BoardProfile,
) -> Result<(Device, String, Precision)> {
    let gpu = |cc: Option<(u8, u8)>| -> Result<(Device, String, Precision)> {
        let d = classmod_runtime::cuda(0)?;
        let p = precision.unwrap_or(if board.f16 { Precision::F16 } else { Precision::F32 });
        Ok((d, cc.map_or("CUDA GPU 0".into(), |(major, minor)| format!("CUDA GPU 0 (sm_{major}{minor})")), p))
    };
    let cpu = || (Device::Cpu, "CPU".to_string(), precision.unwrap_or(Precision::F32));
    match choice {
        DeviceChoice::Cpu => Ok(cpu()),
        DeviceChoice::Cuda => gpu(board.cuda),
        DeviceChoice::Auto if board.cuda.is_some() && classmod_runtime::CUDA_BUILT => gpu(board.cuda),
        DeviceChoice::Auto => Ok(cpu()),
    }
}

/// The share of each module's golden set a board self-tests (its `golden_images`), a watch batch
/// at a time: what the device program and the Mender update module run on it.
pub fn board_self_test(board: &BoardProfile) -> SelfTest {
    SelfTest { images: board.golden_images as usize, batch: board.watch_batch as usize }
}

/// None of the classes to serve can be served (each line says why): a restart changes nothing
/// until the directory or the command line does, so the program says so with its own exit code
/// (4), on which the systemd unit does not restart.
#[derive(Debug)]
pub struct NothingToServe(pub String);

impl std::fmt::Display for NothingToServe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\nnothing to serve: none of the classes given can be served from this directory", self.0)
    }
}

impl std::error::Error for NothingToServe {}

/// What one applied inbox entry was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Added,
    Updated,
    AlreadyPresent,
}

/// A file that could not be read as an image, and why.
type Unreadable = (PathBuf, anyhow::Error);

/// One classified image.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub file: PathBuf,
    /// The winning class, or `None`: none of the served classes.
    pub class: Option<String>,
    /// The winner's score (for `none`, the best score, which missed its minimum).
    pub score: f32,
    pub generation: u64,
    /// Classification time per image, ms (the batch's time over its images).
    pub latency_ms: f64,
}

impl Verdict {
    /// One line for scripts: file, class (or `none`), score and latency, tab-separated (the
    /// file name with control characters escaped).
    pub fn line(&self) -> String {
        format!(
            "{}\t{}\t{:.4}\t{:.3}",
            inbox::loggable(&self.file.display().to_string()),
            self.class.as_deref().unwrap_or("none"),
            self.score,
            self.latency_ms
        )
    }

    /// The same as one JSON object (a JSON line).
    pub fn json(&self) -> String {
        serde_json::json!({
            "file": self.file.display().to_string(),
            "class": self.class,
            "score": self.score,
            "latency_ms": self.latency_ms,
            "generation": self.generation,
        })
        .to_string()
    }
}

/// Where classification results go besides the log (which goes to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResultFormat {
    /// Nowhere else (the library default: the caller has the verdicts).
    #[default]
    LogOnly,
    /// One [`Verdict::line`] per image on stdout.
    Lines,
    /// One [`Verdict::json`] per image on stdout.
    JsonLines,
}

/// What the inbox did since the device started, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboxCounts {
    /// Classes (and bases) the device did not have.
    pub added: u64,
    /// Classes whose module was replaced.
    pub updated: u64,
    /// Modules and bases the device already had (a delivery again, or after a crash).
    pub already_present: u64,
    /// Entries refused and set aside in `rejected/`.
    pub refused: u64,
}

pub struct Edge<P: OutputPin> {
    pub runtime: ModuleRuntime,
    pub board: &'static BoardProfile,
    led: StatusLed<P>,
    serve_new: bool,
    /// Serve the classes asked for only, not those updates record as added.
    classes_only: bool,
    started: Instant,
    /// What the inbox and the watched directory remember between scans.
    noted: inbox::Noted,
    /// Inbox entries the last scan left where they are, to be tried again.
    inbox_waiting: usize,
    /// The last scan of the watched directory left images for the next batch.
    watch_backlog: bool,
    /// What a crash left behind is still to be removed: the directory was held by another
    /// writer at the start (tried again as the manifest is followed).
    clean_deferred: bool,
    /// What updates are written through: the real file system, or a test's failing one.
    fs: Box<dyn DurableFs>,
    counts: InboxCounts,
    results: ResultFormat,
    /// Every line logged, also written to stderr.
    pub log: Vec<String>,
}

impl<P: OutputPin> Edge<P> {
    /// Detects the board, opens the directory, removes what a crash left behind and loads
    /// `classes` (LED: loading, then serving; error on failure).
    pub fn start(opts: EdgeOptions, pin: P) -> Result<Edge<P>> {
        let model = std::fs::read_to_string("/proc/device-tree/model").ok();
        let (board, how) =
            detect(opts.board.as_deref(), model.as_deref()).map_err(|n| anyhow!("unknown board `{n}`"))?;
        let led = StatusLed::new(pin, Status::Loading).map_err(|_| anyhow!("status LED pin failed"))?;
        let (device, device_name, precision) = select_device(opts.device, opts.precision, board)?;
        let unsigned = opts.key.is_none();
        let config = ServingConfig::new(device)
            .with_precision(precision)
            .with_key(opts.key)
            .with_budget(Some(u64::from(board.module_budget_mib) << 20))
            .with_min_score(opts.min_score)
            .with_downgrades(opts.allow_downgrade)
            // Serving never waits for another writer (the Mender update module installing): a
            // change that finds the directory held is tried again on a later scan.
            .with_lock_wait(LockWait::Never)
            .with_self_test(board_self_test(board));
        let runtime = ModuleRuntime::open(&opts.dir, config).map_err(|e| {
            // Blobs without a manifest: a directory `classmod pack` has not finished (or run on).
            let hint = if opts.dir.join(MANIFEST_FILE).exists() {
                ""
            } else {
                " (no manifest.json here: make the directory with `classmod pack`)"
            };
            anyhow!("{}: {e}{hint}", opts.dir.display())
        })?;
        let mut edge = Edge {
            runtime,
            board,
            led,
            serve_new: opts.serve_new,
            classes_only: opts.classes_only,
            started: Instant::now(),
            noted: inbox::Noted::default(),
            inbox_waiting: 0,
            watch_backlog: false,
            clean_deferred: false,
            fs: Box::new(OsFs),
            counts: InboxCounts::default(),
            results: ResultFormat::default(),
            log: Vec::new(),
        };
        let how = match how {
            Detection::Override => "given",
            Detection::DeviceTree => "from the device tree",
            Detection::Fallback => "no Jetson found: host simulation",
        };
        edge.say(format!(
            "board {} ({how}), module budget {} MiB, computing on the {device_name} in {precision}",
            board.name, board.module_budget_mib
        ));
        if unsigned {
            edge.say("warning: no --key given: unsigned blobs and updates are accepted".into());
        }
        edge.clean_leftovers();
        // Classes updates added (with --serve-new) are served again beside `classes`, unless told.
        let added = if opts.classes_only {
            // Served or not is this process's choice; what the manifest records is only for the
            // next start, so a directory that cannot be written now (held, read-only) serves too.
            match edge.runtime.forget_added_classes(edge.fs.as_mut()) {
                Ok(forgotten) => {
                    // Those also given are served all the same: not said as dropped.
                    let dropped: Vec<&String> = forgotten.iter().filter(|c| !opts.classes.contains(c)).collect();
                    if !dropped.is_empty() {
                        let dropped: Vec<&str> = dropped.iter().map(|c| c.as_str()).collect();
                        edge.say(format!(
                            "--classes-only: not serving {}, added by updates (forgotten in the manifest)",
                            dropped.join(", ")
                        ));
                    }
                }
                Err(e) => edge.say(format!(
                    "--classes-only: serving exactly the classes given; the classes updates added stay recorded ({e})"
                )),
            }
            Vec::new()
        } else {
            edge.runtime.manifest().added_classes
        };
        for class in added.iter().filter(|c| !opts.classes.contains(c)) {
            // Not the operator's list: a class that cannot be served is said so, the rest serve.
            match edge.runtime.load(class) {
                Ok(snap) => edge.say(format!(
                    "loaded `{class}`, added by an update ({} KiB resident in all; --classes-only forgets it)",
                    snap.resident_bytes() >> 10
                )),
                Err(e) => edge.say(format!("cannot serve `{class}`, added by an update: {e}")),
            }
        }
        // A class that cannot be served (not in the directory: a rollback took it, or a typo; a
        // module that fails its checks) is said, and the others serve: one bad class never stops
        // the device. None at all is an error of its own (`Edge::start` returns `NothingToServe`).
        let mut unserved = Vec::new();
        for class in &opts.classes {
            match edge.runtime.load(class) {
                Ok(snap) => edge.say(format!("loaded `{class}` ({} KiB resident in all)", snap.resident_bytes() >> 10)),
                Err(e) => {
                    let known = match e {
                        Error::UnknownClass(_) => {
                            format!("; the directory has {}", edge.runtime.available().join(", "))
                        }
                        _ => String::new(),
                    };
                    unserved.push(format!("cannot load class `{class}`: {e}{known}"));
                }
            }
        }
        if edge.runtime.snapshot().modules().is_empty() {
            edge.status(Status::Error);
            return Err(NothingToServe(unserved.join("\n")).into());
        }
        for why in unserved {
            edge.say(format!("warning: {why}: serving the others"));
        }
        edge.status(Status::Serving);
        Ok(edge)
    }

    /// Removes what a crash left behind (temp files, blobs no manifest names), under the writer
    /// lock; never a reason not to serve: a directory another writer holds is cleaned later
    /// (its files are that writer's work in progress), one that cannot be written (read-only)
    /// is said so and served as it is.
    fn clean_leftovers(&mut self) {
        self.clean_deferred = false;
        match self.runtime.clean(self.fs.as_mut()) {
            Ok(removed) if !removed.is_empty() => self.say(format!(
                "removed {} file(s) an interrupted update left behind (temp files, blobs no manifest names): {}",
                removed.len(),
                removed.join(", ")
            )),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Busy => {
                self.clean_deferred = true;
                let dir = self.runtime.dir().to_path_buf();
                self.say_once(&dir, format!("{e}: serving meanwhile; leftover files are looked for once it is done"));
            }
            Err(e) => self.say(format!("leftover files cannot be removed ({e}): serving the directory as it is")),
        }
    }

    fn say(&mut self, line: String) {
        let line = format!("[{:7.2} s] {line}", self.started.elapsed().as_secs_f64());
        eprintln!("{line}");
        self.log.push(line);
    }

    fn status(&mut self, s: Status) {
        if s != self.led.status() {
            self.say(format!("status LED: {s:?}"));
        }
        let _ = self.led.set(s);
    }

    pub fn led_status(&self) -> Status {
        self.led.status()
    }

    /// Writes updates through `fs` from now on (tests: a full disk, a failing step).
    pub fn write_through(&mut self, fs: Box<dyn DurableFs>) {
        self.fs = fs;
    }

    /// Prints each classification result on stdout as `format` says.
    pub fn print_results(&mut self, format: ResultFormat) {
        self.results = format;
    }

    /// What the inbox did since the start.
    pub fn inbox_counts(&self) -> InboxCounts {
        self.counts
    }

    /// Inbox entries the last scan left waiting: incomplete, or not applicable now (another
    /// writer at work, a full disk, an update pending its commit), or skipped until they change.
    pub fn inbox_waiting(&self) -> usize {
        self.inbox_waiting
    }

    /// Classifies image files with one consistent set of modules; any unreadable file is an error.
    pub fn classify_files(&mut self, files: &[PathBuf]) -> Result<Vec<Verdict>> {
        let (verdicts, unreadable) = self.classify_readable(files)?;
        match unreadable.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(verdicts),
        }
    }

    /// [`Edge::classify_files`] for a device with more to do (a watched directory, an inbox, a
    /// trigger): an unreadable file is said and skipped, never the end of the device.
    pub fn classify_files_skipping_unreadable(&mut self, files: &[PathBuf]) -> Result<Vec<Verdict>> {
        let (verdicts, unreadable) = self.classify_readable(files)?;
        for (f, e) in &unreadable {
            self.say(format!("{}: unreadable, not classified: {e:#}", file_name(f)));
        }
        Ok(verdicts)
    }

    /// Classifies the readable ones of `files` in one batch with one consistent set of modules;
    /// returns the verdicts and the files that could not be read, each with why.
    fn classify_readable(&mut self, files: &[PathBuf]) -> Result<(Vec<Verdict>, Vec<Unreadable>)> {
        let spec = self.runtime.snapshot().input_spec().ok_or(Error::NoClassesLoaded)?.clone();
        let mut px = Vec::with_capacity(files.len() * spec.image_len());
        let (mut readable, mut unreadable) = (Vec::new(), Vec::new());
        for f in files {
            match pixels(f, &spec, ImageLimits::of(self.board)) {
                Ok(p) => {
                    px.extend(p);
                    readable.push(f.clone());
                }
                Err(e) => unreadable.push((f.clone(), e)),
            }
        }
        Ok((self.classify_pixels(&readable, &px)?, unreadable))
    }

    /// Classifies the images `files` decoded to (`px`, one after the other) in one batch with
    /// one consistent set of modules, and says each verdict.
    fn classify_pixels(&mut self, files: &[PathBuf], px: &[u8]) -> Result<Vec<Verdict>> {
        if files.is_empty() {
            return Ok(vec![]);
        }
        let snap = self.runtime.snapshot();
        let t = Instant::now();
        let config = self.runtime.config();
        let r = snap.classify(px, config.rule, config.min_score)?;
        let latency_ms = t.elapsed().as_secs_f64() * 1e3 / files.len() as f64;
        let verdicts: Vec<Verdict> = files
            .iter()
            .zip(r.predictions.iter().zip(&r.scores))
            .map(|(f, (&p, s))| Verdict {
                file: f.clone(),
                class: p.map(|p| r.classes[p].clone()),
                score: p.map_or_else(|| s.iter().copied().fold(0.0, f32::max), |p| s[p]),
                generation: r.generation,
                latency_ms,
            })
            .collect();
        for v in &verdicts {
            let answer = match &v.class {
                Some(class) => format!("{class} ({:.3})", v.score),
                None => format!("none (best score {:.3})", v.score),
            };
            self.say(format!("{}: {answer} [classes {}]", file_name(&v.file), r.classes.join(", ")));
            match self.results {
                ResultFormat::LogOnly => {}
                ResultFormat::Lines => println!("{}", v.line()),
                ResultFormat::JsonLines => println!("{}", v.json()),
            }
        }
        Ok(verdicts)
    }

    /// Polls the trigger once and serves what it found ([`Edge::serve_trigger`]).
    pub fn poll_trigger<I: InputPin>(&mut self, trigger: &mut TriggerSampler<I>) -> Result<Option<Verdict>> {
        match trigger.sample() {
            Some(event) => self.serve_trigger(event),
            None => Ok(None),
        }
    }

    /// Serves what the trigger did: a press classifies the frame it captured (the image a camera
    /// keeps current, as it was at the press); a frame that cannot be read or decoded is logged
    /// and shows the error pattern, and the next good frame restores serving. A trigger input that
    /// cannot be read (a value file replaced by a directory or made unreadable) is said, and when
    /// it can be read again: it never stops the device's other work.
    pub fn serve_trigger(&mut self, event: TriggerEvent) -> Result<Option<Verdict>> {
        let press = match event {
            TriggerEvent::Fault(why) => {
                self.say(format!("trigger input failed, read as not pressed until it can be read: {why}"));
                return Ok(None);
            }
            TriggerEvent::Readable => {
                self.say("trigger input: readable again".to_string());
                return Ok(None);
            }
            TriggerEvent::Pressed(press) => press,
        };
        if press.missed > 0 {
            self.say(format!(
                "trigger: {} press(es) not served: {} were waiting already, the device busy",
                press.missed,
                trigger_watch::PRESS_QUEUE
            ));
        }
        // Served later than pressed: the device was busy (a batch of watched images, an update).
        let waited = press.at.elapsed();
        let late = if waited.as_millis() >= 100 {
            format!(" (pressed {:.2} s ago)", waited.as_secs_f64())
        } else {
            String::new()
        };
        self.say(format!("trigger: classifying {}{late}", press.frame.display()));
        let spec = self.runtime.snapshot().input_spec().ok_or(Error::NoClassesLoaded)?.clone();
        let decoded = press
            .bytes
            .map_err(|e| anyhow!(e))
            .and_then(|bytes| image_input::decode(&bytes, &press.frame, &spec, ImageLimits::of(self.board)));
        let px = match decoded {
            Ok(px) => px,
            Err(e) => {
                self.say(format!("trigger: frame unreadable, nothing classified: {e:#}"));
                self.status(Status::Error);
                return Ok(None);
            }
        };
        let mut verdicts = self.classify_pixels(std::slice::from_ref(&press.frame), &px)?;
        self.status(Status::Serving);
        Ok(verdicts.pop())
    }

    /// Applies every complete `*.blob` in `inbox` (bases first), moving each to `done/` (applied,
    /// or already applied) or `rejected/` (refused, with the reason logged); entries still being
    /// written and those that fail for a reason that can pass stay for the next scan (see
    /// `inbox.rs`). No entry stops the device. Returns how many changed the device (added or
    /// updated; [`Edge::inbox_counts`] has every outcome).
    pub fn process_inbox(&mut self, dir: &Path) -> Result<usize> {
        self.inbox_waiting = 0;
        let Some(entries) = self.entries(dir, |name| !inbox::ignored(name)) else { return Ok(0) };
        self.inbox_waiting = self.noted.skipped_in(dir);
        // Bases sort first, so modules of a new base find it.
        let mut files: Vec<(Option<UpdateKind>, PathBuf)> =
            entries.into_iter().map(|p| (inbox::peek_kind(&p), p)).collect();
        files.sort();
        let mut applied = 0;
        for (_, path) in files {
            let name = file_name(&path);
            let scratch = self.runtime.dir().join(inbox::SCRATCH_FILE);
            // Before the look: what a writer adds while it is examined is a change to look at.
            let seen = inbox::Stamp::of(&path);
            let blob = match inbox::examine(&path, u64::from(self.board.max_update_mib) << 20, &scratch) {
                inbox::Entry::Ready(_, mapped) => mapped,
                inbox::Entry::Gone => continue,
                inbox::Entry::Incomplete { have, want } => {
                    let want = want.map_or("a header".to_string(), |w| format!("{w} bytes"));
                    self.say_once(
                        &path,
                        format!("update {name}: incomplete ({have} bytes of {want}), waiting for the rest"),
                    );
                    self.noted.skip_until_changed(&path, seen);
                    self.inbox_waiting += 1;
                    continue;
                }
                inbox::Entry::Retry(why) => {
                    self.say_once(&path, format!("update {name}: cannot be read now ({why}), will retry"));
                    self.inbox_waiting += 1;
                    continue;
                }
                inbox::Entry::Refused(why) => {
                    self.counts.refused += 1;
                    self.say(format!("update {name} REFUSED, nothing changed: it {why}"));
                    self.set_aside(dir, &path, "rejected");
                    self.status(Status::Error);
                    continue;
                }
            };
            self.status(Status::Updating);
            let applied_now = self.apply(blob.bytes());
            drop(blob);
            let _ = std::fs::remove_file(&scratch);
            match applied_now {
                Ok((msg, outcome)) => {
                    self.say(format!("update {name}: {msg}"));
                    match outcome {
                        Outcome::Added => self.counts.added += 1,
                        Outcome::Updated => self.counts.updated += 1,
                        Outcome::AlreadyPresent => self.counts.already_present += 1,
                    }
                    applied += usize::from(outcome != Outcome::AlreadyPresent);
                    self.set_aside(dir, &path, "done");
                    self.status(Status::Serving);
                }
                // Delivered again (or applied before a crash cut the move to `done/`).
                // A crash after the commit can also have cut --serve-new's load: done now.
                Err(e) if e.kind() == ErrorKind::AlreadyDone => {
                    let (what, served) = match &e {
                        Error::AlreadyInstalled { class } => {
                            (format!("class `{class}` runs this module"), self.serve_added(class))
                        }
                        other => (other.to_string(), String::new()),
                    };
                    self.counts.already_present += 1;
                    self.say(format!("update {name}: already applied ({what}){served}"));
                    self.set_aside(dir, &path, "done");
                    self.status(Status::Serving);
                }
                // A Mender update waits for its commit or rollback: this one after it.
                Err(e) if e.kind() == ErrorKind::Busy => {
                    self.say_once(&path, format!("update {name}: waits ({e}), will retry"));
                    self.inbox_waiting += 1;
                    self.status(Status::Serving);
                }
                // A fault of the device (a full disk, its manifest unreadable for a moment, a
                // file it cannot write) is not the update's: it stays, and is tried again.
                Err(e) if matches!(e.kind(), ErrorKind::Transient | ErrorKind::Environment) => {
                    self.say_once(&path, format!("update {name}: cannot be applied now ({e}), will retry"));
                    self.inbox_waiting += 1;
                    self.status(Status::Serving);
                }
                Err(e) => {
                    let hint = match e {
                        Error::Downgrade { .. } => " (start with --allow-downgrade to accept it)",
                        _ => "",
                    };
                    self.counts.refused += 1;
                    self.say(format!("update {name} REFUSED, nothing changed: {e}{hint}"));
                    self.set_aside(dir, &path, "rejected");
                    self.status(Status::Error);
                }
            }
        }
        Ok(applied)
    }

    /// Takes up a manifest another writer of the directory committed (the Mender update module
    /// installing, committing or rolling back an artifact): served classes whose module changed
    /// are swapped in one snapshot, without a restart and between two classifications; classes
    /// an update recorded as added are loaded. Returns whether anything served changed.
    pub fn follow_manifest(&mut self) -> Result<bool> {
        if self.clean_deferred {
            self.clean_leftovers();
        }
        let followed = match self.runtime.follow() {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(false),
            Err(e) => {
                let dir = self.runtime.dir().to_path_buf();
                self.say_once(&dir, format!("manifest: cannot be followed now ({e}), will retry"));
                return Ok(false);
            }
        };
        let pending =
            followed.pending.as_deref().map_or(String::new(), |id| format!(" (update {id}, not yet committed)"));
        if !followed.swapped.is_empty() {
            self.say(format!(
                "manifest changed: now serving the new module of {}{pending}",
                followed.swapped.join(", ")
            ));
        }
        if !followed.dropped.is_empty() {
            self.say(format!(
                "manifest changed: {} no longer in the directory, not served",
                followed.dropped.join(", ")
            ));
        }
        if !followed.kept.is_empty() {
            self.say(format!(
                "manifest changed: {} no longer in the directory, but still served: {} all this device served \
                 (an update adding a class, or a restart with classes the directory has, changes that)",
                followed.kept.join(", "),
                if followed.kept.len() == 1 { "it was" } else { "they were" }
            ));
        }
        if !followed.marks_kept.is_empty() {
            let marks: Vec<String> = followed.marks_kept.iter().map(|(c, v)| format!("{c} at release {v}")).collect();
            self.say(format!(
                "manifest changed: it lowers downgrade marks, kept ({}): older releases stay refused \
                 (start with --allow-downgrade to accept them)",
                marks.join(", ")
            ));
        }
        for (class, why) in &followed.failed {
            self.say(format!(
                "manifest changed: the new module of `{class}` cannot be served ({why}); the old one serves on"
            ));
        }
        let mut loaded = false;
        if !self.classes_only {
            for class in &followed.newly_added {
                match self.runtime.load(class) {
                    Ok(_) => {
                        loaded = true;
                        self.say(format!("manifest changed: `{class}` added by an update, now served{pending}"));
                    }
                    Err(e) => self.say(format!("manifest changed: `{class}` added by an update cannot be served: {e}")),
                }
            }
        }
        Ok(loaded || !followed.is_quiet())
    }

    /// The update transaction on one blob; what to log when it committed, and what it was.
    fn apply(&mut self, bytes: &[u8]) -> classmod_runtime::Result<(String, Outcome)> {
        Ok(match self.runtime.apply_update(self.fs.as_mut(), bytes)? {
            Applied::Module(r) => match &r.previous {
                Some(p) => {
                    (format!("class `{}` updated to {} (rollback copy {p})", r.class_name, r.file), Outcome::Updated)
                }
                None => {
                    let served = self.serve_added(&r.class_name);
                    (format!("class `{}` added as {}{served}", r.class_name, r.file), Outcome::Added)
                }
            },
            Applied::Base { file, new: true } => (format!("base model added as {file}"), Outcome::Added),
            Applied::Base { file, new: false } => {
                (format!("base model already present ({file})"), Outcome::AlreadyPresent)
            }
        })
    }

    /// With --serve-new, serves `class`, which an update added, and records it for restarts;
    /// what to add to the update's log line. The update is committed whatever happens here: a
    /// class that cannot be served is said so.
    fn serve_added(&mut self, class: &str) -> String {
        if !self.serve_new || self.runtime.serves(class) {
            return String::new();
        }
        if let Err(e) = self.runtime.load(class) {
            return format!(", but it cannot be served: {e}");
        }
        match self.runtime.note_added_class(self.fs.as_mut(), class) {
            Ok(()) => ", now served".into(),
            Err(e) => format!(", now served (not recorded for restarts: {e})"),
        }
    }

    /// The entries of `dir` whose names `wanted` takes (files or not: the caller looks at each),
    /// less those noted to skip; `None` (logged once) when `dir` cannot be listed.
    fn entries(&mut self, dir: &Path, wanted: impl Fn(&std::ffi::OsStr) -> bool) -> Option<Vec<PathBuf>> {
        let listing = match std::fs::read_dir(dir) {
            Ok(l) => l,
            Err(e) => {
                self.say_once(
                    dir,
                    format!("{}: cannot be listed ({e}), will retry", inbox::loggable(&dir.display().to_string())),
                );
                return None;
            }
        };
        // An entry that cannot be read from the listing is looked at on the next scan.
        let listed: std::collections::HashSet<PathBuf> = listing.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        self.noted.retain_listed(dir, &listed);
        let wanted = listed.into_iter().filter(|p| p.file_name().is_some_and(&wanted));
        Some(wanted.filter(|p| !self.noted.skipped(p)).collect())
    }

    /// Moves an entry of `dir` into `dir/<dest>/`; when it cannot be, says why once and leaves
    /// it, skipped until it changes. An entry its writer removed meanwhile is nothing to say.
    fn set_aside(&mut self, dir: &Path, path: &Path, dest: &str) {
        if let Err(e) = inbox::move_into(dir, dest, path) {
            if e.kind() == std::io::ErrorKind::NotFound && std::fs::symlink_metadata(path).is_err() {
                return;
            }
            let name = file_name(path);
            self.say_once(path, format!("{name}: cannot be moved to {dest}/ ({e}), left where it is"));
            // A move that failed fails whatever the entry holds: skipped as it is now.
            self.noted.skip_until_changed(path, inbox::Stamp::of(path));
        }
    }

    /// Logs `line` unless it is what was last said about `path`.
    fn say_once(&mut self, path: &Path, line: String) {
        if self.noted.fresh(path, &line) {
            self.say(line);
        }
    }

    /// Classifies the image files in `dir` (not in sub-directories), at most the board's
    /// `watch_batch` of them, in name order, moving them to `dir/done/`, or to `dir/rejected/`
    /// when they cannot be read; [`Edge::watch_backlog`] says whether more are waiting. Producers
    /// should write elsewhere and rename into `dir`, so that no half-written image is seen.
    pub fn process_watch(&mut self, dir: &Path) -> Result<Vec<Verdict>> {
        let image = |name: &std::ffi::OsStr| {
            let name = name.to_string_lossy().to_lowercase();
            !name.starts_with('.') && [".png", ".jpg", ".jpeg"].iter().any(|x| name.ends_with(x))
        };
        let Some(entries) = self.entries(dir, image) else { return Ok(vec![]) };
        let mut files: Vec<PathBuf> = entries.into_iter().filter(|p| p.is_file()).collect();
        files.sort();
        // A bounded batch: a backlog of thousands costs one batch of memory, and the trigger and
        // the inbox are served between batches.
        let batch = (self.board.watch_batch as usize).max(1);
        self.watch_backlog = files.len() > batch;
        files.truncate(batch);
        if files.is_empty() {
            return Ok(vec![]);
        }
        let (verdicts, unreadable) = self.classify_readable(&files)?;
        for (f, e) in &unreadable {
            self.say(format!("{}: unreadable, moved to rejected/: {e:#}", file_name(f)));
        }
        let rejected: Vec<&PathBuf> = unreadable.iter().map(|(f, _)| f).collect();
        for f in &files {
            self.set_aside(dir, f, if rejected.contains(&f) { "rejected" } else { "done" });
        }
        Ok(verdicts)
    }

    /// Whether the last [`Edge::process_watch`] left images for another batch.
    pub fn watch_backlog(&self) -> bool {
        self.watch_backlog
    }

    /// Advances the LED pattern by `ms`.
    pub fn tick(&mut self, ms: u32) {
        let _ = self.led.step(ms);
    }
}

/// A file's name as the log shows it (control characters escaped).
fn file_name(path: &Path) -> String {
    inbox::loggable(&path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()))
}

/// Refuses an inbox or watched directory that is the device directory or inside it: the device
/// would move its own base and modules into `done/` and `rejected/`. `what` names the option.
pub fn check_outside(device_dir: &Path, dir: &Path, what: &str) -> Result<()> {
    let canonical = |p: &Path| std::fs::canonicalize(p).map_err(|e| anyhow!("{}: {e}", p.display()));
    let (device, other) = (canonical(device_dir)?, canonical(dir)?);
    if other.starts_with(&device) {
        return Err(anyhow!(
            "{what} {} is {} {}: give it a directory of its own, nothing was moved",
            dir.display(),
            if other == device { "the device directory" } else { "inside the device directory" },
            device_dir.display()
        ));
    }
    Ok(())
}
