//! The block geometry of the fast Winograd path ([`super::passes`]): how the
//! output is cut into 4x4 tiles, tiles into blocks of one tile row, and how a
//! thread's scratch buffer is laid out for one block.

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

/// Scratch layout of one block (offsets into a thread's buffer).
pub(crate) struct Layout {
    /// `M` `(36, K4, tb)`, or `DY'` `(36, K4, tb)` for the weight gradient.
    pub(crate) products: usize,
    /// Six padded input rows `(6, 4 tb + 2)`.
    pub(crate) rows: usize,
    /// Phases `(36, tb)` and a second `(36, tb)` for the half-transformed.
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
        let len = half + POINTS * tb;
        Layout { products, rows, phases, half, len }
    }
}
