//! Progress bars for long work. On a terminal they draw on stderr as bars; when stderr is not a
//! terminal (CI, pipes, `tee` into a log) the same bar becomes a plain line every few seconds,
//! so a log of a long run is not minutes of silence, and a run shorter than that prints nothing
//! (a failing command keeps its one error line). `--json` output is on stdout, untouched.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle, TermLike};

/// How often a bar prints a plain line when stderr is not a terminal.
pub const PLAIN_INTERVAL: Duration = Duration::from_secs(5);

/// A bar over `len` units (images, steps) with a rate and the time left; `len` 0 for work of
/// unknown length (a count and a rate), which can learn its length later (`set_length`). On a
/// terminal a bar is drawn; in a log each line reads e.g. `compact 10840/22500, 15.5/s, 12 min
/// left`.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let terminal = std::io::stderr().is_terminal();
    let pb = if terminal {
        ProgressBar::new(len)
    } else {
        let lines = PlainLines::new(Box::new(std::io::stderr()), PLAIN_INTERVAL);
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::term_like_with_hz(Box::new(lines), 1))
    };
    pb.set_style(style(terminal));
    pb.set_prefix(what.to_string());
    pb
}

/// The length once it is known (a bar made with 0 learns it later).
fn known_len(s: &ProgressState) -> Option<u64> {
    s.len().filter(|&l| l > 0)
}

/// The style of [`bar`]: each part renders from the bar's state when it is drawn, so a length
/// set after the bar was made shows at once.
fn style(terminal: bool) -> ProgressStyle {
    let template = if terminal {
        "{prefix:>10} {gauge}{count}, {rate}{left} {msg}"
    } else {
        "{prefix} {count}, {rate}{left} {msg}"
    };
    ProgressStyle::with_template(template)
        .expect("static template")
        .with_key("gauge", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            if let Some(len) = known_len(s) {
                let full = (40 * s.pos().min(len) / len) as usize;
                let _ = write!(w, "[{}{}] ", "=".repeat(full), " ".repeat(40 - full));
            }
        })
        .with_key("count", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = match known_len(s) {
                Some(len) => write!(w, "{}/{len}", s.pos()),
                None => write!(w, "{}", s.pos()),
            };
        })
        .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.1}/s", s.per_sec());
        })
        .with_key("left", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            if let Some(len) = known_len(s) {
                if s.pos() > 0 && s.pos() < len {
                    let _ = write!(w, ", {} left", time_left(s.eta()));
                }
            }
        })
}

/// A duration as a person reads a time left: `40 s`, `12 min`, `2 h 05 min`.
fn time_left(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..90 => format!("{s} s"),
        90..5400 => format!("{} min", (s + 30) / 60),
        _ => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

/// A draw target that keeps the bar's latest line and writes it as a plain line once per
/// `interval`; the last state is written when the bar goes away, if the work lasted that long.
struct PlainLines {
    state: Mutex<PlainState>,
    interval: Duration,
}

struct PlainState {
    out: Box<dyn Write + Send>,
    started: Instant,
    printed: Option<Instant>,
    line: String,
    dirty: bool,
}

impl PlainLines {
    fn new(out: Box<dyn Write + Send>, interval: Duration) -> Self {
        let now = Instant::now();
        PlainLines {
            state: Mutex::new(PlainState { out, started: now, printed: None, line: String::new(), dirty: false }),
            interval,
        }
    }

    fn keep(&self, s: &str) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let s = s.trim_end();
        if !s.is_empty() && s != st.line {
            st.line = s.to_string();
            st.dirty = true;
        }
    }
}

impl PlainState {
    fn print(&mut self, now: Instant) {
        // A log line that cannot be written is not worth failing the work for.
        let _ = writeln!(self.out, "{}", self.line);
        let _ = self.out.flush();
        self.printed = Some(now);
        self.dirty = false;
    }
}

impl std::fmt::Debug for PlainLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainLines").field("interval", &self.interval).finish_non_exhaustive()
    }
}

impl TermLike for PlainLines {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.keep(s);
        Ok(())
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.keep(s);
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let since = now.duration_since(st.printed.unwrap_or(st.started));
        if st.dirty && since >= self.interval {
            st.print(now);
        }
        Ok(())
    }
}

impl Drop for PlainLines {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if st.dirty && st.started.elapsed() >= self.interval {
            st.print(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A writer the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap().lines().map(String::from).collect()
        }
    }

    fn bar_on(out: &Captured, interval: Duration) -> ProgressBar {
        let lines = PlainLines::new(Box::new(out.clone()), interval);
        let pb = ProgressBar::with_draw_target(Some(10), ProgressDrawTarget::term_like(Box::new(lines)));
        pb.set_style(ProgressStyle::with_template("{prefix} {pos}/{len}").unwrap());
        pb.set_prefix("eval");
        pb
    }

    /// A log line names the total and the time left, also when the length was learnt after the
    /// bar was made; work of unknown length is a count and a rate.
    #[test]
    fn plain_lines_carry_the_total_and_the_time_left() {
        let out = Captured::default();
        let lines = PlainLines::new(Box::new(out.clone()), Duration::ZERO);
        let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::term_like(Box::new(lines)));
        pb.set_style(style(false));
        pb.set_prefix("compact");
        pb.inc(3);
        std::thread::sleep(Duration::from_millis(60));
        pb.set_length(22_500);
        for _ in 0..3 {
            pb.inc(100);
            std::thread::sleep(Duration::from_millis(60));
        }
        drop(pb);
        let lines = out.lines();
        assert!(lines.iter().any(|l| l.starts_with("compact 3, ") && l.ends_with("/s")), "{lines:?}");
        let last = lines.last().expect("lines");
        assert!(last.starts_with("compact 303/22500, ") && last.ends_with(" left"), "{lines:?}");
        assert_eq!([time_left(Duration::from_secs(40)), time_left(Duration::from_secs(725))], ["40 s", "12 min"]);
        assert_eq!(time_left(Duration::from_secs(7500)), "2 h 05 min");
    }

    #[test]
    fn plain_lines_are_throttled_and_short_work_prints_nothing() {
        // A long interval: work that ends sooner prints nothing at all.
        let quiet = Captured::default();
        let pb = bar_on(&quiet, Duration::from_secs(3600));
        for _ in 0..10 {
            pb.inc(1);
        }
        pb.finish();
        drop(pb);
        assert!(quiet.lines().is_empty(), "{:?}", quiet.lines());

        // No interval: each new state is one plain line, no control characters, the last one
        // the finished state.
        let chatty = Captured::default();
        let pb = bar_on(&chatty, Duration::ZERO);
        for _ in 0..10 {
            pb.inc(1);
            std::thread::sleep(Duration::from_millis(60)); // past indicatif's own 20 Hz limit
        }
        pb.finish();
        drop(pb);
        let lines = chatty.lines();
        assert!(lines.len() >= 5, "{lines:?}");
        assert!(lines.iter().all(|l| l.starts_with("eval ") && !l.contains('\x1b') && !l.contains('\r')), "{lines:?}");
        assert_eq!(lines.last().map(String::as_str), Some("eval 10/10"), "{lines:?}");
    }
}
