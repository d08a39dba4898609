//! Any text as a device manifest. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = classmod_runtime::Manifest::from_json(text);
    }
});
