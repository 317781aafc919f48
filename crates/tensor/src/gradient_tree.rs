//! The gradient tree: the one order in which a batch's parameter gradient is
//! summed, so that a run gives the same bits on 1, 2 or 4 processes and on any
//! thread count. The policy lives here, outside the kernels, where the layers,
//! the data crate's batch sharding and the MPI exchange all read it.
//!
//! ## Gradient leaves: the same bits on 1, 2 or 4 machines
//!
//! A batch's parameter gradient is a sum over its images. To make that sum
//! independent of how many processes share the batch, it is always taken in
//! one shape: the batch is cut into `L` *leaves* of equal, contiguous runs of
//! images ([`gradient_leaves`]); each leaf is summed image by image; the leaf
//! sums are added as a balanced binary tree ([`tree_sum`]):
//!
//! ```text
//! images   0 1 2 3 | 4 5 6 7 | 8 9 10 11 | 12 13 14 15      (batch 16, L = 4)
//! leaves   l0 = ((0+1)+2)+3   l1          l2                l3
//! tree            (l0 + l1)         +          (l2 + l3)
//! ```
//!
//! A process given a contiguous, aligned power-of-two block of leaves computes
//! exactly one subtree, and finishing the tree over the processes' subtrees
//! ([`tree_sum`] again, in rank order) gives the bits of one process doing it
//! all. [`crate::kernels::reduce::reduce_tree`] is this for per-image partials (convolutions); the
//! dense layer runs one GEMM per leaf and adds them with [`tree_sum`].

use crate::element::Element;
use rayon::prelude::*;

/// Which part of one gradient leaf a backward pass holds, when a leaf is run
/// as several passes (micro-batches smaller than a leaf): `first` starts the
/// leaf's sum, the others continue it image by image from the gradients the
/// layer holds, and after the `last` they hold the whole leaf's sum: the bits
/// of the leaf run in one pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafPart {
    pub first: bool,
    pub last: bool,
}

impl LeafPart {
    /// A whole batch (or whole leaves) in one pass.
    pub const WHOLE: LeafPart = LeafPart { first: true, last: true };
}

/// Leaves a batch of `batch` images is cut into: the largest of 4, 2, 1 that
/// divides it. Four leaves make the gradient bit-identical for 1, 2 and 4
/// processes; more would allow more processes but cost the dense layer one
/// pass over its weight gradient per leaf.
pub fn gradient_leaves(batch: usize) -> usize {
    [4, 2, 1].into_iter().find(|&leaves| batch.is_multiple_of(leaves) && batch >= leaves).unwrap_or(1)
}

/// Where the balanced tree over `n` items splits: the largest power of two
/// below `n` (`n >= 2`), so aligned power-of-two blocks are whole subtrees.
pub(crate) fn tree_split(n: usize) -> usize {
    n.next_power_of_two() / 2
}

/// `items[0] := items[0] + items[1] + ... + items[n-1]`, added as a balanced
/// binary tree ((0+1)+(2+3)) elementwise; the other items are overwritten.
/// Every item has the same length.
pub fn tree_sum<T: Element>(items: &mut [&mut [T]]) {
    let n = items.len();
    if n < 2 {
        return;
    }
    let (left, right) = items.split_at_mut(tree_split(n));
    tree_sum(left);
    tree_sum(right);
    let (target, addend) = (&mut *left[0], &*right[0]);
    target.par_chunks_mut(4096).zip(addend.par_chunks(4096)).for_each(|(t, a)| {
        for (total, &value) in t.iter_mut().zip(a) {
            *total += value;
        }
    });
}

/// The leaves a layer actually uses for a batch of `batch` images when asked
/// for `leaves`: `leaves` if it divides the batch, else 1 (one leaf, image by
/// image).
pub fn effective_leaves(batch: usize, leaves: usize) -> usize {
    if leaves > 1 && batch.is_multiple_of(leaves) {
        leaves
    } else {
        1
    }
}
