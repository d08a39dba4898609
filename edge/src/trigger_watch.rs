//! The trigger, sampled on a clock of its own: [`TriggerSampler`] polls the debounced trigger
//! once and says what happened (a press, with the camera frame as it was at that moment, or a
//! change in whether the input can be read); [`TriggerWatch`] runs it every tick on a thread, so
//! that a press is seen while the device is busy with a batch of watched images or an update, and
//! served between two batches instead of lost (debounce counts polls: polled once a batch, a
//! press shorter than a few batches was never accepted).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use classmod_boards::Trigger;
use classmod_runtime::io::regular;
use embedded_hal::digital::InputPin;

/// Presses waiting to be served at most: each holds a frame's bytes, so this bounds their memory.
/// More presses while the device is busy are counted, and said with the last one kept.
pub const PRESS_QUEUE: usize = 4;

/// What one poll of the trigger found worth telling.
#[derive(Debug)]
pub enum TriggerEvent {
    /// A debounced rising edge.
    Pressed(Press),
    /// The input cannot be read (why): read as not pressed until it can. Said once per cause.
    Fault(String),
    /// The input can be read again after a fault.
    Readable,
}

/// A press, and the frame as the camera had it when the press was accepted.
#[derive(Debug)]
pub struct Press {
    pub at: Instant,
    pub frame: PathBuf,
    /// The frame file's bytes (read bounded, as every image), or why it could not be read.
    pub bytes: Result<Vec<u8>, String>,
    /// Presses after this one that were not kept: [`PRESS_QUEUE`] were waiting already.
    pub missed: u64,
}

/// The trigger and the frame it classifies, polled by the caller.
pub struct TriggerSampler<P: InputPin> {
    trigger: Trigger<P>,
    frame: PathBuf,
    /// The largest frame file read (the board's `max_image_mib`).
    max_frame_bytes: u64,
    /// Why the last poll failed, while polls fail.
    fault: Option<String>,
}

impl<P: InputPin> TriggerSampler<P> {
    /// Classifying `frame` on each press, a file of at most `max_frame_bytes`.
    pub fn new(trigger: Trigger<P>, frame: &Path, max_frame_bytes: u64) -> Self {
        TriggerSampler { trigger, frame: frame.to_path_buf(), max_frame_bytes, fault: None }
    }

    /// Polls once. A pin that cannot be read is not pressed: said on the first failing poll of
    /// each cause and when it can be read again, never more often (it is polled every 10 ms).
    pub fn sample(&mut self) -> Option<TriggerEvent> {
        self.poll(true)
    }

    /// [`TriggerSampler::sample`], where a press reads the frame only when it can be kept
    /// (`room`; else the press is reported without it, to be counted as missed).
    fn poll(&mut self, room: bool) -> Option<TriggerEvent> {
        match self.trigger.poll() {
            Ok(false) => self.fault.take().map(|_| TriggerEvent::Readable),
            Ok(true) => {
                // A fault that cleared on a press: the press is what matters; it ends the fault.
                self.fault = None;
                let bytes = if room {
                    regular::read(&self.frame, self.max_frame_bytes).map_err(|e| format!("{e:#}"))
                } else {
                    Err(String::new())
                };
                Some(TriggerEvent::Pressed(Press { at: Instant::now(), frame: self.frame.clone(), bytes, missed: 0 }))
            }
            Err(e) => {
                let why = format!("{e:?}");
                if self.fault.as_ref() == Some(&why) {
                    return None;
                }
                self.fault = Some(why.clone());
                Some(TriggerEvent::Fault(why))
            }
        }
    }
}

/// A thread polling a [`TriggerSampler`] every tick; the device takes what it found with
/// [`TriggerWatch::try_next`] between its other work. Stopped and joined when dropped.
pub struct TriggerWatch {
    events: Receiver<TriggerEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TriggerWatch {
    pub fn spawn<P: InputPin + Send + 'static>(
        mut sampler: TriggerSampler<P>,
        tick: Duration,
    ) -> std::io::Result<Self> {
        // One press waits in the thread, the rest in the channel.
        let (tx, events) = sync_channel(PRESS_QUEUE - 1);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new().name("classmod-trigger".into()).spawn(move || {
            let mut unsent = Unsent::default();
            while !stopped.load(Ordering::Relaxed) {
                if let Some(event) = sampler.poll(unsent.has_room()) {
                    unsent.push(event);
                }
                if unsent.flush(&tx).is_err() {
                    return; // The device is gone.
                }
                std::thread::sleep(tick);
            }
        })?;
        Ok(TriggerWatch { events, stop, thread: Some(thread) })
    }

    /// The next thing the trigger did, if any (never waits).
    pub fn try_next(&self) -> Option<TriggerEvent> {
        self.events.try_recv().ok()
    }
}

