//! The fast convolution: im2col + GEMM on tiles of output rows, fused with
//! the bias (and a following ReLU), split across threads one image per task.
//!
//! The plain versions to read first, and the references these equal, are in
//! `layers/conv2d.rs` (`conv2d_forward_im2col`: the same method untiled;
//! `conv2d_forward_naive`: the 7-deep loop of the formula).
//!
//! ## Why it is fast
//!
//! - The column matrix of a whole image is large (conv2 of `baseline`:
//!   288 x 48,400 floats = 56 MB), far bigger than any cache, and a GEMM would
//!   stream it from memory. Instead it is built a few output rows at a time
//!   ("tiles" of about 1 MB forward, 4 MB backward) and the GEMMs run on each
//!   tile while it is still in cache. The GEMM on a tile writes straight into
//!   the right columns of `Y` (its row stride is `OH*OW`), so tiling changes no
//!   result, only speed.
//! - `W * col` and `W^T * dY` multiply the same small weight matrix by every
//!   tile, so it is packed once per pass, for inference once per version of the
//!   weights ([`gemm_packed()`]); `dY * col^T` reduces
//!   along the pixel axis, along which both operands lie contiguous, so it is a
//!   block of dot products ([`gemm_nt`]), except on short tiles (ResNet's 7x7
//!   and 14x14 maps), where it is the packed GEMM over the transposed columns.
//! - The bias (and a ReLU that follows the convolution, when the model's plan
//!   fuses it) is added to each tile of `Y` while it is in cache, instead of in
//!   a pass of its own over a 400 MB activation.
//! - Each thread owns its column buffer ([`Scratch`]) and, for short tiles, its
//!   transposed columns and packed `dY` ([`PerThread`]): nothing is allocated per
//!   batch after the first.

use crate::element::Element;
use crate::geometry::WindowGeometry;
use crate::kernels::conv_groups::{forward_in_groups, image_group, input_grad_in_groups, BatchnormAffine, Finish};
use crate::kernels::conv_leaves::{weight_grad_in_leaves, LeafTarget, LeafWorkspace};
use crate::kernels::conv_rows::{columns, forward_rows};
use crate::kernels::gemm::Trans;
use crate::kernels::gemm_nt::gemm_nt;
use crate::kernels::gemm_packed::{self, gemm_packed, PackedA};
use crate::kernels::im2col::col2im;
use crate::kernels::parts::{in_parts, parts_per_image};
use crate::kernels::reduce::{reduce_in_order_onto, reduce_tree, sum_in_lanes};
use crate::kernels::scratch::{PerThread, Scratch};
use rayon::prelude::*;

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
fn tile_rows(geom: &WindowGeometry, target: usize) -> usize {
    (target / (geom.col_rows() * geom.out_w).max(1)).clamp(1, geom.out_h.max(1))
}

/// The buffers the tiled convolution keeps between passes (a layer owns one):
/// grown on the first batch, reused after.
#[derive(Debug, Default)]
pub struct ConvWorkspace<T> {
    /// Per-thread column buffers.
    col_scratch: Scratch<T>,
    /// Per-thread buffers of one image's output, pooled before the next
    /// ([`conv2d_forward_tiled_pooled`]), and the whole batch's output when it
    /// has fewer images than threads.
    pooled_scratch: Scratch<T>,
    /// Per-thread buffers of the weight gradient on short tiles ([`by_outer_product`]).
    outer_product: PerThread<OuterProduct<T>>,
    /// The weight gradient of small images, leaf by leaf ([`crate::kernels::conv_leaves`]).
    leaves: LeafWorkspace<T>,
    /// The weights as the GEMM's `A`: `W` `(OC, C*KH*KW)` for the forward pass,
    /// packed once per version of the weights, or `W^T` for the column
    /// gradient, packed once per backward pass.
    packed_weight: PackedA<T>,
    /// The version of the weights ([`ConvWorkspace::weight_version`]) whose
    /// forward packing `packed_weight` holds; `None`: anything else (`W^T`, or
    /// nothing yet).
    packed_version: Option<u64>,
    /// The version of the weights the next forward pass reads, kept by a layer
    /// that counts every change to its weights (a [`crate::Conv2d`] counts each
    /// time it lends them out mutably): while it stays the same, inference packs
    /// the weights once instead of every batch (for ResNet-18's last layers,
    /// 9.4 MB each, on one thread while the others wait). `None` (the default,
    /// a layer never lent out): every pass packs them.
    pub weight_version: Option<u64>,
    /// Per-image weight and bias gradients `(N, OC*C*KH*KW + OC)`, summed
    /// after the parallel part as a tree of `gradient_leaves` leaves.
    per_image_grads: Vec<T>,
    /// Leaves of the batch's gradient sum ([`crate::kernels::reduce`]); 0 or 1:
    /// image by image.
    pub gradient_leaves: usize,
    /// The pass continues a gradient leaf's sum from the gradients the layer
    /// holds (a micro-batch after the leaf's first, see [`crate::gradient_tree::LeafPart`]).
    pub continue_leaf: bool,
}

