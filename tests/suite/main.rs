//! The engine's integration tests, one binary (each a module below): one link
//! instead of eight keeps `cargo test` quick to build. The plain Winograd
//! bodies have their own binary (`tests/winograd_portable.rs`): their switch is
//! process-wide.

#[path = "../common/mod.rs"]
mod common;
#[path = "../winograd_support/mod.rs"]
mod winograd_support;

mod architecture;
mod blocks;
mod data_parallel;
mod engine;
mod explain;
mod gradcheck_layers;
mod kernels;
mod modern;
mod mutations;
mod onnx_import;
mod scoring;
mod torch_parity;
mod winograd;
