//! Do the probabilities mean what they say? Calibration measures and
//! temperature scaling (Guo et al., "On Calibration of Modern Neural
//! Networks", 2017).
//!
//! ```text
//! N images, K classes, p[i, k] the probabilities, y[i] the true class,
//! conf[i] = max_k p[i, k], hit[i] = [argmax_k p[i, k] == y[i]]
//!
//! ECE   = sum over 15 bins B of |B| / N * |mean_{i in B} hit[i] - mean_{i in B} conf[i]|
//!         (bin b holds the images with conf in (b / 15, (b + 1) / 15]; conf = 0 falls in bin 0)
//! Brier = 1/N sum_i sum_k (p[i, k] - [k == y[i]])^2          (0 is perfect, 2 the worst)
//! NLL   = -1/N sum_i log p[i, y[i]]
//!
//! temperature scaling: p_T[i, k] = softmax_k(z[i, k] / T), one T > 0 for all images, chosen to
//! minimise the NLL on a validation set; T > 1 softens overconfident probabilities. Dividing
//! every logit of an image by the same positive T never changes which is largest.
//! ```
//!
//! The logits `z` are recovered from the probabilities as `log p` (equal to
//! `z` up to a per-image constant, which the softmax ignores).
//!
//! ```
//! use convnet_io::calibration::{brier_score, expected_calibration_error};
//! // two images, two classes: right at 0.9, wrong at 0.6
//! let p = [0.9, 0.1, 0.6, 0.4];
//! let labels = [0, 1];
//! // bins: 0.9 -> (0.8667, 0.9333]: |1 - 0.9| ; 0.6 -> (0.6, 0.6667]: |0 - 0.6|
//! assert!((expected_calibration_error(&p, &labels, 2) - (0.1 + 0.6) / 2.0).abs() < 1e-6);
//! assert!((brier_score(&p, &labels, 2) - (0.01 + 0.01 + 0.36 + 0.36) / 2.0).abs() < 1e-6);
//! ```

use serde::Serialize;

/// Bins of the top probability in [`expected_calibration_error`].
pub const CALIBRATION_BINS: usize = 15;

/// One bin of the reliability diagram.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReliabilityBin {
    /// The bin's confidence range `(low, high]`.
    pub low: f64,
    /// Upper end of the range.
    pub high: f64,
    /// Images whose top probability falls in the bin.
    pub count: usize,
    /// Their mean top probability (0 when empty).
    pub confidence: f64,
    /// The share of them predicted right (0 when empty).
    pub accuracy: f64,
}

/// The [`CALIBRATION_BINS`] bins of the top probability of each image.
pub fn reliability_bins(probabilities: &[f32], labels: &[usize], classes: usize) -> Vec<ReliabilityBin> {
    let bins = CALIBRATION_BINS;
    let mut sums = vec![(0usize, 0.0f64, 0usize); bins];
    for (row, &label) in probabilities.chunks(classes).zip(labels) {
        let predicted = convnet_tensor::loss::argmax(row);
        let confidence = row[predicted] as f64;
        // (b / bins, (b + 1) / bins]: ceil(conf * bins) - 1, with 0 in bin 0
        let bin = ((confidence * bins as f64).ceil() as usize).clamp(1, bins) - 1;
        let entry = &mut sums[bin];
        entry.0 += 1;
        entry.1 += confidence;
        entry.2 += (predicted == label) as usize;
    }
    sums.into_iter()
        .enumerate()
        .map(|(b, (count, confidence, hits))| {
            let share = |value: f64| if count == 0 { 0.0 } else { value / count as f64 };
            ReliabilityBin {
                low: b as f64 / bins as f64,
                high: (b + 1) as f64 / bins as f64,
                count,
                confidence: share(confidence),
                accuracy: share(hits as f64),
            }
        })
        .collect()
}

/// The expected calibration error over [`CALIBRATION_BINS`] equal-width bins
/// of the top probability (see the module docs).
pub fn expected_calibration_error(probabilities: &[f32], labels: &[usize], classes: usize) -> f64 {
    let total = labels.len().max(1) as f64;
    reliability_bins(probabilities, labels, classes)
        .iter()
        .map(|bin| bin.count as f64 / total * (bin.accuracy - bin.confidence).abs())
        .sum()
}

/// The multi-class Brier score: the mean over images of the squared distance
/// between the probabilities and the one-hot truth.
pub fn brier_score(probabilities: &[f32], labels: &[usize], classes: usize) -> f64 {
    let total: f64 = probabilities
        .chunks(classes)
        .zip(labels)
        .map(|(row, &label)| {
            row.iter()
                .enumerate()
                .map(|(k, &p)| {
                    let error = p as f64 - (k == label) as u8 as f64;
                    error * error
                })
                .sum::<f64>()
        })
        .sum();
    total / labels.len().max(1) as f64
}

/// The per-image log-probabilities, as logits (`log p`, floored at `1e-38`).
fn log_probabilities(probabilities: &[f32]) -> Vec<f64> {
    probabilities.iter().map(|&p| (p as f64).max(1e-38).ln()).collect()
}

