//! The fast Winograd convolution F(4x4, 3x3) for 3x3 stride-1 layers: forward,
//! input gradient and weight gradient, on blocks of tiles kept in cache.
//!
//! The arithmetic, written plainly in f64 with dense matrices, is in
//! [`super`] (read it first); this file computes the same
//! sums and is tested equal to it and to the direct convolution
//! (`tests/suite/kernels.rs`, `tests/suite/winograd.rs`).
//!
//! ## Why it is fast
//!
//! - **4x fewer multiplications.** A 4x4 block of outputs costs 36 products per
//!   channel pair instead of 144. For conv2 of `baseline` (32 -> 64 channels,
//!   220x220 outputs) that turns 1.78 GFLOP per image of GEMM into 0.45.
//! - **The transforms run along tiles, not inside one.** The input is NCHW,
//!   so the tiles of one tile row lie side by side, 4 pixels apart. The six
//!   input rows of a tile row are split into six "phases" (`d[l][ph][t] =
//!   x[y0 + l][4t + ph]`), and then every transform is a sum of whole vectors
//!   over `t`, the tile index: `B^T d B` becomes 12 small sums of 6 vectors, all
//!   SIMD, 8 tiles per instruction. With AVX2 the split (a 4x4 transpose of
//!   pixel pairs), both passes of `B^T . B` and the stores run fused in
//!   registers, reading the rows straight from the image when the block lies
//!   inside it (`x86::input_transform_f32`), and with AVX-512 when it
//!   overhangs the image too, the pixels outside masked off
//!   (`x86_avx512::input_transform_in_plane_avx512_f32`: ResNet's 56-wide
//!   maps, where every block overhangs); the same holds for the
//!   output transform `A^T M A` with its bias, ReLU and the phases joined back
//!   into pixels (`output_transform_f32`, with masked stores at the edge), and
//!   for `A dY A^T` in the weight gradient (`grad_transform_f32`).
//! - **Blocks stay in cache.** Tiles are taken [`TILE_BLOCK`] at a time: the
//!   transformed input `V` `(36, C, tb)` and the products `M` `(36, K, tb)` of
//!   one block (conv2: 147 KB + 295 KB at 32 tiles) stay in L2 between the
//!   three stages instead of streaming ~100 MB of transformed tiles through
//!   memory per image. The forward correlation (and so the input gradient) takes
//!   them as *spans* of consecutive tiles that run on into the next tile row
//!   (`tiles::spans`): the transforms work tile row by tile row (a span's
//!   `segments`), the point GEMM on the whole span, so conv2's 55 tiles a row
//!   no longer leave a 24-wide GEMM per row (as costly as 32 in 16-lane
//!   registers): conv2 of `baseline` 120 -> 110 ms a batch (BENCHMARKS.md).
//!   The weight gradient keeps blocks within one tile row.
//! - **Small maps fill the lanes too.** A 7x7 map has 4 tiles, 2 a tile row.
//!   The forward correlation (`correlate.rs`) puts the tiles of up to 8
//!   images in one span, so the point GEMM reads the transformed weights once
//!   per 32 tiles instead of once per image; and tile rows of fewer than 8
//!   tiles are transformed tile by tile (`gathered.rs`), each tile in a
//!   lane of its own instead of 2 tiles in 8 lanes: ResNet-18's 7-wide blocks
//!   65 -> 35 ms a batch in inference, the whole network 67 -> 79 img/s
//!   (BENCHMARKS.md, round 3, sixth sitting).
//! - **The 36 point-GEMMs use one register-blocked kernel** ([`point_gemm`]):
//!   with AVX-512, 12 x 32 blocks of the result (24 of its 32 registers); with
//!   AVX2, 6 x 16 blocks (12 registers of f32) accumulated over the whole depth, broadcasting 6 values of `A` and loading 2 vectors
//!   of `B` per step (57 GFLOP/s on one Zen 3 core, against 47 for 4 x 16 and
//!   30 for a 4 x 24 block, which needs 16 registers and spills). The same
//!   kernel does `M = U V` (forward, input gradient: depth is channels) and
//!   `Acc += DY' V^T` (weight gradient: depth is tiles).
//! - The weights are transformed once per pass (`U = G g G^T`, 36 x K x C) and
//!   reused by every tile of every image; the bias gradient falls out of the
//!   transformed gradient (point (1, 1) of `A dY A^T` is the sum of the tile),
//!   so it needs no pass over `dY`.
//!
//! Without AVX2 (and always for f64, the gradient checks' type) the same
//! stages run as plain loops over [`LANES`]-wide chunks: the same sums in the
//! same order, multiply and add rounded separately where AVX2 fuses them.
//!
//! ## Order of operations
//!
//! Every sum runs in an order fixed by the shapes alone (channels in order,
//! tiles in order, images reduced as a tree of [`crate::kernels::reduce`]),
//! never by the thread count: results are bit-identical on 1, 2 or 3 threads.
//!
//! ## Accuracy
//!
//! F(4x4, 3x3) loses a little more to rounding than the direct sum (its
//! transforms have entries up to 8 and 1/24): measured against an f64 direct
//! convolution, max |error| / max |output| ~3e-6 forward and ~7e-6 for the
//! input gradient in f32, against ~8e-7 for im2col (`BENCHMARKS.md`).

