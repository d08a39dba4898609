//! Any bytes as the resume file `classmod train --resume` reads (`OUT.resume`: a safetensors
//! file holding a model file, momentum buffers, the sampler and the run's settings). Must
//! never panic: a typed error naming the file, or a state whose parts agree.
#![no_main]

use std::path::Path;

use classmod_host::train::RunState;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = RunState::from_bytes(data, Path::new("fuzz.resume")) {
        assert_eq!(state.steps_done, state.losses.len());
    }
});
