//! 2-D convolution by im2col + GEMM.
//!
//! ## The math
//!
//! For an input `x` of shape `(N, C, H, W)`, weights `w` of shape
//! `(OC, C, KH, KW)` and bias `b` of shape `(OC,)`, the output `y` has shape
//! `(N, OC, OH, OW)` with (`s` the stride, `pt`/`pl` the top/left padding of
//! [`Padding`], out-of-range `x` read as 0):
//!
//! ```text
//! y[n, o, i, j] = b[o] + sum_{c, ki, kj} w[o, c, ki, kj] * x[n, c, i*s + ki - pt, j*s + kj - pl]
//! ```
//!
//! (Like every deep-learning framework we compute cross-correlation and call it
//! convolution: the kernel is not flipped.)
//!
//! ## im2col: turning the convolution into one matrix product
//!
//! Gather, for one image, every input patch into a column of a matrix
//! `col` of shape `(C*KH*KW, OH*OW)`: row `r = (c*KH + ki)*KW + kj`, column
//! `p = i*OW + j` holds `x[c, i*s + ki - pt, j*s + kj - pl]`. The weights,
//! read as a matrix `W` of shape `(OC, C*KH*KW)` (that is just their memory
//! layout), then give the whole output of the image in one GEMM:
//!
//! ```text
//! Y (OC, OH*OW) = W (OC, C*KH*KW) * col (C*KH*KW, OH*OW)   (+ b per row)
//! ```
//!
//! A worked example: one channel, a 3x3 input, a 2x2 kernel, stride 1, valid.
//!
//! ```text
//!       x            col (4 x 4): one column per output pixel
//!   1 2 3          (0,0) (0,1) (1,0) (1,1)   <- output pixel
//!   4 5 6     w00:   1     2     4     5
//!   7 8 9     w01:   2     3     5     6
//!             w10:   4     5     7     8
//!             w11:   5     6     8     9
//! ```
//!
//! With `w = [1 0; 0 -1]` (as the row `[1, 0, 0, -1]`), `W * col = [-4 -4 -4 -4]`:
//! every output pixel is `x[i][j] - x[i+1][j+1]`.
//!
//! ```
//! use convnet_tensor::conv::{im2col, ConvGeometry};
//! use convnet_tensor::Padding;
//! let geom = ConvGeometry::new(1, 3, 3, (2, 2), (1, 1), Padding::Valid).unwrap();
//! let x = [1.0f32, 2., 3., 4., 5., 6., 7., 8., 9.];
//! let mut col = vec![0.0f32; 4 * 4];
//! im2col(&geom, &x, 0, geom.out_h, &mut col);
//! assert_eq!(col, [1., 2., 4., 5., 2., 3., 5., 6., 4., 5., 7., 8., 5., 6., 8., 9.]);
//! ```
//!
//! ## Backward
//!
//! The forward line is `Y = W * col + b`, so with `dY = dL/dY` of shape
//! `(OC, OH*OW)`:
//!
//! - `dW += dY * col^T` — shape `(OC, C*KH*KW)`, summed over the batch;
//! - `db += dY * 1` — each row of `dY` summed, over the batch;
//! - `dcol = W^T * dY` — shape `(C*KH*KW, OH*OW)`, and then **col2im**, the
//!   adjoint of im2col, scatters each entry of `dcol` back to the input pixel it
//!   was copied from, *adding* where patches overlap: `dx[c, ih, iw] += dcol[r, p]`.
//!
//! im2col and col2im are adjoint linear maps: `<im2col(x), c> = <x, col2im(c)>`
//! for all `x`, `c`; the tests check exactly that.
//!
//! ## Making it fast
//!
//! - The batch is split across threads, one image per task; each thread owns
//!   its column buffer (see [`crate::scratch`]), so nothing is allocated per batch.
//! - The column matrix of a whole image is large (conv2 of `baseline`:
//!   288 x 48,400 floats = 56 MB), far bigger than any cache, and GEMM would stream
//!   it from memory. Instead we build it a few output rows at a time ("tiles" of
//!   about 1 MB forward, 4 MB backward) and run the GEMMs on each tile while it
//!   is still in cache. The GEMM on a tile writes straight into the right columns
//!   of `Y` (its row stride is `OH*OW`), so tiling changes no result, only speed.
//! - The GEMMs are our own micro-kernels where they beat the general one:
//!   `W * col` and `W^T * dY` multiply the same small weight matrix by every tile,
//!   so it is packed once per pass ([`crate::gemm_packed`]); `dY * col^T` reduces
//!   along the pixel axis, along which both operands lie contiguous, so it is a
//!   block of dot products ([`crate::gemm_nt`]).
//! - Weight gradients are computed per image into their own buffer and summed in
//!   image order afterwards: the result does not depend on the thread count.
//! - In a model, a ReLU that follows is applied in the same pass as the bias
//!   ([`Layer::forward_fused_relu`]), while the tile of `Y` is in cache, instead of
//!   in a pass of its own over the whole output.

