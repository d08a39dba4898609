//! A team of threads that shares one convolution's work when the batch is too small to slice (a
//! camera frame): the caller publishes the call's parts, every thread claims parts until none is
//! left, and the caller returns once all are done. Its helpers spin for [`SPIN`] after each call
//! before they sleep, so the next layer's hand-off costs a cache line's round trip (~0.1 µs
//! between the two cores of the machine this was measured on) instead of waking a sleeping
//! thread: in a VM that wake-up crosses the hypervisor and cost more than the layer's time on
//! one core, which is why ResNet-20 at batch 1 ran faster on one core than across rayon's pool.
//!
//! One team per thread count, made on first use ([`for_each`] uses the team of
//! `rayon::current_num_threads()`, so `RAYON_NUM_THREADS` and a rayon pool's `install` size it
//! as they size rayon). A call from a team's own job, or while another thread holds the team,
//! runs its parts on the calling thread: the same parts, the same results, only slower.
//!
//! The protocol (hand-written atomics and a lifetime-erased job) is model-checked with `loom`
//! (feature `loom`, `model` below): every interleaving of a caller and its helpers, under the
//! C11 memory model that ARM's weak ordering obeys and x86 never shows. Under that feature the
//! primitives are loom's (`sync` below) and the timed spins become yields.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering::*;
use std::sync::{OnceLock, TryLockError};
use std::time::Duration;
#[cfg(not(feature = "loom"))]
use std::time::Instant;

use sync::{fence, AtomicU64, AtomicUsize, Condvar, JobCell, Mutex};

/// The primitives the protocol is written in: std's, or loom's for the model check.
#[cfg(not(feature = "loom"))]
mod sync {
    pub(super) use std::sync::atomic::{fence, AtomicU64, AtomicUsize};
    pub(super) use std::sync::{Arc, Condvar, Mutex};

    /// An `UnsafeCell` with loom's closure API, so one text serves both.
    pub(super) struct JobCell<T>(std::cell::UnsafeCell<T>);
    impl<T> JobCell<T> {
        pub(super) fn new(v: T) -> Self {
            JobCell(std::cell::UnsafeCell::new(v))
        }
        pub(super) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }
        pub(super) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    thread_local! {
        /// Set while this thread runs a team's job: a call from inside runs inline.
        pub(super) static IN_JOB: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    pub(super) fn spawn(name: String, f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new().name(name).spawn(f).expect("spawning a team thread");
    }
}

#[cfg(feature = "loom")]
mod sync {
    pub(super) use loom::cell::UnsafeCell as JobCell;
    pub(super) use loom::sync::atomic::{fence, AtomicU64, AtomicUsize};
    pub(super) use loom::sync::{Arc, Condvar, Mutex};

    loom::thread_local! {
        pub(super) static IN_JOB: std::cell::Cell<bool> = std::cell::Cell::new(false);
    }

