//! `convnet train`: parse, train (see [`crate::training`]), then report where
//! everything went and, with `--test`, the test accuracy and the grid.

use crate::inputs::load_labelled;
use crate::options::{positive, set_threads};
use crate::render::draw_grid;
use crate::training::distributed::Cluster;
use crate::training::interrupt::Interrupted;
use crate::training::{self, TrainConfig};
use anyhow::Result;
use clap::Args;
use convnet_io::metrics::report;
use std::path::PathBuf;
use std::process::ExitCode;

/// `convnet train`'s flags: the run's configuration, or `--resume DIR`.
#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: TrainConfig,
    /// Worker threads (default: all cores); results do not depend on it
    #[arg(long, value_parser = positive)]
    pub threads: Option<usize>,
    /// Continue an interrupted run from its output directory (its saved configuration is used)
    #[arg(long, value_name = "DIR", conflicts_with_all = ["train", "val", "validation_split", "model", "epochs", "out"])]
    pub resume: Option<PathBuf>,
}

pub fn run(args: TrainArgs) -> Result<ExitCode> {
    set_threads(args.threads)?;
    // under mpirun (a binary built with `--features mpi`): one rank of a data-parallel run
    let cluster = Cluster::join()?;
    match run_on(args, &cluster) {
        Ok(code) => Ok(code),
        // an error on one rank ends every rank, so none waits in a collective forever
        Err(error) if cluster.size() > 1 => {
            eprintln!("error: rank {}: {error:#}", cluster.rank());
            cluster.abort(1)
        }
        Err(error) => Err(error),
    }
}

fn run_on(args: TrainArgs, cluster: &Cluster) -> Result<ExitCode> {
    let (config, resume) = match &args.resume {
        Some(dir) => (training::read_config(dir)?, true),
        None => (args.config.adopt_model_file()?, false),
    };
    let outcome = match training::train(&config, resume, cluster) {
        Ok(outcome) => outcome,
        Err(error) => match error.downcast_ref::<Interrupted>() {
            // stopped by Ctrl-C or SIGTERM after writing a checkpoint: one line, 130 / 143
            Some(interrupted) => {
                if cluster.is_root() {
                    eprintln!("{interrupted}");
                }
                return Ok(ExitCode::from(interrupted.exit_code()));
            }
            None => return Err(error),
        },
    };
    let files = &outcome.files;
    println!("\nModel written to {}", files.model().display());
    if files.best().exists() {
        println!("Best validation model: {}", files.best().display());
    }
    println!(
        "History: {}  Curves: {}  Checkpoint: {}",
        files.history().display(),
        files.curves().display(),
        files.checkpoint().display()
    );
    let mut pictures = vec![("curves", files.curves())];
    if let Some(test_dir) = &config.test {
        let mut model = outcome.model;
        let set = load_labelled(test_dir, &outcome.meta, false, &config.cache)?;
        let predictions =
            cluster.predict(&mut model, &set, outcome.prediction_batch, outcome.meta.input.pixel_scale)?;
        if !cluster.is_root() {
            return Ok(ExitCode::SUCCESS);
        }
        let result = report(predictions.loss, set.labels(), &predictions.predicted, set.class_names());
        println!(
            "\nTest ({}): loss {:.4} - accuracy {:.4} ({:.1}% of {} images)",
            test_dir.display(),
            result.loss,
            result.accuracy,
            100.0 * result.accuracy,
            set.len()
        );
        let grid = files.dir.join("grid.png");
        draw_grid(&set, &predictions.predicted, 3, 3, config.seed, &grid)?;
        println!("Prediction grid: {}", grid.display());
        let confusion = files.dir.join("confusion.png");
        let picture = crate::render::png_bytes(&crate::charts::confusion(&result)?)?;
        convnet_io::atomic::write_atomic(&confusion, &picture)?;
        pictures.extend([("grid", grid), ("confusion", confusion)]);
    }
    if cluster.is_root() {
        // at the last epoch run (early stopping may have ended before --epochs)
        let history = std::fs::read_to_string(files.history()).unwrap_or_default();
        let epochs = history.lines().count().saturating_sub(1);
        training::events::add_pictures(files, epochs, &pictures)?;
        println!("TensorBoard: tensorboard --logdir {}", files.dir.display());
    }
    Ok(ExitCode::SUCCESS)
}
