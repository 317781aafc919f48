//! General matrix multiply on row-major slices, the workhorse of convolution and
//! dense layers.
//!
//! The contract, in BLAS terms:
//!
//! `C := alpha * op(A) * op(B) + beta * C`
//!
//! - `C` is `m x n`, row-major, `ldc` elements between the starts of two rows.
//! - `op(A)` is `m x k`. With [`Trans::No`], `A` is stored as `m x k` with row
//!   stride `lda`; with [`Trans::Yes`], `A` is stored as `k x m` (row stride `lda`)
//!   and read transposed.
//! - `op(B)` is `k x n`, likewise stored `k x n` or, transposed, `n x k`.
//! - If `beta` is zero, `C` is overwritten without being read (so it may hold
//!   garbage, NaN included).
//!
//! Transposition costs nothing: `matrixmultiply` addresses every matrix by a row
//! stride and a column stride, and a transposed view just swaps them. Its packing
//! into cache-sized panels and its SIMD micro-kernels (picked at run time:
//! AVX2+FMA, AVX-512 where available) are where the speed comes from.
//!
//! ```
//! use convnet_tensor::kernels::gemm::{gemm, Trans};
//! // [1 2; 3 4] * [5 6; 7 8] = [19 22; 43 50]
//! let a = [1.0f64, 2.0, 3.0, 4.0];
//! let b = [5.0f64, 6.0, 7.0, 8.0];
//! let mut c = [0.0f64; 4];
//! gemm(Trans::No, Trans::No, 2, 2, 2, 1.0, &a, 2, &b, 2, 0.0, &mut c, 2);
//! assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
//! // A^T * B with A read transposed: [1 3; 2 4] * [5 6; 7 8] = [26 30; 38 44]
//! gemm(Trans::Yes, Trans::No, 2, 2, 2, 1.0, &a, 2, &b, 2, 0.0, &mut c, 2);
//! assert_eq!(c, [26.0, 30.0, 38.0, 44.0]);
//! ```

use crate::element::Element;

/// Whether a GEMM operand is read as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trans {
    /// Read the matrix as stored.
    No,
    /// Read the matrix transposed.
    Yes,
}

/// Smallest slice length that holds a `rows x cols` row-major matrix with row
/// stride `ld`.
fn needed_len(rows: usize, cols: usize, ld: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * ld + cols
    }
}

/// `C := alpha * op(A) * op(B) + beta * C` (see the module docs for the layout).
///
/// # Panics
/// If a slice is too short for its stated dimensions and row stride, or a row
/// stride is shorter than the row. These are programming errors in a kernel, never
/// a consequence of user input: every layer checks shapes before calling this.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Element>(
    trans_a: Trans,
    trans_b: Trans,
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    beta: T,
    c: &mut [T],
    ldc: usize,
) {
    // Stored shapes of A and B, and the (row, column) strides of op(A), op(B).
    let (a_rows, a_cols, rsa, csa) = match trans_a {
        Trans::No => (m, k, lda as isize, 1),
        Trans::Yes => (k, m, 1, lda as isize),
    };
    let (b_rows, b_cols, rsb, csb) = match trans_b {
        Trans::No => (k, n, ldb as isize, 1),
        Trans::Yes => (n, k, 1, ldb as isize),
    };
    assert!(lda >= a_cols || a_rows <= 1, "gemm: lda {lda} < row length {a_cols}");
    assert!(ldb >= b_cols || b_rows <= 1, "gemm: ldb {ldb} < row length {b_cols}");
    assert!(ldc >= n || m <= 1, "gemm: ldc {ldc} < row length {n}");
    assert!(a.len() >= needed_len(a_rows, a_cols, lda), "gemm: A too short");
    assert!(b.len() >= needed_len(b_rows, b_cols, ldb), "gemm: B too short");
    assert!(c.len() >= needed_len(m, n, ldc), "gemm: C too short");
    if m == 0 || n == 0 {
        return;
    }
    let ldc = ldc as isize;
    // SAFETY (both calls): the asserts above guarantee every addressed element
    // is in bounds, and `c` is a unique borrow, so it cannot alias `a` or `b`.
    if let Some(c) = T::as_f32_mut(c) {
        let (a, b) = same_type(T::as_f32(a), T::as_f32(b));
        let (alpha, beta) = (alpha.to_f64() as f32, beta.to_f64() as f32);
        unsafe { matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c.as_mut_ptr(), ldc, 1) }
    } else if let Some(c) = T::as_f64_mut(c) {
        let (a, b) = same_type(T::as_f64(a), T::as_f64(b));
        let (alpha, beta) = (alpha.to_f64(), beta.to_f64());
        unsafe { matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c.as_mut_ptr(), ldc, 1) }
    }
}

