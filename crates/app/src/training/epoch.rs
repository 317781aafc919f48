//! One epoch of training, validation, and the end-of-epoch callbacks (best
//! model, reduce-on-plateau, early stopping), as Keras' `fit` runs them.

use super::checkpoint::{save_checkpoint, HistoryRow, RunFiles, TrainingState};
use super::config::{CheckpointEvery, TrainConfig};
use super::distributed::{Cluster, StepTotals};
use super::interrupt::Interrupt;
use super::micro_batch;
use anyhow::{anyhow, Result};
use convnet_data::batch::{Batch, BatchConfig, BatchStream};
use convnet_data::{Augmentation, ImageSet};
use convnet_io::model_file::{self, ModelMeta};
use convnet_optim::Optimizer;
use convnet_tensor::ndarray::{Axis, Slice};
use convnet_tensor::rng::derive;
use convnet_tensor::{Mode, Sequential, SoftmaxCrossEntropy};
use std::cell::Cell;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a run hands to each of its epochs besides the model and the optimizer:
/// its configuration, files, data, the interrupt flag and the cluster.
pub struct RunContext<'a> {
    pub config: &'a TrainConfig,
    pub files: &'a RunFiles,
    pub meta: &'a ModelMeta,
    pub train_set: &'a Arc<ImageSet>,
    /// Batches per epoch.
    pub batches: usize,
    pub interrupt: &'a Interrupt,
    /// The processes sharing the run (this one alone without MPI).
    pub cluster: &'a Cluster,
    /// Where the newest checkpoint of this run stands, `(epochs done, batches
    /// done)`, for the message when the loss explodes; `None` before the first.
    pub last_checkpoint: Cell<Option<(usize, usize)>>,
}

impl RunContext<'_> {
    /// Writes a checkpoint of the current position (weights, optimizer,
    /// state), remembering where it was.
    pub fn checkpoint(
        &self,
        model: &Sequential<f32>,
        optimizer: &mut dyn Optimizer<f32>,
        state: &mut TrainingState,
    ) -> Result<()> {
        let optimizer_state = optimizer.state();
        if self.cluster.is_root() {
            save_checkpoint(self.files, model, self.meta, &optimizer_state, state)?;
        }
        self.last_checkpoint.set(Some((state.epochs_done, state.batches_done)));
        Ok(())
    }
}

/// How the training part of an epoch ended.
pub enum EpochEnd {
    /// Every batch trained; the running sums are in the state.
    Completed {
        /// Wall time of the training part (this process's share of the epoch).
        seconds: f64,
        /// Time spent waiting for the image loader.
        data_wait: Duration,
    },
    /// A signal arrived; a checkpoint of the position was written.
    Interrupted(i32),
}

/// The epoch's progress bar, on a terminal only.
fn progress_bar(
    config: &TrainConfig,
    epoch: usize,
    batches: usize,
    batches_done: usize,
) -> Option<indicatif::ProgressBar> {
    std::io::stdout().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(batches as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("Epoch {}/{}", epoch + 1, config.epochs));
        bar.set_position(batches_done as u64);
        bar
    })
}

