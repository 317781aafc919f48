//! convnet: a convolutional neural network engine with hand-written kernels.
pub use convnet_data as data;
pub use convnet_optim as optim;
pub use convnet_tensor as tensor;
