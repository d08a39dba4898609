//! A status "LED" for boards without one (and the host simulation): an embedded-hal output pin
//! that remembers its level and counts changes, so the log can say what the LED shows.

use core::convert::Infallible;

use embedded_hal::digital::{ErrorType, OutputPin};

#[derive(Debug, Default)]
pub struct LogPin {
    pub high: bool,
    pub changes: u64,
}

impl ErrorType for LogPin {
    type Error = Infallible;
}

impl OutputPin for LogPin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.changes += u64::from(self.high);
        self.high = false;
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Infallible> {
        self.changes += u64::from(!self.high);
        self.high = true;
        Ok(())
    }
}
