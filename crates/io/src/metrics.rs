//! Classification metrics: accuracy, confusion matrix, per-class precision,
//! recall and F1, macro and weighted averages, Cohen's kappa, and the ROC
//! analysis a clinical reader asks for: one-vs-rest ROC AUC per class, and for
//! a binary question (two classes, or `--positive` grouping several) the AUC,
//! sensitivity and specificity.
//!
//! ## ROC AUC
//!
//! The area under the ROC curve is the probability that a random positive
//! image scores higher than a random negative one, ties counting one half:
//! the Mann-Whitney statistic `U / (P * N)`, computed from ranks (tied scores
//! share their average rank), which is exact and needs no threshold sweep.
//!
//! ```
//! use convnet_io::metrics::roc_auc;
//! // positives 0.9 and 0.4, negatives 0.4 and 0.1: pairs (0.9 > 0.4, 0.9 > 0.1,
//! // 0.4 = 0.4 counts 1/2, 0.4 > 0.1) = 3.5 of 4
//! assert_eq!(roc_auc(&[0.9, 0.4, 0.4, 0.1], &[true, true, false, false]), Some(0.875));
//! assert_eq!(roc_auc(&[0.3, 0.2], &[true, true]), None); // no negatives: undefined
//! ```

use crate::error::Result;
use convnet_data::batch::for_each_batch_in;
use convnet_data::{ImageSet, PixelScale};
use convnet_tensor::{Sequential, SoftmaxCrossEntropy};
use serde::Serialize;
use std::fmt::Write;

/// Model outputs over a whole set.
pub struct Predictions {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Arg-max class per image.
    pub predicted: Vec<usize>,
    /// Softmax probabilities, `(N, classes)` row-major.
    pub probabilities: Vec<f32>,
}

/// Runs `model` in evaluation mode over `set`, batch by batch.
pub fn predict_set(
    model: &mut Sequential<f32>,
    set: &ImageSet,
    batch_size: usize,
    scale: PixelScale,
) -> Result<Predictions> {
    let (probabilities, losses) = predict_probabilities(model, set, 0..set.len(), batch_size, scale)?;
    Ok(Predictions::from_parts(probabilities, &losses, model.output_shape()[0]))
}

/// The class probabilities `(len, classes)` of the images `range` of `set`,
/// and each image's cross-entropy loss `(len,)`.
pub fn predict_probabilities(
    model: &mut Sequential<f32>,
    set: &ImageSet,
    range: std::ops::Range<usize>,
    batch_size: usize,
    scale: PixelScale,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let classes = model.output_shape()[0];
    let mut loss_fn = SoftmaxCrossEntropy::<f32>::new();
    let mut probs = Vec::with_capacity(range.len() * classes);
    let mut losses = Vec::with_capacity(range.len());
    let mut error = None;
    for_each_batch_in(set, range, batch_size, scale, |batch| {
        if error.is_some() {
            return;
        }
        let result = model.predict(batch.images.view()).and_then(|logits| loss_fn.forward(logits, &batch.labels));
        match result {
            Ok(_) => {
                probs.extend_from_slice(loss_fn.probs().as_slice().expect("contiguous"));
                losses.extend_from_slice(loss_fn.sample_losses());
            }
            Err(e) => error = Some(e.into()),
        }
    })?;
    match error {
        Some(error) => Err(error),
        None => Ok((probs, losses)),
    }
}

impl Predictions {
    /// Predictions from class probabilities `(N, classes)` and per-image
    /// losses `(N,)`: the arg-max class of each image and the mean loss,
    /// summed in image order (so parts gathered from several processes give
    /// the bits of one process).
    pub fn from_parts(probabilities: Vec<f32>, losses: &[f32], classes: usize) -> Predictions {
        let predicted: Vec<usize> = probabilities.chunks(classes).map(convnet_tensor::loss::argmax).collect();
        let total: f64 = losses.iter().map(|&loss| loss as f64).sum();
        Predictions { loss: total / losses.len().max(1) as f64, predicted, probabilities }
    }
}

