//! `convnet train`: the Keras script's `fit`, with checkpoints and exact resume.
//!
//! | file | what |
//! |---|---|
//! | [`config`] | the run's configuration (the flags, and `config.toml`) |
//! | [`epoch`] | one epoch of training, validation, the end-of-epoch callbacks |
//! | [`checkpoint`] | checkpoints, `history.csv`, `curves.png` |
//! | [`lock`] | one run per output directory |
//! | [`interrupt`] | Ctrl-C and SIGTERM: stop after the step, checkpoint, say how to resume |
//! | [`distributed`] | the data-parallel step protocol: sharded batches, the gradient tree across ranks |
//! | [`transport`] | the collective operations it needs, for one process (`Alone`); `mpi_transport` (feature `mpi`) over MPI |
//!
//! Reproducibility: every random choice is a function of the seed and *where*
//! it happens: the split of (seed), the order of epoch `e` of (seed, e), the
//! augmentation of image `i` in epoch `e` of (seed, e, i), the dropout masks of
//! step `s` of (seed, s). A checkpoint therefore needs no generator state beyond
//! the epoch and step counters, and a resumed run replays exactly what the
//! uninterrupted run would have done.

pub mod checkpoint;
pub mod config;
pub mod distributed;
pub mod epoch;
pub mod events;
pub mod fine_tune;
pub mod interrupt;
pub mod lock;
pub mod micro_batch;
#[cfg(feature = "mpi")]
pub mod mpi_transport;
pub mod transport;

use crate::inputs::resolve_architecture;
use crate::options::{ClassWeighting, OptimizerKind};
use anyhow::{anyhow, bail, Context, Result};
use checkpoint::{
    load_checkpoint, read_history_seconds, write_curves, write_history, HistoryRow, RunFiles, TrainingState,
};
use convnet_data::batch::batches_per_epoch;
use convnet_data::{ClassNames, DatasetOptions, ImageSet};
use convnet_io::atomic::write_atomic;
use convnet_io::model_file::{self, ModelMeta, FORMAT_VERSION};
use convnet_optim::{Adam, OptimError, Optimizer, Sgd};
use convnet_tensor::{Sequential, SoftmaxCrossEntropy};
use distributed::Cluster;
use epoch::{after_epoch, stall_warning, train_epoch, validate, EpochEnd, RunContext};
use interrupt::{Interrupt, Interrupted};
use lock::RunLock;
use std::sync::Arc;

pub use config::{read_config, CheckpointEvery, TrainConfig};

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
    /// Images per forward pass when predicting (`--test`): the run's micro-batch, or its batch.
    pub prediction_batch: usize,
    /// The run directory's lock, held until the caller is done (`--test`);
    /// only rank 0 of a distributed run holds it.
    pub lock: Option<RunLock>,
}

/// Loads training and validation data for a config.
pub fn load_training_data(config: &TrainConfig, quiet: bool) -> Result<(ImageSet, Option<ImageSet>)> {
    load_data_as(config, quiet, false)
}

/// Loads the data on every rank of `cluster`: rank 0 first, then the others,
/// which find its decoded cache (ranks on one machine decode once; with
/// several ranks an automatic choice keeps the images in the shared disk
/// cache rather than one copy in memory per rank).
fn load_shared(config: &TrainConfig, cluster: &Cluster) -> Result<(ImageSet, Option<ImageSet>)> {
    let shared_cache =
        cluster.size() > 1 && !config.cache.no_cache && config.cache.cache == convnet_data::Storage::Auto;
    let mut result = None;
    if cluster.is_root() {
        result = Some(load_data_as(config, false, shared_cache));
    }
    cluster.barrier();
    if !cluster.is_root() {
        result = Some(load_data_as(config, true, shared_cache));
    }
    result.expect("loaded on every rank")
}

