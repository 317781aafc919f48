//! The execution plan: which layers fuse and which share a buffer, decided
//! once when the model is built, so neither the layers nor the forward and
//! backward loops carry that logic.
//!
//! Every layer can run alone through its plain [`Layer::forward`] and
//! [`Layer::backward`], each activation in a buffer of its own: that is the
//! *unfused* plan ([`Plan::unfused`]), the readable path and the one the fused
//! plan is tested against. The *fused* plan ([`Plan::fused`], the default)
//! recognises three patterns among the built-in layers:
//!
//! | pattern | forward | backward | saves |
//! |---|---|---|---|
//! | [`Relu`] after a layer that does not read its own output in backward | in place, over its input ([`Relu::forward_in_place`]) | in place ([`Relu::backward_in_place`]) | one activation buffer and its memory traffic |
//! | [`Conv2d`] then [`Relu`] | the convolution applies `max(0, .)` to each tile in cache ([`Conv2d::forward_fused_relu`]); the ReLU's forward is skipped | unchanged | a pass over the convolution's output (conv2 of `baseline`: 400 MB) |
//! | in-place [`Relu`] then [`MaxPool2d`] | unchanged | the pool masks its own input gradient ([`MaxPool2d::backward_through_relu`]); the ReLU's backward is skipped | a pass over the full-size gradient |
//!
//!
//! Inference ([`crate::model::Sequential::predict`]) goes one step further
//! ([`Plan::inference_forward`]): a convolution that runs by Winograd, its ReLU
//! and the 2x2 max-pools after it (one, or two in a row) become one pass that
//! pools each block of 4x4 output tiles while it is in cache
//! ([`Conv2d::forward_relu_maxpool`]), saving the write and the reads of the
//! full-size output (conv2 of `baseline`: 396 MB per batch of 32); and when a
//! convolution with its ReLU comes right before such a pass, unpadded, the two
//! run a band of rows at a time ([`Conv2d::forward_into_relu_maxpool`],
//! [`crate::kernels::conv_chain`]), so the first one's output (conv1 of
//! `baseline`: 200 MB a batch) is never written whole either. Training cannot:
//! its backward pass reads those activations. A convolution followed by a
//! [`BatchNorm`] (ResNet's every convolution) applies the batchnorm's affine
//! map of its running statistics, and the ReLU after it, while its output is
//! in cache: by im2col to each tile with the bias, by Winograd to each image's
//! output ([`Conv2d::forward_batchnorm`]); a layer that folds the ReLU after
//! it into its own last pass ([`Layer::folds_relu_in_predict`]: a residual
//! block, into its addition) is given that ReLU ([`Layer::predict_relu`]); a block
//! ([`crate::Residual`], [`crate::Concat`]) runs its branches' own inference
//! passes ([`Layer::predict`]).
//!
//! A layer of your own never fuses: the plan only recognises the built-in
//! types (through [`Layer::as_any`]).

use crate::element::Element;
use crate::layer::Layer;
use crate::layers::{BatchNorm, Conv2d, MaxPool2d, Relu};