    pub(super) fn spawn(_: String, f: impl FnOnce() + Send + 'static) {
        loom::thread::spawn(f);
    }
}

fn in_job() -> bool {
    sync::IN_JOB.with(|c| c.get())
}

fn set_in_job(v: bool) {
    sync::IN_JOB.with(|c| c.set(v));
}

/// How long a helper spins for the next call before it sleeps: a forward's next layer comes
/// within microseconds; a camera's next frame, tens of milliseconds later, finds it asleep.
#[cfg_attr(feature = "loom", allow(dead_code))]
pub const SPIN: Duration = Duration::from_micros(200);

/// How long a caller spins for its helpers before it yields its core between looks: several
/// times a layer's part at batch 1.
#[cfg_attr(feature = "loom", allow(dead_code))]
const YIELD_AFTER: Duration = Duration::from_micros(100);

/// The largest team; a larger thread count gets a team of this many.
const MAX_THREADS: usize = 64;

/// A job's parts, lifetime erased: valid while its call runs (the caller waits for every helper
/// to leave the job before it returns).
type Job = &'static (dyn Fn(usize) + Sync);

/// `state`'s low bit: a job is open to helpers; the rest counts calls.
const OPEN: u64 = 1;

/// `state` once the team is retired: its helpers return (only the model check retires a team;
/// the process's teams serve until it exits). Closed (no `OPEN` bit): a helper that reads it
/// on its way into a job does not enter (loom found the first version, an open state, letting
/// one in to read a job slot the caller had cleared).
const RETIRED: u64 = !OPEN;

/// What the caller and the helpers share.
struct Shared {
    /// `calls << 1 | OPEN` while a job is open, `calls << 1` once it is closed.
    state: AtomicU64,
    /// The open job; written by the caller only while closed with no helper inside.
    job: JobCell<Option<Job>>,
    parts: AtomicUsize,
    /// The next part to claim.
    next: AtomicUsize,
    /// Parts finished (run or panicked).
    done: AtomicUsize,
    /// Helpers inside a job (between seeing it open and leaving it).
    busy: AtomicUsize,
    /// Helpers asleep, or about to be, on `wake`.
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
    /// The first panic of a part, raised again on the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `job` is written only by the caller holding `Team::call`, while the job is closed and
// no helper is inside (`busy` 0), and read only by helpers inside an open job.
unsafe impl Sync for Shared {}

/// A fixed set of threads sharing calls' parts; see the module comment.
pub struct Team {
    shared: sync::Arc<Shared>,
    threads: usize,
    /// Held by the thread whose call is open.
    call: Mutex<()>,
}

impl Team {
    /// A team of `threads` (the caller and `threads - 1` helpers, spawned now). The helpers
    /// never exit, so teams are made once, by [`Team::of`] (and by this module's tests).
    fn new(threads: usize) -> Team {
        let threads = threads.clamp(1, MAX_THREADS);
        let shared = sync::Arc::new(Shared {
            state: AtomicU64::new(0),
            job: JobCell::new(None),
            parts: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
            panic: Mutex::new(None),
        });
        for i in 1..threads {
            let s = sync::Arc::clone(&shared);
            sync::spawn(format!("classmod-team-{i}"), move || s.help());
        }
        Team { shared, threads, call: Mutex::new(()) }
    }

    /// The process's team of `threads`, made on first use.
    pub fn of(threads: usize) -> &'static Team {
        static TEAMS: [OnceLock<Team>; MAX_THREADS] = [const { OnceLock::new() }; MAX_THREADS];
        let n = threads.clamp(1, MAX_THREADS);
        TEAMS[n - 1].get_or_init(|| Team::new(n))
    }