impl<T: Element> ConvWorkspace<T> {
    /// The layer lends its weights out mutably, so they may change: a new
    /// [`Self::weight_version`] (the first one, 0, where there was none).
    pub(crate) fn weights_lent(&mut self) {
        self.weight_version = Some(self.weight_version.map_or(0, |v| v.wrapping_add(1)));
    }

    /// `W` `(OC, C*KH*KW)` packed for the forward pass, unless `packed_weight`
    /// already holds it for this [`Self::weight_version`].
    fn pack_forward_weights(&mut self, weight: &[T], out_channels: usize, col_rows: usize) {
        if self.weight_version.is_none() || self.packed_version != self.weight_version {
            self.packed_weight.pack(Trans::No, out_channels, col_rows, weight, col_rows);
            self.packed_version = self.weight_version;
        }
    }
}

/// What one thread keeps for [`weight_grad_tile`]'s outer product: the tile's
/// columns transposed, `(tile, C*KH*KW)`, and its `dY` packed as `A`.
#[derive(Debug, Default)]
struct OuterProduct<T> {
    col_t: Vec<T>,
    packed_dy: PackedA<T>,
}

/// The tiled forward pass of a batch: `output := W * im2col(input) + b`, and
/// `max(., 0)` of that with `fused_relu`, or with `batchnorm` (inference's conv
/// + batchnorm) its affine map and ReLU, on each tile while it is in cache.
///
/// - `input` `(N, C, H, W)`, `output` `(N, OC, OH, OW)`;
/// - `weight` `(OC, C, KH, KW)`, read as the matrix `W` `(OC, C*KH*KW)`; `bias` `(OC,)`.
///
/// Equal (to rounding) to `conv2d_forward_im2col` and `conv2d_forward_naive` in
/// `layers/conv2d.rs`; `tests/suite/kernels.rs` checks it.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_tiled<T: Element>(
    geom: &WindowGeometry,
    weight: &[T],
    bias: &[T],
    input: &[T],
    output: &mut [T],
    fused_relu: bool,
    workspace: &mut ConvWorkspace<T>,
    batchnorm: Option<BatchnormAffine<'_, T>>,
) {
    let out_channels = bias.len();
    assert_eq!(weight.len(), out_channels * geom.col_rows(), "conv2d_forward_tiled: weight length");
    assert_eq!(input.len() % geom.in_len(), 0, "conv2d_forward_tiled: input length");
    let batch = input.len() / geom.in_len();
    assert_eq!(output.len(), batch * out_channels * geom.out_pixels(), "conv2d_forward_tiled: output length");
    let (col_rows, out_pixels) = (geom.col_rows(), geom.out_pixels());
    let finish = Finish::new(bias, fused_relu, batchnorm);
    let rows_per_tile = tile_rows(geom, FORWARD_TILE_ELEMENTS);
    workspace.col_scratch.ensure_threads();
    // W (OC, C*KH*KW), packed once for every tile of every image
    workspace.pack_forward_weights(weight, out_channels, col_rows);
    let packed_weight = &workspace.packed_weight;
    let col_scratch = &workspace.col_scratch;
    let image_rows = |image: &[T], rows: (usize, usize), out: &mut [T]| {
        col_scratch.with(col_rows * rows_per_tile * geom.out_w, |col_buf| {
            forward_rows(geom, packed_weight, &finish, rows_per_tile, image, rows, out, col_buf)
        });
    };
    let group = image_group(out_pixels, batch.div_ceil(rayon::current_num_threads()));
    let parts = parts_per_image(batch, geom.out_h);
    if group > 1 {
        // small outputs: `group` images' columns side by side, one GEMM for all of them
        forward_in_groups(geom, packed_weight, &finish, group, input, output, col_scratch);
    } else if parts > 1 {
        // fewer images than threads (a `predict` of one image): each image's rows in parts
        let in_len = geom.in_len();
        in_parts(
            output,
            (batch, geom.out_h, parts),
            (out_channels, geom.out_w),
            |rows| rows,
            |image, rows, out| image_rows(&input[image * in_len..][..in_len], rows, out),
        );
    } else {
        // input is (N, C, H, W), output is (N, OC, OH, OW): one task per image
        input
            .par_chunks(geom.in_len())
            .zip(output.par_chunks_mut(out_channels * out_pixels))
            .for_each(|(image, image_out)| image_rows(image, (0, geom.out_h), image_out));
    }
}

