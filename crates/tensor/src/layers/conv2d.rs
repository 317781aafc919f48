//! 2-D convolution by im2col + GEMM.
//!
//! Read this file top to bottom: the math, then the plain reference functions
//! (the untiled im2col + GEMM of the docs, [`conv2d_forward_im2col`], and the
//! 7-deep loop of the formula, [`conv2d_forward_naive`]), then the [`Conv2d`]
//! layer, which runs the fast tiled kernel of
//! [`crate::kernels::conv_tiled`] and is tested equal to both references.
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
//! use convnet_tensor::kernels::im2col::im2col;
//! use convnet_tensor::{WindowGeometry, Padding};
//! let geom = WindowGeometry::new(1, 3, 3, (2, 2), (1, 1), Padding::Valid).unwrap();
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
//! [`crate::kernels::conv_tiled`] builds the column matrix a few output rows
//! at a time so it stays in cache, multiplies with packed-weight and
//! dot-product micro-kernels, splits the batch across threads one image per
//! task, and sums per-image weight gradients in image order (the same bits on
//! any thread count). When the model's plan fuses a following ReLU, the
//! convolution applies it in the same pass as the bias.
//!
//! A 3x3 stride-1 convolution can instead run as Winograd F(4x4, 3x3)
//! ([`crate::kernels::winograd`] for the arithmetic,
//! [`crate::kernels::winograd::passes`] for the fast path): 4x fewer
//! multiplications for slightly more rounding. [`ConvAlgo`] chooses, pass by
//! pass ([`crate::layers::conv_algo`]); `Auto` takes Winograd where it applies
//! and the layer is big enough for the transforms to pay
//! ([`winograd_pays`]).

use crate::element::Element;
use crate::geometry::{Padding, WindowGeometry};
use crate::kernels::conv_groups::BatchnormAffine;
use crate::kernels::conv_tiled::{conv2d_backward_tiled, conv2d_forward_tiled, conv2d_input_grad_tiled, ConvWorkspace};
use crate::kernels::gemm::gemm_naive;
use crate::kernels::gemm::Trans;
use crate::kernels::im2col::{col2im_naive, im2col_naive};
use crate::kernels::winograd;
use crate::kernels::winograd::passes::{
    conv2d_forward_winograd, conv2d_input_grad_winograd, conv2d_weight_grad_winograd, WinogradWorkspace,
};
use crate::layer::{expect_rank, slice, slice_mut, Layer, Mode, Param, ParamMut, WeightAndBias};
use crate::layers::conv_algo::{winograd_pays, ConvAlgo, ConvAlgos, ConvPass, AUTO_WINOGRAD_MIN_WIDTH};
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD};

mod fused;

// ---------------------------------------------------------------------------
// The references: plain code to read, and the twins the fast path must equal.
// ---------------------------------------------------------------------------

/// The method of the module docs, untiled and one step at a time: for each
/// image, build the whole column matrix, multiply, add the bias.
///
/// `input` `(N, C, H, W)`, `weight` `(OC, C, KH, KW)` = the matrix `W`
/// `(OC, C*KH*KW)`, `bias` `(OC,)`, `output` `(N, OC, OH, OW)`.
pub fn conv2d_forward_im2col<T: Element>(
    geom: &WindowGeometry,
    input: &[T],
    weight: &[T],
    bias: &[T],
    output: &mut [T],
) {
    let out_channels = bias.len();
    let (col_rows, out_pixels) = (geom.col_rows(), geom.out_pixels());
    // col is (C*KH*KW, OH*OW)
    let mut col = vec![T::zero(); col_rows * out_pixels];
    for (image, image_out) in input.chunks(geom.in_len()).zip(output.chunks_mut(out_channels * out_pixels)) {
        im2col_naive(geom, image, 0, geom.out_h, &mut col);
        // Y (OC, OH*OW) = W (OC, C*KH*KW) * col (C*KH*KW, OH*OW)
        gemm_naive(
            Trans::No,
            Trans::No,
            out_channels,
            out_pixels,
            col_rows,
            T::one(),
            weight,
            col_rows,
            &col,
            out_pixels,
            T::zero(),
            image_out,
            out_pixels,
        );
        // Y[o, :] += b[o]
        for (y_row, &b) in image_out.chunks_mut(out_pixels).zip(bias) {
            y_row.iter_mut().for_each(|y| *y += b);
        }
    }
}

