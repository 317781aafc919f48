//! Fine-tuning a pretrained network: `--init-weights` (a convnet model file or
//! a torchvision state_dict), `--new-head` (a new classifier for this data's
//! classes) and `--freeze` (layers kept as they are).
//!
//! Freezing is a prefix of the model's layers: `--freeze N` the first `N`,
//! `--freeze backbone` every layer before the classifier (the last layer with
//! weights). Frozen layers compute as in inference (batchnorm with its running
//! statistics, no dropout), get no weight gradients (the backward pass stops
//! above them) and have no optimizer state; their weights and statistics end
//! the run byte-identical to how they started.
//!
//! A grayscale data set on an RGB-pretrained stem: the stem's weights are
//! summed over the three colour channels (a grey image is one whose three
//! channels are equal), and a 3-channel normalisation becomes its mean.

use anyhow::{bail, Context, Result};
use convnet_io::model_file;
use convnet_tensor::{LayerSpec, ModelSpec, Sequential};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Which layers `--freeze` keeps fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freeze {
    /// The first `N` layers (top-level: a block counts as one).
    Layers(usize),
    /// Every layer before the classifier.
    Backbone,
}

impl std::str::FromStr for Freeze {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "backbone" => Ok(Freeze::Backbone),
            number => number
                .parse()
                .map(Freeze::Layers)
                .map_err(|_| format!("`{text}`: expected a number of layers or `backbone`")),
        }
    }
}

impl std::fmt::Display for Freeze {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Freeze::Layers(layers) => write!(f, "{layers}"),
            Freeze::Backbone => write!(f, "backbone"),
        }
    }
}

impl Serialize for Freeze {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Freeze {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The index of the classifier: the last layer with weights.
fn head_index(model: &Sequential<f32>) -> Option<usize> {
    model.layers().iter().rposition(|layer| !layer.params().is_empty())
}

/// Freezes the layers `freeze` names; returns how many.
pub fn apply_freeze(model: &mut Sequential<f32>, freeze: Freeze) -> Result<usize> {
    let layers = match freeze {
        Freeze::Layers(layers) => layers,
        Freeze::Backbone => head_index(model).context("--freeze backbone: the model has no layer with weights")?,
    };
    let trainable_after = model.layers()[layers.min(model.layers().len())..].iter().any(|l| !l.params().is_empty());
    if layers > model.layers().len() || !trainable_after {
        bail!(
            "--freeze {freeze}: freezes every layer with weights ({} layers); leave at least the classifier to train",
            model.layers().len()
        );
    }
    model.set_frozen(layers)?;
    let frozen: usize = model.params().len() - model.trainable_params().len();
    println!(
        "Frozen: layers 0-{} ({frozen} parameter tensors, {} values); training layers {layers}-{}",
        layers.saturating_sub(1),
        model.layers()[..layers].iter().map(|l| l.params().iter().map(|p| p.value.len()).sum::<usize>()).sum::<usize>(),
        model.layers().len() - 1
    );
    Ok(layers)
}

/// An architecture read from a pretrained model file for `channels` input
/// channels: a 3-channel normalisation becomes one channel (the mean of its
/// statistics) when the data is grayscale.
pub fn adapt_architecture(mut spec: ModelSpec, channels: usize) -> ModelSpec {
    if let Some(LayerSpec::Normalize { mean, std }) = spec.layers.first_mut() {
        if mean.len() != channels && channels == 1 {
            let average = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
            *mean = vec![average(mean)];
            *std = vec![average(std)];
        }
    }
    spec
}

/// `--init-weights`: every parameter and running statistic from `init` (a
/// convnet model file, or a torchvision ResNet or SqueezeNet state_dict under
/// its own names); with `new_head`, all but the classifier, which keeps its
/// initialisation from the seed (fine-tuning on other classes). An RGB stem
/// loaded into a grayscale model is summed over its colour channels.
pub fn initialise_from(model: &mut Sequential<f32>, init: &std::path::Path, new_head: bool) -> Result<()> {
    let file = model_file::read_tensor_file(init)?;
    let mut tensors = convnet_io::torchvision::to_convnet_names(model, file.tensors);
    let head = head_index(model).filter(|_| new_head).map(|index| (index, format!("{index}.")));
    let names = model.param_names();
    if let Some((_, prefix)) = &head {
        // the head's tensors are the model's own: loading them changes nothing
        for (name, param) in names.iter().zip(model.params()) {
            if name.starts_with(prefix.as_str()) {
                tensors.insert(name.clone(), (param.value.shape().to_vec(), param.value.iter().copied().collect()));
            }
        }
    }
    let summed = sum_colour_channels(model, &names, &mut tensors);
    model_file::assign_params(model, &tensors).with_context(|| {
        let hint = if new_head { "" } else { " (for other classes, add --new-head to replace its classifier)" };
        format!("--init-weights {}: does not fit this model{hint}", init.display())
    })?;
    let head = head.map_or(String::new(), |(index, _)| {
        format!(" (new head: layer {index}, {}, from the seed)", model.layers()[index].kind())
    });
    println!("Initialised weights from {}{head}", init.display());
    if let Some(name) = summed {
        println!("  {name}: the RGB-pretrained stem's weights summed over the colour channels for grayscale input");
    }
    Ok(())
}

/// For a grayscale model, the first convolution's RGB weights `(out, 3, kh, kw)`
/// summed into `(out, 1, kh, kw)`; returns the tensor's name if it did.
fn sum_colour_channels(
    model: &Sequential<f32>,
    names: &[String],
    tensors: &mut HashMap<String, (Vec<usize>, Vec<f32>)>,
) -> Option<String> {
    let (name, param) = names.iter().zip(model.params()).find(|(_, p)| p.value.ndim() == 4)?;
    let wanted = param.value.shape();
    let (shape, values) = tensors.get_mut(name)?;
    if wanted[1] != 1 || shape.len() != 4 || shape[1] != 3 || shape[0] != wanted[0] || shape[2..] != wanted[2..] {
        return None;
    }
    let plane = shape[2] * shape[3];
    let summed: Vec<f32> = values
        .chunks(3 * plane)
        .flat_map(|filter| (0..plane).map(move |i| filter[i] + filter[plane + i] + filter[2 * plane + i]))
        .collect();
    *values = summed;
    shape[1] = 1;
    Some(name.clone())
}
