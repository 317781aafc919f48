//! Flatten: `(N, C, H, W)` to `(N, C*H*W)`.
//!
//! Element `(n, c, h, w)` goes to feature `(c*H + h)*W + w`: C, H, W order, which
//! is PyTorch's `nn.Flatten` on NCHW. (Keras flattens NHWC tensors in H, W, C
//! order; weights of the first dense layer after a flatten must be permuted when
//! moving between the two.) Because activations are row-major, the order of the
//! elements does not change: forward and backward are plain copies from one
//! buffer to the next (`memcpy`), no gather.
//!
//! ```text
//! forward:  y[n, (c*H + h)*W + w] = x[n, c, h, w]
//! backward: dx[n, c, h, w] = dy[n, (c*H + h)*W + w]
//! ```

use crate::element::Element;
use crate::layer::{slice, slice_mut, Layer, Mode};
use ndarray::{ArrayViewD, ArrayViewMutD};

/// The flatten layer.
#[derive(Debug, Default, Clone, Copy)]
pub struct Flatten;

impl<T: Element> Layer<T> for Flatten {
    fn kind(&self) -> &'static str {
        "flatten"
    }

    fn backward_needs_output(&self) -> bool {
        false
    }

    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>, String> {
        Ok(vec![input_shape.iter().product()])
    }

    fn forward(&mut self, input: ArrayViewD<'_, T>, mut output: ArrayViewMutD<'_, T>, _mode: Mode) {
        slice_mut(&mut output).copy_from_slice(slice(&input));
    }

    fn backward(
        &mut self,
        _input: ArrayViewD<'_, T>,
        _output: ArrayViewD<'_, T>,
        grad_output: ArrayViewD<'_, T>,
        grad_input: Option<ArrayViewMutD<'_, T>>,
    ) {
        if let Some(mut grad_input) = grad_input {
            slice_mut(&mut grad_input).copy_from_slice(slice(&grad_output));
        }
    }
}
