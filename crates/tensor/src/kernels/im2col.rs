//! im2col and col2im: the gather that turns a convolution into a matrix
//! product, and its adjoint, which scatters the column gradient back onto the
//! input (see `layers/conv2d.rs` for the math and a worked example).
//!
//! ## The contract
//!
//! For one image `x` `(C, H, W)` and output rows `row_start..row_end`, the column
//! matrix `col` is `(C*KH*KW, (row_end - row_start) * OW)`, row-major; entry
//! `[(c*KH + ki)*KW + kj, (i - row_start)*OW + j]` holds
//! `x[c, i*s + ki - pt, j*s + kj - pl]`, or 0 in the padding. [`col2im`] adds
//! each entry back onto that pixel. The two are adjoint linear maps:
//! `<im2col(x), c> = <x, col2im(c)>` for every `x` and `c`.
//!
//! [`im2col_naive`] and [`col2im_naive`] are the plain twins, one element at a
//! time straight from the definition; `tests/suite/kernels.rs` holds the fast ones to
//! them, and to the adjoint identity.
//!
//! ```
//! use convnet_tensor::kernels::im2col::im2col;
//! use convnet_tensor::WindowGeometry;
//! use convnet_tensor::Padding;
//! let geom = WindowGeometry::new(1, 3, 3, (2, 2), (1, 1), Padding::Valid).unwrap();
//! let x = [1.0f32, 2., 3., 4., 5., 6., 7., 8., 9.];
//! let mut col = vec![0.0f32; 4 * 4];
//! im2col(&geom, &x, 0, geom.out_h, &mut col);
//! assert_eq!(col, [1., 2., 4., 5., 2., 3., 5., 6., 4., 5., 7., 8., 5., 6., 8., 9.]);
//! ```

use crate::element::Element;
use crate::geometry::WindowGeometry;
use crate::kernels::cpu::simd_variant;

/// Builds output rows `row_start..row_end` of the column matrix of one image.
///
/// - `image` is `(C, H, W)`.
/// - `col` is `(C*KH*KW, (row_end - row_start) * OW)`, row-major; entry
///   `[(c*KH + ki)*KW + kj, (i - row_start)*OW + j]` receives
///   `x[c, i*s + ki - pt, j*s + kj - pl]`, or 0 in the padding.
///
/// Why it is fast: for each (c, ki, kj, i) the inner loop is a run of output
/// columns whose inputs are `s` apart; the in-bounds run is computed once, so
/// the loop body has no branch, and at stride 1 it is a plain `memcpy`.
pub fn im2col<T: Element>(geom: &WindowGeometry, image: &[T], row_start: usize, row_end: usize, col: &mut [T]) {
    im2col_strided(geom, image, row_start, row_end, col, (row_end - row_start) * geom.out_w);
}

simd_variant! {
    /// [`im2col`] into rows `ld_col` apart: `col[r * ld_col + (i - row_start) * OW + j]`
    /// (several images' columns side by side in one matrix, for one GEMM over all).
    /// With AVX2 the stride-2 runs (ResNet's stem) take every other value of the
    /// input row in vectors (the same values: a copy).
    pub fn im2col_strided = im2col_strided_body, "avx2,fma", avx2_fma;
    (geom: &WindowGeometry, image: &[T], row_start: usize, row_end: usize, col: &mut [T], ld_col: usize)
}