/// The backward of [`conv2d_forward_im2col`], untiled: overwrites `grad_weight`
/// `(OC, C, KH, KW)`, `grad_bias` `(OC,)` and `grad_input` `(N, C, H, W)` from
/// `grad_output` `(N, OC, OH, OW)`. The forward line was `Y = W * col + b`, so
/// per image `dW += dY * col^T`, `db += rowsum(dY)`, `dcol = W^T * dY` and
/// `dx = col2im(dcol)`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_im2col<T: Element>(
    geom: &WindowGeometry,
    input: &[T],
    weight: &[T],
    grad_output: &[T],
    grad_weight: &mut [T],
    grad_bias: &mut [T],
    grad_input: &mut [T],
) {
    let out_channels = grad_bias.len();
    let (col_rows, out_pixels) = (geom.col_rows(), geom.out_pixels());
    let mut col = vec![T::zero(); col_rows * out_pixels];
    let mut grad_col = vec![T::zero(); col_rows * out_pixels];
    grad_weight.fill(T::zero());
    grad_bias.fill(T::zero());
    grad_input.fill(T::zero());
    let images = input.chunks(geom.in_len()).zip(grad_output.chunks(out_channels * out_pixels));
    for ((image, dy), image_grad) in images.zip(grad_input.chunks_mut(geom.in_len())) {
        im2col_naive(geom, image, 0, geom.out_h, &mut col);
        // dW (OC, C*KH*KW) += dY (OC, OH*OW) * col^T (OH*OW, C*KH*KW)
        gemm_naive(
            Trans::No,
            Trans::Yes,
            out_channels,
            col_rows,
            out_pixels,
            T::one(),
            dy,
            out_pixels,
            &col,
            out_pixels,
            T::one(),
            grad_weight,
            col_rows,
        );
        // db[o] += sum_p dY[o, p]
        for (db, dy_row) in grad_bias.iter_mut().zip(dy.chunks(out_pixels)) {
            *db = dy_row.iter().fold(*db, |sum, &v| sum + v);
        }
        // dcol (C*KH*KW, OH*OW) = W^T (C*KH*KW, OC) * dY (OC, OH*OW)
        gemm_naive(
            Trans::Yes,
            Trans::No,
            col_rows,
            out_pixels,
            out_channels,
            T::one(),
            weight,
            col_rows,
            dy,
            out_pixels,
            T::zero(),
            &mut grad_col,
            out_pixels,
        );
        // dx += col2im(dcol)
        col2im_naive(geom, &grad_col, 0, geom.out_h, image_grad);
    }
}