fn load_data_as(config: &TrainConfig, quiet: bool, shared_cache: bool) -> Result<(ImageSet, Option<ImageSet>)> {
    let mut options = config.cache.apply(DatasetOptions {
        decode: config.decode_options(),
        class_names: ClassNames::Infer,
        skip_bad: config.skip_bad,
        validation_split: config.validation_split,
        seed: config.seed,
        ..DatasetOptions::default()
    });
    if shared_cache {
        options.storage = convnet_data::Storage::Disk;
    }
    let loaded = convnet_data::load(&config.train, &options)?;
    if !quiet {
        print!("{}", loaded.report);
    }
    let mut validation = loaded.validation;
    if let Some(val_dir) = &config.val {
        let options = DatasetOptions {
            class_names: ClassNames::Explicit { names: loaded.training.class_names().to_vec(), allow_missing: true },
            validation_split: None,
            memory_budget: crate::preflight::images_budget(loaded.training.resident_bytes()),
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

/// The model of a run: the architecture on the run's input shape, with the
/// convolution methods asked for and `--init-weights`, after checking the
/// batch size and the memory a batch needs.
fn build_model(
    config: &TrainConfig,
    architecture: &convnet_tensor::model::ModelSpec,
    meta: &ModelMeta,
    train_images: usize,
) -> Result<Sequential<f32>> {
    let input_shape = meta.input_shape();
    let mut model =
        architecture.build::<f32>(&input_shape, meta.class_names.len(), config.seed).with_context(|| {
            format!(
                "the {} architecture cannot take {}x{}x{} inputs",
                config.model, input_shape[1], input_shape[2], input_shape[0]
            )
        })?;
    config.conv.apply(&mut model)?;
    if config.batch_size > train_images {
        bail!(
            "--batch-size {} is larger than the {} training images in {}: choose at most {}",
            config.batch_size,
            train_images,
            config.train.display(),
            train_images
        );
    }
    if let Some(init) = &config.init_weights {
        fine_tune::initialise_from(&mut model, init, config.new_head)?;
    }
    if let Some(freeze) = config.freeze {
        fine_tune::apply_freeze(&mut model, freeze)?;
    }
    Ok(model)
}

/// Restores the weights, the optimizer and the counters of `--resume`.
fn restore_checkpoint(
    config: &TrainConfig,
    files: &RunFiles,
    model: &mut Sequential<f32>,
    optimizer: &mut AnyOptimizer,
    batches: usize,
) -> Result<TrainingState> {
    let (optimizer_state, mut saved) = load_checkpoint(&files.checkpoint(), model)?;
    optimizer
        .get()
        .load_state(optimizer_state)
        .map_err(|e: OptimError| anyhow!("{}: {e}", files.checkpoint().display()))?;
    // the checkpoint keeps no times; history.csv has them
    for (row, seconds) in saved.history.iter_mut().zip(read_history_seconds(files)) {
        row.seconds = seconds;
    }
    if saved.batches_done > 0 {
        println!(
            "Resuming {} at epoch {} of {}, batch {} of {batches}",
            files.dir.display(),
            saved.epochs_done + 1,
            config.epochs,
            saved.batches_done + 1
        );
    } else {
        println!("Resuming {} after epoch {} of {}", files.dir.display(), saved.epochs_done, config.epochs);
    }
    Ok(saved)
}

/// A new run: its exact configuration to config.toml, the model summary.
fn start_run(
    config: &TrainConfig,
    files: &RunFiles,
    architecture: &convnet_tensor::model::ModelSpec,
    model: &Sequential<f32>,
    cluster: &Cluster,
) -> Result<()> {
    let mut saved = config.clone();
    saved.architecture = Some(architecture.clone());
    saved.out = Some(files.dir.clone());
    let text = toml::to_string_pretty(&saved).map_err(|e| anyhow!("cannot encode the configuration: {e}"))?;
    if cluster.is_root() {
        write_atomic(&files.config(), text.as_bytes())?;
    }
    print!("{}", crate::model_summary::summary_table(model, config.batch_size, config.micro_batch));
    Ok(())
}

/// The epoch's one line: its losses and accuracies, the learning rate, the
/// speed and the data wait (and the ranks' share of the time, with MPI).
fn epoch_line(
    config: &TrainConfig,
    cluster: &Cluster,
    state: &TrainingState,
    (training_seconds, data_wait, communication): (f64, std::time::Duration, f64),
) -> String {
    let row = state.history.last().expect("the epoch's row was pushed");
    let (loss, accuracy, seconds, lr) = (row.loss, row.accuracy, row.seconds, row.lr);
    let mut line =
        format!("Epoch {}/{} - {seconds:.1}s - loss: {loss:.4} - accuracy: {accuracy:.4}", row.epoch, config.epochs);
    if let (Some(vl), Some(va)) = (row.val_loss, row.val_accuracy) {
        line.push_str(&format!(" - val_loss: {vl:.4} - val_accuracy: {va:.4}"));
    }
    line.push_str(&format!(
        " - lr: {lr:.2e} - {:.1} img/s - data wait {:.1}%",
        state.epoch_seen as f64 / training_seconds.max(1e-9),
        100.0 * data_wait.as_secs_f64() / training_seconds.max(1e-9)
    ));
    if cluster.size() > 1 {
        line.push_str(&format!(
            " - {} ranks, {:.1} img/s each, communication {:.1}%",
            cluster.size(),
            state.epoch_seen as f64 / training_seconds.max(1e-9) / cluster.size() as f64,
            100.0 * communication / seconds.max(1e-9)
        ));
    }
    line
}

/// What a model file of this run says about its input and classes.
fn model_meta(
    config: &TrainConfig,
    architecture: &convnet_tensor::model::ModelSpec,
    class_names: &[String],
) -> ModelMeta {
    ModelMeta {
        format_version: FORMAT_VERSION,
        architecture: architecture.clone(),
        class_names: class_names.to_vec(),
        input: config.input_format(),
        temperature: None,
    }
}

/// The loss of the run: softmax cross-entropy, weighted by class with
/// `--class-weight balanced` (the weights printed).
fn loss_function(config: &TrainConfig, train_set: &ImageSet) -> Result<SoftmaxCrossEntropy<f32>> {
    let class_names = train_set.class_names();
    let class_weights =
        config.class_weight.map(|ClassWeighting::Balanced| balanced_class_weights(&train_set.class_counts()));
    if let Some(weights) = &class_weights {
        let shown: Vec<String> = class_names.iter().zip(weights).map(|(n, w)| format!("{n}: {w:.3}")).collect();
        println!("Class weights (balanced): {}", shown.join(", "));
    }
    Ok(match &class_weights {
        Some(weights) => SoftmaxCrossEntropy::with_class_weights(weights.clone()),
        None => SoftmaxCrossEntropy::new(),
    })
}

/// Creates the run directory and locks it (rank 0 only), before the slow
/// part, so a second run into the same directory fails at once.
fn lock_run_dir(files: &RunFiles, cluster: &Cluster) -> Result<Option<RunLock>> {
    if !cluster.is_root() {
        return Ok(None);
    }
    std::fs::create_dir_all(&files.dir)
        .with_context(|| format!("cannot create output directory {}", files.dir.display()))?;
    Ok(Some(RunLock::acquire(&files.dir)?))
}

/// `config` with the micro-batch this process trains with: `--micro-batch`,
/// or one chosen to fit in memory ([`crate::preflight::micro_batch`]); kept in
/// config.toml so a resumed run cuts its batches the same way.
fn with_micro_batch(config: &TrainConfig, model: &Sequential<f32>, cluster: &Cluster) -> Result<TrainConfig> {
    let share = cluster.shard().part(config.batch_size).0.len();
    let mut resolved = config.clone();
    resolved.micro_batch = crate::preflight::micro_batch(model, share, config.micro_batch)?;
    Ok(resolved)
}

/// With several ranks, a model with batchnorm normalises with the statistics
/// of the whole batch: its batchnorms gather the ranks' per-image sums
/// ([`Cluster::batch_sync`]). Every rank must then hold part of every batch
/// (a rank without images would not join the gathers): refused otherwise.
fn synchronise_batchnorm(
    model: &mut Sequential<f32>,
    cluster: &Cluster,
    config: &TrainConfig,
    images: usize,
) -> Result<()> {
    if cluster.size() == 1 || model.buffers().is_empty() {
        return Ok(());
    }
    let (ranks, batch) = (cluster.size(), config.batch_size);
    let shard = cluster.shard();
    let largest_share = (0..ranks).map(|rank| shard.part_of(rank, batch).0.len()).max().unwrap_or(0);
    if let Some(micro) = config.micro_batch.filter(|&micro| micro < largest_share) {
        // each rank's passes would move its running statistics alone
        bail!(
            "a model with batchnorm on {ranks} MPI ranks cannot train in micro-batches (--micro-batch {micro}, \
             chosen or given, of a batch of {batch}) yet: use one process, or more ranks for a smaller share each"
        );
    }
    let last = images % batch;
    if batch < ranks || (last != 0 && last < ranks) {
        bail!(
            "a model with batchnorm on {ranks} MPI ranks needs at least {ranks} images in every batch \
             (--batch-size {batch} over {images} images leaves a last batch of {last}): choose another --batch-size"
        );
    }
    model.set_batch_sync(cluster.batch_sync());
    Ok(())
}

/// `config` checked, with `--bit-depth auto` resolved from the training
/// images (said once when that keeps 16 bits).
fn checked_with_bit_depth(config: &TrainConfig, resume: bool, cluster: &Cluster) -> Result<TrainConfig> {
    config.validate()?;
    let resolved = config.with_bit_depth()?;
    if !resume && cluster.is_root() && resolved.input_format().bit_depth == convnet_data::BitDepth::Sixteen {
        println!("Samples kept at 16 bits (--bit-depth 8 would round them to 256 levels)");
    }
    Ok(resolved)
}

/// Runs (or resumes) a training run, on this process or on every rank of an
/// MPI job (see [`distributed`]).
pub fn train(config: &TrainConfig, resume: bool, cluster: &Cluster) -> Result<TrainOutcome> {
    let config = &checked_with_bit_depth(config, resume, cluster)?;
    let files = RunFiles { dir: config.out_dir() };
    let architecture = match &config.architecture {
        Some(spec) => spec.clone(),
        None => resolve_architecture(&config.model)?,
    };
    let lock = lock_run_dir(&files, cluster)?;
    let (train_set, val_set) = load_shared(config, cluster)?;
    let class_names = train_set.class_names().to_vec();
    let meta = model_meta(config, &architecture, &class_names);
    let mut model = build_model(config, &architecture, &meta, train_set.len())?;
    let config = &with_micro_batch(config, &model, cluster)?;
    synchronise_batchnorm(&mut model, cluster, config, train_set.len())?;
    let mut optimizer = AnyOptimizer::new(config)?;
    let mut state = TrainingState::default();
    let batches = batches_per_epoch(train_set.len(), config.batch_size);

    if resume {
        state = restore_checkpoint(config, &files, &mut model, &mut optimizer, batches)?;
    } else {
        start_run(config, &files, &architecture, &model, cluster)?;
    }

    let mut loss_fn = loss_function(config, &train_set)?;
    let train_set = Arc::new(train_set);
    let interrupt = Interrupt::install().context("cannot install the Ctrl-C handler")?;
    let inputs = RunContext {
        config,
        files: &files,
        meta: &meta,
        train_set: &train_set,
        batches,
        interrupt: &interrupt,
        cluster,
        last_checkpoint: std::cell::Cell::new(resume.then_some((state.epochs_done, state.batches_done))),
    };
    let resume_hint = format!("continue with: convnet train --resume {}", files.dir.display());
    let counts = train_set.class_counts();
    let majority_share = counts.iter().copied().max().unwrap_or(0) as f64 / train_set.len().max(1) as f64;
    let mut warned_stall = false;

    while state.epochs_done < config.epochs && !state.stopped_early {
        let epoch = state.epochs_done;
        let started = std::time::Instant::now();
        let (training_seconds, data_wait) =
            match train_epoch(&mut model, &mut loss_fn, optimizer.get(), &mut state, &inputs)? {
                EpochEnd::Completed { seconds, data_wait } => (seconds, data_wait),
                EpochEnd::Interrupted(signal) => {
                    let message = format!(
                        "Interrupted at epoch {}, batch {} of {batches}; {resume_hint}",
                        epoch + 1,
                        state.batches_done
                    );
                    return Err(Interrupted { signal, message }.into());
                }
            };
        let seen = state.epoch_seen.max(1) as f64;
        let (loss, accuracy) = (state.epoch_loss_sum / seen, state.epoch_correct as f64 / seen);
        let (val_loss, val_accuracy) = validate(&mut model, val_set.as_ref(), config, cluster)?;
        let communication = cluster.take_communication().as_secs_f64();
        cluster.check_same_weights(&model, &format!("after epoch {}", epoch + 1))?;
        let seconds = started.elapsed().as_secs_f64();
        let lr = optimizer.get().learning_rate();
        state.history.push(HistoryRow { epoch: epoch + 1, loss, accuracy, val_loss, val_accuracy, lr, seconds });
        let line = epoch_line(config, cluster, &state, (training_seconds, data_wait, communication));
        println!("{line}");
        if !warned_stall {
            if let Some(warning) = stall_warning(&state.history, class_names.len(), majority_share) {
                println!("{warning}");
                warned_stall = true;
            }
        }
        if let (Some(vl), Some(va)) = (val_loss, val_accuracy) {
            after_epoch((vl, va), &model, optimizer.get(), &mut state, &inputs)?;
        }
        state.epochs_done = epoch + 1;
        (state.batches_done, state.epoch_loss_sum, state.epoch_correct, state.epoch_seen) = (0, 0.0, 0, 0);
        inputs.checkpoint(&model, optimizer.get(), &mut state)?;
        if cluster.is_root() {
            write_history(&files, &state.history)?;
            write_curves(&files, &state.history)?;
            events::write_events(&files, &state, train_set.len(), batches)?;
        }
        if let Some(signal) = cluster.any_stop(interrupt.requested()) {
            if state.epochs_done < config.epochs && !state.stopped_early {
                let message =
                    format!("Interrupted after epoch {} of {}; {resume_hint}", state.epochs_done, config.epochs);
                return Err(Interrupted { signal, message }.into());
            }
        }
    }
    drop(interrupt);
    if cluster.is_root() {
        model_file::save_model(&files.model(), &model, &meta)?;
    }
    Ok(TrainOutcome { model, meta, files, prediction_batch: config.prediction_batch(), lock })
}
