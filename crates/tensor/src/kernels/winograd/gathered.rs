//! The transforms of the forward correlation on small maps, tile by tile.
//!
//! The plane transforms ([`super::planes`]) work along one tile row of one
//! image: the six input rows split into phases, 8 (or 16) tiles per vector.
//! A tile row of a small map has few tiles, so most lanes carry padding:
//! ResNet-18's 7x7 maps have 2 tiles a row (a quarter of the 8 lanes used),
//! its 14x14 maps 4. Here every tile of a span ([`super::tiles::spans`]),
//! from any tile row of any image of the group, takes a lane of its own:
//!
//! - **input**: each tile's 6x6 input patch is copied (zeros outside the
//!   plane) into `patches` `(n, PATCH)`; the AVX2 body transposes 8 patches at
//!   a time into `d[l][ph]` and runs `B^T d B` as the rows' body does;
//! - **output**: `A^T M A`, bias and ReLU as the rows' body, then each tile's
//!   4x4 outputs are put in place (clipped at the plane's edges).
//!
//! The arithmetic is the rows' body's, operation for operation, so each value
//! has the same bits whichever way it is computed (the tests hold one to the
//! other). f32 with AVX2 only ([`applies`]); other element types and CPUs keep
//! the plane transforms.

use super::tiles::{segments, Shape, LANES, PATCH, POINTS, SPAN_STRIDE};
use super::transforms::{f32_mut_ptr, f32_ptr, simd_f32};
use super::x86::{input_transform_patches_f32, output_transform_patches_f32};
use super::{ALPHA, TILE};
use crate::element::Element;

/// Tile rows narrower than this many tiles are gathered tile by tile: up to 7
/// tiles (maps up to 28 wide) a tile row fills fewer than 8 lanes, and
/// through the plane transforms its outputs also go through a slab.
pub const GATHER_BELOW_TILES: usize = 8;

/// Whether the forward correlation of `shape` gathers its tiles (f32 with AVX2,
/// tile rows of fewer than [`GATHER_BELOW_TILES`] tiles, no fused pooling).
pub(crate) fn applies<T: Element>(shape: &Shape, pool: usize) -> bool {
    simd_f32::<T>() && pool == 1 && shape.tiles().1 < GATHER_BELOW_TILES
}

/// Scratch values [`transform_input`] and [`transform_output`] take: a span's patches.
pub(crate) const SCRATCH: usize = SPAN_STRIDE * PATCH;

/// Each tile of `span` as (column, image of the group, tile row, tile column).
fn span_tiles(shape: &Shape, span: (usize, usize)) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    segments(shape, span)
        .flat_map(|(column, image, block)| (0..block.count).map(move |i| (column + i, image, block.ty, block.tx0 + i)))
}

/// `V[p][c][t] = (B^T d B)[p]` for the tiles of `span` in every input channel
/// of the group `images` `(G, C, H, W)`, channel `c`'s tiles from
/// `v[c * SPAN_STRIDE]`, points `C * SPAN_STRIDE` apart (as the rows' path).
pub(crate) fn transform_input<T: Element>(
    images: &[T],
    shape: &Shape,
    span: (usize, usize),
    patches: &mut [T],
    v: &mut [T],
) {
    let (channels, plane) = (shape.channels, shape.height * shape.width);
    let n = span.1.next_multiple_of(LANES);
    let point_stride = channels * SPAN_STRIDE;
    assert!(n <= SPAN_STRIDE && patches.len() >= SCRATCH && v.len() >= POINTS * point_stride);
    // the padding lanes' patches: zeros, never written by the gathering below
    patches[span.1 * PATCH..n * PATCH].fill(T::zero());
    for c in 0..channels {
        for (column, image, ty, tx) in span_tiles(shape, span) {
            let source = &images[(image * channels + c) * plane..][..plane];
            let patch = &mut patches[column * PATCH..][..ALPHA * ALPHA];
            gather_patch(source, shape, (ty * TILE, tx * TILE), patch);
        }
        // SAFETY: simd_f32 (the caller's `applies`) says T is f32 and the CPU has AVX2 and
        // FMA; `patches` holds n PATCH values (asserted); the body writes v[c SPAN_STRIDE +
        // p point_stride + t] for p < 36, t < n <= SPAN_STRIDE, below (c + 1) SPAN_STRIDE + 35
        // point_stride <= 36 point_stride <= v.len() (asserted, c < channels); n is a multiple of 8.
        unsafe {
            input_transform_patches_f32(f32_ptr(patches), n, f32_mut_ptr(&mut v[c * SPAN_STRIDE..]), point_stride)
        }
    }
}