/// One step's forward and backward pass over this process's part of `batch`,
/// leaving the batch's gradient in the model: the loss over the whole batch's
/// size, the backward as a subtree of the gradient tree's leaves. Alone, the
/// step's totals are this process's own; with MPI the ranks finish the
/// gradient tree and agree on them ([`Cluster::finish_step`]).
fn forward_backward(
    model: &mut Sequential<f32>,
    loss_fn: &mut SoftmaxCrossEntropy<f32>,
    batch: &Batch,
    step_seed: u64,
    (cluster, micro, gradients): (&Cluster, Option<usize>, &mut micro_batch::PassGradients),
    stop: Option<i32>,
) -> Result<StepTotals> {
    // this process's part of the batch (all of it without MPI), in passes of
    // at most --micro-batch images: forward, loss over the whole batch's size,
    // backward as a subtree (or part of a leaf) of the gradient tree
    let (_, leaves) = cluster.shard().part(batch.batch_total);
    let mut correct = 0;
    let mut pass_losses = Vec::new();
    if batch.labels.is_empty() {
        for param in model.trainable_params_mut() {
            param.grad.fill(0.0); // a part with no image adds nothing
        }
    } else {
        let passes = micro_batch::plan(batch.labels.len(), leaves, micro);
        cluster.begin_batch(batch.batch_total);
        for pass in &passes {
            let images = batch.images.slice_axis(Axis(0), Slice::from(pass.images.clone()));
            let labels = &batch.labels[pass.images.clone()];
            micro_batch::PassGradients::before(model, pass);
            let mode = Mode::Train { seed: step_seed, first_image: batch.first_image + pass.images.start };
            let logits = model.forward(images, mode)?;
            loss_fn.forward_part(logits, labels, batch.batch_total)?;
            model.set_gradient_leaves(pass.leaves);
            model.backward(loss_fn.grad_logits().view())?;
            correct += loss_fn.correct(labels);
            if passes.len() > 1 {
                pass_losses.extend_from_slice(loss_fn.sample_losses());
                gradients.add(model, pass);
            }
        }
        if passes.len() > 1 {
            gradients.finish(model);
        } else {
            pass_losses.extend_from_slice(loss_fn.sample_losses());
        }
    }
    let sample_losses = &pass_losses[..];

    if cluster.size() > 1 {
        return Ok(cluster.finish_step(model, sample_losses, batch.batch_total, correct, stop));
    }
    let loss = SoftmaxCrossEntropy::sum_in_order(sample_losses) * (1.0 / batch.batch_total.max(1) as f32);
    Ok(StepTotals { loss, correct, stop })
}

/// The error for a loss that is no longer finite at (`epoch`, `batch_number`),
/// saying which checkpoint is kept.
fn not_finite(
    loss: f32,
    (epoch, batch_number): (usize, usize),
    batches: usize,
    inputs: &RunContext<'_>,
) -> anyhow::Error {
    let files = inputs.files;
    let kept = match inputs.last_checkpoint.get() {
        None => "no checkpoint had been written yet".to_string(),
        Some((epochs, 0)) => {
            format!("the last good checkpoint, {} (after epoch {epochs}), is kept", files.checkpoint().display())
        }
        Some((epochs, batches)) => format!(
            "the last good checkpoint, {} (epoch {}, batch {batches}), is kept",
            files.checkpoint().display(),
            epochs + 1
        ),
    };
    anyhow!(
        "the loss became {loss} at epoch {}, batch {} of {batches}; training stopped and {kept}. Try a smaller --lr.",
        epoch + 1,
        batch_number + 1,
    )
}

