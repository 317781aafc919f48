//! 2-D average pooling with PyTorch's semantics (`nn.AvgPool2d(kernel,
//! stride, padding, ceil_mode, count_include_pad=True)`).
//!
//! ## Math and shapes
//!
//! Input `(N, C, H, W)`, output `(N, C, OH, OW)` (sizes from [`Padding`] and,
//! with `ceil_mode`, [`WindowGeometry::with_ceil_mode`]). For output `(i, j)`
//! the window covers rows `[i*s - pt, i*s - pt + KH)` clipped to the *padded*
//! input `[-pt, H + pt)`, and columns likewise:
//!
//! ```text
//! y[n, c, i, j] = sum over the window's pixels inside the input of x[n, c, ih, iw] / divisor(i, j)
//! divisor(i, j) = rows * cols of the window clipped to the padded input    (count_include_pad, the default)
//!               = rows * cols of the window clipped to the input itself    (count_include_pad = false)
//! ```
//!
//! With the default, zero padding counts as pixels: a 3x3 window at a corner
//! with padding 1 divides 4 real pixels by 9, as PyTorch does (Keras' `same`
//! average pooling divides by 4: that is `count_include_pad = false`).
//!
//! ## Backward
//!
//! The forward was `y = sum(x in window) / divisor`, a linear map, so
//! `dx[ih, iw] += dy[i, j] / divisor(i, j)` for every window containing
//! `(ih, iw)`: each output's gradient is spread evenly over the pixels it
//! averaged, and overlapping windows add.
//!
//! ```
//! use convnet_tensor::layers::AvgPool2d;
//! use convnet_tensor::{Layer, Mode, Padding};
//! use ndarray::{ArrayD, IxDyn};
//! // a 2x2 plane, 2x2 window, stride 1, padding 1: 3x3 windows over the padded plane
//! let mut pool = AvgPool2d::new((2, 2), (1, 1), Padding::Explicit(1, 1)).unwrap();
//! let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 2, 2]), vec![4.0f64, 8.0, 12.0, 16.0]).unwrap();
//! let mut y = ArrayD::zeros(IxDyn(&[1, 1, 3, 3]));
//! pool.forward(x.view(), y.view_mut(), Mode::Eval);
//! // the corner window holds one real pixel and three zeros: 4 / 4 = 1
//! assert_eq!(y.as_slice().unwrap(), &[1.0, 3.0, 2.0, 4.0, 10.0, 6.0, 3.0, 7.0, 4.0]);
//! ```

use crate::element::Element;
use crate::geometry::{Padding, WindowGeometry};
use crate::layer::{slice, slice_mut, Layer, Mode};
use crate::layers::pool_window::PoolWindow;
use ndarray::{ArrayViewD, ArrayViewMutD};
use rayon::prelude::*;

/// The window of output `(i, j)`: input rows `[row0, row1)`, columns
/// `[col0, col1)` (clipped to the input) and its divisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvgWindow {
    /// First input row.
    pub row0: usize,
    /// One past the last input row.
    pub row1: usize,
    /// First input column.
    pub col0: usize,
    /// One past the last input column.
    pub col1: usize,
    /// What the sum is divided by (see the module docs).
    pub divisor: usize,
}

/// The window of output `(i, j)` (see the module docs for the divisor).
pub fn avg_window(geom: &WindowGeometry, i: usize, j: usize, count_include_pad: bool) -> AvgWindow {
    // on one axis: the window [start, start + k) clipped to the padded input, then to the input
    let axis = |out: usize, stride: usize, kernel: usize, pad: usize, len: usize| {
        let start = (out * stride) as isize - pad as isize;
        let end = (start + kernel as isize).min((len + pad) as isize);
        let padded_len = (end - start) as usize;
        let (first, last) = (start.max(0) as usize, end.min(len as isize).max(0) as usize);
        (first, last.max(first), padded_len)
    };
    let (row0, row1, padded_rows) = axis(i, geom.stride_h, geom.kernel_h, geom.pad_top, geom.in_h);
    let (col0, col1, padded_cols) = axis(j, geom.stride_w, geom.kernel_w, geom.pad_left, geom.in_w);
    let divisor = if count_include_pad { padded_rows * padded_cols } else { (row1 - row0) * (col1 - col0) };
    AvgWindow { row0, row1, col0, col1, divisor: divisor.max(1) }
}

