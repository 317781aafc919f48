//! The command line: the clap tree and the dispatch to `commands/`, nothing else.

use crate::commands::{
    bench, calibrate, cv, doctor, evaluate, explain, export, gradcheck, import_idx, import_keras, import_onnx,
    import_torch, inspect, predict, show, summary, train,
};
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "convnet",
    version,
    about = "Train and run convolutional image classifiers on the CPU",
    long_about = "Train and run convolutional image classifiers on the CPU, with hand-written kernels.\n\n\
        Images live in a folder per class (train/cats/*.png, train/dogs/*.png ...).",
    after_help = "Examples:\n  \
        convnet train --train data/fashion-mnist/train --test data/fashion-mnist/test --model small --image-size 28 --color-mode grayscale --epochs 12\n  \
        convnet evaluate --model runs/quickstart/model.safetensors --data data/fashion-mnist/test\n  \
        convnet predict --model runs/quickstart/model.safetensors --images new_images/\n  \
        convnet summary --model baseline --image-size 224 --classes 8"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on a folder-per-class image tree
    #[command(after_help = "Examples:\n  \
        convnet train --train mammo/train --val mammo/test --epochs 15\n  \
        convnet train --train data/fashion-mnist/train --test data/fashion-mnist/test --model small --image-size 28 --color-mode grayscale --epochs 12 --validation-split 0.1\n  \
        convnet train --resume runs/mammo")]
    Train(Box<train::TrainArgs>),
    /// Evaluate a model on a labelled folder: loss, accuracy, confusion matrix, per-class metrics, kappa
    #[command(
        after_help = "Example:\n  convnet evaluate --model runs/mammo/best.safetensors --data mammo/test --json"
    )]
    Evaluate(evaluate::EvaluateArgs),
    /// Stratified k-fold cross-validation, never splitting a patient's images across folds
    #[command(
        after_help = "Example:\n  convnet cv --train mammo/train --folds 5 --group-by '^[^/]+/(P_[0-9]+)_' --model small --image-size 224 --out runs/mammo-cv"
    )]
    Cv(Box<cv::CvArgs>),
    /// Fit temperature scaling on a validation folder and store it in the model file (calibrated probabilities)
    #[command(after_help = "Example:\n  convnet calibrate --model runs/mammo/best.safetensors --data mammo/val")]
    Calibrate(calibrate::CalibrateArgs),
    /// Predict the class of images (files or folders)
    #[command(
        after_help = "Example:\n  convnet predict --model runs/mammo/model.safetensors --images new/ extra.png --top-k 3 --csv predictions.csv"
    )]
    Predict(predict::PredictArgs),
    /// Grad-CAM: where in each image the network looked for its prediction, as a picture and in JSON
    #[command(
        after_help = "Example:\n  convnet explain --model runs/mammo/best.safetensors --images new_scans/ --out explained/ --json"
    )]
    Explain(explain::ExplainArgs),
    /// Write a trained model as an ONNX file (opset 13), to run in any ONNX runtime
    #[command(after_help = "Example:\n  convnet export --model runs/mammo/best.safetensors --out mammo.onnx")]
    Export(export::ExportArgs),
    /// Import a model trained with Keras (.keras or legacy .h5) without retraining
    #[command(
        after_help = "Example:\n  convnet import-keras --keras mammo.keras --class-names Density1Benign,Density1Malignant,Density2Benign,Density2Malignant,Density3Benign,Density3Malignant,Density4Benign,Density4Malignant --out mammo.safetensors"
    )]
    ImportKeras(import_keras::ImportKerasArgs),
    /// Import a CNN from ONNX (torch.onnx.export, tf2onnx, the ONNX model zoo) to predict with or fine-tune
    #[command(
        after_help = "Example:\n  convnet import-onnx --onnx squeezenet1_1.onnx --preprocess imagenet --class-names-file imagenet.txt --out squeezenet.safetensors"
    )]
    ImportOnnx(import_onnx::ImportOnnxArgs),
    /// Import a torchvision ResNet or SqueezeNet state_dict (safetensors) as the matching preset
    #[command(
        after_help = "Example:\n  convnet import-torch --state-dict resnet18.safetensors --model resnet18 --preprocess imagenet --out resnet18.safetensors"
    )]
    ImportTorch(import_torch::ImportTorchArgs),
    /// Draw a grid of images titled "Pred: X | Real: Y" (green when right, red when wrong)
    #[command(
        after_help = "Example:\n  convnet show --model runs/mammo/model.safetensors --data mammo/test --rows 3 --cols 3 --out grid.png"
    )]
    Show(show::ShowArgs),
    /// Print a model's layers, output shapes, parameters, FLOPs and activation memory
    #[command(
        after_help = "Examples:\n  convnet summary --model baseline --image-size 224 --classes 8\n  convnet summary --model runs/mammo/model.safetensors"
    )]
    Summary(summary::SummaryArgs),
    /// Check every layer's gradients numerically (f64 central differences)
    #[command(after_help = "Example:\n  convnet gradcheck --model baseline --image-size 32")]
    Gradcheck(gradcheck::GradcheckArgs),
    /// Write PNG grids of the first layer's filters and of each conv layer's or block's feature maps
    #[command(
        after_help = "Example:\n  convnet inspect --model runs/quickstart/model.safetensors --image data/fashion-mnist/test/Bag/00078.png --out inspect/"
    )]
    Inspect(inspect::InspectArgs),
    /// Measure training and inference throughput on synthetic data
    #[command(
        after_help = "Examples:\n  convnet bench --model baseline --image-size 224 --batch-size 32 --steps 5\n  convnet bench --per-layer --json\n  convnet bench --inference"
    )]
    Bench(bench::BenchArgs),
    /// Convert an IDX image/label pair (MNIST, Fashion-MNIST, ...) into a folder-per-class PNG tree
    #[command(
        after_help = "Example:\n  convnet import-idx --images /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz \\\n    --labels /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz --out fmnist/train --class-names fashion-mnist"
    )]
    ImportIdx(import_idx::ImportIdxArgs),
    /// Sanity checks before a long run: dataset report, initial loss, overfitting a tiny subset, update ratios
    #[command(
        after_help = "Example:\n  convnet doctor --train data/fashion-mnist/train --test data/fashion-mnist/test --model small --image-size 28 --color-mode grayscale"
    )]
    Doctor(doctor::DoctorArgs),
}

pub fn run() -> Result<ExitCode> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) if !error.use_stderr() => {
            // --help, --version
            let _ = error.print();
            return Ok(ExitCode::SUCCESS);
        }
        Err(error) => {
            // one line, like every other error: clap's message with its usage and
            // "for more information" lines dropped
            let text = error.render().to_string();
            let parts: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .collect();
            eprintln!("{}", parts.join(" "));
            return Ok(ExitCode::from(2));
        }
    };
    match cli.command {
        Command::Train(args) => train::run(*args),
        Command::Evaluate(args) => evaluate::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Calibrate(args) => calibrate::run(args),
        Command::Cv(args) => cv::run(*args),
        Command::Explain(args) => explain::run(args),
        Command::Export(args) => export::run(args),
        Command::ImportKeras(args) => import_keras::run(args),
        Command::ImportOnnx(args) => import_onnx::run(args),
        Command::ImportTorch(args) => import_torch::run(args),
        Command::Show(args) => show::run(args),
        Command::Summary(args) => summary::run(args),
        Command::Gradcheck(args) => gradcheck::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Bench(args) => bench::run(args),
        Command::ImportIdx(args) => import_idx::run(args),
        Command::Doctor(args) => doctor::run(args),
    }
}
