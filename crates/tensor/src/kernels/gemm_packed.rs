//! `C := A * B + beta * C` with a small `A` packed once and reused: the
//! convolution GEMMs `Y = W * col` (forward) and `dcol = W^T * dY` (backward).
//!
//! ## The contract
//!
//! - `A` is `m x k`, given once to [`PackedA::pack`] (read as stored or
//!   transposed, like [`crate::kernels::gemm::gemm`]);
//! - `B` is `k x n`, row-major, `ldb` elements between the starts of two rows;
//! - `C` is `m x n`, row-major, row stride `ldc`;
//! - `C[i][j] := sum_p A[i][p] * B[p][j] + beta * C[i][j]`; if `beta` is zero,
//!   `C` is overwritten without being read.
//!
//! ## Why
//!
//! A convolution multiplies the same small weight matrix (`64 x 288` for conv2)
//! by every column tile of every image: ~1,700 times per training step. A
//! general GEMM packs `A` again on every call. Here it is packed once per pass,
//! into panels of [`MR`] rows stored column by column, so that the micro-kernel
//! reads it strictly in order:
//!
//! ```text
//! panel q, depth p:  A[8q][p] A[8q+1][p] ... A[8q+7][p]     (zero rows past m)
//! ```
//!
//! ## The micro-kernel (AVX-512F, run-time detected)
//!
//! It holds an `8 x 48` block of `C` (f32; `8 x 24` for f64) in 24 of the 32
//! vector registers and walks the depth:
//!
//! ```text
//! for p in 0..k:
//!     b0, b1, b2 = B[p][j..j+16], B[p][j+16..j+32], B[p][j+32..j+48]   (3 loads)
//!     for r in 0..8:
//!         a = broadcast(A[8q + r][p])                                   (1 load)
//!         acc[r][0..3] += a * (b0, b1, b2)                              (3 FMAs)
//! ```
//!
//! 24 multiply-adds per 11 loads, all from L1 or L2, so the loop is bound by
//! the FMA units. As in GotoBLAS, `B` is packed too: a block of about 1 MB
//! (`depth block x ~1000 columns`) is copied into column blocks of `depth x 48`,
//! each contiguous and 64-byte aligned, and then every panel of `A` (held in
//! L1) walks all of them (streamed from L2). Read where it lies, each of the
//! `k` rows of a 48-column slice sits in other cache lines and pages, split
//! across lines when the row stride is not a multiple of 16: the same GEMMs
//! ran at 78-110 GFLOP/s on one core of the round-3 Xeon instead of 118-127
//! (`cargo run --release --example gemm_speed -- 512 392 4608`, the shape of
//! ResNet-18's 7x7 layers: 89 -> 126). A block narrower than 48 columns (the
//! end of a row) is packed with zeros past its end and stored with masks, so
//! any `n` runs at full width. The order of additions for
//! `C[i][j]` is always `p = 0, 1, ..., k-1`, whatever the block, so results do
//! not depend on the thread count or on where the tile boundaries fall.
//!
//! Without AVX-512 the general [`crate::kernels::gemm::gemm`] (`matrixmultiply`, with its
//! own AVX2 kernels) runs instead, on an unpacked copy of `A` that the packing
//! makes in place of the panels.
//!
//! ```
//! use convnet_tensor::kernels::gemm::Trans;
//! use convnet_tensor::kernels::gemm_packed::{gemm_packed, PackedA};
//! // A = [1 2; 3 4], B = [5 6 7; 8 9 10]: C = A B = [21 24 27; 47 54 61]
//! let mut packed = PackedA::new();
//! packed.pack(Trans::No, 2, 2, &[1.0f32, 2., 3., 4.], 2);
//! let mut c = [0.0f32; 6];
//! gemm_packed(&packed, 3, &[5.0f32, 6., 7., 8., 9., 10.], 3, 0.0, &mut c, 3);
//! assert_eq!(c, [21.0, 24.0, 27.0, 47.0, 54.0, 61.0]);
//! ```

use crate::element::Element;
use crate::kernels::gemm::{gemm, Trans};

use crate::kernels::cpu;

/// Rows of `A` per packed panel (and of `C` per micro-kernel block).
pub const MR: usize = 8;

