//! The forward correlation of the Winograd path, F(4x4, 3x3) on spans of
//! tiles: the forward pass and the input gradient are both this
//! ([`super::passes`], read it first, holds the passes and why they are fast).

use super::planes::{
    fits_plane, slab, slab_to_plane, transform_input_channels, transform_output_plane, transform_output_plane_maxpool,
};
use super::point_gemm::point_gemm;
use super::tiles::{segments, spans, Block, Layout, Shape, LANES, POINTS, ROW_BLOCK, SPAN_STRIDE, TILE_BLOCK};
use super::workspace::{transform_weights, WinogradWorkspace};
use super::TILE;
use crate::element::Element;
use crate::kernels::conv_groups::ImageEpilogue;
use crate::kernels::cpu::simd_variant;
use crate::kernels::parts::{in_parts, parts_per_image};
use rayon::prelude::*;

/// What a Winograd correlation computes, and how: `u` the transformed weights
/// `(36, u_rows, C)` of `shape` (from its first output channel's row;
/// `u_rows`: K4, or more when `shape` is a range of a layer's output channels,
/// [`Correlation::channels`]); `bias` (or none, for the input gradient), then
/// `relu`, then with `pool` 2 or 4 (after a ReLU) the maxima of `pool x pool`
/// windows; `gather`: the tiles' transforms gathered tile by tile
/// ([`super::gathered`], the same bits as along tile rows).
#[derive(Clone, Copy)]
pub(crate) struct Correlation<'a, T> {
    pub(crate) shape: &'a Shape,
    pub(crate) u: &'a [T],
    pub(crate) u_rows: usize,
    pub(crate) bias: Option<&'a [T]>,
    pub(crate) relu: bool,
    pub(crate) pool: usize,
    pub(crate) gather: bool,
}

impl<'a, T: Element> Correlation<'a, T> {
    /// The correlation of `shape`, its tiles gathered where that
    /// [`super::gathered::applies`] (small maps, no pooling).
    pub(crate) fn new(shape: &'a Shape, u: &'a [T], bias: Option<&'a [T]>, relu: bool, pool: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        let gather = super::gathered::applies::<T>(shape, pool);
        #[cfg(not(target_arch = "x86_64"))]
        let gather = false;
        Correlation { shape, u, u_rows: shape.out_channels_padded(), bias, relu, pool, gather }
    }

    /// This correlation for output channels `k0..k1` only (`k0` a multiple of
    /// [`ROW_BLOCK`]), `part` being its shape with `k1 - k0` output channels:
    /// their rows of `U` and their biases, into `k1 - k0` planes. Each value
    /// is the same sum as in the whole correlation (the point GEMM sums every
    /// row on its own), so the same bits.
    pub(crate) fn channels(&self, part: &'a Shape, (k0, k1): (usize, usize)) -> Self {
        assert!(k0.is_multiple_of(ROW_BLOCK) && k1 <= self.shape.out_channels && part.out_channels == k1 - k0);
        let u = &self.u[k0 * self.shape.channels..];
        Correlation { shape: part, u, bias: self.bias.map(|bias| &bias[k0..k1]), ..*self }
    }
}

