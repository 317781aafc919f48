//! 2-D max-pooling.
//!
//! ## Math and shapes
//!
//! Input `(N, C, H, W)`, output `(N, C, OH, OW)` (sizes from [`Padding`]):
//!
//! ```text
//! y[n, c, i, j] = max over (ki, kj) in the window of x[n, c, i*s + ki - pt, j*s + kj - pl]
//! ```
//!
//! Positions in the padding are not candidates (as in Keras: padding never wins,
//! even against negative inputs). Each channel is pooled separately.
//!
//! The forward pass records, for every output element, the flat index
//! `ih * W + iw` of the winning input in its channel plane (`argmax`, 4 bytes
//! per output; no masks the size of the input).
//!
//! **Ties** go to the first position in row-major window order (top-left first):
//! the comparison is a strict `>`, so a later equal value never displaces an
//! earlier one. PyTorch does the same.
//!
//! ## Backward
//!
//! In the forward pass this was `y = x[argmax]`, so now
//! `dx[argmax] += dy`: each output gradient goes, whole, to the one input that
//! won its window, and every other input of the window gets nothing. (A gradient
//! of 1/4 to each of the four inputs of a 2x2 window would be the gradient of
//! *average* pooling: wrong here.) Overlapping windows (stride < pool) can route
//! several gradients to the same input; they add.
//!
//! ```
//! use convnet_tensor::{Layer, MaxPool2d, Mode, Padding};
//! use convnet_tensor::ndarray::{Array4, ArrayD, IxDyn};
//! let mut pool = MaxPool2d::new((2, 2), (2, 2), Padding::Valid).unwrap();
//! // one 2x4 plane: windows [1 5; 3 5] (a tie at 5) and [2 0; 7 -1]
//! let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 2, 4]), vec![1.0f64, 5., 2., 0., 3., 5., 7., -1.]).unwrap();
//! let mut y = ArrayD::zeros(IxDyn(&[1, 1, 1, 2]));
//! pool.forward(x.view(), y.view_mut(), Mode::Eval);
//! assert_eq!(y.as_slice().unwrap(), &[5.0, 7.0]);
//! let dy = ArrayD::from_shape_vec(IxDyn(&[1, 1, 1, 2]), vec![10.0, 20.0]).unwrap();
//! let mut dx = ArrayD::zeros(IxDyn(&[1, 1, 2, 4]));
//! pool.backward(x.view(), y.view(), dy.view(), Some(dx.view_mut()));
//! // the tie went to the first 5 (row 0), the 7 took the second gradient
//! assert_eq!(dx.as_slice().unwrap(), &[0.0, 10., 0., 0., 0., 0., 20., 0.]);
//! ```

use crate::element::Element;
use crate::geometry::{Padding, WindowGeometry};
use crate::kernels::pool2x2::{is_fast_2x2, pool_plane_2x2};
use crate::kernels::pool_separable::{pool_plane_separable, pool_plane_values, RowMaxima};
use crate::layer::{expect_rank, slice, slice_mut, KinkRecorder, Layer, Mode};
use crate::layers::pool_window::PoolWindow;
use ndarray::{ArrayViewD, ArrayViewMutD};
use rayon::prelude::*;

/// Plain twin of the max-pool forward and backward for one batch: recomputes
/// every window from the definition. `input` is `(N*C, H, W)` planes.
/// Returns `(output, grad_input)` for a given `grad_output`.
pub fn maxpool_naive<T: Element>(
    geom: &WindowGeometry,
    planes: usize,
    input: &[T],
    grad_output: &[T],
) -> (Vec<T>, Vec<T>) {
    let mut output = vec![T::zero(); planes * geom.out_pixels()];
    let mut grad_input = vec![T::zero(); planes * geom.in_h * geom.in_w];
    for p in 0..planes {
        for i in 0..geom.out_h {
            for j in 0..geom.out_w {
                let mut best: Option<(T, usize)> = None;
                for ki in 0..geom.kernel_h {
                    for kj in 0..geom.kernel_w {
                        let ih = (i * geom.stride_h + ki) as isize - geom.pad_top as isize;
                        let iw = (j * geom.stride_w + kj) as isize - geom.pad_left as isize;
                        if ih < 0 || iw < 0 || ih >= geom.in_h as isize || iw >= geom.in_w as isize {
                            continue;
                        }
                        let index = (p * geom.in_h + ih as usize) * geom.in_w + iw as usize;
                        if best.is_none_or(|(value, _)| input[index] > value) {
                            best = Some((input[index], index));
                        }
                    }
                }
                let (value, index) = best.expect("every window holds an input");
                let out_index = (p * geom.out_h + i) * geom.out_w + j;
                output[out_index] = value;
                grad_input[index] += grad_output[out_index];
            }
        }
    }
    (output, grad_input)
}

