//! A residual block: two branches over the same input whose outputs are
//! **added** (He et al. 2015, "Deep Residual Learning"; torchvision's
//! `BasicBlock` and `Bottleneck`).
//!
//! ## Math and shapes
//!
//! ```text
//! x        (N, C, H, W)
//! body     a small model: conv 3x3 -> batchnorm -> relu -> conv 3x3 -> batchnorm
//! shortcut identity (x itself), or a projection when the shape changes:
//!          conv 1x1 stride 2, no bias -> batchnorm
//! y        = body(x) + shortcut(x)          (N, C', H', W'): both branches must agree
//! ```
//!
//! ResNet then applies a ReLU to `y`: that is the next layer of the model (a
//! plain [`crate::Relu`], which the plan runs in place on the block's output).
//!
//! ## Backward
//!
//! The forward was `y = body(x) + shortcut(x)`. The derivative of a sum is
//! the sum of the derivatives, so `dL/dy` flows **unchanged into both
//! branches**:
//!
//! ```text
//! dL/dx = body'(x)^T dL/dy + shortcut'(x)^T dL/dy
//!       = body'(x)^T dL/dy + dL/dy                  (identity shortcut)
//! ```
//!
//! That second term is why deep ResNets train: however small the body's
//! gradient becomes, the identity path hands `dL/dy` down intact.
//!
//! ```
//! use convnet_tensor::model::residual::Residual;
//! use convnet_tensor::{Layer, Mode, Relu, Sequential};
//! use ndarray::{ArrayD, IxDyn};
//! // body = relu, identity shortcut: y = relu(x) + x
//! let mut body = Sequential::new(vec![1, 1, 3]).unwrap();
//! body.push(Box::new(Relu)).unwrap();
//! let mut block = Residual::new(body, None).unwrap();
//! let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 1, 3]), vec![-2.0f64, 0.5, 3.0]).unwrap();
//! let mut y = ArrayD::zeros(IxDyn(&[1, 1, 1, 3]));
//! block.forward(x.view(), y.view_mut(), Mode::Eval);
//! assert_eq!(y.as_slice().unwrap(), &[-2.0, 1.0, 6.0]);
//! // backward: dL/dx = relu'(x) dy + dy
//! let dy = ArrayD::from_elem(IxDyn(&[1, 1, 1, 3]), 1.0);
//! let mut dx = ArrayD::zeros(IxDyn(&[1, 1, 1, 3]));
//! block.backward(x.view(), y.view(), dy.view(), Some(dx.view_mut()));
//! assert_eq!(dx.as_slice().unwrap(), &[1.0, 2.0, 2.0]);
//! ```

use crate::element::Element;
use crate::error::{Result, TensorError};
use crate::layer::{slice, slice_mut, KinkRecorder, Layer, Mode, Param, ParamMut};
use crate::model::branches::{
    add_pair, add_pair_then, branch_mode, nested_buffers, nested_buffers_mut, nested_param_names, set_fused_all,
    sublayers_of, sublayers_of_mut,
};
use crate::model::sequential::Sequential;
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD};

/// A residual block; see the module docs.
#[derive(Debug)]
pub struct Residual<T: Element> {
    /// The main branch.
    body: Sequential<T>,
    /// The projection, or `None` for the identity.
    shortcut: Option<Sequential<T>>,
}

impl<T: Element> Residual<T> {
    /// `y = body(x) + shortcut(x)` (`None`: `+ x`). Both branches must take
    /// the same input and give the same output shape.
    pub fn new(body: Sequential<T>, shortcut: Option<Sequential<T>>) -> Result<Self> {
        let shortcut_shape = shortcut.as_ref().map_or(body.input_shape(), |s| s.output_shape());
        if let Some(shortcut) = &shortcut {
            if shortcut.input_shape() != body.input_shape() {
                return Err(TensorError::Config("a residual block's branches must take the same input".into()));
            }
        }
        if body.output_shape() != shortcut_shape {
            return Err(TensorError::Config(format!(
                "a residual block adds its branches, but the body gives {:?} and the shortcut {:?}{}",
                body.output_shape(),
                shortcut_shape,
                if shortcut.is_none() { " (identity; give it a projection)" } else { "" }
            )));
        }
        Ok(Residual { body, shortcut })
    }