/// The 6x6 input patch of the tile whose outputs start at `(y, x)`: rows
/// `y - pad_top..+6`, columns `x - pad_left..+6` of `plane`, zeros outside it
/// (moves of whole rows of 6 the compiler inlines, not calls to `memmove`).
#[inline(always)]
fn gather_patch<T: Element>(plane: &[T], shape: &Shape, (y, x): (usize, usize), patch: &mut [T]) {
    let (y0, x0) = (y as isize - shape.pad_top as isize, x as isize - shape.pad_left as isize);
    let (from, to) = (x0.max(0), (x0 + ALPHA as isize).min(shape.width as isize));
    for l in 0..ALPHA {
        let row: &mut [T; ALPHA] = (&mut patch[l * ALPHA..][..ALPHA]).try_into().expect("a row of 6");
        let y = y0 + l as isize;
        if y < 0 || y >= shape.height as isize || from >= to {
            *row = [T::zero(); ALPHA];
            continue;
        }
        let source = &plane[y as usize * shape.width..][..shape.width];
        if to - from == ALPHA as isize {
            *row = *<&[T; ALPHA]>::try_from(&source[from as usize..to as usize]).expect("a row of 6");
            continue;
        }
        // at the plane's edges
        for (ph, value) in row.iter_mut().enumerate() {
            let column = x0 + ph as isize;
            *value = if column >= from && column < to { source[column as usize] } else { T::zero() };
        }
    }
}

/// `Y[k] = A^T M[k] A + b[k]` (then ReLU) for the tiles of `span` of
/// `shape`, into the planes of the group `images_out` `(G, K, rows, out_w)`
/// that hold the output rows of tile rows `tile_rows.0..tile_rows.1` (all of
/// them for a group of several images). `products` is `M` `(36, K4, SPAN_STRIDE)`.
pub(crate) fn transform_output<T: Element>(
    products: &[T],
    (shape, tile_rows): (&Shape, (usize, usize)),
    span: (usize, usize),
    (bias, relu): (Option<&[T]>, bool),
    patches: &mut [T],
    images_out: &mut [T],
) {
    let part_h = (tile_rows.1 * TILE).min(shape.out_h) - tile_rows.0 * TILE;
    let (out_channels, out_plane) = (shape.out_channels, part_h * shape.out_w);
    let n = span.1.next_multiple_of(LANES);
    let point_stride = shape.out_channels_padded() * SPAN_STRIDE;
    assert!(n <= SPAN_STRIDE && patches.len() >= TILE * TILE * n && products.len() >= 35 * point_stride + n);
    for k in 0..out_channels {
        let b = bias.map_or(0.0, |b| b[k].to_f64() as f32);
        let m = &products[k * SPAN_STRIDE..];
        assert!(m.len() >= 35 * point_stride + n);
        // SAFETY: simd_f32 (the caller's `applies`) says T is f32 and the CPU has AVX2 and
        // FMA; `m` holds 35 point_stride + n values and `patches` 16 n (asserted, TILE = 4).
        unsafe { output_transform_patches_f32(f32_ptr(m), point_stride, n, b, relu, f32_mut_ptr(patches)) };
        for (column, image, ty, tx) in span_tiles(shape, span) {
            let (y, x) = ((ty - tile_rows.0) * TILE, tx * TILE);
            let (rows, width) = (TILE.min(part_h - y), TILE.min(shape.out_w - x));
            let plane = &mut images_out[(image * out_channels + k) * out_plane..][..out_plane];
            for (r, outputs) in patches[column * TILE * TILE..][..TILE * TILE].chunks_exact(TILE).take(rows).enumerate()
            {
                let target = &mut plane[(y + r) * shape.out_w + x..][..width];
                if let (Ok(target), Ok(outputs)) =
                    (<&mut [T; TILE]>::try_from(&mut *target), <&[T; TILE]>::try_from(outputs))
                {
                    *target = *outputs; // a whole row of the tile: one move, not a call to memmove
                } else {
                    target.copy_from_slice(&outputs[..width]);
                }
            }
        }
    }
}
