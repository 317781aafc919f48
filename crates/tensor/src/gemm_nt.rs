//! `C := A * B^T + beta * C` for two operands that are both contiguous along
//! `k`: the weight gradient of a convolution.
//!
//! ## The contract
//!
//! - `A` is `m x k`, row-major, `lda` elements between the starts of two rows;
//! - `B` is `n x k`, row-major, `ldb` elements between the starts of two rows
//!   (so `B^T` is `k x n`);
//! - `C` is `m x n`, row-major, row stride `ldc`;
//! - `C[i][j] := sum_p A[i][p] * B[j][p] + beta * C[i][j]`. If `beta` is zero, `C`
//!   is overwritten without being read.
//!
//! Every entry of `C` is a dot product of a row of `A` with a row of `B`.
//!
//! ## Why not the general GEMM
//!
//! In the backward pass of a convolution `dW (OC, C*KH*KW) += dY (OC, P) * col^T`,
//! where `col` is `(C*KH*KW, P)` and `P` (output pixels of a tile, ~900) is the
//! long dimension. Both `dY` and `col` are contiguous along `P`, the *reduction*
//! dimension. A packed GEMM ([`crate::gemm::gemm`], `matrixmultiply`) wants `B`
//! contiguous along `n` and so gathers `col` one element at a time into its
//! panels: it runs at ~78 GFLOP/s on this shape where a well-laid-out operand
//! reaches 98.
//!
//! Here no packing is needed. The micro-kernel keeps an `MR x NR` block of
//! accumulators, each a vector of `L` lanes, and walks `MR` rows of `A` and `NR`
//! rows of `B` together, `L` elements at a time:
//!
//! ```text
//! acc[i][j][l] += A[i][p + l] * B[j][p + l]     for l in 0..L, p = 0, L, 2L, ...
//! ```
//!
//! Every loaded vector of `A` is used `NR` times and every vector of `B` `MR`
//! times, from L1, so the loop is bound by the multiply-adds, not by memory.
//! At the end the `L` lanes of each accumulator are summed as a tree (halves,
//! then quarters, ...: a fixed order) and the `k % L` leftover elements are
//! added one by one.
//!
//! The kernel body is written once (`kernel!`) and instantiated with the
//! intrinsics of each instruction set and element type; the CPU's best is picked
//! at run time:
//!
//! | instruction set | registers | `MR x NR` | lanes (`f32` / `f64`) |
//! |---|---|---|---|
//! | AVX-512F + FMA | 32 x 512 bit | 4 x 6 | 16 / 8 |
//! | AVX2 + FMA | 16 x 256 bit | 3 x 4 | 8 / 4 |
//! | anything else | | | the general [`crate::gemm::gemm`] |
//!
//! (`4 x 6` accumulators + 4 loaded vectors of `A` + 1 of `B` = 29 of the 32
//! AVX-512 registers; other shapes measured slower: 4 x 5 and 3 x 8 101 GFLOP/s,
//! 6 x 4 92, 2 x 12 82, against 102.) Each element of `C` is summed in the same
//! order whatever `m`, `n` and the thread count; results may differ in the last
//! bits between CPUs with different kernels.
//!
//! ```
//! use convnet_tensor::gemm_nt::gemm_nt;
//! // A = [1 2 3; 4 5 6], B = [1 0 1; 0 1 0]: C = A B^T = [4 2; 10 5]
//! let a = [1.0f32, 2., 3., 4., 5., 6.];
//! let b = [1.0f32, 0., 1., 0., 1., 0.];
//! let mut c = [1.0f32; 4];
//! gemm_nt(2, 2, 3, &a, 3, &b, 3, 0.0, &mut c, 2);
//! assert_eq!(c, [4.0, 2.0, 10.0, 5.0]);
//! // beta = 1 accumulates: C += A B^T
//! gemm_nt(2, 2, 3, &a, 3, &b, 3, 1.0, &mut c, 2);
//! assert_eq!(c, [8.0, 4.0, 20.0, 10.0]);
//! ```

use crate::gemm::{gemm, Trans};
use crate::Element;

