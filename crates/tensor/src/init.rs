//! Weight initialisation, Keras' defaults: Glorot-uniform kernels, zero biases.
//!
//! Glorot (Xavier) uniform draws each weight from `U(-limit, limit)` with
//! `limit = sqrt(6 / (fan_in + fan_out))`, which keeps the variance of
//! activations and of gradients roughly constant from layer to layer. For a
//! convolution `(OC, C, KH, KW)`, `fan_in = C*KH*KW` and `fan_out = OC*KH*KW`; for a
//! dense layer `(out, in)`, `fan_in = in` and `fan_out = out`.
//!
//! Values are drawn in `f64` from a ChaCha8 generator seeded by (seed, layer
//! index) and then converted, so the `f32` and `f64` models built from one seed
//! hold the same numbers (up to rounding), and a seed gives the same model on
//! every machine.

use crate::element::Element;
use ndarray::ArrayD;
use rand::Rng;

/// Fills `weight` (first axis = outputs, second = inputs, the rest = receptive
/// field) with Glorot-uniform values from `(seed, layer_index)`.
pub fn glorot_uniform<T: Element>(weight: &mut ArrayD<T>, seed: u64, layer_index: usize) {
    let shape = weight.shape();
    let receptive: usize = shape[2..].iter().product();
    let fan_in = shape.get(1).copied().unwrap_or(1) * receptive;
    let fan_out = shape[0] * receptive;
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
    let mut rng = crate::rng::rng_at(seed, layer_index as u64);
    for w in weight.iter_mut() {
        *w = T::from_f64(rng.random_range(-limit..limit));
    }
}
