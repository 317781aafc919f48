//! Learning-rate schedules: the rate of every step as a pure function of the
//! step's number, so a run resumed from any checkpoint takes the same rates.
//!
//! With base rate `lr`, `W` warm-up steps and `T` steps in all, step
//! `s = 0, 1, ..., T - 1` (the update about to be made) uses
//!
//! ```text
//! warm-up  (s < W):  lr * (s + 1) / W                          linear, never 0
//! constant (s >= W): lr
//! cosine   (s >= W): lr * (1 + cos(pi * (s - W) / (T - W))) / 2   from lr down towards 0
//! ```
//!
//! The cosine is PyTorch's `CosineAnnealingLR` (`eta_min = 0`, `T_max = T - W`,
//! stepped once per batch) and Keras' `CosineDecay` (`alpha = 0`): the first
//! step after the warm-up takes the full rate, the last one a small positive
//! rate. SGDR's restarts are not included.
//!
//! ```
//! use convnet_optim::{LrSchedule, ScheduleShape};
//! // 100 steps: 10 of warm-up, then a cosine over the other 90
//! let schedule = LrSchedule { base_lr: 1e-3, warmup_steps: 10, total_steps: 100, shape: ScheduleShape::Cosine };
//! assert_eq!(schedule.lr(0), 1e-4); // (0 + 1) / 10 of the rate
//! assert_eq!(schedule.lr(9), 1e-3); // the warm-up's last step
//! assert_eq!(schedule.lr(10), 1e-3); // cos(0) = 1
//! assert!((schedule.lr(55) - 5e-4).abs() < 1e-15); // halfway: cos(pi / 2) = 0
//! assert!(schedule.lr(99) > 0.0 && schedule.lr(99) < 1e-6);
//! ```

use std::f64::consts::PI;

/// The shape after the warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleShape {
    /// The base rate throughout.
    Constant,
    /// Half a cosine period from the base rate down towards zero at the last step.
    Cosine,
}

/// A learning-rate schedule over a whole run (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    /// The rate after the warm-up (the peak).
    pub base_lr: f64,
    /// Steps of linear warm-up (0: none).
    pub warmup_steps: u64,
    /// Steps of the whole run: epochs times batches per epoch.
    pub total_steps: u64,
    /// The shape after the warm-up.
    pub shape: ScheduleShape,
}

impl LrSchedule {
    /// The rate of step `step` (0-based: the update about to be made). Steps
    /// past the end keep the last step's rate.
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.shape {
            ScheduleShape::Constant => self.base_lr,
            ScheduleShape::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
                let into = (step - self.warmup_steps).min(span - 1);
                self.base_lr * 0.5 * (1.0 + (PI * into as f64 / span as f64).cos())
            }
        }
    }

    /// Whether every step takes the base rate (no warm-up, constant): the
    /// schedule can then be left out, and reduce-on-plateau may change the rate.
    pub fn is_constant(&self) -> bool {
        self.warmup_steps == 0 && self.shape == ScheduleShape::Constant
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(warmup_steps: u64, total_steps: u64) -> LrSchedule {
        LrSchedule { base_lr: 2.0, warmup_steps, total_steps, shape: ScheduleShape::Cosine }
    }

    #[test]
    fn the_cosine_is_pytorchs_cosine_annealing_stepped_per_batch() {
        // torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8), lr 2, read before each step:
        // [2.0, 1.9238795, 1.7071068, 1.3826834, 1.0, 0.6173166, 0.2928932, 0.0761205]
        let expected = [2.0, 1.9238795325, 1.7071067812, 1.3826834324, 1.0, 0.6173165676, 0.2928932188, 0.0761204675];
        let schedule = cosine(0, 8);
        for (step, want) in expected.iter().enumerate() {
            assert!((schedule.lr(step as u64) - want).abs() < 1e-9, "step {step}: {}", schedule.lr(step as u64));
        }
        // past the end: the last step's rate, never 0 or negative
        assert_eq!(schedule.lr(8), schedule.lr(7));
        assert_eq!(schedule.lr(1000), schedule.lr(7));
    }

    #[test]
    fn the_warm_up_climbs_linearly_then_the_cosine_starts_at_the_full_rate() {
        let schedule = cosine(4, 12);
        let rates: Vec<f64> = (0..12).map(|s| schedule.lr(s)).collect();
        assert_eq!(&rates[..5], &[0.5, 1.0, 1.5, 2.0, 2.0]);
        assert!(rates[4..].windows(2).all(|w| w[1] < w[0]), "{rates:?}");
        let constant = LrSchedule { shape: ScheduleShape::Constant, ..schedule };
        assert_eq!(constant.lr(2), 1.5);
        assert!((4..100).all(|s| constant.lr(s) == 2.0));
    }

    #[test]
    fn only_a_constant_rate_without_warm_up_is_constant() {
        assert!(LrSchedule { shape: ScheduleShape::Constant, ..cosine(0, 5) }.is_constant());
        assert!(!LrSchedule { shape: ScheduleShape::Constant, ..cosine(1, 5) }.is_constant());
        assert!(!cosine(0, 5).is_constant());
    }

    #[test]
    fn a_warm_up_as_long_as_the_run_leaves_no_division_by_zero() {
        let schedule = cosine(5, 5);
        assert_eq!(schedule.lr(4), 2.0);
        assert_eq!(schedule.lr(5), 2.0); // span clamped to one step: cos(0)
    }
}
