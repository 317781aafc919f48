//! Reductions in a fixed order: the sums that decide whether a run is
//! reproducible.
//!
//! Floating-point addition is not associative, so a sum's bits depend on its
//! order. The reductions here fix the order independently of the thread
//! count: [`reduce_in_order`] adds per-image partial gradients image by image,
//! [`sum_in_lanes`] adds a row in 16 interleaved lanes and then a tree.
//!
//! [`reduce_tree`] sums per-image partials as the batch's gradient tree
//! ([`crate::gradient_tree`]: leaves, then a balanced tree of leaf sums).

use crate::element::Element;
use crate::gradient_tree::{effective_leaves, tree_split};
use rayon::prelude::*;

/// `sum(values)`, added in 16 interleaved partial sums (lane `l` takes elements
/// `l, l + 16, l + 32, ...`) that are then added as a tree: a fixed order, so the
/// result does not depend on threads, and one the compiler can keep in SIMD
/// registers. A plain left-to-right sum is one chain of dependent additions
/// (4 cycles each): for the bias gradient of conv2 that was 46 us per tile, an
/// eighth of the tile's whole backward pass.
pub fn sum_in_lanes<T: Element>(values: &[T]) -> T {
    const LANES: usize = 16;
    let mut lanes = [T::zero(); LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane += value;
        }
    }
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            let upper = lanes[l + width];
            lanes[l] += upper;
        }
        width /= 2;
    }
    chunks.remainder().iter().fold(lanes[0], |sum, &value| sum + value)
}

/// `target[e] = sum_n partials[n * stride + offset + e]`, summing n = 0, 1, 2, ...
/// in order for every element, so the result is independent of threads.
pub fn reduce_in_order<T: Element>(partials: &[T], stride: usize, offset: usize, target: &mut [T]) {
    let batch = partials.len() / stride;
    let len = target.len();
    if batch == 0 {
        target.fill(T::zero());
        return;
    }
    target.par_chunks_mut(4096).enumerate().for_each(|(chunk_index, chunk)| {
        let start = offset + chunk_index * 4096;
        chunk.copy_from_slice(&partials[start..start + chunk.len()]);
        for n in 1..batch {
            let row = &partials[n * stride + start..n * stride + start + chunk.len()];
            for (total, &value) in chunk.iter_mut().zip(row) {
                *total += value;
            }
        }
    });
    debug_assert!(len == 0 || offset + len <= stride);
}

/// `target[e] := target[e] + partials[offset + e] + partials[stride + offset + e] + ...`,
/// added image by image onto what `target` holds: a gradient leaf continued by
/// a later pass over more of its images (micro-batches, see
/// [`crate::gradient_tree::LeafPart`]). The sum of a leaf cut into passes this
/// way has the bits of [`reduce_in_order`] over the whole leaf. `_leaves` is
/// 1 (a pass inside one leaf).
pub fn reduce_in_order_onto<T: Element>(
    partials: &[T],
    stride: usize,
    offset: usize,
    target: &mut [T],
    _leaves: usize,
) {
    let batch = partials.len() / stride.max(1);
    target.par_chunks_mut(4096).enumerate().for_each(|(chunk_index, chunk)| {
        let start = offset + chunk_index * 4096;
        for n in 0..batch {
            let row = &partials[n * stride + start..n * stride + start + chunk.len()];
            for (total, &value) in chunk.iter_mut().zip(row) {
                *total += value;
            }
        }
    });
}

/// `target[e] = sum_n partials[n * stride + offset + e]` over the batch's
/// images as a tree of `leaves` leaves (module docs): image by image inside a
/// leaf, leaf sums added as a balanced tree. `leaves = 1` is
/// [`reduce_in_order`]; a `leaves` that does not divide the batch counts as 1.
pub fn reduce_tree<T: Element>(partials: &[T], stride: usize, offset: usize, target: &mut [T], leaves: usize) {
    let batch = partials.len() / stride.max(1);
    let leaves = effective_leaves(batch, leaves);
    if leaves == 1 {
        return reduce_in_order(partials, stride, offset, target);
    }
    let per_leaf = batch / leaves;
    target.par_chunks_mut(4096).enumerate().for_each(|(chunk_index, chunk)| {
        let start = offset + chunk_index * 4096;
        let len = chunk.len();
        // leaf sums of this chunk, image by image inside each leaf
        let mut sums = vec![T::zero(); leaves * len];
        for (leaf, sum) in sums.chunks_mut(len).enumerate() {
            for n in leaf * per_leaf..(leaf + 1) * per_leaf {
                let row = &partials[n * stride + start..n * stride + start + len];
                if n == leaf * per_leaf {
                    sum.copy_from_slice(row);
                } else {
                    for (total, &value) in sum.iter_mut().zip(row) {
                        *total += value;
                    }
                }
            }
        }
        let mut items: Vec<&mut [T]> = sums.chunks_mut(len).collect();
        tree_sum_serial(&mut items);
        chunk.copy_from_slice(items[0]);
    });
}

