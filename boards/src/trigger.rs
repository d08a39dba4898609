//! The trigger input: a rising edge on an embedded-hal 1.0 `InputPin` (a button, a PIR sensor)
//! asks for one classification. Debounced: the level must hold for `stable` consecutive polls.

use embedded_hal::digital::InputPin;

/// Debounced rising-edge detector over an input pin, polled by the caller.
pub struct Trigger<P: InputPin> {
    pin: P,
    stable: u8,
    /// The accepted (debounced) level, and how many polls the raw level has differed from it.
    level: bool,
    differing: u8,
}

impl<P: InputPin> Trigger<P> {
    /// Starts from the pin's current level (an input already high is no edge).
    pub fn new(mut pin: P, stable: u8) -> Result<Self, P::Error> {
        let level = pin.is_high()?;
        Ok(Trigger { pin, stable: stable.max(1), level, differing: 0 })
    }

    /// [`Trigger::new`], or where the pin cannot be read yet, a trigger starting low (the first
    /// rising edge once it can be read counts) and the error, for the caller to report.
    pub fn new_or_low(mut pin: P, stable: u8) -> (Self, Option<P::Error>) {
        let (level, error) = match pin.is_high() {
            Ok(level) => (level, None),
            Err(e) => (false, Some(e)),
        };
        (Trigger { pin, stable: stable.max(1), level, differing: 0 }, error)
    }

    /// Polls once; true exactly when a debounced rising edge completes.
    pub fn poll(&mut self) -> Result<bool, P::Error> {
        let raw = self.pin.is_high()?;
        if raw == self.level {
            self.differing = 0;
            return Ok(false);
        }
        self.differing += 1;
        if self.differing < self.stable {
            return Ok(false);
        }
        self.level = raw;
        self.differing = 0;
        Ok(raw)
    }

    /// Gives the pin back.
    pub fn release(self) -> P {
        self.pin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction as T};

    #[test]
    fn one_edge_per_debounced_press_and_bounces_ignored() {
        use State::{High as H, Low as L};
        // Initial read, then: a bounce (H, L), a press held (H, H, H), a release (L, L), a press (H, H).
        let levels = [L, H, L, H, H, H, L, L, H, H];
        let expect: std::vec::Vec<T> = levels.iter().map(|&s| T::get(s)).collect();
        let mut t = Trigger::new(Mock::new(&expect), 2).unwrap();
        let edges: std::vec::Vec<bool> = (0..levels.len() - 1).map(|_| t.poll().unwrap()).collect();
        assert_eq!(edges, [false, false, false, true, false, false, false, false, true]);
        t.release().done();
    }

    /// A pin that cannot be read at the start gives a trigger that starts low and the error;
    /// a press once it can be read is an edge.
    #[test]
    fn a_pin_unreadable_at_the_start_starts_low() {
        use embedded_hal_mock::eh1::MockError;
        use State::High as H;
        let unreadable = MockError::Io(std::io::ErrorKind::PermissionDenied);
        let expect = [T::get(H).with_error(unreadable), T::get(H), T::get(H)];
        let (mut t, error) = Trigger::new_or_low(Mock::new(&expect), 2);
        assert!(error.is_some());
        assert_eq!([t.poll().unwrap(), t.poll().unwrap()], [false, true]);
        t.release().done();
    }
}
