//! `convnet train`: the Keras script's `fit`, with checkpoints and exact resume.
//!
//! Reproducibility: every random choice is a function of the seed and *where*
//! it happens: the split of (seed), the order of epoch `e` of (seed, e), the
//! augmentation of image `i` in epoch `e` of (seed, e, i), the dropout masks of
//! step `s` of (seed, s). A checkpoint therefore needs no generator state beyond
//! the epoch and step counters, and a resumed run replays exactly what the
//! uninterrupted run would have done.

use crate::inputs::resolve_architecture;
use crate::options::{parse_interpolation, parse_scale, positive, ClassWeighting, ImageOptions, OptimizerKind};
use crate::render::{self, Panel};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use convnet_data::batch::{batches_per_epoch, BatchConfig, BatchStream};
use convnet_data::{Augmentation, ClassNames, DatasetOptions, DecodeOptions, ImageSet, Interpolation, PixelScale};
use convnet_io::atomic::write_atomic;
use convnet_io::metrics::predict_set;
use convnet_io::model_file::{self, f32_bytes, ModelMeta, FORMAT_VERSION, META_KEY};
use convnet_optim::{Adam, OptimError, Optimizer, OptimizerState, Sgd};
use convnet_tensor::ndarray::{ArrayD, IxDyn};
use convnet_tensor::rng::derive;
use convnet_tensor::{Mode, ModelSpec, Sequential, SoftmaxCrossEntropy};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

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
    /// Architecture: baseline, small, or an architecture TOML file
    #[arg(long, default_value = "baseline")]
    pub model: String,
    #[arg(long, default_value_t = 15, value_parser = positive)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32, value_parser = positive)]
    pub batch_size: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub image: ImageOptions,
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
    /// Random flips, rotation, zoom, shift, brightness and contrast on training images
    #[arg(long)]
    pub augment: bool,
    /// Skip unreadable images (they are listed) instead of stopping
    #[arg(long)]
    pub skip_bad: bool,
    /// Keep the file order (no shuffling)
    #[arg(long)]
    pub no_shuffle: bool,
    /// Start from the weights of an earlier model file (fine-tuning)
    #[arg(long)]
    pub init_weights: Option<PathBuf>,
    /// Pixel scaling: unit (0-1, default) or raw (0-255, as the original Keras script)
    #[arg(long, default_value = "unit", value_parser = parse_scale)]
    pub pixel_scale: PixelScale,
    /// Resize filter: bilinear, nearest, area, lanczos3
    #[arg(long, default_value = "bilinear", value_parser = parse_interpolation)]
    pub interpolation: Interpolation,
    /// Centre-crop to the target aspect ratio before resizing
    #[arg(long)]
    pub crop_to_aspect_ratio: bool,
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
        let image_size = self.image.image_size;
        if image_size.contains(&0) {
            bail!("--image-size must be positive, got {}x{}", image_size[0], image_size[1]);
        }
        if image_size.iter().any(|&s| s > 4096) {
            bail!("--image-size {} is larger than 4096", image_size[0]);
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
        Ok(())
    }

    fn decode_options(&self) -> DecodeOptions {
        model_file::decode_options(
            self.image.image_size,
            self.image.color_mode,
            self.interpolation,
            self.crop_to_aspect_ratio,
        )
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

/// One row of `history.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub lr: f64,
    pub seconds: f64,
}

/// What a checkpoint stores besides tensors.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    pub epochs_done: usize,
    pub step: u64,
    pub lr: f64,
    pub optimizer_step: u64,
    pub best_val_accuracy: Option<f64>,
    pub best_val_loss: Option<f64>,
    pub epochs_without_improvement: usize,
    pub epochs_on_plateau: usize,
    pub history: Vec<HistoryRow>,
    pub stopped_early: bool,
}

/// The optimizer, behind one type for the three kinds.
enum AnyOptimizer {
    Adam(Adam<f32>),
    Sgd(Sgd<f32>),
}

