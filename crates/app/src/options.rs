//! Argument types and value parsers shared by several commands.

use clap::{Args, ValueEnum};
use convnet_data::{ColorMode, DatasetOptions, Interpolation, PixelScale, Storage};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The input format of a new model: size and colour mode (`train`, `summary`,
/// `doctor`, `bench`).
#[derive(Args, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageOptions {
    /// Image size: one number (square) or HEIGHTxWIDTH
    #[arg(long, default_value = "224", value_parser = parse_size)]
    pub image_size: [usize; 2],
    /// Colour mode of the network input
    #[arg(long, default_value = "rgb", value_parser = parse_color_mode)]
    pub color_mode: ColorMode,
}

impl ImageOptions {
    /// Per-sample input shape `(C, H, W)`.
    pub fn input_shape(&self) -> [usize; 3] {
        [self.color_mode.channels(), self.image_size[0], self.image_size[1]]
    }
}

/// Where decoded images go (`train`, `evaluate`, `show`, `doctor`).
#[derive(Args, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheOptions {
    /// Where decoded images go: auto (memory if they fit, else a cache on disk), memory, disk, or stream (decode every epoch)
    #[arg(long, default_value = "auto", value_parser = parse_storage)]
    #[serde(default)]
    pub cache: Storage,
    /// Keep no decoded images: decode every image again each epoch (for sets larger than the disk); same as --cache stream
    #[arg(long, conflicts_with = "cache")]
    #[serde(default)]
    pub no_cache: bool,
    /// Directory of the decoded-image cache (default: $XDG_CACHE_HOME/convnet or ~/.cache/convnet)
    #[arg(long, value_name = "DIR")]
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

impl CacheOptions {
    /// These options applied to `options`, with the memory budget of this machine.
    pub fn apply(&self, options: DatasetOptions) -> DatasetOptions {
        DatasetOptions {
            storage: if self.no_cache { Storage::Stream } else { self.cache },
            cache_dir: self.cache_dir.clone(),
            memory_budget: crate::preflight::images_budget(0),
            ..options
        }
    }
}

/// `auto`, `memory`, `disk` or `stream`.
pub fn parse_storage(text: &str) -> Result<Storage, String> {
    Storage::parse(text).ok_or_else(|| format!("`{text}`: expected auto, memory, disk or stream"))
}

/// The optimizer of a training run.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam with Keras' defaults
    Adam,
    /// Adam with decoupled weight decay (--weight-decay)
    Adamw,
    /// SGD with momentum (--momentum)
    Sgd,
}

/// How classes are weighted in the loss.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeighting {
    /// Weight each class by total / (classes * count), as scikit-learn's `balanced`
    Balanced,
}

/// `224` or `224x160` (height x width).
pub fn parse_size(text: &str) -> Result<[usize; 2], String> {
    let parse =
        |s: &str| s.trim().parse::<usize>().map_err(|_| format!("`{text}` is not a size (e.g. 224 or 224x160)"));
    let size = match text.split_once(['x', 'X']) {
        Some((h, w)) => [parse(h)?, parse(w)?],
        None => [parse(text)?; 2],
    };
    if size.contains(&0) {
        return Err(format!("image size must be positive, got {text}"));
    }
    Ok(size)
}

/// `rgb`, `grayscale` or `rgba`.
pub fn parse_color_mode(text: &str) -> Result<ColorMode, String> {
    ColorMode::parse(text).ok_or_else(|| format!("`{text}`: expected rgb, grayscale or rgba"))
}

/// `bilinear`, `nearest`, `area` or `lanczos3`.
pub fn parse_interpolation(text: &str) -> Result<Interpolation, String> {
    Interpolation::parse(text).ok_or_else(|| format!("`{text}`: expected bilinear, nearest, area or lanczos3"))
}

/// `unit` (0-1) or `raw` (0-255).
pub fn parse_scale(text: &str) -> Result<PixelScale, String> {
    match text {
        "unit" | "0-1" => Ok(PixelScale::Unit),
        "raw" | "0-255" => Ok(PixelScale::Raw),
        _ => Err(format!("`{text}`: expected unit (0-1) or raw (0-255)")),
    }
}

/// A whole number of at least 1.
pub fn positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a positive whole number")),
    }
}

/// Sizes the global thread pool (`--threads`); results never depend on it.
pub fn set_threads(threads: Option<usize>) -> anyhow::Result<()> {
    if let Some(threads) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .map_err(|e| anyhow::anyhow!("cannot start {threads} threads: {e}"))?;
    }
    Ok(())
}

/// How convolutions are computed (`--conv-algo`): see `convnet_tensor::ConvAlgo`.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvAlgoArg {
    /// Winograd F(4x4,3x3) on 3x3 stride-1 layers with >= 8 channels in and out and outputs >= 32 wide, im2col elsewhere
    #[default]
    Auto,
    /// im2col + GEMM on every layer
    Im2col,
    /// Winograd F(4x4,3x3) on every 3x3 stride-1 layer, im2col elsewhere
    Winograd,
}

impl ConvAlgoArg {
    /// What a run saved before `--conv-algo` existed computed with: im2col, so
    /// that `--resume` of such a run stays bit-exact.
    pub fn before_winograd() -> ConvAlgoArg {
        ConvAlgoArg::Im2col
    }

    /// The engine's value.
    pub fn algo(self) -> convnet_tensor::ConvAlgo {
        match self {
            ConvAlgoArg::Auto => convnet_tensor::ConvAlgo::Auto,
            ConvAlgoArg::Im2col => convnet_tensor::ConvAlgo::Im2col,
            ConvAlgoArg::Winograd => convnet_tensor::ConvAlgo::Winograd,
        }
    }
}
