//! How a batch too small to slice (`CpuNet::sliced`: batch 1, a camera frame) uses the cores:
//! whole on the calling thread, or each convolution's work (and its padded copy) shared with the
//! spinning helpers of `team.rs`. Sharing pays where handing a layer's work to another core
//! costs little next to the layer's tens of microseconds: with rayon's pool, whose idle workers
//! sleep, ResNet-20 at batch 1 ran 1.4-1.7x faster on two cores of one 2-core VM (AMD EPYC) and
//! took 0.89x the time on one core than on two of another (Intel Xeon with AVX-512); with the
//! spinning team, two cores take 0.77x the time of one on the Xeon (2026-12-05). A core that
//! is busy elsewhere still makes one core the better choice, so each network times its small
//! calls of each kind and runs the way with the lower recent median, trying the other way on one
//! call in 32 so the choice follows the machine ([`SmallBatchPlan`]; a choice measured once, on
//! the first call, kept one core for good where a benchmark's peer engine still spun on the
//! other core at that moment); `CLASSMOD_CPU_SMALL_BATCH` (`auto`, `one-core`, `all-cores`)
//! overrides it. Both ways compute every output with the same sums in the same order, so the
//! choice changes the time, never a result.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use super::conv::Threads;
use crate::error::Result;

/// The environment variable that sets [`SmallBatch`]: `auto` (the default), `one-core` or
/// `all-cores`.
pub const SMALL_BATCH_ENV: &str = "CLASSMOD_CPU_SMALL_BATCH";

/// How small batches use the cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmallBatch {
    /// Measured per network and kind of pass on its first small call.
    Auto = 0,
    /// The whole pass on the calling thread.
    OneCore = 1,
    /// Each convolution's work shared with the team's helpers (`team.rs`).
    AllCores = 2,
}

/// [`SmallBatch`] for this process; `UNSET` until read from the environment.
static MODE: AtomicU8 = AtomicU8::new(UNSET);
const UNSET: u8 = u8::MAX;

impl SmallBatch {
    /// `auto`, `one-core` or `all-cores`.
    pub fn parse(s: &str) -> Option<SmallBatch> {
        match s {
            "auto" => Some(SmallBatch::Auto),
            "one-core" => Some(SmallBatch::OneCore),
            "all-cores" => Some(SmallBatch::AllCores),
            _ => None,
        }
    }

    /// The process's setting: `CLASSMOD_CPU_SMALL_BATCH` (one line on stderr and `auto` for a
    /// value it does not know), unless [`SmallBatch::set`] was called.
    pub fn current() -> SmallBatch {
        let mut m = MODE.load(Ordering::Relaxed);
        if m == UNSET {
            let mode = match std::env::var(SMALL_BATCH_ENV) {
                Err(_) => SmallBatch::Auto,
                Ok(v) => SmallBatch::parse(&v).unwrap_or_else(|| {
                    eprintln!("{SMALL_BATCH_ENV}={v}: not auto, one-core or all-cores; using auto");
                    SmallBatch::Auto
                }),
            };
            m = mode as u8;
            MODE.store(m, Ordering::Relaxed);
        }
        match m {
            0 => SmallBatch::Auto,
            1 => SmallBatch::OneCore,
            _ => SmallBatch::AllCores,
        }
    }

    /// Makes this the process's setting from now on (benchmarks compare them in one process).
    pub fn set(self) {
        MODE.store(self as u8, Ordering::Relaxed);
    }
}

/// The passes a network runs small batches of; each is measured apart (their work differs).
#[derive(Debug, Clone, Copy)]
pub enum PassKind {
    Features,
    Trunk,
    TrunkAndFeatures,
    Branched,
}

/// Small calls of each way that the plan alternates before it picks (the first of each pays
/// for warming up: the team's threads, the caches).
const WARM: u64 = 4;

/// One call in this many runs the way not preferred, so the choice follows the machine: the
/// first calls can fall in a moment when another process holds a core (a benchmark's peer
/// engine still spinning, a start-up), and a choice made once would keep that moment's answer.
/// About 1 % of calls take the slower way.
const EXPLORE: u64 = 32;

/// Recent times a way is judged by (their median: a noisy neighbour only adds outliers).
const RECENT: usize = 8;

/// The two ways, in the order of [`Timings`]' arrays.
const WAYS: [Threads; 2] = [Threads::Tiles, Threads::Caller];

/// One kind of pass's recent times, both ways.
#[derive(Debug, Clone, Copy)]
struct Timings {
    calls: u64,
    /// Seconds, a ring per way; `seen` counts what was written.
    recent: [[f64; RECENT]; 2],
    seen: [usize; 2],
}

impl Default for Timings {
    fn default() -> Self {
        Timings { calls: 0, recent: [[0.0; RECENT]; 2], seen: [0; 2] }
    }
}

impl Timings {
    fn record(&mut self, way: usize, seconds: f64) {
        self.recent[way][self.seen[way] % RECENT] = seconds;
        self.seen[way] += 1;
    }

