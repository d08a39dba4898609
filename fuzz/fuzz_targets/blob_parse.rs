//! Any bytes through everything a device does with a blob file: layout, hash, signature checks,
//! every tensor, and decoding as a module and as a base model. Must never panic.
#![no_main]

use classmod_blob::{AlignedBytes, Blob, SigningKey};
use classmod_runtime::host::ModuleBlob;
use classmod_runtime::Device;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // 8-byte aligned, as a mapping is.
    let store = AlignedBytes::new(data);
    let Ok(blob) = Blob::parse(store.bytes()) else { return };
    let _ = blob.verify_content();
    let _ = blob.verify_signature(Some(&SigningKey::from_bytes(&[1; 32]).verifying_key()));
    for t in blob.tensors() {
        let _ = t.to_f32();
    }
    let _ = ModuleBlob::decode(&blob);
    let _ = classmod_runtime::host::base_blob::decode(&blob, &Device::Cpu);
});
