//! Stochastic gradient descent with optional momentum, as Keras computes it.
//!
//! ```text
//! momentum = 0:   p := p - lr * g
//! momentum > 0:   velocity := momentum * velocity - lr * g
//!                 p := p + velocity                           (classical)
//!                 p := p + momentum * velocity - lr * g       (nesterov)
//! ```

use crate::optimizer::{ensure_slot, take_slot, OptimError, Optimizer, OptimizerState};
use convnet_tensor::ndarray::{ArrayD, Zip};
use convnet_tensor::{Element, ParamMut};

/// SGD with optional (Nesterov) momentum.
#[derive(Clone, Debug)]
pub struct Sgd<T> {
    /// Learning rate.
    pub lr: f64,
    /// Momentum in `[0, 1)`.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    step: u64,
    velocity: Vec<ArrayD<T>>,
}

impl<T: Element> Sgd<T> {
    /// Plain SGD.
    pub fn new(lr: f64) -> Self {
        Sgd { lr, momentum: 0.0, nesterov: false, step: 0, velocity: Vec::new() }
    }

    /// SGD with momentum (Nesterov if `nesterov`).
    pub fn with_momentum(lr: f64, momentum: f64, nesterov: bool) -> Result<Self, OptimError> {
        if !(0.0..1.0).contains(&momentum) {
            return Err(OptimError::Config(format!("momentum must be in [0, 1), got {momentum}")));
        }
        Ok(Sgd { momentum, nesterov, ..Self::new(lr) })
    }
}

impl<T: Element> Optimizer<T> for Sgd<T> {
    fn step(&mut self, params: &mut [ParamMut<'_, T>]) -> Result<(), OptimError> {
        self.step += 1;
        let lr = T::from_f64(self.lr);
        if self.momentum == 0.0 {
            for param in params.iter_mut() {
                Zip::from(&mut *param.value).and(&*param.grad).for_each(|p, &g| *p -= lr * g);
            }
            return Ok(());
        }
        ensure_slot(&mut self.velocity, params, "velocity")?;
        let momentum = T::from_f64(self.momentum);
        for (param, velocity) in params.iter_mut().zip(&mut self.velocity) {
            Zip::from(&mut *param.value).and(&*param.grad).and(velocity).for_each(|p, &g, v| {
                *v = momentum * *v - lr * g;
                *p = if self.nesterov { *p + momentum * *v - lr * g } else { *p + *v };
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
        OptimizerState { step: self.step, lr: self.lr, slots: vec![("velocity".into(), self.velocity.clone())] }
    }

    fn load_state(&mut self, mut state: OptimizerState<T>) -> Result<(), OptimError> {
        self.velocity = take_slot(&mut state, "velocity")?;
        self.step = state.step;
        self.lr = state.lr;
        Ok(())
    }
}