/// The pointers of two slices that [`Element::as_f32`] (or `as_f64`) viewed
/// as the output's type: they have it too, being of the same `T`.
fn same_type<U>(a: Option<&[U]>, b: Option<&[U]>) -> (*const U, *const U) {
    match (a, b) {
        (Some(a), Some(b)) => (a.as_ptr(), b.as_ptr()),
        _ => unreachable!("A, B and C share one element type"),
    }
}

/// The plain triple loop with the same contract as [`gemm`]: the twin that the
/// fast path is tested against.
#[allow(clippy::too_many_arguments)]
pub fn gemm_naive<T: Element>(
    trans_a: Trans,
    trans_b: Trans,
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: &[T],
    lda: usize,
    b: &[T],
    ldb: usize,
    beta: T,
    c: &mut [T],
    ldc: usize,
) {
    for i in 0..m {
        for j in 0..n {
            let mut sum = T::zero();
            for p in 0..k {
                let a_ip = match trans_a {
                    Trans::No => a[i * lda + p],
                    Trans::Yes => a[p * lda + i],
                };
                let b_pj = match trans_b {
                    Trans::No => b[p * ldb + j],
                    Trans::Yes => b[j * ldb + p],
                };
                sum += a_ip * b_pj;
            }
            let c_ij = &mut c[i * ldc + j];
            *c_ij = if beta == T::zero() { alpha * sum } else { alpha * sum + beta * *c_ij };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{assert_close, random};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn fast_gemm_matches_naive_for_all_transpositions_and_betas() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (17, 9, 33), (64, 70, 5), (2, 130, 3)] {
            for trans_a in [Trans::No, Trans::Yes] {
                for trans_b in [Trans::No, Trans::Yes] {
                    for beta in [0.0, 0.5] {
                        let (lda, ldb) = (
                            if trans_a == Trans::No { k } else { m } + 2,
                            if trans_b == Trans::No { n } else { k } + 1,
                        );
                        let a: Vec<f64> = random(&mut rng, m.max(k) * lda);
                        let b: Vec<f64> = random(&mut rng, n.max(k) * ldb);
                        let ldc = n + 3;
                        let c0: Vec<f64> = random(&mut rng, m * ldc);
                        let (mut fast, mut slow) = (c0.clone(), c0.clone());
                        gemm(trans_a, trans_b, m, n, k, 0.7, &a, lda, &b, ldb, beta, &mut fast, ldc);
                        gemm_naive(trans_a, trans_b, m, n, k, 0.7, &a, lda, &b, ldb, beta, &mut slow, ldc);
                        let case = format!("m={m} n={n} k={k} {trans_a:?} {trans_b:?} beta={beta}");
                        assert_close(&fast, &slow, k, 1e-13, &case);
                    }
                }
            }
        }
    }

    #[test]
    fn beta_zero_ignores_nan_in_c() {
        let a = [1.0f32, 2.0];
        let b = [3.0f32, 4.0];
        let mut c = [f32::NAN];
        gemm(Trans::No, Trans::No, 1, 1, 2, 1.0, &a, 2, &b, 1, 0.0, &mut c, 1);
        assert_eq!(c, [11.0]);
    }
}
