//! Architectures as data: a [`ModelSpec`] is a list of [`LayerSpec`]s, the form
//! in which presets are written, TOML model files are parsed and model files
//! store their architecture.
//!
//! ```
//! use convnet_tensor::ModelSpec;
//! let model = ModelSpec::baseline().build::<f32>(&[3, 224, 224], 8, 42).unwrap();
//! assert_eq!(model.num_params(), 4_877_300);
//! assert_eq!(model.output_shape(), &[8]);
//! ```

use crate::element::Element;
use crate::error::{Result, TensorError};
use crate::geometry::Padding;
use crate::init::Init;
use crate::layer::Layer;
use crate::layers::{
    AvgPool2d, BatchNorm, Conv2d, Dense, Dropout, Flatten, GlobalAvgPool2d, MaxPool2d, Normalize, Relu, Softmax,
};
use crate::model::concat::Concat;
use crate::model::residual::Residual;
use crate::model::sequential::Sequential;
use serde::{Deserialize, Serialize};

/// Largest number of weights one layer may have (2^28, 1 GB of f32): larger
/// requests are refused before any allocation.
pub const MAX_LAYER_PARAMS: usize = 1 << 28;

/// A size given as one number (square) or as `[height, width]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Size2 {
    /// The same size on both axes.
    Square(usize),
    /// `[height, width]`.
    Rect([usize; 2]),
}

impl Size2 {
    /// `(height, width)`.
    pub fn pair(self) -> (usize, usize) {
        match self {
            Size2::Square(size) => (size, size),
            Size2::Rect([h, w]) => (h, w),
        }
    }
}

fn one() -> Size2 {
    Size2::Square(1)
}

/// One layer of an architecture.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum LayerSpec {
    /// [`Conv2d`]: `filters` output channels (input channels are inferred).
    Conv2d {
        /// Output channels; without it, the number of classes (a
        /// convolutional classifier, as SqueezeNet ends).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filters: Option<usize>,
        /// Kernel size.
        kernel: Size2,
        /// Stride (default 1).
        #[serde(default = "one")]
        stride: Size2,
        /// `valid` (default), `same`, or a number of rows and columns added on
        /// both sides (`3`, or `[rows, columns]`: PyTorch's `padding=3`).
        #[serde(default)]
        padding: Padding,
        /// Whether it has a bias (default true; `false` before a batchnorm).
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        bias: bool,
    },
    /// [`MaxPool2d`].
    Maxpool2d {
        /// Window size.
        pool: Size2,
        /// Stride (default: the pool size, as in Keras).
        #[serde(default)]
        stride: Option<Size2>,
        /// `valid` (default), `same`, or a number (both sides).
        #[serde(default)]
        padding: Padding,
        /// PyTorch's `ceil_mode`: round the output size up (default false).
        #[serde(default, skip_serializing_if = "is_false")]
        ceil_mode: bool,
    },
    /// [`AvgPool2d`] with PyTorch's options.
    Avgpool2d {
        /// Window size.
        pool: Size2,
        /// Stride (default: the pool size).
        #[serde(default)]
        stride: Option<Size2>,
        /// `valid` (default), `same`, or a number (both sides).
        #[serde(default)]
        padding: Padding,
        /// Round the output size up (default false).
        #[serde(default, skip_serializing_if = "is_false")]
        ceil_mode: bool,
        /// Divide by the whole window, padding included (default true, PyTorch's).
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        count_include_pad: bool,
    },
    /// [`Relu`].
    Relu,
    /// [`Flatten`].
    Flatten,
    /// [`Dense`]; without `units`, the number of classes (for the output layer).
    Dense {
        /// Output features; `None` means "the number of classes".
        #[serde(default)]
        units: Option<usize>,
        /// Whether it has a bias (default true).
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        bias: bool,
    },
    /// [`Dropout`].
    Dropout {
        /// Drop probability in `[0, 1)`.
        rate: f64,
    },
    /// [`Softmax`] (for inference only; training applies the fused loss to logits).
    Softmax,
    /// [`BatchNorm`]: per-channel normalisation with learned scale and shift
    /// (PyTorch's `BatchNorm2d` after a convolution, `BatchNorm1d` after a dense
    /// layer; the channels are inferred).
    Batchnorm {
        /// Added to the variance (default 1e-5).
        #[serde(default = "default_eps")]
        eps: f64,
        /// Weight of a batch's statistics in the running ones (default 0.1).
        #[serde(default = "default_momentum")]
        momentum: f64,
    },
    /// [`GlobalAvgPool2d`]: each feature map becomes its mean, `(C, H, W) -> (C,)`.
    #[serde(rename = "global_avgpool2d")]
    GlobalAvgpool2d,
    /// Per-channel normalisation, `y = (x - mean[c]) / std[c]`: a pretrained
    /// network's preprocessing, kept in the model (see [`crate::layers::normalize`]).
    Normalize {
        /// The per-channel means.
        mean: Vec<f64>,
        /// The per-channel standard deviations.
        std: Vec<f64>,
    },
    /// [`Residual`]: `y = body(x) + shortcut(x)` (see [`crate::model::residual`]).
    Residual {
        /// The main branch's layers.
        body: Vec<LayerSpec>,
        /// The projection's layers; none (the default) for the identity.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        shortcut: Vec<LayerSpec>,
    },
    /// [`Concat`]: the branches' outputs stacked along the channels (see
    /// [`crate::model::concat`]).
    Concat {
        /// The branches, in channel order.
        branches: Vec<BranchSpec>,
    },
}