/// Direct-loop convolution of a batch, straight from the formula in the module
/// docs: the twin the im2col + GEMM path is tested against.
/// `input` is `(N, C, H, W)`, `weight` `(OC, C, KH, KW)`, `bias` `(OC,)`,
/// `output` `(N, OC, OH, OW)`.
pub fn conv2d_forward_naive<T: Element>(
    geom: &WindowGeometry,
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
    geom: &WindowGeometry,
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

// ---------------------------------------------------------------------------
// The layer: the fast path, tested equal to the references above.
// ---------------------------------------------------------------------------

/// A 2-D convolution layer (see the module docs for the math).
#[derive(Debug)]
pub struct Conv2d<T: Element> {
    in_channels: usize,
    out_channels: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    padding: Padding,
    /// Weight `(OC, C, KH, KW)`, bias `(OC,)` and their gradients.
    tensors: WeightAndBias<T>,
    /// The fast kernel's buffers, reused from batch to batch.
    workspace: ConvWorkspace<T>,
    /// The Winograd path's buffers.
    winograd: WinogradWorkspace<T>,
    /// The method asked for, pass by pass ([`Conv2d::resolved_algos`]: the ones that run).
    algos: ConvAlgos,
    /// The input geometry of the model this layer was placed in
    /// ([`Layer::set_input_shape`]; `None` for a layer used on its own), for
    /// [`Conv2d::resolved_algos`] before any batch has run.
    planned: Option<WindowGeometry>,
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
    ) -> crate::error::Result<Self> {
        if in_channels == 0 || out_channels == 0 || kernel.0 == 0 || kernel.1 == 0 || stride.0 == 0 || stride.1 == 0 {
            return Err(crate::error::TensorError::Config(format!(
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
            tensors: WeightAndBias::zeros(&weight_shape, out_channels),
            workspace: ConvWorkspace::default(),
            winograd: WinogradWorkspace::default(),
            algos: ConvAlgos::default(),
            planned: None,
        })
    }

    /// Chooses how every pass of this layer is computed (default [`ConvAlgo::Auto`]).
    pub fn set_algo(&mut self, algo: ConvAlgo) {
        self.algos = ConvAlgos::all(algo);
    }

    /// Chooses how each pass is computed.
    pub fn set_algos(&mut self, algos: ConvAlgos) {
        self.algos = algos;
    }

    /// The methods asked for.
    pub fn algos(&self) -> ConvAlgos {
        self.algos
    }

    /// The methods that run, each [`ConvAlgo::Im2col`] or [`ConvAlgo::Winograd`],
    /// for the input the model was built for (`Auto` depends on its width); a
    /// layer outside a model is taken to see a wide input.
    pub fn resolved_algos(&self) -> ConvAlgos {
        self.resolve(self.planned.as_ref())
    }

    /// The methods that run on `geom` (`None`: an input of unknown size, taken as wide).
    ///
    /// `Auto` takes Winograd for a pass when [`winograd_pays`] says its
    /// transforms pay on this layer's channels and width: the forward pass and
    /// the input gradient down to narrower outputs than the weight gradient
    /// (module docs of [`crate::layers::conv_algo`]).
    pub(super) fn resolve(&self, geom: Option<&WindowGeometry>) -> ConvAlgos {
        let (winograd_applies, out_w) = match geom {
            Some(geom) => (winograd::applies(geom), Some(geom.out_w)),
            None => {
                let wide = AUTO_WINOGRAD_MIN_WIDTH + self.kernel.1;
                let geom = self.sample_geometry(wide, wide);
                (geom.is_some_and(|geom| winograd::applies(&geom)), None)
            }
        };
        let channels = (self.in_channels, self.out_channels);
        let resolve = |pass: ConvPass| match self.algos.get(pass) {
            ConvAlgo::Winograd if winograd_applies => ConvAlgo::Winograd,
            ConvAlgo::Auto if winograd_applies && winograd_pays(pass, channels, out_w) => ConvAlgo::Winograd,
            _ => ConvAlgo::Im2col,
        };
        ConvAlgos {
            forward: resolve(ConvPass::Forward),
            input_grad: resolve(ConvPass::InputGrad),
            weight_grad: resolve(ConvPass::WeightGrad),
        }
    }

    /// The weights `(OC, C, KH, KW)`.
    pub fn weight(&self) -> &ArrayD<T> {
        &self.tensors.weight
    }

    /// The same layer without a bias (PyTorch's `bias=False`): see
    /// [`WeightAndBias::has_bias`].
    pub fn without_bias(mut self) -> Self {
        self.tensors.has_bias = false;
        self
    }

    /// Mutable weights and, if the layer has one, bias (see
    /// [`WeightAndBias::parameters_mut`]).
    pub fn weight_and_bias_mut(&mut self) -> (&mut ArrayD<T>, Option<&mut ArrayD<T>>) {
        self.weights_lent();
        self.tensors.parameters_mut()
    }

    /// Each mutable loan of the weights: every workspace prepares them again.
    fn weights_lent(&mut self) {
        self.winograd.weights_lent();
        self.workspace.weights_lent();
    }

    /// Mutable weights.
    pub fn weight_mut(&mut self) -> &mut ArrayD<T> {
        self.weights_lent();
        &mut self.tensors.weight
    }

    /// Mutable bias `(OC,)`.
    pub fn bias_mut(&mut self) -> &mut ArrayD<T> {
        &mut self.tensors.bias
    }

    /// The forward pass; with `fused_relu`, `output = max(conv, 0)` (the plan
    /// of [`crate::model`] fuses a ReLU that follows into this pass).
    pub fn forward_fused_relu(&mut self, input: ArrayViewD<'_, T>, output: ArrayViewMutD<'_, T>, fused_relu: bool) {
        self.forward_then(input, output, fused_relu, None);
    }

    /// The forward pass by the resolved method, with the `batchnorm` after it.
    pub(super) fn forward_then(
        &mut self,
        input: ArrayViewD<'_, T>,
        mut output: ArrayViewMutD<'_, T>,
        fused_relu: bool,
        batchnorm: Option<BatchnormAffine<'_, T>>,
    ) {
        let geom = self.geometry(input.shape()).expect("conv2d: input shape was not validated");
        let weight = self.tensors.weight.as_slice().expect("weights are contiguous");
        let bias = self.tensors.bias.as_slice().expect("bias is contiguous");
        let (input, output) = (slice(&input), slice_mut(&mut output));
        if self.resolve(Some(&geom)).forward == ConvAlgo::Winograd {
            let workspace = &mut self.winograd;
            return conv2d_forward_winograd(&geom, weight, bias, input, output, fused_relu, workspace, batchnorm);
        }
        conv2d_forward_tiled(&geom, weight, bias, input, output, fused_relu, &mut self.workspace, batchnorm);
    }

    /// The geometry for an `(N, C, H, W)` input.
    pub(super) fn geometry(&self, shape: &[usize]) -> Option<WindowGeometry> {
        if shape.len() != 4 || shape[1] != self.in_channels {
            return None;
        }
        self.sample_geometry(shape[2], shape[3])
    }

    /// The geometry for a `height x width` input of this layer's channels
    /// (`None` if the kernel does not fit).
    fn sample_geometry(&self, height: usize, width: usize) -> Option<WindowGeometry> {
        WindowGeometry::new(self.in_channels, height, width, self.kernel, self.stride, self.padding)
    }
}

impl<T: Element> Layer<T> for Conv2d<T> {
    fn kind(&self) -> &'static str {
        "conv2d"
    }

    fn describe(&self) -> String {
        let bias = if self.tensors.has_bias { "" } else { ", no bias" };
        let (kernel, padding, algos) = (self.kernel, self.padding.describe(), self.resolved_algos().describe());
        format!(
            "{} filters, {}x{}, stride {}, {padding}{bias}, {algos}",
            self.out_channels, kernel.0, kernel.1, self.stride.0
        )
    }

    fn backward_needs_output(&self) -> bool {
        false
    }

    /// The per-image weight and bias gradients the backward pass keeps before
    /// summing them as the gradient tree (`batch x (OC*C*KH*KW + OC)`).
    fn buffer_bytes(&self, batch: usize) -> u64 {
        let per_image = self.out_channels * self.in_channels * self.kernel.0 * self.kernel.1 + self.out_channels;
        (batch * per_image * std::mem::size_of::<T>()) as u64
    }

    fn set_input_shape(&mut self, input_shape: &[usize]) {
        self.planned = match *input_shape {
            [_, height, width] => self.sample_geometry(height, width),
            _ => None,
        };
    }

    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>, String> {
        expect_rank(input_shape, 3, "a (C, H, W)")?;
        if input_shape[0] != self.in_channels {
            return Err(format!("expects {} input channels, got {}", self.in_channels, input_shape[0]));
        }
        let geom = self.sample_geometry(input_shape[1], input_shape[2]).ok_or_else(|| {
            format!(
                "a {}x{} input is smaller than the {}x{} kernel (valid padding)",
                input_shape[1], input_shape[2], self.kernel.0, self.kernel.1
            )
        })?;
        Ok(vec![self.out_channels, geom.out_h, geom.out_w])
    }

    fn forward_flops(&self, input_shape: &[usize]) -> u64 {
        match self.sample_geometry(input_shape[1], input_shape[2]) {
            Some(geom) => 2 * (self.out_channels * geom.col_rows() * geom.out_pixels()) as u64,
            None => 0,
        }
    }

    fn forward(&mut self, input: ArrayViewD<'_, T>, output: ArrayViewMutD<'_, T>, _mode: Mode) {
        self.forward_fused_relu(input, output, false);
    }

    fn backward(
        &mut self,
        input: ArrayViewD<'_, T>,
        _output: ArrayViewD<'_, T>,
        grad_output: ArrayViewD<'_, T>,
        grad_input: Option<ArrayViewMutD<'_, T>>,
    ) {
        let geom = self.geometry(input.shape()).expect("conv2d: input shape was not validated");
        let passes = self.resolve(Some(&geom));
        let (dw_winograd, dx_winograd) =
            (passes.weight_grad == ConvAlgo::Winograd, passes.input_grad == ConvAlgo::Winograd);
        let weight = self.tensors.weight.as_slice().expect("weights are contiguous");
        let grad_weight = self.tensors.grad_weight.as_slice_mut().expect("contiguous");
        let grad_bias = self.tensors.grad_bias.as_slice_mut().expect("contiguous");
        let mut grad_input = grad_input;
        let mut grad_input = grad_input.as_mut().map(slice_mut);
        let (input, grad_output) = (slice(&input), slice(&grad_output));
        // The forward line was `Y = W ⋆ X + b`: so `dW = dY ⋆ X` and `db = sum of dY`
        // (the weight gradient), `dX = W' ⋆ dY` with W turned 180 degrees (the input
        // gradient), each pass by its own method. When both run by im2col they share
        // one pass over the columns.
        if dw_winograd {
            conv2d_weight_grad_winograd(&geom, input, grad_output, grad_weight, grad_bias, &mut self.winograd);
        } else {
            let fused_grad_input = if dx_winograd { None } else { grad_input.take() };
            conv2d_backward_tiled(
                &geom,
                weight,
                input,
                grad_output,
                grad_weight,
                grad_bias,
                fused_grad_input,
                &mut self.workspace,
            );
        }
        // dX, when it was not computed with dW above
        if let Some(grad_input) = grad_input {
            if dx_winograd {
                conv2d_input_grad_winograd(&geom, weight, grad_output, grad_input, &mut self.winograd);
            } else {
                conv2d_input_grad_tiled(&geom, weight, grad_output, grad_input, &mut self.workspace);
            }
        }
    }

    fn set_gradient_leaves(&mut self, leaves: usize) {
        self.workspace.gradient_leaves = leaves;
        self.winograd.gradient_leaves = leaves;
    }

    fn continues_leaves(&self) -> bool {
        true
    }

    fn set_leaf_part(&mut self, part: crate::gradient_tree::LeafPart) {
        self.workspace.continue_leaf = !part.first;
        self.winograd.continue_leaf = !part.first;
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn params(&self) -> Vec<Param<'_, T>> {
        self.tensors.params()
    }

    fn params_mut(&mut self) -> Vec<ParamMut<'_, T>> {
        self.weights_lent();
        self.tensors.params_mut()
    }
}