/// How layer `i`'s forward pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardStep {
    /// [`Layer::forward`] from activation `i` into activation `i + 1`.
    Plain,
    /// [`Relu::forward_in_place`]: activations `i` and `i + 1` share a buffer.
    ReluInPlace,
    /// [`Conv2d::forward_fused_relu`]: the ReLU that follows is applied too.
    ConvThenRelu,
    /// Nothing: the layer before did this layer's work ([`ForwardStep::ConvThenRelu`],
    /// [`ForwardStep::ConvReluMaxpool`]).
    DoneByPrevious,
    /// Inference only ([`Plan::inference_forward`]): [`Conv2d::forward_relu_maxpool`],
    /// the ReLU after the convolution and the max-pools up to layer `through`
    /// (a 2x2 pool, or two in a row: `pool` 4) in one pass, from activation `i`
    /// into activation `through + 1`.
    ConvReluMaxpool {
        /// Window and stride of the pooling done (2 or 4).
        pool: usize,
        /// The last layer whose work this step does.
        through: usize,
    },
    /// Inference only: [`Conv2d::forward_batchnorm`], the [`BatchNorm`] after
    /// the convolution (its running statistics: `y = a_c x + b_c`) and, with
    /// `relu`, the in-place ReLU after that, applied to each image's output
    /// while it is in cache, from activation `i` into activation `through + 1`.
    ConvBatchnorm {
        /// Whether a ReLU follows the batchnorm (layer `i + 2`).
        relu: bool,
        /// The last layer whose work this step does.
        through: usize,
    },
    /// Inference only: [`Conv2d::forward_batchnorm_maxpool`], a
    /// [`ForwardStep::ConvBatchnorm`] by im2col and the max-pool after it
    /// (layer `through`), each image's output pooled while in cache, from
    /// activation `i` into activation `through + 1`.
    ConvBatchnormMaxpool {
        /// Whether a ReLU follows the batchnorm.
        relu: bool,
        /// The max-pool.
        through: usize,
    },
    /// Inference only: [`Layer::predict_relu`], the layer and the in-place
    /// ReLU after it (layer `i + 1`) in the layer's own pass, from activation
    /// `i` into activation `i + 1` (which the ReLU's output shares), for a
    /// layer that [`Layer::folds_relu_in_predict`] (a residual block).
    PredictRelu,
    /// Inference only: [`MaxPool2d::forward_values`], the pooled values
    /// without the winners' indices a backward pass would read.
    MaxpoolValues,
    /// Inference only: [`Conv2d::forward_into_relu_maxpool`], this convolution
    /// and its ReLU feeding layer `next`'s [`ForwardStep::ConvReluMaxpool`]
    /// a band of rows at a time, from activation `i` into activation
    /// `through + 1`; activation `i + 1` (this layer's output) is never written.
    ConvIntoConvReluMaxpool {
        /// The second convolution (`i + 2`, after this layer's ReLU).
        next: usize,
        /// Window and stride of the pooling done (2 or 4).
        pool: usize,
        /// The last layer whose work this step does.
        through: usize,
    },
}

impl ForwardStep {
    /// The last layer whose work a fused step does (its output is activation
    /// `through + 1`); `None` for a step that ends at its own layer.
    pub fn through(&self) -> Option<usize> {
        match *self {
            ForwardStep::ConvReluMaxpool { through, .. }
            | ForwardStep::ConvIntoConvReluMaxpool { through, .. }
            | ForwardStep::ConvBatchnorm { through, .. }
            | ForwardStep::ConvBatchnormMaxpool { through, .. } => Some(through),
            _ => None,
        }
    }
}

/// How layer `i`'s backward pass runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackwardStep {
    /// [`Layer::backward`] from gradient buffer to gradient buffer.
    Plain,
    /// [`Relu::backward_in_place`]: `dL/dx` overwrites `dL/dy`.
    ReluInPlace,
    /// [`MaxPool2d::backward_through_relu`]: the ReLU before is done too.
    PoolThroughRelu,
    /// Nothing: the layer after did this ReLU's backward ([`BackwardStep::PoolThroughRelu`]).
    DoneByNext,
}

/// The decisions for a list of layers (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// `storage[i]`: which buffer holds activation `i` (`L + 1` entries;
    /// activation 0 is the input, `i + 1` the output of layer `i`).
    pub storage: Vec<usize>,
    /// Number of activation buffers.
    pub buffers: usize,
    /// One forward step per layer.
    pub forward: Vec<ForwardStep>,
    /// One backward step per layer.
    pub backward: Vec<BackwardStep>,
}

fn is<L: 'static, T: Element>(layer: &dyn Layer<T>) -> bool {
    layer.as_any().is_some_and(|any| any.is::<L>())
}