/// A matrix `A` (`m x k`) packed for [`gemm_packed`]. Reuse one across calls:
/// packing again only grows its buffers.
#[derive(Debug, Default, Clone)]
pub struct PackedA<T> {
    rows: usize,
    depth: usize,
    /// `ceil(m / MR)` panels of `k x MR`, zero-padded.
    panels: Vec<T>,
    /// `A` row-major (`m x k`), for the fallback path.
    plain: Vec<T>,
    /// Whether `panels` holds `A` (the CPU had AVX-512F when it was packed, so
    /// the kernel may run) or `plain` does.
    holds_panels: bool,
}

impl<T: Element> PackedA<T> {
    /// An empty packing.
    pub fn new() -> Self {
        PackedA { rows: 0, depth: 0, panels: Vec::new(), plain: Vec::new(), holds_panels: false }
    }

    /// Rows `m` of the packed matrix.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns `k` of the packed matrix.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Packs `op(A)`, `m x k`: with [`Trans::No`] `A[i][p] = a[i * lda + p]`,
    /// with [`Trans::Yes`] `A[i][p] = a[p * lda + i]`.
    ///
    /// # Panics
    /// If `a` is too short for the stated shape.
    pub fn pack(&mut self, trans: Trans, m: usize, k: usize, a: &[T], lda: usize) {
        // only the form this CPU's path reads: the panels, or the plain copy
        self.pack_as(trans, m, k, a, lda, rows_kernel_available());
    }

    /// [`PackedA::pack`] into panels (only where the CPU has AVX-512F: the
    /// kernel will run on them) or into the plain copy.
    fn pack_as(&mut self, trans: Trans, m: usize, k: usize, a: &[T], lda: usize, panels: bool) {
        let at = |i: usize, p: usize| match trans {
            Trans::No => a[i * lda + p],
            Trans::Yes => a[p * lda + i],
        };
        self.rows = m;
        self.depth = k;
        self.panels.clear();
        self.plain.clear();
        self.holds_panels = panels && rows_kernel_available();
        if !self.holds_panels {
            self.plain.extend((0..m * k).map(|index| at(index / k, index % k)));
            return;
        }
        let panel_count = m.div_ceil(MR);
        self.panels.resize(panel_count * k * MR, T::zero());
        for panel in 0..panel_count {
            for p in 0..k {
                for r in 0..MR.min(m - panel * MR) {
                    self.panels[(panel * k + p) * MR + r] = at(panel * MR + r, p);
                }
            }
        }
    }
}

/// `C := A * B + beta * C` with `A` packed (see the module docs).
///
/// # Panics
/// If `B` or `C` is too short for `k x n` / `m x n` with its row stride, or a row
/// stride is shorter than its row: programming errors in a kernel.
pub fn gemm_packed<T: Element>(a: &PackedA<T>, n: usize, b: &[T], ldb: usize, beta: T, c: &mut [T], ldc: usize) {
    let (m, k) = (a.rows, a.depth);
    assert!(ldb >= n || k <= 1, "gemm_packed: ldb {ldb} < n {n}");
    assert!(ldc >= n || m <= 1, "gemm_packed: ldc {ldc} < n {n}");
    assert!(k == 0 || n == 0 || b.len() >= (k - 1) * ldb + n, "gemm_packed: B too short");
    assert!(m == 0 || n == 0 || c.len() >= (m - 1) * ldc + n, "gemm_packed: C too short");
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: `holds_panels` is set only where the CPU has AVX-512F. The asserts
    // above keep every addressed element of `b` and `c` in bounds; `c` is a unique
    // borrow, so it aliases neither `a` nor `b`. The packed-weights invariant the
    // kernel relies on holds by construction: `PackedA::pack` is the only writer
    // of `rows`, `depth`, `panels` and `holds_panels`, and with `holds_panels` it
    // leaves `panels` exactly `ceil(rows / MR) * depth * MR` long, the rows past
    // `rows` zero, so every panel load of the kernel is in bounds.
    #[cfg(target_arch = "x86_64")]
    if a.holds_panels {
        use crate::kernels::x86_gemm_packed::{avx512_f32, avx512_f64};
        // (the SAFETY argument above covers both calls; the CPU has AVX-512F)
        if let (Some(c), Some(panels), Some(b)) = (T::as_f32_mut(c), T::as_f32(&a.panels), T::as_f32(b)) {
            let (panels, b, c, beta) = (panels.as_ptr(), b.as_ptr(), c.as_mut_ptr(), beta.to_f64() as f32);
            return unsafe {
                avx512_f32::<MR, usize>(m, n, k, panels, b, ldb, beta, c, ldc, (std::ptr::null(), false))
            };
        }
        if let (Some(c), Some(panels), Some(b)) = (T::as_f64_mut(c), T::as_f64(&a.panels), T::as_f64(b)) {
            let (panels, b, c, beta) = (panels.as_ptr(), b.as_ptr(), c.as_mut_ptr(), beta.to_f64());
            return unsafe {
                avx512_f64::<MR, usize>(m, n, k, panels, b, ldb, beta, c, ldc, (std::ptr::null(), false))
            };
        }
    }
    gemm_packed_fallback(a, n, b, ldb, beta, c, ldc);
}

