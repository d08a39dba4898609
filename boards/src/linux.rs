//! Real board pins: GPIO character devices through linux-embedded-hal, which implements the
//! embedded-hal traits the LED and trigger take. A chip is named by its device path
//! (`/dev/gpiochip0`) or by its label (`tegra234-gpio`, as the board profiles do, since the
//! `gpiochipN` numbering differs between JetPack releases).

use linux_embedded_hal::gpio_cdev::{chips, Chip, Error, LineRequestFlags};
pub use linux_embedded_hal::CdevPin;

use crate::profile::GpioLine;

/// Opens a GPIO chip by device path (starting with `/`) or by label.
pub fn open_chip(chip: &str) -> Result<Chip, Error> {
    if chip.starts_with('/') {
        return Chip::new(chip);
    }
    for c in chips()? {
        let c = c?;
        if c.label() == chip {
            return Ok(c);
        }
    }
    Err(Error::from(std::io::Error::new(std::io::ErrorKind::NotFound, std::format!("no GPIO chip labelled `{chip}`"))))
}

fn request(chip: &str, line: u32, flags: LineRequestFlags, consumer: &str) -> Result<CdevPin, Error> {
    let handle = open_chip(chip)?.get_line(line)?.request(flags, 0, consumer)?;
    CdevPin::new(handle).map_err(|_| Error::from(std::io::Error::other("cannot set up the GPIO line")))
}

/// An output line for the status LED.
pub fn output_pin(chip: &str, line: u32) -> Result<CdevPin, Error> {
    request(chip, line, LineRequestFlags::OUTPUT, "classmod-status")
}

/// An input line for the trigger.
pub fn input_pin(chip: &str, line: u32) -> Result<CdevPin, Error> {
    request(chip, line, LineRequestFlags::INPUT, "classmod-trigger")
}

/// The profile's status LED line as an output pin.
pub fn status_led_pin(line: &GpioLine) -> Result<CdevPin, Error> {
    output_pin(line.chip_label, line.line)
}

/// The profile's trigger line as an input pin.
pub fn trigger_pin(line: &GpioLine) -> Result<CdevPin, Error> {
    input_pin(line.chip_label, line.line)
}