#[inline(always)]
fn im2col_strided_body<T: Element>(
    geom: &WindowGeometry,
    image: &[T],
    row_start: usize,
    row_end: usize,
    col: &mut [T],
    ld_col: usize,
) {
    let out_w = geom.out_w;
    let tile_cols = (row_end - row_start) * out_w;
    assert!(image.len() >= geom.in_len(), "im2col: image too short");
    assert!(ld_col >= tile_cols, "im2col: ld_col {ld_col} < {tile_cols}");
    assert!(col.len() >= (geom.col_rows() - 1) * ld_col + tile_cols, "im2col: col too short");
    for c in 0..geom.in_channels {
        let channel = &image[c * geom.in_h * geom.in_w..(c + 1) * geom.in_h * geom.in_w];
        for ki in 0..geom.kernel_h {
            for kj in 0..geom.kernel_w {
                let r = (c * geom.kernel_h + ki) * geom.kernel_w + kj;
                let col_row = &mut col[r * ld_col..r * ld_col + tile_cols];
                let (first, end) = geom.valid_out_cols(kj);
                for i in row_start..row_end {
                    let dst = &mut col_row[(i - row_start) * out_w..(i - row_start + 1) * out_w];
                    let Some(ih) = geom.input_row(i, ki) else {
                        dst.fill(T::zero());
                        continue;
                    };
                    let src_row = &channel[ih * geom.in_w..(ih + 1) * geom.in_w];
                    dst[..first].fill(T::zero());
                    dst[end..].fill(T::zero());
                    if first < end {
                        // first input column read by this run
                        let iw0 = first * geom.stride_w + kj - geom.pad_left;
                        if geom.stride_w == 1 {
                            dst[first..end].copy_from_slice(&src_row[iw0..iw0 + (end - first)]);
                        } else if geom.stride_w == 2 {
                            // pairs of input values, the first of each (a form the compiler vectorises)
                            let run = &mut dst[first..end];
                            let last = run.len() - 1;
                            let pairs = src_row[iw0..iw0 + 2 * last].chunks_exact(2);
                            for (value, pair) in run[..last].iter_mut().zip(pairs) {
                                *value = pair[0];
                            }
                            run[last] = src_row[iw0 + 2 * last];
                        } else {
                            for (offset, value) in dst[first..end].iter_mut().enumerate() {
                                *value = src_row[iw0 + offset * geom.stride_w];
                            }
                        }
                    }
                }
            }
        }
    }
}

simd_variant! {
    /// The adjoint of [`im2col`]: *adds* each entry of `col` (laid out as in
    /// [`im2col`], for output rows `row_start..row_end`) into the image pixel it was
    /// read from. Entries that were padding are dropped. `image_grad` is `(C, H, W)`
    /// and is accumulated into, never cleared.
    ///
    /// With AVX2 the additions run 8 floats wide instead of the 4 of the
    /// baseline x86-64 target (same additions, same order, same bits).
    ///
    /// The rows of `col` lie `ld_col` apart (at least the tile's width; more when
    /// several images' columns sit side by side): [`col2im`] is the common case.
    pub fn col2im_strided = col2im_body, "avx2", avx2;
    (geom: &WindowGeometry, col: &[T], ld_col: usize, row_start: usize, row_end: usize, image_grad: &mut [T])
}

/// [`col2im_strided`] with rows of `col` one tile wide apart (`col` laid out as
/// [`im2col`] writes it).
pub fn col2im<T: Element>(geom: &WindowGeometry, col: &[T], row_start: usize, row_end: usize, image_grad: &mut [T]) {
    col2im_strided(geom, col, (row_end - row_start) * geom.out_w, row_start, row_end, image_grad);
}

