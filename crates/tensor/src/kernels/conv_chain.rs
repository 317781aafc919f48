//! Two convolutions in a row, in bands: inference's
//! `conv -> ReLU -> conv (Winograd) -> ReLU -> max-pool` with the first
//! convolution's output made a band of rows at a time, each band read by the
//! second while it is in cache, never written whole.
//!
//! ```text
//! for each image, for each band of BAND_TILE_ROWS tile rows of the second convolution:
//!     band   (C1, 4 * BAND_TILE_ROWS + 2, W1) = relu(conv_1(image) + b_1), rows r0..r1 only
//!     pooled (K, rows / pool, OW / pool)      = maxpool(relu(conv_2(band) + b_2)), Winograd
//! ```
//!
//! Why: `baseline`'s conv1 writes 32 x 222 x 222 floats an image (6.3 MB,
//! 200 MB a batch of 32) that conv2 reads straight back, both from memory; a
//! band (18 rows, 511 KB) stays in a core's L2 between them. Consecutive bands
//! share two input rows of the second convolution, which the first computes
//! twice (1 row in 9 at 4 tile rows a band).
//!
//! The values are those of the layers run one by one, bit for bit: each row
//! of the first convolution is the same GEMM (`conv_tiled::forward_bands`),
//! each tile of the second the same transforms and products
//! ([`relu_maxpool_in_bands`]); `tests/suite/engine.rs` holds `predict`
//! to the unfused forward pass.

use crate::element::Element;
use crate::geometry::WindowGeometry;
use crate::kernels::conv_tiled::{self, ConvWorkspace};
use crate::kernels::winograd::correlate::{correlate_group, correlate_scratch_len, Correlation};
use crate::kernels::winograd::passes::{forward_shape, WinogradWorkspace};
use crate::kernels::winograd::tiles::Shape;
use crate::kernels::winograd::TILE;
use rayon::prelude::*;

/// `pooled := maxpool_pool(relu(W2 ⋆ relu(W1 ⋆ input + b1) + b2))` for a batch:
/// `first` (any tiled convolution, its ReLU fused) feeding `second` (3x3,
/// stride 1, unpadded: Winograd) and its ReLU and `pool x pool` max-pool
/// (2, or 4 for two 2x2 pools). `input` `(N, C, H, W)`, `pooled`
/// `(N, K, OH2 / pool, OW2 / pool)`.
pub fn conv_into_winograd_relu_maxpool<T: Element>(
    first: (&WindowGeometry, &[T], &[T], &mut ConvWorkspace<T>),
    second: (&WindowGeometry, &[T], &[T], &mut WinogradWorkspace<T>),
    pool: usize,
    input: &[T],
    pooled: &mut [T],
) {
    let (geom1, weight1, bias1, workspace1) = first;
    let (geom2, weight2, bias2, workspace2) = second;
    assert_eq!(input.len() % geom1.in_len(), 0, "conv_into_winograd_relu_maxpool: input length");
    assert!(
        (geom2.in_channels, geom2.in_h, geom2.in_w) == (bias1.len(), geom1.out_h, geom1.out_w),
        "conv_into_winograd_relu_maxpool: the second convolution does not take the first's output"
    );
    let batch = input.len() / geom1.in_len();
    let rows_of = conv_tiled::forward_bands(geom1, weight1, bias1, true, workspace1);
    let in_len = geom1.in_len();
    let make_rows =
        |image: usize, rows: (usize, usize), band: &mut [T]| rows_of(&input[image * in_len..][..in_len], rows, band);
    relu_maxpool_in_bands(geom2, weight2, bias2, pool, batch, &make_rows, pooled, workspace2);
}

/// Tile rows per band of [`relu_maxpool_in_bands`]: 4 tile rows are 18 input
/// rows, for `baseline`'s conv2 (32 channels, 222 wide) 511 KB, which stays in
/// a core's L2 from the layer that writes it to the transform that reads it.
pub const BAND_TILE_ROWS: usize = 4;

/// `make_rows(image, (r0, r1), band)`: input rows `r0..r1` of one image into
/// `band` `(C, r1 - r0, W)` ([`relu_maxpool_in_bands`]).
pub type MakeRows<'a, T> = dyn Fn(usize, (usize, usize), &mut [T]) + Sync + 'a;