    /// The main branch.
    pub fn body(&self) -> &Sequential<T> {
        &self.body
    }

    /// The projection shortcut, `None` for the identity.
    pub fn shortcut(&self) -> Option<&Sequential<T>> {
        self.shortcut.as_ref()
    }

    /// `("body", body)` and, with a projection, `("shortcut", shortcut)`: the
    /// prefixes of their tensors' names.
    fn named_branches(&self) -> impl Iterator<Item = (String, &Sequential<T>)> {
        let shortcut = self.shortcut.as_ref().map(|s| ("shortcut".to_string(), s));
        std::iter::once(("body".to_string(), &self.body)).chain(shortcut)
    }

    /// `y = body(x) + shortcut(x)`, or `body(x) + x`, in one pass over `y` (with
    /// `relu`, `max(y, 0)` in the same pass): each branch by its forward pass in
    /// `mode`, or by its own fused inference pass (`None`).
    fn add_branches(
        &mut self,
        input: ArrayViewD<'_, T>,
        mut output: ArrayViewMutD<'_, T>,
        mode: Option<Mode>,
        relu: bool,
    ) {
        fn run<'a, T: Element>(
            branch: &'a mut Sequential<T>,
            input: ArrayViewD<'_, T>,
            (mode, index): (Option<Mode>, usize),
        ) -> ArrayViewD<'a, T> {
            let y = match mode {
                Some(mode) => branch.forward(input, branch_mode(mode, index)),
                None => branch.predict(input),
            };
            y.expect("shapes checked when built")
        }
        let body = run(&mut self.body, input.view(), (mode, 0));
        match &mut self.shortcut {
            Some(shortcut) => {
                let projected = run(shortcut, input, (mode, 1));
                add_pair_then(slice_mut(&mut output), slice(&body), slice(&projected), relu);
            }
            None => add_pair_then(slice_mut(&mut output), slice(&body), slice(&input), relu),
        }
    }
}

