//! Real board pins: GPIO character devices (`/dev/gpiochipN`, line M) through linux-embedded-hal,
//! which implements the embedded-hal traits the LED and trigger take.

use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
pub use linux_embedded_hal::CdevPin;

/// An output line for the status LED.
pub fn output_pin(chip: &str, line: u32) -> Result<CdevPin, linux_embedded_hal::gpio_cdev::Error> {
    let handle = Chip::new(chip)?.get_line(line)?.request(LineRequestFlags::OUTPUT, 0, "classmod-status")?;
    CdevPin::new(handle).map_err(|_| linux_embedded_hal::gpio_cdev::Error::from(std::io::Error::other("CdevPin")))
}

/// An input line for the trigger.
pub fn input_pin(chip: &str, line: u32) -> Result<CdevPin, linux_embedded_hal::gpio_cdev::Error> {
    let handle = Chip::new(chip)?.get_line(line)?.request(LineRequestFlags::INPUT, 0, "classmod-trigger")?;
    CdevPin::new(handle).map_err(|_| linux_embedded_hal::gpio_cdev::Error::from(std::io::Error::other("CdevPin")))
}
