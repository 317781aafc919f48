//! The TOML architecture parser and model construction for a small input.
#![no_main]
use convnet_tensor::ModelSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(spec) = ModelSpec::from_toml(text) else { return };
    let _ = spec.build::<f32>(&[3, 32, 32], 4, 0);
});