/// [`crate::gradient_tree::tree_sum`] without the parallel split (inside an already parallel loop).
fn tree_sum_serial<T: Element>(items: &mut [&mut [T]]) {
    let n = items.len();
    if n < 2 {
        return;
    }
    let (left, right) = items.split_at_mut(tree_split(n));
    tree_sum_serial(left);
    tree_sum_serial(right);
    for (total, &value) in left[0].iter_mut().zip(right[0].iter()) {
        *total += value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradient_tree::{gradient_leaves, tree_sum};

    #[test]
    fn sum_in_lanes_adds_every_element_once() {
        // integers: exact in any order, so every length (below, at and above the
        // 16 lanes, with and without a remainder) must give the exact sum
        for len in [0usize, 1, 5, 15, 16, 17, 31, 32, 33, 100, 880] {
            let values: Vec<f64> = (0..len).map(|i| ((i * 7919) % 23) as f64 - 11.0).collect();
            let expected: f64 = values.iter().sum();
            assert_eq!(sum_in_lanes(&values), expected, "length {len}");
        }
        // and the same bits every time for f32 values that round
        let values: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let first = sum_in_lanes(&values);
        assert_eq!(first.to_bits(), sum_in_lanes(&values).to_bits());
        let plain: f64 = values.iter().map(|&v| v as f64).sum();
        assert!((first as f64 - plain).abs() < 1e-4, "{first} vs {plain}");
    }

    /// Values whose sums round differently in different orders.
    fn rounding_values(n: usize) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.731).sin() * 10f32.powi((i % 7) as i32 - 3)).collect()
    }

    #[test]
    fn leaves_divide_the_batch() {
        assert_eq!([1, 2, 3, 4, 6, 8, 32, 33].map(gradient_leaves), [1, 2, 1, 4, 2, 4, 4, 1]);
    }

    #[test]
    fn a_tree_over_subtrees_equals_the_whole_tree() {
        // 16 images x 5000 elements (more than one 4096 chunk), stride 5003, offset 2
        let (batch, len, stride, offset) = (16, 5000, 5003, 2);
        let partials = rounding_values(batch * stride);
        let mut whole = vec![0f32; len];
        reduce_tree(&partials, stride, offset, &mut whole, 4);
        // the tree shape is what is computed: l0..l3 in order, then (l0+l1)+(l2+l3)
        let leaf = |l: usize, e: usize| (l * 4..l * 4 + 4).fold(0f32, |s, n| s + partials[n * stride + offset + e]);
        for e in [0, 1, 4095, 4096, 4999] {
            let expected = (leaf(0, e) + leaf(1, e)) + (leaf(2, e) + leaf(3, e));
            assert_eq!(whole[e].to_bits(), expected.to_bits(), "element {e}");
        }
        // 2 and 4 "processes": each reduces its block of leaves, then the tree over them
        for ranks in [2, 4] {
            let images = batch / ranks;
            let mut parts: Vec<Vec<f32>> = (0..ranks)
                .map(|r| {
                    let mut part = vec![0f32; len];
                    let block = &partials[r * images * stride..(r + 1) * images * stride];
                    reduce_tree(block, stride, offset, &mut part, 4 / ranks);
                    part
                })
                .collect();
            let mut items: Vec<&mut [f32]> = parts.iter_mut().map(|p| p.as_mut_slice()).collect();
            tree_sum(&mut items);
            assert!(parts[0].iter().zip(&whole).all(|(a, b)| a.to_bits() == b.to_bits()), "{ranks} ranks");
        }
        // and the order matters (the test could fail): in-order differs somewhere
        let mut in_order = vec![0f32; len];
        reduce_in_order(&partials, stride, offset, &mut in_order);
        assert!(in_order.iter().zip(&whole).any(|(a, b)| a.to_bits() != b.to_bits()));
    }
}
