//! Softmax over the last axis, for inference (training uses the fused
//! [`crate::SoftmaxCrossEntropy`], which is cheaper and more stable).
//!
//! ```text
//! x, y: (N, K)
//! y[n, k] = exp(x[n, k] - m) / sum_j exp(x[n, j] - m),   m = max_j x[n, j]
//! ```
//!
//! Subtracting the row maximum changes nothing mathematically (it cancels) but
//! keeps `exp` from overflowing: the largest exponent is `exp(0) = 1`.
//!
//! Backward (the Jacobian of softmax is `diag(y) - y y^T`):
//!
//! ```text
//! dx[n, k] = y[n, k] * (dy[n, k] - sum_j dy[n, j] * y[n, j])
//! ```
//!
//! ```
//! use convnet_tensor::{Layer, Mode, Softmax};
//! use convnet_tensor::ndarray::{array, Array2};
//! // logits this large would overflow a naive exp
//! let x = array![[1000.0f64, 1000.0, 1000.0 + 2.0f64.ln()]].into_dyn();
//! let mut y = Array2::zeros((1, 3)).into_dyn();
//! Softmax.forward(x.view(), y.view_mut(), Mode::Eval);
//! for (got, want) in y.iter().zip([0.25, 0.25, 0.5]) {
//!     assert!((got - want).abs() < 1e-12, "{got} vs {want}");
//! }
//! ```

use crate::element::Element;
use crate::layer::{expect_rank, slice, slice_mut, Layer, Mode};
use ndarray::{ArrayViewD, ArrayViewMutD};

/// The softmax layer (over the last axis).
#[derive(Debug, Default, Clone, Copy)]
pub struct Softmax;

/// Softmax of one row, stable: `probs = exp(logits - max) / sum`.
pub fn softmax_row<T: Element>(logits: &[T], probs: &mut [T]) {
    let max = logits.iter().fold(T::neg_infinity(), |m, &v| if v > m { v } else { m });
    let mut sum = T::zero();
    for (p, &z) in probs.iter_mut().zip(logits) {
        *p = (z - max).exp();
        sum += *p;
    }
    for p in probs.iter_mut() {
        *p /= sum;
    }
}

impl<T: Element> Layer<T> for Softmax {
    fn kind(&self) -> &'static str {
        "softmax"
    }

    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>, String> {
        expect_rank(input_shape, 1, "a flat (classes,)")?;
        Ok(input_shape.to_vec())
    }

    fn forward(&mut self, input: ArrayViewD<'_, T>, mut output: ArrayViewMutD<'_, T>, _mode: Mode) {
        let classes = *input.shape().last().unwrap_or(&1);
        for (x, y) in slice(&input).chunks(classes).zip(slice_mut(&mut output).chunks_mut(classes)) {
            softmax_row(x, y);
        }
    }

    fn backward(
        &mut self,
        _input: ArrayViewD<'_, T>,
        output: ArrayViewD<'_, T>,
        grad_output: ArrayViewD<'_, T>,
        grad_input: Option<ArrayViewMutD<'_, T>>,
    ) {
        let Some(mut grad_input) = grad_input else { return };
        let classes = *output.shape().last().unwrap_or(&1);
        let rows = slice(&output).chunks(classes).zip(slice(&grad_output).chunks(classes));
        for ((y, dy), dx) in rows.zip(slice_mut(&mut grad_input).chunks_mut(classes)) {
            let dot = y.iter().zip(dy).fold(T::zero(), |sum, (&y, &dy)| sum + y * dy);
            for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
                *dx = y * (dy - dot);
            }
        }
    }
}