/// A max-pooling layer; see the module docs.
#[derive(Debug)]
pub struct MaxPool2d {
    /// Size, stride, padding and ceil mode.
    window: PoolWindow,
    /// `(N, C, OH, OW)` flat indices `ih * W + iw` of the winners of the last forward.
    argmax: Vec<u32>,
}

impl MaxPool2d {
    /// A pooling layer with window `pool` and `stride` (Keras' default stride is
    /// the pool size).
    pub fn new(pool: (usize, usize), stride: (usize, usize), padding: Padding) -> crate::error::Result<Self> {
        Ok(MaxPool2d { window: PoolWindow::new("max-pooling", pool, stride, padding)?, argmax: Vec::new() })
    }

    /// The same pool with PyTorch's `ceil_mode` on or off (off by default).
    pub fn with_ceil_mode(mut self, ceil_mode: bool) -> Self {
        self.window.ceil_mode = ceil_mode;
        self
    }

    /// Whether this is a plain `n x n` pool at stride `n` without padding or
    /// ceil mode (what inference can fuse into a convolution before it);
    /// `Some(n)` if so.
    pub fn plain_square(&self) -> Option<usize> {
        let w = &self.window;
        let unpadded = matches!(w.padding, Padding::Valid | Padding::Explicit(0, 0));
        (w.pool.0 == w.pool.1 && w.stride == w.pool && unpadded && !w.ceil_mode).then_some(w.pool.0)
    }

    /// The window geometry on an `(N, C, H, W)` input (each plane pooled on its own).
    pub fn geometry(&self, shape: &[usize]) -> Option<WindowGeometry> {
        self.window.geometry(shape)
    }

    /// Drops the winners the last forward pass recorded: inference, which
    /// computes the pool's values without them (here, or inside the
    /// convolution before it), leaves none a backward pass could misread.
    pub fn clear_winners(&mut self) {
        self.argmax.clear();
    }

    /// Inference's forward ([`crate::model::Plan::inference_forward`]): the
    /// output of [`Layer::forward`], bit for bit, without recording the
    /// winners, which only a backward pass reads (none may follow this call:
    /// the recorded winners are dropped). `input` is `(N, C, H, W)`.
    pub fn forward_values<T: Element>(&mut self, input: ArrayViewD<'_, T>, mut output: ArrayViewMutD<'_, T>) {
        let geom = self.geometry(input.shape()).expect("maxpool2d: input shape was not validated");
        let (in_plane, out_plane) = (geom.in_h * geom.in_w, geom.out_pixels());
        self.clear_winners();
        slice(&input)
            .par_chunks(in_plane)
            .zip(slice_mut(&mut output).par_chunks_mut(out_plane))
            .for_each_init(Vec::new, |row_max, (plane, out)| pool_plane_values(&geom, plane, out, row_max));
    }

    /// [`Layer::backward`], followed by the backward of a ReLU before this
    /// layer: `grad_input` is also zeroed wherever `input` (the ReLU's output)
    /// is not positive. Max-pooling does it almost for free: its gradient
    /// reaches only each window's winner, and a winner is positive iff the pooled
    /// output is, so it masks with its own small `output` instead of the ReLU
    /// making a pass over the full-size gradient. The model's plan calls it for
    /// a ReLU -> max-pool pair.
    pub fn backward_through_relu<T: Element>(
        &self,
        input: ArrayViewD<'_, T>,
        output: ArrayViewD<'_, T>,
        grad_output: ArrayViewD<'_, T>,
        grad_input: Option<ArrayViewMutD<'_, T>>,
    ) {
        self.backward_impl(input, Some(output), grad_output, grad_input);
    }