/// Pools one plane into `pooled_plane` with a row buffer of the thread's own:
/// `pool(plane, pooled_plane, row_max)` ([`crate::kernels::pool_separable::pool_plane_values`]).
pub(crate) type PlanePool<'a, T> = &'a (dyn Fn(&[T], &mut [T], &mut Vec<T>) + Sync);

/// Inference's [`conv2d_forward_tiled`] with its `batchnorm` (and ReLU), then
/// a max-pool, image by image: each image's output `(OC, OH*OW)` is computed
/// into a buffer of the thread's own and pooled plane by plane
/// (`pool_plane(plane, pooled_plane, row_max)`, `pooled_plane` values each)
/// into `pooled` `(N, OC, PH*PW)` while it is in cache, so the full-size
/// output (ResNet's stem: 3.2 MB an image, 103 MB a batch of 32) is neither
/// written whole nor read back. Each image's output is the same sums as the
/// pass over the batch ([`forward_rows`] over all its rows), so the same bits.
/// With fewer images than threads each image's rows are cut into parts as in
/// [`conv2d_forward_tiled`], into a batch-sized buffer kept for the next call.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_forward_tiled_pooled<T: Element>(
    geom: &WindowGeometry,
    weight: &[T],
    bias: &[T],
    batchnorm: BatchnormAffine<'_, T>,
    input: &[T],
    (pooled, pooled_plane): (&mut [T], usize),
    pool_plane: PlanePool<'_, T>,
    workspace: &mut ConvWorkspace<T>,
) {
    let (out_channels, col_rows, out_pixels) = (bias.len(), geom.col_rows(), geom.out_pixels());
    let batch = input.len() / geom.in_len();
    assert_eq!(pooled.len(), batch * out_channels * pooled_plane, "conv2d_forward_tiled_pooled: pooled length");
    workspace.pooled_scratch.ensure_threads();
    if batch < rayon::current_num_threads() {
        // the two passes one after the other: the pool takes every image's output when the pass is done
        let output = std::mem::take(&mut workspace.pooled_scratch);
        output.with(batch * out_channels * out_pixels, |output| {
            conv2d_forward_tiled(geom, weight, bias, input, output, false, workspace, Some(batchnorm));
            let planes = output.par_chunks(out_pixels).zip(pooled.par_chunks_mut(pooled_plane));
            planes.for_each_init(Vec::new, |row_max, (plane, pooled)| pool_plane(plane, pooled, row_max));
        });
        workspace.pooled_scratch = output;
        return;
    }
    let finish = Finish::new(bias, false, Some(batchnorm));
    let rows_per_tile = tile_rows(geom, FORWARD_TILE_ELEMENTS);
    workspace.col_scratch.ensure_threads();
    workspace.pack_forward_weights(weight, out_channels, col_rows);
    let (packed_weight, col_scratch) = (&workspace.packed_weight, &workspace.col_scratch);
    let images = input.par_chunks(geom.in_len()).zip(pooled.par_chunks_mut(out_channels * pooled_plane));
    images.for_each_init(Vec::new, |row_max, (image, image_pooled)| {
        workspace.pooled_scratch.with(out_channels * out_pixels, |image_out| {
            col_scratch.with(col_rows * rows_per_tile * geom.out_w, |col_buf| {
                forward_rows(geom, packed_weight, &finish, rows_per_tile, image, (0, geom.out_h), image_out, col_buf)
            });
            // each channel's plane pooled while the image's output is in cache
            for (plane, pooled) in image_out.chunks_exact(out_pixels).zip(image_pooled.chunks_exact_mut(pooled_plane)) {
                pool_plane(plane, pooled, row_max);
            }
        });
    });
}

