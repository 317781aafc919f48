//! One image's output rows of the tiled forward pass
//! ([`crate::kernels::conv_tiled`]): by im2col + GEMM on tiles of rows, or, for
//! a stride-1 convolution without padding, by a GEMM that reads its columns
//! straight from the image.

use crate::element::Element;
use crate::geometry::WindowGeometry;
use crate::kernels::conv_groups::{scale_shift, Finish};
use crate::kernels::gemm_packed::{self, gemm_packed, gemm_packed_rows, PackedA};
use crate::kernels::im2col::im2col;

/// Output rows `rows.0..rows.1` of one image into `out` `(OC, rows.1 - rows.0, OW)`
/// (planes of those rows only; the whole output when they are all), in tiles of
/// `rows_per_tile` rows, each finished (`finish`: bias, ReLU or batchnorm) while
/// in cache, as [`conv2d_forward_tiled`] describes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_rows<T: Element>(
    geom: &WindowGeometry,
    packed_weight: &PackedA<T>,
    finish: &Finish<'_, T>,
    rows_per_tile: usize,
    image: &[T],
    rows: (usize, usize),
    out: &mut [T],
    col_buf: &mut [T],
) {
    if reads_columns_in_place(geom) {
        forward_rows_in_place(geom, packed_weight, finish, image, rows, out);
    } else {
        forward_rows_by_im2col(geom, packed_weight, finish, rows_per_tile, image, rows, out, col_buf);
    }
}

/// [`forward_rows`] by im2col: each tile's columns built in `col_buf`, one GEMM
/// per tile, then the epilogue (bias, ReLU or batchnorm) over the tile while it
/// is in cache.
#[allow(clippy::too_many_arguments)]
fn forward_rows_by_im2col<T: Element>(
    geom: &WindowGeometry,
    packed_weight: &PackedA<T>,
    finish: &Finish<'_, T>,
    rows_per_tile: usize,
    image: &[T],
    rows: (usize, usize),
    out: &mut [T],
    col_buf: &mut [T],
) {
    let out_plane = (rows.1 - rows.0) * geom.out_w;
    for row_start in (rows.0..rows.1).step_by(rows_per_tile) {
        let row_end = (row_start + rows_per_tile).min(rows.1);
        let tile_cols = (row_end - row_start) * geom.out_w;
        let first_col = (row_start - rows.0) * geom.out_w;
        // col (C*KH*KW, tile_cols): built in col_buf, or the input itself for a 1x1 convolution
        let (col, ld_col) = columns(geom, image, (row_start, row_end), col_buf);
        // Y[:, tile] (OC, tile_cols) = W (OC, C*KH*KW) * col (C*KH*KW, tile_cols)
        gemm_packed(packed_weight, tile_cols, col, ld_col, T::zero(), &mut out[first_col..], out_plane);
        // + b (and the fused ReLU, max(y, 0), or the batchnorm) while the tile is still in cache
        for o in 0..finish.bias.len() {
            finish.apply(o, &mut out[o * out_plane + first_col..][..tile_cols]);
        }
    }
}

/// Whether the forward pass reads its columns straight from the image
/// ([`forward_rows_in_place`]): a stride-1 convolution without padding (its
/// columns are then runs of input rows), not 1x1 (whose columns are the input
/// already), on a CPU with the kernel for it.
fn reads_columns_in_place(geom: &WindowGeometry) -> bool {
    // no padding on any side (Keras' `same` at stride 1 pads only right and below when the kernel is even)
    let unpadded = geom.pad_top == 0
        && geom.pad_left == 0
        && geom.out_h + geom.kernel_h == geom.in_h + 1
        && geom.out_w + geom.kernel_w == geom.in_w + 1;
    let stride_1 = geom.stride_h == 1 && geom.stride_w == 1;
    unpadded && stride_1 && !geom.is_pointwise() && gemm_packed::rows_kernel_available()
}