/// Precision, recall, F1 and support of one class.
#[derive(Clone, Debug, Serialize)]
pub struct ClassMetrics {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: usize,
    /// One-vs-rest ROC AUC (`None` when the class has no image, or every image
    /// is of it); in the averages, the mean over the classes where it is defined.
    pub roc_auc: Option<f64>,
}

/// The binary question of a report: the positive classes against the rest.
#[derive(Clone, Debug, Serialize)]
pub struct BinaryMetrics {
    /// The classes that count as positive.
    pub positive: Vec<String>,
    /// ROC AUC of the summed probability of the positive classes.
    pub roc_auc: Option<f64>,
    /// True positive rate at the argmax decision: positives predicted as any positive class.
    pub sensitivity: f64,
    /// True negative rate at the argmax decision.
    pub specificity: f64,
    /// Positive images.
    pub positives: usize,
    /// Negative images.
    pub negatives: usize,
    /// Positives predicted positive.
    pub true_positives: usize,
    /// Negatives predicted negative.
    pub true_negatives: usize,
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
    /// The positive classes against the rest, when the report has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<BinaryMetrics>,
    /// Expected calibration error (15 bins of the top probability), when computed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ece: Option<f64>,
    /// Multi-class Brier score, when computed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub brier: Option<f64>,
    /// The temperature the probabilities were scaled by, when not 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
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
        per_class.push(ClassMetrics { class: class_names[k].clone(), precision, recall, f1, support, roc_auc: None });
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
            roc_auc: None,
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
    Report {
        loss,
        accuracy: observed,
        confusion,
        per_class,
        macro_avg,
        weighted_avg,
        kappa,
        samples: n,
        binary: None,
        ece: None,
        brier: None,
        temperature: None,
    }
}

/// Ranks (1-based) of `scores`, tied scores sharing their average rank.
fn average_ranks(scores: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0.0; scores.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        // positions start..end (0-based) hold ranks start+1 ..= end: their mean
        let rank = (start + 1 + end) as f64 / 2.0;
        for &index in &order[start..end] {
            ranks[index] = rank;
        }
        start = end;
    }
    ranks
}

/// ROC AUC of `scores` for telling the `positive` images from the others (see
/// the module docs); `None` when either side is empty.
pub fn roc_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let positives = positive.iter().filter(|&&p| p).count();
    let negatives = positive.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let ranks = average_ranks(scores);
    let rank_sum: f64 = ranks.iter().zip(positive).filter(|(_, &p)| p).map(|(r, _)| r).sum();
    let u = rank_sum - (positives * (positives + 1)) as f64 / 2.0;
    Some(u / (positives as f64 * negatives as f64))
}

/// The ROC curve: `(false positive rate, true positive rate)` from (0, 0) to
/// (1, 1), one point per distinct score taken as the threshold, highest first.
pub fn roc_curve(scores: &[f64], positive: &[bool]) -> Vec<(f64, f64)> {
    let positives = positive.iter().filter(|&&p| p).count().max(1) as f64;
    let negatives = positive.iter().filter(|&&p| !p).count().max(1) as f64;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut curve = vec![(0.0, 0.0)];
    let (mut true_positives, mut false_positives) = (0usize, 0usize);
    for (i, &index) in order.iter().enumerate() {
        if positive[index] {
            true_positives += 1;
        } else {
            false_positives += 1;
        }
        if order.get(i + 1).is_none_or(|&next| scores[next] != scores[index]) {
            curve.push((false_positives as f64 / negatives, true_positives as f64 / positives));
        }
    }
    curve
}

