//! How probabilities are computed at prediction time (`predict`, `evaluate`,
//! `show`): one model or an ensemble of several, each with the temperature
//! `convnet calibrate` stored in it, and test-time augmentation.
//!
//! ```text
//! p[i, k] = 1 / (M V) * sum over models m and views v of softmax_k(z_m(view_v(x_i)) / T_m)
//!
//! views: none   x                                        (V = 1)
//!        flip   x, x mirrored left-right                 (V = 2)
//!        flip4  x, mirrored left-right, upside down, both (V = 4)
//! loss   = -1/N sum_i log p[i, y_i]                     (of the averaged probabilities)
//! ```
//!
//! The models of an ensemble must agree on their classes and on how an image
//! becomes their input (size, colours, resize, pixel scale), so one decoded
//! batch feeds them all; the views are exact mirrors, so the result is
//! deterministic.

use crate::error::{IoError, Result};
use crate::metrics::Predictions;
use crate::model_file::ModelMeta;
use convnet_data::batch::for_each_batch_in;
use convnet_data::{ImageSet, PixelScale};
use convnet_tensor::ndarray::{ArrayD, ArrayViewD, Axis};
use convnet_tensor::Sequential;

/// Test-time augmentation: which mirrored views of each image are averaged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tta {
    /// The image alone.
    #[default]
    None,
    /// The image and its left-right mirror.
    Flip,
    /// The image, its left-right and upside-down mirrors, and both.
    Flip4,
}

impl std::str::FromStr for Tta {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "none" => Ok(Tta::None),
            "flip" => Ok(Tta::Flip),
            "flip4" => Ok(Tta::Flip4),
            other => Err(format!("`{other}`: expected none, flip or flip4")),
        }
    }
}

impl std::fmt::Display for Tta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tta::None => "none",
            Tta::Flip => "flip",
            Tta::Flip4 => "flip4",
        })
    }
}

impl Tta {
    /// The views: (mirror left-right, mirror upside down).
    pub fn views(self) -> &'static [(bool, bool)] {
        match self {
            Tta::None => &[(false, false)],
            Tta::Flip => &[(false, false), (true, false)],
            Tta::Flip4 => &[(false, false), (true, false), (false, true), (true, true)],
        }
    }
}

/// A batch `(N, C, H, W)` mirrored left-right and/or upside down.
pub fn mirrored(images: ArrayViewD<'_, f32>, left_right: bool, upside_down: bool) -> ArrayD<f32> {
    let mut view = images;
    if left_right {
        view.invert_axis(Axis(3));
    }
    if upside_down {
        view.invert_axis(Axis(2));
    }
    view.as_standard_layout().into_owned()
}

/// The softmax of each row of `logits` `(N, classes)` divided by `temperature`.
fn softmax_rows(logits: &[f32], classes: usize, temperature: Option<f64>) -> Vec<f32> {
    let mut out = vec![0.0; logits.len()];
    for (row, probs) in logits.chunks(classes).zip(out.chunks_mut(classes)) {
        match temperature {
            Some(t) => {
                let scaled: Vec<f32> = row.iter().map(|&z| (z as f64 / t) as f32).collect();
                convnet_tensor::layers::softmax::softmax_row(&scaled, probs);
            }
            None => convnet_tensor::layers::softmax::softmax_row(row, probs),
        }
    }
    out
}

/// One model or an ensemble, with test-time augmentation.
pub struct Scorer {
    members: Vec<(Sequential<f32>, Option<f64>)>,
    tta: Tta,
    classes: usize,
}

impl Scorer {
    /// Scores with every model of `models` (their probabilities averaged) and
    /// the views of `tta`; returns the scorer and the metadata they share (the
    /// first model's). Models that disagree on classes or input are refused.
    pub fn new(models: Vec<(Sequential<f32>, ModelMeta)>, tta: Tta) -> Result<(Scorer, ModelMeta)> {
        let mut members = Vec::new();
        let mut first: Option<ModelMeta> = None;
        for (index, (model, meta)) in models.into_iter().enumerate() {
            if let Some(first) = &first {
                if meta.class_names != first.class_names || meta.input != first.input {
                    return Err(IoError::Format(format!(
                        "model {} of the ensemble has other classes or another input than the first: \
                         an ensemble's models must share both",
                        index + 1
                    )));
                }
            }
            members.push((model, meta.temperature));
            first.get_or_insert(meta);
        }
        let meta = first.ok_or_else(|| IoError::Format("no model to score with".into()))?;
        let classes = meta.class_names.len();
        Ok((Scorer { members, tta, classes }, meta))
    }

    /// How many models.
    pub fn models(&self) -> usize {
        self.members.len()
    }

    /// The mean probabilities `(N, classes)` of the batch `images` `(N, C, H, W)`
    /// over the models and the views (see the module docs).
    pub fn probabilities(&mut self, images: ArrayViewD<'_, f32>) -> Result<Vec<f32>> {
        let views = self.tta.views();
        let mut sum = vec![0.0f64; images.shape()[0] * self.classes];
        for (model, temperature) in &mut self.members {
            for &(left_right, upside_down) in views {
                let logits = if left_right || upside_down {
                    let view = mirrored(images.view(), left_right, upside_down);
                    model.predict(view.view())?.as_standard_layout().into_owned()
                } else {
                    model.predict(images.view())?.as_standard_layout().into_owned()
                };
                let probabilities =
                    softmax_rows(logits.as_slice().expect("standard layout"), self.classes, *temperature);
                for (total, p) in sum.iter_mut().zip(probabilities) {
                    *total += p as f64;
                }
            }
        }
        let count = (self.members.len() * views.len()) as f64;
        Ok(sum.into_iter().map(|total| (total / count) as f32).collect())
    }

    /// [`Scorer::probabilities`] over a whole labelled set, batch by batch,
    /// with the loss of the averaged probabilities.
    /// One model without a temperature or views is [`crate::metrics::predict_set`]
    /// itself (its loss from the logits, to the last bit).
    pub fn predict_set(&mut self, set: &ImageSet, batch_size: usize, scale: PixelScale) -> Result<Predictions> {
        if let ([(model, None)], Tta::None) = (self.members.as_mut_slice(), self.tta) {
            return crate::metrics::predict_set(model, set, batch_size, scale);
        }
        let mut probabilities = Vec::with_capacity(set.len() * self.classes);
        let mut error = None;
        for_each_batch_in(set, 0..set.len(), batch_size, scale, |batch| {
            if error.is_none() {
                match self.probabilities(batch.images.view()) {
                    Ok(batch_probabilities) => probabilities.extend(batch_probabilities),
                    Err(e) => error = Some(e),
                }
            }
        })?;
        if let Some(error) = error {
            return Err(error);
        }
        let losses: Vec<f32> = probabilities
            .chunks(self.classes)
            .zip(set.labels())
            .map(|(row, &label)| -(row[label].max(1e-38)).ln())
            .collect();
        Ok(Predictions::from_parts(probabilities, &losses, self.classes))
    }
}
