//! The [`Sequential`] model: an ordered list of layers and the buffers between
//! them.
//!
//! ## Buffers
//!
//! For `L` layers the model holds `L + 1` activations: activation 0 is a copy of
//! the batch (in [`Sequential::predict`], the batch itself where it lies, when
//! only the first layer reads it), activation `i + 1` the output of layer `i`, of shape
//! `(N, ...shapes[i + 1])`. Which of them share a buffer, and which layers fuse,
//! is the [`Plan`]'s decision (see [`crate::model::plan`]): by default a ReLU
//! runs in place, a convolution applies the ReLU after it, and a max-pool does
//! the backward of the ReLU before it. [`Sequential::set_fused`]`(false)` runs
//! every layer alone through its plain forward and backward, each activation in
//! its own buffer: the readable path, and the one the fused run is tested
//! against. Backward needs only two gradient buffers, used
//! in turn: layer `i` reads `dL/d(output of i)` from one and writes
//! `dL/d(input of i)` into the other. Buffers grow on the first batch and are
//! reused afterwards (a smaller last batch uses a prefix), so a training loop
//! allocates nothing per step.
//!
//! ## A training step
//!
//! ```
//! use convnet_tensor::{Mode, ModelSpec, SoftmaxCrossEntropy};
//! use convnet_tensor::ndarray::{ArrayD, IxDyn};
//! let mut model = ModelSpec::small().build::<f32>(&[1, 28, 28], 10, 7).unwrap();
//! let images = ArrayD::<f32>::zeros(IxDyn(&[4, 1, 28, 28]));
//! let labels = [0, 1, 2, 3];
//! let mut loss_fn = SoftmaxCrossEntropy::new();
//! let logits = model.forward(images.view(), Mode::train(1)).unwrap();
//! let loss = loss_fn.forward(logits, &labels).unwrap();
//! assert!((loss - 10f32.ln()).abs() < 0.1); // ~ln(classes) at initialisation
//! model.backward(loss_fn.grad_logits().view()).unwrap();
//! // ... then an optimizer step over model.params_mut()
//! ```

use crate::element::Element;
use crate::error::{Result, TensorError};
use crate::layer::{KinkRecorder, Layer, Mode, Param, ParamMut};
use crate::layers::conv_algo::{ConvAlgo, ConvAlgoSpec, ConvAlgos};
use crate::layers::{BatchNorm, Conv2d, MaxPool2d, Relu};
use crate::model::activations::{downcast, ensure_len, lend, view, view_mut};
use crate::model::plan::{BackwardStep, ForwardStep, Plan};
use ndarray::{ArrayD, ArrayViewD};

/// Largest activation one layer may produce per sample (2^28 elements, 1 GB
/// of f32).
pub const MAX_SAMPLE_ELEMENTS: usize = 1 << 28;

/// An ordered list of layers, each feeding the next.
pub struct Sequential<T: Element> {
    layers: Vec<Box<dyn Layer<T>>>,
    /// `shapes[i]`: per-sample input shape of layer `i`; `shapes[L]`: the output.
    shapes: Vec<Vec<usize>>,
    /// Activation storage; activation `i` (`(N, ...shapes[i])`) lives in
    /// `activations[plan.storage[i]]`. See the module docs.
    activations: Vec<Vec<T>>,
    /// Whether the plan fuses (the default) or runs every layer alone.
    fuse: bool,
    /// Which layers fuse and which buffers are shared, remade on every change.
    plan: Plan,
    /// The forward steps of the last pass (training's, or inference's).
    last_forward: Vec<ForwardStep>,
    /// The two gradient buffers used in turn by backward.
    grad_buffers: [Vec<T>; 2],
    /// Batch size of the last forward pass (0 before the first).
    batch: usize,
    /// Per-layer (forward, backward) time of the last pass, when profiling.
    timings: Option<Vec<[std::time::Duration; 2]>>,
    /// Layers `0..frozen` are frozen (fine-tuning): evaluated in [`Mode::Eval`]
    /// even in training, and left out of the backward pass and of
    /// [`Sequential::trainable_params_mut`].
    frozen: usize,
}