/// [`forward_rows`] without im2col: one GEMM per output row `i`, whose column
/// row `(c, ki, kj)` is input row `i + ki` of channel `c` from column `kj`
/// (`OW` long), read where it lies, with the bias and ReLU applied as each
/// block leaves the registers ([`gemm_packed_rows`]). The same sums in the same
/// order as im2col + GEMM + bias pass: the same bits.
///
/// Why: `baseline`'s conv1 has a depth of only 27 (3 channels x 3 x 3), so
/// building the columns (27 x 49,284 floats an image) and a separate pass over
/// the 6.3 MB output for the bias cost as much as the multiply-adds.
fn forward_rows_in_place<T: Element>(
    geom: &WindowGeometry,
    packed_weight: &PackedA<T>,
    finish: &Finish<'_, T>,
    image: &[T],
    rows: (usize, usize),
    out: &mut [T],
) {
    let (in_w, plane) = (geom.in_w, geom.in_h * geom.in_w);
    // where column row (c, ki, kj) starts, from the first input row of the output row
    let mut row_starts = Vec::with_capacity(geom.col_rows());
    for c in 0..geom.in_channels {
        for ki in 0..geom.kernel_h {
            row_starts.extend((0..geom.kernel_w).map(|kj| c * plane + ki * in_w + kj));
        }
    }
    let out_plane = (rows.1 - rows.0) * geom.out_w;
    for i in rows.0..rows.1 {
        // Y[:, row i] (OC, OW) = W (OC, C*KH*KW) * col_i (C*KH*KW, OW) + b
        let out_row = &mut out[(i - rows.0) * geom.out_w..];
        let (bias, relu) = (finish.bias, finish.relu);
        gemm_packed_rows(packed_weight, geom.out_w, &image[i * in_w..], &row_starts, out_row, out_plane, bias, relu);
        // then the batchnorm (and its ReLU) on the row of each channel, still in cache
        if let Some(batchnorm) = finish.batchnorm {
            for (o, &(scale, shift)) in batchnorm.affine.iter().enumerate() {
                scale_shift(&mut out_row[o * out_plane..][..geom.out_w], scale, shift, batchnorm.relu);
            }
        }
    }
}

/// The column matrix of output rows `rows.0..rows.1` of `image` and its row
/// stride: built by im2col in `col_buf` (`(C*KH*KW, tile)`, stride the tile's
/// width), or, for a pointwise convolution ([`WindowGeometry::is_pointwise`]),
/// the image itself from the tile's first pixel (stride `H*W`): no copy.
pub(crate) fn columns<'a, T: Element>(
    geom: &WindowGeometry,
    image: &'a [T],
    (row_start, row_end): (usize, usize),
    col_buf: &'a mut [T],
) -> (&'a [T], usize) {
    if geom.is_pointwise() {
        return (&image[row_start * geom.out_w..], geom.out_pixels());
    }
    im2col(geom, image, row_start, row_end, col_buf);
    (col_buf, (row_end - row_start) * geom.out_w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv_groups::BatchnormAffine;
    use crate::kernels::gemm::Trans;

    /// Columns read in place (a stride-1 unpadded convolution on an AVX-512
    /// CPU) give the bits of im2col + GEMM + the bias pass, with and without the
    /// ReLU or a batchnorm, for whole images and for a part of an image's rows.
    #[test]
    fn columns_read_in_place_equal_im2col_bit_for_bit() {
        use crate::geometry::Padding;
        use crate::kernels::testing::random;
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        for (channels, out_channels, kernel, size) in [(3, 32, 3, (30, 57)), (5, 9, 2, (7, 7)), (1, 4, 5, (12, 9))] {
            let geom = WindowGeometry::new(channels, size.0, size.1, (kernel, kernel), (1, 1), Padding::Valid).unwrap();
            let (image, weight, bias): (Vec<f32>, Vec<f32>, Vec<f32>) = (
                random(&mut rng, geom.in_len()),
                random(&mut rng, out_channels * geom.col_rows()),
                random(&mut rng, out_channels),
            );
            let mut packed = PackedA::new();
            packed.pack(Trans::No, out_channels, geom.col_rows(), &weight, geom.col_rows());
            let affine: Vec<(f32, f32)> =
                random::<f32>(&mut rng, 2 * out_channels).chunks(2).map(|p| (p[0], p[1])).collect();
            let batchnorm = |relu| Some(BatchnormAffine { affine: &affine, relu });
            let cases = [
                (false, None, (0, geom.out_h)),
                (true, None, (0, geom.out_h)),
                (true, None, (2, geom.out_h - 1)),
                (false, batchnorm(true), (0, geom.out_h)),
                (false, batchnorm(false), (1, geom.out_h)),
            ];
            for (relu, batchnorm, rows) in cases {
                let len = out_channels * (rows.1 - rows.0) * geom.out_w;
                let (mut in_place, mut by_im2col) = (vec![f32::NAN; len], vec![f32::NAN; len]);
                let finish = Finish::new(&bias, relu, batchnorm);
                forward_rows_in_place(&geom, &packed, &finish, &image, rows, &mut in_place);
                let mut col_buf = vec![0.0; geom.col_rows() * 2 * geom.out_w];
                forward_rows_by_im2col(&geom, &packed, &finish, 2, &image, rows, &mut by_im2col, &mut col_buf);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&in_place), bits(&by_im2col), "{geom:?} relu {relu} {batchnorm:?} rows {rows:?}");
            }
        }
    }
}
