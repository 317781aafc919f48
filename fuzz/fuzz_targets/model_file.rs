//! Model loading: safetensors bytes, then the `convnet` metadata, then the
//! architecture, then the weights, exactly as `convnet evaluate` loads a file.
#![no_main]
use convnet_io::model_file::{assign_params, parse_meta, parse_tensor_file};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = parse_tensor_file(data) else { return };
    let Ok(meta) = parse_meta(&file.metadata) else { return };
    let Ok(mut model) = meta.build() else { return };
    let _ = assign_params(&mut model, &file.tensors);
});
