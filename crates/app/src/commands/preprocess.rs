//! The preprocessing an imported network expects (`import-onnx`,
//! `import-torch`), declared once: pixel scale, per-channel normalisation (a
//! [`LayerSpec::Normalize`] put before the network's first layer) and
//! torchvision's resize-then-centre-crop. All of it is stored in the model
//! file, so every command applies it.

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use convnet_data::{InputFormat, PixelScale};
use convnet_tensor::layers::normalize::{IMAGENET_MEAN, IMAGENET_STD};
use convnet_tensor::LayerSpec;
use std::path::PathBuf;

/// What the network expects of its input pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preprocess {
    /// Pixels scaled to 0-1, normalised by ImageNet's mean and standard deviation, the
    /// shorter side resized to 256 (for 224) then the centre crop: torchvision's pretrained networks
    Imagenet,
    /// Pixels scaled to 0-1 (convnet's default)
    Unit,
    /// Pixels as 0-255
    Raw,
}

/// The import commands' preprocessing and class-name options.
#[derive(Args, Clone, Debug)]
pub struct PreprocessOptions {
    /// The preprocessing the network was trained with; stored in the model file, so that
    /// train, evaluate, predict, explain, show and export apply it
    #[arg(long, value_enum, default_value = "unit")]
    pub preprocess: Preprocess,
    /// Per-channel means to subtract after the pixel scaling (overrides --preprocess's)
    #[arg(long, value_delimiter = ',', requires = "std")]
    pub mean: Vec<f64>,
    /// Per-channel standard deviations to divide by (overrides --preprocess's)
    #[arg(long, value_delimiter = ',', requires = "mean")]
    pub std: Vec<f64>,
    /// Resize the shorter side to this many pixels, then take the centred crop of the
    /// input size (torchvision's Resize + CenterCrop; --preprocess imagenet: 256 for 224)
    #[arg(long)]
    pub resize_shorter: Option<usize>,
    /// The class names in the order of the outputs (default: the file's own, or 0, 1, 2, ...)
    #[arg(long, value_delimiter = ',')]
    pub class_names: Vec<String>,
    /// A text file with one class name per line, in the order of the outputs
    #[arg(long, conflicts_with = "class_names")]
    pub class_names_file: Option<PathBuf>,
}

impl PreprocessOptions {
    /// The normalisation layer to put first, if any.
    pub fn normalize(&self) -> Option<LayerSpec> {
        let (mean, std) = match (self.preprocess, self.mean.is_empty()) {
            (_, false) => (self.mean.clone(), self.std.clone()),
            (Preprocess::Imagenet, true) => (IMAGENET_MEAN.to_vec(), IMAGENET_STD.to_vec()),
            _ => return None,
        };
        Some(LayerSpec::Normalize { mean, std })
    }

    /// The pixels' scale.
    pub fn pixel_scale(&self) -> PixelScale {
        if self.preprocess == Preprocess::Raw {
            PixelScale::Raw
        } else {
            PixelScale::Unit
        }
    }

    /// Sets the resize-then-crop of `format` (its image size is the crop).
    pub fn apply_resize(&self, format: &mut InputFormat) -> Result<()> {
        let [height, width] = format.image_size;
        format.resize_shorter = match (self.resize_shorter, self.preprocess) {
            (Some(shorter), _) => Some(shorter),
            // torchvision's 256 for 224: the crop keeps 87.5% of the shorter side
            (None, Preprocess::Imagenet) => Some((height.max(width) as f64 / 0.875).round() as usize),
            (None, _) => None,
        };
        format.check_resize().map_err(|e| anyhow::anyhow!(e))?;
        Ok(())
    }

    /// The class names given, from the list or the file (empty: none given).
    pub fn class_names(&self) -> Result<Vec<String>> {
        let names: Vec<String> = match &self.class_names_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?
                .lines()
                .map(|line| line.trim().to_string())
                .filter(|line| !line.is_empty())
                .collect(),
            None => self.class_names.clone(),
        };
        if names.iter().any(|name| name.trim().is_empty()) {
            bail!("--class-names: a class name is empty");
        }
        Ok(names)
    }
}
