//! The io crate's integration tests, one binary (each a module below).

mod keras;
mod onnx;
