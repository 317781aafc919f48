//! The block geometry of the fast Winograd path ([`super::passes`]): how the
//! output is cut into 4x4 tiles, tiles into blocks of one tile row (the weight
//! gradient) or spans across tile rows (the correlation), and how a thread's
//! scratch buffer is laid out for one block.

use super::{ALPHA, TILE};

/// Points of the transformed tile, `ALPHA * ALPHA`: the 36 independent GEMMs.
pub const POINTS: usize = ALPHA * ALPHA;

/// Output channels are zero-padded to a multiple of this for [`super::point_gemm::point_gemm`]
/// (the plain body takes blocks of 4 rows, the AVX2 body of 6 and then 4).
pub const ROW_BLOCK: usize = 4;

/// Tile counts and the weight gradient's channel count are padded to a multiple
/// of this (one AVX2 vector of f32), so the kernels always run full width.
pub const LANES: usize = 8;

/// Widest column block of the plain [`super::point_gemm::point_gemm`] body (the AVX2 body takes 16, AVX-512 32).
pub const COL_BLOCK: usize = 24;

/// Tiles per block: one chunk of a tile row. 32 keeps conv2's `V` and `M`
/// (147 KB + 295 KB) in a 512 KB L2 between the stages, and fills the point
/// GEMM's widest blocks (AVX-512: 12 x 32; AVX2: 6 x 16 twice). Against 24, on
/// an AVX-512 Xeon: `baseline` inference ~3% faster, training the same
/// (BENCHMARKS.md, round 3).
pub const TILE_BLOCK: usize = 32;

/// The shape of one Winograd correlation: `channels` input planes of
/// `height x width`, read with `pad_top`/`pad_left` zeros before them,
/// `out_channels` output planes of `out_h x out_w`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) channels: usize,
    pub(crate) height: usize,
    pub(crate) width: usize,
    pub(crate) pad_top: usize,
    pub(crate) pad_left: usize,
    pub(crate) out_channels: usize,
    pub(crate) out_h: usize,
    pub(crate) out_w: usize,
}

impl Shape {
    pub(crate) fn tiles(&self) -> (usize, usize) {
        (self.out_h.div_ceil(TILE), self.out_w.div_ceil(TILE))
    }
    /// Output channels rounded up to the GEMM's row block.
    pub(crate) fn out_channels_padded(&self) -> usize {
        self.out_channels.next_multiple_of(ROW_BLOCK)
    }
}

/// Where one block of tiles sits: tile row `ty`, tiles `tx0..tx0 + count`,
/// padded to `padded` (a multiple of [`LANES`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Block {
    pub(crate) ty: usize,
    pub(crate) tx0: usize,
    pub(crate) count: usize,
    pub(crate) padded: usize,
}

pub(crate) fn blocks(shape: &Shape) -> impl Iterator<Item = Block> {
    let (tiles_y, tiles_x) = shape.tiles();
    (0..tiles_y).flat_map(move |ty| {
        (0..tiles_x).step_by(TILE_BLOCK).map(move |tx0| {
            let count = (tiles_x - tx0).min(TILE_BLOCK);
            Block { ty, tx0, count, padded: count.next_multiple_of(LANES) }
        })
    })
}

/// Columns per row of a span's `V` and `M` in the forward correlation: a
/// span's [`TILE_BLOCK`] tiles, plus room for its last segment's padding.
pub const SPAN_STRIDE: usize = TILE_BLOCK + LANES;

/// The forward correlation's unit of work: up to [`TILE_BLOCK`] consecutive
/// tiles in row-major order over the tile rows `tile_rows.0..tile_rows.1`,
/// crossing from one tile row into the next, and from one image into the next
/// when `images` images of a group follow one another (then `tile_rows` must
/// be all of an image's rows). A tile row of 55 tiles (conv2 of `baseline`) cut
/// into blocks of its own is 32 + 24 columns of the point GEMM, and the 24
/// cost as much as 32 in 16-lane registers (64 lanes for 55 tiles); spans keep
/// nearly every GEMM 32 columns wide. On small maps (ResNet-18's 7x7: 4 tiles
/// an image) the spans of a group's images keep the GEMMs wide, so the
/// transformed weights are read once per 32 tiles instead of once per image.
/// Yields (first tile, count) of the flattened order
/// `(image * tiles_y + ty) * tiles_x + tx`.
pub(crate) fn spans(shape: &Shape, tile_rows: (usize, usize), images: usize) -> impl Iterator<Item = (usize, usize)> {
    let (tiles_y, tiles_x) = shape.tiles();
    assert!(images == 1 || tile_rows == (0, tiles_y), "spans: a group of images takes whole images");
    let (first, end) = (tile_rows.0 * tiles_x, ((images - 1) * tiles_y + tile_rows.1) * tiles_x);
    (first..end).step_by(TILE_BLOCK).map(move |start| (start, (end - start).min(TILE_BLOCK)))
}

