//! The built-in board profiles, as data.

/// CUDA compute capability, e.g. `(8, 7)` for sm_87.
pub type ComputeCapability = (u8, u8);

/// One GPIO line of the developer kit's 40-pin header, as the Linux GPIO character device names it:
/// the chip by its label (its `/dev/gpiochipN` number differs between JetPack releases) and the
/// line offset inside that chip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpioLine {
    /// Label of the GPIO chip, e.g. `tegra234-gpio`.
    pub chip_label: &'static str,
    /// Line offset within that chip.
    pub line: u32,
    /// The header pin it comes out on, for the wiring.
    pub header_pin: u8,
}

/// The status LED on header pin 12 and the trigger on pin 18 of each Jetson developer kit. Line
/// offsets are those of NVIDIA's Jetson.GPIO pin tables (`gpio_pin_data.py`).
const fn header(chip_label: &'static str, pin12: u32, pin18: u32) -> (Option<GpioLine>, Option<GpioLine>) {
    (
        Some(GpioLine { chip_label, line: pin12, header_pin: 12 }),
        Some(GpioLine { chip_label, line: pin18, header_pin: 18 }),
    )
}
const NANO_PINS: (Option<GpioLine>, Option<GpioLine>) = header("tegra-gpio", 79, 15);
const XAVIER_NX_PINS: (Option<GpioLine>, Option<GpioLine>) = header("tegra194-gpio", 127, 152);
/// Orin Nano and Orin NX share the p3768/p3509 carrier's pinout.
const ORIN_NX_PINS: (Option<GpioLine>, Option<GpioLine>) = header("tegra234-gpio", 50, 125);
const AGX_ORIN_PINS: (Option<GpioLine>, Option<GpioLine>) = header("tegra234-gpio", 50, 43);

/// One board the runtime can be deployed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardProfile {
    /// Board name as `--board` takes it, e.g. `orin-nano`.
    pub name: &'static str,
    /// SoC identifier, e.g. `tegra234`; `host` for the host simulation.
    pub soc: &'static str,
    /// `None`: CPU-only (Jetson Nano's Maxwell GPU is below candle's CUDA floor).
    pub cuda: Option<ComputeCapability>,
    /// The GPU computes in half precision (f16); false for CPU-only profiles.
    pub f16: bool,
    /// The GPU computes in bfloat16 (Ampere and later); implies `f16`.
    pub bf16: bool,
    /// Total RAM in MiB (shared by CPU and GPU on a Jetson), of the smallest SKU.
    pub ram_mib: u32,
    /// Memory the module registry may keep resident, in MiB; less than `ram_mib`.
    pub module_budget_mib: u32,
    /// The largest update blob the device reads, in MiB (a ResNet-56 base is 3.4 MB): what an
    /// inbox entry may cost in memory while it is verified.
    pub max_update_mib: u32,
    /// The largest image width and height the device decodes, checked from the file's header
    /// before decoding (a 12000 x 12000 PNG of 420 KB would cost 440 MB).
    pub max_image_side: u32,
    /// The largest image file the device reads, in MiB (a camera's JPEG is a few MiB; a PNG
    /// with a 60 MB text chunk cost 189 MB when every board read 64 MiB).
    pub max_image_mib: u32,
    /// Images of the watched directory classified in one batch; the trigger and the inbox are
    /// served between batches, and the batch bounds the memory a backlog costs.
    pub watch_batch: u32,
    /// Golden images a module's self-test runs at most (the first ones of its set), in batches
    /// of `watch_batch`: each load and restart pays it for every module, and its memory is a
    /// watch batch's.
    pub golden_images: u32,
    /// Output line for the status LED (`None`: no header, e.g. the host simulation).
    pub status_led: Option<GpioLine>,
    /// Input line for the trigger.
    pub trigger: Option<GpioLine>,
}

