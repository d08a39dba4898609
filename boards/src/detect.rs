//! Which board this is: an explicit override, else the device tree's model string, else the
//! host simulation.

use crate::profile::{profile, BoardProfile};

/// How the profile was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    /// The caller named the board (e.g. `--board`).
    Override,
    /// The device tree's model string names a known board.
    DeviceTree,
    /// No device tree naming a known board: a workstation running the host simulation.
    Fallback,
}

/// The profile for a device-tree model string (`/proc/device-tree/model`, NUL-terminated), e.g.
/// `NVIDIA Jetson Orin Nano Developer Kit`.
pub fn from_model(model: &str) -> Option<&'static BoardProfile> {
    let m = model.trim_end_matches('\0');
    let has = |needle: &str| m.as_bytes().windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle.as_bytes()));
    let name = if has("agx orin") {
        "agx-orin"
    } else if has("orin nano") {
        "orin-nano"
    } else if has("orin nx") {
        "orin-nx"
    } else if has("xavier nx") {
        "xavier-nx"
    } else if has("jetson nano") || has("jetson-nano") {
        "jetson-nano"
    } else {
        return None;
    };
    profile(name)
}

/// The board: `override_name` if given (an unknown name is an error: `Err(name)`), else the
/// device tree's model if it names a known board, else `host-sim`.
pub fn detect<'a>(
    override_name: Option<&'a str>,
    device_tree_model: Option<&str>,
) -> Result<(&'static BoardProfile, Detection), &'a str> {
    if let Some(name) = override_name {
        return profile(name).map(|p| (p, Detection::Override)).ok_or(name);
    }
    if let Some(p) = device_tree_model.and_then(from_model) {
        return Ok((p, Detection::DeviceTree));
    }
    Ok((profile("host-sim").expect("built in"), Detection::Fallback))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_tree_models_of_each_board() {
        for (model, want) in [
            ("NVIDIA Jetson Nano Developer Kit\0", "jetson-nano"),
            ("NVIDIA Jetson Xavier NX Developer Kit\0", "xavier-nx"),
            ("NVIDIA Jetson Orin Nano Developer Kit\0", "orin-nano"),
            ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit\0", "orin-nx"),
            ("Jetson AGX Orin\0", "agx-orin"),
        ] {
            assert_eq!(from_model(model).map(|p| p.name), Some(want), "{model}");
        }
        assert!(from_model("Raspberry Pi 4 Model B Rev 1.4\0").is_none());
    }

    #[test]
    fn override_then_device_tree_then_host() {
        let dt = Some("NVIDIA Jetson Xavier NX Developer Kit");
        assert_eq!(detect(Some("agx-orin"), dt).unwrap().0.name, "agx-orin");
        assert_eq!(detect(Some("agx-orin"), dt).unwrap().1, Detection::Override);
        assert_eq!(detect(None, dt).unwrap(), (profile("xavier-nx").unwrap(), Detection::DeviceTree));
        assert_eq!(detect(None, None).unwrap().1, Detection::Fallback);
        assert_eq!(detect(None, Some("something else")).unwrap().0.name, "host-sim");
        assert_eq!(detect(Some("jetson-tx2"), dt), Err("jetson-tx2"));
    }
}