impl Drop for TriggerWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the trigger thread found and could not hand over yet (the device is busy and the queue
/// full): one press with its frame (more are counted in it), and the input's latest state change.
#[derive(Default)]
struct Unsent {
    /// A [`TriggerEvent::Pressed`].
    press: Option<TriggerEvent>,
    state: Option<TriggerEvent>,
}

impl Unsent {
    /// Whether a press now would be kept (its frame read) rather than counted as missed.
    fn has_room(&self) -> bool {
        self.press.is_none()
    }

    fn push(&mut self, event: TriggerEvent) {
        match (event, self.state.take()) {
            (TriggerEvent::Pressed(p), state) => {
                match &mut self.press {
                    Some(TriggerEvent::Pressed(kept)) => kept.missed += 1,
                    _ => self.press = Some(TriggerEvent::Pressed(p)),
                }
                self.state = state;
            }
            // A fault that cleared before anyone heard of it: nothing to say.
            (TriggerEvent::Readable, Some(TriggerEvent::Fault(_))) => {}
            // Otherwise only the latest state matters.
            (state, _) => self.state = Some(state),
        }
    }

    /// Hands over what waits, as far as the queue has room, the press first; an error when the
    /// device is gone.
    fn flush(&mut self, tx: &SyncSender<TriggerEvent>) -> Result<(), ()> {
        for slot in [&mut self.press, &mut self.state] {
            let Some(event) = slot.take() else { continue };
            match tx.try_send(event) {
                Ok(()) => {}
                Err(TrySendError::Full(event)) => {
                    *slot = Some(event);
                    return Ok(());
                }
                Err(TrySendError::Disconnected(_)) => return Err(()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::atomic::AtomicBool;

    /// A button whose level the test sets.
    #[derive(Clone, Default)]
    struct Button(Arc<AtomicBool>);

    impl embedded_hal::digital::ErrorType for Button {
        type Error = Infallible;
    }

    impl InputPin for Button {
        fn is_high(&mut self) -> Result<bool, Infallible> {
            Ok(self.0.load(Ordering::SeqCst))
        }
        fn is_low(&mut self) -> Result<bool, Infallible> {
            self.is_high().map(|h| !h)
        }
    }

    fn press(button: &Button, held: Duration) {
        button.0.store(true, Ordering::SeqCst);
        std::thread::sleep(held);
        button.0.store(false, Ordering::SeqCst);
        std::thread::sleep(held);
    }

    fn watch(button: &Button, frame: &Path) -> TriggerWatch {
        let sampler = TriggerSampler::new(Trigger::new(button.clone(), 3).unwrap(), frame, 1 << 20);
        TriggerWatch::spawn(sampler, Duration::from_millis(2)).unwrap()
    }

    /// Issue 36, item 2: a press while the device is busy (here: not looking at all) is seen by
    /// the thread, debounced, and kept with the frame as it was at the press; the camera's next
    /// frame does not change what the press classifies.
    #[test]
    fn a_press_while_the_device_is_busy_is_kept_with_its_frame() {
        let dir = std::env::temp_dir().join(format!("classmod-trigger-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let frame = dir.join("frame.png");
        std::fs::write(&frame, b"frame at the press").unwrap();
        let button = Button::default();
        let w = watch(&button, &frame);
        press(&button, Duration::from_millis(100));
        std::fs::write(&frame, b"a later frame").unwrap();
        // A bounce (one poll high) is no press.
        button.0.store(true, Ordering::SeqCst);
        button.0.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        let events: Vec<TriggerEvent> = std::iter::from_fn(|| w.try_next()).collect();
        assert_eq!(events.len(), 1, "{events:?}");
        let TriggerEvent::Pressed(p) = &events[0] else { panic!("{events:?}") };
        assert_eq!(p.bytes.as_deref().unwrap(), b"frame at the press");
        assert_eq!((p.frame.as_path(), p.missed), (frame.as_path(), 0));
        drop(w);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Presses while the device serves none: [`PRESS_QUEUE`] are kept with their frames, in
    /// order; the rest are counted in the last one kept, so that the device can say so.
    #[test]
    fn presses_beyond_the_queue_are_counted_not_kept() {
        let dir = std::env::temp_dir().join(format!("classmod-trigger-queue-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let frame = dir.join("frame.png");
        let button = Button::default();
        let w = watch(&button, &frame);
        for i in 0..PRESS_QUEUE + 3 {
            std::fs::write(&frame, format!("frame {i}")).unwrap();
            press(&button, Duration::from_millis(80));
        }
        let events: Vec<TriggerEvent> = std::iter::from_fn(|| w.try_next()).collect();
        let kept: Vec<(String, u64)> = events
            .iter()
            .map(|e| match e {
                TriggerEvent::Pressed(p) => (String::from_utf8(p.bytes.clone().unwrap()).unwrap(), p.missed),
                other => panic!("{other:?}"),
            })
            .collect();
        let want: Vec<(String, u64)> = (0..PRESS_QUEUE).map(|i| (format!("frame {i}"), 0)).collect();
        assert_eq!(kept[..PRESS_QUEUE - 1], want[..PRESS_QUEUE - 1], "in order");
        // The last kept one was waiting in the thread: handed over now that there is room.
        assert!(kept.len() == PRESS_QUEUE - 1 || kept.len() == PRESS_QUEUE, "{kept:?}");
        std::thread::sleep(Duration::from_millis(20));
        let last = match w.try_next() {
            Some(TriggerEvent::Pressed(p)) => (String::from_utf8(p.bytes.unwrap()).unwrap(), p.missed),
            None if kept.len() == PRESS_QUEUE => kept[PRESS_QUEUE - 1].clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(last, (format!("frame {}", PRESS_QUEUE - 1), 3));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Faults and recovery are said once each, in the order they happen; a fault that cleared
    /// before the device heard of it is not said at all.
    #[test]
    fn the_input_state_is_said_once_per_change() {
        let mut u = Unsent::default();
        u.push(TriggerEvent::Fault("a FIFO".into()));
        u.push(TriggerEvent::Readable);
        assert!(u.state.is_none());
        u.push(TriggerEvent::Fault("a FIFO".into()));
        u.push(TriggerEvent::Fault("a directory".into()));
        assert!(matches!(&u.state, Some(TriggerEvent::Fault(w)) if w == "a directory"));
        let (tx, rx) = sync_channel(1);
        u.flush(&tx).unwrap();
        assert!(matches!(rx.try_recv(), Ok(TriggerEvent::Fault(w)) if w == "a directory"));
        drop(rx);
        u.push(TriggerEvent::Readable);
        assert!(u.flush(&tx).is_err(), "the device is gone");
    }
}
