//! The layer contract: what every layer, built-in or your own, implements.
//!
//! A layer is a function `y = f(x; params)` on a batch. The model container
//! owns the activation buffers and hands each layer views of them:
//!
//! - [`Layer::forward`] reads `input` `(N, ...in_shape)` and overwrites `output`
//!   `(N, ...out_shape)`, where `out_shape = output_shape(in_shape)`.
//! - [`Layer::backward`] receives the same `input` and `output` again plus
//!   `grad_output = dL/dy` and must
//!   1. *overwrite* (not accumulate) every parameter gradient with `dL/dparam`
//!      for this batch, and
//!   2. if `grad_input` is `Some`, overwrite it with `dL/dx`.
//!
//! Overwriting instead of accumulating means there is no `zero_grad` to forget.
//! `grad_input` is `None` for the first layer of a model, whose input gradient
//! nobody needs (for the first convolution that saves a whole GEMM and col2im).
//!
//! Views are always in standard (row-major, contiguous) layout when they come
//! from [`crate::Sequential`] or [`crate::gradcheck`]; a layer may rely on that.
//!
//! ## Kinks
//!
//! Piecewise-linear layers (ReLU, max-pooling) make discrete decisions: which
//! inputs are positive, which element of a window wins. A numerical gradient is
//! only meaningful if a small perturbation does not change those decisions.
//! [`Layer::record_kinks`] reports the decisions of the last forward pass so that
//! [`crate::gradcheck`] can notice when `f(x+h)` and `f(x-h)` took different
//! branches and skip that element instead of reporting a false failure.

use crate::element::Element;
use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD};

/// Whether a forward pass is for training or for evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Training: stochastic layers (dropout) are active. `seed` identifies the
    /// step; layers derive every random draw from it, so the same seed gives the
    /// same masks regardless of threads.
    Train {
        /// Seed of this step (the model mixes in the layer index).
        seed: u64,
        /// Position in the whole batch of this pass's first image: a process
        /// given images 8..16 of a batch passes 8, so image `n` draws the mask
        /// of image `8 + n` and the masks do not depend on how the batch is shared.
        first_image: usize,
    },
    /// Evaluation / inference: dropout is the identity.
    Eval,
}

impl Mode {
    /// Training with step seed `seed`, the pass holding the whole batch.
    pub fn train(seed: u64) -> Mode {
        Mode::Train { seed, first_image: 0 }
    }
}

/// A read-only view of one parameter and its gradient.
#[derive(Debug)]
pub struct Param<'a, T> {
    /// `"weight"` or `"bias"`.
    pub name: &'static str,
    /// The parameter.
    pub value: &'a ArrayD<T>,
    /// Its gradient from the last backward pass.
    pub grad: &'a ArrayD<T>,
}

/// A mutable view of one parameter and its gradient.
#[derive(Debug)]
pub struct ParamMut<'a, T> {
    /// `"weight"` or `"bias"`.
    pub name: &'static str,
    /// The parameter.
    pub value: &'a mut ArrayD<T>,
    /// Its gradient from the last backward pass.
    pub grad: &'a mut ArrayD<T>,
}

/// Collects the discrete decisions a forward pass made (see the module docs).
/// Two forward passes took the same branches iff they record the same sequence.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KinkRecorder {
    hash: u64,
    count: u64,
}

impl KinkRecorder {
    /// Records one decision (a sign, an arg-max index, ...).
    pub fn record(&mut self, decision: u64) {
        self.hash = crate::rng::mix(self.hash ^ crate::rng::mix(decision.wrapping_add(self.count)));
        self.count += 1;
    }

    /// A fingerprint of everything recorded so far.
    pub fn fingerprint(&self) -> (u64, u64) {
        (self.hash, self.count)
    }
}

/// A layer with a hand-written forward and backward pass. See the module docs
/// for the exact contract.
pub trait Layer<T: Element>: Send + Sync {
    /// The layer's kind, e.g. `"conv2d"`.
    fn kind(&self) -> &'static str;

    /// The per-sample output shape for a per-sample input shape (without the
    /// batch dimension), or a message saying why the layer cannot take it.
    fn output_shape(&self, input_shape: &[usize]) -> Result<Vec<usize>, String>;

    /// Called by the model once, when the layer is placed after layers whose
    /// per-sample output is `input_shape` (already accepted by
    /// [`Layer::output_shape`]): a layer settles its shape-dependent choices
    /// here (a convolution resolves [`crate::ConvAlgo::Auto`]). Default: nothing.
    fn set_input_shape(&mut self, input_shape: &[usize]) {
        let _ = input_shape;
    }

    /// `output := f(input)`. Shapes: `input` is `(N, ...in_shape)`, `output`
    /// is `(N, ...output_shape(in_shape))`.
    fn forward(&mut self, input: ArrayViewD<'_, T>, output: ArrayViewMutD<'_, T>, mode: Mode);