impl AnyOptimizer {
    fn new(config: &TrainConfig) -> Result<Self> {
        Ok(match config.optimizer {
            OptimizerKind::Adam => AnyOptimizer::Adam(Adam::new(config.lr)),
            OptimizerKind::Adamw => AnyOptimizer::Adam(Adam::adamw(config.lr, config.weight_decay)),
            OptimizerKind::Sgd => AnyOptimizer::Sgd(Sgd::with_momentum(config.lr, config.momentum, false)?),
        })
    }

    fn get(&mut self) -> &mut dyn Optimizer<f32> {
        match self {
            AnyOptimizer::Adam(adam) => adam,
            AnyOptimizer::Sgd(sgd) => sgd,
        }
    }
}

/// Paths of a run's outputs.
pub struct RunFiles {
    pub dir: PathBuf,
}

impl RunFiles {
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join("checkpoint.safetensors")
    }
    pub fn model(&self) -> PathBuf {
        self.dir.join("model.safetensors")
    }
    pub fn best(&self) -> PathBuf {
        self.dir.join("best.safetensors")
    }
    pub fn history(&self) -> PathBuf {
        self.dir.join("history.csv")
    }
    pub fn curves(&self) -> PathBuf {
        self.dir.join("curves.png")
    }
}

/// Saves the checkpoint: weights, optimizer buffers, training state.
fn save_checkpoint(
    files: &RunFiles,
    model: &Sequential<f32>,
    meta: &ModelMeta,
    optimizer: &OptimizerState<f32>,
    state: &TrainingState,
) -> Result<()> {
    let mut tensors = model_file::model_tensors(model);
    for (slot, buffers) in &optimizer.slots {
        for (i, buffer) in buffers.iter().enumerate() {
            tensors.push((format!("optimizer.{slot}.{i}"), buffer.shape().to_vec(), f32_bytes(buffer.iter().copied())));
        }
    }
    let mut metadata = BTreeMap::new();
    metadata.insert(META_KEY.to_string(), serde_json::to_string(meta)?);
    metadata.insert("training".to_string(), serde_json::to_string(state)?);
    let slot_names: Vec<&String> = optimizer.slots.iter().map(|(name, _)| name).collect();
    metadata.insert("optimizer_slots".to_string(), serde_json::to_string(&slot_names)?);
    Ok(write_atomic(&files.checkpoint(), &model_file::serialize(&tensors, &metadata)?)?)
}

/// Loads a checkpoint into `model` and returns the optimizer state and training state.
fn load_checkpoint(path: &Path, model: &mut Sequential<f32>) -> Result<(OptimizerState<f32>, TrainingState)> {
    let file = model_file::read_tensor_file(path)?;
    model_file::assign_params(model, &file.tensors)
        .with_context(|| format!("{}: does not fit the model", path.display()))?;
    let state: TrainingState = serde_json::from_str(
        file.metadata.get("training").ok_or_else(|| anyhow!("{}: no training state", path.display()))?,
    )
    .with_context(|| format!("{}: malformed training state", path.display()))?;
    let slot_names: Vec<String> =
        serde_json::from_str(file.metadata.get("optimizer_slots").map(String::as_str).unwrap_or("[]"))?;
    let count = model.params().len();
    let mut slots = Vec::new();
    for name in slot_names {
        let mut buffers = Vec::new();
        for i in 0..count {
            let key = format!("optimizer.{name}.{i}");
            let Some((shape, values)) = file.tensors.get(&key) else {
                break; // an optimizer that had not allocated this slot yet
            };
            buffers.push(ArrayD::from_shape_vec(IxDyn(shape), values.clone()).map_err(|e| anyhow!("{key}: {e}"))?);
        }
        slots.push((name, buffers));
    }
    Ok((OptimizerState { step: state.optimizer_step, slots }, state))
}