use crate::gemm::Trans;
use crate::gemm_nt::gemm_nt;
use crate::gemm_packed::{gemm_packed, PackedA};
use crate::layer::{slice, slice_mut, zeros, Layer, Mode, Param, ParamMut};
use crate::scratch::Scratch;
use crate::{Element, Padding};
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD};
use rayon::prelude::*;

/// Everything about the shapes of one convolution (or any sliding window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Input channels `C`.
    pub in_channels: usize,
    /// Input height `H`.
    pub in_h: usize,
    /// Input width `W`.
    pub in_w: usize,
    /// Kernel height `KH`.
    pub kernel_h: usize,
    /// Kernel width `KW`.
    pub kernel_w: usize,
    /// Vertical stride.
    pub stride_h: usize,
    /// Horizontal stride.
    pub stride_w: usize,
    /// Zero rows added above the input.
    pub pad_top: usize,
    /// Zero columns added left of the input.
    pub pad_left: usize,
    /// Output height `OH`.
    pub out_h: usize,
    /// Output width `OW`.
    pub out_w: usize,
}

impl ConvGeometry {
    /// Resolves the output size and padding; `None` if the input is too small
    /// for the kernel (valid padding) or any size is zero.
    pub fn new(
        in_channels: usize,
        in_h: usize,
        in_w: usize,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: Padding,
    ) -> Option<Self> {
        let (out_h, pad_top) = padding.resolve(in_h, kernel.0, stride.0)?;
        let (out_w, pad_left) = padding.resolve(in_w, kernel.1, stride.1)?;
        if in_channels == 0 {
            return None;
        }
        Some(ConvGeometry {
            in_channels,
            in_h,
            in_w,
            kernel_h: kernel.0,
            kernel_w: kernel.1,
            stride_h: stride.0,
            stride_w: stride.1,
            pad_top,
            pad_left,
            out_h,
            out_w,
        })
    }

    /// Rows of the column matrix: `C * KH * KW`.
    pub fn col_rows(&self) -> usize {
        self.in_channels * self.kernel_h * self.kernel_w
    }

    /// Output pixels per channel: `OH * OW`.
    pub fn out_pixels(&self) -> usize {
        self.out_h * self.out_w
    }

    /// Input elements per image: `C * H * W`.
    pub fn in_len(&self) -> usize {
        self.in_channels * self.in_h * self.in_w
    }

    /// The input column that output column `out_col` reads at kernel column
    /// `kj`, or `None` if it falls in the padding.
    #[inline]
    fn input_col(&self, out_col: usize, kj: usize) -> Option<usize> {
        (out_col * self.stride_w + kj).checked_sub(self.pad_left).filter(|&iw| iw < self.in_w)
    }

    /// Same for rows.
    #[inline]
    fn input_row(&self, out_row: usize, ki: usize) -> Option<usize> {
        (out_row * self.stride_h + ki).checked_sub(self.pad_top).filter(|&ih| ih < self.in_h)
    }

    /// The range of output columns `j` whose input column `j*s + kj - pl` is
    /// inside the image: `[first, end)`.
    #[inline]
    fn valid_out_cols(&self, kj: usize) -> (usize, usize) {
        // j*s + kj >= pl  <=>  j >= ceil((pl - kj) / s)
        let first = self.pad_left.saturating_sub(kj).div_ceil(self.stride_w);
        // j*s + kj - pl <= W - 1  <=>  j <= (W - 1 + pl - kj) / s
        let end = match (self.in_w + self.pad_left).checked_sub(kj + 1) {
            Some(last) => (last / self.stride_w + 1).min(self.out_w),
            None => 0,
        };
        (first.min(end), end)
    }
}