impl Plan {
    /// The forward steps of inference ([`crate::model::Sequential::predict`]):
    /// those of [`Plan::fused`], and where a convolution fused with its ReLU is
    /// followed by 2x2 max-pools (one, or two in a row, which are one 4x4
    /// pool) and runs by Winograd on its input (`shapes[i]`: layer `i`'s
    /// per-sample input shape), one pass for all of them
    /// ([`ForwardStep::ConvReluMaxpool`]): the full-size activations between
    /// them are never written, which training's backward pass would need.
    /// Every other max-pool computes its values only
    /// ([`ForwardStep::MaxpoolValues`]). Written into `forward` (its allocation
    /// reused from batch to batch).
    pub fn inference_forward<T: Element>(
        &self,
        layers: &[Box<dyn Layer<T>>],
        shapes: &[Vec<usize>],
        forward: &mut Vec<ForwardStep>,
    ) {
        forward.clone_from(&self.forward);
        let square_pool = |i: usize| {
            let pool = layers.get(i)?.as_any()?.downcast_ref::<MaxPool2d>()?;
            pool.plain_square()
        };
        for i in 0..forward.len() {
            // a max-pool no convolution before it took in: its values only
            if forward[i] == ForwardStep::Plain && is::<MaxPool2d, T>(layers[i].as_ref()) {
                forward[i] = ForwardStep::MaxpoolValues;
                continue;
            }
            if forward[i] != ForwardStep::ConvThenRelu {
                continue;
            }
            let Some(conv) = layers[i].as_any().and_then(|any| any.downcast_ref::<Conv2d<T>>()) else { continue };
            let &[channels, height, width] = shapes[i].as_slice() else { continue };
            if square_pool(i + 2) != Some(2) || !conv.can_fuse_maxpool(&[1, channels, height, width]) {
                continue;
            }
            let (pool, through) = if square_pool(i + 3) == Some(2) { (4, i + 3) } else { (2, i + 2) };
            forward[i] = ForwardStep::ConvReluMaxpool { pool, through };
            for step in &mut forward[i + 2..=through] {
                *step = ForwardStep::DoneByPrevious;
            }
        }
        // a convolution, the batchnorm after it (and an in-place ReLU): one pass
        for i in 0..forward.len().saturating_sub(1) {
            let conv_then_batchnorm = forward[i] == ForwardStep::Plain
                && is::<Conv2d<T>, T>(layers[i].as_ref())
                && forward[i + 1] == ForwardStep::Plain
                && is::<BatchNorm<T>, T>(layers[i + 1].as_ref());
            if !conv_then_batchnorm {
                continue;
            }
            let relu = forward.get(i + 2) == Some(&ForwardStep::ReluInPlace);
            let through = if relu { i + 2 } else { i + 1 };
            forward[i] = ForwardStep::ConvBatchnorm { relu, through };
            for step in &mut forward[i + 1..=through] {
                *step = ForwardStep::DoneByPrevious;
            }
        }
        // such a step by im2col and a max-pool right after it (ResNet's stem): each image pooled in cache
        for i in 0..forward.len() {
            let ForwardStep::ConvBatchnorm { relu, through } = forward[i] else { continue };
            let by_im2col = layers[i].as_any().and_then(|any| any.downcast_ref::<Conv2d<T>>()).is_some_and(|conv| {
                let &[channels, height, width] = shapes[i].as_slice() else { return false };
                conv.forward_is_im2col(&[1, channels, height, width])
            });
            if by_im2col && forward.get(through + 1) == Some(&ForwardStep::MaxpoolValues) {
                forward[i] = ForwardStep::ConvBatchnormMaxpool { relu, through: through + 1 };
                forward[through + 1] = ForwardStep::DoneByPrevious;
            }
        }
        // a layer that folds the in-place ReLU after it into its own pass (a residual block's addition)
        for i in 0..forward.len().saturating_sub(1) {
            let folds = forward[i] == ForwardStep::Plain && layers[i].folds_relu_in_predict();
            if folds && forward[i + 1] == ForwardStep::ReluInPlace {
                (forward[i], forward[i + 1]) = (ForwardStep::PredictRelu, ForwardStep::DoneByPrevious);
            }
        }
        // a convolution + ReLU right before such a step: the two in bands
        for i in 0..forward.len().saturating_sub(2) {
            let ForwardStep::ConvReluMaxpool { pool, through } = forward[i + 2] else { continue };
            let conv = |i: usize| layers[i].as_any().and_then(|any| any.downcast_ref::<Conv2d<T>>());
            let (Some(first), Some(second)) = (conv(i), conv(i + 2)) else { continue };
            let &[channels, height, width] = shapes[i].as_slice() else { continue };
            if forward[i] == ForwardStep::ConvThenRelu && first.can_chain_into(&[1, channels, height, width], second) {
                forward[i] = ForwardStep::ConvIntoConvReluMaxpool { next: i + 2, pool, through };
                forward[i + 2] = ForwardStep::DoneByPrevious;
            }
        }
    }

