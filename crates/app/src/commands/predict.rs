//! `convnet predict`: classify image files and folders.

use crate::inputs::collect_images;
use anyhow::{bail, Result};
use clap::Args;
use convnet_data::decode::decode_file;
use convnet_io::atomic::write_atomic;
use convnet_tensor::ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct PredictArgs {
    #[command(flatten)]
    scoring: crate::options::ScoringOptions,
    /// Image files and/or folders (searched recursively)
    #[arg(long, num_args = 1.., required = true)]
    images: Vec<PathBuf>,
    /// How many of the most likely classes to list
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// Also write the results as CSV
    #[arg(long)]
    csv: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[command(flatten)]
    pub conv: crate::options::ConvAlgoOptions,
}

/// The top-k `(class, probability)` of an image, or why it could not be read.
type Outcome = Result<Vec<(usize, f32)>, String>;

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// Decodes `chunk` in parallel and predicts the images that decoded: one row
/// per file, its `top_k` classes or why it could not be read.
fn predict_chunk(
    scorer: &mut convnet_io::scoring::Scorer,
    meta: &convnet_io::model_file::ModelMeta,
    chunk: &[PathBuf],
    top_k: usize,
    rows: &mut Vec<(PathBuf, Outcome)>,
) -> Result<()> {
    let decode = meta.decode_options();
    let image_len = decode.image_len();
    let [c, h, w] = meta.input_shape();
    let decoded: Vec<Result<Vec<u8>, String>> = chunk
        .par_iter()
        .map(|path| {
            let mut bytes = vec![0u8; image_len];
            decode_file(path, &decode, &mut bytes).map(|_frames| bytes).map_err(|e| {
                // the row already names the file
                let text = e.to_string();
                text.strip_prefix(&format!("{}: ", path.display())).map(str::to_string).unwrap_or(text)
            })
        })
        .collect();
    let good: Vec<&Vec<u8>> = decoded.iter().filter_map(|r| r.as_ref().ok()).collect();
    let mut probabilities = Vec::new();
    if !good.is_empty() {
        let mut batch = ArrayD::<f32>::zeros(IxDyn(&[good.len(), c, h, w]));
        for (slot, bytes) in batch.as_slice_mut().expect("contiguous").chunks_mut(c * h * w).zip(&good) {
            meta.input.to_inputs(bytes, slot);
        }
        let classes = meta.class_names.len();
        for probs in scorer.probabilities(batch.view())?.chunks(classes) {
            let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            ranked.truncate(top_k);
            probabilities.push(ranked);
        }
    }
    let mut probabilities = probabilities.into_iter();
    for (path, result) in chunk.iter().zip(decoded) {
        rows.push((path.clone(), result.map(|_| probabilities.next().expect("one per decoded image"))));
    }
    Ok(())
}

pub fn run(args: PredictArgs) -> Result<ExitCode> {
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let (mut scorer, meta) = args.scoring.scorer(&args.conv)?;
    let mut files = Vec::new();
    for path in &args.images {
        collect_images(path, &mut files)?;
    }
    if files.is_empty() {
        bail!(
            "no image files found in {}",
            args.images.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    let top_k = args.top_k.clamp(1, meta.class_names.len());
    println!("Input: {}", meta.describe_input());
    if let Some(t) = meta.temperature {
        println!("Probabilities at temperature {t:.4} (convnet calibrate)");
    }
    let mut rows: Vec<(PathBuf, Outcome)> = Vec::new();
    for chunk in files.chunks(args.batch_size) {
        predict_chunk(&mut scorer, &meta, chunk, top_k, &mut rows)?;
    }
    let names = &meta.class_names;
    let width = rows.iter().map(|(p, _)| p.display().to_string().len()).max().unwrap_or(4).min(60);
    let mut failed = 0;
    let mut csv = String::from("file,predicted,confidence");
    for rank in 1..=top_k {
        let _ = write!(csv, ",top{rank}_class,top{rank}_prob");
    }
    csv.push_str(",error\n");
    println!("{:<width$}  {:<20} {:>10}  top {top_k}", "file", "predicted", "confidence");
    for (path, result) in &rows {
        match result {
            Ok(ranked) => {
                let top: Vec<String> = ranked.iter().map(|(k, p)| format!("{} {:.3}", names[*k], p)).collect();
                println!(
                    "{:<width$}  {:<20} {:>10.4}  {}",
                    path.display(),
                    names[ranked[0].0],
                    ranked[0].1,
                    top.join(", ")
                );
                let _ = write!(
                    csv,
                    "{},{},{:.6}",
                    csv_field(&path.display().to_string()),
                    csv_field(&names[ranked[0].0]),
                    ranked[0].1
                );
                for (k, p) in ranked {
                    let _ = write!(csv, ",{},{p:.6}", csv_field(&names[*k]));
                }
                csv.push_str(",\n");
            }
            Err(reason) => {
                failed += 1;
                println!("{:<width$}  {:<20} {:>10}  {reason}", path.display(), "ERROR", "-");
                let _ = write!(csv, "{},,", csv_field(&path.display().to_string()));
                for _ in 0..top_k {
                    csv.push_str(",,");
                }
                let _ = writeln!(csv, ",{}", csv_field(reason));
            }
        }
    }
    if let Some(path) = &args.csv {
        write_atomic(path, csv.as_bytes())?;
        println!("Wrote {}", path.display());
    }
    if failed > 0 {
        eprintln!("error: {failed} of {} images could not be read", rows.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