/// Whether [`gemm_packed`] and [`gemm_packed_rows`] run their fast kernel on
/// this CPU (AVX-512F), which reads the panels; [`PackedA::pack`] makes the
/// plain copy instead where not. For [`gemm_packed_rows`]:
/// without it, it gathers `B` and multiplies as [`gemm_packed`] does, which
/// costs what an im2col would.
pub fn rows_kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return cpu::features().avx512f;
    #[cfg(not(target_arch = "x86_64"))]
    return false;
}

/// `C := A * B + bias`, then `max(., 0)` if `relu` (`bias[i]` on row `i`), with
/// row `p` of `B` (`k x n`) at `b[row_starts[p]..][..n]` instead of a fixed
/// stride apart: rows may overlap. A stride-1 convolution without padding
/// reads its column matrix this way straight from the image, with no im2col
/// (row `(c, ki, kj)` for output row `i` starts at `c*H*W + (i + ki)*W + kj`).
///
/// Each value is the chain of multiply-adds over `p` in order, then `+ bias[i]`,
/// then the ReLU: exactly what [`gemm_packed`] with `beta = 0` followed by a
/// separate bias pass computes, on either path.
///
/// # Panics
/// If `row_starts` is not `k` long, a row of `B` runs past `b`, `C` is too
/// short, or `bias` is not `m` long: programming errors in a kernel.
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed_rows<T: Element>(
    a: &PackedA<T>,
    n: usize,
    b: &[T],
    row_starts: &[usize],
    c: &mut [T],
    ldc: usize,
    bias: &[T],
    relu: bool,
) {
    let (m, k) = (a.rows, a.depth);
    assert_eq!(row_starts.len(), k, "gemm_packed_rows: one start per row of B");
    assert_eq!(bias.len(), m, "gemm_packed_rows: bias length");
    assert!(ldc >= n || m <= 1, "gemm_packed_rows: ldc {ldc} < n {n}");
    assert!(n == 0 || row_starts.iter().all(|&start| start + n <= b.len()), "gemm_packed_rows: B too short");
    assert!(m == 0 || n == 0 || c.len() >= (m - 1) * ldc + n, "gemm_packed_rows: C too short");
    if m == 0 || n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if a.holds_panels {
        use crate::kernels::x86_gemm_packed::{avx512_f32, avx512_f64};
        let starts = row_starts;
        // SAFETY: as in `gemm_packed` (AVX-512F present, the panels' invariant by
        // construction, `c` a unique borrow); the asserts above keep each row of B
        // (`start..start + n`), C and `bias[..m]` in bounds, and `starts` has the
        // `k` entries the kernel reads.
        if let (Some(c), Some(panels), Some(b), Some(bias)) =
            (T::as_f32_mut(c), T::as_f32(&a.panels), T::as_f32(b), T::as_f32(bias))
        {
            let (panels, b, c, bias) = (panels.as_ptr(), b.as_ptr(), c.as_mut_ptr(), bias.as_ptr());
            return unsafe { avx512_f32::<MR, &[usize]>(m, n, k, panels, b, starts, 0.0, c, ldc, (bias, relu)) };
        }
        if let (Some(c), Some(panels), Some(b), Some(bias)) =
            (T::as_f64_mut(c), T::as_f64(&a.panels), T::as_f64(b), T::as_f64(bias))
        {
            let (panels, b, c, bias) = (panels.as_ptr(), b.as_ptr(), c.as_mut_ptr(), bias.as_ptr());
            return unsafe { avx512_f64::<MR, &[usize]>(m, n, k, panels, b, starts, 0.0, c, ldc, (bias, relu)) };
        }
    }
    // elsewhere: gather B, multiply, then the bias pass
    let gathered: Vec<T> = row_starts.iter().flat_map(|&start| b[start..start + n].iter().copied()).collect();
    gemm_packed(a, n, &gathered, n, T::zero(), c, ldc);
    for (i, &bias_i) in bias.iter().enumerate() {
        for value in &mut c[i * ldc..i * ldc + n] {
            let biased = *value + bias_i;
            *value = if !relu || biased > T::zero() { biased } else { T::zero() };
        }
    }
}

