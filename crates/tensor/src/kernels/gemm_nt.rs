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
//! dimension. A packed GEMM ([`crate::kernels::gemm::gemm`], `matrixmultiply`) wants `B`
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
//! | anything else | | | the general [`crate::kernels::gemm::gemm`] |
//!
//! (`4 x 6` accumulators + 4 loaded vectors of `A` + 1 of `B` = 29 of the 32
//! AVX-512 registers; other shapes measured slower: 4 x 5 and 3 x 8 101 GFLOP/s,
//! 6 x 4 92, 2 x 12 82, against 102.) Each element of `C` is summed in the same
//! order whatever `m`, `n` and the thread count; results may differ in the last
//! bits between CPUs with different kernels.
//!
//! ```
//! use convnet_tensor::kernels::gemm_nt::gemm_nt;
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

use crate::element::Element;
use crate::kernels::cpu;
use crate::kernels::gemm::{gemm, Trans};

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
    if !simd_gemm_nt(m, n, k, a, lda, b, ldb, beta, c, ldc) {
        // no SIMD kernel for this CPU: the general packed GEMM
        gemm(Trans::No, Trans::Yes, m, n, k, T::one(), a, lda, b, ldb, beta, c, ldc);
    }
}

/// [`gemm_nt`] on this CPU's SIMD body ([`cpu::isa`]); `false`, touching
/// nothing, if it has none. The slices are bounds-checked by the caller.
#[allow(clippy::too_many_arguments)]
fn simd_gemm_nt<T: Element>(
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
) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::kernels::x86_gemm_nt::{avx2_f32, avx2_f64, avx512_f32, avx512_f64};
        let isa = cpu::isa();
        // SAFETY (every call): the CPU has the body's features (`isa`), the
        // caller's asserts keep every addressed element in bounds, and `c` is a
        // unique borrow, so it cannot alias `a` or `b`.
        if let (Some(c), Some(a), Some(b)) = (T::as_f32_mut(c), T::as_f32(a), T::as_f32(b)) {
            let (a, b, c, beta) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), beta.to_f64() as f32);
            match isa {
                cpu::Isa::Avx512 => unsafe { avx512_f32(m, n, k, a, lda, b, ldb, beta, c, ldc) },
                cpu::Isa::Avx2 => unsafe { avx2_f32(m, n, k, a, lda, b, ldb, beta, c, ldc) },
                cpu::Isa::Portable => return false,
            }
            return true;
        }
        if let (Some(c), Some(a), Some(b)) = (T::as_f64_mut(c), T::as_f64(a), T::as_f64(b)) {
            let (a, b, c, beta) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), beta.to_f64());
            match isa {
                cpu::Isa::Avx512 => unsafe { avx512_f64(m, n, k, a, lda, b, ldb, beta, c, ldc) },
                cpu::Isa::Avx2 => unsafe { avx2_f64(m, n, k, a, lda, b, ldb, beta, c, ldc) },
                cpu::Isa::Portable => return false,
            }
            return true;
        }
    }
    let _ = (m, n, k, a, lda, b, ldb, beta, c, ldc);
    false
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
    crate::kernels::gemm::gemm_naive(Trans::No, Trans::Yes, m, n, k, T::one(), a, lda, b, ldb, beta, c, ldc);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{assert_close, random};
    #[cfg(target_arch = "x86_64")]
    use crate::kernels::x86_gemm_nt;
    use rand::SeedableRng;
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
                let (a, b, c0): (Vec<T>, Vec<T>, Vec<T>) =
                    (random(&mut rng, m * lda), random(&mut rng, n * ldb), random(&mut rng, m * ldc));
                let (mut fast, mut slow) = (c0.clone(), c0.clone());
                gemm_nt(m, n, k, &a, lda, &b, ldb, T::from_f64(beta), &mut fast, ldc);
                gemm_nt_naive(m, n, k, &a, lda, &b, ldb, T::from_f64(beta), &mut slow, ldc);
                assert_close(&fast, &slow, k, tolerance, &format!("m={m} n={n} k={k} beta={beta}"));
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
            let isa = crate::kernels::cpu::isa();
            let mut ran = 0;
            if isa == crate::kernels::cpu::Isa::Avx512 {
                let mut out = vec![f64::NAN; m * n];
                let mut out32 = vec![f32::NAN; m * n];
                // SAFETY: the CPU has AVX-512F (checked by isa()); a is m x k and b is
                // n x k with row strides k, out is m x n with row stride n: every
                // addressed element is in bounds, and out aliases neither input.
                unsafe {
                    x86_gemm_nt::avx512_f64(m, n, k, a.as_ptr(), k, b.as_ptr(), k, 0.0, out.as_mut_ptr(), n);
                    x86_gemm_nt::avx512_f32(m, n, k, a32.as_ptr(), k, b32.as_ptr(), k, 0.0, out32.as_mut_ptr(), n);
                }
                assert_eq!(out, expected);
                assert_eq!(out32, expected32);
                ran += 1;
            }
            if isa != crate::kernels::cpu::Isa::Portable {
                let mut out = vec![f64::NAN; m * n];
                let mut out32 = vec![f32::NAN; m * n];
                // SAFETY: the CPU has AVX2 and FMA (isa() is not Portable); shapes and
                // strides as above, in bounds, no aliasing.
                unsafe {
                    x86_gemm_nt::avx2_f64(m, n, k, a.as_ptr(), k, b.as_ptr(), k, 0.0, out.as_mut_ptr(), n);
                    x86_gemm_nt::avx2_f32(m, n, k, a32.as_ptr(), k, b32.as_ptr(), k, 0.0, out32.as_mut_ptr(), n);
                }
                assert_eq!(out, expected);
                assert_eq!(out32, expected32);
                ran += 1;
            }
            eprintln!("SIMD variants tested on this CPU: {ran} ({isa:?})");
        }
    }
}
