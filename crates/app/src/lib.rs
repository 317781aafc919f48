//! The `convnet` command's implementation, as a library so that the fuzz
//! targets and tests can reach the model-file loader and the architecture
//! parser. The binary (`main.rs`) only calls [`cli::run`].

pub mod bench;
pub mod cli;
pub mod doctor;
pub mod inspect;
pub mod metrics;
pub mod model_io;
pub mod predict;
pub mod render;
pub mod summary;
pub mod train;