use super::correlate::correlate_batch;
use super::planes::{transform_grad_plane, transform_input_channels};
use super::point_gemm::point_gemm;
use super::tiles::{blocks, Layout, Shape, LANES, POINTS, TILE_BLOCK};
use super::transforms::transpose_block;
use super::workspace::triple_product;
pub use super::workspace::WinogradWorkspace;
use super::ALPHA;
use crate::element::Element;
use crate::geometry::WindowGeometry;
use crate::kernels::conv_groups::{batchnorm_epilogue, BatchnormAffine, ImageEpilogue};
use crate::kernels::cpu::simd_variant;
use crate::kernels::reduce::{reduce_in_order_onto, reduce_tree, sum_in_lanes};
use rayon::prelude::*;

/// The forward pass by F(4x4, 3x3): `output := W ⋆ input + b`, then
/// `max(., 0)` with `fused_relu`, or the `batchnorm` (inference's conv +
/// batchnorm) on each image's output `(K, OH*OW)` in the task that computed
/// it, while it is in cache (with fewer images than threads, after the whole
/// pass). Shapes as in
/// [`crate::kernels::conv_tiled::conv2d_forward_tiled`]; needs [`super::applies`].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_winograd<T: Element>(
    geom: &WindowGeometry,
    weight: &[T],
    bias: &[T],
    input: &[T],
    output: &mut [T],
    fused_relu: bool,
    workspace: &mut WinogradWorkspace<T>,
    batchnorm: Option<BatchnormAffine<'_, T>>,
) {
    let shape = forward_shape(geom, weight, bias, input.len(), "conv2d_forward_winograd");
    checked_batch(geom, shape.out_channels, input.len(), output.len(), "conv2d_forward_winograd");
    assert!(!(fused_relu && batchnorm.is_some()), "a convolution fuses a ReLU or a batchnorm, not both");
    let epilogue = batchnorm.map(|BatchnormAffine { affine, relu }| {
        assert_eq!(affine.len(), shape.out_channels, "one batchnorm scale and shift per output channel");
        batchnorm_epilogue(affine, relu)
    });
    let then = epilogue.as_ref().map(|epilogue| epilogue as ImageEpilogue<'_, T>);
    correlate_batch(&shape, weight, Some(bias), fused_relu, 1, input, output, workspace, then);
}

/// Inference's convolution, ReLU and max-pool in one pass:
/// `pooled := maxpool_pool(max(W ⋆ input + b, 0))`, `pool x pool` windows at
/// stride `pool` (2, or 4 for two 2x2 pools in a row), PyTorch's floor mode.
/// Each block's 4x4 output tiles are pooled while in cache, so the full-size
/// output (conv2 of `baseline`: 396 MB per batch of 32) is never written nor
/// read back; the values are those of the three layers run one by one, bit
/// for bit (a maximum is exact). `input` `(N, C, H, W)`, `pooled`
/// `(N, K, OH / pool, OW / pool)`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_forward_winograd_relu_maxpool<T: Element>(
    geom: &WindowGeometry,
    weight: &[T],
    bias: &[T],
    input: &[T],
    pooled: &mut [T],
    pool: usize,
    workspace: &mut WinogradWorkspace<T>,
) {
    let pass = "conv2d_forward_winograd_relu_maxpool";
    assert!(pool == 2 || pool == 4, "{pass}: pool {pool} (2 or 4)");
    let shape = forward_shape(geom, weight, bias, input.len(), pass);
    let batch = input.len() / geom.in_len();
    let pooled_len = batch * shape.out_channels * (geom.out_h / pool) * (geom.out_w / pool);
    assert_eq!(pooled.len(), pooled_len, "{pass}: pooled length");
    if pooled_len == 0 {
        return; // outputs smaller than one window
    }
    correlate_batch(&shape, weight, Some(bias), true, pool, input, pooled, workspace, None);
}

