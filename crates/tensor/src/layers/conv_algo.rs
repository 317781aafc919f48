//! How each pass of a convolution is computed.
//!
//! A [`Conv2d`](super::Conv2d) runs three passes in a training step, each a
//! correlation that either method can compute:
//!
//! | pass | computes | shapes |
//! |---|---|---|
//! | [`ConvPass::Forward`] | `Y = W ⋆ X + b` | `X (N, C, H, W)` -> `Y (N, K, OH, OW)` |
//! | [`ConvPass::InputGrad`] | `dX = W' ⋆ dY` (`W'`: `W` turned 180 degrees) | `dY (N, K, OH, OW)` -> `dX (N, C, H, W)` |
//! | [`ConvPass::WeightGrad`] | `dW = dY ⋆ X`, `db = sum dY` | -> `dW (K, C, KH, KW)`, `db (K,)` |
//!
//! - [`ConvAlgo::Im2col`]: the columns of `X` times the weights as one GEMM
//!   per tile of output rows ([`crate::kernels::conv_tiled`]): any kernel,
//!   stride and padding. When both backward passes run by im2col they share
//!   one pass over the columns.
//! - [`ConvAlgo::Winograd`]: F(4x4, 3x3) for the forward pass and the input
//!   gradient, F(3x3, 4x4) for the weight gradient
//!   ([`crate::kernels::winograd::passes`]): 3x3 stride-1 layers only (the
//!   others fall back to im2col), 4x fewer multiplications, a few times more
//!   rounding (`BENCHMARKS.md`).
//! - [`ConvAlgo::Auto`]: Winograd where it applies and the layer is large
//!   enough for its transforms to pay, im2col otherwise — a model of the
//!   measurements in `BENCHMARKS.md`, never a timing taken at run time, so the
//!   choice (and therefore every bit of a run) depends only on the model and
//!   the image size.
//!
//! Every pass chooses on its own ([`ConvAlgos`]). [`ConvAlgoSpec`] is the text
//! form of `--conv-algo`: comma-separated rules `[LAYER][.PASS]=ALGO` (or a
//! bare `ALGO` for every layer and pass), later rules overriding earlier ones.
//! `LAYER` is the layer's number in `convnet summary`, `PASS` is `forward`,
//! `input-grad` or `weight-grad` (or `fwd`, `dx`, `dw`).
//!
//! ```
//! use convnet_tensor::{ConvAlgo, ConvAlgoSpec, ConvAlgos, ConvPass};
//!
//! let spec: ConvAlgoSpec = "winograd,dw=im2col,0=im2col".parse().unwrap();
//! // layer 2: Winograd except its weight gradient
//! let layer2 = spec.algos_for(2);
//! assert_eq!(layer2.get(ConvPass::Forward), ConvAlgo::Winograd);
//! assert_eq!(layer2.get(ConvPass::InputGrad), ConvAlgo::Winograd);
//! assert_eq!(layer2.get(ConvPass::WeightGrad), ConvAlgo::Im2col);
//! // layer 0: im2col for every pass (the last rule wins)
//! assert_eq!(spec.algos_for(0), ConvAlgos::all(ConvAlgo::Im2col));
//! assert_eq!(spec.to_string(), "winograd,weight-grad=im2col,0=im2col");
//! assert!("winograd,dw=fast".parse::<ConvAlgoSpec>().is_err());
//! ```

use crate::error::TensorError;
use std::fmt;
use std::str::FromStr;

/// How a pass of a convolution is computed. The result is the same
/// convolution either way, up to rounding (Winograd's f32 error is a few times
/// im2col's, see `BENCHMARKS.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum ConvAlgo {
    /// Winograd where it applies (3x3, stride 1) and [`winograd_pays`] for the
    /// pass (enough channels, a wide enough output); im2col otherwise.
    #[default]
    Auto,
    /// im2col + GEMM ([`crate::kernels::conv_tiled`]).
    Im2col,
    /// Winograd ([`crate::kernels::winograd::passes`]) wherever it applies (3x3,
    /// stride 1); im2col on the other layers.
    Winograd,
}

/// With fewer input or output channels than this, `Auto` keeps im2col: the
/// transforms, whose cost grows with the channels on one side only, no longer
/// pay for the saved products (conv1 of `baseline`, 3 input channels: each of
/// its passes ran 1.5-2x slower by Winograd, measured in `BENCHMARKS.md`).
pub const AUTO_WINOGRAD_MIN_CHANNELS: usize = 8;