    /// Which buffers a forward pass by `steps` writes (the input's, and each
    /// step's target): only those are sized for the batch, so inference's
    /// fused passes do not allocate the full-size activations they skip
    /// (`baseline` at batch 32: conv1's and conv2's outputs, 600 MB).
    pub fn written_buffers(&self, steps: &[ForwardStep]) -> Vec<bool> {
        let mut written = vec![false; self.buffers];
        written[self.storage[0]] = true;
        for (i, step) in steps.iter().enumerate() {
            if *step == ForwardStep::DoneByPrevious {
                continue;
            }
            let target = step.through().map_or(i + 1, |through| through + 1);
            written[self.storage[target]] = true;
        }
        written
    }

    /// Every layer alone: plain forward and backward, one buffer per activation.
    pub fn unfused<T: Element>(layers: &[Box<dyn Layer<T>>]) -> Plan {
        let count = layers.len();
        Plan {
            storage: (0..=count).collect(),
            buffers: count + 1,
            forward: vec![ForwardStep::Plain; count],
            backward: vec![BackwardStep::Plain; count],
        }
    }

    /// In-place ReLUs, convolution + ReLU and ReLU + max-pool fused where the
    /// pattern occurs (see the module docs).
    pub fn fused<T: Element>(layers: &[Box<dyn Layer<T>>]) -> Plan {
        let count = layers.len();
        let relu = |i: usize| is::<Relu, T>(layers[i].as_ref());
        let conv = |i: usize| is::<Conv2d<T>, T>(layers[i].as_ref());
        let pool = |i: usize| is::<MaxPool2d, T>(layers[i].as_ref());
        let mut storage = vec![0];
        let mut buffers = 1;
        // fused[i]: ReLU i is applied by convolution i - 1
        let mut fused = vec![false; count];
        // absorbed[i]: ReLU i's backward is done by max-pool i + 1
        let mut absorbed = vec![false; count];
        for i in 0..count {
            fused[i] = i > 0 && relu(i) && conv(i - 1);
            let after_in_place_relu = i > 0 && relu(i - 1) && storage[i - 1] == storage[i];
            if after_in_place_relu && pool(i) {
                absorbed[i - 1] = true;
            }
            // Writing over activation i is only allowed if layer i - 1's backward
            // does not read it: layers that say so, and a max-pool doing the
            // backward of the ReLU before it (it masks with its output).
            let previous_needs_output = i > 0 && (layers[i - 1].backward_needs_output() || (i > 1 && absorbed[i - 2]));
            if fused[i] || (relu(i) && !previous_needs_output) {
                storage.push(storage[i]);
            } else {
                storage.push(buffers);
                buffers += 1;
            }
        }
        let forward = (0..count)
            .map(|i| {
                if fused[i] {
                    ForwardStep::DoneByPrevious
                } else if storage[i] == storage[i + 1] {
                    ForwardStep::ReluInPlace
                } else if fused.get(i + 1) == Some(&true) {
                    ForwardStep::ConvThenRelu
                } else {
                    ForwardStep::Plain
                }
            })
            .collect();
        let backward = (0..count)
            .map(|i| {
                if absorbed[i] {
                    BackwardStep::DoneByNext
                } else if storage[i] == storage[i + 1] {
                    BackwardStep::ReluInPlace
                } else if i > 0 && absorbed[i - 1] {
                    BackwardStep::PoolThroughRelu
                } else {
                    BackwardStep::Plain
                }
            })
            .collect();
        Plan { storage, buffers, forward, backward }
    }
}