/// [`conv2d_forward_tiled`] for a consumer that takes its output a band of rows
/// at a time while it is in cache ([`crate::kernels::conv_chain`]): packs the
/// weights into `workspace`, and returns `rows(image, (r0, r1), out)`, which
/// writes output rows `r0..r1` of one image `(C, H, W)` into `out`
/// `(OC, r1 - r0, OW)`, the bias and (with `fused_relu`) the ReLU applied: the
/// values of the whole pass, bit for bit (each row is the same GEMM).
pub(crate) fn forward_bands<'a, T: Element>(
    geom: &'a WindowGeometry,
    weight: &[T],
    bias: &'a [T],
    fused_relu: bool,
    workspace: &'a mut ConvWorkspace<T>,
) -> impl Fn(&[T], (usize, usize), &mut [T]) + Sync + 'a {
    let (out_channels, col_rows) = (bias.len(), geom.col_rows());
    assert_eq!(weight.len(), out_channels * col_rows, "forward_bands: weight length");
    let rows_per_tile = tile_rows(geom, FORWARD_TILE_ELEMENTS);
    workspace.col_scratch.ensure_threads();
    workspace.pack_forward_weights(weight, out_channels, col_rows);
    let workspace: &'a ConvWorkspace<T> = workspace;
    move |image: &[T], rows: (usize, usize), out: &mut [T]| {
        assert_eq!(image.len(), geom.in_len(), "forward_bands: image length");
        assert_eq!(out.len(), out_channels * (rows.1 - rows.0) * geom.out_w, "forward_bands: band length");
        let finish = Finish::new(bias, fused_relu, None);
        workspace.col_scratch.with(col_rows * rows_per_tile * geom.out_w, |col_buf| {
            forward_rows(geom, &workspace.packed_weight, &finish, rows_per_tile, image, rows, out, col_buf)
        });
    }
}

/// The tiled backward pass of a batch. Overwrites `grad_weight` `(OC, C, KH, KW)`
/// and `grad_bias` `(OC,)` with the batch's sums, and `grad_input` `(N, C, H, W)`
/// if given; shapes as in [`conv2d_forward_tiled`], `grad_output` `(N, OC, OH, OW)`.
///
/// Per image, per tile of output rows (the forward line is `Y = W * col + b`):
/// `db += rowsum(dY)`, `dW += dY col^T` ([`gemm_nt`], or on short tiles
/// [`gemm_packed()`] over `col^T`), `dcol = W^T dY` ([`gemm_packed()`], written
/// over the spent columns) and `dx += col2im(dcol)`; for small outputs `dcol`
/// of several images in one GEMM (`input_grad_in_groups` in
/// [`crate::kernels::conv_groups`], the same bits).
/// The per-image weight gradients are summed in image order
/// ([`reduce_tree`]), so the result does not depend on the thread count.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_tiled<T: Element>(
    geom: &WindowGeometry,
    weight: &[T],
    input: &[T],
    grad_output: &[T],
    grad_weight: &mut [T],
    grad_bias: &mut [T],
    grad_input: Option<&mut [T]>,
    workspace: &mut ConvWorkspace<T>,
) {
    assert_eq!(input.len() % geom.in_len(), 0, "conv2d_backward_tiled: input length");
    assert_eq!(grad_weight.len(), weight.len(), "conv2d_backward_tiled: grad_weight length");
    let batch = input.len() / geom.in_len();
    let weight_grads = WeightGrads { input, grad_weight, grad_bias };
    backward_tiled(geom, weight, batch, grad_output, Some(weight_grads), grad_input, workspace);
}

