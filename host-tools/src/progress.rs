//! Progress bars for long work. They draw on stderr and hide themselves when stderr is not a
//! terminal (CI, pipes), so `--json` output and logs stay clean.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` units (images, steps) with a rate and an ETA.
pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} {per_sec} ETA {eta} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}