/// NLL, its first and second derivatives with respect to `beta = 1 / T`:
/// `f(beta) = mean(logsumexp(beta z) - beta z_y)`, `f' = mean(E_p[z] - z_y)`,
/// `f'' = mean(Var_p[z]) >= 0`, with `p = softmax(beta z)`.
fn nll_and_derivatives(logits: &[f64], labels: &[usize], classes: usize, beta: f64) -> (f64, f64, f64) {
    let (mut value, mut first, mut second) = (0.0, 0.0, 0.0);
    for (row, &label) in logits.chunks(classes).zip(labels) {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &z| m.max(beta * z));
        let weights: Vec<f64> = row.iter().map(|&z| (beta * z - max).exp()).collect();
        let sum: f64 = weights.iter().sum();
        let mean: f64 = row.iter().zip(&weights).map(|(z, w)| z * w).sum::<f64>() / sum;
        let square: f64 = row.iter().zip(&weights).map(|(z, w)| z * z * w).sum::<f64>() / sum;
        value += max + sum.ln() - beta * row[label];
        first += mean - row[label];
        second += square - mean * mean;
    }
    let n = labels.len().max(1) as f64;
    (value / n, first / n, second / n)
}

/// The negative log-likelihood of `probabilities` sharpened or softened by
/// temperature `t`: `-mean log softmax(log p / t)[y]`.
pub fn nll_at_temperature(probabilities: &[f32], labels: &[usize], classes: usize, t: f64) -> f64 {
    nll_and_derivatives(&log_probabilities(probabilities), labels, classes, 1.0 / t).0
}

/// The temperature `T` in `[0.05, 20]` that minimises the NLL of
/// `softmax(log p / T)` on these images: Newton's method on `beta = 1 / T`
/// (the NLL is convex in `beta`), kept inside a shrinking bracket.
pub fn fit_temperature(probabilities: &[f32], labels: &[usize], classes: usize) -> f64 {
    let logits = log_probabilities(probabilities);
    let (mut low, mut high) = (1.0 / 20.0, 1.0 / 0.05);
    let mut beta: f64 = 1.0;
    for _ in 0..100 {
        let (_, first, second) = nll_and_derivatives(&logits, labels, classes, beta);
        // the minimum lies where f' = 0: below beta if f' > 0
        if first > 0.0 {
            high = beta;
        } else {
            low = beta;
        }
        let newton = beta - first / second.max(1e-12);
        beta = if newton > low && newton < high { newton } else { (low + high) / 2.0 };
        if (high - low) < 1e-12 || first.abs() < 1e-12 {
            break;
        }
    }
    1.0 / beta
}

/// `softmax(log p / t)` of each image, in place.
pub fn apply_temperature(probabilities: &mut [f32], classes: usize, t: f64) {
    for row in probabilities.chunks_mut(classes) {
        let logits: Vec<f64> = row.iter().map(|&p| (p as f64).max(1e-38).ln() / t).collect();
        let max = logits.iter().fold(f64::NEG_INFINITY, |m, &z| m.max(z));
        let sum: f64 = logits.iter().map(|z| (z - max).exp()).sum();
        for (p, z) in row.iter_mut().zip(&logits) {
            *p = ((z - max).exp() / sum) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Overconfident probabilities: right on 60% of images at confidence ~0.95.
    fn overconfident() -> (Vec<f32>, Vec<usize>) {
        let mut probabilities = Vec::new();
        let mut labels = Vec::new();
        for i in 0..200 {
            let top = 0.9 + (i % 10) as f32 * 0.009;
            let row = [top, (1.0 - top) * 0.7, (1.0 - top) * 0.3];
            probabilities.extend_from_slice(&row);
            labels.push(if i % 5 < 3 { 0 } else { 1 + i % 2 });
        }
        (probabilities, labels)
    }

    #[test]
    fn ece_and_brier_match_a_direct_computation() {
        let (p, labels) = overconfident();
        // every image's top is class 0; 60% right: ECE = |0.6 - mean confidence|
        let mean_top: f64 = p.chunks(3).map(|r| r[0] as f64).sum::<f64>() / 200.0;
        assert!((expected_calibration_error(&p, &labels, 3) - (mean_top - 0.6)).abs() < 1e-9);
        let brier: f64 = p
            .chunks(3)
            .zip(&labels)
            .map(|(r, &y)| (0..3).map(|k| (r[k] as f64 - (k == y) as u8 as f64).powi(2)).sum::<f64>())
            .sum::<f64>()
            / 200.0;
        assert!((brier_score(&p, &labels, 3) - brier).abs() < 1e-12);
        let bins = reliability_bins(&p, &labels, 3);
        assert_eq!(bins.iter().map(|b| b.count).sum::<usize>(), 200);
        assert_eq!(bins.len(), CALIBRATION_BINS);
    }

    #[test]
    fn temperature_scaling_lowers_the_nll_and_keeps_every_argmax() {
        let (p, labels) = overconfident();
        let t = fit_temperature(&p, &labels, 3);
        assert!(t > 1.0, "overconfident probabilities need softening, got T = {t}");
        let (before, after) = (nll_at_temperature(&p, &labels, 3, 1.0), nll_at_temperature(&p, &labels, 3, t));
        assert!(after < before, "NLL {before} -> {after}");
        // the minimum: a nudge either way is worse
        assert!(nll_at_temperature(&p, &labels, 3, t * 1.01) > after);
        assert!(nll_at_temperature(&p, &labels, 3, t * 0.99) > after);
        let mut scaled = p.clone();
        apply_temperature(&mut scaled, 3, t);
        for (a, b) in p.chunks(3).zip(scaled.chunks(3)) {
            assert_eq!(convnet_tensor::loss::argmax(a), convnet_tensor::loss::argmax(b));
        }
        assert!(expected_calibration_error(&scaled, &labels, 3) < expected_calibration_error(&p, &labels, 3));
    }
}
