//! The pieces of the fast Winograd path ([`crate::kernels::conv_winograd`],
//! read it first): the block geometry, the f32 casts and the SIMD switch, the
//! plain transform bodies along tiles (what f64 and CPUs without AVX2 run), and
//! the point GEMM.

use crate::element::Element;
use crate::kernels::winograd::{ALPHA, TILE};
#[cfg(target_arch = "x86_64")]
use crate::kernels::x86_winograd::{apply_a_f32, apply_at_f32, point_block_f32, transpose8x8_f32};
use std::any::TypeId;

/// Whether `T` is `f32` (decided at compile time for each instantiation).
pub(crate) fn is_f32<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<f32>()
}

/// `values` as `&[f32]` when `T` is `f32` (the SIMD bodies are written for it).
pub(crate) fn as_f32<T: 'static>(values: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 (same type id), so the cast changes nothing.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<f32>(), values.len()) })
}

/// `values` as `&mut [f32]` when `T` is `f32`.
pub(crate) fn as_f32_mut<T: 'static>(values: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: T is f32 (same type id), so the cast changes nothing; the borrow is moved.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<f32>(), values.len()) })
}

/// Points of the transformed tile, `ALPHA * ALPHA`: the 36 independent GEMMs.
pub const POINTS: usize = ALPHA * ALPHA;

/// Output channels are zero-padded to a multiple of this for [`point_gemm`]
/// (the plain body takes blocks of 4 rows, the AVX2 body of 6 and then 4).
pub const ROW_BLOCK: usize = 4;

/// Tile counts and the weight gradient's channel count are padded to a multiple
/// of this (one AVX2 vector of f32), so the kernels always run full width.
pub const LANES: usize = 8;

/// Widest column block of the plain [`point_gemm`] body (the AVX2 body takes 16).
pub const COL_BLOCK: usize = 24;

/// Tiles per block: one chunk of a tile row. 24 keeps conv2's `V` and `M`
/// (110 KB + 221 KB) in a 512 KB L2 between the stages; other sizes have not
/// been measured.
pub const TILE_BLOCK: usize = 24;

/// The shape of one Winograd correlation: `channels` input planes of
/// `height x width`, read with `pad_top`/`pad_left` zeros before them,
/// `out_channels` output planes of `out_h x out_w`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) channels: usize,
    pub(crate) height: usize,
    pub(crate) width: usize,
    pub(crate) pad_top: usize,
    pub(crate) pad_left: usize,
    pub(crate) out_channels: usize,
    pub(crate) out_h: usize,
    pub(crate) out_w: usize,
}

impl Shape {
    pub(crate) fn tiles(&self) -> (usize, usize) {
        (self.out_h.div_ceil(TILE), self.out_w.div_ceil(TILE))
    }
    /// Output channels rounded up to the GEMM's row block.
    pub(crate) fn out_channels_padded(&self) -> usize {
        self.out_channels.next_multiple_of(ROW_BLOCK)
    }
}

/// Where one block of tiles sits: tile row `ty`, tiles `tx0..tx0 + count`,
/// padded to `padded` (a multiple of [`LANES`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Block {
    pub(crate) ty: usize,
    pub(crate) tx0: usize,
    pub(crate) count: usize,
    pub(crate) padded: usize,
}

pub(crate) fn blocks(shape: &Shape) -> impl Iterator<Item = Block> {
    let (tiles_y, tiles_x) = shape.tiles();
    (0..tiles_y).flat_map(move |ty| {
        (0..tiles_x).step_by(TILE_BLOCK).map(move |tx0| {
            let count = (tiles_x - tx0).min(TILE_BLOCK);
            Block { ty, tx0, count, padded: count.next_multiple_of(LANES) }
        })
    })
}

