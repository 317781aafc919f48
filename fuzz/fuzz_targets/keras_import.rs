//! Keras import: bytes as a `.keras` zip archive (config.json and
//! model.weights.h5) or a legacy `.h5` HDF5 file, then the configuration's
//! layers and the weights, exactly as `convnet import-keras` reads a file.
#![no_main]
use convnet_io::keras::import_keras_bytes;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let classes = ["a".to_string(), "b".to_string()];
    let _ = import_keras_bytes(Path::new("fuzz.keras"), data.to_vec(), &classes);
});
