//! Any bytes as an image file the device classifies (given, dropped into the watched directory,
//! or a camera frame): the format guessed, the size read from the header and held to the
//! board's limit (Jetson Nano's 4096 x 4096), decoded, resized and laid out for a 3 x 32 x 32
//! input. Must never panic, and no input may allocate past the limit (libFuzzer's -rss_limit_mb).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use classmod_runtime::InputSpec;
use libfuzzer_sys::fuzz_target;

fn file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        dir.join(format!("classmod-fuzz-image-{}", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let spec = InputSpec::new(3, 32, 32, vec![0.5; 3], vec![0.25; 3]);
    std::fs::write(file(), data).unwrap();
    if let Ok(px) =
        classmod_edge::pixels(file(), &spec, classmod_edge::ImageLimits { max_bytes: 64 << 20, max_side: 4096 })
    {
        assert_eq!(px.len(), 3 * 32 * 32);
    }
});
