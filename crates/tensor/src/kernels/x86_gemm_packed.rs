//! The AVX-512 kernels, one per element type, generated from one body.
//!
//! A leaf module: raw pointers and one element type per function, no
//! generic [`crate::element::Element`]; [`crate::kernels::gemm_packed`]
//! dispatches to them and passes its panel height `MR`.

use std::arch::x86_64::*;

macro_rules! kernel {
    ($name:ident, $t:ty, $vec:ty, $mask:ty, $lanes:expr, $zero:ident, $set1:ident, $fmadd:ident,
     $maskz_load:ident, $mask_store:ident) => {
        /// `C := A B + beta C` with `A` packed in panels of `MR` rows.
        ///
        /// # Safety
        /// The CPU has AVX-512F; `panels` holds `ceil(m / MR) * k * MR`
        /// elements; every addressed element of `b` and `c` is in bounds;
        /// `c` aliases neither.
        #[target_feature(enable = "avx512f")]
        #[allow(clippy::too_many_arguments)]
        pub(crate) unsafe fn $name<const MR: usize>(
            m: usize,
            n: usize,
            k: usize,
            panels: *const $t,
            b: *const $t,
            ldb: usize,
            beta: $t,
            c: *mut $t,
            ldc: usize,
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
                let mut j = 0;
                while j < n {
                    let cols = (n - j).min(COLS);
                    let masks = [
                        lane_mask(cols),
                        lane_mask(cols.saturating_sub($lanes)),
                        lane_mask(cols.saturating_sub(2 * $lanes)),
                    ];
                    for panel in 0..m.div_ceil(MR) {
                        let mut acc = [[$zero(); 3]; MR];
                        let mut a_ptr = panels.add(panel * k * MR);
                        let mut b_row = b.add(j);
                        for _ in 0..k {
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
                            // (wrapping: after the last row this points past B, unread)
                            b_row = b_row.wrapping_add(ldb);
                        }
                        let beta_vec = $set1(beta);
                        for r in 0..MR.min(m - panel * MR) {
                            let c_row = c.add((panel * MR + r) * ldc + j);
                            for v in 0..3 {
                                // (wrapping, as for B: a masked-out vector is never touched)
                                let target = c_row.wrapping_add(v * $lanes);
                                let value = if beta == 0.0 {
                                    acc[r][v]
                                } else {
                                    $fmadd(beta_vec, $maskz_load(masks[v], target), acc[r][v])
                                };
                                $mask_store(target, masks[v], value);
                            }
                        }
                    }
                    j += COLS;
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
    _mm512_maskz_loadu_pd,
    _mm512_mask_storeu_pd
);