/// The input gradient alone, by im2col: `grad_input` `(N, C, H, W)` from
/// `grad_output` `(N, OC, OH, OW)`, per tile `dcol = W^T dY`, `dx += col2im(dcol)`
/// (the second half of [`conv2d_backward_tiled`], for a layer whose weight
/// gradient runs by another method).
pub fn conv2d_input_grad_tiled<T: Element>(
    geom: &WindowGeometry,
    weight: &[T],
    grad_output: &[T],
    grad_input: &mut [T],
    workspace: &mut ConvWorkspace<T>,
) {
    assert_eq!(grad_input.len() % geom.in_len(), 0, "conv2d_input_grad_tiled: grad_input length");
    let batch = grad_input.len() / geom.in_len();
    backward_tiled(geom, weight, batch, grad_output, None, Some(grad_input), workspace);
}

/// What the weight gradient of [`backward_tiled`] reads and writes.
struct WeightGrads<'a, T> {
    /// `X` `(N, C, H, W)`, the forward pass's input.
    input: &'a [T],
    /// `dW` `(OC, C, KH, KW)`, overwritten.
    grad_weight: &'a mut [T],
    /// `db` `(OC,)`, overwritten.
    grad_bias: &'a mut [T],
}

/// The backward pass with either gradient optional (at least one given).
fn backward_tiled<T: Element>(
    geom: &WindowGeometry,
    weight: &[T],
    batch: usize,
    grad_output: &[T],
    weight_grads: Option<WeightGrads<'_, T>>,
    grad_input: Option<&mut [T]>,
    workspace: &mut ConvWorkspace<T>,
) {
    let (col_rows, out_pixels) = (geom.col_rows(), geom.out_pixels());
    let out_channels = checked_out_channels(geom, weight, batch, grad_output, &weight_grads, grad_input.as_deref());
    let weight_len = out_channels * col_rows;
    let per_image_len = weight_len + out_channels;
    let rows_per_tile = tile_rows(geom, BACKWARD_TILE_ELEMENTS);
    workspace.col_scratch.ensure_threads();
    // images of one short tile: the weight gradient leaf by leaf, after the input gradient
    let in_leaves = by_outer_product(geom, rows_per_tile) && rows_per_tile >= geom.out_h;
    let (weight_grads, leaf_grads) = if in_leaves { (None, weight_grads) } else { (weight_grads, None) };
    let input = weight_grads.as_ref().map(|grads| grads.input);
    if input.is_some() && workspace.per_image_grads.len() < batch * per_image_len {
        workspace.per_image_grads.resize(batch * per_image_len, T::zero());
    }
    if grad_input.is_some() {
        // W^T (C*KH*KW, OC), packed once for the column gradient of every tile
        workspace.packed_weight.pack(Trans::Yes, col_rows, out_channels, weight, col_rows);
        workspace.packed_version = None;
    }
    let outer_product = by_outer_product(geom, rows_per_tile).then(|| {
        workspace.outer_product.ensure_threads();
        &workspace.outer_product
    });
    let (packed_weight_t, col_scratch) = (&workspace.packed_weight, &workspace.col_scratch);
    // small outputs: the input gradient of several images in one GEMM, after the weight gradients
    let group = image_group(out_pixels, batch.div_ceil(rayon::current_num_threads()));
    let grouped = group > 1 && rows_per_tile >= geom.out_h && !geom.is_pointwise();
    let (grad_input, grad_input_grouped) = if grouped { (None, grad_input) } else { (grad_input, None) };
    // One image: its weight/bias gradient (if wanted) into `partial`, its input
    // gradient (if wanted) into `image_grad`.
    let backward_image = |n: usize, mut partial: Option<&mut [T]>, mut image_grad: Option<&mut [T]>| {
        // dy is (OC, OH*OW)
        let dy = &grad_output[n * out_channels * out_pixels..(n + 1) * out_channels * out_pixels];
        if let Some(partial) = partial.as_deref_mut() {
            partial[weight_len..].fill(T::zero());
        }
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
                let dy_tile = &dy[row_start * geom.out_w..];
                if let (Some(partial), Some(input)) = (partial.as_deref_mut(), input) {
                    let image = &input[n * geom.in_len()..(n + 1) * geom.in_len()];
                    let rows = (row_start, row_end);
                    weight_grad_tile(geom, image, dy_tile, out_pixels, rows, (col_buf, outer_product), partial);
                }
                if let Some(image_grad) = image_grad.as_deref_mut() {
                    let rows = (row_start, row_end);
                    input_grad_tile(
                        geom,
                        packed_weight_t,
                        dy_tile,
                        out_pixels,
                        rows,
                        col_buf,
                        image_grad,
                        &mut zero_rows_until,
                    );
                }
            }
        });
        if let Some(image_grad) = image_grad {
            // rows below the last window (or between windows, at stride > kernel)
            zero_rows_until(image_grad, geom.in_h);
        }
    };

    let partials = &mut workspace.per_image_grads[..if input.is_some() { batch * per_image_len } else { 0 }];
    let image_grads = grad_input.map(|grad_input| grad_input.par_chunks_mut(geom.in_len()));
    for_each_image(partials.par_chunks_mut(per_image_len.max(1)), image_grads, input.is_some(), backward_image);
    if let Some(grad_input) = grad_input_grouped {
        input_grad_in_groups(geom, packed_weight_t, group, grad_output, grad_input, col_scratch);
    }
    finish_weight_grads(geom, batch, grad_output, (weight_grads, leaf_grads), workspace);
}

