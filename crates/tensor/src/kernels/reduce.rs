//! Reductions in a fixed order: the sums that decide whether a run is
//! reproducible.
//!
//! Floating-point addition is not associative, so a sum's bits depend on its
//! order. Both reductions here fix the order independently of the thread
//! count: [`reduce_in_order`] adds per-image partial gradients image by image,
//! [`sum_in_lanes`] adds a row in 16 interleaved lanes and then a tree.

use crate::element::Element;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