impl<T: Element> Layer<T> for Residual<T> {
    fn kind(&self) -> &'static str {
        "residual"
    }

    fn describe(&self) -> String {
        let kinds = |model: &Sequential<T>| model.layers().iter().map(|l| l.kind()).collect::<Vec<_>>().join(" ");
        match &self.shortcut {
            Some(shortcut) => format!("[{}] + [{}]", kinds(&self.body), kinds(shortcut)),
            None => format!("[{}] + identity", kinds(&self.body)),
        }
    }

    fn output_shape(&self, input_shape: &[usize]) -> std::result::Result<Vec<usize>, String> {
        if input_shape != self.body.input_shape() {
            return Err(format!("was built for inputs {:?}, got {input_shape:?}", self.body.input_shape()));
        }
        Ok(self.body.output_shape().to_vec())
    }

    fn forward(&mut self, input: ArrayViewD<'_, T>, output: ArrayViewMutD<'_, T>, mode: Mode) {
        self.add_branches(input, output, Some(mode), false);
    }

    fn predict(&mut self, input: ArrayViewD<'_, T>, output: ArrayViewMutD<'_, T>) {
        self.add_branches(input, output, None, false);
    }

    fn folds_relu_in_predict(&self) -> bool {
        true
    }

    /// ResNet's ReLU after the block, in the pass that adds the branches.
    fn predict_relu(&mut self, input: ArrayViewD<'_, T>, output: ArrayViewMutD<'_, T>) {
        self.add_branches(input, output, None, true);
    }

    fn backward(
        &mut self,
        _input: ArrayViewD<'_, T>,
        _output: ArrayViewD<'_, T>,
        grad_output: ArrayViewD<'_, T>,
        grad_input: Option<ArrayViewMutD<'_, T>>,
    ) {
        // forward: y = body(x) + shortcut(x), so dL/dy goes unchanged into both branches
        let Some(mut grad_input) = grad_input else {
            self.body.backward(grad_output.view()).expect("after a forward");
            if let Some(shortcut) = &mut self.shortcut {
                shortcut.backward(grad_output).expect("after a forward");
            }
            return;
        };
        // dL/dx = body'(x)^T dy + shortcut'(x)^T dy, or + dy for the identity
        let through_body = self.body.backward_input_grad(grad_output.view()).expect("after a forward");
        match &mut self.shortcut {
            Some(shortcut) => {
                let through_shortcut = shortcut.backward_input_grad(grad_output).expect("after a forward");
                add_pair(slice_mut(&mut grad_input), slice(&through_body), slice(&through_shortcut));
            }
            None => add_pair(slice_mut(&mut grad_input), slice(&through_body), slice(&grad_output)),
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
        let shortcut = self.shortcut.iter().flat_map(|s| s.params());
        self.body.params().into_iter().chain(shortcut).collect()
    }

    fn params_mut(&mut self) -> Vec<ParamMut<'_, T>> {
        let shortcut = self.shortcut.iter_mut().flat_map(|s| s.params_mut());
        self.body.params_mut().into_iter().chain(shortcut).collect()
    }

    fn param_names(&self) -> Vec<String> {
        nested_param_names(self.named_branches())
    }

    fn buffers(&self) -> Vec<(String, &ArrayD<T>)> {
        nested_buffers(self.named_branches())
    }

    fn buffers_mut(&mut self) -> Vec<(String, &mut ArrayD<T>)> {
        let shortcut = self.shortcut.as_mut().map(|s| ("shortcut".to_string(), s));
        nested_buffers_mut(std::iter::once(("body".to_string(), &mut self.body)).chain(shortcut))
    }

    fn sublayers(&self) -> Vec<&dyn Layer<T>> {
        sublayers_of(std::iter::once(&self.body).chain(self.shortcut.as_ref()))
    }

    fn sublayers_mut(&mut self) -> Vec<&mut dyn Layer<T>> {
        sublayers_of_mut(std::iter::once(&mut self.body).chain(self.shortcut.as_mut()))
    }

    fn buffer_bytes(&self, batch: usize) -> u64 {
        self.body.buffer_bytes(batch) + self.shortcut.as_ref().map_or(0, |s| s.buffer_bytes(batch))
    }

    fn set_fused(&mut self, fuse: bool) {
        set_fused_all(std::iter::once(&mut self.body).chain(self.shortcut.as_mut()), fuse);
    }

    fn set_batch_sync(&mut self, sync: Option<std::sync::Arc<dyn crate::batch_sync::BatchSync>>) {
        if let Some(shortcut) = &mut self.shortcut {
            shortcut.set_batch_sync(sync.clone());
        }
        self.body.set_batch_sync(sync);
    }

    fn set_gradient_leaves(&mut self, leaves: usize) {
        self.body.set_gradient_leaves(leaves);
        if let Some(shortcut) = &mut self.shortcut {
            shortcut.set_gradient_leaves(leaves);
        }
    }

    fn continues_leaves(&self) -> bool {
        self.body.continues_leaves() && self.shortcut.as_ref().is_none_or(|shortcut| shortcut.continues_leaves())
    }

    fn set_leaf_part(&mut self, part: crate::gradient_tree::LeafPart) {
        self.body.set_leaf_part(part);
        if let Some(shortcut) = &mut self.shortcut {
            shortcut.set_leaf_part(part);
        }
    }

    fn record_kinks(&self, _input: ArrayViewD<'_, T>, recorder: &mut KinkRecorder) {
        self.body.record_kinks(recorder);
        if let Some(shortcut) = &self.shortcut {
            shortcut.record_kinks(recorder);
        }
    }

    fn forward_flops(&self, _input_shape: &[usize]) -> u64 {
        let shortcut = self.shortcut.as_ref().map_or(0, |s| s.forward_flops());
        self.body.forward_flops() + shortcut + self.body.output_shape().iter().product::<usize>() as u64
    }
}
