//! convnet: a convolutional neural network engine with hand-written kernels.
//!
//! This crate re-exports the library crates, so an example or a program of
//! yours needs one dependency:
//!
//! | re-export | crate | what |
//! |---|---|---|
//! | [`tensor`] | `convnet-tensor` | the engine: layers (math) and kernels (speed), the model, gradient checks |
//! | [`optim`] | `convnet-optim` | Adam, AdamW, SGD |
//! | [`data`] | `convnet-data` | folder-per-class datasets: scanning, decoding, batches, augmentation |
//! | [`io`] | `convnet-io` | model files (save, load) and classification metrics |
pub use convnet_data as data;
pub use convnet_io as io;
pub use convnet_optim as optim;
pub use convnet_tensor as tensor;