/// Plain twin of the forward and backward for `planes` planes of `(H, W)`:
/// returns `(output, grad_input)` for a given `grad_output`.
pub fn avgpool_naive<T: Element>(
    geom: &WindowGeometry,
    count_include_pad: bool,
    planes: usize,
    input: &[T],
    grad_output: &[T],
) -> (Vec<T>, Vec<T>) {
    let (in_plane, out_plane) = (geom.in_h * geom.in_w, geom.out_pixels());
    let mut output = vec![T::zero(); planes * out_plane];
    let mut grad_input = vec![T::zero(); planes * in_plane];
    for p in 0..planes {
        for i in 0..geom.out_h {
            for j in 0..geom.out_w {
                let window = avg_window(geom, i, j, count_include_pad);
                let scale = T::from_f64(1.0 / window.divisor as f64);
                let out_index = p * out_plane + i * geom.out_w + j;
                for ih in window.row0..window.row1 {
                    for iw in window.col0..window.col1 {
                        let index = p * in_plane + ih * geom.in_w + iw;
                        output[out_index] += input[index] * scale;
                        grad_input[index] += grad_output[out_index] * scale;
                    }
                }
            }
        }
    }
    (output, grad_input)
}

/// An average-pooling layer; see the module docs.
#[derive(Debug, Clone)]
pub struct AvgPool2d {
    /// Size, stride, padding and ceil mode.
    window: PoolWindow,
    count_include_pad: bool,
}

impl AvgPool2d {
    /// Window `pool`, `stride`, `padding`; `ceil_mode` off and
    /// `count_include_pad` on (PyTorch's defaults).
    pub fn new(pool: (usize, usize), stride: (usize, usize), padding: Padding) -> crate::error::Result<Self> {
        Ok(AvgPool2d { window: PoolWindow::new("average pooling", pool, stride, padding)?, count_include_pad: true })
    }

    /// PyTorch's `ceil_mode` ([`WindowGeometry::with_ceil_mode`]).
    pub fn with_ceil_mode(mut self, ceil_mode: bool) -> Self {
        self.window.ceil_mode = ceil_mode;
        self
    }

    /// PyTorch's `count_include_pad` (see the module docs).
    pub fn with_count_include_pad(mut self, count_include_pad: bool) -> Self {
        self.count_include_pad = count_include_pad;
        self
    }

    fn geometry(&self, shape: &[usize]) -> Option<WindowGeometry> {
        self.window.geometry(shape)
    }
}

impl<T: Element> Layer<T> for AvgPool2d {
    fn kind(&self) -> &'static str {
        "avgpool2d"
    }

    fn describe(&self) -> String {
        let count = if self.count_include_pad { "" } else { ", padding not counted" };
        format!("{}{count}", self.window.describe())
    }

    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>, String> {
        self.window.output_shape(input_shape, "")
    }

    fn forward_flops(&self, input_shape: &[usize]) -> u64 {
        self.window.window_ops(input_shape)
    }

    fn forward(&mut self, input: ArrayViewD<'_, T>, mut output: ArrayViewMutD<'_, T>, _mode: Mode) {
        let geom = self.geometry(input.shape()).expect("avgpool2d: input shape was not validated");
        let (in_plane, out_plane) = (geom.in_h * geom.in_w, geom.out_pixels());
        let count_include_pad = self.count_include_pad;
        // one task per (image, channel) plane; y[i, j] = sum(window) / divisor
        slice_mut(&mut output).par_chunks_mut(out_plane).zip(slice(&input).par_chunks(in_plane)).for_each(
            |(out, plane)| {
                for (index, y) in out.iter_mut().enumerate() {
                    let window = avg_window(&geom, index / geom.out_w, index % geom.out_w, count_include_pad);
                    let mut sum = T::zero();
                    for row in window.row0..window.row1 {
                        let start = row * geom.in_w;
                        sum = plane[start + window.col0..start + window.col1].iter().fold(sum, |acc, &v| acc + v);
                    }
                    *y = sum * T::from_f64(1.0 / window.divisor as f64);
                }
            },
        );
    }

    fn backward(
        &mut self,
        input: ArrayViewD<'_, T>,
        _output: ArrayViewD<'_, T>,
        grad_output: ArrayViewD<'_, T>,
        grad_input: Option<ArrayViewMutD<'_, T>>,
    ) {
        let Some(mut grad_input) = grad_input else { return };
        let geom = self.geometry(input.shape()).expect("avgpool2d: input shape was not validated");
        let (in_plane, out_plane) = (geom.in_h * geom.in_w, geom.out_pixels());
        let count_include_pad = self.count_include_pad;
        // forward: y[i, j] = sum(window) / divisor, so dx[window] += dy[i, j] / divisor
        slice_mut(&mut grad_input).par_chunks_mut(in_plane).zip(slice(&grad_output).par_chunks(out_plane)).for_each(
            |(dx, dy)| {
                dx.fill(T::zero());
                for (index, &dy) in dy.iter().enumerate() {
                    let window = avg_window(&geom, index / geom.out_w, index % geom.out_w, count_include_pad);
                    let share = dy * T::from_f64(1.0 / window.divisor as f64);
                    for row in window.row0..window.row1 {
                        let start = row * geom.in_w;
                        dx[start + window.col0..start + window.col1].iter_mut().for_each(|d| *d += share);
                    }
                }
            },
        );
    }

    fn backward_needs_output(&self) -> bool {
        false
    }
}
