//! ONNX import: bytes to the protobuf reader, then the graph's sorting and
//! walk, then model construction and weights, exactly as `convnet
//! import-onnx` reads a file (external data would be read from a folder that
//! does not exist).
#![no_main]
use convnet_io::onnx_import::{import_model, OnnxImport};
use convnet_io::onnx_proto::decode_model;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(model) = decode_model(data) else { return };
    let _ = import_model(&model, Path::new("/nonexistent/convnet-fuzz"), &OnnxImport::default());
});
