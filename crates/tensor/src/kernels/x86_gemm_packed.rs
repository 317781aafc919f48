//! The AVX-512 kernels, one per element type, generated from one body.
//!
//! A leaf module: raw pointers and one element type per function, no
//! generic [`crate::element::Element`]; [`crate::kernels::gemm_packed`]
//! dispatches to them and passes its panel height `MR`.

use std::arch::x86_64::*;

/// Depth per block of the kernel when `beta = 0` (see the kernel's comments).
const DEPTH_BLOCK: usize = 256;

/// Bytes of one packed block of B (see the kernel's comments): 1 MB, half of
/// the L2 of a core of the round-3 Xeon.
const PACKED_B_BYTES: usize = 1 << 20;

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

/// A 64-byte aligned run of `len` elements inside `buffer`, which grows to hold it.
fn aligned<T: Copy + Default>(buffer: &mut Vec<T>, len: usize) -> *mut T {
    let slack = 64 / std::mem::size_of::<T>();
    if buffer.len() < len + slack {
        buffer.resize(len + slack, T::default());
    }
    let offset = buffer.as_ptr().align_offset(64);
    buffer[offset..].as_mut_ptr()
}

macro_rules! kernel {
    ($name:ident, $t:ty, $vec:ty, $mask:ty, $lanes:expr, $zero:ident, $set1:ident, $fmadd:ident,
     $add:ident, $max:ident, $maskz_load:ident, $mask_store:ident, $load:ident, $store:ident) => {
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
            thread_local! {
                /// This thread's packed block of B (see the kernel's comments), grown once.
                static PACKED_B: std::cell::RefCell<Vec<$t>> = const { std::cell::RefCell::new(Vec::new()) };
            }
            // SAFETY: the caller guarantees this function's contract: AVX-512F, `panels` packed by `PackedA::pack` for this `m` and `k` (ceil(m / MR) panels of k x MR, zero-padded: the invariant every panel load below relies on), and `b`, `c` in bounds for the stated dimensions and strides. The packed block of B is this thread's own buffer, sized below for every element written and read.
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
                let masks_for = |cols: usize| -> [$mask; 3] {
                    [
                        lane_mask(cols),
                        lane_mask(cols.saturating_sub($lanes)),
                        lane_mask(cols.saturating_sub(2 * $lanes)),
                    ]
                };
                // With beta = 0 a long depth runs in blocks of DEPTH_BLOCK: the partial
                // sums wait in C between blocks (stored and reloaded exactly, so each
                // value is still one chain of FMAs over k in order: the same bits).
                let depth_blocks = if beta == 0.0 && k > DEPTH_BLOCK { k.div_ceil(DEPTH_BLOCK) } else { 1 };
                let block_depth = if depth_blocks == 1 { k } else { DEPTH_BLOCK };
                // Columns per packed block of B: about PACKED_B_BYTES, whole column blocks.
                let block_cols =
                    (PACKED_B_BYTES / (block_depth.max(1) * std::mem::size_of::<$t>()) / COLS).max(1) * COLS;
                // (the pointer outlives the loan: only this kernel touches the buffer,
                // on this thread, and it does not call itself)
                let packed_b = PACKED_B.with_borrow_mut(|buffer| aligned(buffer, block_depth * block_cols));
                for j0 in (0..n).step_by(block_cols) {
                    let j1 = (j0 + block_cols).min(n);
                    for depth_block in 0..depth_blocks {
                        let (k0, k1) = (depth_block * block_depth, ((depth_block + 1) * block_depth).min(k));
                        let (first, last) = (depth_block == 0, depth_block + 1 == depth_blocks);
                        let depth = k1 - k0;
                        // B[k0..k1][j0..j1] into column blocks of (depth, COLS), each
                        // contiguous and aligned, zero past the last column
                        for (q, j) in (j0..j1).step_by(COLS).enumerate() {
                            let masks = masks_for(j1 - j);
                            let block = packed_b.add(q * depth * COLS);
                            for p in k0..k1 {
                                let b_row = b.wrapping_add(rows.start(p) + j);
                                for v in 0..3 {
                                    // (wrapping: past the end of a row the mask is empty and
                                    // the address may lie outside B; it is never read)
                                    let value = $maskz_load(masks[v], b_row.wrapping_add(v * $lanes));
                                    $store(block.add((p - k0) * COLS + v * $lanes), value);
                                }
                            }
                        }
                        for panel in 0..m.div_ceil(MR) {
                            let panel_rows = MR.min(m - panel * MR);
                            let a_panel = panels.add(panel * k * MR + k0 * MR);
                            for (q, j) in (j0..j1).step_by(COLS).enumerate() {
                                let masks = masks_for(j1 - j);
                                let mut acc = [[$zero(); 3]; MR];
                                if !first {
                                    // the partial sums of the blocks before (every row index
                                    // a constant once unrolled, so that `acc` lives in
                                    // registers: a loop to `panel_rows` would keep it in
                                    // memory, stored after every multiply-add)
                                    for r in 0..MR {
                                        if r < panel_rows {
                                            let c_row = c.add((panel * MR + r) * ldc + j);
                                            for v in 0..3 {
                                                acc[r][v] = $maskz_load(masks[v], c_row.wrapping_add(v * $lanes));
                                            }
                                        }
                                    }
                                }
                                let mut a_ptr = a_panel;
                                let mut b_ptr = packed_b.add(q * depth * COLS) as *const $t;
                                for _ in 0..depth {
                                    let b_vecs = [$load(b_ptr), $load(b_ptr.add($lanes)), $load(b_ptr.add(2 * $lanes))];
                                    for r in 0..MR {
                                        let a_value = $set1(*a_ptr.add(r));
                                        for v in 0..3 {
                                            acc[r][v] = $fmadd(a_value, b_vecs[v], acc[r][v]);
                                        }
                                    }
                                    a_ptr = a_ptr.add(MR);
                                    b_ptr = b_ptr.add(COLS);
                                }
                                let beta_vec = $set1(beta);
                                for r in (0..MR).filter(|&r| r < panel_rows) {
                                    let c_row = c.add((panel * MR + r) * ldc + j);
                                    // the epilogue, on the last depth block: + bias, then the ReLU
                                    // (max(y, 0) returns its second operand, 0, for a NaN: the same
                                    // as `if y > 0 { y } else { 0 }`)
                                    let bias_vec = if last && !bias.is_null() {
                                        Some($set1(*bias.add(panel * MR + r)))
                                    } else {
                                        None
                                    };
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
                        }
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
    _mm512_mask_storeu_ps,
    _mm512_load_ps,
    _mm512_store_ps
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
    _mm512_mask_storeu_pd,
    _mm512_load_pd,
    _mm512_store_pd
);