#[inline(always)]
fn col2im_body<T: Element>(
    geom: &WindowGeometry,
    col: &[T],
    ld_col: usize,
    row_start: usize,
    row_end: usize,
    image_grad: &mut [T],
) {
    let out_w = geom.out_w;
    let tile_cols = (row_end - row_start) * out_w;
    assert!(image_grad.len() >= geom.in_len(), "col2im: image too short");
    assert!(ld_col >= tile_cols, "col2im: rows of col overlap");
    assert!(col.len() + ld_col >= geom.col_rows() * ld_col + tile_cols, "col2im: col too short");
    for c in 0..geom.in_channels {
        let channel = &mut image_grad[c * geom.in_h * geom.in_w..(c + 1) * geom.in_h * geom.in_w];
        for ki in 0..geom.kernel_h {
            for kj in 0..geom.kernel_w {
                let r = (c * geom.kernel_h + ki) * geom.kernel_w + kj;
                let col_row = &col[r * ld_col..r * ld_col + tile_cols];
                let (first, end) = geom.valid_out_cols(kj);
                if first >= end {
                    continue;
                }
                for i in row_start..row_end {
                    let Some(ih) = geom.input_row(i, ki) else { continue };
                    let src = &col_row[(i - row_start) * out_w..(i - row_start + 1) * out_w];
                    let dst_row = &mut channel[ih * geom.in_w..(ih + 1) * geom.in_w];
                    let iw0 = first * geom.stride_w + kj - geom.pad_left;
                    // in the forward pass this was `col = x[iw0 + offset*s]`,
                    // so now `dx[iw0 + offset*s] += dcol`
                    if geom.stride_w == 1 {
                        // contiguous on both sides: the compiler vectorises this
                        for (dx, &value) in dst_row[iw0..iw0 + (end - first)].iter_mut().zip(&src[first..end]) {
                            *dx += value;
                        }
                    } else {
                        for (offset, &value) in src[first..end].iter().enumerate() {
                            dst_row[iw0 + offset * geom.stride_w] += value;
                        }
                    }
                }
            }
        }
    }
}

/// Plain twin of [`im2col`]: one element at a time, straight from the definition.
pub fn im2col_naive<T: Element>(geom: &WindowGeometry, image: &[T], row_start: usize, row_end: usize, col: &mut [T]) {
    let tile_cols = (row_end - row_start) * geom.out_w;
    for c in 0..geom.in_channels {
        for ki in 0..geom.kernel_h {
            for kj in 0..geom.kernel_w {
                let r = (c * geom.kernel_h + ki) * geom.kernel_w + kj;
                for i in row_start..row_end {
                    for j in 0..geom.out_w {
                        let value = match (geom.input_row(i, ki), geom.input_col(j, kj)) {
                            (Some(ih), Some(iw)) => image[(c * geom.in_h + ih) * geom.in_w + iw],
                            _ => T::zero(),
                        };
                        col[r * tile_cols + (i - row_start) * geom.out_w + j] = value;
                    }
                }
            }
        }
    }
}

/// Plain twin of [`col2im`].
pub fn col2im_naive<T: Element>(
    geom: &WindowGeometry,
    col: &[T],
    row_start: usize,
    row_end: usize,
    image_grad: &mut [T],
) {
    let tile_cols = (row_end - row_start) * geom.out_w;
    for c in 0..geom.in_channels {
        for ki in 0..geom.kernel_h {
            for kj in 0..geom.kernel_w {
                let r = (c * geom.kernel_h + ki) * geom.kernel_w + kj;
                for i in row_start..row_end {
                    for j in 0..geom.out_w {
                        if let (Some(ih), Some(iw)) = (geom.input_row(i, ki), geom.input_col(j, kj)) {
                            image_grad[(c * geom.in_h + ih) * geom.in_w + iw] +=
                                col[r * tile_cols + (i - row_start) * geom.out_w + j];
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Padding;

    #[test]
    fn the_plain_body_of_col2im_matches_its_twin() {
        // col2im runs compiled for AVX2 on most CPUs; its plain body is what
        // other CPUs run: held to the naive twin here
        let geom = WindowGeometry::new(2, 7, 9, (3, 2), (1, 2), Padding::Same).unwrap();
        let col: Vec<f64> = (0..geom.col_rows() * geom.out_pixels()).map(|v| ((v * 7) % 11) as f64 - 5.0).collect();
        let (mut body, mut naive) = (vec![1.0; geom.in_len()], vec![1.0; geom.in_len()]);
        col2im_body(&geom, &col, geom.out_pixels(), 0, geom.out_h, &mut body);
        col2im_naive(&geom, &col, 0, geom.out_h, &mut naive);
        assert_eq!(body, naive);
    }
}
