//! Softmax + sparse categorical cross-entropy, fused.
//!
//! ## Math and shapes
//!
//! Logits `z` `(N, K)`, integer labels `y` `(N,)` in `0..K`, optional class
//! weights `w` `(K,)` (all 1 by default):
//!
//! ```text
//! loss = (1/N) * sum_n w[y_n] * ( logsumexp(z[n]) - z[n, y_n] )
//! logsumexp(z) = m + ln sum_k exp(z_k - m),   m = max_k z_k   (stable: no overflow)
//! ```
//!
//! which equals `-(1/N) sum_n w[y_n] ln softmax(z[n])[y_n]`: Keras'
//! `SparseCategoricalCrossentropy(from_logits=True)` with its default
//! sum-over-batch-size reduction, and PyTorch's `CrossEntropyLoss` when
//! unweighted.
//!
//! ## Backward
//!
//! The derivative of `logsumexp(z) - z_y` with respect to `z_k` is
//! `softmax(z)_k - [k == y]`, so
//!
//! ```text
//! dz[n, k] = w[y_n] * (p[n, k] - onehot(y_n)[k]) / N
//! ```
//!
//! Fusing the two avoids the division by a tiny probability that a separate
//! softmax and log would need, and costs one pass.
//!
//! ```
//! use convnet_tensor::SoftmaxCrossEntropy;
//! use convnet_tensor::ndarray::array;
//! let mut loss_fn = SoftmaxCrossEntropy::<f64>::new();
//! // equal logits over 4 classes: loss = ln 4
//! let loss = loss_fn.forward(array![[0.0, 0.0, 0.0, 0.0]].into_dyn().view(), &[2]).unwrap();
//! assert!((loss - 4f64.ln()).abs() < 1e-12);
//! // gradient (p - onehot) / N = [0.25, 0.25, -0.75, 0.25]
//! assert_eq!(loss_fn.grad_logits().as_slice().unwrap(), &[0.25, 0.25, -0.75, 0.25]);
//! ```

use crate::element::Element;
use crate::error::{Result, TensorError};
use crate::layers::softmax::softmax_row;
use ndarray::{ArrayD, ArrayViewD, IxDyn};

/// The fused loss. Holds its probability and gradient buffers for reuse.
#[derive(Debug, Default)]
pub struct SoftmaxCrossEntropy<T> {
    class_weights: Option<Vec<T>>,
    /// `(N, K)` softmax probabilities of the last forward.
    probs: ArrayD<T>,
    /// `(N, K)` gradient with respect to the logits.
    grad_logits: ArrayD<T>,
    /// `(N,)` weighted loss of each sample, `w[y_n] * (logsumexp(z[n]) - z[n, y_n])`.
    sample_losses: Vec<T>,
}

impl<T: Element> SoftmaxCrossEntropy<T> {
    /// Unweighted loss.
    pub fn new() -> Self {
        SoftmaxCrossEntropy {
            class_weights: None,
            probs: ArrayD::zeros(IxDyn(&[0, 0])),
            grad_logits: ArrayD::zeros(IxDyn(&[0, 0])),
            sample_losses: Vec::new(),
        }
    }

    /// Loss with per-class weights (e.g. `total / (classes * count)` for
    /// imbalanced data).
    pub fn with_class_weights(weights: Vec<T>) -> Self {
        SoftmaxCrossEntropy { class_weights: Some(weights), ..Self::new() }
    }

    /// Computes the mean loss, the probabilities and the gradient for a batch.
    /// `logits` is `(N, K)`, `labels` has `N` entries in `0..K`.
    pub fn forward(&mut self, logits: ArrayViewD<'_, T>, labels: &[usize]) -> Result<T> {
        self.forward_part(logits, labels, labels.len())
    }

