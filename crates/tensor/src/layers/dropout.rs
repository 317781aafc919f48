//! Inverted dropout.
//!
//! In training, each element is kept with probability `1 - rate` and scaled by
//! `1 / (1 - rate)`, or zeroed:
//!
//! ```text
//! mask[e] = 1/(1 - rate) with probability 1 - rate, else 0
//! y = x * mask            dx = dy * mask
//! ```
//!
//! so the expected activation is unchanged and evaluation is the identity
//! (`y = x`), as in Keras and PyTorch.
//!
//! The mask of image `n` is drawn from a generator seeded by (step seed, `n`)
//! (`n` counted in the whole batch: `first_image + n` of [`Mode::Train`]),
//! so it does not depend on how the batch is split across threads, and two
//! forward passes with the same [`Mode::Train`] seed draw the same mask (which
//! is what lets [`crate::gradcheck`] check a model with dropout on).

use crate::element::Element;
use crate::layer::{slice, slice_mut, Layer, Mode};
use ndarray::{ArrayViewD, ArrayViewMutD};
use rand::Rng;
use rayon::prelude::*;

/// The dropout layer.
#[derive(Debug)]
pub struct Dropout<T> {
    rate: f64,
    /// `(N, ...)` scale factors of the last training forward (0 or 1/(1-rate)).
    mask: Vec<T>,
    /// Whether the last forward was in training mode.
    trained: bool,
}

impl<T: Element> Dropout<T> {
    /// Dropout with drop probability `rate` in `[0, 1)`.
    pub fn new(rate: f64) -> crate::error::Result<Self> {
        if !(0.0..1.0).contains(&rate) {
            return Err(crate::error::TensorError::Config(format!("dropout rate must be in [0, 1), got {rate}")));
        }
        Ok(Dropout { rate, mask: Vec::new(), trained: false })
    }

    /// The drop probability.
    pub fn rate(&self) -> f64 {
        self.rate
    }
}

impl<T: Element> Layer<T> for Dropout<T> {
    fn kind(&self) -> &'static str {
        "dropout"
    }

    fn describe(&self) -> String {
        format!("rate {}", self.rate)
    }

    fn backward_needs_output(&self) -> bool {
        false
    }

    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>, String> {
        Ok(input_shape.to_vec())
    }

    fn forward(&mut self, input: ArrayViewD<'_, T>, mut output: ArrayViewMutD<'_, T>, mode: Mode) {
        let x = slice(&input);
        let y = slice_mut(&mut output);
        let Mode::Train { seed, first_image } = mode else {
            self.trained = false;
            y.copy_from_slice(x);
            return;
        };
        self.trained = true;
        let batch = input.shape()[0].max(1);
        let per_image = x.len() / batch;
        self.mask.resize(x.len(), T::zero());
        let keep = 1.0 - self.rate;
        let scale = T::from_f64(1.0 / keep);
        self.mask.par_chunks_mut(per_image.max(1)).enumerate().for_each(|(n, mask)| {
            let mut rng = crate::rng::rng_at(seed, (first_image + n) as u64);
            for m in mask.iter_mut() {
                *m = if rng.random::<f64>() < keep { scale } else { T::zero() };
            }
        });
        for ((y, &x), &m) in y.iter_mut().zip(x).zip(&self.mask) {
            *y = x * m;
        }
    }

    fn backward(
        &mut self,
        _input: ArrayViewD<'_, T>,
        _output: ArrayViewD<'_, T>,
        grad_output: ArrayViewD<'_, T>,
        grad_input: Option<ArrayViewMutD<'_, T>>,
    ) {
        let Some(mut grad_input) = grad_input else { return };
        let dx = slice_mut(&mut grad_input);
        let dy = slice(&grad_output);
        if !self.trained {
            dx.copy_from_slice(dy);
            return;
        }
        // in the forward pass this was `y = x * mask`, so now `dx = dy * mask`
        for ((dx, &dy), &m) in dx.iter_mut().zip(dy).zip(&self.mask) {
            *dx = dy * m;
        }
    }
}
