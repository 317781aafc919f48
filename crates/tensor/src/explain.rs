//! Grad-CAM: where in the image the network looked for a class
//! (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
//! Gradient-based Localization", 2017).
//!
//! For feature maps `A` `(K, h, w)` of a convolution (by default the last one,
//! after its ReLU) and the score `y_c` of class `c` (its logit, before the
//! softmax):
//!
//! ```text
//! alpha[k] = mean over (i, j) of d y_c / d A[k, i, j]        one weight per channel
//! map[i, j] = max(0, sum_k alpha[k] * A[k, i, j])            (h, w), then upsampled to the input
//! ```
//!
//! The gradient comes from the layers' own backward passes
//! ([`Sequential::backward_to`]), run unfused so that it is the gradient with
//! respect to the ReLU's output itself. `tests/suite/explain.rs` checks the weights
//! against finite differences of the class score in f64.

use crate::element::Element;
use crate::error::{Result, TensorError};
use crate::layer::{Layer, Mode};
use crate::layers::softmax::softmax_row;
use crate::model::sequential::Sequential;
use ndarray::{ArrayD, ArrayViewD, IxDyn};

/// One image's Grad-CAM.
#[derive(Clone, Debug)]
pub struct GradCam<T> {
    /// The class explained.
    pub class: usize,
    /// Softmax probabilities of every class.
    pub probabilities: Vec<T>,
    /// `alpha[k]`, one per channel of the feature maps.
    pub weights: Vec<T>,
    /// The map `(h, w)` at the feature maps' resolution, row-major, `>= 0`.
    pub map: Vec<T>,
    /// `[h, w]`.
    pub map_shape: [usize; 2],
}

/// The activation Grad-CAM reads by default: the output of the last
/// convolution (or of the last block holding one: a ResNet's last residual
/// block), or of the ReLU right after it (activation `i + 1` is the output of
/// layer `i`). `None` if the model has no convolution.
pub fn default_activation<T: Element>(model: &Sequential<T>) -> Option<usize> {
    let layers = model.layers();
    let is_conv = |layer: &dyn Layer<T>| layer.kind() == "conv2d";
    let conv =
        layers.iter().rposition(|layer| is_conv(layer.as_ref()) || layer.sublayers().into_iter().any(is_conv))?;
    let after_relu = layers.get(conv + 1).is_some_and(|layer| layer.kind() == "relu");
    Some(if after_relu { conv + 2 } else { conv + 1 })
}

/// Grad-CAM of `class` (default: the predicted one) for one image `(1, C, H,
/// W)` at activation `activation` (see [`default_activation`]), which must be
/// feature maps `(K, h, w)`. Leaves the model unfused.
pub fn grad_cam<T: Element>(
    model: &mut Sequential<T>,
    image: ArrayViewD<'_, T>,
    class: Option<usize>,
    activation: usize,
) -> Result<GradCam<T>> {
    if image.shape().first() != Some(&1) {
        return Err(TensorError::Mismatch(format!("grad_cam takes one image (1, C, H, W), got {:?}", image.shape())));
    }
    let shape = model.shapes().get(activation).cloned().unwrap_or_default();
    if activation == 0 || shape.len() != 3 {
        return Err(TensorError::Mismatch(format!(
            "activation {activation} is {shape:?}, not feature maps (K, h, w): choose the output of a convolution"
        )));
    }
    model.set_fused(false);
    let logits = model.forward(image, Mode::Eval)?.to_owned();
    let logits = logits.as_slice().expect("contiguous");
    let classes = logits.len();
    let mut probabilities = vec![T::zero(); classes];
    softmax_row(logits, &mut probabilities);
    let class = class.unwrap_or_else(|| crate::loss::argmax(&probabilities));
    if class >= classes {
        return Err(TensorError::Mismatch(format!("class {class}, but the model has {classes} outputs")));
    }
    let features = model.layer_output(activation - 1).expect("activation checked").to_owned();
    // d y_c / d logits: one-hot at c
    let mut grad_output = ArrayD::<T>::zeros(IxDyn(&[1, classes]));
    grad_output[[0, class]] = T::one();
    let grad = model.backward_to(grad_output.view(), activation)?;
    let (channels, pixels) = (shape[0], shape[1] * shape[2]);
    let (features, grad) = (features.as_slice().expect("contiguous"), grad.as_slice().expect("contiguous"));
    let weights: Vec<T> =
        grad.chunks(pixels).map(|g| g.iter().fold(T::zero(), |sum, &v| sum + v) / T::from_f64(pixels as f64)).collect();
    let mut map = vec![T::zero(); pixels];
    for (k, &alpha) in weights.iter().enumerate().take(channels) {
        for (m, &a) in map.iter_mut().zip(&features[k * pixels..(k + 1) * pixels]) {
            *m += alpha * a;
        }
    }
    map.iter_mut().for_each(|m| *m = if *m > T::zero() { *m } else { T::zero() });
    Ok(GradCam { class, probabilities, weights, map, map_shape: [shape[1], shape[2]] })
}

/// Bilinear upsampling of `map` `(h, w)` to `(height, width)`, pixel centres
/// aligned (as image resizers do: output pixel `(y, x)` samples the map at
/// `((y + 0.5) h / height - 0.5, ...)`, clamped to the border).
pub fn upsample<T: Element>(map: &[T], [h, w]: [usize; 2], [height, width]: [usize; 2]) -> Vec<f64> {
    let at = |y: usize, x: usize| map[y * w + x].to_f64();
    let source = |out: usize, out_len: usize, len: usize| {
        let s = ((out as f64 + 0.5) * len as f64 / out_len as f64 - 0.5).clamp(0.0, (len - 1) as f64);
        let low = s.floor() as usize;
        (low, (low + 1).min(len - 1), s - low as f64)
    };
    let mut out = Vec::with_capacity(height * width);
    for y in 0..height {
        let (y0, y1, fy) = source(y, height, h);
        for x in 0..width {
            let (x0, x1, fx) = source(x, width, w);
            let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
            let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsampling_keeps_constants_and_puts_a_peak_where_it_was() {
        let flat = upsample(&[2.0f64; 4], [2, 2], [5, 7]);
        assert!(flat.iter().all(|&v| (v - 2.0).abs() < 1e-12));
        // a single hot cell at (0, 1) of a 2x2 map: the top-right quarter is hottest
        let up = upsample(&[0.0f64, 1.0, 0.0, 0.0], [2, 2], [8, 8]);
        let peak = up.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        let (y, x) = (peak / 8, peak % 8);
        assert!(y < 4 && x >= 4, "peak at ({y}, {x})");
    }
}