/// With narrower outputs than this, `Auto` keeps im2col unless the layer
/// has [`AUTO_WINOGRAD_NARROW_MIN_CHANNELS`] channels on both sides (and for
/// the weight gradient always). Each image's tiles are cut into spans of 32
/// (`kernels/winograd/tiles.rs`) and a narrow map has few of them, so the
/// point GEMMs read all the transformed weights for a few tiles: with few
/// channels the transforms cost more than the saved products (the `small`
/// network's 14-pixel-wide conv2, 16 -> 32 channels, forward 0.49 ms by
/// im2col against 0.61 by Winograd, measured in `BENCHMARKS.md`).
pub const AUTO_WINOGRAD_MIN_WIDTH: usize = 32;

/// Outputs at least this wide, and narrower than [`AUTO_WINOGRAD_MIN_WIDTH`],
/// take Winograd for the forward pass and the input gradient when both
/// channel counts reach [`AUTO_WINOGRAD_NARROW_MIN_CHANNELS`]. ResNet-18's
/// 28- and 14-wide stages (128 and 256 channels) run their forward passes
/// 10-20% faster by Winograd, and the weight gradient on 14-wide maps 1.5x
/// slower (`BENCHMARKS.md`, round 3, fourth sitting). Its 7-wide stage (512
/// channels, 4 tiles an image) ran 1.7-2x slower while each image's tiles
/// made a point GEMM of their own; with the tiles of 8 images in one span
/// (`kernels/winograd/correlate.rs`, `images_per_group`) and each tile in a
/// lane of its own (`kernels/winograd/gathered.rs`) its blocks run 67 and 53
/// -> 35 and 37 ms a batch in inference (round 3, sixth sitting); a pair of
/// 128-channel layers at 8x8 (ResNet-18 at 64x64) 2.8x faster than by im2col.
pub const AUTO_WINOGRAD_NARROW_MIN_WIDTH: usize = 7;

/// See [`AUTO_WINOGRAD_NARROW_MIN_WIDTH`]; narrow layers with fewer channels
/// (ResNet-18's first stage at a 64x64 input, 16 wide at 64 channels) were not
/// measured faster, and keep im2col.
pub const AUTO_WINOGRAD_NARROW_MIN_CHANNELS: usize = 128;

/// Whether `Auto` computes `pass` of a 3x3 stride-1 convolution with
/// `channels = (in, out)` by Winograd, for outputs `out_w` wide (`None`: not
/// known, taken as wide). A model of the measurements in `BENCHMARKS.md`
/// (never a timing taken at run time).
///
/// ```
/// use convnet_tensor::{winograd_pays, ConvPass};
/// assert!(winograd_pays(ConvPass::Forward, (64, 64), Some(56)));
/// assert!(!winograd_pays(ConvPass::Forward, (3, 32), Some(222))); // 3 input channels
/// assert!(winograd_pays(ConvPass::Forward, (128, 128), Some(28))); // narrow, many channels
/// assert!(!winograd_pays(ConvPass::WeightGrad, (128, 128), Some(28)));
/// assert!(!winograd_pays(ConvPass::Forward, (16, 32), Some(14))); // narrow, few channels
/// assert!(!winograd_pays(ConvPass::Forward, (64, 64), Some(16)));
/// assert!(winograd_pays(ConvPass::Forward, (512, 512), Some(7)));
/// assert!(!winograd_pays(ConvPass::WeightGrad, (512, 512), Some(7)));
/// ```
pub fn winograd_pays(pass: ConvPass, channels: (usize, usize), out_w: Option<usize>) -> bool {
    let fewest_channels = channels.0.min(channels.1);
    let out_w = out_w.unwrap_or(usize::MAX);
    let narrow_pays = pass != ConvPass::WeightGrad
        && out_w >= AUTO_WINOGRAD_NARROW_MIN_WIDTH
        && fewest_channels >= AUTO_WINOGRAD_NARROW_MIN_CHANNELS;
    fewest_channels >= AUTO_WINOGRAD_MIN_CHANNELS && (out_w >= AUTO_WINOGRAD_MIN_WIDTH || narrow_pays)
}

impl ConvAlgo {
    /// `"auto"`, `"im2col"` or `"winograd"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConvAlgo::Auto => "auto",
            ConvAlgo::Im2col => "im2col",
            ConvAlgo::Winograd => "winograd",
        }
    }

    /// Parses [`ConvAlgo::as_str`]'s names.
    pub fn parse(name: &str) -> Option<ConvAlgo> {
        [ConvAlgo::Auto, ConvAlgo::Im2col, ConvAlgo::Winograd].into_iter().find(|algo| algo.as_str() == name)
    }
}

