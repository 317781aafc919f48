//! Per-channel normalisation of the input: the preprocessing a pretrained
//! network expects (torchvision's `Normalize`, Keras' `Normalization`), kept
//! in the model so that training, evaluation, prediction, explanation and the
//! ONNX export all apply it the same way.
//!
//! ```text
//! forward:   y[n, c, h, w] = (x[n, c, h, w] - mean[c]) / std[c]      any (N, C, ...) shape
//! backward:  dx[n, c, h, w] = dy[n, c, h, w] / std[c]                (mean and std are constants)
//! ```
//!
//! ImageNet's statistics, for pixels scaled to 0-1, are
//! [`IMAGENET_MEAN`] and [`IMAGENET_STD`]. The layer has no parameters: the
//! statistics are part of the architecture (`[[layers]] type = "normalize"`,
//! `mean = [...]`, `std = [...]`).
//!
//! ```
//! use convnet_tensor::layers::Normalize;
//! use convnet_tensor::{Layer, Mode};
//! use ndarray::{ArrayD, IxDyn};
//! let mut layer = Normalize::new(vec![0.5, 0.0], vec![0.25, 2.0]).unwrap();
//! let x = ArrayD::from_shape_vec(IxDyn(&[1, 2, 1, 2]), vec![1.0f32, 0.5, 4.0, -2.0]).unwrap();
//! let mut y = ArrayD::zeros(IxDyn(&[1, 2, 1, 2]));
//! layer.forward(x.view(), y.view_mut(), Mode::Eval);
//! assert_eq!(y.as_slice().unwrap(), &[2.0, 0.0, 2.0, -1.0]);
//! ```

use crate::element::Element;
use crate::layer::{slice, slice_mut, Layer, Mode};
use ndarray::{ArrayViewD, ArrayViewMutD};

/// ImageNet's per-channel mean (RGB, pixels in 0-1), as torchvision uses it.
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
/// ImageNet's per-channel standard deviation (RGB, pixels in 0-1).
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// Plain twin of the forward: `x` laid out as `(N, C, plane)`.
pub fn normalize_naive<T: Element>(x: &[T], mean: &[f64], std: &[f64], plane: usize) -> Vec<T> {
    let channels = mean.len();
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let c = (i / plane) % channels;
            (v - T::from_f64(mean[c])) / T::from_f64(std[c])
        })
        .collect()
}

/// `y = (x - mean[c]) / std[c]`; see the module docs.
#[derive(Debug, Clone)]
pub struct Normalize {
    mean: Vec<f64>,
    std: Vec<f64>,
}

impl Normalize {
    /// A normalisation by per-channel `mean` and `std` (equal lengths, every
    /// `std` positive and finite).
    pub fn new(mean: Vec<f64>, std: Vec<f64>) -> Result<Self, String> {
        if mean.is_empty() || mean.len() != std.len() {
            return Err(format!(
                "normalize needs as many means as standard deviations, got {} and {}",
                mean.len(),
                std.len()
            ));
        }
        if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || mean.iter().any(|m| !m.is_finite()) {
            return Err(format!(
                "normalize needs finite means and positive standard deviations, got {mean:?} and {std:?}"
            ));
        }
        Ok(Normalize { mean, std })
    }

    /// The per-channel means.
    pub fn mean(&self) -> &[f64] {
        &self.mean
    }

    /// The per-channel standard deviations.
    pub fn std(&self) -> &[f64] {
        &self.std
    }
}

impl<T: Element> Layer<T> for Normalize {
    fn kind(&self) -> &'static str {
        "normalize"
    }

    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>, String> {
        match input_shape.first() {
            Some(&channels) if channels == self.mean.len() => Ok(input_shape.to_vec()),
            _ => Err(format!("normalizes {} channels but the input is {input_shape:?}", self.mean.len())),
        }
    }

    fn forward(&mut self, input: ArrayViewD<'_, T>, mut output: ArrayViewMutD<'_, T>, _mode: Mode) {
        let plane: usize = input.shape()[2..].iter().product();
        let channels = self.mean.len();
        // y = (x - mean[c]) / std[c], one (n, c) plane at a time
        for (k, (y, x)) in slice_mut(&mut output).chunks_mut(plane).zip(slice(&input).chunks(plane)).enumerate() {
            let (mean, std) = (T::from_f64(self.mean[k % channels]), T::from_f64(self.std[k % channels]));
            for (y, &x) in y.iter_mut().zip(x) {
                *y = (x - mean) / std;
            }
        }
    }

    fn backward(
        &mut self,
        input: ArrayViewD<'_, T>,
        _output: ArrayViewD<'_, T>,
        grad_output: ArrayViewD<'_, T>,
        grad_input: Option<ArrayViewMutD<'_, T>>,
    ) {
        let Some(mut grad_input) = grad_input else { return };
        let plane: usize = input.shape()[2..].iter().product();
        let channels = self.std.len();
        // forward: y = (x - mean[c]) / std[c], so dx = dy / std[c]
        for (k, (dx, dy)) in
            slice_mut(&mut grad_input).chunks_mut(plane).zip(slice(&grad_output).chunks(plane)).enumerate()
        {
            let std = T::from_f64(self.std[k % channels]);
            for (dx, &dy) in dx.iter_mut().zip(dy) {
                *dx = dy / std;
            }
        }
    }

    fn backward_needs_output(&self) -> bool {
        false
    }

    fn forward_flops(&self, input_shape: &[usize]) -> u64 {
        2 * input_shape.iter().product::<usize>() as u64
    }

    fn describe(&self) -> String {
        let list = |values: &[f64]| values.iter().map(|v| format!("{v}")).collect::<Vec<_>>().join(", ");
        format!("mean [{}], std [{}]", list(&self.mean), list(&self.std))
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}