/// Trains the rest of epoch `state.epochs_done + 1`, from batch
/// `state.batches_done` on (a resumed run starts where its checkpoint was),
/// keeping the running sums in `state`.
pub fn train_epoch(
    model: &mut Sequential<f32>,
    loss_fn: &mut SoftmaxCrossEntropy<f32>,
    optimizer: &mut dyn Optimizer<f32>,
    state: &mut TrainingState,
    inputs: &RunContext<'_>,
) -> Result<EpochEnd> {
    let RunContext { config, train_set, batches, interrupt, cluster, .. } = *inputs;
    let epoch = state.epochs_done;
    let started = Instant::now();
    let stream_config = BatchConfig {
        batch_size: config.batch_size,
        shuffle: !config.no_shuffle,
        seed: config.seed,
        epoch: epoch as u64,
        scale: config.pixel_scale,
        augment: config.augment.then(Augmentation::standard),
        first_batch: state.batches_done,
        shard: cluster.shard(),
    };
    let mut stream = BatchStream::new((*train_set).clone(), stream_config);
    let bar = progress_bar(config, epoch, batches, state.batches_done);
    // time spent waiting for the loader thread: the share of the epoch lost to data
    let mut data_wait = Duration::ZERO;
    let (mut last_checkpoint, mut steps_since_checkpoint) = (Instant::now(), 0u64);
    let seen_before = state.epoch_seen;
    // a warm-up or a cosine sets the rate of every step (a pure function of the step: resume takes the same)
    let schedule = Some(config.schedule(batches)).filter(|schedule| !schedule.is_constant());
    // the micro-batches' gradients, their buffers reused from batch to batch
    let mut pass_gradients = micro_batch::PassGradients::default();
    loop {
        let waiting = Instant::now();
        let Some(mut batch) = stream.next_batch() else { break };
        data_wait += waiting.elapsed();
        if let Some(error) = batch.error.take() {
            return Err(error.into());
        }
        let step_seed = derive(config.seed ^ 0xD0_0D, state.step);
        let passes = (cluster, config.micro_batch, &mut pass_gradients);
        let totals = forward_backward(model, loss_fn, &batch, step_seed, passes, interrupt.requested())?;
        let loss = totals.loss;
        if !loss.is_finite() {
            return Err(not_finite(loss, (epoch, batch.number), batches, inputs));
        }
        if let Some(schedule) = &schedule {
            optimizer.set_learning_rate(schedule.lr(state.step));
        }
        optimizer.step(&mut model.trainable_params_mut())?;
        state.step += 1;
        if state.step.is_multiple_of(super::events::STEP_LOSS_EVERY) {
            state.step_losses.push((state.step, loss));
        }
        state.batches_done = batch.number + 1;
        state.epoch_loss_sum += loss as f64 * batch.batch_total as f64;
        state.epoch_correct += totals.correct;
        state.epoch_seen += batch.batch_total;
        if let Some(bar) = &bar {
            let rate = (state.epoch_seen - seen_before) as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "loss {:.4} acc {:.4} {rate:.0} img/s",
                state.epoch_loss_sum / state.epoch_seen as f64,
                state.epoch_correct as f64 / state.epoch_seen as f64
            ));
            bar.inc(1);
        }
        stream.recycle(batch);
        steps_since_checkpoint += 1;
        if let Some(signal) = totals.stop {
            if let Some(bar) = &bar {
                bar.finish_and_clear();
            }
            inputs.checkpoint(model, optimizer, state)?;
            return Ok(EpochEnd::Interrupted(signal));
        }
        let due = match config.checkpoint_every {
            CheckpointEvery::Steps(steps) => steps_since_checkpoint >= steps,
            CheckpointEvery::Time(every) => last_checkpoint.elapsed() >= every,
            CheckpointEvery::Never => false,
        };
        if due && state.batches_done < batches {
            inputs.checkpoint(model, optimizer, state)?;
            (last_checkpoint, steps_since_checkpoint) = (Instant::now(), 0);
        }
    }
    drop(stream);
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(EpochEnd::Completed { seconds: started.elapsed().as_secs_f64(), data_wait })
}

/// Loss and accuracy on the validation set, if there is one.
pub fn validate(
    model: &mut Sequential<f32>,
    val_set: Option<&ImageSet>,
    config: &TrainConfig,
    cluster: &Cluster,
) -> Result<(Option<f64>, Option<f64>)> {
    let Some(set) = val_set else { return Ok((None, None)) };
    // each rank predicts a share; the shares are gathered in order
    let predictions = cluster.predict(model, set, config.prediction_batch(), config.pixel_scale)?;
    let correct = predictions.predicted.iter().zip(set.labels()).filter(|(p, l)| p == l).count();
    Ok((Some(predictions.loss), Some(correct as f64 / set.len().max(1) as f64)))
}