/// One of the three passes of a convolution (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvPass {
    /// `Y = W ⋆ X + b`.
    Forward,
    /// `dX`, the gradient sent to the layer below.
    InputGrad,
    /// `dW` and `db`.
    WeightGrad,
}

impl ConvPass {
    /// The three passes in the order a training step runs the first one and
    /// [`ConvAlgos`] lists them.
    pub const ALL: [ConvPass; 3] = [ConvPass::Forward, ConvPass::InputGrad, ConvPass::WeightGrad];

    /// `"forward"`, `"input-grad"` or `"weight-grad"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConvPass::Forward => "forward",
            ConvPass::InputGrad => "input-grad",
            ConvPass::WeightGrad => "weight-grad",
        }
    }

    /// The short name: `"fwd"`, `"dx"` or `"dw"`.
    pub fn short_name(self) -> &'static str {
        match self {
            ConvPass::Forward => "fwd",
            ConvPass::InputGrad => "dx",
            ConvPass::WeightGrad => "dw",
        }
    }

    /// Parses either name.
    pub fn parse(name: &str) -> Option<ConvPass> {
        ConvPass::ALL.into_iter().find(|pass| pass.as_str() == name || pass.short_name() == name)
    }
}

/// The method of each pass of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct ConvAlgos {
    /// The forward pass.
    pub forward: ConvAlgo,
    /// The input gradient.
    pub input_grad: ConvAlgo,
    /// The weight (and bias) gradient.
    pub weight_grad: ConvAlgo,
}

impl ConvAlgos {
    /// `algo` for every pass.
    pub fn all(algo: ConvAlgo) -> ConvAlgos {
        ConvAlgos { forward: algo, input_grad: algo, weight_grad: algo }
    }

    /// The method of `pass`.
    pub fn get(&self, pass: ConvPass) -> ConvAlgo {
        match pass {
            ConvPass::Forward => self.forward,
            ConvPass::InputGrad => self.input_grad,
            ConvPass::WeightGrad => self.weight_grad,
        }
    }

    /// Sets the method of `pass`.
    pub fn set(&mut self, pass: ConvPass, algo: ConvAlgo) {
        match pass {
            ConvPass::Forward => self.forward = algo,
            ConvPass::InputGrad => self.input_grad = algo,
            ConvPass::WeightGrad => self.weight_grad = algo,
        }
    }

