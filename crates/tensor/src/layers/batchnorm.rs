//! Batch normalisation, with PyTorch's semantics (`BatchNorm2d` after a
//! convolution, `BatchNorm1d` after a dense layer: one layer, per channel).
//!
//! ## Math
//!
//! For channel `c`, over the `M` values it has in the batch (`M = N*H*W` for an
//! `(N, C, H, W)` input, `M = N` for `(N, C)`):
//!
//! ```text
//! training:    mean_c = sum x / M                 var_c = sum (x - mean_c)^2 / M   (biased)
//! evaluation:  mean_c = running_mean_c            var_c = running_var_c
//! both:        inv_c  = 1 / sqrt(var_c + eps)     xhat  = (x - mean_c) * inv_c
//!              y      = gamma_c * xhat + beta_c
//! after a training forward (momentum 0.1):
//!              running_mean_c := (1 - momentum) running_mean_c + momentum mean_c
//!              running_var_c  := (1 - momentum) running_var_c  + momentum var_c * M / (M - 1)   (unbiased)
//! ```
//!
//! `eps = 1e-5`; `gamma` starts at 1, `beta` at 0, the running mean at 0 and
//! the running variance at 1, as in PyTorch. The parameters are named
//! `weight` (`gamma`) and `bias` (`beta`), the statistics `running_mean` and
//! `running_var`: PyTorch's names, so a `state_dict` maps onto them.
//!
//! ## Backward
//!
//! `dbeta_c = sum dy`, `dgamma_c = sum dy * xhat`. In evaluation the statistics
//! are constants: `dx = dy * gamma_c * inv_c`. In training `mean_c` and `var_c`
//! depend on every `x` of the channel, which adds two terms:
//!
//! ```text
//! dx = gamma_c * inv_c / M * (M dy - sum dy - xhat * sum (dy * xhat))
//!                               ^^^^^^^^   the mean's term   ^^^^^^^^^^^^^^^^^^^^ the variance's term
//! ```
//!
//! Every sum is taken in f64 in one fixed order, whatever the thread count:
//! first per image (each image's plane of the channel, in pixel order; threads
//! split the planes), then over the images in batch order. Several processes
//! sharing a batch gather each other's per-image sums ([`crate::batch_sync`]:
//! a *synchronised* BatchNorm) and add them in the same order, so the
//! statistics, and the bits, are those of one process holding the whole batch.
//! The parameter gradients `dgamma`, `dbeta` are summed over this process's
//! images as a tree of leaves ([`crate::gradient_tree`]), like every layer's.
//!
//! ```
//! use convnet_tensor::layers::BatchNorm;
//! use convnet_tensor::{Layer, Mode};
//! use ndarray::{ArrayD, IxDyn};
//! let mut bn = BatchNorm::<f64>::new(1).unwrap();
//! let x = ArrayD::from_shape_vec(IxDyn(&[4, 1]), vec![1.0, 2.0, 3.0, 6.0]).unwrap();
//! let mut y = ArrayD::zeros(IxDyn(&[4, 1]));
//! bn.forward(x.view(), y.view_mut(), Mode::train(0));
//! // mean 3, biased variance 3.5: y = (x - 3) / sqrt(3.5 + 1e-5)
//! assert!((y[[3, 0]] - 3.0 / (3.5f64 + 1e-5).sqrt()).abs() < 1e-12);
//! // running statistics moved a tenth of the way: mean 0.3, variance 0.9 + 0.1 * 14 / 3
//! assert!((bn.running_mean()[0] - 0.3).abs() < 1e-12);
//! assert!((bn.running_var()[0] - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-12);
//! ```

use crate::batch_sync::BatchSync;
use crate::element::Element;
use crate::gradient_tree::{effective_leaves, tree_sum};
use crate::layer::{slice, slice_mut, zeros, Layer, Mode, Param, ParamMut};
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD};
use rayon::prelude::*;
use std::sync::Arc;

/// PyTorch's default `eps`.
pub const DEFAULT_EPS: f64 = 1e-5;
/// PyTorch's default `momentum` of the running statistics.
pub const DEFAULT_MOMENTUM: f64 = 0.1;

