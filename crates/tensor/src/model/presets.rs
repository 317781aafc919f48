//! The preset architectures, written as data ([`LayerSpec`] lists): the
//! seed's `baseline`, a `small` network, and the modern ones — `resnet18` and
//! `resnet34` exactly as torchvision lays them out (same layers, same order,
//! same parameter count), `squeezenet1_1` likewise, and `resnet-small`, a
//! ResNet for small images.
//!
//! ```
//! use convnet_tensor::ModelSpec;
//! let resnet18 = ModelSpec::preset("resnet18").unwrap().build::<f32>(&[3, 224, 224], 1000, 0).unwrap();
//! assert_eq!(resnet18.num_params(), 11_689_512); // torchvision's resnet18()
//! let squeezenet = ModelSpec::preset("squeezenet1_1").unwrap().build::<f32>(&[3, 224, 224], 1000, 0).unwrap();
//! assert_eq!(squeezenet.num_params(), 1_235_496); // torchvision's squeezenet1_1()
//! ```

use crate::geometry::Padding;
use crate::init::Init;
use crate::model::spec::{BranchSpec, LayerSpec, ModelSpec, Size2};

/// The preset names, for help texts and errors.
pub const PRESETS: [&str; 6] = ["baseline", "small", "resnet-small", "resnet18", "resnet34", "squeezenet1_1"];

fn conv(filters: usize, padding: Padding) -> LayerSpec {
    LayerSpec::Conv2d {
        filters: Some(filters),
        kernel: Size2::Square(3),
        stride: Size2::Square(1),
        padding,
        bias: true,
    }
}

fn pool2() -> LayerSpec {
    LayerSpec::Maxpool2d { pool: Size2::Square(2), stride: None, padding: Padding::Valid, ceil_mode: false }
}

fn dense(units: usize) -> LayerSpec {
    LayerSpec::Dense { units: Some(units), bias: true }
}

impl ModelSpec {
    /// The reference network of the Keras mammography script: 4,877,300
    /// parameters at 224x224x3 with 8 classes.
    pub fn baseline() -> Self {
        use LayerSpec::*;
        ModelSpec {
            init: Default::default(),
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
                Dense { units: None, bias: true },
            ],
        }
    }

    /// A small network for 28-64 px inputs that trains in about a minute.
    pub fn small() -> Self {
        use LayerSpec::*;
        ModelSpec {
            init: Default::default(),
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
                Dense { units: None, bias: true },
            ],
        }
    }

    /// A preset by name (one of [`PRESETS`]).
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "baseline" => Some(Self::baseline()),
            "small" => Some(Self::small()),
            "resnet-small" => Some(Self::resnet_small()),
            "resnet18" => Some(Self::resnet(&[2, 2, 2, 2])),
            "resnet34" => Some(Self::resnet(&[3, 4, 6, 3])),
            "squeezenet1_1" => Some(Self::squeezenet1_1()),
            _ => None,
        }
    }

    /// torchvision's ResNet with basic blocks, `blocks` per stage
    /// (`[2, 2, 2, 2]`: ResNet-18, `[3, 4, 6, 3]`: ResNet-34): a 7x7 stride-2
    /// stem with padding 3, BatchNorm, ReLU and a 3x3 stride-2 max-pool
    /// (padding 1), four stages of 64, 128, 256, 512 channels (each after the
    /// first starting at stride 2, with a 1x1 stride-2 projection shortcut),
    /// global average pooling and the classifier. Initialised as torchvision
    /// does ([`Init::KaimingNormal`]).
    pub fn resnet(blocks: &[usize]) -> Self {
        let mut layers = vec![
            conv_bn(64, 7, 2, 3),
            LayerSpec::Batchnorm { eps: BN_EPS, momentum: BN_MOMENTUM },
            LayerSpec::Relu,
            LayerSpec::Maxpool2d {
                pool: Size2::Square(3),
                stride: Some(Size2::Square(2)),
                padding: Padding::Explicit(1, 1),
                ceil_mode: false,
            },
        ];
        layers.extend(resnet_stages(&[64, 128, 256, 512], blocks, 64));
        layers.extend([LayerSpec::GlobalAvgpool2d, LayerSpec::Dense { units: None, bias: true }]);
        ModelSpec::new(layers).with_init(Init::KaimingNormal)
    }

    /// A ResNet for 28-96 px images (CIFAR's ResNet, He et al. section 4.2):
    /// a 3x3 stem of 16 channels without a pool, three stages of one basic
    /// block (16, 32, 64 channels; the second and third at stride 2), global
    /// average pooling and the classifier. 78k parameters. Initialised as
    /// PyTorch's modules are by default ([`Init::Pytorch`]): on the bundled
    /// Fashion-MNIST it learns better with it than with Glorot's or He's law
    /// (README, "Modern CNNs").
    pub fn resnet_small() -> Self {
        let mut layers =
            vec![conv_bn(16, 3, 1, 1), LayerSpec::Batchnorm { eps: BN_EPS, momentum: BN_MOMENTUM }, LayerSpec::Relu];
        layers.extend(resnet_stages(&[16, 32, 64], &[1, 1, 1], 16));
        layers.extend([LayerSpec::GlobalAvgpool2d, LayerSpec::Dense { units: None, bias: true }]);
        ModelSpec::new(layers).with_init(Init::Pytorch)
    }

    /// torchvision's `squeezenet1_1`: a 3x3 stride-2 stem, ceil-mode max-pools,
    /// eight fire modules ([`fire`]), dropout and a 1x1 convolution to the
    /// classes, ReLU and global average pooling.
    pub fn squeezenet1_1() -> Self {
        let pool = || LayerSpec::Maxpool2d {
            pool: Size2::Square(3),
            stride: Some(Size2::Square(2)),
            padding: Padding::Valid,
            ceil_mode: true,
        };
        let mut layers = vec![
            LayerSpec::Conv2d {
                filters: Some(64),
                kernel: Size2::Square(3),
                stride: Size2::Square(2),
                padding: Padding::Valid,
                bias: true,
            },
            LayerSpec::Relu,
            pool(),
        ];
        layers.extend(fire(16, 64));
        layers.extend(fire(16, 64));
        layers.push(pool());
        layers.extend(fire(32, 128));
        layers.extend(fire(32, 128));
        layers.push(pool());
        for (squeeze, expand) in [(48, 192), (48, 192), (64, 256), (64, 256)] {
            layers.extend(fire(squeeze, expand));
        }
        layers.extend([
            LayerSpec::Dropout { rate: 0.5 },
            LayerSpec::Conv2d {
                filters: None,
                kernel: Size2::Square(1),
                stride: Size2::Square(1),
                padding: Padding::Valid,
                bias: true,
            },
            LayerSpec::Relu,
            LayerSpec::GlobalAvgpool2d,
        ]);
        ModelSpec::new(layers)
    }
}

