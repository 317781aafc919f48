//! The 2x2, stride-2, unpadded max-pool of one channel plane: the case every
//! preset network uses, with a branch-free body. `maxpool_naive` in
//! `layers/maxpool2d.rs` is its twin (`tests/suite/kernels.rs`).
//!
//! `plane` is `(H, W)`; `out` and `argmax` are `(OH, OW)`, `argmax` holding the
//! flat index `ih * W + iw` of each window's winner (the first in row-major
//! order on ties; NaN never wins).

use crate::element::Element;
use crate::geometry::WindowGeometry;
use crate::kernels::cpu::simd_variant;

/// The common case with a fast path: 2x2 windows, stride 2, no padding (an odd
/// last row or column is then never part of a window).
pub fn is_fast_2x2(geom: &WindowGeometry) -> bool {
    (geom.kernel_h, geom.kernel_w, geom.stride_h, geom.stride_w) == (2, 2, 2, 2)
        && geom.pad_top == 0
        && geom.pad_left == 0
        && 2 * geom.out_h <= geom.in_h
        && 2 * geom.out_w <= geom.in_w
}

simd_variant! {
    /// The common 2x2, stride 2, no-padding case. Why it is fast: the winner of
    /// each window is chosen with selects instead of branches (on real activations
    /// the comparisons are unpredictable, and a mispredicted branch costs more than
    /// the whole window), and the winner is first found as a position 0..3 in the
    /// window (`2 * row + column`), all in plain arithmetic on values the compiler
    /// can put side by side in SIMD registers: it pools 8 or 16 windows per
    /// instruction. Same result and tie rule (first in row-major order) as the
    /// general loop.
    ///
    /// With AVX2, `pool_plane_2x2_body` compiled for it: 8 windows per
    /// instruction instead of SSE2's 4.
    pub fn pool_plane_2x2 = pool_plane_2x2_body, "avx2", avx2;
    (geom: &WindowGeometry, plane: &[T], out: &mut [T], argmax: &mut [u32])
}

#[inline(always)]
pub(crate) fn pool_plane_2x2_body<T: Element>(geom: &WindowGeometry, plane: &[T], out: &mut [T], argmax: &mut [u32]) {
    let width = geom.in_w;
    for i in 0..geom.out_h {
        let top = &plane[2 * i * width..2 * i * width + 2 * geom.out_w];
        let bottom = &plane[(2 * i + 1) * width..(2 * i + 1) * width + 2 * geom.out_w];
        let out_row = &mut out[i * geom.out_w..(i + 1) * geom.out_w];
        let argmax_row = &mut argmax[i * geom.out_w..(i + 1) * geom.out_w];
        let top_index = (2 * i * width) as u32;
        let windows = top.chunks_exact(2).zip(bottom.chunks_exact(2));
        for (j, ((best_out, index_out), (top_pair, bottom_pair))) in
            out_row.iter_mut().zip(argmax_row.iter_mut()).zip(windows).enumerate()
        {
            let (mut best, mut position) = (top_pair[0], 0u32);
            let better = top_pair[1] > best;
            best = if better { top_pair[1] } else { best };
            position = if better { 1 } else { position };
            let better = bottom_pair[0] > best;
            best = if better { bottom_pair[0] } else { best };
            position = if better { 2 } else { position };
            let better = bottom_pair[1] > best;
            best = if better { bottom_pair[1] } else { best };
            position = if better { 3 } else { position };
            *best_out = best;
            // position 2 * r + c is the input pixel (2i + r, 2j + c)
            *index_out = top_index + 2 * j as u32 + (position & 1) + (position >> 1) * width as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Padding;

    #[test]
    fn the_plain_body_matches_the_definition() {
        // the AVX2 build runs on most CPUs; the plain body is what other CPUs run.
        // (The dispatching kernel is held to the layer's maxpool_naive in tests/suite/kernels.rs.)
        let geom = WindowGeometry::new(1, 5, 7, (2, 2), (2, 2), Padding::Valid).unwrap();
        assert!(is_fast_2x2(&geom));
        let plane: Vec<f64> = (0..35).map(|v| ((v * 13) % 7) as f64).collect(); // with ties
        let (mut out, mut argmax) = (vec![0.0; geom.out_pixels()], vec![0u32; geom.out_pixels()]);
        pool_plane_2x2_body(&geom, &plane, &mut out, &mut argmax);
        for i in 0..geom.out_h {
            for j in 0..geom.out_w {
                // the window's pixels in row-major order; the first maximum wins
                let window = [(2 * i, 2 * j), (2 * i, 2 * j + 1), (2 * i + 1, 2 * j), (2 * i + 1, 2 * j + 1)];
                let mut winner = window[0].0 * 7 + window[0].1;
                for &(r, c) in &window[1..] {
                    if plane[r * 7 + c] > plane[winner] {
                        winner = r * 7 + c;
                    }
                }
                assert_eq!(out[i * geom.out_w + j], plane[winner]);
                assert_eq!(argmax[i * geom.out_w + j] as usize, winner, "window ({i}, {j})");
            }
        }
    }
}