/// The path for CPUs without AVX-512: the general GEMM on the plain copy of `A`.
fn gemm_packed_fallback<T: Element>(a: &PackedA<T>, n: usize, b: &[T], ldb: usize, beta: T, c: &mut [T], ldc: usize) {
    gemm(Trans::No, Trans::No, a.rows, n, a.depth, T::one(), &a.plain, a.depth, b, ldb, beta, c, ldc);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::{assert_close, random};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn check<T: Element>(tolerance: f64) {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        // every edge: m below/at/above a panel, n below/at/above a 48-column
        // block and not a multiple of a vector, k = 1, and the conv shapes
        for &(m, n, k) in &[
            (1, 1, 1),
            (3, 5, 7),
            (8, 48, 9),
            (9, 49, 2),
            (17, 100, 33),
            (64, 880, 288),
            (288, 424, 64),
            (32, 15, 27),
            (5, 0, 3),
        ] {
            for trans in [Trans::No, Trans::Yes] {
                for beta in [0.0, 1.0, -0.5] {
                    let lda = if trans == Trans::No { k + 2 } else { m + 2 };
                    let (ldb, ldc) = (n + 3, n + 1);
                    let (a, b, c0): (Vec<T>, Vec<T>, Vec<T>) =
                        (random(&mut rng, m.max(k) * lda), random(&mut rng, k * ldb), random(&mut rng, m * ldc));
                    let mut packed = PackedA::new();
                    packed.pack(trans, m, k, &a, lda);
                    let (mut fast, mut slow) = (c0.clone(), c0.clone());
                    gemm_packed(&packed, n, &b, ldb, T::from_f64(beta), &mut fast, ldc);
                    crate::kernels::gemm::gemm_naive(
                        trans,
                        Trans::No,
                        m,
                        n,
                        k,
                        T::one(),
                        &a,
                        lda,
                        &b,
                        ldb,
                        T::from_f64(beta),
                        &mut slow,
                        ldc,
                    );
                    assert_close(&fast, &slow, k, tolerance, &format!("m={m} n={n} k={k} {trans:?} beta={beta}"));
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

    /// With AVX-512 and beta = 0 a depth past the kernel's depth block runs in
    /// blocks whose partial sums wait in C: still one chain of FMAs per value
    /// over k in order, so the bits of that chain (here 600 = 256 + 256 + 88).
    #[test]
    fn a_long_depth_in_blocks_is_one_chain_of_multiply_adds_per_value() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (m, n, k) = (19, 53, 600);
        let (a, b): (Vec<f32>, Vec<f32>) = (random(&mut rng, m * k), random(&mut rng, k * n));
        let mut packed = PackedA::new();
        packed.pack(Trans::No, m, k, &a, k);
        let mut c = vec![7.0f32; m * n];
        gemm_packed(&packed, n, &b, n, 0.0, &mut c, n);
        let avx512 = cpu::features().avx512f;
        for i in 0..m {
            for j in 0..n {
                let mut chain = 0.0f32;
                for p in 0..k {
                    chain = a[i * k + p].mul_add(b[p * n + j], chain);
                }
                if avx512 {
                    assert_eq!(c[i * n + j].to_bits(), chain.to_bits(), "({i}, {j})");
                } else {
                    // the fallback (`matrixmultiply`) sums in its own order
                    assert!((c[i * n + j] - chain).abs() <= 1e-4 * chain.abs().max(1.0), "({i}, {j})");
                }
            }
        }
    }

    #[test]
    fn the_fallback_for_cpus_without_avx512_matches_the_kernel() {
        // integer values: exact in any order, so both paths must agree bit for bit
        let (m, n, k) = (13, 70, 9);
        let a: Vec<f64> = (0..m * k).map(|v| ((v * 7) % 11) as f64 - 5.0).collect();
        let b: Vec<f64> = (0..k * n).map(|v| ((v * 5) % 13) as f64 - 6.0).collect();
        let (mut packed, mut plain) = (PackedA::new(), PackedA::new());
        packed.pack(Trans::No, m, k, &a, k);
        plain.pack_as(Trans::No, m, k, &a, k, false);
        let (mut kernel, mut fallback) = (vec![f64::NAN; m * n], vec![f64::NAN; m * n]);
        gemm_packed(&packed, n, &b, n, 0.0, &mut kernel, n);
        gemm_packed(&plain, n, &b, n, 0.0, &mut fallback, n);
        assert_eq!(kernel, fallback);
    }

    /// Rows of B read from anywhere (overlapping, as a convolution's columns
    /// do), with the bias and ReLU: the same bits as gathering B, the GEMM, and
    /// the bias pass (`if y > 0 { y } else { 0 }`, NaN to 0).
    #[test]
    fn rows_read_in_place_with_bias_and_relu_equal_gather_multiply_then_bias() {
        fn check<T: Element>() {
            let mut rng = ChaCha8Rng::seed_from_u64(5);
            for &(m, n, k) in &[(32, 222, 27), (9, 49, 300), (3, 5, 1), (17, 100, 40)] {
                let image: Vec<T> = random(&mut rng, 4 * k + n + 50);
                let starts: Vec<usize> = (0..k).map(|p| (p * 3 + p % 5) % (3 * k + 40)).collect();
                let (a, mut bias): (Vec<T>, Vec<T>) = (random(&mut rng, m * k), random(&mut rng, m));
                bias[0] = T::from_f64(f64::NAN);
                let mut packed = PackedA::new();
                packed.pack(Trans::No, m, k, &a, k);
                for relu in [false, true] {
                    let ldc = n + 7;
                    let mut fast = vec![T::from_f64(9.0); m * ldc];
                    gemm_packed_rows(&packed, n, &image, &starts, &mut fast, ldc, &bias, relu);
                    let gathered: Vec<T> = starts.iter().flat_map(|&s| image[s..s + n].iter().copied()).collect();
                    let mut slow = vec![T::from_f64(9.0); m * ldc];
                    gemm_packed(&packed, n, &gathered, n, T::zero(), &mut slow, ldc);
                    for i in 0..m {
                        for value in &mut slow[i * ldc..i * ldc + n] {
                            let biased = *value + bias[i];
                            *value = if !relu || biased > T::zero() { biased } else { T::zero() };
                        }
                    }
                    let bits = |v: &[T]| v.iter().map(|&x| Element::to_f64(x).to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&fast), bits(&slow), "m={m} n={n} k={k} relu={relu}");
                }
            }
        }
        check::<f32>();
        check::<f64>();
    }

    #[test]
    fn padding_columns_past_n_are_never_written() {
        // C is 2 x 20 inside rows of 64: the masked stores must leave the rest alone
        let mut packed = PackedA::new();
        packed.pack(Trans::No, 2, 1, &[1.0f32, 2.0], 1);
        let b = vec![1.0f32; 20];
        let mut c = vec![f32::NAN; 2 * 64];
        gemm_packed(&packed, 20, &b, 20, 0.0, &mut c, 64);
        for row in 0..2 {
            assert!(c[row * 64..row * 64 + 20].iter().all(|&v| v == (row + 1) as f32));
            assert!(c[row * 64 + 20..(row + 1) * 64].iter().all(|v| v.is_nan()));
        }
    }
}