    /// Inference ([`crate::Sequential::predict`]): the output of
    /// `forward(input, output, Mode::Eval)` bit for bit, and no backward pass
    /// follows, so a layer may skip what only backward would read (a block
    /// runs its branches' own `predict`, which fuse more). Default: that forward.
    fn predict(&mut self, input: ArrayViewD<'_, T>, output: ArrayViewMutD<'_, T>) {
        self.forward(input, output, Mode::Eval);
    }

    /// Whether [`Layer::predict_relu`] folds a following ReLU into the layer's
    /// own last pass over its output (a residual block: into its addition), so
    /// that inference's plan gives it that ReLU
    /// ([`crate::model::plan::ForwardStep::PredictRelu`]). Default: `false`.
    fn folds_relu_in_predict(&self) -> bool {
        false
    }

    /// `output = max(predict(input), 0)`: inference and the ReLU after it.
    /// Default: the two one after the other; a layer that says
    /// [`Layer::folds_relu_in_predict`] does it in one pass, with the same bits.
    fn predict_relu(&mut self, input: ArrayViewD<'_, T>, mut output: ArrayViewMutD<'_, T>) {
        self.predict(input, output.view_mut());
        output.mapv_inplace(|v| if v > T::zero() { v } else { T::zero() });
    }

    /// Overwrites the parameter gradients and, if asked, `grad_input` (same shape
    /// as `input`) from `grad_output` (same shape as `output`). `input` and
    /// `output` are those of the most recent forward pass.
    fn backward(
        &mut self,
        input: ArrayViewD<'_, T>,
        output: ArrayViewD<'_, T>,
        grad_output: ArrayViewD<'_, T>,
        grad_input: Option<ArrayViewMutD<'_, T>>,
    );

    /// The parameters with their gradients, in a fixed order (weight, then bias).
    fn params(&self) -> Vec<Param<'_, T>> {
        Vec::new()
    }

    /// Mutable access to the parameters and gradients, same order as [`Layer::params`].
    fn params_mut(&mut self) -> Vec<ParamMut<'_, T>> {
        Vec::new()
    }

    /// The names of [`Layer::params`], in their order: `"weight"`, `"bias"`;
    /// a block prefixes the path inside it (`"body.0.weight"`).
    fn param_names(&self) -> Vec<String> {
        self.params().iter().map(|p| p.name.to_string()).collect()
    }

    /// State that is not trained but saved with the model, in a fixed order
    /// (BatchNorm's running statistics): `(name, tensor)`.
    fn buffers(&self) -> Vec<(String, &ArrayD<T>)> {
        Vec::new()
    }

    /// Mutable access to the buffers, same order as [`Layer::buffers`].
    fn buffers_mut(&mut self) -> Vec<(String, &mut ArrayD<T>)> {
        Vec::new()
    }

    /// The layers inside a block (a residual or concatenating block), at
    /// every depth, in order; empty for a plain layer. The model reaches its
    /// convolutions through it (to set how they compute).
    fn sublayers(&self) -> Vec<&dyn Layer<T>> {
        Vec::new()
    }

    /// Mutable [`Layer::sublayers`].
    fn sublayers_mut(&mut self) -> Vec<&mut dyn Layer<T>> {
        Vec::new()
    }

    /// Bytes a layer holds for a batch of `batch` beyond the activations the
    /// model keeps between layers: a block's branch models (their own
    /// activation and gradient buffers), a convolution's per-image weight
    /// gradients. Default 0.
    fn buffer_bytes(&self, _batch: usize) -> u64 {
        0
    }

    /// How a layer that needs the whole batch's statistics (BatchNorm) reaches
    /// the other processes sharing the batch ([`crate::batch_sync`]); `None`:
    /// this process holds the whole batch. Blocks pass it on; other layers
    /// ignore it.
    fn set_batch_sync(&mut self, _sync: Option<std::sync::Arc<dyn crate::batch_sync::BatchSync>>) {}

    /// A block passes the model's fused or unfused choice
    /// ([`crate::Sequential::set_fused`]) on to the models inside it. Plain
    /// layers ignore it.
    fn set_fused(&mut self, _fuse: bool) {}

    /// Whether `backward` reads `output`. The model's plan may overwrite the
    /// output of a layer that does not need it with the next layer's output (an
    /// in-place ReLU), so the default is the safe answer, `true`.
    fn backward_needs_output(&self) -> bool {
        true
    }

    /// The layer as [`std::any::Any`], for the model's plan: it lets
    /// [`crate::model::plan`] recognise the built-in layers whose fast paths it
    /// fuses (a convolution followed by a ReLU, a ReLU followed by a max-pool).
    /// A layer of your own can leave the default; it then always runs through
    /// its plain [`Layer::forward`] and [`Layer::backward`].
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }

    /// The layer as [`std::any::Any`], read-only (see [`Layer::as_any_mut`]).
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// Records the discrete decisions of the most recent forward pass (see the
    /// module docs). Smooth layers record nothing.
    fn record_kinks(&self, _input: ArrayViewD<'_, T>, _recorder: &mut KinkRecorder) {}

    /// Multiply-adds per sample of the forward pass, times two (FLOPs), for an
    /// input of `input_shape`. Used by summaries and benchmarks.
    fn forward_flops(&self, _input_shape: &[usize]) -> u64 {
        0
    }

    /// A short description of the options, e.g. `"32 filters, 3x3, stride 1, valid"`.
    fn describe(&self) -> String {
        String::new()
    }

    /// Sum parameter gradients over the batch as a balanced tree of `leaves`
    /// equal runs of images ([`crate::gradient_tree`]), so that processes
    /// sharing a batch reproduce one process's bits. Layers without parameters
    /// ignore it; a layer of yours that sums over the batch in another order is
    /// still correct, only not bit-identical across process counts.
    fn set_gradient_leaves(&mut self, _leaves: usize) {}

    /// Whether the layer continues a gradient leaf's sums over several backward
    /// passes ([`Layer::set_leaf_part`]). Micro-batches smaller than a leaf
    /// give the bits of whole batches only when every layer does; otherwise
    /// their passes' gradients are added after each pass (the same gradient up
    /// to rounding). Default: a layer without parameters (nothing to sum).
    fn continues_leaves(&self) -> bool {
        self.params().is_empty()
    }

    /// The next backward passes are parts of one gradient leaf (see
    /// [`crate::gradient_tree::LeafPart`]); [`crate::gradient_tree::LeafPart::WHOLE`]
    /// ends that. Only layers that [`Layer::continues_leaves`] act on it.
    fn set_leaf_part(&mut self, _part: crate::gradient_tree::LeafPart) {}
}

