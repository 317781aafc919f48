//! `convnet evaluate`: loss, accuracy, confusion matrix, per-class metrics and
//! Cohen's kappa of a model on a labelled folder.

use crate::charts::{self, RocCurve};
use crate::inputs::load_labelled;
use crate::options::CacheOptions;
use crate::options::{positive, set_threads};
use crate::render::png_bytes;
use anyhow::{anyhow, bail, Result};
use clap::Args;
use convnet_io::atomic::write_atomic;
use convnet_io::metrics::{report, roc_curve, scores_for};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub scoring: crate::options::ScoringOptions,
    /// Labelled images, one sub-folder per class
    #[arg(long)]
    pub data: PathBuf,
    /// Print one JSON object instead of tables
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value_t = 32, value_parser = positive)]
    pub batch_size: usize,
    /// Where to write the confusion matrix picture (default: confusion.png beside the model)
    #[arg(long)]
    pub confusion_png: Option<PathBuf>,
    /// Where to write the ROC curves (default: roc.png beside the model)
    #[arg(long)]
    pub roc_png: Option<PathBuf>,
    /// Where to write the reliability diagram (default: reliability.png beside the model)
    #[arg(long)]
    pub reliability_png: Option<PathBuf>,
    /// Classes that together make the positive answer of a binary question
    /// (e.g. the four *Malignant folders): adds its ROC AUC, sensitivity and
    /// specificity. With two classes the second is positive by default.
    #[arg(long, value_name = "CLASS[,CLASS...]", value_delimiter = ',')]
    pub positive: Vec<String>,
    #[arg(long)]
    pub skip_bad: bool,
    #[arg(long, value_parser = positive)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub cache: CacheOptions,
    #[command(flatten)]
    pub conv: crate::options::ConvAlgoOptions,
}

pub fn run(args: EvaluateArgs) -> Result<ExitCode> {
    set_threads(args.threads)?;
    let (mut scorer, meta) = args.scoring.scorer(&args.conv)?;
    let set = load_labelled(&args.data, &meta, args.skip_bad, &args.cache)?;
    let predictions = scorer.predict_set(&set, args.batch_size, meta.input.pixel_scale)?;
    let beside_model = |name: &str| args.scoring.model[0].with_file_name(name);
    // an ensemble's members may each have their own temperature: report one only for one model
    let temperature = meta.temperature.filter(|_| scorer.models() == 1);
    let positive: Vec<usize> = args
        .positive
        .iter()
        .map(|name| {
            meta.class_names.iter().position(|n| n == name.trim()).ok_or_else(|| {
                anyhow!("--positive {name}: not a class of this model ({})", meta.class_names.join(", "))
            })
        })
        .collect::<Result<_>>()?;
    if !positive.is_empty() && positive.len() == meta.class_names.len() {
        bail!("--positive names every class: nothing is left to be negative");
    }
    let (labels, predicted) = (set.labels(), &predictions.predicted);
    let result = report(predictions.loss, labels, predicted, &meta.class_names)
        .with_roc(&predictions.probabilities, labels, predicted, (!positive.is_empty()).then_some(positive.as_slice()))
        .with_calibration(&predictions.probabilities, labels, temperature);
    let png = args.confusion_png.clone().unwrap_or_else(|| beside_model("confusion.png"));
    write_atomic(&png, &png_bytes(&charts::confusion(&result)?)?)?;
    // one-vs-rest curves, or the binary question's alone
    let classes = meta.class_names.len();
    let curves: Vec<RocCurve> = match &result.binary {
        Some(binary) => {
            let group: Vec<usize> =
                binary.positive.iter().filter_map(|n| meta.class_names.iter().position(|c| c == n)).collect();
            let (scores, truth) = scores_for(&predictions.probabilities, labels, classes, &group);
            vec![(format!("{} vs rest", binary.positive.join("+")), roc_curve(&scores, &truth), binary.roc_auc)]
        }
        None => (0..classes)
            .map(|k| {
                let (scores, truth) = scores_for(&predictions.probabilities, labels, classes, &[k]);
                (meta.class_names[k].clone(), roc_curve(&scores, &truth), result.per_class[k].roc_auc)
            })
            .collect(),
    };
    let roc = args.roc_png.clone().unwrap_or_else(|| beside_model("roc.png"));
    write_atomic(&roc, &png_bytes(&charts::roc(&curves)?)?)?;
    let reliability = args.reliability_png.clone().unwrap_or_else(|| beside_model("reliability.png"));
    let bins = convnet_io::calibration::reliability_bins(&predictions.probabilities, labels, classes);
    write_atomic(&reliability, &png_bytes(&charts::reliability(&bins, result.ece.unwrap_or(0.0))?)?)?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        print!("{}", result.to_text());
        println!(
            "\nConfusion matrix picture: {}  ROC curves: {}  Reliability diagram: {}",
            png.display(),
            roc.display(),
            reliability.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
