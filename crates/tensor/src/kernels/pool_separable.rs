//! Max-pooling of one channel plane for any window, stride and padding (the
//! 3x3 stride-2 pool with padding 1 of ResNet's stem, SqueezeNet's ceil-mode
//! pools), done separably: first the maximum of every input row over each
//! output column's window (`row_max`, `(H, OW)`), then of every output's
//! window over those rows. `maxpool_naive` in `layers/maxpool2d.rs` is its
//! twin (`tests/suite/kernels.rs`, `tests/suite/modern.rs`).
//!
//! `plane` is `(H, W)`; `out` and `argmax` are `(OH, OW)`, `argmax` holding the
//! flat index `ih * W + iw` of each window's winner: the first in row-major
//! order on ties, NaN never winning unless it comes first. Separably that is
//! the first maximum of each row, then the first row holding the maximum, so
//! values and indices are those of the row-major loop, bit for bit.
//!
//! Why it is faster than that loop: each input row's horizontal maxima are
//! computed once and shared by every output row whose window covers it (3x3,
//! stride 2: two), the window's clipping to the image is worked out once per
//! column instead of per window, and both passes choose with selects, not
//! branches (on real activations the comparisons are unpredictable); the
//! second pass runs along contiguous rows, which the compiler vectorises.

use crate::element::Element;
use crate::geometry::WindowGeometry;
use crate::kernels::cpu::simd_variant;

/// `[first, end)` of the input positions window `index` covers along one axis
/// (`kernel`, `stride`, `pad` before), clipped to `len`.
fn span(index: usize, kernel: usize, stride: usize, pad: usize, len: usize) -> (usize, usize) {
    let first = (index * stride).saturating_sub(pad);
    (first, (index * stride + kernel).saturating_sub(pad).min(len))
}

/// The first pass's rows, `(H, OW)` maxima and their columns: a buffer a
/// thread reuses from plane to plane.
pub type RowMaxima<T> = (Vec<T>, Vec<u32>);

/// Pools one plane (module docs), with `scratch` for the first pass. Every
/// window must hold at least one input pixel (the layer refuses geometries
/// whose windows could hold only padding).
pub fn pool_plane_separable<T: Element>(
    geom: &WindowGeometry,
    plane: &[T],
    out: &mut [T],
    argmax: &mut [u32],
    scratch: &mut RowMaxima<T>,
) {
    let (in_h, in_w, out_h, out_w) = (geom.in_h, geom.in_w, geom.out_h, geom.out_w);
    let (kernel, stride, pad) = (geom.kernel_w, geom.stride_w, geom.pad_left);
    let (inner_first, inner_end) = inner_columns(geom);
    // pass 1: row_max[r][j] = max over the columns of window j in input row r, and its column
    let (row_max, row_arg) = scratch;
    row_max.resize(in_h * out_w, T::zero());
    row_arg.resize(in_h * out_w, 0);
    for r in 0..in_h {
        let row = &plane[r * in_w..(r + 1) * in_w];
        let (maxima, args) = (&mut row_max[r * out_w..(r + 1) * out_w], &mut row_arg[r * out_w..(r + 1) * out_w]);
        for j in (0..inner_first).chain(inner_end..out_w) {
            let (first, end) = span(j, kernel, stride, pad, in_w);
            (maxima[j], args[j]) = first_maximum_at(&row[first..end], first);
        }
        let (maxima, args) = (&mut maxima[inner_first..inner_end], &mut args[inner_first..inner_end]);
        let from = (inner_first * stride).saturating_sub(pad);
        match (kernel, stride) {
            (3, 2) => row_maxima_at::<T, 3, 2>(row, from, maxima, args),
            (2, 2) => row_maxima_at::<T, 2, 2>(row, from, maxima, args),
            _ => {
                for (j, (best, arg)) in maxima.iter_mut().zip(args.iter_mut()).enumerate() {
                    let first = from + j * stride;
                    (*best, *arg) = first_maximum_at(&row[first..first + kernel], first);
                }
            }
        }
    }
    // pass 2: out[i][j] = max over the rows of window i of row_max[.][j]
    for i in 0..out_h {
        let (first, end) = span(i, geom.kernel_h, geom.stride_h, geom.pad_top, in_h);
        let out_row = &mut out[i * out_w..(i + 1) * out_w];
        let argmax_row = &mut argmax[i * out_w..(i + 1) * out_w];
        out_row.copy_from_slice(&row_max[first * out_w..(first + 1) * out_w]);
        for (index, &column) in argmax_row.iter_mut().zip(&row_arg[first * out_w..(first + 1) * out_w]) {
            *index = (first * in_w) as u32 + column;
        }
        for r in first + 1..end {
            let (maxima, columns) = (&row_max[r * out_w..(r + 1) * out_w], &row_arg[r * out_w..(r + 1) * out_w]);
            let row_start = (r * in_w) as u32;
            for (((best, index), &value), &column) in
                out_row.iter_mut().zip(argmax_row.iter_mut()).zip(maxima).zip(columns)
            {
                let better = value > *best;
                *best = if better { value } else { *best };
                *index = if better { row_start + column } else { *index };
            }
        }
    }
}

