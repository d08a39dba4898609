//! The device program's two pins, chosen at start: the status LED (the log, or a GPIO line) and
//! the trigger (a value file, or a GPIO line). Each is one embedded-hal pin type with one error
//! type, so the program is built once for every combination.

use std::fmt;
use std::path::PathBuf;

use embedded_hal::digital::{ErrorKind, ErrorType, InputPin, OutputPin};

use crate::LogPin;

/// A pin that failed (a GPIO request or read, a value file that cannot be read).
#[derive(Debug)]
pub struct PinError(pub String);

impl fmt::Display for PinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PinError {}

impl embedded_hal::digital::Error for PinError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

/// An input whose level is a file's first character: `1` is high, anything else low. This is the
/// legacy sysfs GPIO interface (`/sys/class/gpio/gpioN/value`), and on a host any file a script
/// writes (`echo 1 > FILE` presses the button, `echo 0 > FILE` releases it). A missing or empty
/// file reads low.
///
/// It is read every 10 ms, so every read is bounded: opened without blocking (a FIFO put in its
/// place would otherwise stop the device until someone writes to it), refused unless it is a
/// regular file (`/dev/zero` never ends), and no more than [`VALUE_FILE_BYTES`] read (a huge file
/// costs nothing).
pub struct ValueFilePin {
    pub path: PathBuf,
}

/// Bytes of a value file read: its level and some whitespace before it.
pub const VALUE_FILE_BYTES: u64 = 64;

impl ValueFilePin {
    /// Whether the file exists: a trigger file that does not is read as low, silently, so the
    /// device program warns about one (a typo would otherwise never trigger).
    pub fn exists(&self) -> bool {
        std::fs::symlink_metadata(&self.path).is_ok()
    }
}

impl ErrorType for ValueFilePin {
    type Error = PinError;
}

impl InputPin for ValueFilePin {
    fn is_high(&mut self) -> Result<bool, PinError> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let fail = |what: String| PinError(format!("{}: {what}", self.path.display()));
        let file = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(fail(e.to_string())),
        };
        let kind = file.metadata().map_err(|e| fail(e.to_string()))?.file_type();
        if !kind.is_file() {
            use std::os::unix::fs::FileTypeExt;
            let what = if kind.is_dir() {
                "a directory"
            } else if kind.is_fifo() {
                "a FIFO"
            } else if kind.is_char_device() {
                "a character device"
            } else {
                "not a regular file"
            };
            return Err(fail(format!("{what}, not a value file")));
        }
        let mut bytes = Vec::with_capacity(VALUE_FILE_BYTES as usize);
        file.take(VALUE_FILE_BYTES).read_to_end(&mut bytes).map_err(|e| fail(e.to_string()))?;
        Ok(bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'1'))
    }

    fn is_low(&mut self) -> Result<bool, PinError> {
        self.is_high().map(|h| !h)
    }
}

/// The status LED's pin.
pub enum LedPin {
    /// No LED: the log says what it would show.
    Log(LogPin),
    #[cfg(feature = "linux")]
    Gpio(classmod_boards::linux::CdevPin),
}

impl ErrorType for LedPin {
    type Error = PinError;
}

impl OutputPin for LedPin {
    fn set_low(&mut self) -> Result<(), PinError> {
        match self {
            LedPin::Log(p) => p.set_low().map_err(|e| match e {}),
            #[cfg(feature = "linux")]
            LedPin::Gpio(p) => p.set_low().map_err(|e| PinError(format!("status LED: {e}"))),
        }
    }

    fn set_high(&mut self) -> Result<(), PinError> {
        match self {
            LedPin::Log(p) => p.set_high().map_err(|e| match e {}),
            #[cfg(feature = "linux")]
            LedPin::Gpio(p) => p.set_high().map_err(|e| PinError(format!("status LED: {e}"))),
        }
    }
}

/// The trigger's pin.
pub enum TriggerPin {
    File(ValueFilePin),
    #[cfg(feature = "linux")]
    Gpio(classmod_boards::linux::CdevPin),
}