fn write_history(files: &RunFiles, history: &[HistoryRow]) -> Result<()> {
    let mut csv = String::from("epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n");
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.6}")).unwrap_or_default();
    for row in history {
        csv.push_str(&format!(
            "{},{:.6},{:.6},{},{},{},{:.3}\n",
            row.epoch,
            row.loss,
            row.accuracy,
            opt(row.val_loss),
            opt(row.val_accuracy),
            row.lr,
            row.seconds
        ));
    }
    Ok(write_atomic(&files.history(), csv.as_bytes())?)
}

fn write_curves(files: &RunFiles, history: &[HistoryRow]) -> Result<()> {
    let series =
        |f: &dyn Fn(&HistoryRow) -> Option<f64>| history.iter().map(|r| f(r).unwrap_or(f64::NAN)).collect::<Vec<_>>();
    let has_val = history.iter().any(|r| r.val_loss.is_some());
    let mut loss = vec![("train", series(&|r| Some(r.loss)), render::BLUE)];
    let mut accuracy = vec![("train", series(&|r| Some(r.accuracy)), render::BLUE)];
    if has_val {
        loss.push(("validation", series(&|r| r.val_loss), render::ORANGE));
        accuracy.push(("validation", series(&|r| r.val_accuracy), render::ORANGE));
    }
    let image =
        render::line_charts(&[Panel { title: "loss", series: loss }, Panel { title: "accuracy", series: accuracy }]);
    Ok(write_atomic(&files.curves(), &render::png_bytes(&image)?)?)
}

/// Per-class weights `total / (classes * count)` (Keras' "balanced").
pub fn balanced_class_weights(counts: &[usize]) -> Vec<f32> {
    let total: usize = counts.iter().sum();
    let classes = counts.len();
    counts.iter().map(|&count| if count == 0 { 0.0 } else { total as f32 / (classes * count) as f32 }).collect()
}

/// The outcome of `train`, for the caller's summary.
pub struct TrainOutcome {
    pub model: Sequential<f32>,
    pub meta: ModelMeta,
    pub files: RunFiles,
}

/// Loads training and validation data for a config.
pub fn load_training_data(config: &TrainConfig, quiet: bool) -> Result<(ImageSet, Option<ImageSet>)> {
    let options = DatasetOptions {
        decode: config.decode_options(),
        class_names: ClassNames::Infer,
        follow_links: false,
        skip_bad: config.skip_bad,
        validation_split: config.validation_split,
        seed: config.seed,
    };
    let loaded = convnet_data::load(&config.train, &options)?;
    if !quiet {
        print!("{}", loaded.report);
    }
    let mut validation = loaded.validation;
    if let Some(val_dir) = &config.val {
        let options = DatasetOptions {
            class_names: ClassNames::Explicit { names: loaded.training.class_names().to_vec(), allow_missing: true },
            validation_split: None,
            ..options
        };
        let val = convnet_data::load(val_dir, &options)?;
        if !quiet {
            print!("Validation: {}", val.report);
        }
        validation = Some(val.training);
    }
    Ok((loaded.training, validation))
}