/// One branch of a [`LayerSpec::Concat`] block: its layers (an empty list is
/// the input itself).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BranchSpec {
    /// The layers, first to last.
    pub layers: Vec<LayerSpec>,
}

fn yes() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn default_eps() -> f64 {
    crate::layers::batchnorm::DEFAULT_EPS
}

fn default_momentum() -> f64 {
    crate::layers::batchnorm::DEFAULT_MOMENTUM
}

/// An architecture: how its weights are first drawn, and the layers in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// The initialisation of convolutions and dense layers (TOML: `init =
    /// "pytorch"` before the layers; Keras' Glorot-uniform when absent).
    #[serde(default, skip_serializing_if = "Init::is_default")]
    pub init: Init,
    /// The layers, first to last.
    pub layers: Vec<LayerSpec>,
}

impl ModelSpec {
    /// An architecture of `layers` with Keras' default initialisation.
    pub fn new(layers: Vec<LayerSpec>) -> Self {
        ModelSpec { init: Init::default(), layers }
    }

    /// The same architecture, initialised by `init`.
    pub fn with_init(mut self, init: Init) -> Self {
        self.init = init;
        self
    }

    /// Parses an architecture TOML document: `[[layers]]` tables with a `type`
    /// (the format of `docs/` and `--model FILE.toml`).
    pub fn from_toml(text: &str) -> Result<Self> {
        let spec: ModelSpec = toml::from_str(text).map_err(|e| TensorError::Config(e.message().to_string()))?;
        if spec.layers.is_empty() {
            return Err(TensorError::Config("the architecture has no layers".into()));
        }
        Ok(spec)
    }

    /// Builds the model for per-sample input `(C, H, W)` and `classes` outputs,
    /// with its [`Init`] drawn from `seed`. Every layer's shape is
    /// checked; an error names the layer and the sizes that do not fit.
    pub fn build<T: Element>(&self, input_shape: &[usize], classes: usize, seed: u64) -> Result<Sequential<T>> {
        if classes == 0 {
            return Err(TensorError::Config("the number of classes must be positive".into()));
        }
        let model = self.build_sequence(input_shape, classes, seed)?;
        if model.output_shape() != [classes] {
            return Err(TensorError::Config(format!(
                "the model ends with shape {:?}, but there are {classes} classes: end with a dense layer without `units`",
                model.output_shape()
            )));
        }
        Ok(model)
    }

    /// [`ModelSpec::build`] without requiring the output to be `(classes,)`:
    /// a part of a network (a block to study, a branch).
    pub fn build_sequence<T: Element>(
        &self,
        input_shape: &[usize],
        classes: usize,
        seed: u64,
    ) -> Result<Sequential<T>> {
        Builder { classes, seed, init: self.init, next_index: 0 }.sequential(&self.layers, input_shape)
    }
}

/// Builds layers in order, numbering them depth-first (a block, then the
/// layers inside it): the number seeds each layer's initial weights, so a
/// model without blocks is numbered exactly as its top-level list.
struct Builder {
    classes: usize,
    seed: u64,
    init: Init,
    next_index: usize,
}

impl Builder {
    fn sequential<T: Element>(&mut self, specs: &[LayerSpec], input_shape: &[usize]) -> Result<Sequential<T>> {
        let mut model = Sequential::new(input_shape.to_vec())?;
        for (position, spec) in specs.iter().enumerate() {
            let layer = self.layer(spec, model.output_shape(), position)?;
            model.push(layer)?;
        }
        Ok(model)
    }

