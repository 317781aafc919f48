//! Classification metrics: accuracy, confusion matrix, per-class precision,
//! recall and F1, macro and weighted averages, Cohen's kappa.

use crate::error::Result;
use convnet_data::batch::for_each_batch;
use convnet_data::{ImageSet, PixelScale};
use convnet_tensor::{Mode, Sequential, SoftmaxCrossEntropy};
use serde::Serialize;
use std::fmt::Write;

/// Model outputs over a whole set.
pub struct Predictions {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Arg-max class per image.
    pub predicted: Vec<usize>,
}

/// Runs `model` in evaluation mode over `set`, batch by batch.
pub fn predict_set(
    model: &mut Sequential<f32>,
    set: &ImageSet,
    batch_size: usize,
    scale: PixelScale,
) -> Result<Predictions> {
    let classes = model.output_shape()[0];
    let mut loss_fn = SoftmaxCrossEntropy::<f32>::new();
    let mut total_loss = 0.0f64;
    let mut probs = Vec::with_capacity(set.len() * classes);
    let mut error = None;
    for_each_batch(set, batch_size, scale, |batch| {
        if error.is_some() {
            return;
        }
        let result =
            model.forward(batch.images.view(), Mode::Eval).and_then(|logits| loss_fn.forward(logits, &batch.labels));
        match result {
            Ok(loss) => {
                total_loss += loss as f64 * batch.labels.len() as f64;
                probs.extend_from_slice(loss_fn.probs().as_slice().expect("contiguous"));
            }
            Err(e) => error = Some(e.into()),
        }
    })?;
    if let Some(error) = error {
        return Err(error);
    }
    let predicted = probs.chunks(classes).map(convnet_tensor::loss::argmax).collect();
    Ok(Predictions { loss: total_loss / set.len().max(1) as f64, predicted })
}

/// Precision, recall, F1 and support of one class.
#[derive(Clone, Debug, Serialize)]
pub struct ClassMetrics {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
}

/// A full evaluation report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub loss: f64,
    pub accuracy: f64,
    pub confusion: Vec<Vec<usize>>,
    pub per_class: Vec<ClassMetrics>,
    pub macro_avg: ClassMetrics,
    pub weighted_avg: ClassMetrics,
    pub kappa: f64,
    pub samples: usize,
}

fn safe_div(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

/// Computes every metric from true and predicted labels.
pub fn report(loss: f64, labels: &[usize], predicted: &[usize], class_names: &[String]) -> Report {
    let classes = class_names.len();
    let mut confusion = vec![vec![0usize; classes]; classes];
    for (&truth, &guess) in labels.iter().zip(predicted) {
        confusion[truth][guess] += 1;
    }
    let n = labels.len();
    let correct: usize = (0..classes).map(|k| confusion[k][k]).sum();
    let mut per_class = Vec::new();
    for k in 0..classes {
        let support: usize = confusion[k].iter().sum();
        let predicted_k: usize = confusion.iter().map(|row| row[k]).sum();
        let precision = safe_div(confusion[k][k] as f64, predicted_k as f64);
        let recall = safe_div(confusion[k][k] as f64, support as f64);
        let f1 = safe_div(2.0 * precision * recall, precision + recall);
        per_class.push(ClassMetrics { class: class_names[k].clone(), precision, recall, f1, support });
    }
    let average = |name: &str, weight: &dyn Fn(&ClassMetrics) -> f64| {
        let total: f64 = per_class.iter().map(weight).sum();
        let mean = |value: &dyn Fn(&ClassMetrics) -> f64| {
            safe_div(per_class.iter().map(|c| weight(c) * value(c)).sum(), total)
        };
        ClassMetrics {
            class: name.to_string(),
            precision: mean(&|c| c.precision),
            recall: mean(&|c| c.recall),
            f1: mean(&|c| c.f1),
            support: n,
        }
    };
    let macro_avg = average("macro avg", &|_| 1.0);
    let weighted_avg = average("weighted avg", &|c| c.support as f64);
    // Cohen's kappa: (p_o - p_e) / (1 - p_e), p_e from the row and column marginals
    let observed = safe_div(correct as f64, n as f64);
    let expected: f64 = (0..classes)
        .map(|k| {
            let row: usize = confusion[k].iter().sum();
            let col: usize = confusion.iter().map(|r| r[k]).sum();
            safe_div(row as f64 * col as f64, (n * n) as f64)
        })
        .sum();
    let kappa = if (1.0 - expected).abs() < 1e-12 { 0.0 } else { (observed - expected) / (1.0 - expected) };
    Report { loss, accuracy: observed, confusion, per_class, macro_avg, weighted_avg, kappa, samples: n }
}

impl Report {
    /// The terminal rendering: summary, confusion matrix, per-class table.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "loss: {:.4} - accuracy: {:.4} ({} images) - Cohen's kappa: {:.4}",
            self.loss, self.accuracy, self.samples, self.kappa
        );
        let names: Vec<&str> = self.per_class.iter().map(|c| c.class.as_str()).collect();
        let width = names.iter().enumerate().map(|(k, n)| format!("{k} {n}").len()).max().unwrap_or(4).max(12);
        let _ = writeln!(out, "\nConfusion matrix (rows: true class, columns: predicted):");
        let _ = write!(out, "{:>width$} ", "");
        for k in 0..names.len() {
            let _ = write!(out, "{k:>6}");
        }
        let _ = writeln!(out);
        for (k, row) in self.confusion.iter().enumerate() {
            let _ = write!(out, "{:<width$} ", format!("{k} {}", names[k]));
            for count in row {
                let _ = write!(out, "{count:>6}");
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out, "\n{:>width$} {:>9} {:>9} {:>9} {:>8}", "", "precision", "recall", "f1-score", "support");
        for c in self.per_class.iter().chain([&self.macro_avg, &self.weighted_avg]) {
            let _ = writeln!(
                out,
                "{:>width$} {:>9.4} {:>9.4} {:>9.4} {:>8}",
                c.class, c.precision, c.recall, c.f1, c.support
            );
        }
        out
    }
}
