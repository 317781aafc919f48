//! Micro-batches (`--micro-batch M`): a batch run as several forward and
//! backward passes of at most M images, with one optimizer step from the whole
//! batch's gradient. Activation memory then follows M, not the batch.
//!
//! The batch's gradient is still summed as its gradient tree
//! ([`convnet_tensor::gradient_tree`]: the batch cut into leaves, each summed
//! image by image, the leaf sums added as a balanced tree). The passes are cut
//! along that tree:
//!
//! ```text
//! batch 32, 4 leaves of 8:   l0 = 0..8   l1 = 8..16   l2 = 16..24   l3 = 24..32
//! M = 16: 2 passes of 2 whole leaves -> subtrees (l0+l1), (l2+l3) -> tree      exact
//! M = 8:  4 passes of 1 whole leaf   -> l0, l1, l2, l3            -> tree      exact
//! M = 4:  8 passes, half a leaf each -> l0 continued over passes 0, 1, ... -> tree  exact
//! ```
//!
//! When M holds whole leaves (a multiple of batch/4 for a batch divisible by
//! 4), each pass computes one subtree of the tree a single pass computes. A
//! smaller M cuts each leaf into passes, and every layer continues the leaf's
//! sums from pass to pass (convolutions add their per-image gradients onto
//! what they hold; dense layers keep the leaf's rows and run its one GEMM at
//! the last pass: [`convnet_tensor::gradient_tree::LeafPart`]). Either way the
//! weights of a model without batchnorm end **byte-identical** to the run
//! without micro-batches. A layer of yours with parameters that does not
//! continue leaves ([`convnet_tensor::Layer::continues_leaves`]) has its
//! passes' gradients added in order instead: the same gradient up to
//! rounding, the same bits on any thread or rank count, not those of whole
//! batches.
//!
//! Batchnorm normalises each pass with its own statistics (as gradient
//! accumulation does in PyTorch), and moves its running statistics once per
//! pass. On several MPI ranks a model with batchnorm is refused in
//! micro-batches: each rank's passes would move its running statistics alone.

use anyhow::{bail, Result};
use convnet_tensor::gradient_tree::{tree_sum, LeafPart};
use convnet_tensor::Sequential;
use std::ops::Range;

/// One forward and backward pass over part of a process's share of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pass {
    /// The pass's images, positions in the process's share.
    pub images: Range<usize>,
    /// Gradient leaves the pass reduces its images as (1 for part of a leaf).
    pub leaves: usize,
    /// What the pass's gradient is in the gradient tree.
    pub piece: Piece,
}

/// A pass's place in the gradient tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// A whole subtree of `leaves` leaves.
    Subtree,
    /// Part of one leaf: `first` starts the leaf's sum, `last` ends it.
    PartOfLeaf { first: bool, last: bool },
}

/// The passes over a share of `len` images holding `leaves` gradient leaves,
/// at most `micro` images each (`None`: one pass).
pub fn plan(len: usize, leaves: usize, micro: Option<usize>) -> Vec<Pass> {
    let micro = micro.unwrap_or(len).max(1);
    let leaves = leaves.max(1);
    if micro >= len || len == 0 {
        return vec![Pass { images: 0..len, leaves, piece: Piece::Subtree }];
    }
    let leaf_size = len / leaves;
    if micro >= leaf_size {
        // aligned power-of-two blocks of whole leaves: whole subtrees
        let mut group = 1;
        while leaves.is_power_of_two() && group * 2 * leaf_size <= micro && leaves.is_multiple_of(group * 2) {
            group *= 2;
        }
        let per_pass = group * leaf_size;
        return (0..leaves / group)
            .map(|p| Pass { images: p * per_pass..(p + 1) * per_pass, leaves: group, piece: Piece::Subtree })
            .collect();
    }
    // each leaf cut into runs of at most `micro` images, summed in order
    let mut passes = Vec::new();
    for leaf in 0..leaves {
        let (start, end) = (leaf * leaf_size, (leaf + 1) * leaf_size);
        let mut at = start;
        while at < end {
            let next = (at + micro).min(end);
            passes.push(Pass {
                images: at..next,
                leaves: 1,
                piece: Piece::PartOfLeaf { first: at == start, last: next == end },
            });
            at = next;
        }
    }
    passes
}

/// The gradients of a batch's passes, kept until the tree over them is
/// finished: one flattened vector per subtree (or finished leaf), and the leaf
/// being summed. The vectors are reused from batch to batch.
#[derive(Default)]
pub struct PassGradients {
    subtrees: Vec<Vec<f32>>,
    /// Subtrees of the current batch (`subtrees[..used]`).
    used: usize,
    leaf: Vec<f32>,
}

