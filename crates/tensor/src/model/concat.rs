//! A concatenating block: branches over the same input whose outputs are
//! stacked **along the channels** (SqueezeNet's fire module, Inception).
//!
//! ## Math and shapes
//!
//! ```text
//! x     (N, C, H, W)
//! y_b   = branch_b(x)                      (N, C_b, H', W'), every branch the same H', W'
//! y     = [y_0, y_1, ...] along axis 1      (N, C_0 + C_1 + ..., H', W')
//! ```
//!
//! SqueezeNet's fire module is a 1x1 squeeze convolution and ReLU, then this
//! block with two branches: a 1x1 expand + ReLU and a 3x3 expand + ReLU.
//!
//! ## Backward
//!
//! The forward copied `y_b` into its own channels of `y`, so `dL/dy_b` is
//! just those channels of `dL/dy`: the gradient is **split back** to each
//! branch. Every branch read the same `x`, so their input gradients add:
//!
//! ```text
//! dL/dx = sum_b branch_b'(x)^T dL/dy[:, channels of b]
//! ```
//!
//! ```
//! use convnet_tensor::model::concat::Concat;
//! use convnet_tensor::{Layer, Mode, Relu, Sequential};
//! use ndarray::{ArrayD, IxDyn};
//! // two branches over a (1, 1, 2) input: relu(x) and x itself (an empty branch)
//! let mut relu = Sequential::new(vec![1, 1, 2]).unwrap();
//! relu.push(Box::new(Relu)).unwrap();
//! let mut block = Concat::new(vec![relu, Sequential::new(vec![1, 1, 2]).unwrap()]).unwrap();
//! let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 1, 2]), vec![-1.0f64, 2.0]).unwrap();
//! let mut y = ArrayD::zeros(IxDyn(&[1, 2, 1, 2]));
//! block.forward(x.view(), y.view_mut(), Mode::Eval);
//! assert_eq!(y.as_slice().unwrap(), &[0.0, 2.0, -1.0, 2.0]);
//! let dy = ArrayD::from_shape_vec(IxDyn(&[1, 2, 1, 2]), vec![10.0, 20.0, 1.0, 2.0]).unwrap();
//! let mut dx = ArrayD::zeros(IxDyn(&[1, 1, 1, 2]));
//! block.backward(x.view(), y.view(), dy.view(), Some(dx.view_mut()));
//! assert_eq!(dx.as_slice().unwrap(), &[1.0, 22.0]); // relu' dy_0 + dy_1
//! ```

use crate::element::Element;
use crate::error::{Result, TensorError};
use crate::layer::{slice, slice_mut, KinkRecorder, Layer, Mode, Param, ParamMut};
use crate::model::branches::{
    add_into, branch_mode, nested_buffers, nested_buffers_mut, nested_param_names, set_fused_all, sublayers_of,
    sublayers_of_mut,
};
use crate::model::sequential::Sequential;
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};

/// A concatenating block; see the module docs.
#[derive(Debug)]
pub struct Concat<T: Element> {
    branches: Vec<Sequential<T>>,
    /// `dL/dy_b` of the branch being differentiated, gathered contiguous.
    branch_grad: Vec<T>,
}

impl<T: Element> Concat<T> {
    /// Stacks the outputs of `branches` along the channels. The branches must
    /// take the same input and agree on every output axis but the first.
    pub fn new(branches: Vec<Sequential<T>>) -> Result<Self> {
        let first = branches.first().ok_or_else(|| TensorError::Config("a concat block needs branches".into()))?;
        for branch in &branches {
            let agree = branch.input_shape() == first.input_shape()
                && branch.output_shape().len() == first.output_shape().len()
                && branch.output_shape()[1..] == first.output_shape()[1..];
            if !agree {
                return Err(TensorError::Config(format!(
                    "a concat block's branches must take the same input and give the same sizes but for the channels: {:?} vs {:?}",
                    first.output_shape(),
                    branch.output_shape()
                )));
            }
        }
        Ok(Concat { branches, branch_grad: Vec::new() })
    }

    /// The branches, in channel order.
    pub fn branches(&self) -> &[Sequential<T>] {
        &self.branches
    }

    /// Elements per image of each branch's output.
    fn branch_lens(&self) -> Vec<usize> {
        self.branches.iter().map(|b| b.output_shape().iter().product()).collect()
    }

    /// `y[n] = [branch_0(x)[n], branch_1(x)[n], ...]` along the channels, each
    /// branch by its forward pass in `mode`, or by its inference pass (`None`).
    fn concatenate(&mut self, input: ArrayViewD<'_, T>, mut output: ArrayViewMutD<'_, T>, mode: Option<Mode>) {
        let lens = self.branch_lens();
        let (image_len, batch) = (lens.iter().sum::<usize>(), input.shape()[0]);
        let output = slice_mut(&mut output);
        let mut offset = 0;
        for (b, branch) in self.branches.iter_mut().enumerate() {
            // y[n, channels of b] = branch_b(x)[n]
            let y_b = match mode {
                Some(mode) => branch.forward(input.view(), branch_mode(mode, b)),
                None => branch.predict(input.view()),
            };
            let y_b = y_b.expect("shapes checked when built");
            for (n, image) in slice(&y_b).chunks(lens[b]).enumerate().take(batch) {
                output[n * image_len + offset..][..lens[b]].copy_from_slice(image);
            }
            offset += lens[b];
        }
    }
}

