//! The fast Winograd convolution F(4x4, 3x3) for 3x3 stride-1 layers: forward,
//! input gradient and weight gradient, on blocks of tiles kept in cache.
//!
//! The arithmetic, written plainly in f64 with dense matrices, is in
//! [`crate::kernels::winograd`] (read it first); this file computes the same
//! sums and is tested equal to it and to the direct convolution
//! (`tests/kernels.rs`, `tests/winograd.rs`).
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
//!   inside it (`x86_winograd::input_transform_f32`); the same holds for the
//!   output transform `A^T M A` with its bias, ReLU and the phases joined back
//!   into pixels (`output_transform_f32`), and for `A dY A^T` in the weight
//!   gradient (`grad_transform_f32`).
//! - **Blocks stay in cache.** Tiles are taken [`TILE_BLOCK`] at a time (a chunk
//!   of one tile row): the transformed input `V` `(36, C, tb)` and the products
//!   `M` `(36, K, tb)` of one block (conv2: 110 KB + 221 KB at 24 tiles) stay
//!   in L2 between the three stages instead of streaming ~100 MB of
//!   transformed tiles through memory per image.
//! - **The 36 point-GEMMs use one register-blocked kernel** ([`point_gemm`]):
//!   with AVX2, 6 x 16 blocks of the result (12 registers of f32) accumulated
//!   over the whole depth, broadcasting 6 values of `A` and loading 2 vectors
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

use crate::element::Element;
use crate::geometry::ConvGeometry;
use crate::kernels::reduce::{reduce_tree, sum_in_lanes};
use crate::kernels::scratch::Scratch;
use crate::kernels::winograd::{ALPHA, TILE};
#[cfg(target_arch = "x86_64")]
use crate::kernels::x86_winograd::{
    apply_a_f32, apply_at_f32, apply_bt_f32, grad_transform_f32, input_transform_f32, join_phases_f32,
    output_transform_f32, point_block_f32, split_phases4_f32, split_phases_f32, transpose8x8_f32,
};
use rayon::prelude::*;
use std::any::TypeId;

/// Whether `T` is `f32` (decided at compile time for each instantiation).
fn is_f32<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<f32>()
}

/// `values` as `&[f32]` when `T` is `f32` (the SIMD bodies are written for it).
fn as_f32<T: 'static>(values: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 (same type id), so the cast changes nothing.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<f32>(), values.len()) })
}

/// `values` as `&mut [f32]` when `T` is `f32`.
fn as_f32_mut<T: 'static>(values: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: T is f32 (same type id), so the cast changes nothing; the borrow is moved.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<f32>(), values.len()) })
}

/// Points of the transformed tile, `ALPHA * ALPHA`: the 36 independent GEMMs.
pub const POINTS: usize = ALPHA * ALPHA;
/// Rows of `C` per [`point_gemm`] block (output channels, zero-padded to it).
pub const ROW_BLOCK: usize = 4;
/// Tile counts and the weight gradient's channel count are padded to a multiple
/// of this (one AVX2 vector of f32), so the kernels always run full width.
pub const LANES: usize = 8;
/// Widest column block of the plain [`point_gemm`] body (the AVX2 body takes 16).
pub const COL_BLOCK: usize = 24;
/// Tiles per block: one chunk of a tile row (measured on conv2 of `baseline`,
/// see `BENCHMARKS.md`).
pub const TILE_BLOCK: usize = 24;

/// Whether F(4x4, 3x3) can run this convolution: a 3x3 kernel at stride 1.
pub fn applies(geom: &ConvGeometry) -> bool {
    crate::kernels::winograd::applies(geom)
}

/// The buffers of the Winograd path a layer keeps between passes.
#[derive(Debug, Default)]
pub struct WinogradWorkspace<T> {
    /// `U = G g G^T` as `(36, K4, C)` (`K4`: output channels rounded up to
    /// [`ROW_BLOCK`], zero rows past K); for the input gradient the weights
    /// turned 180 degrees with their channel axes swapped.
    transformed_weight: Vec<T>,
    /// Per-thread block buffers.
    scratch: Scratch<T>,
    /// Per-image weight and bias gradients, summed as a tree afterwards.
    per_image_grads: Vec<T>,
    /// Leaves of the batch's gradient sum ([`crate::kernels::reduce`]).
    pub gradient_leaves: usize,
}

/// The shape of one Winograd correlation: `channels` input planes of
/// `height x width`, read with `pad_top`/`pad_left` zeros before them,
/// `out_channels` output planes of `out_h x out_w`.
#[derive(Debug, Clone, Copy)]
struct Shape {
    channels: usize,
    height: usize,
    width: usize,
    pad_top: usize,
    pad_left: usize,
    out_channels: usize,
    out_h: usize,
    out_w: usize,
}

impl Shape {
    fn tiles(&self) -> (usize, usize) {
        (self.out_h.div_ceil(TILE), self.out_w.div_ceil(TILE))
    }
    /// Output channels rounded up to the GEMM's row block.
    fn out_channels_padded(&self) -> usize {
        self.out_channels.next_multiple_of(ROW_BLOCK)
    }
}

/// `U[p][k][c] = (G g[k, c] G^T)[p]` for `weight` `(K, C, 3, 3)`, K padded to
/// `k_padded` with zero rows. Once per pass: K*C small transforms.
fn transform_weights<T: Element>(weight: &[T], out_channels: usize, channels: usize, k_padded: usize, u: &mut Vec<T>) {
    u.clear();
    u.resize(POINTS * k_padded * channels, T::zero());
    let g_mat = crate::kernels::winograd::G;
    for k in 0..out_channels {
        for c in 0..channels {
            let g = &weight[(k * channels + c) * 9..][..9];
            // G g: 6x3
            let mut gg = [T::zero(); ALPHA * 3];
            for r in 0..ALPHA {
                for j in 0..3 {
                    let mut sum = T::zero();
                    for i in 0..3 {
                        sum += T::from_f64(g_mat[r][i]) * g[i * 3 + j];
                    }
                    gg[r * 3 + j] = sum;
                }
            }
            // (G g) G^T: 6x6
            for r in 0..ALPHA {
                for s in 0..ALPHA {
                    let mut sum = T::zero();
                    for j in 0..3 {
                        sum += gg[r * 3 + j] * T::from_f64(g_mat[s][j]);
                    }
                    u[((r * ALPHA + s) * k_padded + k) * channels + c] = sum;
                }
            }
        }
    }
}

