//! Weight initialisation: how the weights of convolutions and dense layers are
//! first drawn, as Keras, PyTorch and torchvision do it.
//!
//! For a convolution `(OC, C, KH, KW)`, `fan_in = C*KH*KW` and
//! `fan_out = OC*KH*KW`; for a dense layer `(out, in)`, `fan_in = in` and
//! `fan_out = out`.
//!
//! | [`Init`] | weights | biases | who uses it |
//! |---|---|---|---|
//! | `glorot-uniform` | `U(-a, a)`, `a = sqrt(6 / (fan_in + fan_out))` | 0 | Keras' default |
//! | `pytorch` | `U(-b, b)`, `b = 1 / sqrt(fan_in)` | `U(-b, b)` | `nn.Conv2d`, `nn.Linear` defaults |
//! | `kaiming-normal` | convolutions `N(0, 2 / fan_out)`; dense layers as `pytorch` | 0 / as `pytorch` | torchvision's ResNet |
//!
//! Glorot keeps the variance of activations and of gradients roughly constant
//! from layer to layer; PyTorch's default (`kaiming_uniform_` with
//! `a = sqrt(5)`) is smaller, `Var = 1 / (3 fan_in)`; He's `2 / fan_out` is
//! made for ReLU networks. Which one trains best depends on the network: with a
//! batchnorm after a convolution the forward pass does not see the scale of its
//! weights, but Adam's steps are of a fixed size, so smaller weights learn
//! relatively faster.
//!
//! Values are drawn in `f64` from a ChaCha8 generator seeded by (seed, layer
//! index) and then converted, so the `f32` and `f64` models built from one seed
//! hold the same numbers (up to rounding), and a seed gives the same model on
//! every machine. The weights are drawn first, in their row-major order, then
//! the biases.
//!
//! ```
//! use convnet_tensor::init::Init;
//! use ndarray::ArrayD;
//! // a dense layer 4 -> 2: PyTorch's bound is 1/sqrt(4) = 0.5, Glorot's sqrt(6/6) = 1
//! let mut weight = ArrayD::<f64>::zeros(vec![2, 4]);
//! let mut bias = ArrayD::<f64>::zeros(vec![2]);
//! Init::Pytorch.fill(&mut weight, Some(&mut bias), false, 7, 0);
//! assert!(weight.iter().chain(bias.iter()).all(|w| w.abs() <= 0.5));
//! assert!(bias.iter().all(|&b| b != 0.0));
//! Init::GlorotUniform.fill(&mut weight, Some(&mut bias), false, 7, 0);
//! assert!(weight.iter().any(|w| w.abs() > 0.5) && bias.iter().all(|&b| b == 0.0));
//! ```

use crate::element::Element;
use ndarray::ArrayD;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// A weight initialisation scheme (the module docs give each one's law).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Init {
    /// Keras' default: Glorot-uniform weights, zero biases.
    #[default]
    GlorotUniform,
    /// PyTorch's `nn.Conv2d` / `nn.Linear` default: weights and biases from
    /// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.
    Pytorch,
    /// torchvision's ResNet: convolutions `N(0, 2/fan_out)` (`kaiming_normal_`,
    /// `mode="fan_out"`, ReLU gain) with zero biases; dense layers as
    /// [`Init::Pytorch`].
    KaimingNormal,
}

impl Init {
    /// Is this the default, Keras' Glorot-uniform? (Architectures that keep it
    /// do not write the field, so their files are as before.)
    pub fn is_default(&self) -> bool {
        *self == Init::GlorotUniform
    }

    /// Fills a layer's `weight` (first axis = outputs, second = inputs, the
    /// rest = receptive field; `convolution` says whether it is a convolution's)
    /// and its `bias`, if it has one, from `(seed, layer_index)`.
    pub fn fill<T: Element>(
        self,
        weight: &mut ArrayD<T>,
        bias: Option<&mut ArrayD<T>>,
        convolution: bool,
        seed: u64,
        layer_index: usize,
    ) {
        let shape = weight.shape();
        let receptive: usize = shape[2..].iter().product();
        let fan_in = shape.get(1).copied().unwrap_or(1) * receptive;
        let fan_out = shape[0] * receptive;
        let mut rng = crate::rng::rng_at(seed, layer_index as u64);
        let pytorch_bound = 1.0 / (fan_in as f64).sqrt();
        let mut uniform = |values: &mut ArrayD<T>, limit: f64| {
            for w in values.iter_mut() {
                *w = T::from_f64(rng.random_range(-limit..limit));
            }
        };
        let zero_bias = match (self, convolution) {
            (Init::GlorotUniform, _) => {
                uniform(weight, (6.0 / (fan_in + fan_out) as f64).sqrt());
                bias
            }
            (Init::Pytorch, _) | (Init::KaimingNormal, false) => {
                uniform(weight, pytorch_bound);
                if let Some(bias) = bias {
                    uniform(bias, pytorch_bound);
                }
                None
            }
            (Init::KaimingNormal, true) => {
                let std = (2.0 / fan_out as f64).sqrt();
                for w in weight.iter_mut() {
                    *w = T::from_f64(std * standard_normal(&mut rng));
                }
                bias
            }
        };
        if let Some(bias) = zero_bias {
            bias.fill(T::zero());
        }
    }
}

/// One draw from `N(0, 1)` by the Box-Muller transform: two uniforms `u1` in
/// `(0, 1]` and `u2` in `[0, 1)` give `sqrt(-2 ln u1) * cos(2 pi u2)`.
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Fills `weight` (first axis = outputs, second = inputs, the rest = receptive
/// field) with Glorot-uniform values from `(seed, layer_index)`: Keras'
/// default, [`Init::GlorotUniform`] (biases stay zero).
pub fn glorot_uniform<T: Element>(weight: &mut ArrayD<T>, seed: u64, layer_index: usize) {
    Init::GlorotUniform.fill(weight, None, false, seed, layer_index);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sample moments of a large layer match each law's variance (within 3%):
    /// Glorot `2/(fan_in+fan_out)`, PyTorch `1/(3 fan_in)`, He `2/fan_out`.
    #[test]
    fn each_law_has_its_variance() {
        let (oc, c) = (256, 128);
        let (fan_in, fan_out) = ((c * 9) as f64, (oc * 9) as f64);
        for (init, variance) in [
            (Init::GlorotUniform, 2.0 / (fan_in + fan_out)),
            (Init::Pytorch, 1.0 / (3.0 * fan_in)),
            (Init::KaimingNormal, 2.0 / fan_out),
        ] {
            let mut weight = ArrayD::<f64>::zeros(vec![oc, c, 3, 3]);
            init.fill(&mut weight, None, true, 3, 1);
            let n = weight.len() as f64;
            let mean = weight.sum() / n;
            let var = weight.iter().map(|w| (w - mean).powi(2)).sum::<f64>() / n;
            assert!(mean.abs() < 0.01 * variance.sqrt(), "{init:?} mean {mean}");
            assert!((var / variance - 1.0).abs() < 0.03, "{init:?}: variance {var}, expected {variance}");
        }
    }

    /// He-normal draws are normal: about 68.3% within one standard deviation.
    #[test]
    fn kaiming_normal_is_normal() {
        let mut weight = ArrayD::<f64>::zeros(vec![512, 64, 3, 3]);
        Init::KaimingNormal.fill(&mut weight, None, true, 5, 0);
        let std = (2.0f64 / (512.0 * 9.0)).sqrt();
        let inside = weight.iter().filter(|w| w.abs() < std).count() as f64 / weight.len() as f64;
        assert!((inside - 0.6827).abs() < 0.005, "{inside}");
    }
}
