//! The run's TensorBoard log (`tensorboard --logdir runs`): one event file,
//! `tensorboard/events.out.tfevents.0.convnet` in the run directory, made
//! from what `history.csv` holds and the loss every [`STEP_LOSS_EVERY`]
//! steps, and written again, atomically, at each epoch's end (so after a
//! resume it holds each epoch once, as `history.csv` does). At the end of
//! `train`, its pictures (curves; with `--test` the prediction grid and the
//! confusion matrix) are added.
//!
//! Tags: `loss`, `accuracy`, `val_loss`, `val_accuracy`, `lr`, `seconds`,
//! `images_per_second` (training images over the epoch's seconds) at each
//! epoch (the step is the epoch number, as in `history.csv`); `step/loss` at
//! every [`STEP_LOSS_EVERY`]th step; `pictures/curves`, and with `--test`
//! `pictures/grid` and `pictures/confusion`.
//! Wall times count from when the run started (its `config.toml` was written).

use super::checkpoint::{RunFiles, TrainingState};
use anyhow::Result;
use convnet_io::atomic::write_atomic;
use convnet_io::tensorboard::{EventFile, Value};
use std::path::PathBuf;

/// The training loss goes to the log every this many steps.
pub const STEP_LOSS_EVERY: u64 = 10;

/// The event file of a run.
pub fn event_file(files: &RunFiles) -> PathBuf {
    files.dir.join("tensorboard").join("events.out.tfevents.0.convnet")
}

/// When the run started, in UNIX seconds: its config.toml's modification time.
fn start_time(files: &RunFiles) -> f64 {
    let modified = std::fs::metadata(files.config()).and_then(|m| m.modified()).ok();
    modified.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0.0, |d| d.as_secs_f64())
}

/// The event file of the run so far: every epoch of the history and every
/// recorded step loss.
pub fn write_events(
    files: &RunFiles,
    state: &TrainingState,
    train_images: usize,
    batches_per_epoch: usize,
) -> Result<()> {
    let start = start_time(files);
    let mut log = EventFile::new(start);
    let mut elapsed = 0.0;
    let mut epoch_ends = Vec::new();
    for row in &state.history {
        elapsed += row.seconds;
        epoch_ends.push(elapsed);
        let (step, wall) = (row.epoch as i64, start + elapsed);
        let mut scalar = |tag: &str, value: f64| log.add(tag, step, wall, Value::Scalar(value as f32));
        scalar("loss", row.loss);
        scalar("accuracy", row.accuracy);
        if let (Some(val_loss), Some(val_accuracy)) = (row.val_loss, row.val_accuracy) {
            scalar("val_loss", val_loss);
            scalar("val_accuracy", val_accuracy);
        }
        scalar("lr", row.lr);
        scalar("seconds", row.seconds);
        scalar("images_per_second", train_images as f64 / row.seconds.max(1e-9));
    }
    for &(step, loss) in &state.step_losses {
        // the step's wall time: the end of the epoch it belongs to (or now, in the current one)
        let epoch = (step.saturating_sub(1) as usize) / batches_per_epoch.max(1);
        let wall = start + epoch_ends.get(epoch).copied().unwrap_or(elapsed);
        log.add("step/loss", step as i64, wall, Value::Scalar(loss));
    }
    let path = event_file(files);
    std::fs::create_dir_all(path.parent().expect("inside the run"))?;
    write_atomic(&path, log.bytes())?;
    Ok(())
}

/// Adds `pictures` (name, PNG file) to the finished run's event file, at its
/// last epoch.
pub fn add_pictures(files: &RunFiles, epoch: usize, pictures: &[(&str, PathBuf)]) -> Result<()> {
    let path = event_file(files);
    let mut log = EventFile::continuing(std::fs::read(&path)?);
    let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    for (name, png_path) in pictures {
        let png = std::fs::read(png_path)?;
        // the PNG header: width and height, big-endian, at bytes 16 and 20
        if png.len() < 24 {
            continue;
        }
        let width = u32::from_be_bytes(png[16..20].try_into().expect("4 bytes"));
        let height = u32::from_be_bytes(png[20..24].try_into().expect("4 bytes"));
        log.add(&format!("pictures/{name}"), epoch as i64, wall, Value::Png(&png, width, height));
    }
    write_atomic(&path, log.bytes())?;
    Ok(())
}