/// The batch's weight gradient in the gradient tree the workspace is set to:
/// from the per-image partials ([`sum_partials`]), or, for images of one
/// short tile, leaf by leaf ([`crate::kernels::conv_leaves`]), the same bits.
fn finish_weight_grads<T: Element>(
    geom: &WindowGeometry,
    batch: usize,
    grad_output: &[T],
    (from_partials, by_leaves): (Option<WeightGrads<'_, T>>, Option<WeightGrads<'_, T>>),
    workspace: &mut ConvWorkspace<T>,
) {
    if let Some(grads) = from_partials {
        sum_partials(workspace, batch, grads);
    }
    if let Some(WeightGrads { input, grad_weight, grad_bias }) = by_leaves {
        let (gradient_leaves, continue_leaf) = (workspace.gradient_leaves, workspace.continue_leaf);
        let target = LeafTarget { grad_weight, grad_bias, gradient_leaves, continue_leaf };
        weight_grad_in_leaves(geom, input, grad_output, target, &mut workspace.leaves);
    }
}

/// The batch's weight and bias gradients from the per-image partials: a tree
/// of leaves, image by image inside a leaf (thread-count independent; see
/// [`crate::kernels::reduce`]), or onto the gradients held when continuing a leaf.
fn sum_partials<T: Element>(workspace: &ConvWorkspace<T>, batch: usize, grads: WeightGrads<'_, T>) {
    let (weight_len, bias_len) = (grads.grad_weight.len(), grads.grad_bias.len());
    let per_image_len = weight_len + bias_len;
    let partials = &workspace.per_image_grads[..batch * per_image_len];
    let reduce = if workspace.continue_leaf { reduce_in_order_onto } else { reduce_tree };
    reduce(partials, per_image_len, 0, grads.grad_weight, workspace.gradient_leaves);
    reduce(partials, per_image_len, weight_len, grads.grad_bias, workspace.gradient_leaves);
}