/// The callbacks after an epoch with validation: keep the best model (by
/// validation accuracy), reduce the learning rate on a plateau of the
/// validation loss, stop early.
pub fn after_epoch(
    (val_loss, val_accuracy): (f64, f64),
    model: &Sequential<f32>,
    optimizer: &mut dyn Optimizer<f32>,
    state: &mut TrainingState,
    inputs: &RunContext<'_>,
) -> Result<()> {
    let config = inputs.config;
    if state.best_val_accuracy.is_none_or(|best| val_accuracy > best) {
        state.best_val_accuracy = Some(val_accuracy);
        if inputs.cluster.is_root() {
            model_file::save_model(&inputs.files.best(), model, inputs.meta)?;
        }
    }
    if state.best_val_loss.is_none_or(|best| val_loss < best) {
        state.best_val_loss = Some(val_loss);
        state.epochs_without_improvement = 0;
        state.epochs_on_plateau = 0;
        return Ok(());
    }
    state.epochs_without_improvement += 1;
    state.epochs_on_plateau += 1;
    if let Some(patience) = config.reduce_lr_on_plateau {
        if state.epochs_on_plateau >= patience {
            let lr = optimizer.learning_rate();
            let new_lr = lr * config.lr_factor;
            optimizer.set_learning_rate(new_lr);
            state.epochs_on_plateau = 0;
            println!("val_loss has not improved for {patience} epochs: learning rate {lr:.2e} -> {new_lr:.2e}");
        }
    }
    if let Some(patience) = config.early_stopping {
        if state.epochs_without_improvement >= patience {
            state.stopped_early = true;
            println!("Early stopping: val_loss has not improved for {patience} epochs.");
        }
    }
    Ok(())
}

/// A warning when training has not started to learn: the training loss still
/// within 1% of `ln(classes)` (what a network that predicts the class shares,
/// or uniform probabilities, scores), or the training accuracy within half a
/// point of the majority class's share, for the last two epochs. Keras says
/// nothing in this case; the run goes on either way.
pub fn stall_warning(history: &[HistoryRow], classes: usize, majority_share: f64) -> Option<String> {
    let last = history.get(history.len().checked_sub(2)?..)?;
    let chance = (classes as f64).ln();
    let at_chance = last.iter().all(|row| (row.loss - chance).abs() <= 0.01 * chance);
    let at_majority = last.iter().all(|row| (row.accuracy - majority_share).abs() <= 0.005);
    let what = if at_chance {
        format!("the training loss has stayed at ln({classes}) = {chance:.3}, chance level,")
    } else if at_majority {
        format!("the training accuracy has stayed at {:.1}%, the share of the largest class,", 100.0 * majority_share)
    } else {
        return None;
    };
    let lr = last[last.len() - 1].lr;
    // a learning rate far below Adam's usual 1e-3 moves nothing; above it, steps overshoot
    let lr_advice =
        if lr < 1e-5 { format!("a larger --lr (it is {lr:.0e})") } else { "a lower --lr (e.g. 1e-4)".to_string() };
    Some(format!(
        "Warning: {what} for {} epochs: the network is not learning. What usually helps: {lr_advice}, checking --pixel-scale, and `convnet doctor`.",
        last.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(epoch: usize, loss: f64, accuracy: f64) -> HistoryRow {
        HistoryRow { epoch, loss, accuracy, val_loss: None, val_accuracy: None, lr: 1e-3, seconds: 1.0 }
    }

    #[test]
    fn a_run_stuck_at_chance_for_two_epochs_is_warned_about_once_it_is() {
        let chance = 8f64.ln();
        let stuck = [row(1, chance + 0.01, 0.2), row(2, chance - 0.005, 0.21)];
        assert_eq!(stall_warning(&stuck[..1], 8, 0.37), None, "one epoch is not enough");
        let warning = stall_warning(&stuck, 8, 0.37).unwrap();
        assert!(
            warning.starts_with("Warning: the training loss has stayed at ln(8) = 2.079, chance level, for 2 epochs")
        );
        assert!(warning.contains("a lower --lr (e.g. 1e-4)"), "{warning}");
        // stuck on the majority class, with a loss away from ln(classes)
        let majority = [row(1, 1.7, 0.371), row(2, 1.69, 0.372)];
        assert!(stall_warning(&majority, 8, 0.37).unwrap().contains("stayed at 37.0%, the share of the largest class"));
        // learning: no warning
        assert_eq!(stall_warning(&[row(1, 2.0, 0.3), row(2, 1.5, 0.5)], 8, 0.37), None);
    }
}
