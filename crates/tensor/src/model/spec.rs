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
use crate::layer::Layer;
use crate::layers::{BatchNorm, Conv2d, Dense, Dropout, Flatten, GlobalAvgPool2d, MaxPool2d, Relu, Softmax};
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
        /// Output channels.
        filters: usize,
        /// Kernel size.
        kernel: Size2,
        /// Stride (default 1).
        #[serde(default = "one")]
        stride: Size2,
        /// `valid` (default) or `same`.
        #[serde(default)]
        padding: Padding,
    },
    /// [`MaxPool2d`].
    Maxpool2d {
        /// Window size.
        pool: Size2,
        /// Stride (default: the pool size, as in Keras).
        #[serde(default)]
        stride: Option<Size2>,
        /// `valid` (default) or `same`.
        #[serde(default)]
        padding: Padding,
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
}

fn default_eps() -> f64 {
    crate::layers::batchnorm::DEFAULT_EPS
}

fn default_momentum() -> f64 {
    crate::layers::batchnorm::DEFAULT_MOMENTUM
}

/// An architecture: the layers in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// The layers, first to last.
    pub layers: Vec<LayerSpec>,
}

fn conv(filters: usize, padding: Padding) -> LayerSpec {
    LayerSpec::Conv2d { filters, kernel: Size2::Square(3), stride: Size2::Square(1), padding }
}

fn pool2() -> LayerSpec {
    LayerSpec::Maxpool2d { pool: Size2::Square(2), stride: None, padding: Padding::Valid }
}

fn dense(units: usize) -> LayerSpec {
    LayerSpec::Dense { units: Some(units) }
}

impl ModelSpec {
    /// The reference network of the Keras mammography script: 4,877,300
    /// parameters at 224x224x3 with 8 classes.
    pub fn baseline() -> Self {
        use LayerSpec::*;
        ModelSpec {
            layers: vec![
                conv(32, Padding::Valid),
                Relu,
                conv(64, Padding::Valid),
                Relu,
                pool2(),
                pool2(),
                conv(32, Padding::Valid),
                Relu,
                conv(64, Padding::Valid),
                Relu,
                pool2(),
                Flatten,
                dense(120),
                Relu,
                dense(100),
                Relu,
                dense(80),
                Relu,
                Dropout { rate: 0.5 },
                Dense { units: None },
            ],
        }
    }

    /// A small network for 28-64 px inputs that trains in about a minute.
    pub fn small() -> Self {
        use LayerSpec::*;
        ModelSpec {
            layers: vec![
                conv(16, Padding::Same),
                Relu,
                pool2(),
                conv(32, Padding::Same),
                Relu,
                pool2(),
                Flatten,
                dense(64),
                Relu,
                Dropout { rate: 0.25 },
                Dense { units: None },
            ],
        }
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

    /// A preset by name: `baseline` or `small`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "baseline" => Some(Self::baseline()),
            "small" => Some(Self::small()),
            _ => None,
        }
    }

    /// Builds the model for per-sample input `(C, H, W)` and `classes` outputs,
    /// with Keras-default initialisation from `seed`. Every layer's shape is
    /// checked; an error names the layer and the sizes that do not fit.
    pub fn build<T: Element>(&self, input_shape: &[usize], classes: usize, seed: u64) -> Result<Sequential<T>> {
        if classes == 0 {
            return Err(TensorError::Config("the number of classes must be positive".into()));
        }
        let mut model = Sequential::new(input_shape.to_vec())?;
        for (index, spec) in self.layers.iter().enumerate() {
            let shape = model.output_shape().to_vec();
            let shape_error = |message: String| TensorError::Shape { index, kind: spec.kind().into(), message };
            // refuse absurd sizes before allocating anything (hostile model files, typos)
            let params = match *spec {
                LayerSpec::Conv2d { filters, kernel, .. } => {
                    let (kh, kw) = kernel.pair();
                    [filters, shape.first().copied().unwrap_or(1), kh, kw]
                        .iter()
                        .try_fold(1usize, |a, &b| a.checked_mul(b))
                }
                LayerSpec::Dense { units } => units.unwrap_or(classes).checked_mul(shape.iter().product()),
                _ => Some(0),
            };
            if params.is_none_or(|p| p > MAX_LAYER_PARAMS) {
                return Err(shape_error(format!("would have more than {MAX_LAYER_PARAMS} parameters")));
            }
            let layer: Box<dyn Layer<T>> = match *spec {
                LayerSpec::Conv2d { filters, kernel, stride, padding } => {
                    if shape.len() != 3 {
                        return Err(shape_error(format!("expects a (C, H, W) input, got {shape:?}")));
                    }
                    let mut layer = Conv2d::new(shape[0], filters, kernel.pair(), stride.pair(), padding)
                        .map_err(|e| shape_error(e.to_string()))?;
                    crate::init::glorot_uniform(layer.weight_mut(), seed, index);
                    Box::new(layer)
                }
                LayerSpec::Maxpool2d { pool, stride, padding } => Box::new(
                    MaxPool2d::new(pool.pair(), stride.unwrap_or(pool).pair(), padding)
                        .map_err(|e| shape_error(e.to_string()))?,
                ),
                LayerSpec::Relu => Box::new(Relu),
                LayerSpec::Flatten => Box::new(Flatten),
                LayerSpec::Dense { units } => {
                    if shape.len() != 1 {
                        return Err(shape_error(format!(
                            "expects a flat input, got {shape:?}; put a flatten layer before it"
                        )));
                    }
                    let mut layer =
                        Dense::new(shape[0], units.unwrap_or(classes)).map_err(|e| shape_error(e.to_string()))?;
                    crate::init::glorot_uniform(layer.weight_mut(), seed, index);
                    Box::new(layer)
                }
                LayerSpec::Dropout { rate } => Box::new(Dropout::new(rate).map_err(|e| shape_error(e.to_string()))?),
                LayerSpec::Softmax => Box::new(Softmax),
                LayerSpec::Batchnorm { eps, momentum } => {
                    let channels = shape.first().copied().unwrap_or(0);
                    Box::new(BatchNorm::with_options(channels, eps, momentum).map_err(|e| shape_error(e.to_string()))?)
                }
                LayerSpec::GlobalAvgpool2d => Box::new(GlobalAvgPool2d),
            };
            model.push(layer)?;
        }
        if model.output_shape() != [classes] {
            return Err(TensorError::Config(format!(
                "the model ends with shape {:?}, but there are {classes} classes: end with a dense layer without `units`",
                model.output_shape()
            )));
        }
        Ok(model)
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
        }
    }
}