/// `W'[c, k, i, j] = W[k, c, 2 - i, 2 - j]`: the kernel of the input gradient.
fn turn_weights<T: Element>(weight: &[T], out_channels: usize, channels: usize) -> Vec<T> {
    let mut turned = vec![T::zero(); weight.len()];
    for k in 0..out_channels {
        for c in 0..channels {
            for i in 0..3 {
                for j in 0..3 {
                    turned[((c * out_channels + k) * 3 + i) * 3 + j] =
                        weight[((k * channels + c) * 3 + 2 - i) * 3 + 2 - j];
                }
            }
        }
    }
    turned
}

/// Six disjoint mutable vectors `buf[base + i * stride..][..n]`, `i = 0..6`.
#[inline(always)]
fn six_mut<T>(buf: &mut [T], base: usize, stride: usize, n: usize) -> [&mut [T]; 6] {
    assert!(stride >= n && buf.len() >= base + 5 * stride + n, "six_mut: out of bounds");
    let (_, rest) = buf.split_at_mut(base);
    let (v0, rest) = rest.split_at_mut(stride);
    let (v1, rest) = rest.split_at_mut(stride);
    let (v2, rest) = rest.split_at_mut(stride);
    let (v3, rest) = rest.split_at_mut(stride);
    let (v4, v5) = rest.split_at_mut(stride);
    [&mut v0[..n], &mut v1[..n], &mut v2[..n], &mut v3[..n], &mut v4[..n], &mut v5[..n]]
}

/// Six vectors `buf[base + i * stride..][..n]`.
#[inline(always)]
fn six<T>(buf: &[T], base: usize, stride: usize, n: usize) -> [&[T]; 6] {
    assert!(buf.len() >= base + 5 * stride + n, "six: out of bounds");
    let at = |i: usize| &buf[base + i * stride..base + i * stride + n];
    [at(0), at(1), at(2), at(3), at(4), at(5)]
}

/// `out = B^T d` along one axis, vector by vector (`d`, `out`: 6 vectors):
///
/// ```text
/// out0 = 4 d0 - 5 d2 + d4          out3 = (d4 - d2) + 2 (d3 - d1)
/// out1 = (d3 + d4) - 4 (d1 + d2)   out4 = (d4 - d2) - 2 (d3 - d1)
/// out2 = (d4 - d3) + 4 (d1 - d2)   out5 = 4 d1 - 5 d3 + d5
/// ```
#[inline(always)]
fn apply_bt<T: Element>(input: [&[T]; 6], out: [&mut [T]; 6]) {
    #[cfg(target_arch = "x86_64")]
    if is_f32::<T>() && avx2_fma() {
        let n = out[0].len();
        assert!(n.is_multiple_of(LANES) && input.iter().all(|v| v.len() >= n) && out.iter().all(|v| v.len() >= n));
        {
            let src = |k: usize| input[k].as_ptr().cast::<f32>();
            let mut out = out;
            let mut dst = |k: usize| out[k].as_mut_ptr().cast::<f32>();
            // SAFETY: AVX2 and FMA are present; every vector holds `n` elements (asserted) and
            // the outputs are distinct `&mut` slices; T is f32.
            unsafe {
                apply_bt_f32(
                    [src(0), src(1), src(2), src(3), src(4), src(5)],
                    [dst(0), dst(1), dst(2), dst(3), dst(4), dst(5)],
                    n,
                )
            }
        };
        return;
    }
    let (four, five, two) = (T::from_f64(4.0), T::from_f64(5.0), T::from_f64(2.0));
    // 8 tiles at a time, loaded into locals before anything is stored: the
    // compiler then needs no proof that the vectors do not overlap to use SIMD
    for_chunks(input, out, |x: [[T; LANES]; 6]| {
        let mut o = [[T::zero(); LANES]; 6];
        for t in 0..LANES {
            let [x0, x1, x2, x3, x4, x5] = x.map(|v| v[t]);
            o[0][t] = four * x0 - five * x2 + x4;
            o[1][t] = (x3 + x4) - four * (x1 + x2);
            o[2][t] = (x4 - x3) + four * (x1 - x2);
            o[3][t] = (x4 - x2) + two * (x3 - x1);
            o[4][t] = (x4 - x2) - two * (x3 - x1);
            o[5][t] = four * x1 - five * x3 + x5;
        }
        o
    });
}

/// Runs `f` on [`LANES`]-long chunks of the `I` input vectors, writing its
/// `O` results to the output vectors (all as long as the first output, a
/// multiple of [`LANES`]).
#[inline(always)]
fn for_chunks<T: Element, const I: usize, const O: usize>(
    inputs: [&[T]; I],
    outputs: [&mut [T]; O],
    f: impl Fn([[T; LANES]; I]) -> [[T; LANES]; O],
) {
    let n = outputs[0].len();
    debug_assert!(n.is_multiple_of(LANES));
    let inputs = inputs.map(|v| &v[..n]);
    let mut outputs = outputs.map(|v| &mut v[..n]);
    for t0 in (0..n).step_by(LANES) {
        let x: [[T; LANES]; I] = std::array::from_fn(|i| inputs[i][t0..t0 + LANES].try_into().expect("LANES"));
        let y = f(x);
        for (out, values) in outputs.iter_mut().zip(&y) {
            out[t0..t0 + LANES].copy_from_slice(values);
        }
    }
}

