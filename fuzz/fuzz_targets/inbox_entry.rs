//! Any bytes as a file dropped into the device's inbox, through everything the device does with
//! it: the kind and length from the header, `inbox::examine` on the real file, and, when it is a
//! complete blob, the whole update transaction of a runtime serving a real packed directory (a
//! mask and a compact module), through a file system that keeps nothing. Must never panic, and
//! no input may change what the runtime serves.
#![no_main]

use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use classmod_edge::inbox::{examine, Entry};
use classmod_runtime::testing::{compact_fixture, config};
use classmod_runtime::{declared_len, DurableFs, ModuleRuntime, UpdateKind};
use libfuzzer_sys::fuzz_target;

/// Accepts every write and keeps nothing: the device directory stays as packed.
struct Nowhere;

impl DurableFs for Nowhere {
    fn write_file(&mut self, _: &Path, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn sync_file(&mut self, _: &Path) -> io::Result<()> {
        Ok(())
    }
    fn rename(&mut self, _: &Path, _: &Path) -> io::Result<()> {
        Ok(())
    }
    fn sync_dir(&mut self, _: &Path) -> io::Result<()> {
        Ok(())
    }
    fn remove(&mut self, _: &Path) -> io::Result<()> {
        Ok(())
    }
}

struct Device {
    runtime: ModuleRuntime,
    entry: PathBuf,
    scratch: PathBuf,
}

fn device() -> &'static Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(|| {
        let f = compact_fixture();
        let runtime = ModuleRuntime::open(&f.dir, config(None, None)).unwrap();
        runtime.load("a").unwrap();
        runtime.load("b").unwrap();
        // On tmpfs where there is one: one write per input.
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        let name = |what: &str| dir.join(format!("classmod-fuzz-{what}-{}", std::process::id()));
        Device { runtime, entry: name("entry.blob"), scratch: name("scratch.tmp") }
    })
}

fuzz_target!(|data: &[u8]| {
    let d = device();
    let _ = UpdateKind::of(data);
    let _ = declared_len(data);
    std::fs::write(&d.entry, data).unwrap();
    if let Entry::Ready(_, bytes) = examine(&d.entry, 1 << 20, &d.scratch) {
        let generation = d.runtime.snapshot().generation();
        if d.runtime.apply_update(&mut Nowhere, bytes.bytes()).is_err() {
            assert_eq!(d.runtime.snapshot().generation(), generation, "a refused update changed the served set");
        }
    }
});