/// The pieces of a span ([`spans`]) within one tile row of one image each, as
/// blocks, with the column at which each starts in the span's `V` and `M` and
/// the image of the group it lies in. A segment writes its padded width from
/// there (past the span's tiles at most [`LANES`] - 1 columns, inside
/// [`SPAN_STRIDE`]), so segments are written in order and each overwrites the
/// padding of the one before.
pub(crate) fn segments(shape: &Shape, (start, count): (usize, usize)) -> impl Iterator<Item = (usize, usize, Block)> {
    let (tiles_y, tiles_x) = shape.tiles();
    let mut column = 0;
    std::iter::from_fn(move || {
        if column == count {
            return None;
        }
        let tile = start + column;
        let (image, tile_row) = (tile / (tiles_y * tiles_x), tile / tiles_x % tiles_y);
        let tx0 = tile % tiles_x;
        let length = (tiles_x - tx0).min(count - column);
        let block = Block { ty: tile_row, tx0, count: length, padded: length.next_multiple_of(LANES) };
        let segment = (column, image, block);
        column += length;
        Some(segment)
    })
}

/// Values per tile in the gathered layout of small maps (`super::gathered`):
/// a tile's 6x6 input patch (36), padded to five 8-wide columns for the
/// transposes; its 4x4 output patch takes the first 16.
pub const PATCH: usize = 40;

/// Scratch layout of one block (offsets into a thread's buffer).
pub(crate) struct Layout {
    /// `M` `(36, K4, tb)`, or `DY'` `(36, K4, tb)` for the weight gradient.
    pub(crate) products: usize,
    /// Six padded input rows `(6, 4 tb + 2)`.
    pub(crate) rows: usize,
    /// Phases `(36, tb)` and a second `(36, tb)` for the half-transformed (or
    /// a span's gathered patches, `(SPAN_STRIDE, PATCH)`).
    pub(crate) phases: usize,
    pub(crate) half: usize,
    pub(crate) len: usize,
}

impl Layout {
    pub(crate) fn new(data_len: usize, products_len: usize) -> Layout {
        let tb = TILE_BLOCK.next_multiple_of(LANES);
        // the data `V` (36, C, tb) first, from offset 0
        let products = data_len;
        let rows = products + products_len;
        let phases = rows + ALPHA * (TILE * tb + 4);
        let half = phases + POINTS * tb;
        let len = half + (POINTS * tb).max(SPAN_STRIDE * PATCH);
        Layout { products, rows, phases, half, len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spans cover the part's tiles (or a group's images) once each, in order;
    /// a span's segments lie in one tile row of one image each, at consecutive
    /// columns, and their padded widths stay inside [`SPAN_STRIDE`].
    #[test]
    fn spans_cover_each_tile_once_and_segments_stay_in_their_rows() {
        for (out_h, out_w) in [(220, 220), (8, 8), (53, 53), (12, 132), (4, 260), (7, 7), (14, 14)] {
            let shape =
                Shape { channels: 1, height: 0, width: 0, pad_top: 0, pad_left: 0, out_channels: 1, out_h, out_w };
            let (tiles_y, tiles_x) = shape.tiles();
            let whole = [(1, (0, tiles_y)), (1, (tiles_y / 2, tiles_y)), (3, (0, tiles_y)), (8, (0, tiles_y))];
            for (images, tile_rows) in whole {
                let mut next = tile_rows.0 * tiles_x;
                for span in spans(&shape, tile_rows, images) {
                    assert!(span.1 <= TILE_BLOCK && span.0 == next);
                    let mut column = 0;
                    for (at, image, block) in segments(&shape, span) {
                        let tile = (image * tiles_y + block.ty) * tiles_x + block.tx0;
                        assert_eq!((at, tile), (column, next + column));
                        assert!(image < images && block.ty < tiles_y);
                        assert!(block.tx0 + block.count <= tiles_x && block.padded % LANES == 0);
                        assert!(at + block.padded <= SPAN_STRIDE);
                        column += block.count;
                    }
                    assert_eq!(column, span.1);
                    next += span.1;
                }
                assert_eq!(next, ((images - 1) * tiles_y + tile_rows.1) * tiles_x);
            }
        }
    }
}