impl<T: Element> std::fmt::Debug for Sequential<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequential")
            .field("layers", &self.layers.iter().map(|l| l.kind()).collect::<Vec<_>>())
            .field("shapes", &self.shapes)
            .finish()
    }
}

/// The convolutions of `layer`: itself, or those inside it (a block).
fn convolutions<T: Element>(layer: &dyn Layer<T>) -> Vec<&Conv2d<T>> {
    let all = std::iter::once(layer).chain(layer.sublayers());
    all.filter_map(|l| l.as_any()?.downcast_ref::<Conv2d<T>>()).collect()
}

/// Mutable [`convolutions`].
fn convolutions_mut<T: Element>(layer: &mut dyn Layer<T>) -> Vec<&mut Conv2d<T>> {
    if layer.as_any().is_some_and(|any| any.is::<Conv2d<T>>()) {
        return vec![layer.as_any_mut().and_then(|any| any.downcast_mut::<Conv2d<T>>()).expect("checked")];
    }
    let inside = layer.sublayers_mut().into_iter();
    inside.filter_map(|l| l.as_any_mut()?.downcast_mut::<Conv2d<T>>()).collect()
}

impl<T: Element> Sequential<T> {
    /// An empty model for per-sample inputs of `input_shape`, e.g. `[3, 224, 224]`.
    pub fn new(input_shape: Vec<usize>) -> Result<Self> {
        let elements = input_shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        if input_shape.is_empty() || input_shape.contains(&0) || elements.is_none_or(|n| n > MAX_SAMPLE_ELEMENTS) {
            return Err(TensorError::Config(format!(
                "input shape must be non-empty, positive and at most {MAX_SAMPLE_ELEMENTS} elements, got {input_shape:?}"
            )));
        }
        Ok(Sequential {
            layers: Vec::new(),
            shapes: vec![input_shape],
            activations: vec![Vec::new()],
            fuse: true,
            plan: Plan { storage: vec![0], buffers: 1, forward: Vec::new(), backward: Vec::new() },
            last_forward: Vec::new(),
            grad_buffers: [Vec::new(), Vec::new()],
            batch: 0,
            timings: None,
            frozen: 0,
        })
    }

    /// Appends a layer, checking that it accepts the current output shape.
    pub fn push(&mut self, mut layer: Box<dyn Layer<T>>) -> Result<()> {
        let index = self.layers.len();
        let output = layer.output_shape(self.output_shape()).map_err(|message| TensorError::Shape {
            index,
            kind: layer.kind().into(),
            message,
        })?;
        let elements = output.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        if elements.is_none_or(|n| n > MAX_SAMPLE_ELEMENTS) {
            return Err(TensorError::Shape {
                index,
                kind: layer.kind().into(),
                message: format!("produces {output:?} per sample, more than {MAX_SAMPLE_ELEMENTS} elements"),
            });
        }
        if output.is_empty() || output.contains(&0) {
            return Err(TensorError::Shape {
                index,
                kind: layer.kind().into(),
                message: format!("produces an empty output {output:?}"),
            });
        }
        layer.set_input_shape(self.output_shape());
        self.layers.push(layer);
        if let Some(timings) = self.timings.as_mut() {
            timings.push([std::time::Duration::ZERO; 2]);
        }
        self.replan();
        self.shapes.push(output);
        Ok(())
    }

    /// Fused (the default, fast) or every layer alone through its plain
    /// forward and backward (the readable path): see the module docs. The
    /// results agree to rounding; the tests hold them to it.
    pub fn set_fused(&mut self, fuse: bool) {
        self.fuse = fuse;
        for layer in &mut self.layers {
            layer.set_fused(fuse);
        }
        self.replan();
    }

    /// Sum every layer's parameter gradients over the batch as a tree of
    /// `leaves` leaves (see [`crate::kernels::reduce`]): a process given a
    /// block of a batch's leaves then computes exactly its subtree.
    pub fn set_gradient_leaves(&mut self, leaves: usize) {
        for layer in &mut self.layers {
            layer.set_gradient_leaves(leaves);
        }
    }

    /// Whether every layer continues a gradient leaf's sums over several
    /// backward passes ([`Layer::continues_leaves`]).
    pub fn continues_leaves(&self) -> bool {
        self.layers.iter().all(|layer| layer.continues_leaves())
    }

