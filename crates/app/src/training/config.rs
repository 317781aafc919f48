//! The configuration of a training run: the `convnet train` flags, clap reads
//! them straight into [`TrainConfig`], which is also `config.toml`.

use crate::options::{
    parse_interpolation, parse_scale, positive, CacheOptions, ClassWeighting, ImageOptions, LrScheduleKind,
    OptimizerKind,
};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use convnet_data::{BitDepth, DecodeOptions, InputFormat, Interpolation, PixelScale};
use convnet_optim::{LrSchedule, ScheduleShape};
use convnet_tensor::ModelSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `--crop` crops each image to before anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CropMode {
    /// The bounding box of the pixels above Otsu's threshold, plus a margin
    Content,
}

/// `--bit-depth`: bits per decoded sample, or `auto` (resolved from the
/// training images when a run starts and kept resolved in config.toml).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum BitDepthChoice {
    /// 16 when the training images hold more than 8 bits, else 8
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// 8 bits per sample
    #[value(name = "8")]
    #[serde(rename = "8")]
    Eight,
    /// 16 bits per sample
    #[value(name = "16")]
    #[serde(rename = "16")]
    Sixteen,
}

/// When to write a checkpoint inside an epoch (one is always written at the
/// end of every epoch).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CheckpointEvery {
    /// After every N training steps.
    Steps(u64),
    /// After this much training time since the last checkpoint.
    Time(Duration),
    /// Only at the end of each epoch.
    Never,
}