/// [`conv2d_forward_winograd_relu_maxpool`] on an input that is never held
/// whole: `make_rows(image, (r0, r1), band)` writes input rows `r0..r1` of
/// image `image` as `(C, r1 - r0, W)` (the layer before, a band at a time),
/// and each band of [`BAND_TILE_ROWS`] tile rows is correlated, ReLU'd and
/// pooled while it is in cache. The same tiles through the same kernels: the
/// same bits as the whole-input pass. The convolution must be unpadded (a
/// band's rows are all inside the input); `pooled` `(N, K, OH / pool, OW / pool)`.
///
/// [`conv2d_forward_winograd_relu_maxpool`]: crate::kernels::winograd::passes::conv2d_forward_winograd_relu_maxpool
#[allow(clippy::too_many_arguments)]
pub fn relu_maxpool_in_bands<T: Element>(
    geom: &WindowGeometry,
    weight: &[T],
    bias: &[T],
    pool: usize,
    batch: usize,
    make_rows: &MakeRows<'_, T>,
    pooled: &mut [T],
    workspace: &mut WinogradWorkspace<T>,
) {
    let pass = "relu_maxpool_in_bands";
    assert!(pool == 2 || pool == 4, "{pass}: pool {pool} (2 or 4)");
    let shape = forward_shape(geom, weight, bias, batch * geom.in_len(), pass);
    assert!(geom.pad_top == 0 && geom.pad_left == 0 && geom.out_h + 2 == geom.in_h, "{pass}: padded input");
    let (pooled_w, k) = (shape.out_w / pool, shape.out_channels);
    let pooled_plane = (shape.out_h / pool) * pooled_w;
    assert_eq!(pooled.len(), batch * k * pooled_plane, "{pass}: pooled length");
    if pooled.is_empty() {
        return;
    }
    let k_padded = shape.out_channels_padded();
    workspace.forward_weights(weight, k, shape.channels, k_padded);
    workspace.scratch.ensure_threads();
    let (u, scratch) = (&workspace.transformed_weight, &workspace.scratch);
    let (tiles_y, _) = shape.tiles();
    let bands = tiles_y.div_ceil(BAND_TILE_ROWS);
    let work_len = correlate_scratch_len(&shape);
    let band_in_len = shape.channels * (TILE * BAND_TILE_ROWS + 2) * shape.width;
    let band_out_len = k * (TILE * BAND_TILE_ROWS / pool) * pooled_w;
    // band `b` of `image`: its input rows made, correlated and pooled into the
    // band's part of `buf` `(K, rows, OW / pool)`; returns its first pooled row
    // and the length of that part
    let run_band = |image: usize, b: usize, buf: &mut [T]| -> (usize, usize) {
        let tile_rows = (b * BAND_TILE_ROWS, ((b + 1) * BAND_TILE_ROWS).min(tiles_y));
        let out_rows = (tile_rows.0 * TILE, (tile_rows.1 * TILE).min(shape.out_h));
        let in_rows = (out_rows.0, out_rows.1 + 2);
        let pooled_len = k * ((out_rows.1 - out_rows.0) / pool) * pooled_w;
        if pooled_len == 0 {
            return (out_rows.0 / pool, 0); // a last band shorter than a window: nothing to pool
        }
        let (work, rest) = buf.split_at_mut(work_len);
        let (band_in, band_out) = rest.split_at_mut(band_in_len);
        let band_in = &mut band_in[..shape.channels * (in_rows.1 - in_rows.0) * shape.width];
        make_rows(image, in_rows, band_in);
        let band_shape = Shape { height: in_rows.1 - in_rows.0, out_h: out_rows.1 - out_rows.0, ..shape };
        let band_out = &mut band_out[..pooled_len];
        let tiles = (0, tile_rows.1 - tile_rows.0);
        let correlation = Correlation::new(&band_shape, u, Some(bias), true, pool);
        correlate_group(&correlation, tiles, band_in, band_out, work);
        (out_rows.0 / pool, pooled_len)
    };
    // the band's pooled rows `(K, rows, OW / pool)` into the image's planes from row `first`
    let place = |band_out: &[T], first: usize, image_out: &mut [T]| {
        let rows_len = band_out.len() / k;
        if rows_len == 0 {
            return;
        }
        for (channel, rows) in band_out.chunks_exact(rows_len).enumerate() {
            image_out[channel * pooled_plane + first * pooled_w..][..rows_len].copy_from_slice(rows);
        }
    };
    let scratch_len = work_len + band_in_len + band_out_len;
    let pooled_from = work_len + band_in_len;
    if batch >= rayon::current_num_threads() {
        pooled.par_chunks_mut(k * pooled_plane).enumerate().for_each(|(image, image_out)| {
            scratch.with(scratch_len, |buf| {
                for b in 0..bands {
                    let (first, len) = run_band(image, b, buf);
                    place(&buf[pooled_from..][..len], first, image_out);
                }
            })
        });
    } else {
        // fewer images than threads (a `predict` of one image): the bands in parallel
        let done: Vec<(usize, Vec<T>)> = (0..batch * bands)
            .into_par_iter()
            .map(|task| {
                scratch.with(scratch_len, |buf| {
                    let (first, len) = run_band(task / bands, task % bands, buf);
                    (first, buf[pooled_from..][..len].to_vec())
                })
            })
            .collect();
        for (task, (first, band_out)) in done.into_iter().enumerate() {
            place(&band_out, first, &mut pooled[(task / bands) * k * pooled_plane..][..k * pooled_plane]);
        }
    }
}