/// The built-in profiles, from NVIDIA's module data sheets (RAM of the smallest SKU).
pub const PROFILES: &[BoardProfile] = &[
    BoardProfile {
        name: "jetson-nano",
        soc: "tegra210",
        cuda: None,
        f16: false,
        bf16: false,
        ram_mib: 4096,
        module_budget_mib: 512,
        max_update_mib: 64,
        max_image_side: 4096,
        max_image_mib: 16,
        watch_batch: 16,
        golden_images: 8,
        status_led: NANO_PINS.0,
        trigger: NANO_PINS.1,
    },
    BoardProfile {
        name: "xavier-nx",
        soc: "tegra194",
        cuda: Some((7, 2)),
        f16: true,
        bf16: false,
        ram_mib: 8192,
        module_budget_mib: 1024,
        max_update_mib: 128,
        max_image_side: 4096,
        max_image_mib: 32,
        watch_batch: 64,
        golden_images: 16,
        status_led: XAVIER_NX_PINS.0,
        trigger: XAVIER_NX_PINS.1,
    },
    BoardProfile {
        name: "orin-nano",
        soc: "tegra234",
        cuda: Some((8, 7)),
        f16: true,
        bf16: true,
        ram_mib: 4096,
        module_budget_mib: 512,
        max_update_mib: 64,
        max_image_side: 4096,
        max_image_mib: 32,
        watch_batch: 32,
        golden_images: 16,
        status_led: ORIN_NX_PINS.0,
        trigger: ORIN_NX_PINS.1,
    },
    BoardProfile {
        name: "orin-nx",
        soc: "tegra234",
        cuda: Some((8, 7)),
        f16: true,
        bf16: true,
        ram_mib: 8192,
        module_budget_mib: 1024,
        max_update_mib: 128,
        max_image_side: 4096,
        max_image_mib: 48,
        watch_batch: 64,
        golden_images: 32,
        status_led: ORIN_NX_PINS.0,
        trigger: ORIN_NX_PINS.1,
    },
    BoardProfile {
        name: "agx-orin",
        soc: "tegra234",
        cuda: Some((8, 7)),
        f16: true,
        bf16: true,
        ram_mib: 32768,
        module_budget_mib: 4096,
        max_update_mib: 256,
        max_image_side: 8192,
        max_image_mib: 64,
        watch_batch: 64,
        golden_images: 64,
        status_led: AGX_ORIN_PINS.0,
        trigger: AGX_ORIN_PINS.1,
    },
    BoardProfile {
        name: "host-sim",
        soc: "host",
        cuda: None,
        f16: false,
        bf16: false,
        ram_mib: 16384,
        module_budget_mib: 2048,
        max_update_mib: 256,
        max_image_side: 8192,
        max_image_mib: 64,
        watch_batch: 64,
        golden_images: 64,
        status_led: None,
        trigger: None,
    },
];

/// Looks a profile up by name.
pub fn profile(name: &str) -> Option<&'static BoardProfile> {
    PROFILES.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_profile_is_found_by_name_and_budgets_fit_in_ram() {
        for p in super::PROFILES {
            assert_eq!(super::profile(p.name), Some(p));
            assert!(p.module_budget_mib < p.ram_mib, "{}", p.name);
            assert!(p.max_update_mib <= p.module_budget_mib / 2, "{}: an update fits twice in the budget", p.name);
            assert!(p.max_image_side >= 1024 && p.watch_batch >= 1, "{}", p.name);
            assert!(!p.bf16 || p.f16, "{}: bf16 hardware also has f16", p.name);
            // A Jetson has its header; the LED is an output and the trigger another line.
            assert_eq!(p.status_led.is_some(), p.soc != "host", "{}", p.name);
            if let (Some(led), Some(trig)) = (p.status_led, p.trigger) {
                assert_eq!((led.header_pin, trig.header_pin), (12, 18), "{}", p.name);
                assert_eq!(led.chip_label, trig.chip_label, "{}", p.name);
                assert_ne!(led.line, trig.line, "{}", p.name);
            }
        }
        assert!(super::profile("nonexistent").is_none());
    }
}
