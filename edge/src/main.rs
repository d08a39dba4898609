//! `classmod-edge`: serve class modules on a device.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use clap::Parser;
use classmod_boards::{BoardProfile, Trigger};
use classmod_edge::pins::{LedPin, TriggerPin, ValueFilePin};
use classmod_edge::{DeviceChoice, Edge, EdgeOptions, LogPin, ResultFormat, TriggerSampler, TriggerWatch};
use classmod_runtime::{parse_public_key, MinScore, Precision};

#[derive(Parser)]
#[command(name = "classmod-edge", version, about = "Serve classmod class modules on a device")]
struct Args {
    /// Packed directory (`classmod pack`): manifest.json and blobs.
    dir: PathBuf,
    /// Classes to serve, comma-separated. Classes that updates added while running with
    /// --serve-new are recorded in the directory's manifest and served too, after a restart as
    /// before it; --classes-only serves exactly these and forgets the added ones. A class that
    /// cannot be served (not in the directory, a module failing its checks) is warned about and
    /// the others serve; when none can be, the program exits 4.
    #[arg(long, value_delimiter = ',', required = true)]
    classes: Vec<String>,
    /// Serve exactly --classes: forget the classes updates added (their modules stay).
    #[arg(long)]
    classes_only: bool,
    /// Board profile name (default: detected from /proc/device-tree/model).
    #[arg(long)]
    board: Option<String>,
    /// Where to compute: `auto` is the board's CUDA GPU when it has one and this build has the
    /// `cuda` feature, else the CPU.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
    /// What the GPU computes in: `auto` is f16 where the board's profile has it (Xavier NX, Orin),
    /// else f32. The CPU computes in f32 only (f16 there is refused, exit 2).
    #[arg(long, value_enum, default_value = "auto")]
    precision: PrecisionArg,
    /// Only accept blobs signed by this public key (`classmod keygen`).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Refuse to start without --key (a production device never accepts unsigned blobs).
    #[arg(long)]
    require_key: bool,
    /// Print each result on stdout as a JSON line (file, class or null, score, latency_ms,
    /// generation) instead of a tab-separated line (file, class or `none`, score, latency ms).
    /// The log goes to stderr either way.
    #[arg(long)]
    json: bool,
    /// Image files to classify at start.
    #[arg(long, num_args = 1..)]
    images: Vec<PathBuf>,
    /// Classify images dropped into this directory.
    #[arg(long)]
    watch: Option<PathBuf>,
    /// Apply module and base blobs dropped into this directory (not the packed directory nor
    /// inside it). Write each blob elsewhere and rename it in as NAME.blob, or write it in place:
    /// a blob shorter than its header says is waited for; names starting with `.` or ending in
    /// `.tmp` or `.part` are ignored. Applied blobs move to done/, refused ones to rejected/.
    #[arg(long)]
    inbox: Option<PathBuf>,
    /// Serve classes that an update adds, now and after restarts (recorded in the manifest).
    #[arg(long)]
    serve_new: bool,
    /// Accept a module update older than the newest release of its class this device has
    /// committed (refused by default: a replayed old module is a downgrade attack). The class's
    /// mark then starts again from the version accepted.
    #[arg(long)]
    allow_downgrade: bool,
    /// The score a module must reach to claim an image: `calibrated` (each module's own, set
    /// when it was packed so that 95 % of its class's held-out images reach it), `off` (every
    /// image is one of the served classes) or a score in [0, 1]. Below it on every served module
    /// the answer is `none`.
    #[arg(long, default_value = "calibrated")]
    min_score: MinScore,
    /// The image classified on each trigger edge (the frame a camera keeps current).
    #[arg(long, requires = "trigger")]
    frame: Option<PathBuf>,
    /// The trigger is a value file: `1` is high (sysfs GPIO's `value`, or any file a script writes).
    #[arg(long, group = "trigger", requires = "frame")]
    trigger_file: Option<PathBuf>,
    /// The trigger is a GPIO line: the board's (header pin 18) without a value, or CHIP:LINE
    /// (`/dev/gpiochip0:125`, `tegra234-gpio:125`). Needs the `linux` feature.
    #[arg(long, group = "trigger", requires = "frame", num_args = 0..=1, default_missing_value = "board")]
    trigger_gpio: Option<String>,
    /// Polls the trigger level must hold to count (10 ms apart).
    #[arg(long, default_value_t = 3)]
    debounce: u8,
    /// Drive a status LED on a GPIO line: the board's (header pin 12) without a value, or
    /// CHIP:LINE. Needs the `linux` feature. Without it the log tells the LED's state.
    #[arg(long, num_args = 0..=1, default_missing_value = "board")]
    led_gpio: Option<String>,
    /// Process the images, the inbox and the watched directory once (all its images, batch by
    /// batch), then exit (the trigger is not waited for): 0, 3 when an update was refused, 5
    /// when inbox entries wait (incomplete, or not applicable now).
    #[arg(long)]
    once: bool,
    /// Exit after this many trigger classifications.
    #[arg(long)]
    max_triggers: Option<u64>,
    /// How often the inbox and the watched directory are scanned.
    #[arg(long, default_value_t = 500)]
    poll_ms: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PrecisionArg {
    Auto,
    F32,
    F16,
    Bf16,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DeviceArg {
    Auto,
    Cpu,
    Cuda,
}

/// The trigger and LED are polled and stepped this often.
const TICK: Duration = Duration::from_millis(10);

/// `--once` exit code when an update was refused (2 is an error that stops the program).
const REFUSED_EXIT: u8 = 3;

/// `--once` exit code when nothing was refused but inbox entries wait (incomplete, or not
/// applicable now): a script's cue to run again, where 0 said all was done.
const WAITING_EXIT: u8 = 5;

fn run(a: Args) -> Result<ExitCode> {
    if a.require_key && a.key.is_none() {
        return Err(anyhow!("--require-key: no --key given, and this device accepts signed blobs only"));
    }
    let key = match &a.key {
        Some(p) => Some(
            parse_public_key(&classmod_runtime::io::regular::read_to_string(p, 1 << 16)?)
                .map_err(|e| anyhow!("{}: {e}", p.display()))?,
        ),
        None => None,
    };
    // The board decides the default GPIO lines, so it is known before the pins are opened.
    let model = std::fs::read_to_string("/proc/device-tree/model").ok();
    let (board, _) =
        classmod_boards::detect(a.board.as_deref(), model.as_deref()).map_err(|n| anyhow!("unknown board `{n}`"))?;
    let led = match &a.led_gpio {
        Some(spec) => gpio_led(spec, board)?,
        None => LedPin::Log(LogPin::default()),
    };
    let pin = match (&a.trigger_file, &a.trigger_gpio) {
        (Some(path), _) => {
            let pin = ValueFilePin { path: path.clone() };
            if !pin.exists() {
                eprintln!(
                    "classmod-edge: warning: trigger file {} does not exist: it reads as not pressed until it does",
                    path.display()
                );
            }
            Some(TriggerPin::File(pin))
        }
        (None, Some(spec)) => Some(gpio_trigger(spec, board)?),
        (None, None) => None,
    };
    // A trigger that cannot be read at the start is not a reason to stop serving: it starts low,
    // and the trigger's thread says why it fails while it does.
    let trigger = match (pin, &a.frame) {
        (Some(pin), Some(frame)) => {
            let (trigger, error) = Trigger::new_or_low(pin, a.debounce);
            if let Some(e) = error {
                eprintln!(
                    "classmod-edge: warning: trigger input cannot be read ({e}): read as not pressed until it can"
                );
            }
            // Polled on a thread of its own, so that a press is seen while a batch is classified.
            let sampler = TriggerSampler::new(trigger, frame, u64::from(board.max_image_mib) << 20);
            Some(TriggerWatch::spawn(sampler, TICK).map_err(|e| anyhow!("trigger thread: {e}"))?)
        }
        _ => None,
    };
    let opts = EdgeOptions {
        dir: a.dir.clone(),
        classes: a.classes.clone(),
        board: a.board.clone(),
        key,
        serve_new: a.serve_new,
        classes_only: a.classes_only,
        device: match a.device {
            DeviceArg::Auto => DeviceChoice::Auto,
            DeviceArg::Cpu => DeviceChoice::Cpu,
            DeviceArg::Cuda => DeviceChoice::Cuda,
        },
        precision: match a.precision {
            PrecisionArg::Auto => None,
            PrecisionArg::F32 => Some(Precision::F32),
            PrecisionArg::F16 => Some(Precision::F16),
            PrecisionArg::Bf16 => Some(Precision::Bf16),
        },
        min_score: a.min_score,
        allow_downgrade: a.allow_downgrade,
    };
    // An inbox or watched directory of the device's own files would move them away: refused
    // before anything is opened. A missing one is made (its producers may not have run yet).
    for (dir, what) in [(&a.inbox, "--inbox"), (&a.watch, "--watch")] {
        if let Some(d) = dir {
            std::fs::create_dir_all(d).map_err(|e| anyhow!("{what} {}: {e}", d.display()))?;
            classmod_edge::check_outside(&a.dir, d, what)?;
        }
    }
    let idle = a.images.is_empty() && a.watch.is_none() && a.inbox.is_none() && trigger.is_none();
    let mut edge = Edge::start(opts, led)?;
    edge.print_results(if a.json { ResultFormat::JsonLines } else { ResultFormat::Lines });
    if idle {
        // Nothing would ever reach the device: say so rather than idle for good.
        eprintln!("classmod-edge: nothing to do (no --images, --watch, --inbox or trigger): exiting");
        return Ok(ExitCode::SUCCESS);
    }
    if !a.images.is_empty() {
        if a.watch.is_some() || a.inbox.is_some() || trigger.is_some() {
            // A device with more to do: one bad file given at start never ends it.
            edge.classify_files_skipping_unreadable(&a.images)?;
        } else {
            edge.classify_files(&a.images)?;
        }
    }
    let (mut triggered, mut last_scan) = (0u64, None::<Instant>);
    loop {
        if last_scan.is_none_or(|t| t.elapsed() >= Duration::from_millis(a.poll_ms)) {
            last_scan = Some(Instant::now());
            // What the Mender update module (or any other writer) committed since.
            edge.follow_manifest()?;
            if let Some(inbox) = &a.inbox {
                edge.process_inbox(inbox)?;
            }
            if let Some(watch) = &a.watch {
                edge.process_watch(watch)?;
            }
        } else if let (true, Some(watch)) = (edge.watch_backlog(), &a.watch) {
            // A backlog is worked off batch by batch, one per tick, the trigger's presses served between.
            edge.process_watch(watch)?;
        }
        if a.once && !edge.watch_backlog() {
            let (c, waiting) = (edge.inbox_counts(), edge.inbox_waiting());
            if a.inbox.is_some() {
                eprintln!(
                    "classmod-edge: inbox: {} added, {} updated, {} already present, {} refused, {waiting} waiting",
                    c.added, c.updated, c.already_present, c.refused
                );
            }
            return Ok(if c.refused > 0 {
                ExitCode::from(REFUSED_EXIT)
            } else if waiting > 0 {
                eprintln!(
                    "classmod-edge: {waiting} inbox entr{} not applied yet (incomplete, or not applicable now: see the log); run again later",
                    if waiting == 1 { "y" } else { "ies" }
                );
                ExitCode::from(WAITING_EXIT)
            } else {
                ExitCode::SUCCESS
            });
        }
        // Presses the trigger's thread saw since, each with its frame as it was then.
        while let Some(event) = trigger.as_ref().and_then(|t| t.try_next()) {
            if edge.serve_trigger(event)?.is_some() {
                triggered += 1;
            }
            if a.max_triggers.is_some_and(|n| triggered >= n) {
                return Ok(ExitCode::SUCCESS);
            }
        }
        std::thread::sleep(TICK);
        edge.tick(TICK.as_millis() as u32);
    }
}

#[cfg(feature = "linux")]
fn gpio_line(spec: &str, board_line: Option<classmod_boards::GpioLine>, what: &str) -> Result<(String, u32)> {
    if spec == "board" {
        let l = board_line.ok_or_else(|| anyhow!("this board profile has no {what} line: give CHIP:LINE"))?;
        return Ok((l.chip_label.to_string(), l.line));
    }
    Ok(classmod_edge::pins::parse_line(spec)?)
}

#[cfg(feature = "linux")]
fn gpio_led(spec: &str, board: &BoardProfile) -> Result<LedPin> {
    let (chip, line) = gpio_line(spec, board.status_led, "status LED")?;
    let pin = classmod_boards::linux::output_pin(&chip, line).map_err(|e| anyhow!("status LED {chip}:{line}: {e}"))?;
    Ok(LedPin::Gpio(pin))
}

#[cfg(feature = "linux")]
fn gpio_trigger(spec: &str, board: &BoardProfile) -> Result<TriggerPin> {
    let (chip, line) = gpio_line(spec, board.trigger, "trigger")?;
    let pin = classmod_boards::linux::input_pin(&chip, line).map_err(|e| anyhow!("trigger {chip}:{line}: {e}"))?;
    Ok(TriggerPin::Gpio(pin))
}

#[cfg(not(feature = "linux"))]
fn gpio_led(_: &str, _: &BoardProfile) -> Result<LedPin> {
    Err(anyhow!("--led-gpio needs GPIO support: rebuild with `--features linux`"))
}

#[cfg(not(feature = "linux"))]
fn gpio_trigger(_: &str, _: &BoardProfile) -> Result<TriggerPin> {
    Err(anyhow!("--trigger-gpio needs GPIO support: rebuild with `--features linux` (or use --trigger-file)"))
}

/// Exit code when none of the classes can be served (the unit does not restart on it).
const NOTHING_TO_SERVE_EXIT: u8 = 4;

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            let code = if e.is::<classmod_edge::NothingToServe>() { NOTHING_TO_SERVE_EXIT } else { 2 };
            for line in format!("{e:#}").lines() {
                eprintln!("classmod-edge: {line}");
            }
            ExitCode::from(code)
        }
    }
}
