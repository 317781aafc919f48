//! The optimizer contract and the state it saves in checkpoints; shared by
//! [`crate::Adam`] and [`crate::Sgd`].

use convnet_tensor::ndarray::ArrayD;
use convnet_tensor::{Element, ParamMut};
use thiserror::Error;

/// Errors of the optimizers.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum OptimError {
    /// The parameters handed to `step` do not match the optimizer's state
    /// (a different model, or a state saved for another model).
    #[error("optimizer state mismatch: {0}")]
    StateMismatch(String),
    /// A hyper-parameter is out of range.
    #[error("invalid optimizer setting: {0}")]
    Config(String),
}

/// A snapshot of an optimizer's state.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState<T> {
    /// Number of steps taken.
    pub step: u64,
    /// The learning rate: the optimizer owns it (schedules change it through
    /// [`Optimizer::set_learning_rate`]), and loading a state restores it.
    pub lr: f64,
    /// Named buffers (`"m"`, `"v"`, `"velocity"`), each with one array per
    /// parameter in the model's order.
    pub slots: Vec<(String, Vec<ArrayD<T>>)>,
}

/// The optimizer contract.
pub trait Optimizer<T: Element> {
    /// One update of every parameter from its gradient.
    fn step(&mut self, params: &mut [ParamMut<'_, T>]) -> Result<(), OptimError>;
    /// The learning rate.
    fn learning_rate(&self) -> f64;
    /// Changes the learning rate (schedules, reduce-on-plateau).
    fn set_learning_rate(&mut self, lr: f64);
    /// A copy of the state.
    fn state(&self) -> OptimizerState<T>;
    /// Restores a state from [`Optimizer::state`].
    fn load_state(&mut self, state: OptimizerState<T>) -> Result<(), OptimError>;
}

/// Creates zero buffers matching `params` if `slot` is empty; checks shapes otherwise.
pub(crate) fn ensure_slot<T: Element>(
    slot: &mut Vec<ArrayD<T>>,
    params: &[ParamMut<'_, T>],
    name: &str,
) -> Result<(), OptimError> {
    if slot.is_empty() {
        slot.extend(params.iter().map(|p| ArrayD::zeros(p.value.raw_dim())));
        return Ok(());
    }
    if slot.len() != params.len() {
        return Err(OptimError::StateMismatch(format!(
            "{name}: {} buffers for {} parameters",
            slot.len(),
            params.len()
        )));
    }
    for (i, (buffer, p)) in slot.iter().zip(params).enumerate() {
        if buffer.shape() != p.value.shape() {
            return Err(OptimError::StateMismatch(format!(
                "{name}[{i}]: shape {:?}, parameter shape {:?}",
                buffer.shape(),
                p.value.shape()
            )));
        }
    }
    Ok(())
}

/// Takes the slot called `name` out of a state.
pub(crate) fn take_slot<T>(state: &mut OptimizerState<T>, name: &str) -> Result<Vec<ArrayD<T>>, OptimError> {
    let position = state
        .slots
        .iter()
        .position(|(slot_name, _)| slot_name == name)
        .ok_or_else(|| OptimError::StateMismatch(format!("the state has no `{name}` buffers")))?;
    Ok(state.slots.swap_remove(position).1)
}
