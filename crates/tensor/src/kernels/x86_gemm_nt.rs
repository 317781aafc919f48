//! The SIMD kernels, one per (instruction set, element type), all generated
//! from the one body in `kernel!`. Each returns through the same pointers; the
//! `dispatch_*` functions pick one at run time and return `false` if the CPU has
//! neither AVX-512F nor AVX2 with FMA.
//!
//! A leaf module: raw pointers and one element type per function, no
//! generic [`crate::element::Element`], so the element trait can dispatch to
//! these kernels without an import circle.

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
            // SAFETY: the caller guarantees this function's contract (CPU features, bounds, no aliasing), which is exactly what the block calls and the raw loads and stores below need.
            unsafe {
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
                    // SAFETY: i0 + MR <= m and j0 + NR <= n (the caller's loop bounds), so every row pointer and every
                    // load of k elements, and the store to C, stay inside the allocations of the contract.
                    unsafe {
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