/// `out = A^T m` along one axis (`m`: 6 vectors, `out`: 4):
///
/// ```text
/// out0 = m0 + (m1 + m2) + (m3 + m4)     out2 = (m1 + m2) + 4 (m3 + m4)
/// out1 = (m1 - m2) + 2 (m3 - m4)        out3 = (m1 - m2) + 8 (m3 - m4) + m5
/// ```
#[inline(always)]
fn apply_at<T: Element>(input: [&[T]; 6], out: [&mut [T]; 4]) {
    #[cfg(target_arch = "x86_64")]
    if is_f32::<T>() && avx2_fma() {
        let n = out[0].len();
        assert!(n.is_multiple_of(LANES) && input.iter().all(|v| v.len() >= n) && out.iter().all(|v| v.len() >= n));
        {
            let src = |k: usize| input[k].as_ptr().cast::<f32>();
            let mut out = out;
            let mut dst = |k: usize| out[k].as_mut_ptr().cast::<f32>();
            // SAFETY: AVX2 and FMA are present; every vector holds `n` elements (asserted) and
            // the outputs are distinct `&mut` slices; T is f32.
            unsafe {
                apply_at_f32([src(0), src(1), src(2), src(3), src(4), src(5)], [dst(0), dst(1), dst(2), dst(3)], n)
            }
        };
        return;
    }
    let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
    for_chunks(input, out, |x: [[T; LANES]; 6]| {
        let mut o = [[T::zero(); LANES]; 4];
        for t in 0..LANES {
            let [m0, m1, m2, m3, m4, m5] = x.map(|v| v[t]);
            let (sum12, diff12) = (m1 + m2, m1 - m2);
            let (sum34, diff34) = (m3 + m4, m3 - m4);
            o[0][t] = m0 + sum12 + sum34;
            o[1][t] = diff12 + two * diff34;
            o[2][t] = sum12 + four * sum34;
            o[3][t] = diff12 + eight * diff34 + m5;
        }
        o
    });
}

/// `out = A d` along one axis, the transform of a 4-vector `dY` tile into 6
/// (the weight gradient's "filter" side):
///
/// ```text
/// out0 = d0                         out3 = (d0 + 4 d2) + (2 d1 + 8 d3)
/// out1 = (d0 + d2) + (d1 + d3)      out4 = (d0 + 4 d2) - (2 d1 + 8 d3)
/// out2 = (d0 + d2) - (d1 + d3)      out5 = d3
/// ```
#[inline(always)]
fn apply_a<T: Element>(input: [&[T]; 4], out: [&mut [T]; 6]) {
    #[cfg(target_arch = "x86_64")]
    if is_f32::<T>() && avx2_fma() {
        let n = out[0].len();
        assert!(n.is_multiple_of(LANES) && input.iter().all(|v| v.len() >= n) && out.iter().all(|v| v.len() >= n));
        {
            let src = |k: usize| input[k].as_ptr().cast::<f32>();
            let mut out = out;
            let mut dst = |k: usize| out[k].as_mut_ptr().cast::<f32>();
            // SAFETY: AVX2 and FMA are present; every vector holds `n` elements (asserted) and
            // the outputs are distinct `&mut` slices; T is f32.
            unsafe {
                apply_a_f32([src(0), src(1), src(2), src(3)], [dst(0), dst(1), dst(2), dst(3), dst(4), dst(5)], n)
            }
        };
        return;
    }
    let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
    for_chunks(input, out, |x: [[T; LANES]; 4]| {
        let mut o = [[T::zero(); LANES]; 6];
        for t in 0..LANES {
            let [d0, d1, d2, d3] = x.map(|v| v[t]);
            let (even, odd) = (d0 + d2, d1 + d3);
            let (even4, odd28) = (d0 + four * d2, two * d1 + eight * d3);
            o[0][t] = d0;
            o[1][t] = even + odd;
            o[2][t] = even - odd;
            o[3][t] = even4 + odd28;
            o[4][t] = even4 - odd28;
            o[5][t] = d3;
        }
        o
    });
}

/// `C := A B (+ C if accumulate)` for the point GEMMs: `A` is `rows x depth`
/// (`A[r][p] = a[r * lda + p]`), `B` is `depth x n` (`B[p][j] = b[p * ldb + j]`),
/// `C` is `rows x n` (`C[r][j] = c[r * ldc + j]`). `rows` must be a multiple of
/// [`ROW_BLOCK`] and `n` of [`LANES`]. The sum for each `C[r][j]` runs over
/// `p = 0..depth` in order.
///
/// ```
/// use convnet_tensor::kernels::conv_winograd::point_gemm;
/// // A (4x2) = rows (1,2) (3,4) (5,6) (7,8); B (2x8) = rows of 1s and of 0..8
/// let a = [1.0f32, 2., 3., 4., 5., 6., 7., 8.];
/// let b: Vec<f32> = (0..16).map(|i| if i < 8 { 1.0 } else { (i - 8) as f32 }).collect();
/// let mut c = vec![0.0f32; 32];
/// point_gemm(4, 8, 2, &a, 2, &b, 8, &mut c, 8, false);
/// assert_eq!(c[..8], [1.0f32, 3., 5., 7., 9., 11., 13., 15.]); // 1 + 2 j
/// assert_eq!(c[24..], [7.0f32, 15., 23., 31., 39., 47., 55., 63.]); // 7 + 8 j
/// ```
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn point_gemm<T: Element>(
    rows: usize,
    n: usize,
    depth: usize,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
) {
    assert!(rows.is_multiple_of(ROW_BLOCK) && n.is_multiple_of(LANES), "point_gemm: rows {rows}, n {n}");
    if rows == 0 || n == 0 {
        return;
    }
    assert!(a.len() >= (rows - 1) * lda + depth, "point_gemm: A too short");
    assert!(depth == 0 || b.len() >= (depth - 1) * ldb + n, "point_gemm: B too short");
    assert!(c.len() >= (rows - 1) * ldc + n, "point_gemm: C too short");
    #[cfg(target_arch = "x86_64")]
    if let (Some(a), Some(b), Some(c)) = (as_f32(a), as_f32(b), as_f32_mut(c)) {
        if avx2_fma() {
            let mut col = 0;
            while col < n {
                let width = (n - col).min(16);
                // blocks of 6 rows, then of 4 (rows is a multiple of 4: 6s until 4 or 8 remain)
                let mut row = 0;
                while row < rows {
                    let left = rows - row;
                    let height = if left >= 6 && left != 8 { 6 } else { 4 };
                    let (a, c) = (a[row * lda..].as_ptr(), c[row * ldc + col..].as_mut_ptr());
                    let b = b[col..].as_ptr();
                    // SAFETY: AVX2 and FMA are present; the asserts above put rows
                    // `row..row + height` of A (depth long), rows `0..depth` of B from
                    // column `col` (`width` wide) and rows `row..row + height` of C inside
                    // their slices; C is a distinct `&mut`.
                    unsafe {
                        match (height, width) {
                            (6, 16) => point_block_f32::<6, 2>(depth, a, lda, b, ldb, c, ldc, accumulate),
                            (6, _) => point_block_f32::<6, 1>(depth, a, lda, b, ldb, c, ldc, accumulate),
                            (_, 16) => point_block_f32::<4, 2>(depth, a, lda, b, ldb, c, ldc, accumulate),
                            _ => point_block_f32::<4, 1>(depth, a, lda, b, ldb, c, ldc, accumulate),
                        }
                    }
                    row += height;
                }
                col += width;
            }
            return;
        }
    }
    let mut col = 0;
    while col < n {
        let width = (n - col).min(COL_BLOCK);
        for row in (0..rows).step_by(ROW_BLOCK) {
            match width {
                24 => point_block::<T, 24>(row, col, depth, a, lda, b, ldb, c, ldc, accumulate),
                16 => point_block::<T, 16>(row, col, depth, a, lda, b, ldb, c, ldc, accumulate),
                _ => point_block::<T, 8>(row, col, depth, a, lda, b, ldb, c, ldc, accumulate),
            }
        }
        col += width;
    }
}