/// Builds output rows `row_start..row_end` of the column matrix of one image.
///
/// - `image` is `(C, H, W)`.
/// - `col` is `(C*KH*KW, (row_end - row_start) * OW)`, row-major; entry
///   `[(c*KH + ki)*KW + kj, (i - row_start)*OW + j]` receives
///   `x[c, i*s + ki - pt, j*s + kj - pl]`, or 0 in the padding.
///
/// Why it is fast: for each (c, ki, kj, i) the inner loop is a run of output
/// columns whose inputs are `s` apart; the in-bounds run is computed once, so
/// the loop body has no branch, and at stride 1 it is a plain `memcpy`.
pub fn im2col<T: Element>(geom: &ConvGeometry, image: &[T], row_start: usize, row_end: usize, col: &mut [T]) {
    let out_w = geom.out_w;
    let tile_cols = (row_end - row_start) * out_w;
    assert!(image.len() >= geom.in_len(), "im2col: image too short");
    assert!(col.len() >= geom.col_rows() * tile_cols, "im2col: col too short");
    for c in 0..geom.in_channels {
        let channel = &image[c * geom.in_h * geom.in_w..(c + 1) * geom.in_h * geom.in_w];
        for ki in 0..geom.kernel_h {
            for kj in 0..geom.kernel_w {
                let r = (c * geom.kernel_h + ki) * geom.kernel_w + kj;
                let col_row = &mut col[r * tile_cols..(r + 1) * tile_cols];
                let (first, end) = geom.valid_out_cols(kj);
                for i in row_start..row_end {
                    let dst = &mut col_row[(i - row_start) * out_w..(i - row_start + 1) * out_w];
                    let Some(ih) = geom.input_row(i, ki) else {
                        dst.fill(T::zero());
                        continue;
                    };
                    let src_row = &channel[ih * geom.in_w..(ih + 1) * geom.in_w];
                    dst[..first].fill(T::zero());
                    dst[end..].fill(T::zero());
                    if first < end {
                        // first input column read by this run
                        let iw0 = first * geom.stride_w + kj - geom.pad_left;
                        if geom.stride_w == 1 {
                            dst[first..end].copy_from_slice(&src_row[iw0..iw0 + (end - first)]);
                        } else {
                            for (offset, value) in dst[first..end].iter_mut().enumerate() {
                                *value = src_row[iw0 + offset * geom.stride_w];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: *adds* each entry of `col` (laid out as in
/// [`im2col`], for output rows `row_start..row_end`) into the image pixel it was
/// read from. Entries that were padding are dropped. `image_grad` is `(C, H, W)`
/// and is accumulated into, never cleared.
pub fn col2im<T: Element>(geom: &ConvGeometry, col: &[T], row_start: usize, row_end: usize, image_grad: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { col2im_avx2(geom, col, row_start, row_end, image_grad) };
    }
    col2im_body(geom, col, row_start, row_end, image_grad)
}

/// [`col2im`] compiled for AVX2: the additions run 8 floats wide instead of
/// the 4 of the baseline x86-64 target (same additions, same order, same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn col2im_avx2<T: Element>(
    geom: &ConvGeometry,
    col: &[T],
    row_start: usize,
    row_end: usize,
    image_grad: &mut [T],
) {
    col2im_body(geom, col, row_start, row_end, image_grad)
}

#[inline(always)]
fn col2im_body<T: Element>(geom: &ConvGeometry, col: &[T], row_start: usize, row_end: usize, image_grad: &mut [T]) {
    let out_w = geom.out_w;
    let tile_cols = (row_end - row_start) * out_w;
    assert!(image_grad.len() >= geom.in_len(), "col2im: image too short");
    assert!(col.len() >= geom.col_rows() * tile_cols, "col2im: col too short");
    for c in 0..geom.in_channels {
        let channel = &mut image_grad[c * geom.in_h * geom.in_w..(c + 1) * geom.in_h * geom.in_w];
        for ki in 0..geom.kernel_h {
            for kj in 0..geom.kernel_w {
                let r = (c * geom.kernel_h + ki) * geom.kernel_w + kj;
                let col_row = &col[r * tile_cols..(r + 1) * tile_cols];
                let (first, end) = geom.valid_out_cols(kj);
                if first >= end {
                    continue;
                }
                for i in row_start..row_end {
                    let Some(ih) = geom.input_row(i, ki) else { continue };
                    let src = &col_row[(i - row_start) * out_w..(i - row_start + 1) * out_w];
                    let dst_row = &mut channel[ih * geom.in_w..(ih + 1) * geom.in_w];
                    let iw0 = first * geom.stride_w + kj - geom.pad_left;
                    // in the forward pass this was `col = x[iw0 + offset*s]`,
                    // so now `dx[iw0 + offset*s] += dcol`
                    if geom.stride_w == 1 {
                        // contiguous on both sides: the compiler vectorises this
                        for (dx, &value) in dst_row[iw0..iw0 + (end - first)].iter_mut().zip(&src[first..end]) {
                            *dx += value;
                        }
                    } else {
                        for (offset, &value) in src[first..end].iter().enumerate() {
                            dst_row[iw0 + offset * geom.stride_w] += value;
                        }
                    }
                }
            }
        }
    }
}

/// Plain twin of [`im2col`]: one element at a time, straight from the definition.
pub fn im2col_naive<T: Element>(geom: &ConvGeometry, image: &[T], row_start: usize, row_end: usize, col: &mut [T]) {
    let tile_cols = (row_end - row_start) * geom.out_w;
    for c in 0..geom.in_channels {
        for ki in 0..geom.kernel_h {
            for kj in 0..geom.kernel_w {
                let r = (c * geom.kernel_h + ki) * geom.kernel_w + kj;
                for i in row_start..row_end {
                    for j in 0..geom.out_w {
                        let value = match (geom.input_row(i, ki), geom.input_col(j, kj)) {
                            (Some(ih), Some(iw)) => image[(c * geom.in_h + ih) * geom.in_w + iw],
                            _ => T::zero(),
                        };
                        col[r * tile_cols + (i - row_start) * geom.out_w + j] = value;
                    }
                }
            }
        }
    }
}

/// Plain twin of [`col2im`].
pub fn col2im_naive<T: Element>(
    geom: &ConvGeometry,
    col: &[T],
    row_start: usize,
    row_end: usize,
    image_grad: &mut [T],
) {
    let tile_cols = (row_end - row_start) * geom.out_w;
    for c in 0..geom.in_channels {
        for ki in 0..geom.kernel_h {
            for kj in 0..geom.kernel_w {
                let r = (c * geom.kernel_h + ki) * geom.kernel_w + kj;
                for i in row_start..row_end {
                    for j in 0..geom.out_w {
                        if let (Some(ih), Some(iw)) = (geom.input_row(i, ki), geom.input_col(j, kj)) {
                            image_grad[(c * geom.in_h + ih) * geom.in_w + iw] +=
                                col[r * tile_cols + (i - row_start) * geom.out_w + j];
                        }
                    }
                }
            }
        }
    }
}

/// Direct-loop convolution of a batch, straight from the formula in the module
/// docs: the twin the im2col + GEMM path is tested against.
/// `input` is `(N, C, H, W)`, `weight` `(OC, C, KH, KW)`, `bias` `(OC,)`,
/// `output` `(N, OC, OH, OW)`.
pub fn conv2d_forward_naive<T: Element>(
    geom: &ConvGeometry,
    batch: usize,
    out_channels: usize,
    input: &[T],
    weight: &[T],
    bias: &[T],
    output: &mut [T],
) {
    let (kh, kw) = (geom.kernel_h, geom.kernel_w);
    for n in 0..batch {
        for o in 0..out_channels {
            for i in 0..geom.out_h {
                for j in 0..geom.out_w {
                    let mut sum = bias[o];
                    for c in 0..geom.in_channels {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                if let (Some(ih), Some(iw)) = (geom.input_row(i, ki), geom.input_col(j, kj)) {
                                    sum += weight[((o * geom.in_channels + c) * kh + ki) * kw + kj]
                                        * input[((n * geom.in_channels + c) * geom.in_h + ih) * geom.in_w + iw];
                                }
                            }
                        }
                    }
                    output[((n * out_channels + o) * geom.out_h + i) * geom.out_w + j] = sum;
                }
            }
        }
    }
}

/// Direct-loop backward of a batch: overwrites `grad_weight` `(OC, C, KH, KW)`,
/// `grad_bias` `(OC,)` and `grad_input` `(N, C, H, W)`.
/// In the forward pass this was `y += w * x`, so now `dw += dy * x` and
/// `dx += dy * w`; and `y = b + ...` gives `db += dy`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_naive<T: Element>(
    geom: &ConvGeometry,
    batch: usize,
    out_channels: usize,
    input: &[T],
    weight: &[T],
    grad_output: &[T],
    grad_weight: &mut [T],
    grad_bias: &mut [T],
    grad_input: &mut [T],
) {
    let (kh, kw) = (geom.kernel_h, geom.kernel_w);
    grad_weight.fill(T::zero());
    grad_bias.fill(T::zero());
    grad_input.fill(T::zero());
    for n in 0..batch {
        for o in 0..out_channels {
            for i in 0..geom.out_h {
                for j in 0..geom.out_w {
                    let dy = grad_output[((n * out_channels + o) * geom.out_h + i) * geom.out_w + j];
                    grad_bias[o] += dy;
                    for c in 0..geom.in_channels {
                        for ki in 0..kh {
                            for kj in 0..kw {
                                if let (Some(ih), Some(iw)) = (geom.input_row(i, ki), geom.input_col(j, kj)) {
                                    let w_index = ((o * geom.in_channels + c) * kh + ki) * kw + kj;
                                    let x_index = ((n * geom.in_channels + c) * geom.in_h + ih) * geom.in_w + iw;
                                    grad_weight[w_index] += dy * input[x_index];
                                    grad_input[x_index] += dy * weight[w_index];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Target size of one column tile in the forward pass, in elements (1 MB of
/// f32: fits in L2 with the tile of `Y`).
const FORWARD_TILE_ELEMENTS: usize = 1 << 18;

/// Target size of one column tile in the backward pass (4 MB of f32). Larger
/// than forward's, measured on `baseline` (conv2 backward, ms per step at 2, 4,
/// 16, 33 output rows per tile, one run each: 809, 650, 622, 692): the weight-gradient dot
/// products get longer (fewer lane reductions and `dW` updates per FLOP), and
/// the column-gradient GEMM writes into the same buffer, so one tile of
/// columns is live at a time.
const BACKWARD_TILE_ELEMENTS: usize = 1 << 20;

/// How many output rows go into one column tile of about `target` elements.
fn tile_rows(geom: &ConvGeometry, target: usize) -> usize {
    (target / (geom.col_rows() * geom.out_w).max(1)).clamp(1, geom.out_h.max(1))
}

/// A 2-D convolution layer (see the module docs for the math).
#[derive(Debug)]
pub struct Conv2d<T: Element> {
    in_channels: usize,
    out_channels: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: Padding,
    /// `(OC, C, KH, KW)`
    weight: ArrayD<T>,
    /// `(OC,)`
    bias: ArrayD<T>,
    grad_weight: ArrayD<T>,
    grad_bias: ArrayD<T>,
    /// Per-thread column buffers.
    col_scratch: Scratch<T>,
    /// The weights as the GEMM's `A`, packed once per pass: `W` `(OC, C*KH*KW)`
    /// for the forward pass, `W^T` for the column gradient.
    packed_weight: PackedA<T>,
    /// Per-image weight and bias gradients `(N, OC*C*KH*KW + OC)`, summed in
    /// image order after the parallel part.
    per_image_grads: Vec<T>,
}

impl<T: Element> Conv2d<T> {
    /// A convolution with zero weights; initialise them with [`crate::init`] or
    /// [`Conv2d::weight_mut`].
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: Padding,
    ) -> crate::Result<Self> {
        if in_channels == 0 || out_channels == 0 || kernel.0 == 0 || kernel.1 == 0 || stride.0 == 0 || stride.1 == 0 {
            return Err(crate::TensorError::Config(format!(
                "conv2d needs positive sizes, got {in_channels} -> {out_channels} channels, kernel {kernel:?}, stride {stride:?}"
            )));
        }
        let weight_shape = [out_channels, in_channels, kernel.0, kernel.1];
        Ok(Conv2d {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
            weight: zeros(&weight_shape),
            bias: zeros(&[out_channels]),
            grad_weight: zeros(&weight_shape),
            grad_bias: zeros(&[out_channels]),
            col_scratch: Scratch::default(),
            packed_weight: PackedA::new(),
            per_image_grads: Vec::new(),
        })
    }

    /// The weights `(OC, C, KH, KW)`.
    pub fn weight(&self) -> &ArrayD<T> {
        &self.weight
    }

    /// Mutable weights.
    pub fn weight_mut(&mut self) -> &mut ArrayD<T> {
        &mut self.weight
    }

    /// Mutable bias `(OC,)`.
    pub fn bias_mut(&mut self) -> &mut ArrayD<T> {
        &mut self.bias
    }

    /// The forward pass; with `fused_relu`, `output = max(conv, 0)`.
    fn forward_impl(&mut self, input: ArrayViewD<'_, T>, mut output: ArrayViewMutD<'_, T>, fused_relu: bool) {
        let geom = self.geometry(input.shape()).expect("conv2d: input shape was not validated");
        let out_channels = self.out_channels;
        let (col_rows, out_pixels) = (geom.col_rows(), geom.out_pixels());
        let rows_per_tile = tile_rows(&geom, FORWARD_TILE_ELEMENTS);
        self.col_scratch.ensure_threads();
        let weight = self.weight.as_slice().expect("weights are contiguous");
        // W (OC, C*KH*KW), packed once for every tile of every image
        self.packed_weight.pack(Trans::No, out_channels, col_rows, weight, col_rows);
        let packed_weight = &self.packed_weight;
        let bias = self.bias.as_slice().expect("bias is contiguous");
        let col_scratch = &self.col_scratch;
        // input is (N, C, H, W), output is (N, OC, OH, OW): one task per image
        slice(&input)
            .par_chunks(geom.in_len())
            .zip(slice_mut(&mut output).par_chunks_mut(out_channels * out_pixels))
            .for_each(|(image, image_out)| {
                col_scratch.with(col_rows * rows_per_tile * geom.out_w, |col_buf| {
                    for row_start in (0..geom.out_h).step_by(rows_per_tile) {
                        let row_end = (row_start + rows_per_tile).min(geom.out_h);
                        let tile_cols = (row_end - row_start) * geom.out_w;
                        let first_col = row_start * geom.out_w;
                        // col_buf is (C*KH*KW, tile_cols)
                        im2col(&geom, image, row_start, row_end, col_buf);
                        // Y[:, tile] (OC, tile_cols) = W (OC, C*KH*KW) * col (C*KH*KW, tile_cols)
                        gemm_packed(
                            packed_weight,
                            tile_cols,
                            col_buf,
                            tile_cols,
                            T::zero(),
                            &mut image_out[first_col..],
                            out_pixels,
                        );
                        // + b (and the fused ReLU, max(y, 0)) while the tile is still in cache
                        for (o, &bias_o) in bias.iter().enumerate() {
                            let row =
                                &mut image_out[o * out_pixels + first_col..o * out_pixels + first_col + tile_cols];
                            add_bias(row, bias_o, fused_relu);
                        }
                    }
                });
            });
    }

    /// The geometry for an `(N, C, H, W)` input.
    fn geometry(&self, shape: &[usize]) -> Option<ConvGeometry> {
        if shape.len() != 4 || shape[1] != self.in_channels {
            return None;
        }
        ConvGeometry::new(self.in_channels, shape[2], shape[3], self.kernel, self.stride, self.padding)
    }
}

impl<T: Element> Layer<T> for Conv2d<T> {
    fn kind(&self) -> &'static str {
        "conv2d"
    }

    fn describe(&self) -> String {
        format!(
            "{} filters, {}x{}, stride {}, {}",
            self.out_channels,
            self.kernel.0,
            self.kernel.1,
            self.stride.0,
            self.padding.as_str()
        )
    }

    fn backward_needs_output(&self) -> bool {
        false
    }

    fn fuses_relu(&self) -> bool {
        true
    }

    fn forward_fused_relu(&mut self, input: ArrayViewD<'_, T>, output: ArrayViewMutD<'_, T>, _mode: Mode) {
        self.forward_impl(input, output, true);
    }

    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>, String> {
        crate::layer::expect_rank(input_shape, 3, "a (C, H, W)")?;
        if input_shape[0] != self.in_channels {
            return Err(format!("expects {} input channels, got {}", self.in_channels, input_shape[0]));
        }
        let geom =
            ConvGeometry::new(self.in_channels, input_shape[1], input_shape[2], self.kernel, self.stride, self.padding)
                .ok_or_else(|| {
                    format!(
                        "a {}x{} input is smaller than the {}x{} kernel (valid padding)",
                        input_shape[1], input_shape[2], self.kernel.0, self.kernel.1
                    )
                })?;
        Ok(vec![self.out_channels, geom.out_h, geom.out_w])
    }

    fn forward_flops(&self, input_shape: &[usize]) -> u64 {
        match ConvGeometry::new(
            self.in_channels,
            input_shape[1],
            input_shape[2],
            self.kernel,
            self.stride,
            self.padding,
        ) {
            Some(geom) => 2 * (self.out_channels * geom.col_rows() * geom.out_pixels()) as u64,
            None => 0,
        }
    }

    fn forward(&mut self, input: ArrayViewD<'_, T>, output: ArrayViewMutD<'_, T>, _mode: Mode) {
        self.forward_impl(input, output, false);
    }

    fn backward(
        &mut self,
        input: ArrayViewD<'_, T>,
        _output: ArrayViewD<'_, T>,
        grad_output: ArrayViewD<'_, T>,
        grad_input: Option<ArrayViewMutD<'_, T>>,
    ) {
        let geom = self.geometry(input.shape()).expect("conv2d: input shape was not validated");
        let batch = input.shape()[0];
        let out_channels = self.out_channels;
        let (col_rows, out_pixels) = (geom.col_rows(), geom.out_pixels());
        let weight_len = out_channels * col_rows;
        let per_image_len = weight_len + out_channels;
        let rows_per_tile = tile_rows(&geom, BACKWARD_TILE_ELEMENTS);
        self.col_scratch.ensure_threads();
        if self.per_image_grads.len() < batch * per_image_len {
            self.per_image_grads.resize(batch * per_image_len, T::zero());
        }
        let weight = self.weight.as_slice().expect("weights are contiguous");
        if grad_input.is_some() {
            // W^T (C*KH*KW, OC), packed once for the column gradient of every tile
            self.packed_weight.pack(Trans::Yes, col_rows, out_channels, weight, col_rows);
        }
        let packed_weight_t = &self.packed_weight;
        let col_scratch = &self.col_scratch;
        let input = slice(&input);
        let grad_output = slice(&grad_output);

        // One image: its weight/bias gradient into `partial`, its input gradient
        // (if wanted) into `image_grad`.
        let backward_image = |n: usize, partial: &mut [T], mut image_grad: Option<&mut [T]>| {
            let image = &input[n * geom.in_len()..(n + 1) * geom.in_len()];
            // dy is (OC, OH*OW)
            let dy = &grad_output[n * out_channels * out_pixels..(n + 1) * out_channels * out_pixels];
            let (partial_weight, partial_bias) = partial.split_at_mut(weight_len);
            partial_bias.fill(T::zero());
            // col2im accumulates, so every input row must be zero before the first tile
            // that reaches it adds to it. Rows are zeroed just before that tile (all
            // channels), not in one pass over the image up front: then they are still
            // in cache when col2im adds to them (an up-front pass writes 6 MB per conv2
            // image to memory and col2im reads it all back).
            let mut zeroed_rows = 0;
            let mut zero_rows_until = |image_grad: &mut [T], end: usize| {
                if end > zeroed_rows {
                    for channel in image_grad.chunks_mut(geom.in_h * geom.in_w) {
                        channel[zeroed_rows * geom.in_w..end * geom.in_w].fill(T::zero());
                    }
                    zeroed_rows = end;
                }
            };
            let tile_len = col_rows * rows_per_tile * geom.out_w;
            // one buffer: the columns for dW, then (no longer needed) dcol
            col_scratch.with(tile_len, |col_buf| {
                for row_start in (0..geom.out_h).step_by(rows_per_tile) {
                    let row_end = (row_start + rows_per_tile).min(geom.out_h);
                    let tile_cols = (row_end - row_start) * geom.out_w;
                    let dy_tile = &dy[row_start * geom.out_w..];
                    // in the forward pass this was `y[o, p] += b[o]`, so now `db[o] += dy[o, p]`,
                    // summed tile by tile while the tile of dY is in cache for the GEMMs below
                    // (a separate pass over dY cost 3% of a baseline training step)
                    for (o, db) in partial_bias.iter_mut().enumerate() {
                        let row = &dy_tile[o * out_pixels..o * out_pixels + tile_cols];
                        *db += sum_in_lanes(row);
                    }
                    im2col(&geom, image, row_start, row_end, col_buf);
                    // forward: Y = W * col, so dW += dY (OC, tile) * col^T (tile, C*KH*KW).
                    // Both operands are contiguous along the tile: gemm_nt's dot-product
                    // kernel reads them as they lie (the packed GEMM gathers col^T).
                    let beta = if row_start == 0 { T::zero() } else { T::one() };
                    gemm_nt(
                        out_channels,
                        col_rows,
                        tile_cols,
                        dy_tile,
                        out_pixels,
                        col_buf,
                        tile_cols,
                        beta,
                        partial_weight,
                        col_rows,
                    );
                    if let Some(image_grad) = image_grad.as_deref_mut() {
                        // and dcol (C*KH*KW, tile) = W^T (C*KH*KW, OC) * dY (OC, tile), over
                        // the columns, whose lines are still in cache (a separate buffer
                        // cost 50 us of a 780 us conv2 tile in cache misses)
                        let grad_col_buf = &mut col_buf[..];
                        gemm_packed(
                            packed_weight_t,
                            tile_cols,
                            dy_tile,
                            out_pixels,
                            T::zero(),
                            grad_col_buf,
                            tile_cols,
                        );
                        // output rows row_start..row_end read input rows up to (but not
                        // including) (row_end - 1) * s + KH - pt
                        let rows_reached =
                            ((row_end - 1) * geom.stride_h + geom.kernel_h).saturating_sub(geom.pad_top).min(geom.in_h);
                        zero_rows_until(image_grad, rows_reached);
                        col2im(&geom, grad_col_buf, row_start, row_end, image_grad);
                    }
                }
            });
            if let Some(image_grad) = image_grad {
                // rows below the last window (or between windows, at stride > kernel)
                zero_rows_until(image_grad, geom.in_h);
            }
        };

        let partials = &mut self.per_image_grads[..batch * per_image_len];
        match grad_input {
            Some(mut grad_input) => partials
                .par_chunks_mut(per_image_len)
                .zip(slice_mut(&mut grad_input).par_chunks_mut(geom.in_len()))
                .enumerate()
                .for_each(|(n, (partial, image_grad))| backward_image(n, partial, Some(image_grad))),
            None => partials
                .par_chunks_mut(per_image_len)
                .enumerate()
                .for_each(|(n, partial)| backward_image(n, partial, None)),
        }

        // Sum the per-image gradients in image order (thread-count independent).
        let grad_weight = self.grad_weight.as_slice_mut().expect("contiguous");
        let grad_bias = self.grad_bias.as_slice_mut().expect("contiguous");
        let partials = &self.per_image_grads[..batch * per_image_len];
        reduce_in_order(partials, per_image_len, 0, grad_weight);
        reduce_in_order(partials, per_image_len, weight_len, grad_bias);
    }

    fn params(&self) -> Vec<Param<'_, T>> {
        vec![
            Param { name: "weight", value: &self.weight, grad: &self.grad_weight },
            Param { name: "bias", value: &self.bias, grad: &self.grad_bias },
        ]
    }

    fn params_mut(&mut self) -> Vec<ParamMut<'_, T>> {
        vec![
            ParamMut { name: "weight", value: &mut self.weight, grad: &mut self.grad_weight },
            ParamMut { name: "bias", value: &mut self.bias, grad: &mut self.grad_bias },
        ]
    }
}

/// The forward epilogue on one row of a tile: `y += b`, then `y = max(y, 0)`
/// if a ReLU is fused.
fn add_bias<T: Element>(row: &mut [T], bias: T, relu: bool) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { add_bias_avx2(row, bias, relu) };
    }
    add_bias_body(row, bias, relu)
}

/// [`add_bias`] compiled for AVX2 (8 floats wide; same results).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn add_bias_avx2<T: Element>(row: &mut [T], bias: T, relu: bool) {
    add_bias_body(row, bias, relu)
}

#[inline(always)]
fn add_bias_body<T: Element>(row: &mut [T], bias: T, relu: bool) {
    if relu {
        for value in row {
            let biased = *value + bias;
            *value = if biased > T::zero() { biased } else { T::zero() };
        }
    } else {
        for value in row {
            *value += bias;
        }
    }
}

/// `sum(values)`, added in 16 interleaved partial sums (lane `l` takes elements
/// `l, l + 16, l + 32, ...`) that are then added as a tree: a fixed order, so the
/// result does not depend on threads, and one the compiler can keep in SIMD
/// registers. A plain left-to-right sum is one chain of dependent additions
/// (4 cycles each): for the bias gradient of conv2 that was 46 us per tile, an
/// eighth of the tile's whole backward pass.
pub(crate) fn sum_in_lanes<T: Element>(values: &[T]) -> T {
    const LANES: usize = 16;
    let mut lanes = [T::zero(); LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane += value;
        }
    }
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            let upper = lanes[l + width];
            lanes[l] += upper;
        }
        width /= 2;
    }
    chunks.remainder().iter().fold(lanes[0], |sum, &value| sum + value)
}

/// `target[e] = sum_n partials[n * stride + offset + e]`, summing n = 0, 1, 2, ...
/// in order for every element, so the result is independent of threads.
pub(crate) fn reduce_in_order<T: Element>(partials: &[T], stride: usize, offset: usize, target: &mut [T]) {
    let batch = partials.len() / stride;
    let len = target.len();
    if batch == 0 {
        target.fill(T::zero());
        return;
    }
    target.par_chunks_mut(4096).enumerate().for_each(|(chunk_index, chunk)| {
        let start = offset + chunk_index * 4096;
        chunk.copy_from_slice(&partials[start..start + chunk.len()]);
        for n in 1..batch {
            let row = &partials[n * stride + start..n * stride + start + chunk.len()];
            for (total, &value) in chunk.iter_mut().zip(row) {
                *total += value;
            }
        }
    });
    debug_assert!(len == 0 || offset + len <= stride);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_target_bodies_match_naive() {
        // col2im and the bias epilogue run compiled for AVX2 on this CPU; their
        // plain bodies are what other CPUs run: held to the naive twin here
        let geom = ConvGeometry::new(2, 7, 9, (3, 2), (1, 2), Padding::Same).unwrap();
        let col: Vec<f64> = (0..geom.col_rows() * geom.out_pixels()).map(|v| ((v * 7) % 11) as f64 - 5.0).collect();
        let (mut body, mut naive) = (vec![1.0; geom.in_len()], vec![1.0; geom.in_len()]);
        col2im_body(&geom, &col, 0, geom.out_h, &mut body);
        col2im_naive(&geom, &col, 0, geom.out_h, &mut naive);
        assert_eq!(body, naive);
        let mut row = [-2.0, -0.5, 0.0, 0.5, 2.0];
        add_bias_body(&mut row, 1.0, true);
        assert_eq!(row, [0.0, 0.5, 1.0, 1.5, 3.0]);
        add_bias_body(&mut row, -1.0, false);
        assert_eq!(row, [-1.0, -0.5, 0.0, 0.5, 2.0]);
    }

    #[test]
    fn sum_in_lanes_adds_every_element_once() {
        // integers: exact in any order, so every length (below, at and above the
        // 16 lanes, with and without a remainder) must give the exact sum
        for len in [0usize, 1, 5, 15, 16, 17, 31, 32, 33, 100, 880] {
            let values: Vec<f64> = (0..len).map(|i| ((i * 7919) % 23) as f64 - 11.0).collect();
            let expected: f64 = values.iter().sum();
            assert_eq!(sum_in_lanes(&values), expected, "length {len}");
        }
        // and the same bits every time for f32 values that round
        let values: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let first = sum_in_lanes(&values);
        assert_eq!(first.to_bits(), sum_in_lanes(&values).to_bits());
        let plain: f64 = values.iter().map(|&v| v as f64).sum();
        assert!((first as f64 - plain).abs() < 1e-4, "{first} vs {plain}");
    }
}
