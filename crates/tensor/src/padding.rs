//! Padding modes with Keras semantics, shared by convolution and pooling.
//!
//! For one spatial axis of length `input`, window `kernel` and stride `stride`:
//!
//! - [`Padding::Valid`]: no padding; `out = floor((input - kernel) / stride) + 1`,
//!   and the input must be at least `kernel` long.
//! - [`Padding::Same`]: `out = ceil(input / stride)`; the total padding is
//!   `max((out - 1) * stride + kernel - input, 0)`, of which `total / 2` goes
//!   before (top/left) and the rest after (bottom/right). When the total is odd
//!   the extra row/column is at the *end*, exactly as in TensorFlow/Keras
//!   (PyTorch's `padding=1` is symmetric, which agrees for odd kernels at
//!   stride 1).
//!
//! ```
//! use convnet_tensor::Padding;
//! assert_eq!(Padding::Valid.resolve(224, 3, 1), Some((222, 0)));
//! assert_eq!(Padding::Same.resolve(28, 3, 1), Some((28, 1)));
//! // 5 with kernel 2, stride 2: out 3, total pad 1, all of it after.
//! assert_eq!(Padding::Same.resolve(5, 2, 2), Some((3, 0)));
//! assert_eq!(Padding::Valid.resolve(2, 3, 1), None);
//! ```

use serde::{Deserialize, Serialize};

/// How a window layer treats the border.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    /// No padding: windows lie entirely inside the input.
    #[default]
    Valid,
    /// Pad so that `out = ceil(input / stride)`; odd padding puts the extra at the end.
    Same,
}

impl Padding {
    /// Output length and padding before the first element, or `None` if the input
    /// is too short (valid) or an argument is zero.
    pub fn resolve(self, input: usize, kernel: usize, stride: usize) -> Option<(usize, usize)> {
        if input == 0 || kernel == 0 || stride == 0 {
            return None;
        }
        match self {
            Padding::Valid => {
                if input < kernel {
                    None
                } else {
                    Some(((input - kernel) / stride + 1, 0))
                }
            }
            Padding::Same => {
                let out = input.div_ceil(stride);
                let total = ((out - 1) * stride + kernel).saturating_sub(input);
                Some((out, total / 2))
            }
        }
    }

    /// `"valid"` or `"same"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Padding::Valid => "valid",
            Padding::Same => "same",
        }
    }
}