impl<T: Element> Layer<T> for Concat<T> {
    fn kind(&self) -> &'static str {
        "concat"
    }

    fn describe(&self) -> String {
        let kinds = |model: &Sequential<T>| model.layers().iter().map(|l| l.kind()).collect::<Vec<_>>().join(" ");
        self.branches.iter().map(|b| format!("[{}]", kinds(b))).collect::<Vec<_>>().join(" | ")
    }

    fn output_shape(&self, input_shape: &[usize]) -> std::result::Result<Vec<usize>, String> {
        let first = &self.branches[0];
        if input_shape != first.input_shape() {
            return Err(format!("was built for inputs {:?}, got {input_shape:?}", first.input_shape()));
        }
        let mut shape = first.output_shape().to_vec();
        shape[0] = self.branches.iter().map(|b| b.output_shape()[0]).sum();
        Ok(shape)
    }

    fn forward(&mut self, input: ArrayViewD<'_, T>, output: ArrayViewMutD<'_, T>, mode: Mode) {
        self.concatenate(input, output, Some(mode));
    }

    fn predict(&mut self, input: ArrayViewD<'_, T>, output: ArrayViewMutD<'_, T>) {
        self.concatenate(input, output, None);
    }

    fn backward(
        &mut self,
        input: ArrayViewD<'_, T>,
        _output: ArrayViewD<'_, T>,
        grad_output: ArrayViewD<'_, T>,
        mut grad_input: Option<ArrayViewMutD<'_, T>>,
    ) {
        let lens = self.branch_lens();
        let (image_len, batch) = (lens.iter().sum::<usize>(), input.shape()[0]);
        let dy = slice(&grad_output);
        let mut offset = 0;
        for (b, branch) in self.branches.iter_mut().enumerate() {
            // forward: y[n, channels of b] = y_b[n], so dL/dy_b[n] = dL/dy[n, channels of b]
            self.branch_grad.resize(batch * lens[b], T::zero());
            for (n, image) in self.branch_grad.chunks_mut(lens[b]).enumerate() {
                image.copy_from_slice(&dy[n * image_len + offset..][..lens[b]]);
            }
            offset += lens[b];
            let shape: Vec<usize> = std::iter::once(batch).chain(branch.output_shape().iter().copied()).collect();
            let dy_b = ArrayViewD::from_shape(IxDyn(&shape), &self.branch_grad).expect("sized above");
            // every branch read x: dL/dx = sum over b of branch_b'(x)^T dL/dy_b
            match grad_input.as_mut() {
                None => branch.backward(dy_b).expect("after a forward"),
                Some(grad_input) => {
                    let through = branch.backward_input_grad(dy_b).expect("after a forward");
                    let grad_input = grad_input.as_slice_mut().expect("contiguous");
                    if b == 0 {
                        grad_input.copy_from_slice(slice(&through));
                    } else {
                        add_into(grad_input, slice(&through));
                    }
                }
            }
        }
    }

    fn backward_needs_output(&self) -> bool {
        false
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }

    fn params(&self) -> Vec<Param<'_, T>> {
        self.branches.iter().flat_map(|b| b.params()).collect()
    }

    fn params_mut(&mut self) -> Vec<ParamMut<'_, T>> {
        self.branches.iter_mut().flat_map(|b| b.params_mut()).collect()
    }

    fn param_names(&self) -> Vec<String> {
        nested_param_names(self.branches.iter().enumerate().map(|(b, branch)| (format!("branches.{b}"), branch)))
    }

    fn buffers(&self) -> Vec<(String, &ArrayD<T>)> {
        nested_buffers(self.branches.iter().enumerate().map(|(b, branch)| (format!("branches.{b}"), branch)))
    }

    fn buffers_mut(&mut self) -> Vec<(String, &mut ArrayD<T>)> {
        nested_buffers_mut(self.branches.iter_mut().enumerate().map(|(b, branch)| (format!("branches.{b}"), branch)))
    }

    fn sublayers(&self) -> Vec<&dyn Layer<T>> {
        sublayers_of(self.branches.iter())
    }

    fn sublayers_mut(&mut self) -> Vec<&mut dyn Layer<T>> {
        sublayers_of_mut(self.branches.iter_mut())
    }

    fn buffer_bytes(&self, batch: usize) -> u64 {
        self.branches.iter().map(|b| b.buffer_bytes(batch)).sum::<u64>()
            + (batch * self.branch_lens().into_iter().max().unwrap_or(0) * std::mem::size_of::<T>()) as u64
    }

    fn set_fused(&mut self, fuse: bool) {
        set_fused_all(self.branches.iter_mut(), fuse);
    }

    fn set_batch_sync(&mut self, sync: Option<std::sync::Arc<dyn crate::batch_sync::BatchSync>>) {
        for branch in &mut self.branches {
            branch.set_batch_sync(sync.clone());
        }
    }

    fn set_gradient_leaves(&mut self, leaves: usize) {
        for branch in &mut self.branches {
            branch.set_gradient_leaves(leaves);
        }
    }

    fn continues_leaves(&self) -> bool {
        self.branches.iter().all(|branch| branch.continues_leaves())
    }

    fn set_leaf_part(&mut self, part: crate::gradient_tree::LeafPart) {
        for branch in &mut self.branches {
            branch.set_leaf_part(part);
        }
    }

    fn record_kinks(&self, _input: ArrayViewD<'_, T>, recorder: &mut KinkRecorder) {
        for branch in &self.branches {
            branch.record_kinks(recorder);
        }
    }

    fn forward_flops(&self, _input_shape: &[usize]) -> u64 {
        self.branches.iter().map(|b| b.forward_flops()).sum()
    }
}
