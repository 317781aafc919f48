//! # convnet-optim: optimizers
//!
//! Each optimizer updates the parameters of a model in place from the
//! gradients of the last backward pass:
//!
//! ```text
//! for each parameter p with gradient g (in the model's fixed order):
//!     p := update(p, g, state)
//! ```
//!
//! - [`Adam`]: Keras' defaults and formulation (lr 1e-3, beta1 0.9, beta2 0.999,
//!   epsilon 1e-7, bias correction folded into the step size), with optional
//!   decoupled weight decay ([`Adam::adamw`], Keras' `AdamW`).
//! - [`Sgd`]: plain, with momentum, or Nesterov momentum (Keras' formulation).
//! - [`LrSchedule`]: the learning rate of every step (linear warm-up, constant
//!   or cosine), a pure function of the step number.
//!
//! The state (step count and moment buffers) can be exported and restored with
//! [`Optimizer::state`] / [`Optimizer::load_state`], which is what an exact resume
//! needs.
//!
//! ```
//! use convnet_optim::{Adam, Optimizer};
//! use convnet_tensor::ModelSpec;
//! let mut model = ModelSpec::small().build::<f32>(&[1, 28, 28], 10, 0).unwrap();
//! let mut adam = Adam::new(1e-3);
//! // ... forward, loss, backward ...
//! adam.step(&mut model.params_mut()).unwrap();
//! assert_eq!(adam.state().step, 1);
//! ```

mod adam;
mod optimizer;
mod schedule;
mod sgd;

pub use adam::Adam;
pub use optimizer::{OptimError, Optimizer, OptimizerState};
pub use schedule::{LrSchedule, ScheduleShape};
pub use sgd::Sgd;