/// A weight, a bias and their gradients: the parameters of [`crate::Conv2d`]
/// and [`crate::Dense`], and their plumbing, written once.
#[derive(Debug)]
pub struct WeightAndBias<T> {
    /// The weight (`(OC, C, KH, KW)` for a convolution, `(out, in)` for dense).
    pub weight: ArrayD<T>,
    /// The bias `(out,)`.
    pub bias: ArrayD<T>,
    /// `dL/dweight` from the last backward pass.
    pub grad_weight: ArrayD<T>,
    /// `dL/dbias` from the last backward pass.
    pub grad_bias: ArrayD<T>,
    /// Whether the bias is a parameter. Without one (PyTorch's `bias=False`,
    /// the convolutions before a BatchNorm, whose shift would cancel a bias)
    /// the bias stays zero: the kernels still add it, the optimizer never
    /// sees it, and it is neither saved nor counted.
    pub has_bias: bool,
}

impl<T: Element> WeightAndBias<T> {
    /// The weight and, if it is a parameter, the bias, both mutable (for an
    /// [`crate::init::Init`] to fill).
    pub fn parameters_mut(&mut self) -> (&mut ArrayD<T>, Option<&mut ArrayD<T>>) {
        (&mut self.weight, self.has_bias.then_some(&mut self.bias))
    }

    /// Zero weight of `weight_shape`, zero bias of `outputs`, zero gradients.
    pub fn zeros(weight_shape: &[usize], outputs: usize) -> Self {
        WeightAndBias {
            weight: zeros(weight_shape),
            bias: zeros(&[outputs]),
            grad_weight: zeros(weight_shape),
            grad_bias: zeros(&[outputs]),
            has_bias: true,
        }
    }

    /// `[weight, bias]` (or `[weight]` without a bias) with their gradients,
    /// for [`Layer::params`].
    pub fn params(&self) -> Vec<Param<'_, T>> {
        let mut params = vec![Param { name: "weight", value: &self.weight, grad: &self.grad_weight }];
        if self.has_bias {
            params.push(Param { name: "bias", value: &self.bias, grad: &self.grad_bias });
        }
        params
    }

    /// [`WeightAndBias::params`] mutably, for [`Layer::params_mut`].
    pub fn params_mut(&mut self) -> Vec<ParamMut<'_, T>> {
        let mut params = vec![ParamMut { name: "weight", value: &mut self.weight, grad: &mut self.grad_weight }];
        if self.has_bias {
            params.push(ParamMut { name: "bias", value: &mut self.bias, grad: &mut self.grad_bias });
        }
        params
    }
}

/// Returns the contiguous slice of a view in standard layout.
///
/// # Panics
/// If the view is not contiguous and row-major: the layer contract guarantees it
/// is, so this is a bug in the caller.
pub(crate) fn slice<'a, T>(view: &'a ArrayViewD<'_, T>) -> &'a [T] {
    view.as_slice().expect("layer input must be contiguous and row-major")
}

/// Mutable twin of [`slice`].
pub(crate) fn slice_mut<'a, T>(view: &'a mut ArrayViewMutD<'_, T>) -> &'a mut [T] {
    view.as_slice_mut().expect("layer output must be contiguous and row-major")
}

/// Shape check helper for layers: the per-sample shape must have `rank` axes.
pub(crate) fn expect_rank(input_shape: &[usize], rank: usize, what: &str) -> Result<(), String> {
    if input_shape.len() == rank {
        Ok(())
    } else {
        Err(format!("expects {what} input, got shape {input_shape:?}"))
    }
}

/// Zero-initialised parameter tensor.
pub(crate) fn zeros<T: Element>(shape: &[usize]) -> ArrayD<T> {
    ArrayD::zeros(ndarray::IxDyn(shape))
}