/// The forward pass's [`Shape`], after checking the weights and the input's length.
pub(crate) fn forward_shape<T>(geom: &WindowGeometry, weight: &[T], bias: &[T], input_len: usize, pass: &str) -> Shape {
    let out_channels = bias.len();
    assert!(super::applies(geom), "{pass}: 3x3 stride 1 only");
    assert_eq!(weight.len(), out_channels * geom.in_channels * 9, "{pass}: weight length");
    assert_eq!(input_len % geom.in_len(), 0, "{pass}: input length");
    Shape {
        channels: geom.in_channels,
        height: geom.in_h,
        width: geom.in_w,
        pad_top: geom.pad_top,
        pad_left: geom.pad_left,
        out_channels,
        out_h: geom.out_h,
        out_w: geom.out_w,
    }
}

/// The backward pass by Winograd: `grad_weight` `(K, C, 3, 3)` and `grad_bias`
/// `(K,)` overwritten with the batch's sums ([`conv2d_weight_grad_winograd`]),
/// `grad_input` `(N, C, H, W)` if given ([`conv2d_input_grad_winograd`]).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_winograd<T: Element>(
    geom: &WindowGeometry,
    weight: &[T],
    input: &[T],
    grad_output: &[T],
    grad_weight: &mut [T],
    grad_bias: &mut [T],
    grad_input: Option<&mut [T]>,
    workspace: &mut WinogradWorkspace<T>,
) {
    assert_eq!(grad_weight.len(), weight.len(), "conv2d_backward_winograd: grad_weight length");
    conv2d_weight_grad_winograd(geom, input, grad_output, grad_weight, grad_bias, workspace);
    if let Some(grad_input) = grad_input {
        conv2d_input_grad_winograd(geom, weight, grad_output, grad_input, workspace);
    }
}

/// The shape checks the passes share: `input_len` (of `X` `(N, C, H, W)` or of
/// its gradient) and `grad_output_len` (of `Y` or `dY`, `(N, K, OH, OW)`); returns N.
fn checked_batch(
    geom: &WindowGeometry,
    out_channels: usize,
    input_len: usize,
    grad_output_len: usize,
    pass: &str,
) -> usize {
    assert!(super::applies(geom), "{pass}: 3x3 stride 1 only");
    assert_eq!(input_len % geom.in_len(), 0, "{pass}: input length");
    let batch = input_len / geom.in_len();
    assert_eq!(grad_output_len, batch * out_channels * geom.out_pixels(), "{pass}: grad_output length");
    batch
}

