//! classmod-boards: what the runtime needs to know about the board it runs on, and the board's
//! few peripherals, behind traits.
//!
//! - `profile`: board profiles as data (SoC, CUDA capability, half precision, RAM, the memory
//!   budget for class modules);
//! - `detect`: which board this is, from `/proc/device-tree/model`, with an override;
//! - `status_led`: status LED patterns (loading, serving, updating, error) driven through any
//!   embedded-hal 1.0 `OutputPin`, stepped by the caller's clock, without allocation;
//! - `trigger`: a debounced edge detector over any embedded-hal `InputPin`;
//! - feature `linux`: GPIO character-device pins (linux-embedded-hal) for real boards.
//!
//! Nothing here knows the runtime: the device program joins them.

#![cfg_attr(not(test), no_std)]
#![warn(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

pub mod detect;
#[cfg(feature = "linux")]
pub mod linux;
pub mod profile;
pub mod status_led;
pub mod trigger;

pub use detect::{detect, Detection};
pub use profile::{profile, BoardProfile, ComputeCapability, GpioLine, PROFILES};
pub use status_led::{Status, StatusLed};
pub use trigger::Trigger;