    /// The next backward passes are parts of one gradient leaf
    /// ([`crate::gradient_tree::LeafPart`]; `WHOLE` ends that), for every layer.
    pub fn set_leaf_part(&mut self, part: crate::gradient_tree::LeafPart) {
        for layer in &mut self.layers {
            layer.set_leaf_part(part);
        }
    }

    /// Shares BatchNorm's batch statistics with the other processes training
    /// on the same batches ([`crate::batch_sync`]); `None` (the default): this
    /// process holds whole batches.
    pub fn set_batch_sync(&mut self, sync: Option<std::sync::Arc<dyn crate::batch_sync::BatchSync>>) {
        for layer in &mut self.layers {
            layer.set_batch_sync(sync.clone());
        }
    }

    /// How every pass of every convolution is computed ([`ConvAlgo`]; default
    /// `Auto`). Each layer resolves it for its own kernel, channels and width
    /// ([`Conv2d::resolved_algos`]).
    pub fn set_conv_algo(&mut self, algo: ConvAlgo) {
        for layer in &mut self.layers {
            for conv in convolutions_mut(layer.as_mut()) {
                conv.set_algo(algo);
            }
        }
    }

    /// How each pass of each convolution is computed, by layer number
    /// ([`ConvAlgoSpec`], the text of `--conv-algo`; a block's number stands
    /// for every convolution inside it). Fails, changing nothing, when a rule
    /// names a layer that holds no convolution.
    pub fn set_conv_algos(&mut self, spec: &ConvAlgoSpec) -> Result<()> {
        for layer in spec.named_layers() {
            let has_conv = self.layers.get(layer).is_some_and(|l| !convolutions(l.as_ref()).is_empty());
            if !has_conv {
                let what = match self.layers.get(layer) {
                    Some(l) => format!("layer {layer} is {}, not a convolution", l.kind()),
                    None => format!("there is no layer {layer} (the model has {})", self.layers.len()),
                };
                return Err(TensorError::Config(format!(
                    "conv-algo \"{spec}\": {what} (`convnet summary` numbers the layers)"
                )));
            }
        }
        for (number, layer) in self.layers.iter_mut().enumerate() {
            for conv in convolutions_mut(layer.as_mut()) {
                conv.set_algos(spec.algos_for(number));
            }
        }
        Ok(())
    }

    /// Each convolution's layer number (a block's number for those inside it)
    /// and the methods that run for it.
    pub fn conv_algos(&self) -> Vec<(usize, ConvAlgos)> {
        let per_layer = self.layers.iter().enumerate();
        per_layer
            .flat_map(|(number, layer)| {
                convolutions(layer.as_ref()).into_iter().map(move |conv| (number, conv.resolved_algos()))
            })
            .collect()
    }