/// Runs (or resumes) a training run.
pub fn train(config: &TrainConfig, resume: bool) -> Result<TrainOutcome> {
    config.validate()?;
    let files = RunFiles { dir: config.out_dir() };
    let architecture = match &config.architecture {
        Some(spec) => spec.clone(),
        None => resolve_architecture(&config.model)?,
    };
    let (train_set, val_set) = load_training_data(config, false)?;
    let class_names = train_set.class_names().to_vec();
    let meta = ModelMeta {
        format_version: FORMAT_VERSION,
        architecture: architecture.clone(),
        class_names: class_names.clone(),
        image_size: config.image.image_size,
        color_mode: config.image.color_mode,
        pixel_scale: config.pixel_scale,
        interpolation: config.interpolation,
        crop_to_aspect_ratio: config.crop_to_aspect_ratio,
    };
    let input_shape = meta.input_shape();
    let mut model = architecture.build::<f32>(&input_shape, class_names.len(), config.seed).with_context(|| {
        format!(
            "the {} architecture cannot take {}x{}x{} inputs",
            config.model, input_shape[1], input_shape[2], input_shape[0]
        )
    })?;
    if config.batch_size > train_set.len() {
        bail!(
            "--batch-size {} is larger than the {} training images in {}: choose at most {}",
            config.batch_size,
            train_set.len(),
            config.train.display(),
            train_set.len()
        );
    }
    crate::preflight::check_memory(&model, config.batch_size)?;
    if let Some(init) = &config.init_weights {
        let file = model_file::read_tensor_file(init)?;
        model_file::assign_params(&mut model, &file.tensors)
            .with_context(|| format!("--init-weights {}: does not fit this model", init.display()))?;
        println!("Initialised weights from {}", init.display());
    }
    let mut optimizer = AnyOptimizer::new(config)?;
    let mut state = TrainingState { lr: config.lr, ..TrainingState::default() };

    std::fs::create_dir_all(&files.dir)
        .with_context(|| format!("cannot create output directory {}", files.dir.display()))?;
    if resume {
        let (optimizer_state, saved) = load_checkpoint(&files.checkpoint(), &mut model)?;
        optimizer
            .get()
            .load_state(optimizer_state)
            .map_err(|e: OptimError| anyhow!("{}: {e}", files.checkpoint().display()))?;
        optimizer.get().set_learning_rate(saved.lr);
        state = saved;
        println!("Resuming {} after epoch {} of {}", files.dir.display(), state.epochs_done, config.epochs);
    } else {
        let mut saved = config.clone();
        saved.architecture = Some(architecture.clone());
        saved.out = Some(files.dir.clone());
        let text = toml::to_string_pretty(&saved).map_err(|e| anyhow!("cannot encode the configuration: {e}"))?;
        write_atomic(&files.config(), text.as_bytes())?;
        print!("{}", crate::model_summary::summary_table(&model, config.batch_size));
    }

    let class_weights =
        config.class_weight.map(|ClassWeighting::Balanced| balanced_class_weights(&train_set.class_counts()));
    if let Some(weights) = &class_weights {
        let shown: Vec<String> = class_names.iter().zip(weights).map(|(n, w)| format!("{n}: {w:.3}")).collect();
        println!("Class weights (balanced): {}", shown.join(", "));
    }
    let mut loss_fn = match &class_weights {
        Some(weights) => SoftmaxCrossEntropy::with_class_weights(weights.clone()),
        None => SoftmaxCrossEntropy::new(),
    };
    let train_set = Arc::new(train_set);
    let batches = batches_per_epoch(train_set.len(), config.batch_size);
    let terminal = std::io::stdout().is_terminal();

    while state.epochs_done < config.epochs && !state.stopped_early {
        let epoch = state.epochs_done;
        let started = Instant::now();
        let stream_config = BatchConfig {
            batch_size: config.batch_size,
            shuffle: !config.no_shuffle,
            seed: config.seed,
            epoch: epoch as u64,
            scale: config.pixel_scale,
            augment: config.augment.then(Augmentation::standard),
            first_batch: 0,
        };
        let mut stream = BatchStream::new(train_set.clone(), stream_config);
        let bar = terminal.then(|| {
            let bar = indicatif::ProgressBar::new(batches as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(format!("Epoch {}/{}", epoch + 1, config.epochs));
            bar
        });
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        // time spent waiting for the loader thread: the share of the epoch lost to data
        let mut data_wait = std::time::Duration::ZERO;
        loop {
            let waiting = Instant::now();
            let Some(batch) = stream.next_batch() else { break };
            data_wait += waiting.elapsed();
            let step_seed = derive(config.seed ^ 0xD0_0D, state.step);
            let logits = model.forward(batch.images.view(), Mode::Train { seed: step_seed })?;
            let loss = loss_fn.forward(logits, &batch.labels)?;
            if !loss.is_finite() {
                let kept = if state.epochs_done == 0 {
                    "no checkpoint had been written yet".to_string()
                } else {
                    format!(
                        "the last good checkpoint, {} (epoch {}), is kept",
                        files.checkpoint().display(),
                        state.epochs_done
                    )
                };
                bail!(
                    "the loss became {loss} at epoch {}, batch {} of {batches}; training stopped and {kept}. Try a smaller --lr.",
                    epoch + 1,
                    batch.number + 1,
                );
            }
            loss_sum += loss as f64 * batch.labels.len() as f64;
            correct += loss_fn.correct(&batch.labels);
            seen += batch.labels.len();
            model.backward(loss_fn.grad_logits().view())?;
            optimizer.get().step(&mut model.params_mut())?;
            state.step += 1;
            if let Some(bar) = &bar {
                let rate = seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!(
                    "loss {:.4} acc {:.4} {rate:.0} img/s",
                    loss_sum / seen as f64,
                    correct as f64 / seen as f64
                ));
                bar.inc(1);
            }
            stream.recycle(batch);
        }
        drop(stream);
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let training_seconds = started.elapsed().as_secs_f64();
        let (loss, accuracy) = (loss_sum / seen.max(1) as f64, correct as f64 / seen.max(1) as f64);
        let (val_loss, val_accuracy) = match &val_set {
            Some(set) => {
                let predictions = predict_set(&mut model, set, config.batch_size, config.pixel_scale)?;
                let correct = predictions.predicted.iter().zip(set.labels()).filter(|(p, l)| p == l).count();
                (Some(predictions.loss), Some(correct as f64 / set.len().max(1) as f64))
            }
            None => (None, None),
        };
        let seconds = started.elapsed().as_secs_f64();
        let lr = optimizer.get().learning_rate();
        state.history.push(HistoryRow { epoch: epoch + 1, loss, accuracy, val_loss, val_accuracy, lr, seconds });
        let mut line = format!(
            "Epoch {}/{} - {seconds:.1}s - loss: {loss:.4} - accuracy: {accuracy:.4}",
            epoch + 1,
            config.epochs
        );
        if let (Some(vl), Some(va)) = (val_loss, val_accuracy) {
            line.push_str(&format!(" - val_loss: {vl:.4} - val_accuracy: {va:.4}"));
        }
        line.push_str(&format!(
            " - lr: {lr:.2e} - {:.1} img/s - data wait {:.1}%",
            seen as f64 / training_seconds.max(1e-9),
            100.0 * data_wait.as_secs_f64() / training_seconds.max(1e-9)
        ));
        println!("{line}");

        // best model, early stopping, plateau
        if let (Some(vl), Some(va)) = (val_loss, val_accuracy) {
            if state.best_val_accuracy.is_none_or(|best| va > best) {
                state.best_val_accuracy = Some(va);
                model_file::save_model(&files.best(), &model, &meta)?;
            }
            if state.best_val_loss.is_none_or(|best| vl < best) {
                state.best_val_loss = Some(vl);
                state.epochs_without_improvement = 0;
                state.epochs_on_plateau = 0;
            } else {
                state.epochs_without_improvement += 1;
                state.epochs_on_plateau += 1;
                if let Some(patience) = config.reduce_lr_on_plateau {
                    if state.epochs_on_plateau >= patience {
                        let new_lr = lr * config.lr_factor;
                        optimizer.get().set_learning_rate(new_lr);
                        state.epochs_on_plateau = 0;
                        println!(
                            "val_loss has not improved for {patience} epochs: learning rate {lr:.2e} -> {new_lr:.2e}"
                        );
                    }
                }
                if let Some(patience) = config.early_stopping {
                    if state.epochs_without_improvement >= patience {
                        state.stopped_early = true;
                        println!("Early stopping: val_loss has not improved for {patience} epochs.");
                    }
                }
            }
        }
        state.epochs_done = epoch + 1;
        state.lr = optimizer.get().learning_rate();
        let optimizer_state = optimizer.get().state();
        state.optimizer_step = optimizer_state.step;
        save_checkpoint(&files, &model, &meta, &optimizer_state, &state)?;
        write_history(&files, &state.history)?;
        write_curves(&files, &state.history)?;
    }
    model_file::save_model(&files.model(), &model, &meta)?;
    Ok(TrainOutcome { model, meta, files })
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