impl ErrorType for TriggerPin {
    type Error = PinError;
}

impl InputPin for TriggerPin {
    fn is_high(&mut self) -> Result<bool, PinError> {
        match self {
            TriggerPin::File(p) => p.is_high(),
            #[cfg(feature = "linux")]
            TriggerPin::Gpio(p) => p.is_high().map_err(|e| PinError(format!("trigger: {e}"))),
        }
    }

    fn is_low(&mut self) -> Result<bool, PinError> {
        self.is_high().map(|h| !h)
    }
}

/// Where a GPIO line comes from on the command line: the board profile's, or `CHIP:LINE` (a chip
/// path such as `/dev/gpiochip0` or a chip label such as `tegra234-gpio`).
pub fn parse_line(spec: &str) -> Result<(String, u32), PinError> {
    let bad = || PinError(format!("`{spec}` is not CHIP:LINE (e.g. /dev/gpiochip0:50 or tegra234-gpio:50)"));
    let (chip, line) = spec.rsplit_once(':').ok_or_else(bad)?;
    if chip.is_empty() {
        return Err(bad());
    }
    Ok((chip.to_string(), line.parse().map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_file_reads_like_sysfs_gpio() {
        let dir = std::env::temp_dir().join(format!("classmod-edge-pins-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut pin = ValueFilePin { path: dir.join("value") };
        assert!(!pin.is_high().unwrap(), "a missing file reads low");
        for (content, high) in [("1\n", true), ("0\n", false), ("", false), (" 1", true), ("x", false)] {
            std::fs::write(&pin.path, content).unwrap();
            assert_eq!(pin.is_high().unwrap(), high, "{content:?}");
            assert_eq!(pin.is_low().unwrap(), !high);
        }
        // A directory where the file should be: an error, not a level.
        let mut dir_pin = ValueFilePin { path: dir.clone() };
        assert!(dir_pin.is_high().unwrap_err().to_string().contains("a directory"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// What an operator or an attacker may put where the value file should be: each read returns
    /// at once, with an error naming the file and what it is, or a level; none blocks, none reads
    /// without end, none costs memory beyond a few bytes.
    #[test]
    fn a_value_file_read_is_bounded_whatever_the_file_is() {
        let dir = std::env::temp_dir().join(format!("classmod-edge-pins-odd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A FIFO with no writer: opening it to read would block forever without O_NONBLOCK.
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        let e = ValueFilePin { path: fifo.clone() }.is_high().unwrap_err().to_string();
        assert!(e.contains("a FIFO") && e.contains("fifo"), "{e}");
        // A device that never ends.
        let e = ValueFilePin { path: "/dev/zero".into() }.is_high().unwrap_err().to_string();
        assert!(e.contains("character device") && e.contains("/dev/zero"), "{e}");
        // A 1 GiB sparse file whose level is high: read in a few bytes.
        let huge = dir.join("huge");
        std::fs::write(&huge, b"1\n").unwrap();
        std::fs::OpenOptions::new().write(true).open(&huge).unwrap().set_len(1 << 30).unwrap();
        assert!(ValueFilePin { path: huge.clone() }.is_high().unwrap());
        // A symlink to a value file reads as the file (sysfs's GPIO values are links too).
        let link = dir.join("link");
        std::os::unix::fs::symlink(&huge, &link).unwrap();
        assert!(ValueFilePin { path: link }.is_high().unwrap());
        // Missing: low, and `exists` says so for the warning.
        let missing = ValueFilePin { path: dir.join("typo") };
        assert!(!missing.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn gpio_lines_parse_or_say_what_is_expected() {
        assert_eq!(parse_line("/dev/gpiochip0:50").unwrap(), ("/dev/gpiochip0".into(), 50));
        assert_eq!(parse_line("tegra234-gpio:125").unwrap(), ("tegra234-gpio".into(), 125));
        for bad in ["50", ":50", "chip:", "chip:x", "chip:-1"] {
            assert!(parse_line(bad).unwrap_err().to_string().contains("CHIP:LINE"), "{bad}");
        }
    }
}