/// The weight gradient by F(3x3, 4x4) ([`crate::kernels::winograd`]):
/// `Acc[p][k][c] = sum over tiles (A dY A^T)[p][k] (B^T X B)[p][c]`, one GEMM
/// per point over the tiles, then `dW[k, c] = G^T Acc[k, c] G` once per image;
/// `db` from point (1, 1) of `A dY A^T`. The per-image gradients are summed as
/// the tree of `gradient_leaves`. `input` `(N, C, H, W)`, `grad_output`
/// `(N, K, OH, OW)`; `grad_weight` `(K, C, 3, 3)` and `grad_bias` `(K,)` are overwritten.
pub fn conv2d_weight_grad_winograd<T: Element>(
    geom: &WindowGeometry,
    input: &[T],
    grad_output: &[T],
    grad_weight: &mut [T],
    grad_bias: &mut [T],
    workspace: &mut WinogradWorkspace<T>,
) {
    let (channels, out_channels) = (geom.in_channels, grad_bias.len());
    let pass = "conv2d_weight_grad_winograd";
    let batch = checked_batch(geom, out_channels, input.len(), grad_output.len(), pass);
    assert_eq!(grad_weight.len(), out_channels * channels * 9, "{pass}: grad_weight length");
    let out_plane = geom.out_pixels();
    let shape = Shape {
        channels,
        height: geom.in_h,
        width: geom.in_w,
        pad_top: geom.pad_top,
        pad_left: geom.pad_left,
        out_channels,
        out_h: geom.out_h,
        out_w: geom.out_w,
    };
    let weight_len = out_channels * channels * 9;
    let per_image_len = weight_len + out_channels;
    if workspace.per_image_grads.len() < batch * per_image_len {
        workspace.per_image_grads.resize(batch * per_image_len, T::zero());
    }
    workspace.scratch.ensure_threads();
    let scratch = &workspace.scratch;
    let scratch_len = weight_grad_scratch_len(&shape);
    workspace.per_image_grads[..batch * per_image_len].par_chunks_mut(per_image_len).enumerate().for_each(
        |(n, partial)| {
            let image = &input[n * geom.in_len()..][..geom.in_len()];
            let dy = &grad_output[n * out_channels * out_plane..][..out_channels * out_plane];
            scratch.with(scratch_len, |buf| weight_grad_image(&shape, image, dy, partial, buf));
        },
    );
    let partials = &workspace.per_image_grads[..batch * per_image_len];
    let reduce = if workspace.continue_leaf { reduce_in_order_onto } else { reduce_tree };
    reduce(partials, per_image_len, 0, grad_weight, workspace.gradient_leaves);
    reduce(partials, per_image_len, weight_len, grad_bias, workspace.gradient_leaves);
}

/// The input gradient by F(4x4, 3x3): the forward correlation of `dY` with the
/// kernel turned 180 degrees and its channel axes swapped, padded by `2 - pad`
/// (forward line: `y[o] = sum_i w[i] x[o + i - pad]`, so
/// `dx[y] = sum_i w[i] dy[y + pad - i]`). `weight` `(K, C, 3, 3)`,
/// `grad_output` `(N, K, OH, OW)`; `grad_input` `(N, C, H, W)` is overwritten.
pub fn conv2d_input_grad_winograd<T: Element>(
    geom: &WindowGeometry,
    weight: &[T],
    grad_output: &[T],
    grad_input: &mut [T],
    workspace: &mut WinogradWorkspace<T>,
) {
    let channels = geom.in_channels;
    let out_channels = weight.len() / (9 * channels);
    let pass = "conv2d_input_grad_winograd";
    assert_eq!(weight.len(), out_channels * channels * 9, "{pass}: weight length");
    checked_batch(geom, out_channels, grad_input.len(), grad_output.len(), pass);
    // W' (C, K, 3, 3), kept in the workspace from pass to pass
    let mut turned = std::mem::take(&mut workspace.turned_weight);
    super::turn_weights(weight, out_channels, channels, &mut turned);
    let shape = Shape {
        channels: out_channels,
        height: geom.out_h,
        width: geom.out_w,
        pad_top: 2 - geom.pad_top,
        pad_left: 2 - geom.pad_left,
        out_channels: channels,
        out_h: geom.in_h,
        out_w: geom.in_w,
    };
    correlate_batch(&shape, &turned, None, false, 1, grad_output, grad_input, workspace, None);
    workspace.turned_weight = turned;
}

/// The scratch of [`weight_grad_image`]: `V` and `V^T` `(36, tb, C8)`, `DY'`,
/// the block buffers, and the accumulator `(36, K4, C8)`.
fn weight_grad_layout(shape: &Shape) -> (Layout, usize, usize) {
    let tb_max = TILE_BLOCK.next_multiple_of(LANES);
    let c8 = shape.channels.next_multiple_of(LANES);
    let data_len = 2 * POINTS * c8 * tb_max;
    let layout = Layout::new(data_len, POINTS * shape.out_channels_padded() * tb_max);
    let acc_len = POINTS * shape.out_channels_padded() * c8;
    (layout, acc_len, c8)
}