/// Scratch layout of one block (offsets into a thread's buffer).
pub(crate) struct Layout {
    /// `M` `(36, K4, tb)`, or `DY'` `(36, K4, tb)` for the weight gradient.
    pub(crate) products: usize,
    /// Six padded input rows `(6, 4 tb + 2)`.
    pub(crate) rows: usize,
    /// Phases `(36, tb)` and a second `(36, tb)` for the half-transformed.
    pub(crate) phases: usize,
    pub(crate) half: usize,
    pub(crate) len: usize,
}

impl Layout {
    pub(crate) fn new(data_len: usize, products_len: usize) -> Layout {
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

#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn avx2_fma() -> bool {
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

/// Six disjoint mutable vectors `buf[base + i * stride..][..n]`, `i = 0..6`.
#[inline(always)]
pub(crate) fn six_mut<T>(buf: &mut [T], base: usize, stride: usize, n: usize) -> [&mut [T]; 6] {
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
pub(crate) fn six<T>(buf: &[T], base: usize, stride: usize, n: usize) -> [&[T]; 6] {
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
pub(crate) fn apply_bt<T: Element>(input: [&[T]; 6], out: [&mut [T]; 6]) {
    // (with AVX2, f32 runs the fused `x86_winograd::input_transform_f32` instead)
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

/// The vectors of a transform as raw f32 pointers, when `T` is f32 and the
/// AVX2 bodies may run: `(inputs, outputs, n)`, `n` the length of the first
/// output, a multiple of [`LANES`] that every vector holds (asserted).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::type_complexity)]
fn f32_vectors<T: Element, const I: usize, const O: usize>(
    input: &[&[T]; I],
    out: &mut [&mut [T]; O],
) -> Option<([*const f32; I], [*mut f32; O], usize)> {
    if !(is_f32::<T>() && avx2_fma()) {
        return None;
    }
    let n = out[0].len();
    assert!(n.is_multiple_of(LANES) && input.iter().all(|v| v.len() >= n) && out.iter().all(|v| v.len() >= n));
    // T is f32 (same type id): the casts change nothing
    let src = input.map(|v| v.as_ptr().cast::<f32>());
    let dst = out.each_mut().map(|v| v.as_mut_ptr().cast::<f32>());
    Some((src, dst, n))
}

/// `out = A^T m` along one axis (`m`: 6 vectors, `out`: 4):
///
/// ```text
/// out0 = m0 + (m1 + m2) + (m3 + m4)     out2 = (m1 + m2) + 4 (m3 + m4)
/// out1 = (m1 - m2) + 2 (m3 - m4)        out3 = (m1 - m2) + 8 (m3 - m4) + m5
/// ```
#[inline(always)]
pub(crate) fn apply_at<T: Element>(input: [&[T]; 6], mut out: [&mut [T]; 4]) {
    #[cfg(target_arch = "x86_64")]
    if let Some((src, dst, n)) = f32_vectors(&input, &mut out) {
        // SAFETY: the CPU has AVX2 and FMA, and each pointer addresses `n` f32 of its own
        // vector, the outputs distinct (`f32_vectors`).
        return unsafe { apply_at_f32(src, dst, n) };
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
pub(crate) fn apply_a<T: Element>(input: [&[T]; 4], mut out: [&mut [T]; 6]) {
    #[cfg(target_arch = "x86_64")]
    if let Some((src, dst, n)) = f32_vectors(&input, &mut out) {
        // SAFETY: the CPU has AVX2 and FMA, and each pointer addresses `n` f32 of its own
        // vector, the outputs distinct (`f32_vectors`).
        return unsafe { apply_a_f32(src, dst, n) };
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

/// `dst[t * ld_dst + c] = src[c * cols + t]` for `c < rows`, `t < cols` (a
/// multiple of [`LANES`]), and zero in columns `rows..ld_dst` of `dst`.
#[inline(always)]
pub(crate) fn transpose_block<T: Element>(src: &[T], rows: usize, cols: usize, dst: &mut [T], ld_dst: usize) {
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