    /// `job(i)` for every `i` in `0..parts`, each once, shared among the team's threads; returns
    /// when all are done. A panic in a part is raised here once every part has finished.
    pub fn for_each(&self, parts: usize, job: impl Fn(usize) + Sync) {
        let inline = |job: &dyn Fn(usize)| (0..parts).for_each(job);
        if parts < 2 || self.threads < 2 || in_job() {
            return inline(&job);
        }
        let _held = match self.call.try_lock() {
            Ok(held) => held,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return inline(&job),
        };
        let s = &*self.shared;
        let job: &(dyn Fn(usize) + Sync) = &job;
        // SAFETY: the erased reference is dropped from `s.job` below, after every helper has
        // left the job, before `job` goes out of scope; no helper is inside now (`busy` was 0
        // when the last call closed) and none enters until `state` opens.
        s.job.with_mut(|slot| unsafe { *slot = Some(std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(job)) });
        s.parts.store(parts, Relaxed);
        s.next.store(0, Relaxed);
        s.done.store(0, Relaxed);
        let closed = (s.state.load(Relaxed) & !OPEN) + 2;
        s.state.store(closed | OPEN, SeqCst);
        // Each side of the two Dekker pairs (open/sleepers here, closed/busy below) stores,
        // fences, then loads: the fences give the one total order the pair rests on (loom
        // models SeqCst accesses as acquire/release only; it models SeqCst fences exactly).
        fence(SeqCst);
        if s.sleepers.load(SeqCst) > 0 {
            let _sleep = s.sleep.lock().unwrap_or_else(|p| p.into_inner());
            s.wake.notify_all();
        }
        set_in_job(true);
        s.work(job);
        set_in_job(false);
        wait_until(|| s.done.load(Acquire) >= parts);
        // Closed before `busy` is read (both SeqCst): a helper that enters later sees it closed.
        s.state.store(closed, SeqCst);
        fence(SeqCst);
        wait_until(|| s.busy.load(SeqCst) == 0);
        // SAFETY: closed with no helper inside.
        s.job.with_mut(|slot| unsafe { *slot = None });
        if let Some(p) = s.panic.lock().unwrap_or_else(|p| p.into_inner()).take() {
            panic::resume_unwind(p);
        }
    }
}

impl Team {
    /// Retires the team: its helpers return once they see it (the model check's end; the
    /// process's teams are never retired).
    #[cfg(all(test, feature = "loom"))]
    fn retire(&self) {
        let s = &*self.shared;
        s.state.store(RETIRED, SeqCst);
        fence(SeqCst);
        if s.sleepers.load(SeqCst) > 0 {
            let _sleep = s.sleep.lock().unwrap_or_else(|p| p.into_inner());
            s.wake.notify_all();
        }
    }
}

impl Shared {
    /// Claims and runs parts of `job` until none is left.
    fn work(&self, job: &(dyn Fn(usize) + Sync)) {
        let parts = self.parts.load(Relaxed);
        loop {
            let i = self.next.fetch_add(1, Relaxed);
            if i >= parts {
                return;
            }
            if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| job(i))) {
                self.panic.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(p);
            }
            self.done.fetch_add(1, Release);
        }
    }

    /// A helper's life: wait for a call it has not worked on, work on it, again (until the
    /// team is retired).
    fn help(&self) {
        set_in_job(true);
        let mut last = 0;
        loop {
            if !self.wait_for_call(last) {
                return;
            }
            // Inside before the state is read again (both SeqCst): the caller, which closes the
            // job before it reads `busy`, either waits for this helper or this helper sees it closed.
            self.busy.fetch_add(1, SeqCst);
            fence(SeqCst);
            let state = self.state.load(SeqCst);
            if state & OPEN != 0 {
                // SAFETY: open, and this helper is counted in `busy` until it is done with it.
                let job = self.job.with(|slot| unsafe { (*slot).expect("an open call has a job") });
                self.work(job);
                last = state;
            }
            self.busy.fetch_sub(1, SeqCst);
        }
    }

    /// Returns once a call other than `last` is open (true) or the team is retired (false):
    /// spinning for [`SPIN`], then asleep.
    fn wait_for_call(&self, last: u64) -> bool {
        let new = |state: u64| state == RETIRED || state & OPEN != 0 && state != last;
        // The spin is for speed only (the sleep below is what the protocol rests on), and a
        // timed spin has no place in a model check.
        #[cfg(not(feature = "loom"))]
        {
            let start = Instant::now();
            for spins in 1u32.. {
                let state = self.state.load(Acquire);
                if new(state) {
                    return state != RETIRED;
                }
                std::hint::spin_loop();
                if spins % 1024 == 0 && start.elapsed() > SPIN {
                    break;
                }
            }
        }
        let mut asleep = self.sleep.lock().unwrap_or_else(|p| p.into_inner());
        // Counted before the state is read (both SeqCst): a caller that opens a call after this
        // read sees the count and wakes this helper under the lock it waits with.
        self.sleepers.fetch_add(1, SeqCst);
        fence(SeqCst);
        let mut state = self.state.load(SeqCst);
        while !new(state) {
            asleep = self.wake.wait(asleep).unwrap_or_else(|p| p.into_inner());
            state = self.state.load(SeqCst);
        }
        self.sleepers.fetch_sub(1, SeqCst);
        state != RETIRED
    }
}

/// Spins until `done()`, yielding the core once [`YIELD_AFTER`] has passed: a helper the OS has
/// taken off its core (another process holds the other one) may need this core to finish.
#[cfg(not(feature = "loom"))]
fn wait_until(done: impl Fn() -> bool) {
    let mut since = None;
    for spins in 0u32.. {
        if done() {
            return;
        }
        std::hint::spin_loop();
        if spins % 64 == 63 && since.get_or_insert_with(Instant::now).elapsed() > YIELD_AFTER {
            std::thread::yield_now();
        }
    }
}

/// Under the model check: a yield at each look, so loom explores the other threads' steps.
#[cfg(feature = "loom")]
fn wait_until(done: impl Fn() -> bool) {
    while !done() {
        loom::thread::yield_now();
    }
}