    fn layer<T: Element>(&mut self, spec: &LayerSpec, shape: &[usize], position: usize) -> Result<Box<dyn Layer<T>>> {
        let index = self.next_index;
        self.next_index += 1;
        let shape_error = |message: String| TensorError::Shape { index: position, kind: spec.kind().into(), message };
        // refuse absurd sizes before allocating anything (hostile model files, typos)
        let params = match *spec {
            LayerSpec::Conv2d { filters, kernel, .. } => {
                let (kh, kw) = kernel.pair();
                [filters.unwrap_or(self.classes), shape.first().copied().unwrap_or(1), kh, kw]
                    .iter()
                    .try_fold(1usize, |a, &b| a.checked_mul(b))
            }
            LayerSpec::Dense { units, .. } => units.unwrap_or(self.classes).checked_mul(shape.iter().product()),
            _ => Some(0),
        };
        if params.is_none_or(|p| p > MAX_LAYER_PARAMS) {
            return Err(shape_error(format!("would have more than {MAX_LAYER_PARAMS} parameters")));
        }
        let layer: Box<dyn Layer<T>> = match spec {
            LayerSpec::Conv2d { filters, kernel, stride, padding, bias } => {
                if shape.len() != 3 {
                    return Err(shape_error(format!("expects a (C, H, W) input, got {shape:?}")));
                }
                let layer =
                    Conv2d::new(shape[0], filters.unwrap_or(self.classes), kernel.pair(), stride.pair(), *padding)
                        .map_err(|e| shape_error(e.to_string()))?;
                let mut layer = if *bias { layer } else { layer.without_bias() };
                let (weight, bias) = layer.weight_and_bias_mut();
                self.init.fill(weight, bias, true, self.seed, index);
                Box::new(layer)
            }
            LayerSpec::Maxpool2d { pool, stride, padding, ceil_mode } => Box::new(
                MaxPool2d::new(pool.pair(), stride.unwrap_or(*pool).pair(), *padding)
                    .map_err(|e| shape_error(e.to_string()))?
                    .with_ceil_mode(*ceil_mode),
            ),
            LayerSpec::Avgpool2d { pool, stride, padding, ceil_mode, count_include_pad } => Box::new(
                AvgPool2d::new(pool.pair(), stride.unwrap_or(*pool).pair(), *padding)
                    .map_err(|e| shape_error(e.to_string()))?
                    .with_ceil_mode(*ceil_mode)
                    .with_count_include_pad(*count_include_pad),
            ),
            LayerSpec::Relu => Box::new(Relu),
            LayerSpec::Flatten => Box::new(Flatten),
            LayerSpec::Dense { units, bias } => {
                if shape.len() != 1 {
                    return Err(shape_error(format!(
                        "expects a flat input, got {shape:?}; put a flatten layer before it"
                    )));
                }
                let layer =
                    Dense::new(shape[0], units.unwrap_or(self.classes)).map_err(|e| shape_error(e.to_string()))?;
                let mut layer = if *bias { layer } else { layer.without_bias() };
                let (weight, bias) = layer.weight_and_bias_mut();
                self.init.fill(weight, bias, false, self.seed, index);
                Box::new(layer)
            }
            LayerSpec::Dropout { rate } => Box::new(Dropout::new(*rate).map_err(|e| shape_error(e.to_string()))?),
            LayerSpec::Softmax => Box::new(Softmax),
            LayerSpec::Batchnorm { eps, momentum } => {
                let channels = shape.first().copied().unwrap_or(0);
                Box::new(BatchNorm::with_options(channels, *eps, *momentum).map_err(|e| shape_error(e.to_string()))?)
            }
            LayerSpec::GlobalAvgpool2d => Box::new(GlobalAvgPool2d),
            LayerSpec::Normalize { mean, std } => {
                Box::new(Normalize::new(mean.clone(), std.clone()).map_err(shape_error)?)
            }
            LayerSpec::Residual { body, shortcut } => {
                let body = self.sequential(body, shape).map_err(|e| shape_error(format!("body: {e}")))?;
                let shortcut = match shortcut.is_empty() {
                    true => None,
                    false => Some(self.sequential(shortcut, shape).map_err(|e| shape_error(format!("shortcut: {e}")))?),
                };
                Box::new(Residual::new(body, shortcut).map_err(|e| shape_error(e.to_string()))?)
            }
            LayerSpec::Concat { branches } => {
                let branches = branches
                    .iter()
                    .enumerate()
                    .map(|(b, branch)| {
                        self.sequential(&branch.layers, shape).map_err(|e| shape_error(format!("branch {b}: {e}")))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Box::new(Concat::new(branches).map_err(|e| shape_error(e.to_string()))?)
            }
        };
        Ok(layer)
    }
}

impl LayerSpec {
    /// The layer's kind, as in [`Layer::kind`].
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Conv2d { .. } => "conv2d",
            LayerSpec::Maxpool2d { .. } => "maxpool2d",
            LayerSpec::Relu => "relu",
            LayerSpec::Flatten => "flatten",
            LayerSpec::Dense { .. } => "dense",
            LayerSpec::Dropout { .. } => "dropout",
            LayerSpec::Softmax => "softmax",
            LayerSpec::Batchnorm { .. } => "batchnorm",
            LayerSpec::GlobalAvgpool2d => "global_avgpool2d",
            LayerSpec::Normalize { .. } => "normalize",
            LayerSpec::Avgpool2d { .. } => "avgpool2d",
            LayerSpec::Residual { .. } => "residual",
            LayerSpec::Concat { .. } => "concat",
        }
    }
}