/// A group of images of the Winograd correlation, their tiles in shared spans
/// ([`spans`]): `output (G, K, OH, OW) := W ⋆ input (G, C, H, W) (+ bias, ReLU)`;
/// with `pool` 2 or 4 `output` is `(G, K, OH / pool, OW / pool)`, and the
/// full-size output is never written. With one image, only the tile rows
/// `tile_rows.0..tile_rows.1` may be computed, into planes whose first row is
/// that of tile row `tile_rows.0` ([`part_rows`] rows each). Each output value
/// is the same sum in the same order whatever the group: the point GEMM sums
/// every column on its own.
#[inline(always)]
fn correlate_group_body<T: Element>(
    correlation: &Correlation<'_, T>,
    tile_rows: (usize, usize),
    images: &[T],
    images_out: &mut [T],
    buf: &mut [T],
) {
    let Correlation { shape, u, u_rows, bias, relu, pool, gather, .. } = *correlation;
    let (channels, k_padded) = (shape.channels, shape.out_channels_padded());
    let in_len = channels * shape.height * shape.width;
    let group = images.len() / in_len;
    let layout = Layout::new(POINTS * channels * SPAN_STRIDE, POINTS * k_padded * SPAN_STRIDE);
    // the output planes of this part: its rows only, tile row `tile_rows.0` first
    let out_shape = Shape { out_h: part_rows(shape, tile_rows), ..*shape };
    let out_plane = (out_shape.out_h / pool) * (shape.out_w / pool);
    let out_len = shape.out_channels * out_plane;
    let (data_buf, rest) = buf[..layout.len].split_at_mut(layout.products);
    let (products_buf, rest) = rest.split_at_mut(layout.rows - layout.products);
    let (rows_buf, rest) = rest.split_at_mut(layout.phases - layout.rows);
    let (phases, half) = rest.split_at_mut(layout.half - layout.phases);
    #[cfg(target_arch = "x86_64")]
    if gather {
        // small maps: every tile of a span in a lane of its own
        let patches = &mut half[..super::gathered::SCRATCH];
        for span in spans(shape, tile_rows, group) {
            super::gathered::transform_input(images, shape, span, patches, data_buf);
            point_gemms(shape, span, (u, u_rows), data_buf, products_buf);
            let finish = (bias, relu);
            super::gathered::transform_output(products_buf, (shape, tile_rows), span, finish, patches, images_out);
        }
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = gather;
    for span in spans(shape, tile_rows, group) {
        // V (36, C, SPAN_STRIDE): point stride C*SPAN_STRIDE, each segment from its column
        for (column, image, block) in segments(shape, span) {
            let image = &images[image * in_len..][..in_len];
            let v = &mut data_buf[column..];
            transform_input_channels(image, shape, block, rows_buf, phases, half, v, SPAN_STRIDE);
        }
        point_gemms(shape, span, (u, u_rows), data_buf, products_buf);
        // Y[k] = A^T M[k] A (+ b[k]) segment by segment; `phases` is free now: it holds the
        // 4 output phases, and `rows_buf` the slab of blocks that do not go straight into the plane
        for (column, image, block) in segments(shape, span) {
            let image_out = &mut images_out[image * out_len..][..out_len];
            let (shape, block) = (&out_shape, Block { ty: block.ty - tile_rows.0, ..block });
            let direct = pool == 1 && fits_plane::<T>(shape, block);
            let (slab_shape, slab_block) = slab(shape, block);
            let point_stride = k_padded * SPAN_STRIDE;
            for k in 0..shape.out_channels {
                let b = bias.map_or(T::zero(), |b| b[k]);
                let m = &products_buf[k * SPAN_STRIDE + column..];
                let plane_out = &mut image_out[k * out_plane..][..out_plane];
                if pool > 1 {
                    transform_output_plane_maxpool(
                        m,
                        point_stride,
                        shape,
                        block,
                        b,
                        pool,
                        half,
                        phases,
                        rows_buf,
                        plane_out,
                    );
                } else if direct {
                    transform_output_plane(m, point_stride, shape, block, b, relu, half, phases, plane_out);
                } else {
                    transform_output_plane(m, point_stride, &slab_shape, slab_block, b, relu, half, phases, rows_buf);
                    slab_to_plane(rows_buf, shape, block, pool, plane_out);
                }
            }
        }
    }
}

/// `M[p] (K4, n) = U[p] (K4, C) V[p] (C, n)` for the 36 points of a span, `n`
/// its tiles padded to [`LANES`]; `V` and `M` are `(36, C or K4, SPAN_STRIDE)`,
/// `U` is `(36, u_rows, C)` (its first K4 rows read).
#[inline(always)]
fn point_gemms<T: Element>(
    shape: &Shape,
    span: (usize, usize),
    (u, u_rows): (&[T], usize),
    v: &[T],
    products: &mut [T],
) {
    let (channels, k_padded) = (shape.channels, shape.out_channels_padded());
    let n = span.1.next_multiple_of(LANES);
    for p in 0..POINTS {
        point_gemm(
            k_padded,
            n,
            channels,
            &u[p * u_rows * channels..],
            channels,
            &v[p * channels * SPAN_STRIDE..],
            SPAN_STRIDE,
            &mut products[p * k_padded * SPAN_STRIDE..],
            SPAN_STRIDE,
            false,
        );
    }
}

/// The scratch length of [`correlate_group_body`] (whatever the group) needs.
pub(crate) fn correlate_scratch_len(shape: &Shape) -> usize {
    Layout::new(POINTS * shape.channels * SPAN_STRIDE, POINTS * shape.out_channels_padded() * SPAN_STRIDE).len
}

simd_variant! {
    /// A group of images of the correlation: [`correlate_group_body`], compiled for
    /// AVX2 + FMA when the CPU has them (the same operations, so the same bits).
    pub(crate) fn correlate_group = correlate_group_body, "avx2,fma", avx2_fma;
    (correlation: &Correlation<'_, T>, tile_rows: (usize, usize), images: &[T], images_out: &mut [T], buf: &mut [T])
}

/// Output rows of the tile rows `tile_rows.0..tile_rows.1` (the last tile row may be partial).
fn part_rows(shape: &Shape, tile_rows: (usize, usize)) -> usize {
    (tile_rows.1 * TILE).min(shape.out_h) - tile_rows.0 * TILE
}

/// A batch of the Winograd correlation, one task per group of images
/// ([`images_per_group`]; `pool` as in [`correlate_group_body`]); with fewer
/// images than threads (a `predict` of one image), each image's tile rows are
/// cut into parts, one task each.
#[allow(clippy::too_many_arguments)]
pub(super) fn correlate_batch<T: Element>(
    shape: &Shape,
    weight_kc: &[T],
    bias: Option<&[T]>,
    relu: bool,
    pool: usize,
    input: &[T],
    output: &mut [T],
    workspace: &mut WinogradWorkspace<T>,
    then: Option<ImageEpilogue<'_, T>>,
) {
    let k_padded = shape.out_channels_padded();
    let (k, channels) = (shape.out_channels, shape.channels);
    if bias.is_some() {
        // a forward pass: the weights as they are, transformed once per version
        workspace.forward_weights(weight_kc, k, channels, k_padded);
    } else {
        // the input gradient: the turned weights, which the next forward must not take for its own
        transform_weights(weight_kc, k, channels, k_padded, &mut workspace.transformed_weight);
        workspace.transformed_version = None;
    }
    workspace.scratch.ensure_threads();
    let (in_len, out_len) =
        (shape.channels * shape.height * shape.width, shape.out_channels * (shape.out_h / pool) * (shape.out_w / pool));
    let u = &workspace.transformed_weight;
    let scratch = &workspace.scratch;
    let scratch_len = correlate_scratch_len(shape);
    let (tiles_y, _) = shape.tiles();
    let batch = input.len() / in_len;
    let parts = parts_per_image(batch, tiles_y);
    let correlation = Correlation::new(shape, u, bias, relu, pool);
    let image_part = |images: &[T], tile_rows: (usize, usize), out: &mut [T]| {
        scratch.with(scratch_len, |buf| correlate_group(&correlation, tile_rows, images, out, buf))
    };
    let out_plane = (shape.out_h / pool) * (shape.out_w / pool);
    if parts > 1 && out_plane > 0 && splits_channels(shape) {
        // fewer images than threads, on a map of one span: each part its own output channels, so
        // each reads its share of U (a 512-channel layer's is 37.7 MB) instead of all of it
        let k_part = shape.out_channels.div_ceil(parts).next_multiple_of(ROW_BLOCK);
        let images = input.par_chunks(in_len).zip(output.par_chunks_mut(out_len));
        let parts =
            images.flat_map(|(image, out)| out.par_chunks_mut(k_part * out_plane).enumerate().map(move |p| (image, p)));
        parts.for_each(|(image, (j, out))| {
            let k0 = j * k_part;
            let part = Shape { out_channels: out.len() / out_plane, ..*shape };
            let correlation = correlation.channels(&part, (k0, k0 + part.out_channels));
            scratch.with(scratch_len, |buf| correlate_group(&correlation, (0, tiles_y), image, out, buf))
        });
        if let Some(then) = then {
            output.par_chunks_mut(out_len).for_each(then);
        }
    } else if parts > 1 {
        // fewer images than threads (a `predict` of one image): each image's tile rows in parts
        let rows_of = |tile_rows: (usize, usize)| {
            let from = tile_rows.0 * TILE / pool;
            (from, from + part_rows(shape, tile_rows) / pool)
        };
        let planes = (shape.out_channels, shape.out_w / pool);
        in_parts(output, (batch, tiles_y, parts), planes, rows_of, |image, tile_rows, out| {
            image_part(&input[image * in_len..][..in_len], tile_rows, out)
        });
        if let Some(then) = then {
            output.par_chunks_mut(out_len).for_each(then);
        }
    } else {
        let group = images_per_group(shape, batch);
        input.par_chunks(group * in_len).zip(output.par_chunks_mut(group * out_len)).for_each(|(images, out)| {
            image_part(images, (0, tiles_y), out);
            if let Some(then) = then {
                out.chunks_mut(out_len).for_each(then);
            }
        });
    }
}

/// Whether [`correlate_batch`] cuts an image into parts by output channels
/// rather than by tile rows: when the image's tiles fit one span (ResNet's 7-
/// and 14-wide maps: 4 and 16 tiles), where parts of tile rows would each read
/// all of `U` for a few tiles (one image of ResNet-18 on 2 threads: 26.4 /
/// 26.1 -> 33.4 / 34.2 img/s), and there are output channels to share.
fn splits_channels(shape: &Shape) -> bool {
    let (tiles_y, tiles_x) = shape.tiles();
    tiles_y * tiles_x <= TILE_BLOCK && shape.out_channels >= 4 * ROW_BLOCK
}

/// Images per task of [`correlate_batch`]: as many as fill a span of
/// [`TILE_BLOCK`] tiles when an image has fewer (ResNet-18's 7x7 maps: 4 tiles
/// an image, 8 images), and 4 when it has fewer than 4 spans' worth, so that
/// the last, partial span of each image (28x28 maps: 49 tiles, 32 + 17) comes
/// once per 4 images (128 -> 128 channels at 28x28: 807/814/810 -> 953/944/917
/// img/s a conv pair); as long as each thread keeps a task; otherwise 1. The
/// group changes which columns share a point GEMM, never a value (the GEMM sums
/// every column on its own), so the bits do not depend on it nor on the threads.
fn images_per_group(shape: &Shape, batch: usize) -> usize {
    let (tiles_y, tiles_x) = shape.tiles();
    let per_image = (tiles_y * tiles_x).max(1);
    let to_fill_a_span = if per_image < TILE_BLOCK {
        TILE_BLOCK / per_image
    } else if per_image < 4 * TILE_BLOCK {
        4
    } else {
        1
    };
    to_fill_a_span.min(batch.div_ceil(rayon::current_num_threads())).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::random;
    use rand::{Rng, SeedableRng};

    /// The gathered transforms ([`super::super::gathered`]) give the bits of
    /// the tile rows' on small maps: groups of images, parts of one image's
    /// tile rows, partial tiles, padding on any side, with and without bias and
    /// ReLU. Without AVX2 nothing is gathered, which the test checks instead.
    #[test]
    fn gathered_tiles_give_the_bits_of_tile_rows() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(48);
        let shape_of = |rng: &mut rand_chacha::ChaCha8Rng| {
            let (out_h, out_w) = (rng.random_range(1..=13), rng.random_range(1..=27));
            let (pad_top, pad_left) = (rng.random_range(0..=2), rng.random_range(0..=2));
            let (height, width) = (out_h + 2 - pad_top + rng.random_range(0..=2), out_w + 2 - pad_left);
            let (channels, out_channels) = (rng.random_range(1..=9), rng.random_range(1..=14));
            Shape { channels, height, width, pad_top, pad_left, out_channels, out_h, out_w }
        };
        let mut gathered_cases = 0;
        for case in 0..60 {
            let shape = shape_of(&mut rng);
            let group = rng.random_range(1..=5);
            let (tiles_y, _) = shape.tiles();
            let tile_rows =
                if group == 1 && tiles_y > 1 { (rng.random_range(0..tiles_y), tiles_y) } else { (0, tiles_y) };
            let weight = random::<f32>(&mut rng, shape.out_channels * shape.channels * 9);
            let bias = random::<f32>(&mut rng, shape.out_channels);
            let images = random::<f32>(&mut rng, group * shape.channels * shape.height * shape.width);
            let mut u = Vec::new();
            transform_weights(&weight, shape.out_channels, shape.channels, shape.out_channels_padded(), &mut u);
            let (bias, relu) = (rng.random_bool(0.7).then_some(&bias[..]), rng.random_bool(0.5));
            let gathered = Correlation::new(&shape, &u, bias, relu, 1);
            if !crate::kernels::cpu::avx2_fma() {
                assert!(!gathered.gather, "gathering needs AVX2");
                continue;
            }
            if !gathered.gather {
                continue; // tile rows of 8 tiles or more
            }
            gathered_cases += 1;
            let rows = Correlation { gather: false, ..gathered };
            let out_len = group * shape.out_channels * part_rows(&shape, tile_rows) * shape.out_w;
            let mut buf = vec![0.0f32; correlate_scratch_len(&shape)];
            let mut run = |correlation: &Correlation<'_, f32>| {
                let mut out = vec![f32::NAN; out_len];
                correlate_group(correlation, tile_rows, &images, &mut out, &mut buf);
                out.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            };
            assert_eq!(run(&gathered), run(&rows), "case {case}: {shape:?}, group {group}, tile rows {tile_rows:?}");
        }
        assert!(!crate::kernels::cpu::avx2_fma() || gathered_cases > 40, "only {gathered_cases} gathered cases");
    }
}