/// `C := A * B^T + beta * C` (see the module docs for the layout).
///
/// # Panics
/// If a slice is too short for its dimensions and row stride, or a row stride is
/// shorter than its row: programming errors in a kernel, never user input.
#[allow(clippy::too_many_arguments)]
pub fn gemm_nt<T: Element>(
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    beta: T,
    c: &mut [T],
    ldc: usize,
) {
    assert!(lda >= k || m <= 1, "gemm_nt: lda {lda} < k {k}");
    assert!(ldb >= k || n <= 1, "gemm_nt: ldb {ldb} < k {k}");
    assert!(ldc >= n || m <= 1, "gemm_nt: ldc {ldc} < n {n}");
    assert!(m == 0 || k == 0 || a.len() >= (m - 1) * lda + k, "gemm_nt: A too short");
    assert!(n == 0 || k == 0 || b.len() >= (n - 1) * ldb + k, "gemm_nt: B too short");
    assert!(m == 0 || n == 0 || c.len() >= (m - 1) * ldc + n, "gemm_nt: C too short");
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts above keep every addressed element in bounds, and `c`
    // is a unique borrow, so it cannot alias `a` or `b`.
    let done = unsafe { T::gemm_nt_raw(m, n, k, a.as_ptr(), lda, b.as_ptr(), ldb, beta, c.as_mut_ptr(), ldc) };
    if !done {
        // no SIMD kernel for this CPU: the general packed GEMM
        gemm(Trans::No, Trans::Yes, m, n, k, T::one(), a, lda, b, ldb, beta, c, ldc);
    }
}

/// The plain twin of [`gemm_nt`]: one dot product at a time (the general naive
/// GEMM with `B` read transposed).
#[allow(clippy::too_many_arguments)]
pub fn gemm_nt_naive<T: Element>(
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    beta: T,
    c: &mut [T],
    ldc: usize,
) {
    crate::gemm::gemm_naive(Trans::No, Trans::Yes, m, n, k, T::one(), a, lda, b, ldb, beta, c, ldc);
}

