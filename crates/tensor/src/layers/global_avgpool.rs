//! Global average pooling: each feature map becomes its mean, `(N, C, H, W)`
//! to `(N, C)` (PyTorch's `AdaptiveAvgPool2d(1)` + `flatten`, Keras'
//! `GlobalAveragePooling2D`). What ResNet puts between its last convolution
//! and its classifier, in place of a flatten: the classifier then has `C`
//! inputs whatever the image size.
//!
//! ```text
//! forward:   y[n, c]       = sum_{h, w} x[n, c, h, w] / (H W)
//! backward:  dx[n, c, h, w] = dy[n, c] / (H W)          (every pixel had weight 1 / (H W))
//! ```
//!
//! ```
//! use convnet_tensor::layers::GlobalAvgPool2d;
//! use convnet_tensor::{Layer, Mode};
//! use ndarray::{ArrayD, IxDyn};
//! let x = ArrayD::from_shape_vec(IxDyn(&[1, 2, 2, 2]), vec![1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 8.0]).unwrap();
//! let mut y = ArrayD::zeros(IxDyn(&[1, 2]));
//! GlobalAvgPool2d.forward(x.view(), y.view_mut(), Mode::Eval);
//! assert_eq!(y.as_slice().unwrap(), &[3.0, 2.0]);
//! ```

use crate::element::Element;
use crate::layer::{expect_rank, slice, slice_mut, Layer, Mode};
use ndarray::{ArrayViewD, ArrayViewMutD};
use rayon::prelude::*;

/// Plain twin of the forward: the mean of each `plane`-long map, in order.
pub fn global_avgpool_naive<T: Element>(x: &[T], plane: usize) -> Vec<T> {
    x.chunks(plane).map(|map| map.iter().fold(T::zero(), |sum, &v| sum + v) / T::from_f64(plane as f64)).collect()
}

/// Global average pooling; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct GlobalAvgPool2d;

impl<T: Element> Layer<T> for GlobalAvgPool2d {
    fn kind(&self) -> &'static str {
        "global_avgpool2d"
    }

    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>, String> {
        expect_rank(input_shape, 3, "a (C, H, W)")?;
        Ok(vec![input_shape[0]])
    }

    fn forward(&mut self, input: ArrayViewD<'_, T>, mut output: ArrayViewMutD<'_, T>, _mode: Mode) {
        let plane: usize = input.shape()[2..].iter().product();
        let scale = T::from_f64(1.0 / plane as f64);
        // y[n, c] = sum x[n, c, :, :] / (H W): one map per element of y, summed in order
        slice_mut(&mut output).par_iter_mut().zip(slice(&input).par_chunks(plane)).for_each(|(y, map)| {
            *y = map.iter().fold(T::zero(), |sum, &v| sum + v) * scale;
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
        let plane: usize = input.shape()[2..].iter().product();
        let scale = T::from_f64(1.0 / plane as f64);
        // forward: y = sum x / (H W), so dx = dy / (H W) at every pixel of the map
        slice_mut(&mut grad_input).par_chunks_mut(plane).zip(slice(&grad_output).par_iter()).for_each(|(dx, &dy)| {
            dx.fill(dy * scale);
        });
    }

    fn backward_needs_output(&self) -> bool {
        false
    }

    fn forward_flops(&self, input_shape: &[usize]) -> u64 {
        input_shape.iter().product::<usize>() as u64
    }
}