simd_variant! {
    /// The values of [`pool_plane_separable`] without the winners' indices: what
    /// inference needs (nothing will be backpropagated). Bit for bit the same
    /// `out`: each maximum is chosen by the same strict `>` in the same row-major
    /// order, so ties and NaNs come out as there. `row_max` is the first pass's
    /// `(H, OW)` buffer (and, for ResNet's 3x3 stride-2 windows, a row's even and
    /// odd values), reused from plane to plane.
    ///
    /// Why it is faster: no index travels with each value; ResNet's 3x3 stride-2
    /// windows that lie inside the row are taken from the row split into its even
    /// and odd values (window `j` is `even[j], odd[j], even[j + 1]`: contiguous
    /// runs, which vectorise without shuffles), other windows with the window and
    /// stride as constants (`row_maxima`); the few windows clipped by the padding
    /// take the general path; compiled for AVX2 where the CPU has it (8 lanes).
    /// ResNet-18's stem pool (64 planes of 112x112, batch 32) on one thread:
    /// 24.3 / 24.6 -> 21.5 / 21.6 ms; the rest is waiting for the input, which
    /// the row split does not change.
    pub fn pool_plane_values = pool_plane_values_body, "avx2", avx2;
    (geom: &WindowGeometry, plane: &[T], out: &mut [T], row_max: &mut Vec<T>)
}

#[inline(always)]
fn pool_plane_values_body<T: Element>(geom: &WindowGeometry, plane: &[T], out: &mut [T], row_max: &mut Vec<T>) {
    let (in_h, in_w, out_h, out_w) = (geom.in_h, geom.in_w, geom.out_h, geom.out_w);
    let (kernel, stride, pad) = (geom.kernel_w, geom.stride_w, geom.pad_left);
    let (inner_first, inner_end) = inner_columns(geom);
    // pass 1: row_max[r][j] = max over the columns of window j in input row r
    let split_len = in_w.div_ceil(2);
    row_max.resize(in_h * out_w + 2 * split_len, T::zero());
    let (row_max, split) = row_max.split_at_mut(in_h * out_w);
    for r in 0..in_h {
        let row = &plane[r * in_w..(r + 1) * in_w];
        let maxima = &mut row_max[r * out_w..(r + 1) * out_w];
        let clipped = (0..inner_first).chain(inner_end..out_w);
        for j in clipped {
            let (first, end) = span(j, kernel, stride, pad, in_w);
            maxima[j] = first_maximum(&row[first..end]);
        }
        if inner_first == inner_end {
            continue;
        }
        let inner = &mut maxima[inner_first..inner_end];
        let from = (inner_first * stride).saturating_sub(pad);
        match (kernel, stride) {
            (3, 2) => row_maxima_3x2(&row[from..], inner, split),
            (2, 2) => row_maxima::<T, 2, 2>(&row[from..], inner),
            (3, 1) => row_maxima::<T, 3, 1>(&row[from..], inner),
            _ => {
                for (j, best) in inner.iter_mut().enumerate() {
                    *best = first_maximum(&row[from + j * stride..from + j * stride + kernel]);
                }
            }
        }
    }
    // pass 2: out[i][j] = max over the rows of window i of row_max[.][j]
    for i in 0..out_h {
        let (first, end) = span(i, geom.kernel_h, geom.stride_h, geom.pad_top, in_h);
        let out_row = &mut out[i * out_w..(i + 1) * out_w];
        out_row.copy_from_slice(&row_max[first * out_w..(first + 1) * out_w]);
        for r in first + 1..end {
            for (best, &value) in out_row.iter_mut().zip(&row_max[r * out_w..(r + 1) * out_w]) {
                *best = if value > *best { value } else { *best };
            }
        }
    }
}

/// [`row_maxima`] for 3-wide windows at stride 2: the row's values split into
/// `even[j] = row[2j]` and `odd[j] = row[2j + 1]` (in `split`), then window `j`
/// is `even[j], odd[j], even[j + 1]` in that order: the same first maximum.
#[inline(always)]
fn row_maxima_3x2<T: Element>(row: &[T], maxima: &mut [T], split: &mut [T]) {
    let n = maxima.len();
    debug_assert!(row.len() > 2 * n, "a window lies inside its row");
    let (even, odd) = split.split_at_mut(n + 1);
    let odd = &mut odd[..n];
    for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(row[..2 * n].chunks_exact(2)) {
        (*e, *o) = (pair[0], pair[1]);
    }
    even[n] = row[2 * n];
    for (j, best) in maxima.iter_mut().enumerate() {
        let mut value = even[j];
        value = if odd[j] > value { odd[j] } else { value };
        *best = if even[j + 1] > value { even[j + 1] } else { value };
    }
}

