//! The transform bodies of the fast Winograd path ([`super::passes`]) along
//! tiles: `B^T`, `A^T` and `A` applied vector by vector to [`LANES`]-wide chunks
//! (what f64 and CPUs without AVX2 run; with AVX2 and f32, `x86`),
//! and the block transpose. The small helpers `simd_f32`, `f32_ptr` and
//! `f32_mut_ptr` are how generic code reaches the f32 AVX2 bodies.

use super::tiles::LANES;
#[cfg(target_arch = "x86_64")]
use super::x86::{apply_a_f32, apply_at_f32, transpose8x8_f32};
use crate::element::Element;
use crate::kernels::cpu;

/// Whether the f32 AVX2 bodies run for `T`: it is `f32` and the CPU has AVX2 and FMA.
#[inline(always)]
pub(crate) fn simd_f32<T: Element>() -> bool {
    T::as_f32(&[]).is_some() && cpu::avx2_fma()
}

/// The start of `values` as an f32 pointer, for the AVX2 bodies.
///
/// # Panics
/// If `T` is not f32 (callers check [`simd_f32`] first).
#[inline(always)]
pub(crate) fn f32_ptr<T: Element>(values: &[T]) -> *const f32 {
    T::as_f32(values).expect("the f32 bodies run on f32").as_ptr()
}

/// The start of `values` as a mutable f32 pointer, for the AVX2 bodies.
///
/// # Panics
/// If `T` is not f32 (callers check [`simd_f32`] first).
#[inline(always)]
pub(crate) fn f32_mut_ptr<T: Element>(values: &mut [T]) -> *mut f32 {
    T::as_f32_mut(values).expect("the f32 bodies run on f32").as_mut_ptr()
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
    // (with AVX2, f32 runs the fused `x86::input_transform_f32` instead)
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
    if !simd_f32::<T>() {
        return None;
    }
    let n = out[0].len();
    assert!(n.is_multiple_of(LANES) && input.iter().all(|v| v.len() >= n) && out.iter().all(|v| v.len() >= n));
    let src = input.map(|v| f32_ptr(v));
    let dst = out.each_mut().map(|v| f32_mut_ptr(v));
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

/// `dst[t * ld_dst + c] = src[c * cols + t]` for `c < rows`, `t < cols` (a
/// multiple of [`LANES`]), and zero in columns `rows..ld_dst` of `dst`.
#[inline(always)]
pub(crate) fn transpose_block<T: Element>(src: &[T], rows: usize, cols: usize, dst: &mut [T], ld_dst: usize) {
    assert!(src.len() >= rows * cols && dst.len() >= cols * ld_dst && ld_dst >= rows && cols.is_multiple_of(LANES));
    let mut done_rows = 0;
    #[cfg(target_arch = "x86_64")]
    if let (Some(src), Some(dst)) = (T::as_f32(src), T::as_f32_mut(dst)) {
        if cpu::avx2_fma() {
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