/// `(mean, biased variance)` of every channel of `x`, laid out as `images`
/// blocks of `channels` planes of `plane` values: the plain sums of the
/// definition, in (image, pixel) order, in f64.
pub fn channel_statistics<T: Element>(x: &[T], channels: usize, plane: usize) -> Vec<(f64, f64)> {
    let images = x.len() / (channels * plane).max(1);
    let count = (images * plane) as f64;
    (0..channels)
        .into_par_iter()
        .map(|c| {
            let values = || (0..images).flat_map(move |n| x[(n * channels + c) * plane..][..plane].iter());
            let mean = values().map(|&v| Element::to_f64(v)).sum::<f64>() / count;
            let var = values().map(|&v| (Element::to_f64(v) - mean).powi(2)).sum::<f64>() / count;
            (mean, var)
        })
        .collect()
}

/// Lanes of [`lane_sum`].
const LANES: usize = 8;

/// `sum_p f(values[p])` over the pixels `p` of a plane, in [`LANES`]
/// interleaved partial sums (lane `l` takes `l, l + 8, ...`) added as a tree,
/// then the tail: a fixed order, so the same bits on any thread count, that
/// runs at the adder's throughput instead of waiting on one chain of
/// dependent additions (which made these sums most of batchnorm's time). The
/// lanes walk the plane in whole chunks of [`LANES`] values, with no index
/// to check, so the compiler keeps them in one vector register.
fn lane_sum<T: Element>(values: &[T], f: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane += f(Element::to_f64(value));
        }
    }
    chunks.remainder().iter().fold(lanes_total(lanes), |sum, &value| sum + f(Element::to_f64(value)))
}

/// The lanes of [`lane_sum`] added as a balanced tree.
fn lanes_total(mut lanes: [f64; LANES]) -> f64 {
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            lanes[l] += lanes[l + width];
        }
        width /= 2;
    }
    lanes[0]
}

/// `f(value)` summed over each `(image, channel)` plane of `x` ([`lane_sum`]),
/// `f` made for the plane's channel by `for_channel`: `images * channels`
/// sums in (image, channel) order.
fn plane_sums<T: Element, F: Fn(f64) -> f64>(
    x: &[T],
    channels: usize,
    plane: usize,
    for_channel: impl Fn(usize) -> F + Sync,
) -> Vec<f64> {
    x.par_chunks(plane).enumerate().map(|(i, values)| lane_sum(values, for_channel(i % channels))).collect()
}

/// Totals of per-image rows of `row` sums (`(images, row)`), adding the
/// images in order.
fn channel_totals(per_image: &[f64], row: usize) -> Vec<f64> {
    let mut totals = vec![0.0; row];
    for image in per_image.chunks(row) {
        for (total, &value) in totals.iter_mut().zip(image) {
            *total += value;
        }
    }
    totals
}

/// Plain twin of the training forward: `y = gamma (x - mean) / sqrt(var + eps) + beta`
/// with the batch's statistics, element by element (the layer's fast path must
/// equal it).
pub fn batchnorm_train_naive(
    x: &[f64],
    channels: usize,
    plane: usize,
    gamma: &[f64],
    beta: &[f64],
    eps: f64,
) -> Vec<f64> {
    let stats = channel_statistics(x, channels, plane);
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / plane) % channels;
            let (mean, var) = stats[c];
            gamma[c] * (v - mean) / (var + eps).sqrt() + beta[c]
        })
        .collect()
}

/// Batch normalisation over the channel axis (axis 1) of `(N, C)` or
/// `(N, C, H, W)` inputs; see the module docs.
pub struct BatchNorm<T: Element> {
    channels: usize,
    eps: f64,
    momentum: f64,
    /// `gamma` `(C,)`, `beta` `(C,)` and their gradients.
    gamma: ArrayD<T>,
    beta: ArrayD<T>,
    grad_gamma: ArrayD<T>,
    grad_beta: ArrayD<T>,
    /// Running statistics `(C,)` (evaluation mode), saved with the model.
    running_mean: ArrayD<T>,
    running_var: ArrayD<T>,
    /// The last forward's `(mean_c, inv_c)` and whether it was a training pass.
    saved: Vec<(f64, f64)>,
    trained: bool,
    /// The other processes sharing each batch, if any ([`crate::batch_sync`]).
    sync: Option<Arc<dyn BatchSync>>,
    /// Gradient leaves of this process's part of the batch ([`crate::gradient_tree`]).
    leaves: usize,
}

impl<T: Element> std::fmt::Debug for BatchNorm<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchNorm").field("channels", &self.channels).field("eps", &self.eps).finish()
    }
}