/// `job(i)` for every `i` in `0..parts` on the team of `rayon::current_num_threads()` threads.
pub fn for_each(parts: usize, job: impl Fn(usize) + Sync) {
    Team::of(rayon::current_num_threads()).for_each(parts, job)
}

#[cfg(all(test, not(feature = "loom")))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Every part runs exactly once, call after call, on teams of 2 and 3 (the helpers of the
    /// 3-team sleep between some calls and are woken).
    #[test]
    fn every_part_runs_once() {
        for team in [Team::of(2), Team::of(3)] {
            for (call, parts) in (0..2000).map(|c| (c, [2, 3, 7, 64][c % 4])).collect::<Vec<_>>() {
                let runs: Vec<AtomicU32> = (0..parts).map(|_| AtomicU32::new(0)).collect();
                team.for_each(parts, |i| {
                    runs[i].fetch_add(1, Relaxed);
                });
                assert!(runs.iter().all(|r| r.load(Relaxed) == 1), "call {call}");
                if call % 500 == 0 {
                    std::thread::sleep(SPIN * 3);
                }
            }
        }
    }

    /// Parts run on more than one thread (the helpers do work), and a part's writes are seen
    /// by the caller when the call returns.
    #[test]
    fn helpers_share_the_work() {
        let team = Team::new(2);
        let threads = Mutex::new(std::collections::HashSet::new());
        let mut sums = vec![0u64; 64];
        let out = std::sync::atomic::AtomicPtr::new(sums.as_mut_ptr());
        for _ in 0..50 {
            team.for_each(64, |i| {
                threads.lock().unwrap().insert(std::thread::current().id());
                // SAFETY: part i writes element i only.
                unsafe { *out.load(Relaxed).add(i) += i as u64 };
                std::thread::sleep(Duration::from_micros(50));
            });
        }
        assert_eq!(sums, (0..64).map(|i| 50 * i).collect::<Vec<u64>>());
        assert!(threads.lock().unwrap().len() > 1, "only the caller worked");
    }

    /// A panic in a part reaches the caller after the call, and the team serves the next call.
    #[test]
    fn a_panic_reaches_the_caller_and_the_team_goes_on() {
        let team = Team::new(2);
        let ran = AtomicUsize::new(0);
        let r = panic::catch_unwind(AssertUnwindSafe(|| {
            team.for_each(8, |i| {
                ran.fetch_add(1, Relaxed);
                assert!(i != 5, "part five");
            })
        }));
        assert!(r.is_err());
        assert_eq!(ran.load(Relaxed), 8, "every part ran");
        let n = AtomicUsize::new(0);
        team.for_each(8, |_| {
            n.fetch_add(1, Relaxed);
        });
        assert_eq!(n.load(Relaxed), 8);
    }

    /// Calls from several threads at once, and calls from inside a part, all complete.
    #[test]
    fn concurrent_and_nested_calls_complete() {
        let team = Team::of(2);
        let total = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| {
                    for _ in 0..300 {
                        team.for_each(4, |_| {
                            team.for_each(3, |_| {
                                total.fetch_add(1, Relaxed);
                            })
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Relaxed), 3 * 300 * 4 * 3);
    }
}

#[cfg(all(test, feature = "loom"))]
mod model {
    use super::*;

    /// Plain memory a part writes (as a convolution's part writes its rows): loom checks that
    /// every access happens after the one before it.
    struct Written(JobCell<usize>);
    // SAFETY: part i alone writes cell i during a call; the caller reads it after the call.
    unsafe impl Sync for Written {}

    /// A caller's two calls of three parts with one helper, in every interleaving loom explores
    /// (preemptions bounded): every part runs once per call; the caller reads each part's plain
    /// write after its call returns without a race; no access to the job slot races (the caller
    /// never clears the job while a helper may still read it); a helper asleep is woken, and
    /// none is left blocked.
    #[test]
    fn every_part_runs_once_in_every_interleaving() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let team = Team::new(2);
            for _ in 0..2 {
                let runs: Vec<Written> = (0..3).map(|_| Written(JobCell::new(0))).collect();
                team.for_each(3, |i| runs[i].0.with_mut(|p| unsafe { *p += 1 }));
                assert!(runs.iter().all(|r| r.0.with(|p| unsafe { *p }) == 1));
            }
            team.retire();
        });
    }
}
