//! The weight gradient of a convolution on small maps (ResNet's 14x14 and 7x7
//! stages), summed leaf by leaf straight into the gradient: no per-image
//! copies of `dW`.
//!
//! ## What it computes
//!
//! The forward line was `Y_n = W * col_n + b` for each image `n`, so
//!
//! ```text
//! dW = sum_n dY_n col_n^T      dY_n (OC, P), col_n (C*KH*KW, P), dW (OC, C*KH*KW)
//! db = sum_n rowsum(dY_n)      (OC,)
//! ```
//!
//! summed in the batch's gradient tree ([`crate::gradient_tree`]): image by
//! image inside each leaf, the leaves as a balanced tree.
//!
//! ## Why it is fast
//!
//! The tiled backward pass ([`crate::kernels::conv_tiled`]) gives every image
//! its own copy of `dW` and sums the copies afterwards ([`reduce_tree`]): at
//! ResNet-18's 512-channel 3x3 convolutions `dW` is 9.4 MB, so a batch of 32
//! wrote 302 MB of partial gradients and read them back, for products only 49
//! pixels deep. Here one task owns a block of `dW`'s columns (the weights of
//! [`CHANNEL_BLOCK`] input channels, `OC x 144` at 3x3) of one leaf and runs
//! through the leaf's images in order, `block := block + dY_n col_n^T`: the
//! block stays in L2 from image to image, and nothing is written per image.
//!
//! ## The same bits
//!
//! The packed GEMM computes each value of `dY_n col_n^T` as one chain of
//! multiply-adds from zero and adds it to the block (`beta = 1`,
//! [`gemm_packed()`]): `((P_0 + P_1) + P_2) + ...`, image by image, which is
//! exactly the leaf sum [`reduce_tree`] takes over per-image partials `P_n`,
//! and the leaves then meet in the same tree ([`tree_sum`]). So this path is
//! a faster way to the bits of the per-image one, for any thread count, any
//! split of the batch into processes and micro-batches
//! (`tests/suite/kernels.rs` holds it to that).

use crate::element::Element;
use crate::geometry::WindowGeometry;
use crate::gradient_tree::{effective_leaves, tree_sum};
use crate::kernels::gemm::Trans;
use crate::kernels::gemm_packed::{gemm_packed, PackedA};
use crate::kernels::im2col::im2col;
use crate::kernels::reduce::{reduce_in_order_onto, reduce_tree, sum_in_lanes};
use crate::kernels::scratch::PerThread;
use rayon::prelude::*;

/// Input channels whose weights one task owns: 16 channels of a 3x3 kernel
/// are 144 columns of `dW`, three of the packed GEMM's 48-column blocks; at
/// 512 output channels the block (295 KB) stays in L2 while the task runs
/// through its leaf's images.
pub const CHANNEL_BLOCK: usize = 16;

/// What the leaf-by-leaf weight gradient keeps between passes (a layer owns
/// one): grown on the first batch, reused after.
#[derive(Debug, Default)]
pub struct LeafWorkspace<T> {
    /// Every image's `dY` `(OC, P)` packed as the GEMM's `A`.
    packed_dy: Vec<PackedA<T>>,
    /// The leaves' `dW`, each `(OC, C*KH*KW)` stored block by block (block
    /// `b`: `(OC, CHANNEL_BLOCK*KH*KW)` contiguous), so that every task owns
    /// a contiguous slice.
    leaf_sums: Vec<T>,
    /// Per-image bias gradients `(N, OC)`.
    bias_partials: Vec<T>,
    /// Per thread: a block's columns `(CHANNEL_BLOCK*KH*KW, P)`, then transposed `(P, CHANNEL_BLOCK*KH*KW)`.
    columns: PerThread<(Vec<T>, Vec<T>)>,
}

/// Where the weight gradient goes, and how the batch's sum is shaped.
pub struct LeafTarget<'a, T> {
    /// `dW` `(OC, C, KH, KW)`: overwritten, or continued (`continue_leaf`).
    pub grad_weight: &'a mut [T],
    /// `db` `(OC,)`: likewise.
    pub grad_bias: &'a mut [T],
    /// Leaves of the batch's gradient tree ([`crate::gradient_tree`]).
    pub gradient_leaves: usize,
    /// The pass continues one leaf's sum from the gradients held.
    pub continue_leaf: bool,
}

