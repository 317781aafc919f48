//! Adam and AdamW, as Keras computes them.
//!
//! For each parameter `p` with gradient `g`, at step `t = 1, 2, ...`:
//!
//! ```text
//! m := m + (1 - beta1) * (g - m)                 first moment   (= beta1 m + (1-beta1) g)
//! v := v + (1 - beta2) * (g^2 - v)               second moment  (= beta2 v + (1-beta2) g^2)
//! alpha = lr * sqrt(1 - beta2^t) / (1 - beta1^t) bias correction folded into the step size
//! p := p - alpha * m / (sqrt(v) + epsilon)
//! ```
//!
//! This is Keras' formulation (and the paper's "epsilon hat" variant): epsilon is
//! added to `sqrt(v)` *before* the bias correction of `v`, so at epsilon 1e-7 it
//! matches PyTorch (which uses epsilon after correction, default 1e-8) only
//! approximately.
//!
//! AdamW (Loshchilov & Hutter) decouples weight decay from the gradient: before
//! the Adam update, `p := p - lr * weight_decay * p`, as Keras' `AdamW` does. The
//! decay is applied to every parameter, biases included (Keras' default).

use crate::optimizer::{ensure_slot, take_slot, OptimError, Optimizer, OptimizerState};
use convnet_tensor::ndarray::{ArrayD, Zip};
use convnet_tensor::{Element, ParamMut};

/// Adam / AdamW.
#[derive(Clone, Debug)]
pub struct Adam<T> {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to `sqrt(v)`.
    pub epsilon: f64,
    /// Decoupled weight decay (0 for plain Adam).
    pub weight_decay: f64,
    step: u64,
    m: Vec<ArrayD<T>>,
    v: Vec<ArrayD<T>>,
}

impl<T: Element> Adam<T> {
    /// Adam with Keras' defaults and learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        Adam { lr, beta1: 0.9, beta2: 0.999, epsilon: 1e-7, weight_decay: 0.0, step: 0, m: Vec::new(), v: Vec::new() }
    }

    /// AdamW: Adam with decoupled weight decay (Keras' default decay is 0.004).
    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        Adam { weight_decay, ..Self::new(lr) }
    }
}

impl<T: Element> Optimizer<T> for Adam<T> {
    fn step(&mut self, params: &mut [ParamMut<'_, T>]) -> Result<(), OptimError> {
        ensure_slot(&mut self.m, params, "m")?;
        ensure_slot(&mut self.v, params, "v")?;
        self.step += 1;
        let t = self.step as f64;
        let alpha = T::from_f64(self.lr * (1.0 - self.beta2.powf(t)).sqrt() / (1.0 - self.beta1.powf(t)));
        let (one_minus_beta1, one_minus_beta2) = (T::from_f64(1.0 - self.beta1), T::from_f64(1.0 - self.beta2));
        let epsilon = T::from_f64(self.epsilon);
        let decay = T::from_f64(self.lr * self.weight_decay);
        for ((param, m), v) in params.iter_mut().zip(&mut self.m).zip(&mut self.v) {
            Zip::from(&mut *param.value).and(&*param.grad).and(m).and(v).for_each(|p, &g, m, v| {
                if self.weight_decay != 0.0 {
                    *p -= decay * *p;
                }
                *m = *m + one_minus_beta1 * (g - *m);
                *v = *v + one_minus_beta2 * (g * g - *v);
                *p -= alpha * *m / (v.sqrt() + epsilon);
            });
        }
        Ok(())
    }

    fn learning_rate(&self) -> f64 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn state(&self) -> OptimizerState<T> {
        OptimizerState {
            step: self.step,
            lr: self.lr,
            slots: vec![("m".into(), self.m.clone()), ("v".into(), self.v.clone())],
        }
    }

    fn load_state(&mut self, mut state: OptimizerState<T>) -> Result<(), OptimError> {
        let m = take_slot(&mut state, "m")?;
        let v = take_slot(&mut state, "v")?;
        if m.len() != v.len() {
            return Err(OptimError::StateMismatch("m and v have different lengths".into()));
        }
        self.m = m;
        self.v = v;
        self.step = state.step;
        self.lr = state.lr;
        Ok(())
    }
}