/// One `ROW_BLOCK x W` block of [`point_gemm`], held in registers over the depth.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn point_block<T: Element, const W: usize>(
    row: usize,
    col: usize,
    depth: usize,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    c: &mut [T],
    ldc: usize,
    accumulate: bool,
) {
    let mut acc = [[T::zero(); W]; ROW_BLOCK];
    if accumulate {
        for (r, acc_row) in acc.iter_mut().enumerate() {
            acc_row.copy_from_slice(&c[(row + r) * ldc + col..][..W]);
        }
    }
    let a_row = |r: usize| &a[(row + r) * lda..][..depth];
    let a_rows = [a_row(0), a_row(1), a_row(2), a_row(3)];
    for p in 0..depth {
        let b_row: &[T; W] = b[p * ldb + col..][..W].try_into().expect("W elements");
        let a_col = [a_rows[0][p], a_rows[1][p], a_rows[2][p], a_rows[3][p]];
        for r in 0..ROW_BLOCK {
            for j in 0..W {
                acc[r][j] += a_col[r] * b_row[j];
            }
        }
    }
    for (r, acc_row) in acc.iter().enumerate() {
        c[(row + r) * ldc + col..][..W].copy_from_slice(acc_row);
    }
}

/// Where one block of tiles sits: tile row `ty`, tiles `tx0..tx0 + count`,
/// padded to `padded` (a multiple of [`LANES`]).
#[derive(Debug, Clone, Copy)]
struct Block {
    ty: usize,
    tx0: usize,
    count: usize,
    padded: usize,
}

fn blocks(shape: &Shape) -> impl Iterator<Item = Block> {
    let (tiles_y, tiles_x) = shape.tiles();
    (0..tiles_y).flat_map(move |ty| {
        (0..tiles_x).step_by(TILE_BLOCK).map(move |tx0| {
            let count = (tiles_x - tx0).min(TILE_BLOCK);
            Block { ty, tx0, count, padded: count.next_multiple_of(LANES) }
        })
    })
}

/// Scratch layout of one block (offsets into a thread's buffer).
struct Layout {
    /// `M` `(36, K4, tb)`, or `DY'` `(36, K4, tb)` for the weight gradient.
    products: usize,
    /// Six padded input rows `(6, 4 tb + 2)`.
    rows: usize,
    /// Phases `(36, tb)` and a second `(36, tb)` for the half-transformed.
    phases: usize,
    half: usize,
    len: usize,
}

impl Layout {
    fn new(data_len: usize, products_len: usize) -> Layout {
        let tb = TILE_BLOCK.next_multiple_of(LANES);
        // the data `V` (36, C, tb) first, from offset 0
        let products = data_len;
        let rows = products + products_len;
        let phases = rows + ALPHA * (TILE * tb + 4);
        let half = phases + POINTS * tb;
        let len = half + POINTS * tb;
        Layout { products, rows, phases, half, len }
    }
}