/// PyTorch's BatchNorm defaults.
const BN_EPS: f64 = crate::layers::batchnorm::DEFAULT_EPS;
const BN_MOMENTUM: f64 = crate::layers::batchnorm::DEFAULT_MOMENTUM;

/// A bias-free `kernel` x `kernel` convolution (a BatchNorm follows, whose
/// shift makes a bias redundant).
fn conv_bn(filters: usize, kernel: usize, stride: usize, padding: usize) -> LayerSpec {
    LayerSpec::Conv2d {
        filters: Some(filters),
        kernel: Size2::Square(kernel),
        stride: Size2::Square(stride),
        padding: Padding::Explicit(padding, padding),
        bias: false,
    }
}

/// torchvision's `BasicBlock` then its ReLU: `relu(body(x) + shortcut(x))`
/// with body `conv3x3(stride) bn relu conv3x3 bn` and shortcut the identity,
/// or `conv1x1(stride) bn` when the stride or the channels change.
fn basic_block(channels: usize, stride: usize, in_channels: usize) -> [LayerSpec; 2] {
    let bn = || LayerSpec::Batchnorm { eps: BN_EPS, momentum: BN_MOMENTUM };
    let body = vec![conv_bn(channels, 3, stride, 1), bn(), LayerSpec::Relu, conv_bn(channels, 3, 1, 1), bn()];
    let shortcut = match stride != 1 || in_channels != channels {
        true => vec![conv_bn(channels, 1, stride, 0), bn()],
        false => Vec::new(),
    };
    [LayerSpec::Residual { body, shortcut }, LayerSpec::Relu]
}

/// The stages of a ResNet: `blocks[s]` basic blocks of `channels[s]`, every
/// stage after the first starting at stride 2.
fn resnet_stages(channels: &[usize], blocks: &[usize], stem_channels: usize) -> Vec<LayerSpec> {
    let mut layers = Vec::new();
    let mut in_channels = stem_channels;
    for (stage, (&width, &count)) in channels.iter().zip(blocks).enumerate() {
        for block in 0..count {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            layers.extend(basic_block(width, stride, in_channels));
            in_channels = width;
        }
    }
    layers
}

/// SqueezeNet's fire module: a 1x1 squeeze convolution and ReLU, then two
/// expand branches concatenated along the channels (1x1 + ReLU, 3x3 padding 1
/// + ReLU): `2 * expand` output channels.
pub fn fire(squeeze: usize, expand: usize) -> [LayerSpec; 3] {
    let conv = |filters, kernel, padding| LayerSpec::Conv2d {
        filters: Some(filters),
        kernel: Size2::Square(kernel),
        stride: Size2::Square(1),
        padding: Padding::Explicit(padding, padding),
        bias: true,
    };
    let branch = |kernel, padding| BranchSpec { layers: vec![conv(expand, kernel, padding), LayerSpec::Relu] };
    [conv(squeeze, 1, 0), LayerSpec::Relu, LayerSpec::Concat { branches: vec![branch(1, 0), branch(3, 1)] }]
}