    /// Backward; with `relu_mask = Some(output)`, also the backward of a ReLU
    /// before this layer (see [`MaxPool2d::backward_through_relu`]).
    fn backward_impl<T: Element>(
        &self,
        input: ArrayViewD<'_, T>,
        relu_mask: Option<ArrayViewD<'_, T>>,
        grad_output: ArrayViewD<'_, T>,
        grad_input: Option<ArrayViewMutD<'_, T>>,
    ) {
        let Some(mut grad_input) = grad_input else { return };
        let geom = self.geometry(input.shape()).expect("maxpool2d: input shape was not validated");
        let (in_plane, out_plane) = (geom.in_h * geom.in_w, geom.out_pixels());
        let pooled = relu_mask.as_ref().map(slice);
        assert_eq!(self.argmax.len(), grad_output.len(), "maxpool2d: backward without a recording forward");
        slice_mut(&mut grad_input)
            .par_chunks_mut(in_plane)
            .zip(slice(&grad_output).par_chunks(out_plane))
            .zip(self.argmax.par_chunks(out_plane))
            .enumerate()
            .for_each(|(plane, ((dx, dy), argmax))| {
                dx.fill(T::zero());
                match pooled {
                    Some(pooled) => {
                        // the ReLU before: `x = max(z, 0)`, so `dz = dx` where x > 0; the
                        // only nonzero dx is at the winner, and x[winner] is the pooled y
                        let y = &pooled[plane * out_plane..(plane + 1) * out_plane];
                        for ((&winner, &gradient), &y) in argmax.iter().zip(dy).zip(y) {
                            dx[winner as usize] += if y > T::zero() { gradient } else { T::zero() };
                        }
                    }
                    None => {
                        // in the forward pass this was `y = x[argmax]`, so now `dx[argmax] += dy`
                        for (&winner, &gradient) in argmax.iter().zip(dy) {
                            dx[winner as usize] += gradient;
                        }
                    }
                }
            });
    }

    /// The arg-max indices recorded by the last forward pass, `(N, C, OH, OW)`.
    pub fn argmax(&self) -> &[u32] {
        &self.argmax
    }
}

/// Pools one channel plane: `plane` is `(H, W)`, `out` and `argmax` are `(OH, OW)`.
/// Both fast paths are held to [`maxpool_naive`] (`tests/suite/kernels.rs`).
fn pool_plane<T: Element>(
    geom: &WindowGeometry,
    plane: &[T],
    out: &mut [T],
    argmax: &mut [u32],
    scratch: &mut RowMaxima<T>,
) {
    if is_fast_2x2(geom) {
        pool_plane_2x2(geom, plane, out, argmax)
    } else {
        pool_plane_separable(geom, plane, out, argmax, scratch)
    }
}

impl<T: Element> Layer<T> for MaxPool2d {
    fn kind(&self) -> &'static str {
        "maxpool2d"
    }

    fn describe(&self) -> String {
        self.window.describe()
    }

    fn backward_needs_output(&self) -> bool {
        false
    }

    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>, String> {
        expect_rank(input_shape, 3, "a (C, H, W)")?;
        if input_shape[1] * input_shape[2] > u32::MAX as usize {
            return Err("input plane too large".into());
        }
        self.window.output_shape(input_shape, " (valid padding)")
    }

    fn forward_flops(&self, input_shape: &[usize]) -> u64 {
        // comparisons, not multiply-adds; counted as one op per window element
        self.window.window_ops(input_shape)
    }

    fn forward(&mut self, input: ArrayViewD<'_, T>, mut output: ArrayViewMutD<'_, T>, _mode: Mode) {
        let geom = self.geometry(input.shape()).expect("maxpool2d: input shape was not validated");
        let (in_plane, out_plane) = (geom.in_h * geom.in_w, geom.out_pixels());
        let output = slice_mut(&mut output);
        self.argmax.resize(output.len(), 0);
        // one task per (image, channel) plane
        slice(&input)
            .par_chunks(in_plane)
            .zip(output.par_chunks_mut(out_plane))
            .zip(self.argmax.par_chunks_mut(out_plane))
            .for_each_init(
                || (Vec::new(), Vec::new()),
                |scratch, ((plane, out), argmax)| pool_plane(&geom, plane, out, argmax, scratch),
            );
    }

    fn backward(
        &mut self,
        input: ArrayViewD<'_, T>,
        _output: ArrayViewD<'_, T>,
        grad_output: ArrayViewD<'_, T>,
        grad_input: Option<ArrayViewMutD<'_, T>>,
    ) {
        self.backward_impl(input, None, grad_output, grad_input);
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn record_kinks(&self, _input: ArrayViewD<'_, T>, recorder: &mut KinkRecorder) {
        for &winner in &self.argmax {
            recorder.record(winner as u64);
        }
    }
}