impl<T: Element> BatchNorm<T> {
    /// A batch normalisation of `channels` channels with PyTorch's defaults.
    pub fn new(channels: usize) -> crate::error::Result<Self> {
        Self::with_options(channels, DEFAULT_EPS, DEFAULT_MOMENTUM)
    }

    /// With `eps` (> 0) and `momentum` (in `[0, 1]`).
    pub fn with_options(channels: usize, eps: f64, momentum: f64) -> crate::error::Result<Self> {
        if channels == 0 || !(eps > 0.0 && eps.is_finite()) || !(0.0..=1.0).contains(&momentum) {
            return Err(crate::error::TensorError::Config(format!(
                "batchnorm needs channels > 0, eps > 0 and momentum in [0, 1], got {channels}, {eps}, {momentum}"
            )));
        }
        let ones = ArrayD::from_elem(ndarray::IxDyn(&[channels]), T::one());
        Ok(BatchNorm {
            channels,
            eps,
            momentum,
            gamma: ones.clone(),
            beta: zeros(&[channels]),
            grad_gamma: zeros(&[channels]),
            grad_beta: zeros(&[channels]),
            running_mean: zeros(&[channels]),
            running_var: ones,
            saved: Vec::new(),
            trained: false,
            sync: None,
            leaves: 1,
        })
    }

    /// The running mean `(C,)`.
    pub fn running_mean(&self) -> &ArrayD<T> {
        &self.running_mean
    }

    /// The running (unbiased) variance `(C,)`.
    pub fn running_var(&self) -> &ArrayD<T> {
        &self.running_var
    }

    /// `eps` and `momentum`.
    pub fn options(&self) -> (f64, f64) {
        (self.eps, self.momentum)
    }

    /// Values per image of one channel: `H*W` (1 for a flat input).
    fn plane(&self, shape: &[usize]) -> usize {
        shape[2..].iter().product()
    }

    /// Every image's per-image sums of the batch: this process's, or with
    /// other processes sharing the batch, all of theirs in batch order.
    fn whole_batch(&self, local: Vec<f64>, per_image: usize) -> Vec<f64> {
        match &self.sync {
            Some(sync) => sync.gather_images(&local, per_image),
            None => local,
        }
    }

    /// `(mean_c, inv_c)` from `(mean_c, var_c)`: `inv_c = 1 / sqrt(var_c + eps)`.
    fn normalizers(&self, stats: &[(f64, f64)]) -> Vec<(f64, f64)> {
        stats.iter().map(|&(mean, var)| (mean, 1.0 / (var + self.eps).sqrt())).collect()
    }

    /// `y = gamma_c (x - mean_c) inv_c + beta_c` as `y = a_c x + b_c`: `(a_c, b_c)`
    /// with `a_c = gamma_c inv_c`, `b_c = beta_c - a_c mean_c`, taken in f64 once
    /// per channel from `(mean_c, inv_c)`.
    fn affine(&self, normalizers: &[(f64, f64)]) -> Vec<(T, T)> {
        let (gamma, beta) = (&self.gamma, &self.beta);
        (normalizers.iter().enumerate())
            .map(|(c, &(mean, inv))| {
                let scale = Element::to_f64(gamma[c]) * inv;
                (T::from_f64(scale), T::from_f64(Element::to_f64(beta[c]) - scale * mean))
            })
            .collect()
    }

    /// The evaluation-mode forward as `y = a_c x + b_c` per channel: `(a_c, b_c)`
    /// from the running statistics, the values [`Layer::forward`] in
    /// [`Mode::Eval`] multiplies and adds (inference applies them inside the
    /// convolution before, [`crate::Conv2d::forward_batchnorm`]).
    pub fn eval_affine(&self) -> Vec<(T, T)> {
        self.affine(&self.normalizers(&self.running_statistics()))
    }

    /// `(running_mean_c, running_var_c)` in f64.
    fn running_statistics(&self) -> Vec<(f64, f64)> {
        let (mean, var) = (&self.running_mean, &self.running_var);
        (0..self.channels).map(|c| (Element::to_f64(mean[c]), Element::to_f64(var[c]))).collect()
    }