/// Runs `backward_image(n, partial, image_grad)` for every image in parallel,
/// with its slice of per-image weight gradients (if `weight_grads`) and of the
/// input gradient (if given).
fn for_each_image<'a, T: Element>(
    partials: rayon::slice::ChunksMut<'a, T>,
    image_grads: Option<rayon::slice::ChunksMut<'a, T>>,
    weight_grads: bool,
    backward_image: impl Fn(usize, Option<&mut [T]>, Option<&mut [T]>) + Sync,
) {
    match (weight_grads, image_grads) {
        (true, Some(image_grads)) => partials
            .zip(image_grads)
            .enumerate()
            .for_each(|(n, (partial, image_grad))| backward_image(n, Some(partial), Some(image_grad))),
        (true, None) => partials.enumerate().for_each(|(n, partial)| backward_image(n, Some(partial), None)),
        (false, Some(image_grads)) => {
            image_grads.enumerate().for_each(|(n, image_grad)| backward_image(n, None, Some(image_grad)))
        }
        (false, None) => {}
    }
}

/// The output channels of a backward pass, every buffer's length checked
/// against the geometry (programming errors in the layer, never user input).
fn checked_out_channels<T: Element>(
    geom: &WindowGeometry,
    weight: &[T],
    batch: usize,
    grad_output: &[T],
    weight_grads: &Option<WeightGrads<'_, T>>,
    grad_input: Option<&[T]>,
) -> usize {
    assert_eq!(weight.len() % geom.col_rows(), 0, "conv2d backward: weight length");
    let out_channels = weight.len() / geom.col_rows();
    assert_eq!(grad_output.len(), batch * out_channels * geom.out_pixels(), "conv2d backward: grad_output length");
    if let Some(grad_input) = grad_input {
        assert_eq!(grad_input.len(), batch * geom.in_len(), "conv2d backward: grad_input length");
    }
    if let Some(grads) = weight_grads.as_ref() {
        assert_eq!(grads.grad_bias.len(), out_channels, "conv2d backward: grad_bias length");
    }
    out_channels
}

/// Tiles of at most this many output pixels (ResNet's 7x7 and 14x14 maps: 49
/// and 196) take the weight gradient as an outer product ([`weight_grad_tile`]).
/// Measured on one AVX-512 core, `dW` of ResNet-18's 512-channel 3x3
/// convolution at 7x7: 36 GFLOP/s as dot products, 85 as the outer product
/// (the transpose included); at 14x14, 69 and 79; at 28x28 the dot products
/// win (107 against 62).
const OUTER_PRODUCT_MAX_TILE: usize = 256;

/// Whether [`weight_grad_tile`] takes `dW += dY_tile col^T` as the packed GEMM
/// over the transposed columns: tiles of `rows_per_tile` rows no wider than
/// [`OUTER_PRODUCT_MAX_TILE`], on a CPU where that GEMM has its kernel.
fn by_outer_product(geom: &WindowGeometry, rows_per_tile: usize) -> bool {
    rows_per_tile * geom.out_w <= OUTER_PRODUCT_MAX_TILE && gemm_packed::rows_kernel_available()
}

