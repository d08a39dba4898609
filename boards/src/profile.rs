//! The built-in board profiles, as data.

/// CUDA compute capability, e.g. `(8, 7)` for sm_87.
pub type ComputeCapability = (u8, u8);

/// One board the runtime can be deployed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardProfile {
    pub name: &'static str,
    pub soc: &'static str,
    /// `None`: CPU-only (Jetson Nano's Maxwell GPU is below candle's CUDA floor).
    pub cuda: Option<ComputeCapability>,
    pub f16: bool,
    pub bf16: bool,
    pub ram_mib: u32,
    /// Memory the module registry may keep resident.
    pub module_budget_mib: u32,
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
    },
    BoardProfile {
        name: "xavier-nx",
        soc: "tegra194",
        cuda: Some((7, 2)),
        f16: true,
        bf16: false,
        ram_mib: 8192,
        module_budget_mib: 1024,
    },
    BoardProfile {
        name: "orin-nano",
        soc: "tegra234",
        cuda: Some((8, 7)),
        f16: true,
        bf16: true,
        ram_mib: 4096,
        module_budget_mib: 512,
    },
    BoardProfile {
        name: "orin-nx",
        soc: "tegra234",
        cuda: Some((8, 7)),
        f16: true,
        bf16: true,
        ram_mib: 8192,
        module_budget_mib: 1024,
    },
    BoardProfile {
        name: "agx-orin",
        soc: "tegra234",
        cuda: Some((8, 7)),
        f16: true,
        bf16: true,
        ram_mib: 32768,
        module_budget_mib: 4096,
    },
    BoardProfile {
        name: "host-sim",
        soc: "host",
        cuda: None,
        f16: false,
        bf16: false,
        ram_mib: 16384,
        module_budget_mib: 2048,
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
            assert!(!p.bf16 || p.f16, "{}: bf16 hardware also has f16", p.name);
        }
        assert!(super::profile("nonexistent").is_none());
    }
}
