//! Rectified linear unit.
//!
//! ```text
//! y = max(x, 0)                    any shape; output shape = input shape
//! dx = dy * [x > 0]                (the derivative at exactly 0 is taken as 0, as in PyTorch)
//! ```
//!
//! Inside a model the plan ([`crate::model::plan`]) runs a ReLU in place
//! ([`Relu::forward_in_place`]): its output overwrites its input, and backward
//! reads the mask from the output, since `y > 0` exactly where `x > 0`. That
//! saves one activation buffer per ReLU (600 MB of the `baseline` at 224x224,
//! batch 32).
//!
//! Better still, a ReLU costs nothing of its own next to the layers that can
//! do its work: a convolution before it clamps each tile of its output while it
//! is in cache ([`crate::Conv2d::forward_fused_relu`]), and a max-pool after it
//! masks its own winners ([`crate::MaxPool2d::backward_through_relu`]); this
//! layer's passes are then skipped. Alone, it is the plain layer below.
//!
//! ReLU has a kink at 0: a numerical gradient across it is meaningless, so the
//! layer reports the sign pattern of its input to [`crate::gradcheck`] (see
//! [`crate::layer`]).
//!
//! ```
//! use convnet_tensor::{Layer, Mode, Relu};
//! use convnet_tensor::ndarray::{array, Array1};
//! let x = array![-2.0f32, 0.0, 3.0].into_dyn();
//! let mut y = Array1::zeros(3).into_dyn();
//! Relu.forward(x.view(), y.view_mut(), Mode::Eval);
//! assert_eq!(y, array![0.0f32, 0.0, 3.0].into_dyn());
//! let dy = array![5.0f32, 5.0, 5.0].into_dyn();
//! let mut dx = Array1::zeros(3).into_dyn();
//! Relu.backward(x.view(), y.view(), dy.view(), Some(dx.view_mut()));
//! assert_eq!(dx, array![0.0f32, 0.0, 5.0].into_dyn());
//! ```

use crate::element::Element;
use crate::layer::{slice, slice_mut, KinkRecorder, Layer, Mode};
use ndarray::{ArrayViewD, ArrayViewMutD};
use rayon::prelude::*;

/// Elements per parallel task for elementwise layers: large enough to amortise
/// scheduling, small enough to spread a 400 MB activation over all cores.
pub(crate) const ELEMENTWISE_CHUNK: usize = 1 << 16;

/// The ReLU activation.
#[derive(Debug, Default, Clone, Copy)]
pub struct Relu;

impl Relu {
    /// `data := max(data, 0)`, in place: the model's plan runs a ReLU this way
    /// (sharing one buffer with the layer before) unless that layer needs its
    /// output for its own backward pass.
    pub fn forward_in_place<T: Element>(&self, mut data: ArrayViewMutD<'_, T>) {
        slice_mut(&mut data).par_chunks_mut(ELEMENTWISE_CHUNK).for_each(|values| {
            for v in values {
                *v = if *v > T::zero() { *v } else { T::zero() };
            }
        });
    }

    /// `grad := dL/dx` from `grad = dL/dy` and the output `y`, in place: `y > 0`
    /// exactly where `x > 0`, so the output carries the mask.
    pub fn backward_in_place<T: Element>(&self, output: ArrayViewD<'_, T>, mut grad: ArrayViewMutD<'_, T>) {
        slice_mut(&mut grad)
            .par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(slice(&output).par_chunks(ELEMENTWISE_CHUNK))
            .for_each(|(grad, y)| {
                for (g, &y) in grad.iter_mut().zip(y) {
                    *g = if y > T::zero() { *g } else { T::zero() };
                }
            });
    }
}

impl<T: Element> Layer<T> for Relu {
    fn kind(&self) -> &'static str {
        "relu"
    }

    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>, String> {
        Ok(input_shape.to_vec())
    }

    fn forward(&mut self, input: ArrayViewD<'_, T>, mut output: ArrayViewMutD<'_, T>, _mode: Mode) {
        slice_mut(&mut output)
            .par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(slice(&input).par_chunks(ELEMENTWISE_CHUNK))
            .for_each(|(y, x)| {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = if x > T::zero() { x } else { T::zero() };
                }
            });
    }

    fn backward(
        &mut self,
        input: ArrayViewD<'_, T>,
        _output: ArrayViewD<'_, T>,
        grad_output: ArrayViewD<'_, T>,
        grad_input: Option<ArrayViewMutD<'_, T>>,
    ) {
        let Some(mut grad_input) = grad_input else { return };
        slice_mut(&mut grad_input)
            .par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(slice(&input).par_chunks(ELEMENTWISE_CHUNK))
            .zip(slice(&grad_output).par_chunks(ELEMENTWISE_CHUNK))
            .for_each(|((dx, x), dy)| {
                // in the forward pass this was `y = x if x > 0 else 0`, so `dx = dy if x > 0 else 0`
                for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                    *dx = if x > T::zero() { dy } else { T::zero() };
                }
            });
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn record_kinks(&self, input: ArrayViewD<'_, T>, recorder: &mut KinkRecorder) {
        for &x in input.iter() {
            recorder.record((x > T::zero()) as u64);
        }
    }
}