/// One tile's share of one image's weight and bias gradients, added to
/// `partial` (`dW` `(OC, C*KH*KW)` then `db` `(OC,)`): the columns of output
/// rows `rows.0..rows.1` are gathered into `col_buf`, then
/// `db[o] += sum dY[o, tile]` and `dW += dY_tile col^T` (the first tile
/// overwrites `dW`). With `outer_product` (see [`by_outer_product`]) the
/// product is taken over the columns transposed, in the thread's buffers.
fn weight_grad_tile<T: Element>(
    geom: &WindowGeometry,
    image: &[T],
    dy_tile: &[T],
    out_pixels: usize,
    (row_start, row_end): (usize, usize),
    (col_buf, outer_product): (&mut [T], Option<&PerThread<OuterProduct<T>>>),
    partial: &mut [T],
) {
    let col_rows = geom.col_rows();
    let tile_cols = (row_end - row_start) * geom.out_w;
    let out_channels = partial.len() / (col_rows + 1);
    let (partial_weight, partial_bias) = partial.split_at_mut(out_channels * col_rows);
    // in the forward pass this was `y[o, p] += b[o]`, so now `db[o] += dy[o, p]`,
    // summed tile by tile while the tile of dY is in cache for the GEMMs below
    // (a separate pass over dY cost 3% of a baseline training step)
    for (o, db) in partial_bias.iter_mut().enumerate() {
        let row = &dy_tile[o * out_pixels..o * out_pixels + tile_cols];
        *db += sum_in_lanes(row);
    }
    let (col, ld_col) = columns(geom, image, (row_start, row_end), col_buf);
    // forward: Y = W * col, so dW += dY (OC, tile) * col^T (tile, C*KH*KW).
    let beta = if row_start == 0 { T::zero() } else { T::one() };
    let Some(outer_product) = outer_product else {
        // Both operands are contiguous along the tile: gemm_nt's dot-product
        // kernel reads them as they lie.
        gemm_nt(out_channels, col_rows, tile_cols, dy_tile, out_pixels, col, ld_col, beta, partial_weight, col_rows);
        return;
    };
    // A short tile (49 pixels at 7x7) makes every one of the OC*C*KH*KW dot
    // products 49 long: mostly start-up and final reduction. As an outer
    // product, dY packed as A (OC, tile) times col^T (tile, C*KH*KW) row-major,
    // the packed GEMM's 8 x 48 blocks run at its full rate; the transpose reads
    // the tile's columns once.
    outer_product.with(|OuterProduct { col_t, packed_dy }| {
        if col_t.len() < tile_cols * col_rows {
            col_t.resize(tile_cols * col_rows, T::zero());
        }
        let col_t = &mut col_t[..tile_cols * col_rows];
        for j in 0..col_rows {
            for (p, &value) in col[j * ld_col..j * ld_col + tile_cols].iter().enumerate() {
                col_t[p * col_rows + j] = value;
            }
        }
        packed_dy.pack(Trans::No, out_channels, tile_cols, dy_tile, out_pixels);
        gemm_packed(packed_dy, col_rows, col_t, col_rows, beta, partial_weight, col_rows);
    });
}

/// One tile's share of one image's input gradient: `dcol = W^T dY_tile` into
/// `col_buf` (its columns are no longer needed), then col2im adds it onto
/// `image_grad`, whose rows `zero_rows_until` clears just before they are
/// first reached.
#[allow(clippy::too_many_arguments)]
fn input_grad_tile<T: Element>(
    geom: &WindowGeometry,
    packed_weight_t: &PackedA<T>,
    dy_tile: &[T],
    out_pixels: usize,
    (row_start, row_end): (usize, usize),
    col_buf: &mut [T],
    image_grad: &mut [T],
    zero_rows_until: &mut impl FnMut(&mut [T], usize),
) {
    let tile_cols = (row_end - row_start) * geom.out_w;
    // dcol (C*KH*KW, tile) = W^T (C*KH*KW, OC) * dY (OC, tile), over the
    // columns, whose lines are still in cache (a separate buffer cost 50 us of
    // a 780 us conv2 tile in cache misses)
    // output rows row_start..row_end read input rows up to (but not
    // including) (row_end - 1) * s + KH - pt
    let rows_reached = ((row_end - 1) * geom.stride_h + geom.kernel_h).saturating_sub(geom.pad_top).min(geom.in_h);
    zero_rows_until(image_grad, rows_reached);
    if geom.is_pointwise() {
        // a 1x1 convolution's col2im is the identity, each pixel read once: dx[:, tile] = dcol
        let first_col = row_start * geom.out_w;
        let in_plane = geom.in_h * geom.in_w;
        gemm_packed(packed_weight_t, tile_cols, dy_tile, out_pixels, T::zero(), &mut image_grad[first_col..], in_plane);
        return;
    }
    gemm_packed(packed_weight_t, tile_cols, dy_tile, out_pixels, T::zero(), col_buf, tile_cols);
    col2im(geom, col_buf, row_start, row_end, image_grad);
}