    /// `"winograd"` when every pass agrees, else each pass by its short name:
    /// `"fwd winograd, dx winograd, dw im2col"` (`convnet summary`, `convnet bench`).
    pub fn describe(&self) -> String {
        if self.forward == self.input_grad && self.forward == self.weight_grad {
            return self.forward.as_str().to_string();
        }
        ConvPass::ALL
            .iter()
            .map(|&pass| format!("{} {}", pass.short_name(), self.get(pass).as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One rule of a [`ConvAlgoSpec`]: `algo` for `pass` (all passes if `None`) of
/// layer number `layer` (all convolutions if `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvAlgoRule {
    /// The layer's number in the model (as `convnet summary` prints it).
    pub layer: Option<usize>,
    /// The pass.
    pub pass: Option<ConvPass>,
    /// The method.
    pub algo: ConvAlgo,
}

/// The choice of method for every convolution of a model, pass by pass: the
/// text of `--conv-algo` (module docs). The empty spec means `auto` everywhere.
#[derive(Clone, Debug, PartialEq, Eq, Default, Hash)]
pub struct ConvAlgoSpec {
    /// The rules, applied in order (later ones win).
    pub rules: Vec<ConvAlgoRule>,
}

impl ConvAlgoSpec {
    /// `algo` for every layer and pass.
    pub fn all(algo: ConvAlgo) -> ConvAlgoSpec {
        ConvAlgoSpec { rules: vec![ConvAlgoRule { layer: None, pass: None, algo }] }
    }

    /// What the rules give layer number `layer` (`Auto` where no rule speaks).
    pub fn algos_for(&self, layer: usize) -> ConvAlgos {
        let mut algos = ConvAlgos::all(ConvAlgo::Auto);
        for rule in self.rules.iter().filter(|rule| rule.layer.is_none_or(|l| l == layer)) {
            match rule.pass {
                Some(pass) => algos.set(pass, rule.algo),
                None => algos = ConvAlgos::all(rule.algo),
            }
        }
        algos
    }

    /// The layer numbers the rules name, in order of first mention.
    pub fn named_layers(&self) -> Vec<usize> {
        let mut layers = Vec::new();
        for layer in self.rules.iter().filter_map(|rule| rule.layer) {
            if !layers.contains(&layer) {
                layers.push(layer);
            }
        }
        layers
    }
}

impl fmt::Display for ConvAlgoSpec {
    /// The canonical text: `auto` for no rules, else the rules with long pass names.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rules.is_empty() {
            return f.write_str(ConvAlgo::Auto.as_str());
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match (rule.layer, rule.pass) {
                (None, None) => {}
                (Some(layer), None) => write!(f, "{layer}=")?,
                (None, Some(pass)) => write!(f, "{}=", pass.as_str())?,
                (Some(layer), Some(pass)) => write!(f, "{layer}.{}=", pass.as_str())?,
            }
            f.write_str(rule.algo.as_str())?;
        }
        Ok(())
    }
}

impl FromStr for ConvAlgoSpec {
    type Err = TensorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |what: String| {
            TensorError::Config(format!(
                "{what} in conv-algo \"{text}\": expected rules like `winograd`, `weight-grad=im2col`, `2=winograd` \
                 or `2.dx=im2col` (methods: auto, im2col, winograd; passes: forward, input-grad, weight-grad or \
                 fwd, dx, dw; layers: the numbers in `convnet summary`)"
            ))
        };
        let mut rules = Vec::new();
        for item in text.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(bad("an empty rule".to_string()));
            }
            let (target, algo_name) = match item.split_once('=') {
                Some((target, algo)) => (Some(target.trim()), algo.trim()),
                None => (None, item),
            };
            let algo = ConvAlgo::parse(algo_name).ok_or_else(|| bad(format!("unknown method `{algo_name}`")))?;
            let (layer, pass) = match target {
                None => (None, None),
                Some(target) => {
                    let (layer_text, pass_text) = match target.split_once('.') {
                        Some((layer, pass)) => (Some(layer), Some(pass)),
                        None if target.bytes().all(|b| b.is_ascii_digit()) => (Some(target), None),
                        None => (None, Some(target)),
                    };
                    let layer = layer_text
                        .map(|l| l.parse::<usize>().map_err(|_| bad(format!("`{l}` is not a layer number"))))
                        .transpose()?;
                    let pass = pass_text
                        .map(|p| ConvPass::parse(p).ok_or_else(|| bad(format!("unknown pass `{p}`"))))
                        .transpose()?;
                    (layer, pass)
                }
            };
            rules.push(ConvAlgoRule { layer, pass, algo });
        }
        Ok(ConvAlgoSpec { rules })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_apply_in_order_and_print_back() {
        let spec: ConvAlgoSpec = " im2col , 2=winograd, 2.dw=auto,input-grad=winograd ".parse().unwrap();
        assert_eq!(spec.to_string(), "im2col,2=winograd,2.weight-grad=auto,input-grad=winograd");
        assert_eq!(spec.to_string().parse::<ConvAlgoSpec>().unwrap(), spec);
        let two = spec.algos_for(2);
        assert_eq!(
            two,
            ConvAlgos { forward: ConvAlgo::Winograd, input_grad: ConvAlgo::Winograd, weight_grad: ConvAlgo::Auto }
        );
        let other = spec.algos_for(6);
        assert_eq!(
            other,
            ConvAlgos { forward: ConvAlgo::Im2col, input_grad: ConvAlgo::Winograd, weight_grad: ConvAlgo::Im2col }
        );
        assert_eq!(other.describe(), "fwd im2col, dx winograd, dw im2col");
        assert_eq!(ConvAlgos::all(ConvAlgo::Winograd).describe(), "winograd");
        assert_eq!(spec.named_layers(), vec![2]);
        assert_eq!(ConvAlgoSpec::default().to_string(), "auto");
        assert_eq!(ConvAlgoSpec::default().algos_for(0), ConvAlgos::all(ConvAlgo::Auto));
        assert_eq!("auto".parse::<ConvAlgoSpec>().unwrap().algos_for(3), ConvAlgos::all(ConvAlgo::Auto));
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (text, says) in [
            ("fast", "unknown method `fast`"),
            ("winograd,", "an empty rule"),
            ("dz=im2col", "unknown pass `dz`"),
            ("x.dw=im2col", "`x` is not a layer number"),
            ("2.sideways=im2col", "unknown pass `sideways`"),
            ("2=", "unknown method ``"),
        ] {
            let error = text.parse::<ConvAlgoSpec>().unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
    }
}
