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

/// The learning rate's course over a training run (after any `--warmup-epochs`).
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrScheduleKind {
    /// --lr throughout (--reduce-lr-on-plateau may lower it)
    #[default]
    Constant,
    /// From --lr down towards 0 along half a cosine, updated every batch (PyTorch's CosineAnnealingLR,
    /// Keras' CosineDecay)
    Cosine,
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

/// How each pass of each convolution is computed (`--conv-algo`): a
/// [`convnet_tensor::ConvAlgoSpec`], saved in `config.toml` as its text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConvAlgoArg(pub convnet_tensor::ConvAlgoSpec);

/// The short help of every `--conv-algo` (`-h`).
pub const CONV_ALGO_SHORT: &str =
    "How convolutions are computed: auto, im2col, winograd, or rules per pass and layer (--help)";

/// The help of every `--conv-algo` (`--help`).
pub const CONV_ALGO_HELP: &str = "How convolutions are computed: auto (Winograd on 3x3 stride-1 layers with \
>= 8 channels in and out and outputs >= 32 wide, or >= 7 wide with >= 128 channels for the forward pass and \
input gradient; im2col elsewhere), im2col or winograd; per pass and layer \
with comma-separated rules [LAYER][.PASS]=ALGO, later ones winning, e.g. winograd,dw=im2col or \
auto,2.input-grad=im2col (PASS: forward|input-grad|weight-grad or fwd|dx|dw; LAYER: the numbers in \
`convnet summary`)";

impl ConvAlgoArg {
    /// What a run saved before `--conv-algo` existed computed with: im2col, so
    /// that `--resume` of such a run stays bit-exact.
    pub fn before_winograd() -> ConvAlgoArg {
        ConvAlgoArg(convnet_tensor::ConvAlgoSpec::all(convnet_tensor::ConvAlgo::Im2col))
    }

    /// Sets the model's convolutions as the rules say (fails when a rule names
    /// a layer that is not a convolution).
    pub fn apply(&self, model: &mut convnet_tensor::Sequential<f32>) -> anyhow::Result<()> {
        model.set_conv_algos(&self.0).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

impl std::fmt::Display for ConvAlgoArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// `--conv-algo`, declared once for every command that runs a model
/// (`#[command(flatten)]`; in `TrainConfig` also `#[serde(flatten)]`, so
/// config.toml keeps its `conv_algo` key).
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConvAlgoOptions {
    #[arg(long, default_value = "auto", value_parser = parse_conv_algo, help = CONV_ALGO_SHORT,
        long_help = CONV_ALGO_HELP)]
    // a config.toml written before --conv-algo existed: what that run computed with
    #[serde(default = "ConvAlgoArg::before_winograd")]
    pub conv_algo: ConvAlgoArg,
}

impl ConvAlgoOptions {
    /// Sets the model's convolutions as the rules say.
    pub fn apply(&self, model: &mut convnet_tensor::Sequential<f32>) -> anyhow::Result<()> {
        self.conv_algo.apply(model)
    }
}

/// The value parser of `--conv-algo`.
pub fn parse_conv_algo(text: &str) -> Result<ConvAlgoArg, String> {
    text.parse().map(ConvAlgoArg).map_err(|e: convnet_tensor::TensorError| e.to_string())
}

impl Serialize for ConvAlgoArg {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for ConvAlgoArg {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_conv_algo(&text).map_err(serde::de::Error::custom)
    }
}

/// The models to score with and the test-time augmentation (`predict`, `evaluate`).
#[derive(clap::Args, Clone, Debug)]
pub struct ScoringOptions {
    /// Model file(s) (.safetensors written by convnet), or a `convnet cv` directory (its fold
    /// models); several make an ensemble whose probabilities are averaged
    #[arg(long, num_args = 1.., required = true)]
    pub model: Vec<PathBuf>,
    /// Test-time augmentation: none, flip (the image and its mirror) or flip4 (also
    /// upside down, and both); the probabilities are averaged
    #[arg(long, default_value = "none")]
    pub tta: convnet_io::scoring::Tta,
}

impl ScoringOptions {
    /// Loads the models into a scorer (each with `conv`'s algorithms); returns
    /// it with the metadata they share, and says what it averages when it
    /// averages anything.
    pub fn scorer(
        &self,
        conv: &ConvAlgoOptions,
    ) -> anyhow::Result<(convnet_io::scoring::Scorer, convnet_io::model_file::ModelMeta)> {
        let mut models = Vec::new();
        let mut paths = Vec::new();
        for path in &self.model {
            // a `convnet cv` directory: its folds' final models
            if path.join("cv.json").is_file() {
                let mut folds: Vec<PathBuf> = (1..)
                    .map(|k| path.join(format!("fold-{k}")).join("model.safetensors"))
                    .take_while(|model| model.is_file())
                    .collect();
                paths.append(&mut folds);
            } else {
                paths.push(path.clone());
            }
        }
        for path in &paths {
            let (mut model, meta) = convnet_io::model_file::load_model(path)?;
            conv.apply(&mut model)?;
            models.push((model, meta));
        }
        let (scorer, meta) = convnet_io::scoring::Scorer::new(models, self.tta)?;
        let views = self.tta.views().len();
        if scorer.models() > 1 || views > 1 {
            eprintln!(
                "Averaging the probabilities of {} model{} x {views} view{} (--tta {})",
                scorer.models(),
                if scorer.models() == 1 { "" } else { "s" },
                if views == 1 { "" } else { "s" },
                self.tta
            );
        }
        Ok((scorer, meta))
    }
}