    /// The plan in use: which layers fuse, which activations share a buffer.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    fn replan(&mut self) {
        self.plan = if self.fuse { Plan::fused(&self.layers) } else { Plan::unfused(&self.layers) };
        self.last_forward.clear();
        self.activations.resize_with(self.plan.buffers, Vec::new);
    }

    /// Per-sample input shape.
    pub fn input_shape(&self) -> &[usize] {
        &self.shapes[0]
    }

    /// Per-sample output shape.
    pub fn output_shape(&self) -> &[usize] {
        self.shapes.last().expect("at least the input shape")
    }

    /// Per-sample shapes: `shapes()[i]` is the input of layer `i`, the last one the output.
    pub fn shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }

    /// The layers.
    pub fn layers(&self) -> &[Box<dyn Layer<T>>] {
        &self.layers
    }

    /// The layers, taken out of the model.
    pub fn into_layers(self) -> Vec<Box<dyn Layer<T>>> {
        self.layers
    }

    /// The layers, mutably.
    pub fn layers_mut(&mut self) -> &mut [Box<dyn Layer<T>>] {
        &mut self.layers
    }

    /// Total number of parameters.
    pub fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.value.len()).sum()
    }

    /// Forward FLOPs per sample (2 per multiply-add).
    pub fn forward_flops(&self) -> u64 {
        self.layers.iter().zip(&self.shapes).map(|(layer, shape)| layer.forward_flops(shape)).sum()
    }

    /// FLOPs per sample of each layer's forward and backward pass
    /// `(forward, backward)`: a layer with parameters does two GEMMs of its
    /// forward's size backward (the weight gradient and the input gradient),
    /// the first layer only the first (nobody needs its input gradient); the
    /// others' passes are memory-bound and counted as 0.
    pub fn layer_flops(&self) -> Vec<(u64, u64)> {
        self.layers
            .iter()
            .enumerate()
            .map(|(i, layer)| {
                let forward = layer.forward_flops(&self.shapes[i]);
                let has_params = !layer.params().is_empty();
                let backward = if has_params { forward + if i == 0 { 0 } else { forward } } else { 0 };
                (forward, backward)
            })
            .collect()
    }

    /// Bytes of the activation and gradient buffers for a batch of `batch` (what
    /// forward and backward allocate on their first call): every activation
    /// buffer of the plan, sized for the largest activation it holds, plus the
    /// two gradient buffers, each as large as the largest activation, plus
    /// the same inside every block ([`Layer::buffer_bytes`]). The layers' own
    /// workspaces (column tiles, packed weights) come on top.
    pub fn buffer_bytes(&self, batch: usize) -> u64 {
        let mut buffers = vec![0u64; self.plan.buffers];
        let mut largest = 0u64;
        for (i, shape) in self.shapes.iter().enumerate() {
            let elements = shape.iter().product::<usize>() as u64;
            let slot = &mut buffers[self.plan.storage[i]];
            *slot = (*slot).max(elements);
            largest = largest.max(elements);
        }
        let elements = buffers.iter().sum::<u64>() + 2 * largest;
        let inside_blocks: u64 = self.layers.iter().map(|layer| layer.buffer_bytes(batch)).sum();
        elements.saturating_mul(batch as u64).saturating_mul(std::mem::size_of::<T>() as u64) + inside_blocks
    }

    /// Runs the batch `input` `(N, ...input_shape)` through every layer and
    /// returns the output `(N, ...output_shape)`, which stays valid until the next
    /// forward. In [`Mode::Train`], layer `i` gets the seed `derive(seed, i)`.
    pub fn forward(&mut self, input: ArrayViewD<'_, T>, mode: Mode) -> Result<ArrayViewD<'_, T>> {
        self.last_forward.clone_from(&self.plan.forward);
        self.run_forward(input, mode, false)
    }

    /// Inference: the output of [`Sequential::forward`] in [`Mode::Eval`], bit
    /// for bit, with more layers fused ([`Plan::inference_forward`]: a
    /// convolution, its ReLU and the max-pools after it in one pass; a
    /// convolution and the batchnorm and ReLU after it; blocks' branches by
    /// their own `predict`). Some
    /// intermediate activations are then never written: to read them
    /// ([`Sequential::layer_output`]) or to backpropagate, use `forward`.
    pub fn predict(&mut self, input: ArrayViewD<'_, T>) -> Result<ArrayViewD<'_, T>> {
        match self.fuse {
            true => self.plan.inference_forward(&self.layers, &self.shapes, &mut self.last_forward),
            false => self.last_forward.clone_from(&self.plan.forward),
        }
        self.run_forward(input, Mode::Eval, self.fuse)
    }

    /// A forward pass by the steps in `last_forward` (one per layer); with
    /// `inference`, the layers that run alone run their [`Layer::predict`].
    fn run_forward(&mut self, input: ArrayViewD<'_, T>, mode: Mode, inference: bool) -> Result<ArrayViewD<'_, T>> {
        let (batch, sample_shape) =
            input.shape().split_first().ok_or_else(|| TensorError::Mismatch("empty input shape".into()))?;
        if sample_shape != self.shapes[0].as_slice() {
            return Err(TensorError::Mismatch(format!(
                "the model expects inputs of shape (N, {}), got {:?}",
                self.shapes[0].iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
                input.shape()
            )));
        }
        let batch = *batch;
        self.batch = batch;
        // inference reads the batch where it lies when only the first layer reads it (not in place;
        // a model without layers outputs its input, which must then be in its buffer)
        let first_reads_only = self.plan.storage.get(1).is_some_and(|&next| next != self.plan.storage[0]);
        let borrowed = input.as_slice().filter(|_| inference && first_reads_only);
        let mut written = self.plan.written_buffers(&self.last_forward);
        written[self.plan.storage[0]] = borrowed.is_none();
        for (i, shape) in self.shapes.iter().enumerate().filter(|&(i, _)| written[self.plan.storage[i]]) {
            ensure_len(&mut self.activations[self.plan.storage[i]], batch * shape.iter().product::<usize>());
        }
        let first = &mut self.activations[self.plan.storage[0]];
        match (borrowed, input.as_slice()) {
            (Some(_), _) => {}
            (None, Some(values)) => first[..values.len()].copy_from_slice(values),
            (None, None) => first.iter_mut().zip(input.iter()).for_each(|(dst, &src)| *dst = src),
        }
        for i in 0..self.layers.len() {
            let external = borrowed.filter(|_| i == 0);
            let layer = &mut self.layers[i];
            let layer_mode = match mode {
                // a frozen layer computes as in inference: batchnorm with its running statistics, no dropout
                Mode::Train { .. } if i < self.frozen => Mode::Eval,
                Mode::Train { seed, first_image } => {
                    Mode::Train { seed: crate::rng::derive(seed, i as u64), first_image }
                }
                Mode::Eval => Mode::Eval,
            };
            let started = self.timings.is_some().then(std::time::Instant::now);
            let (source, target) = (self.plan.storage[i], self.plan.storage[i + 1]);
            let (input_shape, output_shape) = (&self.shapes[i], &self.shapes[i + 1]);
            match self.last_forward[i] {
                ForwardStep::DoneByPrevious => {}
                step @ (ForwardStep::ConvReluMaxpool { .. }
                | ForwardStep::ConvIntoConvReluMaxpool { .. }
                | ForwardStep::ConvBatchnorm { .. }
                | ForwardStep::ConvBatchnormMaxpool { .. }) => self.run_fused_convolution(i, step, external),
                ForwardStep::PredictRelu => {
                    let (input, output) = lend(&mut self.activations, source, target, external);
                    layer.predict_relu(view(input, batch, input_shape), view_mut(output, batch, output_shape));
                }
                ForwardStep::MaxpoolValues => {
                    let (input, output) = lend(&mut self.activations, source, target, external);
                    let (input, output) = (view(input, batch, input_shape), view_mut(output, batch, output_shape));
                    downcast::<MaxPool2d, T>(layer).forward_values(input, output);
                }
                ForwardStep::ReluInPlace => {
                    let relu = downcast::<Relu, T>(layer);
                    relu.forward_in_place(view_mut(&mut self.activations[target], batch, output_shape));
                }
                step @ (ForwardStep::Plain | ForwardStep::ConvThenRelu) => {
                    let (input, output) = lend(&mut self.activations, source, target, external);
                    let (input, output) = (view(input, batch, input_shape), view_mut(output, batch, output_shape));
                    if step == ForwardStep::ConvThenRelu {
                        downcast::<Conv2d<T>, T>(layer).forward_fused_relu(input, output, true);
                    } else if inference {
                        layer.predict(input, output);
                    } else {
                        layer.forward(input, output, layer_mode);
                    }
                }
            }
            if let (Some(timings), Some(started)) = (self.timings.as_mut(), started) {
                timings[i][0] = started.elapsed();
            }
        }
        Ok(self.output())
    }

    /// Inference's step `step` of layer `i`, a convolution fused with the layers
    /// after it ([`ForwardStep`]), from activation `i` (or the caller's batch,
    /// `external`) into activation `through + 1`.
    fn run_fused_convolution(&mut self, i: usize, step: ForwardStep, external: Option<&[T]>) {
        let through = step.through().expect("a fused convolution ends past its own layer");
        let (source, target) = (self.plan.storage[i], self.plan.storage[through + 1]);
        let (input, output) = lend(&mut self.activations, source, target, external);
        let (input, output) =
            (view(input, self.batch, &self.shapes[i]), view_mut(output, self.batch, &self.shapes[through + 1]));
        match step {
            ForwardStep::ConvReluMaxpool { pool, .. } => {
                downcast::<Conv2d<T>, T>(&mut self.layers[i]).forward_relu_maxpool(input, output, pool)
            }
            ForwardStep::ConvIntoConvReluMaxpool { next, pool, .. } => {
                let (head, tail) = self.layers.split_at_mut(next);
                let second = downcast::<Conv2d<T>, T>(&mut tail[0]);
                downcast::<Conv2d<T>, T>(&mut head[i]).forward_into_relu_maxpool(second, input, output, pool);
            }
            ForwardStep::ConvBatchnorm { relu, .. } => {
                let affine = downcast::<BatchNorm<T>, T>(&mut self.layers[i + 1]).eval_affine();
                downcast::<Conv2d<T>, T>(&mut self.layers[i]).forward_batchnorm(input, output, &affine, relu);
            }
            ForwardStep::ConvBatchnormMaxpool { relu, .. } => {
                let pool_layer = downcast::<MaxPool2d, T>(&mut self.layers[through]);
                pool_layer.clear_winners();
                let pool = pool_layer.geometry(&self.shapes[through]).expect("checked when built");
                let affine = downcast::<BatchNorm<T>, T>(&mut self.layers[i + 1]).eval_affine();
                let conv = downcast::<Conv2d<T>, T>(&mut self.layers[i]);
                conv.forward_batchnorm_maxpool(input, output, (&affine, relu), &pool);
            }
            _ => unreachable!(),
        }
    }

    /// The output of the last forward pass.
    pub fn output(&self) -> ArrayViewD<'_, T> {
        let last = self.layers.len();
        view(&self.activations[self.plan.storage[last]], self.batch, &self.shapes[last])
    }

    /// Backpropagates `grad_output` (`dL/d output`, same shape as the last
    /// output) through every layer, overwriting every parameter gradient.
    /// The gradient with respect to the model's input is not computed (the first
    /// layer is told it is not needed). Frozen layers ([`Sequential::set_frozen`])
    /// are not visited: nothing below the first trainable layer needs a gradient.
    pub fn backward(&mut self, grad_output: ArrayViewD<'_, T>) -> Result<()> {
        self.backward_impl(grad_output, self.frozen, false)
    }

    /// Freezes layers `0..layers` (fine-tuning a pretrained network): in
    /// training they compute as in evaluation (batchnorm's running statistics,
    /// no dropout), the backward pass stops above them, so their weight
    /// gradients are never computed, and [`Sequential::trainable_params_mut`]
    /// leaves them out. `0` unfreezes everything.
    pub fn set_frozen(&mut self, layers: usize) -> Result<()> {
        if layers > self.layers.len() {
            return Err(TensorError::Config(format!(
                "cannot freeze {layers} layers of a model with {}",
                self.layers.len()
            )));
        }
        self.frozen = layers;
        Ok(())
    }

    /// How many leading layers are frozen.
    pub fn frozen(&self) -> usize {
        self.frozen
    }

    /// The parameters of the layers that are not frozen, in the order of
    /// [`Sequential::params`]: what the optimizer updates.
    pub fn trainable_params(&self) -> Vec<Param<'_, T>> {
        self.layers[self.frozen..].iter().flat_map(|layer| layer.params()).collect()
    }

    /// Mutable [`Sequential::trainable_params`].
    pub fn trainable_params_mut(&mut self) -> Vec<ParamMut<'_, T>> {
        self.layers[self.frozen..].iter_mut().flat_map(|layer| layer.params_mut()).collect()
    }

    /// Backpropagates `grad_output` down to activation `stop` (the input of
    /// layer `stop`, the output of layer `stop - 1`) and returns `dL/d` that
    /// activation, `(N, ...shapes()[stop])`. Only layers `stop..` run their
    /// backward (and overwrite their parameter gradients). Grad-CAM uses it for
    /// the gradient of a class score with respect to a convolution's feature
    /// maps; run the model unfused ([`Sequential::set_fused`]) for the gradient
    /// with respect to a ReLU's output exactly (fused, a max-pool after an
    /// in-place ReLU also applies the ReLU's mask).
    pub fn backward_to(&mut self, grad_output: ArrayViewD<'_, T>, stop: usize) -> Result<ArrayD<T>> {
        if stop > self.layers.len() {
            return Err(TensorError::Mismatch(format!(
                "backward_to: activation {stop} does not exist ({} layers)",
                self.layers.len()
            )));
        }
        self.backward_impl(grad_output, stop, true)?;
        Ok(self.gradient_of(stop).to_owned())
    }

    /// Like [`Sequential::backward`], and also returns `dL/d input`.
    pub fn backward_with_input_grad(&mut self, grad_output: ArrayViewD<'_, T>) -> Result<ArrayD<T>> {
        Ok(self.backward_input_grad(grad_output)?.to_owned())
    }

    /// [`Sequential::backward_with_input_grad`] without a copy: `dL/d input`
    /// is viewed in the model's gradient buffer, valid until the next
    /// backward (what a block reads after the backward of a branch).
    pub fn backward_input_grad(&mut self, grad_output: ArrayViewD<'_, T>) -> Result<ArrayViewD<'_, T>> {
        self.backward_impl(grad_output, 0, true)?;
        Ok(self.gradient_of(0))
    }

    /// `dL/d` activation `index` as the last backward left it in the gradient
    /// buffer it reads from.
    fn gradient_of(&self, index: usize) -> ArrayViewD<'_, T> {
        view(&self.grad_buffers[0], self.batch, &self.shapes[index])
    }

    /// Backward down to activation `stop`; with `want_input_grad`, `dL/d`
    /// that activation is left in `grad_buffers[0]` ([`Sequential::gradient_of`]).
    fn backward_impl(&mut self, grad_output: ArrayViewD<'_, T>, stop: usize, want_input_grad: bool) -> Result<()> {
        let last = self.layers.len();
        let expected: Vec<usize> = std::iter::once(self.batch).chain(self.shapes[last].iter().copied()).collect();
        if self.batch == 0 || grad_output.shape() != expected.as_slice() {
            return Err(TensorError::Mismatch(format!(
                "backward expects a gradient of shape {expected:?} (the last forward's output), got {:?}",
                grad_output.shape()
            )));
        }
        let batch = self.batch;
        let max_len = self.shapes.iter().map(|s| batch * s.iter().product::<usize>()).max().unwrap_or(0);
        let [mut read, mut write] = std::mem::take(&mut self.grad_buffers);
        ensure_len(&mut read, max_len);
        ensure_len(&mut write, max_len);
        let grad_output = grad_output.as_standard_layout();
        // `read` holds dL/d(output of layer i) from here on
        let (output_len, grad_output_values) = (grad_output.len(), grad_output.as_slice().expect("standard layout"));
        read[..output_len].copy_from_slice(grad_output_values);
        for i in (stop..last).rev() {
            let want = i > stop || want_input_grad;
            let started = self.timings.is_some().then(std::time::Instant::now);
            let output = view(&self.activations[self.plan.storage[i + 1]], batch, &self.shapes[i + 1]);
            match self.plan.backward[i] {
                // layer i + 1 has already masked dL/dy: it is dL/dx as it stands
                BackwardStep::DoneByNext => {}
                // in place: dL/dx overwrites dL/dy in the same buffer
                BackwardStep::ReluInPlace => {
                    if want {
                        let relu = downcast::<Relu, T>(&mut self.layers[i]);
                        relu.backward_in_place(output, view_mut(&mut read, batch, &self.shapes[i + 1]));
                    }
                }
                step @ (BackwardStep::Plain | BackwardStep::PoolThroughRelu) => {
                    let input = view(&self.activations[self.plan.storage[i]], batch, &self.shapes[i]);
                    let grad_output = view(&read, batch, &self.shapes[i + 1]);
                    let grad_input = want.then(|| view_mut(&mut write, batch, &self.shapes[i]));
                    if step == BackwardStep::PoolThroughRelu {
                        let pool = downcast::<MaxPool2d, T>(&mut self.layers[i]);
                        pool.backward_through_relu(input, output, grad_output, grad_input);
                    } else {
                        self.layers[i].backward(input, output, grad_output, grad_input);
                    }
                    std::mem::swap(&mut read, &mut write);
                }
            }
            if let (Some(timings), Some(started)) = (self.timings.as_mut(), started) {
                timings[i][1] = started.elapsed();
            }
        }
        // `read` now holds dL/d(input of layer `stop`)
        self.grad_buffers = [read, write];
        Ok(())
    }

    /// Whether layer `index` is a ReLU fused into the layer before it (see
    /// [`Conv2d::forward_fused_relu`]): its forward work, and time, are that layer's.
    pub fn is_fused(&self, index: usize) -> bool {
        let steps = if self.last_forward.is_empty() { &self.plan.forward } else { &self.last_forward };
        steps.get(index) == Some(&ForwardStep::DoneByPrevious)
    }

    /// Whether layer `index` is a ReLU whose backward the layer after it does
    /// (see [`MaxPool2d::backward_through_relu`]).
    pub fn is_backward_absorbed(&self, index: usize) -> bool {
        self.plan.backward.get(index) == Some(&BackwardStep::DoneByNext)
    }

    /// Turns per-layer timing on or off (see [`Sequential::layer_timings`]).
    pub fn set_profiling(&mut self, enabled: bool) {
        self.timings = enabled.then(|| vec![[std::time::Duration::ZERO; 2]; self.layers.len()]);
    }

    /// Per-layer `[forward, backward]` wall time of the most recent passes, when
    /// profiling is on.
    pub fn layer_timings(&self) -> Option<&[[std::time::Duration; 2]]> {
        self.timings.as_deref()
    }

    /// The output of layer `index` from the last forward pass, `(N, ...)` (feature maps, for inspection); `None`
    /// past the last layer or when that pass did not keep it (`predict` skips what its fused passes do not need).
    /// When an in-place layer (ReLU) follows, its output has replaced this one.
    pub fn layer_output(&self, index: usize) -> Option<ArrayViewD<'_, T>> {
        let buffer = *self.plan.storage.get(index + 1)?;
        self.plan.written_buffers(&self.last_forward)[buffer]
            .then(|| view(&self.activations[buffer], self.batch, &self.shapes[index + 1]))
    }

    /// Every parameter with its gradient, in layer order (weight before bias).
    pub fn params(&self) -> Vec<Param<'_, T>> {
        self.layers.iter().flat_map(|layer| layer.params()).collect()
    }

    /// Mutable parameters and gradients, in the order of [`Sequential::params`].
    pub fn params_mut(&mut self) -> Vec<ParamMut<'_, T>> {
        self.layers.iter_mut().flat_map(|layer| layer.params_mut()).collect()
    }

    /// Every layer's buffers (state saved with the model but not trained:
    /// BatchNorm's running statistics), named `"{layer}.{name}"`, in order.
    pub fn buffers(&self) -> Vec<(String, &ArrayD<T>)> {
        let per_layer = self.layers.iter().enumerate();
        per_layer
            .flat_map(|(i, layer)| layer.buffers().into_iter().map(move |(name, b)| (format!("{i}.{name}"), b)))
            .collect()
    }

    /// Mutable [`Sequential::buffers`].
    pub fn buffers_mut(&mut self) -> Vec<(String, &mut ArrayD<T>)> {
        let per_layer = self.layers.iter_mut().enumerate();
        per_layer
            .flat_map(|(i, layer)| layer.buffers_mut().into_iter().map(move |(name, b)| (format!("{i}.{name}"), b)))
            .collect()
    }

    /// Parameter names `"{layer index}.{weight|bias}"` (in a block
    /// `"{block index}.body.{layer index}.weight"`), in the order of
    /// [`Sequential::params`] (PyTorch's `state_dict` names for an equivalent
    /// `nn.Sequential`).
    pub fn param_names(&self) -> Vec<String> {
        self.layers
            .iter()
            .enumerate()
            .flat_map(|(i, layer)| layer.param_names().into_iter().map(move |name| format!("{i}.{name}")))
            .collect()
    }

    /// Records the discrete decisions (ReLU signs, pooling winners) of the last
    /// forward pass of every layer; see [`crate::layer`].
    pub fn record_kinks(&self, recorder: &mut KinkRecorder) {
        for (i, layer) in self.layers.iter().enumerate() {
            // for an in-place layer this is its output, which has the same signs
            layer.record_kinks(view(&self.activations[self.plan.storage[i]], self.batch, &self.shapes[i]), recorder);
        }
    }
}