/// `V[p][c][t] = (B^T d B)[p]` for the tiles of `block` in one input plane,
/// `v` addressed as `v[p * point_stride + t]`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn transform_input_plane<T: Element>(
    plane: &[T],
    shape: &Shape,
    block: Block,
    rows_buf: &mut [T],
    phases: &mut [T],
    half: &mut [T],
    v: &mut [T],
    point_stride: usize,
) {
    let tb = block.padded;
    // 4 tb + 2 pixels reach the last tile; 2 more of zeros let the SIMD split read 32 at a time
    let row_len = TILE * tb + 4;
    let y0 = (block.ty * TILE) as isize - shape.pad_top as isize;
    let x0 = (block.tx0 * TILE) as isize - shape.pad_left as isize;
    #[cfg(target_arch = "x86_64")]
    if is_f32::<T>() && avx2_fma() {
        let inside = y0 >= 0 && y0 as usize + ALPHA <= shape.height && x0 >= 0 && x0 as usize + row_len <= shape.width;
        if inside {
            // all six rows lie inside the plane: read them where they are
            let (y0, x0) = (y0 as usize, x0 as usize);
            let row = |l: usize| plane[(y0 + l) * shape.width + x0..][..row_len].as_ptr().cast::<f32>();
            assert!(v.len() >= 35 * point_stride + tb);
            // SAFETY: AVX2 is present; each row holds row_len = 4 tb + 4 elements of the
            // plane (checked just above), `v` the 36 points (asserted); T is f32.
            unsafe {
                input_transform_f32(
                    [row(0), row(1), row(2), row(3), row(4), row(5)],
                    tb,
                    v.as_mut_ptr().cast(),
                    point_stride,
                )
            };
            return;
        }
    }
    // the six input rows y0..y0+6, columns x0..x0+row_len, zeros outside the plane
    let (x_start, x_end) = (x0.max(0) as usize, ((x0 + row_len as isize).min(shape.width as isize)).max(0) as usize);
    for l in 0..ALPHA {
        let row = &mut rows_buf[l * row_len..][..row_len];
        let y = y0 + l as isize;
        if y < 0 || y >= shape.height as isize || x_start >= x_end {
            row.fill(T::zero());
            continue;
        }
        let src = &plane[y as usize * shape.width..][..shape.width];
        let first = (x_start as isize - x0) as usize;
        row[..first].fill(T::zero());
        row[first..first + x_end - x_start].copy_from_slice(&src[x_start..x_end]);
        row[first + x_end - x_start..].fill(T::zero());
    }
    #[cfg(target_arch = "x86_64")]
    if is_f32::<T>() && avx2_fma() {
        let row = |l: usize| rows_buf[l * row_len..][..row_len].as_ptr().cast::<f32>();
        assert!(v.len() >= 35 * point_stride + tb);
        // SAFETY: AVX2 is present; each row of rows_buf holds 4 tb + 4 elements, `v` the
        // 36 points (asserted); T is f32.
        unsafe {
            input_transform_f32(
                [row(0), row(1), row(2), row(3), row(4), row(5)],
                tb,
                v.as_mut_ptr().cast(),
                point_stride,
            )
        };
        return;
    }
    // phases: d[l][ph][t] = row_l[4t + ph], at phases[(l * 6 + ph) * tb + t];
    // phases 4 and 5 are phases 0 and 1 one tile on
    for l in 0..ALPHA {
        let row = &rows_buf[l * row_len..][..row_len];
        #[cfg(target_arch = "x86_64")]
        if is_f32::<T>() && avx2_fma() {
            let targets = six_mut(phases, l * ALPHA * tb, tb, tb).map(|v| v.as_mut_ptr().cast::<f32>());
            // SAFETY: AVX2 is present; `row` holds 4 tb + 4 elements, each phase tb; T is f32.
            unsafe { split_phases_f32(row.as_ptr().cast::<f32>(), targets, tb) };
            continue;
        }
        let [p0, p1, p2, p3, p4, p5] = six_mut(phases, l * ALPHA * tb, tb, tb);
        for t0 in (0..tb).step_by(LANES) {
            let pixels: &[T; TILE * LANES] = row[TILE * t0..][..TILE * LANES].try_into().expect("32 pixels");
            let mut split = [[T::zero(); LANES]; TILE];
            for t in 0..LANES {
                for ph in 0..TILE {
                    split[ph][t] = pixels[TILE * t + ph];
                }
            }
            p0[t0..t0 + LANES].copy_from_slice(&split[0]);
            p1[t0..t0 + LANES].copy_from_slice(&split[1]);
            p2[t0..t0 + LANES].copy_from_slice(&split[2]);
            p3[t0..t0 + LANES].copy_from_slice(&split[3]);
        }
        p4[..tb - 1].copy_from_slice(&p0[1..]);
        p5[..tb - 1].copy_from_slice(&p1[1..]);
        (p4[tb - 1], p5[tb - 1]) = (row[TILE * tb], row[TILE * tb + 1]);
    }
    // along y: half[j][ph] = sum_l B^T[j][l] d[l][ph]
    for ph in 0..ALPHA {
        apply_bt(six(phases, ph * tb, ALPHA * tb, tb), six_mut(half, ph * tb, ALPHA * tb, tb));
    }
    // along x: V[j*6 + i] = sum_ph B^T[i][ph] half[j][ph]
    for j in 0..ALPHA {
        apply_bt(six(half, j * ALPHA * tb, tb, tb), six_mut(v, j * ALPHA * point_stride, point_stride, tb));
    }
}

/// Reads the products `M[p][k][t]` of one output channel (`m[p * point_stride + t]`),
/// computes `A^T M A`, adds the bias (and the fused ReLU) and writes the valid
/// part into the output plane.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn transform_output_plane<T: Element>(
    m: &[T],
    point_stride: usize,
    shape: &Shape,
    block: Block,
    bias: T,
    relu: bool,
    half: &mut [T],
    out4: &mut [T],
    plane: &mut [T],
) {
    let tb = block.padded;
    let y_first = block.ty * TILE;
    #[cfg(target_arch = "x86_64")]
    {
        let x_first = block.tx0 * TILE;
        let valid = (shape.out_w - x_first).min(block.count * TILE);
        if is_f32::<T>() && avx2_fma() && valid.is_multiple_of(TILE * LANES) {
            let valid_rows = TILE.min(shape.out_h - y_first);
            assert!(m.len() >= 35 * point_stride + tb);
            let bias = as_f32(std::slice::from_ref(&bias)).expect("f32")[0];
            let mut row = |r: usize| {
                let r = r.min(valid_rows - 1);
                plane[(y_first + r) * shape.out_w + x_first..][..valid].as_mut_ptr().cast::<f32>()
            };
            let rows = [row(0), row(1), row(2), row(3)];
            // SAFETY: AVX2 is present; `m` holds the 36 points (asserted), each of the first
            // `valid_rows` rows `valid` = 32 chunks pixels of the plane (rows past those are
            // never written); T is f32.
            unsafe {
                output_transform_f32(
                    m.as_ptr().cast(),
                    point_stride,
                    rows,
                    valid_rows,
                    valid / (TILE * LANES),
                    bias,
                    relu,
                )
            };
            return;
        }
    }
    // along y: half[r][i] = sum_j A^T[r][j] M[j*6 + i], at half[(r * 6 + i) * tb]
    for i in 0..ALPHA {
        let [h0, h1, h2, h3, _, _] = six_mut(half, i * tb, ALPHA * tb, tb);
        apply_at(six(m, i * point_stride, ALPHA * point_stride, tb), [h0, h1, h2, h3]);
    }
    for r in 0..TILE.min(shape.out_h - y_first) {
        // along x: y[r][s] = sum_i A^T[s][i] half[r][i], at out4[s * tb]
        let [o0, o1, o2, o3, _, _] = six_mut(out4, 0, tb, tb);
        apply_at(six(half, r * ALPHA * tb, tb, tb), [o0, o1, o2, o3]);
        // interleave the four phases into the output row, + bias (and ReLU)
        let x_first = block.tx0 * TILE;
        let valid = (shape.out_w - x_first).min(block.count * TILE);
        let row = &mut plane[(y_first + r) * shape.out_w + x_first..][..valid];
        let epilogue = |value: T| {
            let biased = value + bias;
            if !relu || biased > T::zero() {
                biased
            } else {
                T::zero()
            }
        };
        // 8 tiles (32 pixels) at a time, then the rest pixel by pixel
        let full_chunks = valid / (TILE * LANES);
        #[cfg(target_arch = "x86_64")]
        if is_f32::<T>() && avx2_fma() {
            let source = |s: usize| out4[s * tb..][..tb].as_ptr().cast::<f32>();
            let sources = [source(0), source(1), source(2), source(3)];
            let bias = as_f32(std::slice::from_ref(&bias)).expect("f32")[0];
            // SAFETY: AVX2 is present; `row` holds `valid` >= 32 full_chunks elements and each
            // phase tb >= 8 full_chunks (full_chunks * 32 <= valid <= 4 count <= 4 tb); T is f32.
            unsafe { join_phases_f32(sources, row.as_mut_ptr().cast::<f32>(), full_chunks, bias, relu) };
            for x in full_chunks * TILE * LANES..valid {
                row[x] = epilogue(out4[(x % TILE) * tb + x / TILE]);
            }
            continue;
        }
        for (chunk, pixels) in row.chunks_exact_mut(TILE * LANES).enumerate() {
            let t0 = chunk * LANES;
            let phases: [&[T; LANES]; TILE] =
                std::array::from_fn(|s| out4[s * tb + t0..][..LANES].try_into().expect("LANES"));
            let mut joined = [T::zero(); TILE * LANES];
            for t in 0..LANES {
                for s in 0..TILE {
                    joined[TILE * t + s] = epilogue(phases[s][t]);
                }
            }
            pixels.copy_from_slice(&joined);
        }
        for x in full_chunks * TILE * LANES..valid {
            row[x] = epilogue(out4[(x % TILE) * tb + x / TILE]);
        }
    }
}

