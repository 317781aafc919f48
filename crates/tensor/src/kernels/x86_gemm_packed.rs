//! The AVX-512 kernels, one per element type, generated from one body.
//!
//! A leaf module: raw pointers and one element type per function, no
//! generic [`crate::element::Element`]; [`crate::kernels::gemm_packed`]
//! dispatches to them and passes its panel height `MR`.

use std::arch::x86_64::*;

/// Depth per block of the kernel when `beta = 0` (see the kernel's comments).
const DEPTH_BLOCK: usize = 256;

/// Where each row of `B` starts, in elements from `b`.
pub(crate) trait RowStarts: Copy {
    /// The start of row `p`.
    ///
    /// # Safety
    /// `p` is below the depth the rows were made for.
    unsafe fn start(self, p: usize) -> usize;
}

/// Rows a fixed stride apart (`ldb`): an ordinary row-major `B`.
impl RowStarts for usize {
    #[inline(always)]
    unsafe fn start(self, p: usize) -> usize {
        p * self
    }
}

/// Rows anywhere, one start each: a convolution's column matrix read straight
/// from the image (row `(c, ki, kj)` of `col` for one output row is a run of
/// input row `ki` of channel `c` from column `kj`), overlapping rows included.
impl RowStarts for &[usize] {
    #[inline(always)]
    unsafe fn start(self, p: usize) -> usize {
        // SAFETY: the caller keeps `p` below the table's length (the depth)
        unsafe { *self.get_unchecked(p) }
    }
}

macro_rules! kernel {
    ($name:ident, $t:ty, $vec:ty, $mask:ty, $lanes:expr, $zero:ident, $set1:ident, $fmadd:ident,
     $add:ident, $max:ident, $maskz_load:ident, $mask_store:ident) => {
        /// `C := A B + beta C`, then `+ bias[i]` on row `i` if `bias` is not
        /// null, then `max(., 0)` if `relu`; `A` packed in panels of `MR` rows,
        /// row `p` of `B` at `b + rows.start(p)`.
        ///
        /// # Safety
        /// The CPU has AVX-512F; `panels` holds `ceil(m / MR) * k * MR`
        /// elements; `rows` has a start for each of the `k` rows; every
        /// addressed element of `b` and `c` (and `bias[..m]`) is in bounds;
        /// `c` aliases none of them.
        #[target_feature(enable = "avx512f")]
        #[allow(clippy::too_many_arguments)]
        pub(crate) unsafe fn $name<const MR: usize, R: RowStarts>(
            m: usize,
            n: usize,
            k: usize,
            panels: *const $t,
            b: *const $t,
            rows: R,
            beta: $t,
            c: *mut $t,
            ldc: usize,
            (bias, relu): (*const $t, bool),
        ) {
            // SAFETY: the caller guarantees this function's contract: AVX-512F, `panels` packed by `PackedA::pack` for this `m` and `k` (ceil(m / MR) panels of k x MR, zero-padded: the invariant every panel load below relies on), and `b`, `c` in bounds for the stated dimensions and strides.
            unsafe {
                const COLS: usize = 3 * $lanes;
                // a lane mask for `count` (0..=LANES) columns
                let lane_mask = |count: usize| -> $mask {
                    if count >= $lanes {
                        <$mask>::MAX
                    } else {
                        ((1u32 << count) - 1) as $mask
                    }
                };
                // With beta = 0 a long depth runs in blocks of DEPTH_BLOCK: the partial
                // sums wait in C between blocks (stored and reloaded exactly, so each
                // value is still one chain of FMAs over k in order: the same bits), and
                // a block of A's panels (512 x 256 x 4 B = 512 KB at 512 channels) stays
                // in L2 while every column block passes, its panel slice (8 KB) in L1.
                let depth_blocks = if beta == 0.0 && k > DEPTH_BLOCK { k.div_ceil(DEPTH_BLOCK) } else { 1 };
                for depth_block in 0..depth_blocks {
                    let (k0, k1) = match depth_blocks {
                        1 => (0, k),
                        _ => (depth_block * DEPTH_BLOCK, ((depth_block + 1) * DEPTH_BLOCK).min(k)),
                    };
                    let (first, last) = (depth_block == 0, depth_block + 1 == depth_blocks);
                    let mut j = 0;
                    while j < n {
                        let cols = (n - j).min(COLS);
                        let masks = [
                            lane_mask(cols),
                            lane_mask(cols.saturating_sub($lanes)),
                            lane_mask(cols.saturating_sub(2 * $lanes)),
                        ];
                        for panel in 0..m.div_ceil(MR) {
                            let panel_rows = MR.min(m - panel * MR);
                            let mut acc = [[$zero(); 3]; MR];
                            if !first {
                                // the partial sums of the blocks before
                                for r in 0..panel_rows {
                                    let c_row = c.add((panel * MR + r) * ldc + j);
                                    for v in 0..3 {
                                        acc[r][v] = $maskz_load(masks[v], c_row.wrapping_add(v * $lanes));
                                    }
                                }
                            }
                            let mut a_ptr = panels.add(panel * k * MR + k0 * MR);
                            for p in k0..k1 {
                                // (wrapping: see the masked loads below)
                                let b_row = b.wrapping_add(rows.start(p) + j);
                                let b_vecs = [
                                    $maskz_load(masks[0], b_row),
                                    // (wrapping: past the end of a row the mask is empty
                                    // and the address may lie outside B; it is never read)
                                    $maskz_load(masks[1], b_row.wrapping_add($lanes)),
                                    $maskz_load(masks[2], b_row.wrapping_add(2 * $lanes)),
                                ];
                                for r in 0..MR {
                                    let a_value = $set1(*a_ptr.add(r));
                                    for v in 0..3 {
                                        acc[r][v] = $fmadd(a_value, b_vecs[v], acc[r][v]);
                                    }
                                }
                                a_ptr = a_ptr.wrapping_add(MR);
                            }
                            let beta_vec = $set1(beta);
                            for r in 0..panel_rows {
                                let c_row = c.add((panel * MR + r) * ldc + j);
                                // the epilogue, on the last depth block: + bias, then the ReLU
                                // (max(y, 0) returns its second operand, 0, for a NaN: the same
                                // as `if y > 0 { y } else { 0 }`)
                                let bias_vec =
                                    if last && !bias.is_null() { Some($set1(*bias.add(panel * MR + r))) } else { None };
                                for v in 0..3 {
                                    // (wrapping, as for B: a masked-out vector is never touched)
                                    let target = c_row.wrapping_add(v * $lanes);
                                    let mut value = if beta == 0.0 || !last {
                                        acc[r][v]
                                    } else {
                                        $fmadd(beta_vec, $maskz_load(masks[v], target), acc[r][v])
                                    };
                                    if let Some(bias_vec) = bias_vec {
                                        value = $add(value, bias_vec);
                                    }
                                    if last && relu {
                                        value = $max(value, $zero());
                                    }
                                    $mask_store(target, masks[v], value);
                                }
                            }
                        }
                        j += COLS;
                    }
                }
            }
        }
    };
}

kernel!(
    avx512_f32,
    f32,
    __m512,
    __mmask16,
    16,
    _mm512_setzero_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    _mm512_max_ps,
    _mm512_maskz_loadu_ps,
    _mm512_mask_storeu_ps
);
kernel!(
    avx512_f64,
    f64,
    __m512d,
    __mmask8,
    8,
    _mm512_setzero_pd,
    _mm512_set1_pd,
    _mm512_fmadd_pd,
    _mm512_add_pd,
    _mm512_max_pd,
    _mm512_maskz_loadu_pd,
    _mm512_mask_storeu_pd
);