/// The scores and truths of a one-vs-rest (or grouped) question: the summed
/// probability of the `classes`, and whether each image is of one of them.
pub fn scores_for(
    probabilities: &[f32],
    labels: &[usize],
    num_classes: usize,
    classes: &[usize],
) -> (Vec<f64>, Vec<bool>) {
    let scores = probabilities.chunks(num_classes).map(|row| classes.iter().map(|&k| row[k] as f64).sum()).collect();
    let truth = labels.iter().map(|label| classes.contains(label)).collect();
    (scores, truth)
}

impl Report {
    /// Adds the ROC analysis from the probabilities `(N, classes)`: per-class
    /// one-vs-rest AUC (and its averages) and, when `positive` names classes
    /// (or there are exactly two, the second being positive), the binary AUC,
    /// sensitivity and specificity at the argmax decision.
    pub fn with_roc(
        mut self,
        probabilities: &[f32],
        labels: &[usize],
        predicted: &[usize],
        positive: Option<&[usize]>,
    ) -> Self {
        let classes = self.per_class.len();
        for k in 0..classes {
            let (scores, truth) = scores_for(probabilities, labels, classes, &[k]);
            self.per_class[k].roc_auc = roc_auc(&scores, &truth);
        }
        let defined: Vec<(f64, usize)> =
            self.per_class.iter().filter_map(|c| c.roc_auc.map(|a| (a, c.support))).collect();
        if !defined.is_empty() {
            self.macro_avg.roc_auc = Some(defined.iter().map(|(a, _)| a).sum::<f64>() / defined.len() as f64);
            let support: usize = defined.iter().map(|(_, s)| s).sum();
            self.weighted_avg.roc_auc =
                Some(safe_div(defined.iter().map(|(a, s)| a * *s as f64).sum(), support as f64));
        }
        let default_positive = [1usize];
        let positive = positive.or((classes == 2).then_some(&default_positive[..]));
        if let Some(positive) = positive {
            let (scores, truth) = scores_for(probabilities, labels, classes, positive);
            let positives = truth.iter().filter(|&&t| t).count();
            let true_positives = truth.iter().zip(predicted).filter(|(&t, p)| t && positive.contains(p)).count();
            let true_negatives = truth.iter().zip(predicted).filter(|(&t, p)| !t && !positive.contains(p)).count();
            let negatives = truth.len() - positives;
            self.binary = Some(BinaryMetrics {
                positive: positive.iter().map(|&k| self.per_class[k].class.clone()).collect(),
                roc_auc: roc_auc(&scores, &truth),
                sensitivity: safe_div(true_positives as f64, positives as f64),
                specificity: safe_div(true_negatives as f64, negatives as f64),
                positives,
                negatives,
                true_positives,
                true_negatives,
            });
        }
        self
    }
}