/// `dW` and `db` of a batch (module docs). `input` `(N, C, H, W)`,
/// `grad_output` `(N, OC, OH, OW)`; each image's columns `(C*KH*KW, OH*OW)`
/// are built a block of channels at a time, so any output size works, but
/// it pays where an image is one short tile ([`crate::kernels::conv_tiled`]
/// calls it there).
///
/// # Panics
/// On lengths that disagree with `geom`: programming errors in the layer.
pub fn weight_grad_in_leaves<T: Element>(
    geom: &WindowGeometry,
    input: &[T],
    grad_output: &[T],
    target: LeafTarget<'_, T>,
    workspace: &mut LeafWorkspace<T>,
) {
    let (col_rows, out_pixels, kernel_area) = (geom.col_rows(), geom.out_pixels(), geom.kernel_h * geom.kernel_w);
    let out_channels = target.grad_bias.len();
    let weight_len = out_channels * col_rows;
    assert_eq!(target.grad_weight.len(), weight_len, "weight_grad_in_leaves: grad_weight length");
    assert_eq!(input.len() % geom.in_len(), 0, "weight_grad_in_leaves: input length");
    let batch = input.len() / geom.in_len();
    assert_eq!(grad_output.len(), batch * out_channels * out_pixels, "weight_grad_in_leaves: grad_output length");
    let leaves = if target.continue_leaf { 1 } else { effective_leaves(batch, target.gradient_leaves) };
    let per_leaf = batch / leaves.max(1);
    let block_len = out_channels * CHANNEL_BLOCK * kernel_area;

    // db: per-image sums (0 + rowsum, as an image's partial starts from zero), then the tree
    workspace.bias_partials.resize(batch * out_channels, T::zero());
    workspace
        .bias_partials
        .par_chunks_mut(out_channels)
        .zip(grad_output.par_chunks(out_channels * out_pixels))
        .for_each(|(partial, dy)| {
            for (db, row) in partial.iter_mut().zip(dy.chunks(out_pixels)) {
                *db = T::zero() + sum_in_lanes(row);
            }
        });
    let reduce = if target.continue_leaf { reduce_in_order_onto } else { reduce_tree };
    reduce(&workspace.bias_partials, out_channels, 0, target.grad_bias, target.gradient_leaves);

    // dY_n (OC, P) packed once, read by every block of its leaf
    workspace.packed_dy.resize_with(batch, PackedA::new);
    workspace
        .packed_dy
        .par_iter_mut()
        .zip(grad_output.par_chunks(out_channels * out_pixels))
        .for_each(|(packed, dy)| packed.pack(Trans::No, out_channels, out_pixels, dy, out_pixels));
    workspace.leaf_sums.resize(leaves * weight_len, T::zero());
    if target.continue_leaf {
        to_blocks(target.grad_weight, &mut workspace.leaf_sums[..weight_len], out_channels, col_rows, block_len);
    }
    workspace.columns.ensure_threads();
    let (packed_dy, columns) = (&workspace.packed_dy, &workspace.columns);
    let tasks = workspace.leaf_sums.par_chunks_mut(weight_len).enumerate().flat_map(|(leaf, sums)| {
        sums.par_chunks_mut(block_len).enumerate().map(move |(block, block_sum)| (leaf, block, block_sum))
    });
    tasks.for_each(|(leaf, block, block_sum)| {
        // this block's channels: a sub-image, whose im2col rows are this block's columns of dW
        let first_channel = block * CHANNEL_BLOCK;
        let block_geom = WindowGeometry { in_channels: (geom.in_channels - first_channel).min(CHANNEL_BLOCK), ..*geom };
        let block_cols = block_geom.col_rows();
        columns.with(|(col, col_t)| {
            col.resize(block_cols * out_pixels, T::zero());
            col_t.resize(block_cols * out_pixels, T::zero());
            for n in leaf * per_leaf..(leaf + 1) * per_leaf {
                let image = &input[n * geom.in_len()..][..geom.in_len()];
                let sub_image = &image[first_channel * geom.in_h * geom.in_w..][..block_geom.in_len()];
                // col (block_cols, P), then col^T (P, block_cols): B of the outer product
                im2col(&block_geom, sub_image, 0, geom.out_h, col);
                for (j, col_row) in col.chunks(out_pixels).enumerate() {
                    for (p, &value) in col_row.iter().enumerate() {
                        col_t[p * block_cols + j] = value;
                    }
                }
                // block (OC, block_cols) := dY_n (OC, P) col_n^T (P, block_cols) + block
                let first = n == leaf * per_leaf && !target.continue_leaf;
                let beta = if first { T::zero() } else { T::one() };
                gemm_packed(&packed_dy[n], block_cols, col_t, block_cols, beta, block_sum, block_cols);
            }
        });
    });
    // the leaves as a balanced tree, into leaf 0, then dW in its (OC, C*KH*KW) layout
    let mut leaf_sums: Vec<&mut [T]> = workspace.leaf_sums.chunks_mut(weight_len).collect();
    tree_sum(&mut leaf_sums);
    from_blocks(&workspace.leaf_sums[..weight_len], target.grad_weight, out_channels, col_rows, block_len);
}

/// `dW` `(OC, cols)` into its block layout ([`LeafWorkspace::leaf_sums`]).
fn to_blocks<T: Element>(matrix: &[T], blocked: &mut [T], rows: usize, cols: usize, block_len: usize) {
    let block_cols = block_len / rows;
    for (block, block_values) in blocked.chunks_mut(block_len).enumerate() {
        let width = block_values.len() / rows;
        for (r, row) in block_values.chunks_mut(width).enumerate() {
            row.copy_from_slice(&matrix[r * cols + block * block_cols..][..width]);
        }
    }
}

/// The inverse of [`to_blocks`].
fn from_blocks<T: Element>(blocked: &[T], matrix: &mut [T], rows: usize, cols: usize, block_len: usize) {
    let block_cols = block_len / rows;
    matrix.par_chunks_mut(cols).enumerate().for_each(|(r, row)| {
        for (block, block_values) in blocked.chunks(block_len).enumerate() {
            let width = block_values.len() / rows;
            row[block * block_cols..][..width].copy_from_slice(&block_values[r * width..][..width]);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip() {
        // 3 rows, 7 columns in blocks of 3 columns (the last one 1 wide)
        let matrix: Vec<f32> = (0..21).map(|v| v as f32).collect();
        let mut blocked = vec![0.0; 21];
        to_blocks(&matrix, &mut blocked, 3, 7, 9);
        assert_eq!(&blocked[..9], &[0.0, 1.0, 2.0, 7.0, 8.0, 9.0, 14.0, 15.0, 16.0]);
        assert_eq!(&blocked[18..], &[6.0, 13.0, 20.0]);
        let mut back = vec![0.0; 21];
        from_blocks(&blocked, &mut back, 3, 7, 9);
        assert_eq!(back, matrix);
    }
}