/// One image of the Winograd correlation: `output (K, OH, OW) := W ⋆ input (C, H, W) (+ bias, ReLU)`
/// with `u` the transformed weights `(36, K4, C)`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn correlate_image_body<T: Element>(
    shape: &Shape,
    u: &[T],
    bias: Option<&[T]>,
    relu: bool,
    image: &[T],
    image_out: &mut [T],
    buf: &mut [T],
) {
    let (channels, k_padded) = (shape.channels, shape.out_channels_padded());
    let tb_max = TILE_BLOCK.next_multiple_of(LANES);
    let layout = Layout::new(POINTS * channels * tb_max, POINTS * k_padded * tb_max);
    let (plane, out_plane) = (shape.height * shape.width, shape.out_h * shape.out_w);
    let (data_buf, rest) = buf[..layout.len].split_at_mut(layout.products);
    let (products_buf, rest) = rest.split_at_mut(layout.rows - layout.products);
    let (rows_buf, rest) = rest.split_at_mut(layout.phases - layout.rows);
    let (phases, half) = rest.split_at_mut(layout.half - layout.phases);
    for block in blocks(shape) {
        let tb = block.padded;
        // V (36, C, tb): point stride C*tb
        for c in 0..channels {
            transform_input_plane(
                &image[c * plane..][..plane],
                shape,
                block,
                rows_buf,
                phases,
                half,
                &mut data_buf[c * tb..],
                channels * tb,
            );
        }
        // M[p] (K4, tb) = U[p] (K4, C) V[p] (C, tb)
        for p in 0..POINTS {
            point_gemm(
                k_padded,
                tb,
                channels,
                &u[p * k_padded * channels..],
                channels,
                &data_buf[p * channels * tb..],
                tb,
                &mut products_buf[p * k_padded * tb..],
                tb,
                false,
            );
        }
        // Y[k] = A^T M[k] A (+ b[k]); `phases` is free now: it holds the 4 output phases
        for k in 0..shape.out_channels {
            let b = bias.map_or(T::zero(), |b| b[k]);
            transform_output_plane(
                &products_buf[k * tb..],
                k_padded * tb,
                shape,
                block,
                b,
                relu,
                half,
                phases,
                &mut image_out[k * out_plane..][..out_plane],
            );
        }
    }
}

/// The scratch length one image of [`correlate_image_body`] needs.
fn correlate_scratch_len(shape: &Shape) -> usize {
    let tb_max = TILE_BLOCK.next_multiple_of(LANES);
    Layout::new(POINTS * shape.channels * tb_max, POINTS * shape.out_channels_padded() * tb_max).len
}

/// [`correlate_image_body`] compiled for AVX2 + FMA (the same operations, so the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn correlate_image_avx2<T: Element>(
    shape: &Shape,
    u: &[T],
    bias: Option<&[T]>,
    relu: bool,
    image: &[T],
    image_out: &mut [T],
    buf: &mut [T],
) {
    correlate_image_body(shape, u, bias, relu, image, image_out, buf)
}

#[allow(clippy::too_many_arguments)]
fn correlate_image<T: Element>(
    shape: &Shape,
    u: &[T],
    bias: Option<&[T]>,
    relu: bool,
    image: &[T],
    image_out: &mut [T],
    buf: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { correlate_image_avx2(shape, u, bias, relu, image, image_out, buf) };
    }
    correlate_image_body(shape, u, bias, relu, image, image_out, buf)
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn avx2_fma() -> bool {
    !PORTABLE_ONLY.load(std::sync::atomic::Ordering::Relaxed)
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
}

/// Set by [`use_portable_bodies`].
static PORTABLE_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// With `true`, the Winograd path runs its plain (non-SIMD) bodies even on a
/// CPU with AVX2, as it does elsewhere: for tests that hold both to the
/// reference. Process-wide; the default is `false`.
#[doc(hidden)]
pub fn use_portable_bodies(portable: bool) {
    PORTABLE_ONLY.store(portable, std::sync::atomic::Ordering::Relaxed);
}