    fn median(&self, way: usize) -> Option<f64> {
        let mut t = self.recent[way];
        let t = &mut t[..self.seen[way].min(RECENT)];
        t.sort_by(f64::total_cmp);
        t.get(t.len() / 2).copied()
    }

    /// The way with the lower median (all cores on a tie), once both have times.
    fn preferred(&self) -> Option<usize> {
        Some(usize::from(self.median(1)? < self.median(0)?))
    }

    /// The way of the next call: alternately while warming up, then the preferred one but for
    /// every [`EXPLORE`]th call.
    fn next_way(&mut self) -> usize {
        let call = self.calls;
        self.calls += 1;
        match self.preferred() {
            Some(way) if call >= 2 * WARM => way ^ usize::from(call.is_multiple_of(EXPLORE)),
            _ => (call % 2) as usize,
        }
    }
}

/// One network's recent times per kind of pass, by which `Auto` picks the way of each small call.
#[derive(Debug, Default)]
pub struct SmallBatchPlan {
    timings: [Mutex<Timings>; 4],
}

impl Clone for SmallBatchPlan {
    fn clone(&self) -> Self {
        SmallBatchPlan { timings: std::array::from_fn(|i| Mutex::new(*lock(&self.timings[i]))) }
    }
}

/// The timings, whatever a panicking holder left (plain numbers, always consistent).
fn lock(m: &Mutex<Timings>) -> std::sync::MutexGuard<'_, Timings> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SmallBatchPlan {
    /// `pass(threads)` the way this plan runs small batches of `kind`: `Threads::Tiles` (each
    /// convolution's parts shared with the spinning helpers of `team.rs`) or `Threads::Caller`
    /// (all on this thread). Under `Auto` each call is timed, and the way with the lower recent
    /// median runs (see [`WARM`], [`EXPLORE`]); a failed pass records nothing.
    pub fn run<T>(&self, kind: PassKind, pass: impl Fn(Threads) -> Result<T>) -> Result<T> {
        match SmallBatch::current() {
            SmallBatch::OneCore => pass(Threads::Caller),
            SmallBatch::AllCores => pass(Threads::Tiles),
            SmallBatch::Auto if rayon::current_num_threads() < 2 => pass(Threads::Caller),
            SmallBatch::Auto => {
                let timings = &self.timings[kind as usize];
                let way = lock(timings).next_way();
                let start = Instant::now();
                let out = pass(WAYS[way])?;
                lock(timings).record(way, start.elapsed().as_secs_f64());
                Ok(out)
            }
        }
    }

    /// The way `Auto` prefers for `kind`, once it has timed both.
    #[cfg(test)]
    pub(crate) fn preferred(&self, kind: PassKind) -> Option<Threads> {
        lock(&self.timings[kind as usize]).preferred().map(|w| WAYS[w])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_parses_its_three_names_only() {
        assert_eq!(SmallBatch::parse("auto"), Some(SmallBatch::Auto));
        assert_eq!(SmallBatch::parse("one-core"), Some(SmallBatch::OneCore));
        assert_eq!(SmallBatch::parse("all-cores"), Some(SmallBatch::AllCores));
        assert_eq!(SmallBatch::parse("two-cores"), None);
        assert_eq!(SmallBatch::parse(""), None);
    }

    /// The plan runs the way that took less time, but for its warm-up and one call in
    /// [`EXPLORE`]; and where all cores were slow at first (another process held a core) and
    /// became fast, the explored calls find it: the case of a choice made once at a bad moment.
    #[test]
    fn the_faster_way_runs_and_the_choice_follows_the_machine() {
        let mut t = Timings::default();
        let mut ran = [0usize; 2];
        for call in 0..600 {
            let way = t.next_way();
            if call >= 400 {
                ran[way] += 1;
            }
            let tiles = if call < 200 { 3e-3 } else { 0.5e-3 };
            t.record(way, if WAYS[way] == Threads::Tiles { tiles } else { 1e-3 });
            if call == 199 {
                assert_eq!(t.preferred().map(|w| WAYS[w]), Some(Threads::Caller));
            }
        }
        assert_eq!(t.preferred().map(|w| WAYS[w]), Some(Threads::Tiles));
        assert!(ran[0] > 180 && ran[1] < 10, "the last 200 calls ran {ran:?}");
    }

    /// A failing pass fails the call, and records no time.
    #[test]
    fn an_error_is_returned_and_not_remembered() {
        let plan = SmallBatchPlan::default();
        if SmallBatch::current() != SmallBatch::Auto || rayon::current_num_threads() < 2 {
            eprintln!("SKIPPED an_error_is_returned_and_not_remembered: small batches are not measured here");
            return;
        }
        let err = plan.run(PassKind::Trunk, |_| -> Result<()> { Err(crate::Error::NoClassesLoaded) });
        assert!(err.is_err());
        assert_eq!(plan.preferred(PassKind::Trunk), None);
        for _ in 0..2 {
            assert_eq!(plan.run(PassKind::Trunk, Ok).map(|_| ()).ok(), Some(()));
        }
        assert!(plan.preferred(PassKind::Trunk).is_some(), "both ways timed");
        assert_eq!(plan.preferred(PassKind::Features), None, "each kind is timed apart");
    }
}