impl std::str::FromStr for CheckpointEvery {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}`: expected a number of steps (500), a time (90s, 10m, 2h) or `never`");
        let text = text.trim();
        if text == "never" {
            return Ok(CheckpointEvery::Never);
        }
        let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
            Some(at) => text.split_at(at),
            None => (text, ""),
        };
        let value: f64 = number.parse().map_err(|_| bad())?;
        if !(value.is_finite() && value > 0.0) {
            return Err(bad());
        }
        let seconds = match unit {
            "" if value.fract() == 0.0 => return Ok(CheckpointEvery::Steps(value as u64)),
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(bad()),
        };
        Ok(CheckpointEvery::Time(Duration::from_secs_f64(seconds)))
    }
}

impl std::fmt::Display for CheckpointEvery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckpointEvery::Steps(steps) => write!(f, "{steps}"),
            CheckpointEvery::Time(time) => write!(f, "{}s", time.as_secs_f64()),
            CheckpointEvery::Never => write!(f, "never"),
        }
    }
}

impl Serialize for CheckpointEvery {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for CheckpointEvery {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Default for CheckpointEvery {
    fn default() -> Self {
        CheckpointEvery::Time(Duration::from_secs(600))
    }
}

/// The complete configuration of a run: the `convnet train` flags (clap reads
/// them into this struct directly) and, saved as `config.toml` in the output
/// directory, all that `--resume DIR` needs.
#[derive(Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Training images, one sub-folder per class
    #[arg(long, required_unless_present = "resume", default_value = "-", hide_default_value = true)]
    pub train: PathBuf,
    /// Validation images (same classes); or use --validation-split
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// Hold out this fraction of --train for validation (deterministic from --seed)
    #[arg(long)]
    pub validation_split: Option<f64>,
    /// After training, evaluate on this folder, print the test accuracy and draw grid.png
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Architecture: a preset (baseline, small, resnet-small, resnet18, resnet34, squeezenet1_1) or an architecture TOML file
    #[arg(long, default_value = "baseline")]
    pub model: String,
    #[arg(long, default_value_t = 15, value_parser = positive)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32, value_parser = positive)]
    pub batch_size: usize,
    /// Run each batch as passes of M images (M divides --batch-size; with MPI, M images per rank per pass) and
    /// update once with the whole batch's gradient: activation memory follows M. Without batchnorm the weights
    /// are byte-identical to the run without micro-batches; batchnorm normalises each pass with its own
    /// statistics, as gradient accumulation does in PyTorch. Default: the whole batch, or, when it needs more
    /// than half the memory available, the largest micro-batch that fits in that half
    #[arg(long, value_name = "M")]
    pub micro_batch: Option<usize>,
    #[command(flatten)]
    #[serde(flatten)]
    pub image: ImageOptions,
    #[command(flatten)]
    #[serde(flatten)]
    pub cache: CacheOptions,
    /// Learning rate
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, value_enum, default_value_t = OptimizerKind::Adam)]
    pub optimizer: OptimizerKind,
    /// Decoupled weight decay for adamw
    #[arg(long, default_value_t = 0.004)]
    pub weight_decay: f64,
    /// Momentum for sgd
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Seed of initialisation, split, shuffling, augmentation and dropout
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output directory (default: runs/MODEL-SEED)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Weight the loss by class
    #[arg(long, value_enum)]
    pub class_weight: Option<ClassWeighting>,
    /// Stop when val_loss has not improved for this many epochs
    #[arg(long, value_parser = positive)]
    pub early_stopping: Option<usize>,
    /// Multiply the learning rate by --lr-factor when val_loss has not improved for PATIENCE epochs
    #[arg(long, value_name = "PATIENCE", num_args = 0..=1, default_missing_value = "3", value_parser = positive)]
    pub reduce_lr_on_plateau: Option<usize>,
    #[arg(long, default_value_t = 0.1)]
    pub lr_factor: f64,
    /// How the learning rate changes over the run
    #[arg(long, value_enum, default_value_t = LrScheduleKind::Constant)]
    #[serde(default)]
    pub lr_schedule: LrScheduleKind,
    /// Raise the learning rate linearly from --lr / steps to --lr over the first N epochs (every batch a step)
    #[arg(long, value_name = "N", default_value_t = 0)]
    #[serde(default)]
    pub warmup_epochs: usize,
    /// Random flips, rotation, zoom, shift, brightness and contrast on training images
    #[arg(long)]
    pub augment: bool,
    /// Skip unreadable images (they are listed) instead of stopping
    #[arg(long)]
    pub skip_bad: bool,
    /// Keep the file order (no shuffling)
    #[arg(long)]
    pub no_shuffle: bool,
    /// Start from the weights of an earlier model file, or of a torchvision ResNet
    /// state_dict saved as safetensors (fine-tuning)
    #[arg(long)]
    pub init_weights: Option<PathBuf>,
    /// With --init-weights: a new classifier (the last layer with weights) for this
    /// data's classes, initialised from --seed; every other layer is loaded
    #[arg(long, requires = "init_weights")]
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_head: bool,
    /// Keep layers fixed while fine-tuning: the first N layers, or `backbone` (every layer
    /// before the classifier); they run as in inference and get no gradients
    #[arg(long)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze: Option<super::fine_tune::Freeze>,
    /// Pixel scaling: unit (0-1, default) or raw (0-255, as the original Keras script)
    #[arg(long, default_value = "unit", value_parser = parse_scale)]
    pub pixel_scale: PixelScale,
    /// Resize filter: bilinear, nearest, area, lanczos3
    #[arg(long, default_value = "bilinear", value_parser = parse_interpolation)]
    pub interpolation: Interpolation,
    /// Centre-crop to the target aspect ratio before resizing
    #[arg(long)]
    pub crop_to_aspect_ratio: bool,
    /// torchvision's preprocessing instead: resize the shorter side to N pixels (Pillow's
    /// bilinear filter), then take the centred --image-size crop (256 for 224)
    #[arg(long, conflicts_with = "crop_to_aspect_ratio")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_shorter: Option<usize>,
    /// `content`: crop each image to its content first (the pixels above Otsu's threshold,
    /// plus a 2% margin), e.g. the breast of a mammogram; stored in the model file
    #[arg(long, value_enum)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<CropMode>,
    /// Bits kept per sample through decoding, resizing and the cache: 16 keeps what 12-16-bit sources hold
    /// (16-bit PNG or TIFF, DICOM after its window), 8 rounds to 256 levels; auto: 16 when the training images
    /// have more than 8 bits. Stored in the model file
    #[arg(long, value_enum, default_value_t = BitDepthChoice::Auto)]
    #[serde(default)]
    pub bit_depth: BitDepthChoice,
    /// Write a checkpoint during an epoch every N steps (`500`) or every so
    /// much training time (`10m`, `90s`, `2h`); `never`: at epoch ends only
    #[arg(long, default_value = "10m")]
    #[serde(default)]
    pub checkpoint_every: CheckpointEvery,
    #[command(flatten)]
    #[serde(flatten)]
    pub conv: crate::options::ConvAlgoOptions,
    /// The resolved architecture (so a resumed run does not depend on the TOML
    /// file still being there).
    #[arg(skip)]
    pub architecture: Option<ModelSpec>,
}

impl TrainConfig {
    /// Checks the options a user can get wrong before any work is done.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            bail!("--epochs must be at least 1");
        }
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        super::micro_batch::check(self.micro_batch, self.batch_size)?;
        let image_size = self.image.image_size;
        if image_size.contains(&0) {
            bail!("--image-size must be positive, got {}x{}", image_size[0], image_size[1]);
        }
        if image_size.iter().any(|&s| s > 4096) {
            bail!("--image-size {} is larger than 4096", image_size[0]);
        }
        self.input_format().check_resize().map_err(|e| anyhow!(e))?;
        if self.resize_shorter.is_some() && self.bit_depth == BitDepthChoice::Sixteen {
            bail!("--resize-shorter follows Pillow's 8-bit filter: it takes --bit-depth 8 (or auto), not 16");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be a positive number, got {}", self.lr);
        }
        if self.val.is_some() && self.validation_split.is_some() {
            bail!("give either --val or --validation-split, not both");
        }
        if let Some(split) = self.validation_split {
            if !(split > 0.0 && split < 1.0) {
                bail!("--validation-split must be between 0 and 1, got {split}");
            }
        }
        if !(self.lr_factor > 0.0 && self.lr_factor < 1.0) {
            bail!("--lr-factor must be between 0 and 1, got {}", self.lr_factor);
        }
        if self.warmup_epochs >= self.epochs && self.warmup_epochs > 0 {
            bail!(
                "--warmup-epochs {} leaves no epoch after the warm-up (--epochs {})",
                self.warmup_epochs,
                self.epochs
            );
        }
        if self.reduce_lr_on_plateau.is_some() && !self.schedule(1).is_constant() {
            bail!("--reduce-lr-on-plateau lowers a constant learning rate: it cannot be combined with --lr-schedule cosine or --warmup-epochs");
        }
        Ok(())
    }

    /// The learning rate of every step, for a run of `batches` batches an epoch.
    pub fn schedule(&self, batches: usize) -> LrSchedule {
        LrSchedule {
            base_lr: self.lr,
            warmup_steps: (self.warmup_epochs * batches) as u64,
            total_steps: (self.epochs * batches) as u64,
            shape: match self.lr_schedule {
                LrScheduleKind::Constant => ScheduleShape::Constant,
                LrScheduleKind::Cosine => ScheduleShape::Cosine,
            },
        }
    }

    /// A new run whose `--model` is a convnet model file (a pretrained network
    /// imported with `import-onnx` or `import-torch`): its architecture, and the
    /// preprocessing it expects (pixel scale, resize and crop), replace the
    /// flags'; the data's colour mode and image size stay the flags'.
    pub fn adopt_model_file(mut self) -> Result<Self> {
        if !self.model.ends_with(".safetensors") {
            return Ok(self);
        }
        let file = convnet_io::model_file::read_tensor_file(Path::new(&self.model))?;
        let meta = convnet_io::model_file::parse_meta(&file.metadata)
            .with_context(|| format!("--model {}: not a convnet model file", self.model))?;
        let channels = self.image.color_mode.channels();
        self.architecture = Some(super::fine_tune::adapt_architecture(meta.architecture, channels));
        self.pixel_scale = meta.input.pixel_scale;
        self.interpolation = meta.input.interpolation;
        self.crop_to_aspect_ratio = meta.input.crop_to_aspect_ratio;
        self.crop = meta.input.crop_content.then_some(CropMode::Content);
        // the same share of the shorter side at this run's --image-size (256 for 224: 87.5%)
        let crop = |size: [usize; 2]| size[0].max(size[1]) as f64;
        self.resize_shorter = meta.input.resize_shorter.map(|shorter| {
            (crop(self.image.image_size) * shorter as f64 / crop(meta.input.image_size)).round() as usize
        });
        println!(
            "Architecture and preprocessing from {} (pixels {}{})",
            self.model,
            match self.pixel_scale {
                PixelScale::Unit => "/ 255",
                PixelScale::Raw => "0-255",
            },
            self.resize_shorter.map_or(String::new(), |s| format!(", shorter side to {s} then the centre crop"))
        );
        Ok(self)
    }

    /// The input format the flags describe (the model file stores it).
    pub fn input_format(&self) -> InputFormat {
        InputFormat {
            image_size: self.image.image_size,
            color_mode: self.image.color_mode,
            pixel_scale: self.pixel_scale,
            interpolation: self.interpolation,
            crop_to_aspect_ratio: self.crop_to_aspect_ratio,
            resize_shorter: self.resize_shorter,
            crop_content: self.crop == Some(CropMode::Content),
            bit_depth: match self.bit_depth {
                BitDepthChoice::Sixteen => BitDepth::Sixteen,
                BitDepthChoice::Eight | BitDepthChoice::Auto => BitDepth::Eight,
            },
        }
    }

    /// This configuration with `--bit-depth auto` resolved: 16 when any of up
    /// to 32 training images (spread over the sorted list) holds more than 8
    /// bits per sample, else 8 (always 8 with `--resize-shorter`).
    pub fn with_bit_depth(&self) -> Result<TrainConfig> {
        let mut resolved = self.clone();
        if self.bit_depth != BitDepthChoice::Auto {
            return Ok(resolved);
        }
        resolved.bit_depth = BitDepthChoice::Eight;
        if self.resize_shorter.is_none() {
            let found = convnet_data::scan(&self.train, &convnet_data::ClassNames::Infer, true)?;
            let step = found.files.len().div_ceil(32).max(1);
            let probed: Vec<&Path> = found.files.iter().step_by(step).map(|file| file.path.as_path()).collect();
            if convnet_data::decode::source_bit_depth(&probed) == BitDepth::Sixteen {
                resolved.bit_depth = BitDepthChoice::Sixteen;
            }
        }
        Ok(resolved)
    }

    /// Images per forward pass when predicting (validation, `--test`): the
    /// micro-batch, so that memory stays what the passes of training need.
    pub fn prediction_batch(&self) -> usize {
        self.micro_batch.unwrap_or(self.batch_size).min(self.batch_size)
    }

    /// Decoding to [`TrainConfig::input_format`].
    pub fn decode_options(&self) -> DecodeOptions {
        DecodeOptions::new(self.input_format())
    }

    /// The output directory: `--out`, or `runs/<model>-<seed>`.
    pub fn out_dir(&self) -> PathBuf {
        if let Some(out) = &self.out {
            return out.clone();
        }
        let stem = Path::new(&self.model)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        PathBuf::from("runs").join(format!("{stem}-{}", self.seed))
    }
}

/// Reads a run's saved configuration for `--resume`.
pub fn read_config(dir: &Path) -> Result<TrainConfig> {
    let path = dir.join("config.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("--resume {}: no config.toml (is this a convnet run directory?)", dir.display()))?;
    let mut config: TrainConfig = toml::from_str(&text).map_err(|e| anyhow!("{}: {}", path.display(), e.message()))?;
    config.out = Some(dir.to_path_buf());
    if !dir.join("checkpoint.safetensors").exists() {
        bail!(
            "--resume {}: no checkpoint yet (the run stopped before its first epoch ended); start it again",
            dir.display()
        );
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_saved_before_conv_algo_existed_resumes_with_im2col() {
        // `convnet train`'s shape: --resume lives beside the configuration
        #[derive(clap::Parser)]
        struct Command {
            #[arg(long)]
            resume: Option<PathBuf>,
            #[command(flatten)]
            config: TrainConfig,
        }
        let config = <Command as clap::Parser>::parse_from(["convnet", "--train", "t"]).config;
        assert_eq!(config.conv.conv_algo.to_string(), "auto", "new runs: auto");
        let mut text = toml::to_string(&config).unwrap();
        assert!(text.contains("conv_algo = \"auto\""), "{text}");
        text = text.lines().filter(|line| !line.starts_with("conv_algo")).collect::<Vec<_>>().join("\n");
        let old: TrainConfig = toml::from_str(&text).unwrap();
        assert_eq!(old.conv.conv_algo, crate::options::ConvAlgoArg::before_winograd(), "what such a run computed with");
        assert_eq!(old.conv.conv_algo.to_string(), "im2col");
        // a rule set goes through config.toml as its text
        let rules = crate::options::parse_conv_algo("winograd, 2.dw=im2col").unwrap();
        let saved = TrainConfig { conv: crate::options::ConvAlgoOptions { conv_algo: rules.clone() }, ..config };
        let text = toml::to_string(&saved).unwrap();
        assert!(text.contains("conv_algo = \"winograd,2.weight-grad=im2col\""), "{text}");
        assert_eq!(toml::from_str::<TrainConfig>(&text).unwrap().conv.conv_algo, rules);
    }

    #[test]
    fn checkpoint_schedules_parse_and_print_back() {
        for (text, expected) in [
            ("500", CheckpointEvery::Steps(500)),
            ("10m", CheckpointEvery::Time(Duration::from_secs(600))),
            ("90s", CheckpointEvery::Time(Duration::from_secs(90))),
            ("1.5h", CheckpointEvery::Time(Duration::from_secs(5400))),
            ("never", CheckpointEvery::Never),
        ] {
            let parsed: CheckpointEvery = text.parse().unwrap();
            assert_eq!(parsed, expected, "{text}");
            assert_eq!(parsed.to_string().parse::<CheckpointEvery>().unwrap(), parsed);
        }
        for bad in ["", "0", "-5", "10x", "m", "1.5", "nan"] {
            assert!(bad.parse::<CheckpointEvery>().is_err(), "{bad} should be refused");
        }
    }
}