impl Report {
    /// Adds the calibration measures of the probabilities `(N, classes)`
    /// ([`crate::calibration`]) and the temperature they were scaled by.
    pub fn with_calibration(mut self, probabilities: &[f32], labels: &[usize], temperature: Option<f64>) -> Self {
        let classes = self.per_class.len();
        self.ece = Some(crate::calibration::expected_calibration_error(probabilities, labels, classes));
        self.brier = Some(crate::calibration::brier_score(probabilities, labels, classes));
        self.temperature = temperature;
        self
    }

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
        let _ = writeln!(
            out,
            "\n{:>width$} {:>9} {:>9} {:>9} {:>8} {:>9}",
            "", "precision", "recall", "f1-score", "support", "roc auc"
        );
        for c in self.per_class.iter().chain([&self.macro_avg, &self.weighted_avg]) {
            let auc = c.roc_auc.map_or("-".to_string(), |a| format!("{a:.4}"));
            let _ = writeln!(
                out,
                "{:>width$} {:>9.4} {:>9.4} {:>9.4} {:>8} {auc:>9}",
                c.class, c.precision, c.recall, c.f1, c.support
            );
        }
        if let Some(b) = &self.binary {
            let auc = b.roc_auc.map_or("undefined".to_string(), |a| format!("{a:.4}"));
            let _ = writeln!(
                out,
                "\n{} vs the rest: ROC AUC {auc} - sensitivity {:.4} ({}/{}) - specificity {:.4} ({}/{})",
                b.positive.join(" + "),
                b.sensitivity,
                b.true_positives,
                b.positives,
                b.specificity,
                b.true_negatives,
                b.negatives
            );
        }
        if let (Some(ece), Some(brier)) = (self.ece, self.brier) {
            let scaled = self.temperature.map_or(String::new(), |t| format!(" (probabilities at temperature {t:.4})"));
            let _ = writeln!(out, "\nCalibration: ECE {ece:.4} (15 bins) - Brier score {brier:.4}{scaled}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AUC by its definition: every (positive, negative) pair, ties 1/2.
    fn auc_by_pairs(scores: &[f64], positive: &[bool]) -> f64 {
        let (mut wins, mut pairs) = (0.0, 0.0);
        for (i, &p) in positive.iter().enumerate() {
            for (j, &q) in positive.iter().enumerate() {
                if p && !q {
                    pairs += 1.0;
                    wins += if scores[i] > scores[j] {
                        1.0
                    } else if scores[i] == scores[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        wins / pairs
    }

    #[test]
    fn roc_auc_equals_the_pairwise_definition_with_ties() {
        // scores on a coarse grid, so many ties
        let mut state = 7u64;
        for n in [2usize, 3, 10, 57] {
            let mut next = || {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                state >> 33
            };
            let scores: Vec<f64> = (0..n).map(|_| (next() % 5) as f64 / 4.0).collect();
            let mut positive: Vec<bool> = (0..n).map(|_| next() % 3 == 0).collect();
            positive[0] = true;
            positive[1] = false;
            let auc = roc_auc(&scores, &positive).unwrap();
            assert!((auc - auc_by_pairs(&scores, &positive)).abs() < 1e-12, "n {n}: {auc}");
        }
        assert_eq!(roc_auc(&[0.1, 0.2, 0.3], &[false, true, true]), Some(1.0));
        assert_eq!(roc_auc(&[0.5, 0.5], &[true, false]), Some(0.5));
        let curve = roc_curve(&[0.9, 0.4, 0.4, 0.1], &[true, true, false, false]);
        assert_eq!(curve, vec![(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
    }

    #[test]
    fn binary_metrics_group_the_positive_classes() {
        let names: Vec<String> = ["benign", "malignant", "normal"].iter().map(|s| s.to_string()).collect();
        let labels = [1, 1, 0, 2, 0];
        let probabilities = [
            0.1, 0.8, 0.1, // malignant, predicted malignant
            0.6, 0.3, 0.1, // malignant, predicted benign: a miss
            0.7, 0.2, 0.1, // benign
            0.1, 0.1, 0.8, // normal
            0.2, 0.5, 0.3, // benign, predicted malignant: a false alarm
        ];
        let predicted = [1, 0, 0, 2, 1];
        let report = report(0.5, &labels, &predicted, &names).with_roc(&probabilities, &labels, &predicted, Some(&[1]));
        let binary = report.binary.as_ref().unwrap();
        assert_eq!(binary.positive, ["malignant"]);
        assert_eq!((binary.true_positives, binary.positives, binary.true_negatives, binary.negatives), (1, 2, 2, 3));
        assert_eq!(binary.sensitivity, 0.5);
        // malignant scores 0.8, 0.3 vs 0.2, 0.1, 0.5: pairs won 3 + 2 = 5 of 6
        assert!((binary.roc_auc.unwrap() - 5.0 / 6.0).abs() < 1e-12);
        assert!(report.to_text().contains("malignant vs the rest: ROC AUC 0.8333 - sensitivity 0.5000 (1/2)"));
        let json = serde_json::to_value(&report).unwrap();
        assert!(json["per_class"][2]["roc_auc"].as_f64().is_some());
        assert!(json["macro_avg"]["roc_auc"].as_f64().is_some());
    }
}