    /// `(mean_c, biased var_c)` of the whole batch (see the module docs), and
    /// the number of values per channel.
    fn batch_statistics(&self, x: &[T], plane: usize) -> (Vec<(f64, f64)>, usize) {
        let channels = self.channels;
        let sums = self.whole_batch(plane_sums(x, channels, plane, |_| |v| v), channels);
        let count = sums.len() / channels * plane;
        let mean: Vec<f64> = channel_totals(&sums, channels).iter().map(|s| s / count as f64).collect();
        let deviations = plane_sums(x, channels, plane, |c| {
            let mean = mean[c];
            move |v: f64| (v - mean).powi(2)
        });
        let deviations = self.whole_batch(deviations, channels);
        let var = channel_totals(&deviations, channels).into_iter().map(|s| s / count as f64);
        (mean.iter().copied().zip(var).collect(), count)
    }
}

impl<T: Element> Layer<T> for BatchNorm<T> {
    fn kind(&self) -> &'static str {
        "batchnorm"
    }

    fn describe(&self) -> String {
        format!("{} channels, eps {:e}, momentum {}", self.channels, self.eps, self.momentum)
    }

    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>, String> {
        match input_shape {
            [c] | [c, _, _] if *c == self.channels => Ok(input_shape.to_vec()),
            [c] | [c, _, _] => Err(format!("expects {} channels, got {c}", self.channels)),
            _ => Err(format!("expects a (C,) or (C, H, W) input, got shape {input_shape:?}")),
        }
    }

    fn forward(&mut self, input: ArrayViewD<'_, T>, mut output: ArrayViewMutD<'_, T>, mode: Mode) {
        let (channels, plane) = (self.channels, self.plane(input.shape()));
        let x = slice(&input);
        self.trained = matches!(mode, Mode::Train { .. });
        let stats: Vec<(f64, f64)> = if self.trained {
            // mean_c, var_c over the whole batch (biased), then the running statistics
            let (stats, values) = self.batch_statistics(x, plane);
            let m = self.momentum;
            let unbiased = if values > 1 { values as f64 / (values - 1) as f64 } else { 1.0 };
            for (c, &(mean, var)) in stats.iter().enumerate() {
                let rm = &mut self.running_mean[c];
                *rm = T::from_f64((1.0 - m) * Element::to_f64(*rm) + m * mean);
                let rv = &mut self.running_var[c];
                *rv = T::from_f64((1.0 - m) * Element::to_f64(*rv) + m * var * unbiased);
            }
            stats
        } else {
            self.running_statistics()
        };
        self.saved = self.normalizers(&stats);
        // y = gamma_c * (x - mean_c) * inv_c + beta_c = a_c x + b_c, then one multiply-add per value in
        // the element type (a pass the compiler vectorises), one plane (image, channel) per task
        let affine = self.affine(&self.saved);
        slice_mut(&mut output).par_chunks_mut(plane).zip(x.par_chunks(plane)).enumerate().for_each(|(i, (y, x))| {
            let (a, b) = affine[i % channels];
            for (y, &x) in y.iter_mut().zip(x) {
                *y = x * a + b;
            }
        });
    }

    fn backward(
        &mut self,
        input: ArrayViewD<'_, T>,
        _output: ArrayViewD<'_, T>,
        grad_output: ArrayViewD<'_, T>,
        grad_input: Option<ArrayViewMutD<'_, T>>,
    ) {
        let (channels, plane) = (self.channels, self.plane(input.shape()));
        let (x, dy) = (slice(&input), slice(&grad_output));
        let saved = &self.saved;
        // forward: y = gamma xhat + beta, so per image and channel: sum dy and sum dy * xhat
        let per_image: Vec<f64> = x
            .par_chunks(plane)
            .zip(dy.par_chunks(plane))
            .enumerate()
            .flat_map_iter(|(i, (x, dy))| {
                let (mean, inv) = saved[i % channels];
                // one pass over the plane: sum dy and sum dy (x - mean), in lanes
                let (mut dy_lanes, mut dyx_lanes) = ([0.0f64; LANES], [0.0f64; LANES]);
                let whole = dy.len() - dy.len() % LANES;
                for (x, dy) in x[..whole].chunks_exact(LANES).zip(dy[..whole].chunks_exact(LANES)) {
                    for l in 0..LANES {
                        let g = Element::to_f64(dy[l]);
                        dy_lanes[l] += g;
                        dyx_lanes[l] += g * (Element::to_f64(x[l]) - mean);
                    }
                }
                let tail = |f: &dyn Fn(usize) -> f64, lanes: [f64; LANES]| {
                    (whole..dy.len()).fold(lanes_total(lanes), |sum, p| sum + f(p))
                };
                let sum_dy = tail(&|p| Element::to_f64(dy[p]), dy_lanes);
                let sum_dy_x = tail(&|p| Element::to_f64(dy[p]) * (Element::to_f64(x[p]) - mean), dyx_lanes);
                [sum_dy, sum_dy_x * inv]
            })
            .collect();
        // dbeta_c = sum dy, dgamma_c = sum dy * xhat over this process's images, as a tree of leaves
        let row = 2 * channels;
        let images = per_image.len() / row;
        let leaves = effective_leaves(images, self.leaves);
        // each leaf's sums rounded to the element type first, as the processes sharing a
        // batch add their subtrees (another process's leaves arrive as T)
        let leaf_len = (row * images / leaves).max(row);
        let to_elements = |leaf: &[f64]| channel_totals(leaf, row).into_iter().map(T::from_f64).collect::<Vec<T>>();
        let mut leaf_sums: Vec<Vec<T>> = per_image.chunks(leaf_len).map(to_elements).collect();
        tree_sum(&mut leaf_sums.iter_mut().map(Vec::as_mut_slice).collect::<Vec<_>>());
        for c in 0..channels {
            self.grad_beta[c] = leaf_sums[0][2 * c];
            self.grad_gamma[c] = leaf_sums[0][2 * c + 1];
        }
        // the input gradient of training mode needs the whole batch's sums
        let (sums, count) = if self.trained {
            let all = self.whole_batch(per_image, row);
            (channel_totals(&all, row), (all.len() / row * plane) as f64)
        } else {
            (Vec::new(), 0.0)
        };
        let Some(mut grad_input) = grad_input else { return };
        let (gamma, trained) = (&self.gamma, self.trained);
        let dx = slice_mut(&mut grad_input);
        // dx = gamma_c inv_c / M (M dy - sum dy - xhat sum(dy xhat)), xhat = (x - mean_c) inv_c, which is
        // dx = p_c dy + q_c x + r_c with per-channel p, q, r taken in f64 (in evaluation mode, where the
        // statistics are constants, dx = gamma_c inv_c dy: q = r = 0), then two multiply-adds per value
        let coefficients: Vec<(T, T, T)> = (0..channels)
            .map(|c| {
                let (mean, inv) = saved[c];
                let scale = Element::to_f64(gamma[c]) * inv;
                if !trained {
                    return (T::from_f64(scale), T::zero(), T::zero());
                }
                let (sum_dy, sum_dy_xhat) = (sums[2 * c], sums[2 * c + 1]);
                let q = -scale * inv * sum_dy_xhat / count;
                (T::from_f64(scale), T::from_f64(q), T::from_f64(-scale * sum_dy / count - q * mean))
            })
            .collect();
        dx.par_chunks_mut(plane).zip(x.par_chunks(plane)).zip(dy.par_chunks(plane)).enumerate().for_each(
            |(i, ((dx, x), dy))| {
                let (p, q, r) = coefficients[i % channels];
                for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
                    *dx = p * dy + q * x + r;
                }
            },
        );
    }

    fn params(&self) -> Vec<Param<'_, T>> {
        vec![
            Param { name: "weight", value: &self.gamma, grad: &self.grad_gamma },
            Param { name: "bias", value: &self.beta, grad: &self.grad_beta },
        ]
    }

    fn params_mut(&mut self) -> Vec<ParamMut<'_, T>> {
        vec![
            ParamMut { name: "weight", value: &mut self.gamma, grad: &mut self.grad_gamma },
            ParamMut { name: "bias", value: &mut self.beta, grad: &mut self.grad_beta },
        ]
    }

    fn set_gradient_leaves(&mut self, leaves: usize) {
        self.leaves = leaves;
    }

    fn set_batch_sync(&mut self, sync: Option<Arc<dyn BatchSync>>) {
        self.sync = sync;
    }

    fn buffers(&self) -> Vec<(String, &ArrayD<T>)> {
        vec![("running_mean".into(), &self.running_mean), ("running_var".into(), &self.running_var)]
    }

    fn buffers_mut(&mut self) -> Vec<(String, &mut ArrayD<T>)> {
        vec![("running_mean".into(), &mut self.running_mean), ("running_var".into(), &mut self.running_var)]
    }

    fn backward_needs_output(&self) -> bool {
        false
    }

    fn forward_flops(&self, input_shape: &[usize]) -> u64 {
        // a multiply and an add per value (the statistics add about as much again in training)
        2 * input_shape.iter().product::<usize>() as u64
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }
}
