//! `convnet cv`: stratified k-fold cross-validation, never splitting a group
//! (a patient, a study) across folds (`convnet_data::folds`).
//!
//! Each fold is a normal run directory, `OUT/fold-1/` ..., trained on the
//! other folds and validated on its own (the fold's files are hard-linked, or
//! copied, under `OUT/fold-N/data/{train,val}/CLASS/`), so each resumes, writes its
//! TensorBoard log (one per fold, overlaid by `tensorboard --logdir OUT`) and
//! can be evaluated like any run. Running the same command again continues
//! where it stopped: finished folds are kept, an interrupted one resumes from
//! its checkpoint. The summary gives each fold's validation accuracy, macro F1
//! and macro ROC AUC (the final model's, as `evaluate` computes them on the
//! fold's `data/val`), their mean and standard deviation, and `OUT/cv.json`
//! holds it all with each fold's validation files.

use crate::inputs::load_labelled;
use crate::options::{positive, set_threads};
use crate::training::distributed::Cluster;
use crate::training::interrupt::Interrupted;
use crate::training::{self, TrainConfig};
use anyhow::{bail, Context, Result};
use clap::Args;
use convnet_data::folds::assign_folds;
use convnet_data::scan::{scan, ClassNames};
use convnet_io::atomic::write_atomic;
use convnet_io::metrics::{predict_set, report};
use convnet_io::model_file::load_model;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct CvArgs {
    #[command(flatten)]
    pub config: TrainConfig,
    /// Number of folds
    #[arg(long, default_value_t = 5, value_parser = positive)]
    pub folds: usize,
    /// A regular expression whose first capture group, found in each file's path (relative to
    /// --train), is its group (a patient or study id): no group is split across folds
    #[arg(long, conflicts_with = "groups")]
    pub group_by: Option<String>,
    /// A CSV file of `file,group` lines (file relative to --train) giving each file's group
    #[arg(long)]
    pub groups: Option<PathBuf>,
    #[arg(long, value_parser = positive)]
    pub threads: Option<usize>,
    /// (not for cv: run the same cv command again to continue)
    #[arg(long, hide = true)]
    pub resume: Option<PathBuf>,
}

/// One fold's validation measures.
#[derive(serde::Serialize)]
struct FoldResult {
    fold: usize,
    run: PathBuf,
    validation_files: Vec<PathBuf>,
    loss: f64,
    accuracy: f64,
    macro_f1: f64,
    roc_auc: Option<f64>,
}

/// Each file's group: from `--group-by`, `--groups` or the file itself.
fn groups_of(args: &CvArgs, root: &Path, files: &[PathBuf]) -> Result<Vec<usize>> {
    let relative: Vec<String> =
        files.iter().map(|f| f.strip_prefix(root).unwrap_or(f).to_string_lossy().into_owned()).collect();
    let names: Vec<String> = if let Some(pattern) = &args.group_by {
        let regex = regex::Regex::new(pattern).map_err(|e| anyhow::anyhow!("--group-by {pattern:?}: {e}"))?;
        relative
            .iter()
            .map(|path| {
                let group = regex.captures(path).and_then(|c| c.get(1)).map(|m| m.as_str().to_string());
                group.with_context(|| format!("--group-by {pattern:?}: no group (first capture) in {path}"))
            })
            .collect::<Result<_>>()?
    } else if let Some(csv) = &args.groups {
        let text = std::fs::read_to_string(csv).with_context(|| format!("cannot read {}", csv.display()))?;
        let table: HashMap<&str, &str> =
            text.lines().filter_map(|line| line.split_once(',')).map(|(f, g)| (f.trim(), g.trim())).collect();
        relative
            .iter()
            .map(|path| {
                let group = table.get(path.as_str()).map(|g| g.to_string());
                group.with_context(|| format!("--groups {}: no line for {path}", csv.display()))
            })
            .collect::<Result<_>>()?
    } else {
        relative
    };
    let mut numbers: HashMap<&str, usize> = HashMap::new();
    let mut next = 0;
    Ok(names
        .iter()
        .map(|name| {
            *numbers.entry(name.as_str()).or_insert_with(|| {
                next += 1;
                next - 1
            })
        })
        .collect())
}

/// Links the fold's files under `dir/{train,val}/CLASS/` (nested paths
/// flattened with `__`): hard links, or copies where the run directory is on
/// another file system than the data.
fn link_fold(dir: &Path, root: &Path, files: &[(PathBuf, String, bool)]) -> Result<()> {
    for (file, class, is_validation) in files {
        let part = if *is_validation { "val" } else { "train" };
        let relative = file.strip_prefix(root.join(class)).unwrap_or(file).to_string_lossy().replace('/', "__");
        let link = dir.join(part).join(class).join(relative);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        std::fs::create_dir_all(link.parent().expect("inside the fold"))?;
        // a hard link (a symbolic one would be skipped by the folder scan), or a copy on another file system
        if std::fs::hard_link(file, &link).is_err() {
            std::fs::copy(file, &link)
                .with_context(|| format!("cannot copy {} to {}", file.display(), link.display()))?;
        }
    }
    Ok(())
}