/// A batch of the Winograd correlation, one task per image.
fn correlate_batch<T: Element>(
    shape: &Shape,
    weight_kc: &[T],
    bias: Option<&[T]>,
    relu: bool,
    input: &[T],
    output: &mut [T],
    workspace: &mut WinogradWorkspace<T>,
) {
    let k_padded = shape.out_channels_padded();
    transform_weights(weight_kc, shape.out_channels, shape.channels, k_padded, &mut workspace.transformed_weight);
    workspace.scratch.ensure_threads();
    let (in_len, out_len) =
        (shape.channels * shape.height * shape.width, shape.out_channels * shape.out_h * shape.out_w);
    let u = &workspace.transformed_weight;
    let scratch = &workspace.scratch;
    let scratch_len = correlate_scratch_len(shape);
    input.par_chunks(in_len).zip(output.par_chunks_mut(out_len)).for_each(|(image, image_out)| {
        scratch.with(scratch_len, |buf| correlate_image(shape, u, bias, relu, image, image_out, buf));
    });
}

/// The forward pass by F(4x4, 3x3): `output := W ⋆ input + b`, then
/// `max(., 0)` with `fused_relu`. Shapes as in
/// [`crate::kernels::conv_tiled::conv2d_forward_tiled`]; needs [`applies`].
pub fn conv2d_forward_winograd<T: Element>(
    geom: &ConvGeometry,
    weight: &[T],
    bias: &[T],
    input: &[T],
    output: &mut [T],
    fused_relu: bool,
    workspace: &mut WinogradWorkspace<T>,
) {
    assert!(applies(geom), "conv2d_forward_winograd: 3x3 stride 1 only");
    let out_channels = bias.len();
    assert_eq!(weight.len(), out_channels * geom.in_channels * 9, "conv2d_forward_winograd: weight length");
    assert_eq!(input.len() % geom.in_len(), 0, "conv2d_forward_winograd: input length");
    let batch = input.len() / geom.in_len();
    assert_eq!(output.len(), batch * out_channels * geom.out_pixels(), "conv2d_forward_winograd: output length");
    let shape = Shape {
        channels: geom.in_channels,
        height: geom.in_h,
        width: geom.in_w,
        pad_top: geom.pad_top,
        pad_left: geom.pad_left,
        out_channels,
        out_h: geom.out_h,
        out_w: geom.out_w,
    };
    correlate_batch(&shape, weight, Some(bias), fused_relu, input, output, workspace);
}

/// The backward pass by Winograd: `grad_weight` `(K, C, 3, 3)` and `grad_bias`
/// `(K,)` overwritten with the batch's sums, `grad_input` `(N, C, H, W)` if given.
///
/// - The input gradient is the forward correlation of `dY` with the kernel
///   turned 180 degrees and its channel axes swapped, padded by `2 - pad`
///   (forward line: `y[o] = sum_i w[i] x[o + i - pad]`, so
///   `dx[y] = sum_i w[i] dy[y + pad - i]`).
/// - The weight gradient by F(3x3, 4x4) ([`crate::kernels::winograd`]):
///   `Acc[p][k][c] = sum over tiles (A dY A^T)[p][k] (B^T X B)[p][c]`, one GEMM
///   per point over the tiles, then `dW[k, c] = G^T Acc[k, c] G` once per image.
/// - Per-image gradients are summed as the tree of `gradient_leaves`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_winograd<T: Element>(
    geom: &ConvGeometry,
    weight: &[T],
    input: &[T],
    grad_output: &[T],
    grad_weight: &mut [T],
    grad_bias: &mut [T],
    grad_input: Option<&mut [T]>,
    workspace: &mut WinogradWorkspace<T>,
) {
    assert!(applies(geom), "conv2d_backward_winograd: 3x3 stride 1 only");
    let (channels, out_channels) = (geom.in_channels, grad_bias.len());
    assert_eq!(weight.len(), out_channels * channels * 9, "conv2d_backward_winograd: weight length");
    assert_eq!(grad_weight.len(), weight.len(), "conv2d_backward_winograd: grad_weight length");
    assert_eq!(input.len() % geom.in_len(), 0, "conv2d_backward_winograd: input length");
    let batch = input.len() / geom.in_len();
    let out_plane = geom.out_pixels();
    assert_eq!(grad_output.len(), batch * out_channels * out_plane, "conv2d_backward_winograd: grad_output length");

    // the weight gradient, image by image
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
    reduce_tree(partials, per_image_len, 0, grad_weight, workspace.gradient_leaves);
    reduce_tree(partials, per_image_len, weight_len, grad_bias, workspace.gradient_leaves);

    // the input gradient: dY (K, OH, OW) correlated with W' (C, K, 3, 3), padded by 2 - pad
    if let Some(grad_input) = grad_input {
        assert_eq!(grad_input.len(), input.len(), "conv2d_backward_winograd: grad_input length");
        let turned = turn_weights(weight, out_channels, channels);
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
        correlate_batch(&shape, &turned, None, false, grad_output, grad_input, workspace);
    }
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn weight_grad_image_avx2<T: Element>(shape: &Shape, image: &[T], dy: &[T], partial: &mut [T], buf: &mut [T]) {
    weight_grad_image_body(shape, image, dy, partial, buf)
}

fn weight_grad_image<T: Element>(shape: &Shape, image: &[T], dy: &[T], partial: &mut [T], buf: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { weight_grad_image_avx2(shape, image, dy, partial, buf) };
    }
    weight_grad_image_body(shape, image, dy, partial, buf)
}