fn weight_grad_scratch_len(shape: &Shape) -> usize {
    let (layout, acc_len, _) = weight_grad_layout(shape);
    layout.len + acc_len
}

simd_variant! {
    /// One image's weight and bias gradients: [`weight_grad_image_body`],
    /// compiled for AVX2 + FMA when the CPU has them.
    fn weight_grad_image = weight_grad_image_body, "avx2,fma", avx2_fma;
    (shape: &Shape, image: &[T], dy: &[T], partial: &mut [T], buf: &mut [T])
}

/// One image's weight and bias gradients into `partial` (`dW` `(K, C, 3, 3)` then `db` `(K,)`).
#[inline(always)]
fn weight_grad_image_body<T: Element>(shape: &Shape, image: &[T], dy: &[T], partial: &mut [T], buf: &mut [T]) {
    let (channels, out_channels, k_padded) = (shape.channels, shape.out_channels, shape.out_channels_padded());
    let (layout, acc_len, c8) = weight_grad_layout(shape);
    let tb_max = TILE_BLOCK.next_multiple_of(LANES);
    let out_plane = shape.out_h * shape.out_w;
    let (work, acc) = buf[..layout.len + acc_len].split_at_mut(layout.len);
    let (data_buf, rest) = work.split_at_mut(layout.products);
    let (v, vt) = data_buf.split_at_mut(POINTS * c8 * tb_max);
    let (dy_t, rest) = rest.split_at_mut(layout.rows - layout.products);
    let (rows_buf, rest) = rest.split_at_mut(layout.phases - layout.rows);
    let (phases, half) = rest.split_at_mut(layout.half - layout.phases);
    acc.fill(T::zero());
    // db[k] = sum of dY[k] (the forward added b[k] to every output pixel). Row 1 of A
    // is all ones, so the transformed point (1, 1) of a tile is the sum of its 16
    // values: the bias gradient comes out of DY' block by block, without a pass over dY.
    let (grad_weight, grad_bias) = partial.split_at_mut(out_channels * channels * 9);
    grad_bias.fill(T::zero());
    let sum_point = ALPHA + 1;
    for block in blocks(shape) {
        let tb = block.padded;
        // V (36, C, tb) of the input
        transform_input_channels(image, shape, block, rows_buf, phases, half, v, tb);
        // V^T (36, tb, C8), zero past C
        for p in 0..POINTS {
            transpose_block(
                &v[p * channels * tb..][..channels * tb],
                channels,
                tb,
                &mut vt[p * tb * c8..][..tb * c8],
                c8,
            );
        }
        // DY' (36, K4, tb) = A dY A^T per output channel (rows past K stay zero)
        for k in 0..out_channels {
            transform_grad_plane(
                &dy[k * out_plane..][..out_plane],
                shape,
                block,
                rows_buf,
                phases,
                half,
                &mut dy_t[k * tb..],
                k_padded * tb,
            );
        }
        for k in out_channels..k_padded {
            for p in 0..POINTS {
                dy_t[p * k_padded * tb + k * tb..][..tb].fill(T::zero());
            }
        }
        for (k, db) in grad_bias.iter_mut().enumerate() {
            *db += sum_in_lanes(&dy_t[(sum_point * k_padded + k) * tb..][..tb]);
        }
        // Acc[p] (K4, C8) += DY'[p] (K4, tb) V^T[p] (tb, C8)
        for p in 0..POINTS {
            point_gemm(
                k_padded,
                c8,
                tb,
                &dy_t[p * k_padded * tb..],
                tb,
                &vt[p * tb * c8..],
                c8,
                &mut acc[p * k_padded * c8..],
                c8,
                true,
            );
        }
    }
    // dW[k, c] = G^T (3x6) Acc[k, c] (6x6) G (6x3)
    let g_mat = super::G;
    for k in 0..out_channels {
        for c in 0..channels {
            triple_product(
                (3, ALPHA, ALPHA, 3),
                |r, i| g_mat[i][r],
                |i, s| acc[(i * ALPHA + s) * k_padded * c8 + k * c8 + c],
                |s, q| g_mat[s][q],
                |r, q, value| grad_weight[(k * channels + c) * 9 + r * 3 + q] = value,
            );
        }
    }
}