/// Trains fold `dir` (or resumes it, or keeps it when finished), then
/// evaluates its final model on its validation part.
fn run_fold(config: &TrainConfig, dir: &Path, cluster: &Cluster) -> Result<(f64, f64, f64, Option<f64>)> {
    if !dir.join("model.safetensors").exists() {
        let resume = dir.join("checkpoint.safetensors").exists();
        let config = if resume { training::read_config(dir)? } else { config.clone() };
        training::train(&config, resume, cluster)?;
    }
    let (mut model, meta) = load_model(&dir.join("model.safetensors"))?;
    let set = load_labelled(&dir.join("data/val"), &meta, config.skip_bad, &config.cache)?;
    // in passes of the micro-batch the fold trained with (config.toml has the one chosen)
    let passes = training::read_config(dir).map_or(config.batch_size, |saved| saved.prediction_batch());
    let predictions = predict_set(&mut model, &set, passes, meta.input.pixel_scale)?;
    let labels = set.labels();
    let result = report(predictions.loss, labels, &predictions.predicted, &meta.class_names).with_roc(
        &predictions.probabilities,
        labels,
        &predictions.predicted,
        None,
    );
    Ok((result.loss, result.accuracy, result.macro_avg.f1, result.macro_avg.roc_auc))
}

fn mean_sd(values: &[f64]) -> (f64, f64) {
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, variance.sqrt())
}

pub fn run(args: CvArgs) -> Result<ExitCode> {
    set_threads(args.threads)?;
    if args.resume.is_some() {
        bail!("cv has no --resume: run the same cv command again, it continues where it stopped");
    }
    if args.config.val.is_some() || args.config.validation_split.is_some() {
        bail!("cv validates each fold on its own part: leave out --val and --validation-split");
    }
    args.config.validate()?;
    let cluster = Cluster::join()?;
    let base = &args.config;
    let out = base.out.clone().unwrap_or_else(|| PathBuf::from(format!("{}-cv", base.out_dir().display())));
    let scanned = scan(&base.train, &ClassNames::Infer, false)?;
    let paths: Vec<PathBuf> = scanned.files.iter().map(|f| f.path.clone()).collect();
    let labels: Vec<usize> = scanned.files.iter().map(|f| f.label).collect();
    if args.folds < 2 || args.folds > paths.len() {
        bail!("--folds {} must be between 2 and the {} images", args.folds, paths.len());
    }
    let groups = groups_of(&args, &base.train, &paths)?;
    let folds = assign_folds(&labels, &groups, scanned.class_names.len(), args.folds, base.seed);
    let mut results = Vec::new();
    for fold in 0..args.folds {
        let dir = out.join(format!("fold-{}", fold + 1));
        let files: Vec<(PathBuf, String, bool)> = scanned
            .files
            .iter()
            .zip(&folds)
            .map(|(f, &k)| (f.path.clone(), scanned.class_names[f.label].clone(), k == fold))
            .collect();
        link_fold(&dir.join("data"), &base.train, &files)?;
        let mut config = base.clone();
        (config.train, config.val, config.out) =
            (dir.join("data/train"), Some(dir.join("data/val")), Some(dir.clone()));
        println!("\n== Fold {} of {} ({}) ==", fold + 1, args.folds, dir.display());
        let (loss, accuracy, macro_f1, roc_auc) = match run_fold(&config, &dir, &cluster) {
            Ok(measures) => measures,
            Err(error) => match error.downcast_ref::<Interrupted>() {
                Some(interrupted) => {
                    eprintln!("{interrupted} (cv: run the same cv command again to continue)");
                    return Ok(ExitCode::from(interrupted.exit_code()));
                }
                None => return Err(error),
            },
        };
        let validation_files = files.iter().filter(|f| f.2).map(|f| f.0.clone()).collect();
        results.push(FoldResult { fold: fold + 1, run: dir, validation_files, loss, accuracy, macro_f1, roc_auc });
    }
    summarise(&out, &results)?;
    Ok(ExitCode::SUCCESS)
}

/// The table and `cv.json`.
fn summarise(out: &Path, results: &[FoldResult]) -> Result<()> {
    println!("\nCross-validation ({} folds), each fold's validation part:", results.len());
    println!("{:>6} {:>8} {:>10} {:>10} {:>10} {:>8}", "fold", "images", "loss", "accuracy", "macro F1", "ROC AUC");
    for r in results {
        let auc = r.roc_auc.map_or("-".to_string(), |a| format!("{a:.4}"));
        let images = r.validation_files.len();
        println!("{:>6} {images:>8} {:>10.4} {:>10.4} {:>10.4} {auc:>8}", r.fold, r.loss, r.accuracy, r.macro_f1);
    }
    let column = |f: &dyn Fn(&FoldResult) -> Option<f64>| -> Option<(f64, f64)> {
        let values: Option<Vec<f64>> = results.iter().map(f).collect();
        values.map(|v| mean_sd(&v))
    };
    let (loss, accuracy) = (column(&|r| Some(r.loss)), column(&|r| Some(r.accuracy)));
    let (macro_f1, roc_auc) = (column(&|r| Some(r.macro_f1)), column(&|r| r.roc_auc));
    let text = |v: Option<(f64, f64)>| v.map_or("-".to_string(), |(m, s)| format!("{m:.4} ± {s:.4}"));
    println!(
        "mean ± sd: loss {}, accuracy {}, macro F1 {}, ROC AUC {}",
        text(loss),
        text(accuracy),
        text(macro_f1),
        text(roc_auc)
    );
    let pair = |v: Option<(f64, f64)>| v.map(|(mean, sd)| serde_json::json!({ "mean": mean, "sd": sd }));
    let json = serde_json::json!({
        "folds": results,
        "loss": pair(loss),
        "accuracy": pair(accuracy),
        "macro_f1": pair(macro_f1),
        "roc_auc": pair(roc_auc),
    });
    let path = out.join("cv.json");
    write_atomic(&path, serde_json::to_string_pretty(&json)?.as_bytes())?;
    println!("Summary: {}  TensorBoard: tensorboard --logdir {}", path.display(), out.display());
    Ok(())
}
