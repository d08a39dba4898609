//! The status LED: one blink pattern per runtime state, driven through an embedded-hal 1.0
//! `OutputPin`. The caller steps it with elapsed milliseconds from its own clock; patterns are
//! fixed-capacity (heapless), so the hot path allocates nothing.

use embedded_hal::digital::OutputPin;
use heapless::Vec;

/// What the device is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Mapping and verifying modules: slow blink.
    Loading,
    /// Serving: steady on.
    Serving,
    /// Applying a field update: fast blink.
    Updating,
    /// Something failed: three short flashes, then a pause.
    Error,
}

/// At most this many (level, milliseconds) phases per pattern.
pub const MAX_PHASES: usize = 8;

/// The LED's phases for `status`: `(on, duration_ms)`, repeated.
pub fn pattern(status: Status) -> Vec<(bool, u32), MAX_PHASES> {
    let phases: &[(bool, u32)] = match status {
        Status::Loading => &[(true, 500), (false, 500)],
        Status::Serving => &[(true, 1000)],
        Status::Updating => &[(true, 100), (false, 100)],
        Status::Error => &[(true, 150), (false, 150), (true, 150), (false, 150), (true, 150), (false, 1000)],
    };
    Vec::from_slice(phases).expect("every pattern fits MAX_PHASES")
}

/// Drives `pin` through the pattern of the current status.
pub struct StatusLed<P: OutputPin> {
    pin: P,
    status: Status,
    phases: Vec<(bool, u32), MAX_PHASES>,
    phase: usize,
    /// Milliseconds spent in the current phase.
    elapsed: u32,
}

impl<P: OutputPin> StatusLed<P> {
    /// Starts in `status` with its first phase's level.
    pub fn new(pin: P, status: Status) -> Result<Self, P::Error> {
        let mut led = StatusLed { pin, status, phases: pattern(status), phase: 0, elapsed: 0 };
        led.apply()?;
        Ok(led)
    }

    /// The status whose pattern is playing.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Switches to `status` (a no-op if it is the current one), restarting its pattern.
    pub fn set(&mut self, status: Status) -> Result<(), P::Error> {
        if status == self.status {
            return Ok(());
        }
        self.status = status;
        self.phases = pattern(status);
        self.phase = 0;
        self.elapsed = 0;
        self.apply()
    }

    /// Advances the pattern by `ms` milliseconds, setting the pin on each phase change.
    pub fn step(&mut self, ms: u32) -> Result<(), P::Error> {
        self.elapsed = self.elapsed.saturating_add(ms);
        let mut changed = false;
        while self.elapsed >= self.phases[self.phase].1 {
            self.elapsed -= self.phases[self.phase].1;
            let next = (self.phase + 1) % self.phases.len();
            changed |= self.phases[next].0 != self.phases[self.phase].0;
            self.phase = next;
        }
        if changed {
            self.apply()?;
        }
        Ok(())
    }

    fn apply(&mut self) -> Result<(), P::Error> {
        if self.phases[self.phase].0 {
            self.pin.set_high()
        } else {
            self.pin.set_low()
        }
    }

    /// Gives the pin back, leaving it at its current level.
    pub fn release(self) -> P {
        self.pin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};

    #[test]
    fn loading_blinks_slowly_then_serving_stays_on() {
        let expect = [T::set(State::High), T::set(State::Low), T::set(State::High), T::set(State::High)];
        let mut led = StatusLed::new(Mock::new(&expect), Status::Loading).unwrap();
        led.step(499).unwrap(); // still on
        led.step(1).unwrap(); // off
        led.step(500).unwrap(); // on again
        led.set(Status::Serving).unwrap(); // steady on
        led.step(10_000).unwrap(); // no change: a one-phase pattern never toggles
        led.set(Status::Serving).unwrap(); // no-op
        led.release().done();
    }

    #[test]
    fn updating_and_error_patterns() {
        let expect = [
            T::set(State::High),
            T::set(State::Low),
            T::set(State::High),
            // Error: three short flashes, then a pause.
            T::set(State::High),
            T::set(State::Low),
            T::set(State::High),
            T::set(State::Low),
            T::set(State::High),
            T::set(State::Low),
            T::set(State::High),
        ];
        let mut led = StatusLed::new(Mock::new(&expect), Status::Updating).unwrap();
        led.step(100).unwrap();
        led.step(100).unwrap();
        led.set(Status::Error).unwrap();
        for _ in 0..5 {
            led.step(150).unwrap();
        }
        led.step(999).unwrap(); // still in the pause
        led.step(1).unwrap(); // the pattern repeats
        led.release().done();
    }

    #[test]
    fn a_long_step_crosses_several_phases() {
        // 250 ms of fast blink: on -> off -> on, one level change net; the pin is set once.
        let expect = [T::set(State::High), T::set(State::High)];
        let mut led = StatusLed::new(Mock::new(&expect), Status::Updating).unwrap();
        led.step(250).unwrap();
        led.release().done();
    }

    #[test]
    fn every_pattern_fits() {
        for s in [Status::Loading, Status::Serving, Status::Updating, Status::Error] {
            assert!(!pattern(s).is_empty() && pattern(s).iter().all(|p| p.1 > 0));
        }
    }
}