impl PassGradients {
    /// Tells the model which part of a leaf `pass` is, before its forward
    /// pass, when every layer continues a leaf's sums itself
    /// ([`Sequential::continues_leaves`]: then a leaf cut into passes has the
    /// bits of one pass).
    pub fn before(model: &mut Sequential<f32>, pass: &Pass) {
        if let Piece::PartOfLeaf { first, last } = pass.piece {
            if model.continues_leaves() {
                model.set_leaf_part(LeafPart { first, last });
            }
        }
    }

    /// Takes the gradient the model holds after `pass`'s backward.
    pub fn add(&mut self, model: &mut Sequential<f32>, pass: &Pass) {
        if let Piece::PartOfLeaf { last, .. } = pass.piece {
            if model.continues_leaves() {
                // the layers summed the leaf: it is whole after its last part
                if last {
                    model.set_leaf_part(LeafPart::WHOLE);
                    let subtree = self.next_subtree();
                    subtree.extend(model.trainable_params().iter().flat_map(|p| p.grad.iter().copied()));
                }
                return;
            }
        }
        let gradient = model.trainable_params().into_iter().flat_map(|param| param.grad.iter().copied());
        match pass.piece {
            Piece::Subtree => self.next_subtree().extend(gradient),
            Piece::PartOfLeaf { first, last } => {
                if first {
                    self.leaf.clear();
                    self.leaf.extend(gradient);
                } else {
                    for (sum, value) in self.leaf.iter_mut().zip(gradient) {
                        *sum += value;
                    }
                }
                if last {
                    let leaf = std::mem::take(&mut self.leaf);
                    let subtree = self.next_subtree();
                    self.leaf = std::mem::replace(subtree, leaf);
                }
            }
        }
    }

    /// The next subtree's vector, emptied (its capacity kept).
    fn next_subtree(&mut self) -> &mut Vec<f32> {
        if self.used == self.subtrees.len() {
            self.subtrees.push(Vec::new());
        }
        self.used += 1;
        let subtree = &mut self.subtrees[self.used - 1];
        subtree.clear();
        subtree
    }

    /// Adds the subtrees as the balanced tree and leaves the batch's gradient
    /// in the model.
    pub fn finish(&mut self, model: &mut Sequential<f32>) {
        let used = std::mem::take(&mut self.used);
        let mut items: Vec<&mut [f32]> = self.subtrees[..used].iter_mut().map(Vec::as_mut_slice).collect();
        tree_sum(&mut items);
        let Some(total) = self.subtrees[..used].first() else { return };
        let mut offset = 0;
        for param in model.trainable_params_mut() {
            let len = param.grad.len();
            param.grad.as_slice_mut().expect("contiguous").copy_from_slice(&total[offset..offset + len]);
            offset += len;
        }
    }
}

/// Checks `--micro-batch` against the batch size.
pub fn check(micro: Option<usize>, batch_size: usize) -> Result<()> {
    if let Some(micro) = micro {
        if micro == 0 || micro > batch_size || !batch_size.is_multiple_of(micro) {
            bail!("--micro-batch {micro} must divide --batch-size {batch_size}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(passes: &[Pass]) -> Vec<(Range<usize>, usize)> {
        passes.iter().map(|p| (p.images.clone(), p.leaves)).collect()
    }

    #[test]
    fn whole_leaves_make_subtrees_and_smaller_passes_cut_each_leaf() {
        assert_eq!(ranges(&plan(32, 4, None)), [(0..32, 4)]);
        assert_eq!(ranges(&plan(32, 4, Some(32))), [(0..32, 4)]);
        assert_eq!(ranges(&plan(32, 4, Some(16))), [(0..16, 2), (16..32, 2)]);
        // 12 holds one leaf of 8, not two: blocks stay aligned subtrees
        assert_eq!(ranges(&plan(32, 4, Some(12))), [(0..8, 1), (8..16, 1), (16..24, 1), (24..32, 1)]);
        let quarter = plan(32, 4, Some(4));
        assert_eq!(quarter.len(), 8);
        assert_eq!(quarter[0].piece, Piece::PartOfLeaf { first: true, last: false });
        assert_eq!(quarter[1].piece, Piece::PartOfLeaf { first: false, last: true });
        assert_eq!(quarter[7].images, 28..32);
        // a last batch of 5 (one leaf) in passes of 2: 2 + 2 + 1
        assert_eq!(ranges(&plan(5, 1, Some(2))), [(0..2, 1), (2..4, 1), (4..5, 1)]);
    }

    #[test]
    fn micro_batch_must_divide_the_batch() {
        assert!(check(Some(4), 32).is_ok());
        assert!(check(None, 32).is_ok());
        for bad in [0, 5, 64] {
            assert!(check(Some(bad), 32).is_err(), "{bad}");
        }
    }
}