/// The output columns whose windows lie wholly inside the row:
/// `[inner_first, inner_end)`.
fn inner_columns(geom: &WindowGeometry) -> (usize, usize) {
    let (in_w, out_w, kernel, stride, pad) = (geom.in_w, geom.out_w, geom.kernel_w, geom.stride_w, geom.pad_left);
    let inner_first = pad.div_ceil(stride).min(out_w);
    let inner_end = match (in_w + pad).checked_sub(kernel) {
        Some(room) => (room / stride + 1).clamp(inner_first, out_w),
        None => inner_first,
    };
    (inner_first, inner_end)
}

/// [`first_maximum`] and its column, for a window starting at column `first`.
#[inline(always)]
fn first_maximum_at<T: Element>(window: &[T], first: usize) -> (T, u32) {
    let (mut best, mut offset) = (window[0], 0u32);
    for (c, &value) in window.iter().enumerate().skip(1) {
        let better = value > best; // strict: ties keep the first; NaN never wins
        (best, offset) = if better { (value, c as u32) } else { (best, offset) };
    }
    (best, first as u32 + offset)
}

/// [`first_maximum_at`] of each window `j` starting at column `from + j * S`,
/// window and stride known at compile time (what [`row_maxima`] does for the
/// values alone).
fn row_maxima_at<T: Element, const K: usize, const S: usize>(
    row: &[T],
    from: usize,
    maxima: &mut [T],
    columns: &mut [u32],
) {
    for (j, (best, column)) in maxima.iter_mut().zip(columns.iter_mut()).enumerate() {
        let first = from + j * S;
        let window: &[T; K] = row[first..first + K].try_into().expect("a window lies inside its row");
        (*best, *column) = first_maximum_at(window, first);
    }
}

/// The first maximum of `window` (strict `>`: ties keep the first, NaN never
/// wins unless first).
fn first_maximum<T: Element>(window: &[T]) -> T {
    window[1..].iter().fold(window[0], |best, &value| if value > best { value } else { best })
}

/// `maxima[j] = first_maximum(row[j * S..j * S + K])`, window and stride known
/// at compile time.
fn row_maxima<T: Element, const K: usize, const S: usize>(row: &[T], maxima: &mut [T]) {
    for (j, best) in maxima.iter_mut().enumerate() {
        let window: &[T; K] = row[j * S..j * S + K].try_into().expect("a window lies inside its row");
        *best = first_maximum(window);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Padding;

    #[test]
    fn windows_are_clipped_to_the_image() {
        // 3 wide, stride 2, 1 before: windows [-1, 2) -> [0, 2), [1, 4) -> [1, 3), [3, 6) -> [3, 5) at len 5
        assert_eq!(span(0, 3, 2, 1, 5), (0, 2));
        assert_eq!(span(1, 3, 2, 1, 5), (1, 4));
        assert_eq!(span(2, 3, 2, 1, 5), (3, 5));
    }

    #[test]
    fn resnets_stem_pool_matches_the_row_major_loop() {
        // (The layer, which dispatches here, is held to maxpool_naive in tests/suite/kernels.rs.)
        let geom = WindowGeometry::new(1, 7, 6, (3, 3), (2, 2), Padding::Explicit(1, 1)).unwrap();
        let plane: Vec<f32> = (0..42).map(|v| ((v * 13) % 5) as f32).collect(); // with ties
        let (mut out, mut argmax) = (vec![0.0; geom.out_pixels()], vec![0u32; geom.out_pixels()]);
        pool_plane_separable(&geom, &plane, &mut out, &mut argmax, &mut (Vec::new(), Vec::new()));
        for i in 0..geom.out_h {
            for j in 0..geom.out_w {
                let mut winner = usize::MAX;
                for r in (2 * i).saturating_sub(1)..(2 * i + 2).min(7) {
                    for c in (2 * j).saturating_sub(1)..(2 * j + 2).min(6) {
                        if winner == usize::MAX || plane[r * 6 + c] > plane[winner] {
                            winner = r * 6 + c;
                        }
                    }
                }
                assert_eq!(argmax[i * geom.out_w + j] as usize, winner, "window ({i}, {j})");
                assert_eq!(out[i * geom.out_w + j], plane[winner]);
            }
        }
    }
}