/// One image's weight and bias gradients into `partial` (`dW` `(K, C, 3, 3)` then `db` `(K,)`).
#[inline(always)]
fn weight_grad_image_body<T: Element>(shape: &Shape, image: &[T], dy: &[T], partial: &mut [T], buf: &mut [T]) {
    let (channels, out_channels, k_padded) = (shape.channels, shape.out_channels, shape.out_channels_padded());
    let (layout, acc_len, c8) = weight_grad_layout(shape);
    let tb_max = TILE_BLOCK.next_multiple_of(LANES);
    let (plane, out_plane) = (shape.height * shape.width, shape.out_h * shape.out_w);
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
        for c in 0..channels {
            transform_input_plane(
                &image[c * plane..][..plane],
                shape,
                block,
                rows_buf,
                phases,
                half,
                &mut v[c * tb..],
                channels * tb,
            );
        }
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
    // dW[k, c] = G^T Acc[k, c] G
    let g_mat = crate::kernels::winograd::G;
    for k in 0..out_channels {
        for c in 0..channels {
            let at = |p: usize| acc[(p * k_padded + k) * c8 + c];
            // G^T Acc: 3x6, then (G^T Acc) G: 3x3
            let mut ga = [T::zero(); 3 * ALPHA];
            for r in 0..3 {
                for s in 0..ALPHA {
                    let mut sum = T::zero();
                    for (i, g_row) in g_mat.iter().enumerate() {
                        sum += T::from_f64(g_row[r]) * at(i * ALPHA + s);
                    }
                    ga[r * ALPHA + s] = sum;
                }
            }
            for r in 0..3 {
                for q in 0..3 {
                    let mut sum = T::zero();
                    for s in 0..ALPHA {
                        sum += ga[r * ALPHA + s] * T::from_f64(g_mat[s][q]);
                    }
                    grad_weight[(k * channels + c) * 9 + r * 3 + q] = sum;
                }
            }
        }
    }
}

/// `DY'[p][k][t] = (A dY A^T)[p]` for the 4x4 tiles of `dy` (one output
/// channel, zeros past its edge) in `block`, at `out[p * point_stride + t]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn transform_grad_plane<T: Element>(
    dy: &[T],
    shape: &Shape,
    block: Block,
    row_buf: &mut [T],
    phases: &mut [T],
    half: &mut [T],
    out: &mut [T],
    point_stride: usize,
) {
    let tb = block.padded;
    let (y_first, x_first) = (block.ty * TILE, block.tx0 * TILE);
    #[cfg(target_arch = "x86_64")]
    if is_f32::<T>() && avx2_fma() {
        assert!(out.len() >= 35 * point_stride + tb);
        if y_first + TILE <= shape.out_h && x_first + TILE * tb <= shape.out_w {
            // the block's four rows lie inside dY: read them where they are
            let row = |r: usize| dy[(y_first + r) * shape.out_w + x_first..][..TILE * tb].as_ptr().cast::<f32>();
            // SAFETY: AVX2 is present; each row holds 4 tb elements of dY (checked just above),
            // `out` the 36 points (asserted); T is f32.
            unsafe { grad_transform_f32([row(0), row(1), row(2), row(3)], tb, out.as_mut_ptr().cast(), point_stride) };
            return;
        }
    }
    // phases g[r][s][t] = dY[y_first + r][x_first + 4t + s], at phases[(r * 4 + s) * tb + t]:
    // each row of the block's tiles copied (zeros past the edge and past the block), then split
    let valid = (block.count * TILE).min(shape.out_w - x_first);
    for r in 0..TILE {
        let y = y_first + r;
        let row = &mut row_buf[..TILE * tb];
        row.fill(T::zero());
        if y < shape.out_h {
            row[..valid].copy_from_slice(&dy[y * shape.out_w + x_first..][..valid]);
        }
        let row = &row_buf[..TILE * tb];
        #[cfg(target_arch = "x86_64")]
        if is_f32::<T>() && avx2_fma() {
            let mut target = |s: usize| phases[(r * TILE + s) * tb..][..tb].as_mut_ptr().cast::<f32>();
            let targets = [target(0), target(1), target(2), target(3)];
            // SAFETY: AVX2 is present; `row` holds 4 tb elements, each phase tb (inside
            // `phases`, distinct ranges); T is f32.
            unsafe { split_phases4_f32(row.as_ptr().cast::<f32>(), targets, tb) };
            continue;
        }
        for s in 0..TILE {
            let dst = &mut phases[(r * TILE + s) * tb..][..tb];
            for (t, value) in dst.iter_mut().enumerate() {
                *value = row[TILE * t + s];
            }
        }
    }
    // along y: half[j][s] = sum_r A[j][r] g[r][s], at half[(j * 4 + s) * tb]
    for s in 0..TILE {
        let at = |r: usize| &phases[(r * TILE + s) * tb..][..tb];
        let src = [at(0), at(1), at(2), at(3)];
        apply_a(src, six_mut(half, s * tb, TILE * tb, tb));
    }
    // along x: DY'[j*6 + i] = sum_s A[i][s] half[j][s]
    for j in 0..ALPHA {
        let at = |s: usize| &half[(j * TILE + s) * tb..][..tb];
        let src = [at(0), at(1), at(2), at(3)];
        apply_a(src, six_mut(out, j * ALPHA * point_stride, point_stride, tb));
    }
}

/// `dst[t * ld_dst + c] = src[c * cols + t]` for `c < rows`, `t < cols` (a
/// multiple of [`LANES`]), and zero in columns `rows..ld_dst` of `dst`.
#[inline(always)]
fn transpose_block<T: Element>(src: &[T], rows: usize, cols: usize, dst: &mut [T], ld_dst: usize) {
    assert!(src.len() >= rows * cols && dst.len() >= cols * ld_dst && ld_dst >= rows && cols.is_multiple_of(LANES));
    let mut done_rows = 0;
    #[cfg(target_arch = "x86_64")]
    if let (Some(src), Some(dst)) = (as_f32(src), as_f32_mut(dst)) {
        if avx2_fma() {
            for c0 in (0..rows - rows % 8).step_by(8) {
                for t0 in (0..cols).step_by(8) {
                    // SAFETY: AVX2 is present; rows c0..c0+8 (< rows) of src from column t0
                    // (< cols, a multiple of 8) and rows t0..t0+8 of dst from column c0
                    // (c0 + 8 <= rows <= ld_dst) are inside the slices (asserted above).
                    unsafe {
                        transpose8x8_f32(
                            src[c0 * cols + t0..].as_ptr(),
                            cols,
                            dst[t0 * ld_dst + c0..].as_mut_ptr(),
                            ld_dst,
                        )
                    };
                }
            }
            done_rows = rows - rows % 8;
        }
    }
    for t in 0..cols {
        let row = &mut dst[t * ld_dst..][..ld_dst];
        for (c, value) in row.iter_mut().enumerate().skip(done_rows) {
            *value = if c < rows { src[c * cols + t] } else { T::zero() };
        }
    }
}
