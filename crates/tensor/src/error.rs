//! Typed errors of the tensor crate.

use thiserror::Error;

/// Everything that can go wrong in the engine because of what a caller asked for.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum TensorError {
    /// A layer cannot take the shape it is given (e.g. the image is too small for
    /// a valid 3x3 convolution, or a dense layer expects a different width).
    #[error("layer {index} ({kind}): {message}")]
    Shape {
        /// Position of the layer in the model's flat layer list.
        index: usize,
        /// The layer's kind, e.g. `conv2d`.
        kind: String,
        /// What did not fit, with the sizes involved.
        message: String,
    },
    /// A tensor handed to the engine has the wrong shape.
    #[error("shape mismatch: {0}")]
    Mismatch(String),
    /// A class label is outside `0..classes`.
    #[error("label {label} is out of range for {classes} classes")]
    Label {
        /// The offending label.
        label: usize,
        /// Number of classes the model outputs.
        classes: usize,
    },
    /// A layer or model option is invalid (zero size, rate outside [0, 1), ...).
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Result alias for the tensor crate.
pub type Result<T> = std::result::Result<T, TensorError>;
