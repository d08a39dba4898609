//! How a batch too small to slice (`CpuNet::sliced`: batch 1, a camera frame) uses the cores:
//! whole on the calling thread, or each convolution's work (and its padded copy) shared with the
//! spinning helpers of `team.rs`. Sharing pays where handing a layer's work to another core
//! costs little next to the layer's tens of microseconds: with rayon's pool, whose idle workers
//! sleep, ResNet-20 at batch 1 ran 1.4-1.7x faster on two cores of one 2-core VM (AMD EPYC) and
//! took 0.89x the time on one core than on two of another (Intel Xeon with AVX-512); with the
//! spinning team, two cores take 0.77x the time of one on the Xeon (2026-12-05). A core that
//! is busy elsewhere still makes one core the better choice, so each network measures both on
//! its first small call of each kind, alternately on that call's own input, and keeps the
//! faster ([`SmallBatchPlan`]); `CLASSMOD_CPU_SMALL_BATCH` (`auto`, `one-core`, `all-cores`)
//! overrides it. Both ways compute every output with the same sums in the same order, so the
//! choice changes the time, never a result.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;
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

/// Rounds of the measurement: the first warms both ways up, the rest are timed (the fastest
/// of each way counts: a noisy neighbour only ever adds time).
const ROUNDS: usize = 4;

/// One network's choice per kind of pass, made on its first small call (`Auto`).
#[derive(Debug, Clone, Default)]
pub struct SmallBatchPlan {
    chosen: [OnceLock<Threads>; 4],
}

impl SmallBatchPlan {
    /// `pass(threads)` the way this plan runs small batches of `kind`: `Threads::Tiles` (each
    /// convolution's parts shared with the spinning helpers of `team.rs`) or `Threads::Caller`
    /// (all on this thread). Measures both first where `Auto` has not chosen yet for `kind`.
    pub fn run<T: Send>(&self, kind: PassKind, pass: impl Fn(Threads) -> Result<T> + Sync) -> Result<T> {
        let on = &pass;
        let chosen = &self.chosen[kind as usize];
        let threads = match SmallBatch::current() {
            SmallBatch::OneCore => Threads::Caller,
            SmallBatch::AllCores => Threads::Tiles,
            SmallBatch::Auto if rayon::current_num_threads() < 2 => Threads::Caller,
            SmallBatch::Auto => match chosen.get() {
                Some(&t) => t,
                None => {
                    let (threads, out) = measure(on)?;
                    let _ = chosen.set(threads);
                    return Ok(out);
                }
            },
        };
        on(threads)
    }

    /// What `Auto` chose for `kind`, once it has.
    #[cfg(test)]
    pub(crate) fn chosen(&self, kind: PassKind) -> Option<Threads> {
        self.chosen[kind as usize].get().copied()
    }
}

/// Runs `on` both ways alternately for [`ROUNDS`] rounds: the faster way (the pool on a tie)
/// and the last result.
fn measure<T>(on: impl Fn(Threads) -> Result<T>) -> Result<(Threads, T)> {
    let ways = [Threads::Tiles, Threads::Caller];
    let mut fastest = [f64::INFINITY; 2];
    let mut last = None;
    for round in 0..ROUNDS {
        for (i, &threads) in ways.iter().enumerate() {
            let start = Instant::now();
            last = Some(on(threads)?);
            if round > 0 {
                fastest[i] = fastest[i].min(start.elapsed().as_secs_f64());
            }
        }
    }
    let threads = if fastest[1] < fastest[0] { Threads::Caller } else { Threads::Tiles };
    Ok((threads, last.expect("ROUNDS > 0")))
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

    /// The measurement keeps the way that took less time: here one way sleeps.
    #[test]
    fn the_faster_way_is_chosen() {
        for slow in [Threads::Tiles, Threads::Caller] {
            let (threads, out) = measure(|t| {
                if t == slow {
                    std::thread::sleep(std::time::Duration::from_millis(3));
                }
                Ok(t)
            })
            .unwrap();
            assert_ne!(threads, slow);
            assert_eq!(out, Threads::Caller, "the last run's result");
        }
    }

    /// A failing pass fails the call, and nothing is chosen from it.
    #[test]
    fn an_error_is_returned_and_not_remembered() {
        let plan = SmallBatchPlan::default();
        if SmallBatch::current() != SmallBatch::Auto || rayon::current_num_threads() < 2 {
            eprintln!("SKIPPED an_error_is_returned_and_not_remembered: small batches are not measured here");
            return;
        }
        let err = plan.run(PassKind::Trunk, |_| -> Result<()> { Err(crate::Error::NoClassesLoaded) });
        assert!(err.is_err());
        assert_eq!(plan.chosen(PassKind::Trunk), None);
        assert_eq!(plan.run(PassKind::Trunk, Ok).map(|_| ()).ok(), Some(()));
        assert!(plan.chosen(PassKind::Trunk).is_some());
        assert_eq!(plan.chosen(PassKind::Features), None, "each kind is measured apart");
    }
}