/// The SIMD kernels, one per (instruction set, element type), all generated
/// from the one body in `kernel!`. Each returns through the same pointers; the
/// `dispatch_*` functions pick one at run time and return `false` if the CPU has
/// neither AVX-512F nor AVX2 with FMA.
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    macro_rules! kernel {
        ($name:ident, $features:literal, $t:ty, $vec:ty, $lanes:expr, $mr:expr, $nr:expr,
         $zero:ident, $load:ident, $fma:ident, $sum_lanes:ident) => {
            /// `C := A B^T + beta C` with raw pointers (contract of `gemm_nt`).
            ///
            /// # Safety
            /// The CPU has the features; every addressed element is in bounds;
            /// `c` aliases neither `a` nor `b`.
            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            pub(crate) unsafe fn $name(
                m: usize,
                n: usize,
                k: usize,
                a: *const $t,
                lda: usize,
                b: *const $t,
                ldb: usize,
                beta: $t,
                c: *mut $t,
                ldc: usize,
            ) {
                // Blocks of NR rows of B outside, MR rows of A inside, so the NR
                // rows of B stay in L1 while all of A streams past them (conv2's
                // weight gradient: B is the 1 MB column tile, read from L2 once;
                // A the 225 KB dY tile).
                let mut j = 0;
                while j < n {
                    let mut i = 0;
                    if j + $nr <= n {
                        while i + $mr <= m {
                            block::<$mr, $nr>(i, j, k, a, lda, b, ldb, beta, c, ldc);
                            i += $mr;
                        }
                        for i in i..m {
                            block::<1, $nr>(i, j, k, a, lda, b, ldb, beta, c, ldc);
                        }
                        j += $nr;
                    } else {
                        // the last n % NR rows of B, one at a time
                        while i + $mr <= m {
                            block::<$mr, 1>(i, j, k, a, lda, b, ldb, beta, c, ldc);
                            i += $mr;
                        }
                        for i in i..m {
                            block::<1, 1>(i, j, k, a, lda, b, ldb, beta, c, ldc);
                        }
                        j += 1;
                    }
                }

                /// The micro-kernel: `C[i0..i0+MR][j0..j0+NR]`.
                #[inline]
                #[target_feature(enable = $features)]
                #[allow(clippy::too_many_arguments)]
                unsafe fn block<const MR: usize, const NR: usize>(
                    i0: usize,
                    j0: usize,
                    k: usize,
                    a: *const $t,
                    lda: usize,
                    b: *const $t,
                    ldb: usize,
                    beta: $t,
                    c: *mut $t,
                    ldc: usize,
                ) {
                    let mut a_rows = [a; MR];
                    for (i, row) in a_rows.iter_mut().enumerate() {
                        *row = a.add((i0 + i) * lda);
                    }
                    let mut b_rows = [b; NR];
                    for (j, row) in b_rows.iter_mut().enumerate() {
                        *row = b.add((j0 + j) * ldb);
                    }
                    // acc[i][j]: one register of LANES partial sums of C[i0+i][j0+j]
                    let mut acc = [[$zero(); NR]; MR];
                    let full = k / $lanes * $lanes;
                    let mut p = 0;
                    while p < full {
                        let mut a_vecs = [$zero(); MR];
                        for i in 0..MR {
                            a_vecs[i] = $load(a_rows[i].add(p));
                        }
                        for j in 0..NR {
                            // each vector of B meets MR vectors of A, each of A
                            // NR of B: MR*NR multiply-adds per MR+NR loads
                            let b_vec = $load(b_rows[j].add(p));
                            for i in 0..MR {
                                acc[i][j] = $fma(a_vecs[i], b_vec, acc[i][j]);
                            }
                        }
                        p += $lanes;
                    }
                    for i in 0..MR {
                        for j in 0..NR {
                            // the lanes as a tree (halves added, then halves of
                            // those...: fixed order), then the k % LANES leftovers
                            let mut sum = $sum_lanes(acc[i][j]);
                            for q in full..k {
                                sum += *a_rows[i].add(q) * *b_rows[j].add(q);
                            }
                            let c_ij = c.add((i0 + i) * ldc + j0 + j);
                            *c_ij = if beta == 0.0 { sum } else { sum + beta * *c_ij };
                        }
                    }
                }
            }
        };
    }

    // 4 x 6 accumulators + 4 vectors of A + 1 of B = 29 of the 32 zmm registers
    kernel!(
        avx512_f32,
        "avx512f,fma",
        f32,
        __m512,
        16,
        4,
        6,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_fmadd_ps,
        _mm512_reduce_add_ps
    );
    kernel!(
        avx512_f64,
        "avx512f,fma",
        f64,
        __m512d,
        8,
        4,
        6,
        _mm512_setzero_pd,
        _mm512_loadu_pd,
        _mm512_fmadd_pd,
        _mm512_reduce_add_pd
    );
    // 3 x 4 accumulators + 3 + 1 = 16 ymm registers
    kernel!(
        avx2_f32,
        "avx2,fma",
        f32,
        __m256,
        8,
        3,
        4,
        _mm256_setzero_ps,
        _mm256_loadu_ps,
        _mm256_fmadd_ps,
        sum_lanes_avx2_f32
    );
    kernel!(
        avx2_f64,
        "avx2,fma",
        f64,
        __m256d,
        4,
        3,
        4,
        _mm256_setzero_pd,
        _mm256_loadu_pd,
        _mm256_fmadd_pd,
        sum_lanes_avx2_f64
    );

    /// The 8 lanes summed as a tree: (0+4, 1+5, 2+6, 3+7), then pairs, then the last two.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sum_lanes_avx2_f32(v: __m256) -> f32 {
        let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)))
    }

    /// The 4 lanes summed as a tree: (0+2, 1+3), then the two.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sum_lanes_avx2_f64(v: __m256d) -> f64 {
        let pair = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd::<1>(v));
        _mm_cvtsd_f64(_mm_add_sd(pair, _mm_unpackhi_pd(pair, pair)))
    }

    /// Which kernel this CPU runs.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Isa {
        Avx512,
        Avx2,
        None,
    }

    pub(crate) fn isa() -> Isa {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
            Isa::Avx512
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            Isa::Avx2
        } else {
            Isa::None
        }
    }

    macro_rules! dispatch {
        ($name:ident, $t:ty, $avx512:ident, $avx2:ident) => {
            /// Runs the best kernel for this CPU; `false` if there is none.
            ///
            /// # Safety
            /// As for the kernels, minus the CPU features (checked here).
            #[allow(clippy::too_many_arguments)]
            pub(crate) unsafe fn $name(
                m: usize,
                n: usize,
                k: usize,
                a: *const $t,
                lda: usize,
                b: *const $t,
                ldb: usize,
                beta: $t,
                c: *mut $t,
                ldc: usize,
            ) -> bool {
                match isa() {
                    Isa::Avx512 => $avx512(m, n, k, a, lda, b, ldb, beta, c, ldc),
                    Isa::Avx2 => $avx2(m, n, k, a, lda, b, ldb, beta, c, ldc),
                    Isa::None => return false,
                }
                true
            }
        };
    }
    dispatch!(dispatch_f32, f32, avx512_f32, avx2_f32);
    dispatch!(dispatch_f64, f64, avx512_f64, avx2_f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn check<T: Element>(tolerance: f64) {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        // shapes that hit every edge: k below/above a vector, m and n with and
        // without remainders for every block size, and the conv shapes
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 1, 17),
            (3, 5, 7),
            (4, 6, 16),
            (5, 7, 33),
            (9, 13, 100),
            (32, 27, 880),
            (64, 288, 95),
            (2, 1, 0),
        ] {
            for beta in [0.0, 1.0, 0.5] {
                let (lda, ldb, ldc) = (k + 3, k + 1, n + 2);
                let a: Vec<T> = (0..m * lda).map(|_| T::from_f64(rng.random_range(-1.0..1.0))).collect();
                let b: Vec<T> = (0..n * ldb).map(|_| T::from_f64(rng.random_range(-1.0..1.0))).collect();
                let c0: Vec<T> = (0..m * ldc).map(|_| T::from_f64(rng.random_range(-1.0..1.0))).collect();
                let (mut fast, mut slow) = (c0.clone(), c0.clone());
                gemm_nt(m, n, k, &a, lda, &b, ldb, T::from_f64(beta), &mut fast, ldc);
                gemm_nt_naive(m, n, k, &a, lda, &b, ldb, T::from_f64(beta), &mut slow, ldc);
                for (index, (x, y)) in fast.iter().zip(&slow).enumerate() {
                    let scale = 1.0 + (k as f64).sqrt();
                    assert!(
                        (Element::to_f64(*x) - Element::to_f64(*y)).abs() <= tolerance * scale,
                        "{} m={m} n={n} k={k} beta={beta} index {index}: {x} vs {y}",
                        T::NAME
                    );
                }
            }
        }
    }

    #[test]
    fn matches_naive_f64() {
        check::<f64>(1e-13);
    }

    #[test]
    fn matches_naive_f32() {
        check::<f32>(1e-5);
    }

    #[test]
    fn every_instruction_set_variant_matches_naive() {
        // integer-valued inputs: every summation order gives the exact result, so
        // each kernel this CPU can run must agree bit for bit
        let (m, n, k) = (7, 9, 45);
        let a: Vec<f64> = (0..m * k).map(|v| ((v * 7) % 11) as f64 - 5.0).collect();
        let b: Vec<f64> = (0..n * k).map(|v| ((v * 5) % 13) as f64 - 6.0).collect();
        let mut expected = vec![0.0; m * n];
        gemm_nt_naive(m, n, k, &a, k, &b, k, 0.0, &mut expected, n);
        // the fallback for CPUs without a SIMD kernel
        let mut general = vec![f64::NAN; m * n];
        gemm(Trans::No, Trans::Yes, m, n, k, 1.0, &a, k, &b, k, 0.0, &mut general, n);
        assert_eq!(general, expected);
        #[cfg(target_arch = "x86_64")]
        {
            let a32: Vec<f32> = a.iter().map(|&v| v as f32).collect();
            let b32: Vec<f32> = b.iter().map(|&v| v as f32).collect();
            let expected32: Vec<f32> = expected.iter().map(|&v| v as f32).collect();
            let isa = x86::isa();
            let mut ran = 0;
            if isa == x86::Isa::Avx512 {
                let mut out = vec![f64::NAN; m * n];
                let mut out32 = vec![f32::NAN; m * n];
                unsafe {
                    x86::avx512_f64(m, n, k, a.as_ptr(), k, b.as_ptr(), k, 0.0, out.as_mut_ptr(), n);
                    x86::avx512_f32(m, n, k, a32.as_ptr(), k, b32.as_ptr(), k, 0.0, out32.as_mut_ptr(), n);
                }
                assert_eq!(out, expected);
                assert_eq!(out32, expected32);
                ran += 1;
            }
            if isa != x86::Isa::None {
                let mut out = vec![f64::NAN; m * n];
                let mut out32 = vec![f32::NAN; m * n];
                unsafe {
                    x86::avx2_f64(m, n, k, a.as_ptr(), k, b.as_ptr(), k, 0.0, out.as_mut_ptr(), n);
                    x86::avx2_f32(m, n, k, a32.as_ptr(), k, b32.as_ptr(), k, 0.0, out32.as_mut_ptr(), n);
                }
                assert_eq!(out, expected);
                assert_eq!(out32, expected32);
                ran += 1;
            }
            eprintln!("SIMD variants tested on this CPU: {ran} ({isa:?})");
        }
    }
}
