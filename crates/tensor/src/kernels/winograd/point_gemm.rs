//! The point GEMM of the fast Winograd path ([`super::passes`]): the 36
//! independent products `M[p] = U[p] V[p]` (and `Acc[p] += DY'[p] V[p]^T` in
//! the weight gradient), one register-blocked kernel for all of them.

use super::tiles::{COL_BLOCK, LANES, ROW_BLOCK};
#[cfg(target_arch = "x86_64")]
use super::x86::{point_block_avx512_f32, point_block_f32};
use crate::element::Element;
use crate::kernels::cpu;

/// `C := A B (+ C if accumulate)` for the point GEMMs: `A` is `rows x depth`
/// (`A[r][p] = a[r * lda + p]`), `B` is `depth x n` (`B[p][j] = b[p * ldb + j]`),
/// `C` is `rows x n` (`C[r][j] = c[r * ldc + j]`). `rows` must be a multiple of
/// [`ROW_BLOCK`] and `n` of [`LANES`]. The sum for each `C[r][j]` runs over
/// `p = 0..depth` in order.
///
/// ```
/// use convnet_tensor::kernels::winograd::point_gemm::point_gemm;
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
    if let (Some(a), Some(b), Some(c)) = (T::as_f32(a), T::as_f32(b), T::as_f32_mut(c)) {
        if cpu::isa() == cpu::Isa::Avx512 {
            point_gemm_avx512(rows, n, depth, a, lda, b, ldb, c, ldc, accumulate);
            return;
        }
        if cpu::avx2_fma() {
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

/// [`point_gemm`] in AVX-512 blocks ([`point_block_avx512_f32`]): columns 32 at
/// a time (24, 16 or 8 at the end), rows 12 at a time (then 8 or 4). The CPU
/// must have AVX-512F and FMA, and the slices pass `point_gemm`'s asserts.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn point_gemm_avx512(
    rows: usize,
    n: usize,
    depth: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    let mut col = 0;
    while col < n {
        let width = (n - col).min(32);
        let mut row = 0;
        while row < rows {
            let height = (rows - row).min(12);
            let (a, c) = (a[row * lda..].as_ptr(), c[row * ldc + col..].as_mut_ptr());
            let b = b[col..].as_ptr();
            macro_rules! block {
                ($r:literal) => {
                    match width {
                        32 => point_block_avx512_f32::<$r, 2, 0>(depth, a, lda, b, ldb, c, ldc, accumulate),
                        24 => point_block_avx512_f32::<$r, 1, 1>(depth, a, lda, b, ldb, c, ldc, accumulate),
                        16 => point_block_avx512_f32::<$r, 1, 0>(depth, a, lda, b, ldb, c, ldc, accumulate),
                        _ => point_block_avx512_f32::<$r, 0, 1>(depth, a, lda, b, ldb, c, ldc, accumulate),
                    }
                };
            }
            // SAFETY: AVX-512F, AVX2 and FMA are present (the caller checked `isa`); rows and
            // `n` are multiples of 4 and 8, so `height` is 12, 8 or 4 and `width` 32, 24, 16 or 8;
            // point_gemm's asserts put rows `row..row + height` of A (depth long), rows
            // `0..depth` of B from column `col` (`width` wide) and those rows of C inside their
            // slices; C is a distinct `&mut`.
            unsafe {
                match height {
                    12 => block!(12),
                    8 => block!(8),
                    _ => block!(4),
                }
            }
            row += height;
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