    /// [`Self::forward`] for a part of a batch of `batch_total` images (a
    /// process's share in data-parallel training): the gradient is divided by
    /// `batch_total`, not by this part's `N`, so the parts' gradients add up to
    /// the batch's; the loss returned is this part's sum over `batch_total`.
    pub fn forward_part(&mut self, logits: ArrayViewD<'_, T>, labels: &[usize], batch_total: usize) -> Result<T> {
        let shape = logits.shape();
        if shape.len() != 2 || shape[0] != labels.len() {
            return Err(TensorError::Mismatch(format!(
                "loss expects (N, classes) logits for {} labels, got {:?}",
                labels.len(),
                shape
            )));
        }
        let (batch, classes) = (shape[0], shape[1]);
        if let Some(weights) = &self.class_weights {
            if weights.len() != classes {
                return Err(TensorError::Mismatch(format!("{} class weights for {classes} classes", weights.len())));
            }
        }
        if let Some(&label) = labels.iter().find(|&&label| label >= classes) {
            return Err(TensorError::Label { label, classes });
        }
        if self.probs.shape() != shape {
            self.probs = ArrayD::zeros(IxDyn(shape));
            self.grad_logits = ArrayD::zeros(IxDyn(shape));
        }
        let logits = logits.as_standard_layout();
        let logits = logits.as_slice().expect("standard layout");
        let probs = self.probs.as_slice_mut().expect("contiguous");
        let grad = self.grad_logits.as_slice_mut().expect("contiguous");
        let inv_batch = T::one() / T::from_f64(batch_total.max(1) as f64);
        self.sample_losses.clear();
        for n in 0..batch {
            let z = &logits[n * classes..(n + 1) * classes];
            let p = &mut probs[n * classes..(n + 1) * classes];
            softmax_row(z, p);
            let max = z.iter().fold(T::neg_infinity(), |m, &v| if v > m { v } else { m });
            let log_sum_exp = max + z.iter().fold(T::zero(), |s, &v| s + (v - max).exp()).ln();
            let weight = self.class_weights.as_ref().map_or(T::one(), |w| w[labels[n]]);
            self.sample_losses.push(weight * (log_sum_exp - z[labels[n]]));
            // dz = w * (p - onehot) / N
            for (k, (g, &pk)) in grad[n * classes..(n + 1) * classes].iter_mut().zip(p.iter()).enumerate() {
                let target = if k == labels[n] { T::one() } else { T::zero() };
                *g = weight * (pk - target) * inv_batch;
            }
        }
        Ok(Self::sum_in_order(&self.sample_losses) * inv_batch)
    }

    /// The weighted loss of each sample of the last forward, `(N,)`: the batch
    /// loss is their sum in order ([`Self::sum_in_order`]) over the batch size.
    pub fn sample_losses(&self) -> &[T] {
        &self.sample_losses
    }

    /// `sum_n losses[n]`, added left to right: how the loss of a batch is
    /// summed, here or from the parts' [`Self::sample_losses`] gathered in order.
    pub fn sum_in_order(losses: &[T]) -> T {
        losses.iter().fold(T::zero(), |total, &loss| total + loss)
    }

    /// Softmax probabilities of the last forward, `(N, K)`.
    pub fn probs(&self) -> &ArrayD<T> {
        &self.probs
    }

    /// `dL/dlogits` of the last forward, `(N, K)`.
    pub fn grad_logits(&self) -> &ArrayD<T> {
        &self.grad_logits
    }

    /// Number of samples of the last forward whose arg-max matched the label.
    pub fn correct(&self, labels: &[usize]) -> usize {
        let classes = self.probs.shape()[1].max(1);
        self.probs
            .as_slice()
            .expect("contiguous")
            .chunks(classes)
            .zip(labels)
            .filter(|(row, &label)| argmax(row) == label)
            .count()
    }
}

/// Index of the largest element (first one on ties).
pub fn argmax<T: Element>(row: &[T]) -> usize {
    let mut best = 0;
    for (k, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = k;
        }
    }
    best
}

/// Plain twin: loss and gradient straight from `-ln(softmax)`, no fusion.
pub fn softmax_cross_entropy_naive<T: Element>(logits: &[T], labels: &[usize], classes: usize) -> (T, Vec<T>) {
    let batch = labels.len();
    let mut loss = T::zero();
    let mut grad = vec![T::zero(); logits.len()];
    for n in 0..batch {
        let z = &logits[n * classes..(n + 1) * classes];
        let denom: T = z.iter().fold(T::zero(), |s, &v| s + v.exp());
        for k in 0..classes {
            let p = z[k].exp() / denom;
            if k == labels[n] {
                loss -= p.ln();
            }
            grad[n * classes + k] = (p - if k == labels[n] { T::one() } else { T::zero() }) / T::from_f64(batch as f64);
        }
    }
    (loss / T::from_f64(batch as f64), grad)
}
