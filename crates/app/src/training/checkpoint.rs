//! What a run leaves in its directory, and reading it back for `--resume`: the
//! checkpoint (weights, optimizer buffers, training state), `history.csv`,
//! `curves.png`.
//!
//! The checkpoint holds nothing that varies between two runs of the same
//! configuration (no time, no path), so equal runs write equal bytes.

use crate::charts::{self, Panel};
use crate::render::png_bytes;
use anyhow::{anyhow, Context, Result};
use convnet_io::atomic::write_atomic;
use convnet_io::model_file::{self, f32_bytes, ModelMeta, META_KEY};
use convnet_optim::OptimizerState;
use convnet_tensor::ndarray::{ArrayD, IxDyn};
use convnet_tensor::Sequential;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One row of `history.csv`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub lr: f64,
    /// Wall time of the epoch: in `history.csv`, never in the checkpoint (it
    /// differs from run to run, and the checkpoint must not).
    #[serde(skip_serializing, default)]
    pub seconds: f64,
}

/// What a checkpoint stores besides tensors.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    pub epochs_done: usize,
    pub step: u64,
    /// The optimizer's learning rate and step count, as recorded in a
    /// checkpoint ([`save_checkpoint`] takes them from the optimizer's state,
    /// [`load_checkpoint`] gives them back to it); not kept up to date in between.
    pub lr: f64,
    pub optimizer_step: u64,
    pub best_val_accuracy: Option<f64>,
    pub best_val_loss: Option<f64>,
    pub epochs_without_improvement: usize,
    pub epochs_on_plateau: usize,
    pub history: Vec<HistoryRow>,
    pub stopped_early: bool,
    /// Batches of epoch `epochs_done + 1` already trained (0 at an epoch's
    /// end): where a mid-epoch checkpoint resumes.
    #[serde(default)]
    pub batches_done: usize,
    /// The running sums of that partial epoch, so its history row comes out
    /// as in an uninterrupted run: summed loss (times batch size), correct
    /// predictions, images seen.
    #[serde(default)]
    pub epoch_loss_sum: f64,
    #[serde(default)]
    pub epoch_correct: usize,
    #[serde(default)]
    pub epoch_seen: usize,
    /// The training loss at every `events::STEP_LOSS_EVERY`th step, for the
    /// TensorBoard log: `(step, loss)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_losses: Vec<(u64, f32)>,
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
pub fn save_checkpoint(
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
    // the optimizer owns the learning rate and the step count: recorded here
    let record = TrainingState { lr: optimizer.lr, optimizer_step: optimizer.step, ..state.clone() };
    metadata.insert("training".to_string(), serde_json::to_string(&record)?);
    let slot_names: Vec<&String> = optimizer.slots.iter().map(|(name, _)| name).collect();
    metadata.insert("optimizer_slots".to_string(), serde_json::to_string(&slot_names)?);
    Ok(write_atomic(&files.checkpoint(), &model_file::serialize(&tensors, &metadata)?)?)
}

/// Loads a checkpoint into `model` and returns the optimizer state and training state.
pub fn load_checkpoint(path: &Path, model: &mut Sequential<f32>) -> Result<(OptimizerState<f32>, TrainingState)> {
    let file = model_file::read_tensor_file(path)?;
    model_file::assign_params(model, &file.tensors)
        .with_context(|| format!("{}: does not fit the model", path.display()))?;
    let state: TrainingState = serde_json::from_str(
        file.metadata.get("training").ok_or_else(|| anyhow!("{}: no training state", path.display()))?,
    )
    .with_context(|| format!("{}: malformed training state", path.display()))?;
    let slot_names: Vec<String> =
        serde_json::from_str(file.metadata.get("optimizer_slots").map(String::as_str).unwrap_or("[]"))?;
    let count = model.trainable_params().len();
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
    Ok((OptimizerState { step: state.optimizer_step, lr: state.lr, slots }, state))
}

pub fn write_history(files: &RunFiles, history: &[HistoryRow]) -> Result<()> {
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

pub fn write_curves(files: &RunFiles, history: &[HistoryRow]) -> Result<()> {
    let series =
        |f: &dyn Fn(&HistoryRow) -> Option<f64>| history.iter().map(|r| f(r).unwrap_or(f64::NAN)).collect::<Vec<_>>();
    let has_val = history.iter().any(|r| r.val_loss.is_some());
    let mut loss = vec![("train", series(&|r| Some(r.loss)))];
    let mut accuracy = vec![("train", series(&|r| Some(r.accuracy)))];
    if has_val {
        loss.push(("validation", series(&|r| r.val_loss)));
        accuracy.push(("validation", series(&|r| r.val_accuracy)));
    }
    // the epoch kept as best.safetensors (the first with the highest validation accuracy)
    let best = history
        .iter()
        .filter_map(|r| r.val_accuracy.map(|a| (r.epoch, a)))
        .fold(None, |best: Option<(usize, f64)>, (epoch, a)| match best {
            Some((_, b)) if b >= a => best,
            _ => Some((epoch, a)),
        })
        .map(|(epoch, _)| (epoch, "best.safetensors"));
    let panels = [Panel { metric: "loss", series: loss }, Panel { metric: "accuracy", series: accuracy }];
    let image = charts::curves(&panels, best)?;
    Ok(write_atomic(&files.curves(), &png_bytes(&image)?)?)
}

/// The `seconds` column of an existing `history.csv` (the checkpoint does not
/// keep times); empty if there is none.
pub fn read_history_seconds(files: &RunFiles) -> Vec<f64> {
    let Ok(text) = std::fs::read_to_string(files.history()) else { return Vec::new() };
    text.lines().skip(1).map(|line| line.rsplit(',').next().and_then(|s| s.parse().ok()).unwrap_or(0.0)).collect()
}
