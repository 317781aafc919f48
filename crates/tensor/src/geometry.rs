//! The geometry of a sliding window, shared by convolution and pooling: the
//! padding modes (Keras semantics) and [`WindowGeometry`], every size of one
//! window layer's input, kernel, stride, padding and output.
//!
//! ## Padding
//!
//! For one spatial axis of length `input`, window `kernel` and stride `stride`:
//!
//! - [`Padding::Valid`]: no padding; `out = floor((input - kernel) / stride) + 1`,
//!   and the input must be at least `kernel` long.
//! - [`Padding::Same`]: `out = ceil(input / stride)`; the total padding is
//!   `max((out - 1) * stride + kernel - input, 0)`, of which `total / 2` goes
//!   before (top/left) and the rest after (bottom/right). When the total is odd
//!   the extra row/column is at the *end*, exactly as in TensorFlow/Keras
//!   (PyTorch's `padding=1` is symmetric, which agrees for odd kernels at
//!   stride 1).
//!
//! ```
//! use convnet_tensor::Padding;
//! assert_eq!(Padding::Valid.resolve(224, 3, 1), Some((222, 0)));
//! assert_eq!(Padding::Same.resolve(28, 3, 1), Some((28, 1)));
//! // 5 with kernel 2, stride 2: out 3, total pad 1, all of it after.
//! assert_eq!(Padding::Same.resolve(5, 2, 2), Some((3, 0)));
//! assert_eq!(Padding::Valid.resolve(2, 3, 1), None);
//! ```

use serde::{Deserialize, Serialize};

/// How a window layer treats the border.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(try_from = "PaddingText", into = "PaddingText")]
pub enum Padding {
    /// No padding: windows lie entirely inside the input.
    #[default]
    Valid,
    /// Pad so that `out = ceil(input / stride)`; odd padding puts the extra at the end.
    Same,
    /// PyTorch's numeric padding: `(rows, columns)` added on *both* sides of
    /// each axis, `out = floor((input + 2p - kernel) / stride) + 1`. ResNet's
    /// stem is `7x7, stride 2, padding 3`, which no `same` reproduces (at
    /// stride 2 `same` pads 2 before and 3 after).
    Explicit(usize, usize),
}

/// How [`Padding`] is written in architecture files: `"valid"`, `"same"`, a
/// number (both axes) or `[rows, columns]`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged, expecting = "padding must be \"valid\", \"same\", a number of rows and columns, or [rows, columns]")]
enum PaddingText {
    Mode(String),
    Square(usize),
    Rect([usize; 2]),
}

impl TryFrom<PaddingText> for Padding {
    type Error = String;
    fn try_from(text: PaddingText) -> Result<Self, String> {
        match text {
            PaddingText::Mode(mode) if mode == "valid" => Ok(Padding::Valid),
            PaddingText::Mode(mode) if mode == "same" => Ok(Padding::Same),
            PaddingText::Mode(mode) => {
                Err(format!("unknown padding \"{mode}\": use \"valid\", \"same\", a number or [rows, columns]"))
            }
            PaddingText::Square(p) => Ok(Padding::Explicit(p, p)),
            PaddingText::Rect([h, w]) => Ok(Padding::Explicit(h, w)),
        }
    }
}

impl From<Padding> for PaddingText {
    fn from(padding: Padding) -> Self {
        match padding {
            Padding::Valid => PaddingText::Mode("valid".into()),
            Padding::Same => PaddingText::Mode("same".into()),
            Padding::Explicit(h, w) if h == w => PaddingText::Square(h),
            Padding::Explicit(h, w) => PaddingText::Rect([h, w]),
        }
    }
}

impl Padding {
    /// Output length and padding before the first element on one axis
    /// (`axis` 0 for rows, 1 for columns), or `None` if the (padded) input is
    /// too short or an argument is zero.
    pub fn resolve_axis(self, axis: usize, input: usize, kernel: usize, stride: usize) -> Option<(usize, usize)> {
        if input == 0 || kernel == 0 || stride == 0 {
            return None;
        }
        match self {
            Padding::Valid => {
                if input < kernel {
                    None
                } else {
                    Some(((input - kernel) / stride + 1, 0))
                }
            }
            Padding::Same => {
                let out = input.div_ceil(stride);
                let total = ((out - 1) * stride + kernel).saturating_sub(input);
                Some((out, total / 2))
            }
            Padding::Explicit(rows, columns) => {
                let pad = if axis == 0 { rows } else { columns };
                let padded = input + 2 * pad;
                (padded >= kernel).then(|| ((padded - kernel) / stride + 1, pad))
            }
        }
    }

    /// [`Padding::resolve_axis`] for an axis whose padding is the same as the rows'.
    pub fn resolve(self, input: usize, kernel: usize, stride: usize) -> Option<(usize, usize)> {
        self.resolve_axis(0, input, kernel, stride)
    }

    /// `"valid"`, `"same"`, `"pad 3"` or `"pad 1x2"`.
    pub fn describe(self) -> String {
        match self {
            Padding::Valid => "valid".into(),
            Padding::Same => "same".into(),
            Padding::Explicit(h, w) if h == w => format!("pad {h}"),
            Padding::Explicit(h, w) => format!("pad {h}x{w}"),
        }
    }
}

/// Everything about the shapes of one convolution (or any sliding window).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowGeometry {
    /// Input channels `C`.
    pub in_channels: usize,
    /// Input height `H`.
    pub in_h: usize,
    /// Input width `W`.
    pub in_w: usize,
    /// Kernel height `KH`.
    pub kernel_h: usize,
    /// Kernel width `KW`.
    pub kernel_w: usize,
    /// Vertical stride.
    pub stride_h: usize,
    /// Horizontal stride.
    pub stride_w: usize,
    /// Zero rows added above the input.
    pub pad_top: usize,
    /// Zero columns added left of the input.
    pub pad_left: usize,
    /// Output height `OH`.
    pub out_h: usize,
    /// Output width `OW`.
    pub out_w: usize,
}

impl WindowGeometry {
    /// Resolves the output size and padding; `None` if the input is too small
    /// for the kernel (valid padding) or any size is zero.
    pub fn new(
        in_channels: usize,
        in_h: usize,
        in_w: usize,
        kernel: (usize, usize),
        stride: (usize, usize),
        padding: Padding,
    ) -> Option<Self> {
        let (out_h, pad_top) = padding.resolve_axis(0, in_h, kernel.0, stride.0)?;
        let (out_w, pad_left) = padding.resolve_axis(1, in_w, kernel.1, stride.1)?;
        if in_channels == 0 {
            return None;
        }
        Some(WindowGeometry {
            in_channels,
            in_h,
            in_w,
            kernel_h: kernel.0,
            kernel_w: kernel.1,
            stride_h: stride.0,
            stride_w: stride.1,
            pad_top,
            pad_left,
            out_h,
            out_w,
        })
    }

    /// PyTorch's `ceil_mode` for pooling: the output length rounds *up*, so a
    /// last window that hangs over the end (partly in no input at all) still
    /// counts, except one that would start past the input and its left padding:
    ///
    /// ```text
    /// out = ceil((H + 2p - K) / S) + 1, minus 1 if (out - 1) * S >= H + p
    /// ```
    ///
    /// ```
    /// use convnet_tensor::{Padding, WindowGeometry};
    /// // SqueezeNet's first pool: 111 -> 55 with ceil mode (54 without)
    /// let floor = WindowGeometry::new(1, 111, 111, (3, 3), (2, 2), Padding::Valid).unwrap();
    /// assert_eq!((floor.out_h, floor.with_ceil_mode().out_h), (55, 55));
    /// let floor = WindowGeometry::new(1, 112, 112, (3, 3), (2, 2), Padding::Valid).unwrap();
    /// assert_eq!((floor.out_h, floor.with_ceil_mode().out_h), (55, 56));
    /// ```
    pub fn with_ceil_mode(mut self) -> Self {
        let ceil = |input: usize, pad: usize, kernel: usize, stride: usize| {
            let span = (input + 2 * pad).saturating_sub(kernel);
            let out = span.div_ceil(stride) + 1;
            if (out - 1) * stride >= input + pad {
                out - 1
            } else {
                out
            }
        };
        self.out_h = self.out_h.max(ceil(self.in_h, self.pad_top, self.kernel_h, self.stride_h));
        self.out_w = self.out_w.max(ceil(self.in_w, self.pad_left, self.kernel_w, self.stride_w));
        self
    }

    /// A 1x1, stride-1 window without padding (a *pointwise* convolution):
    /// its column matrix `im2col(x)` is `x` itself, `(C, H*W)`, so the fast
    /// path multiplies by the input where it lies instead of copying it.
    pub fn is_pointwise(&self) -> bool {
        (self.kernel_h, self.kernel_w, self.stride_h, self.stride_w, self.pad_top, self.pad_left) == (1, 1, 1, 1, 0, 0)
    }

    /// Rows of the column matrix: `C * KH * KW`.
    pub fn col_rows(&self) -> usize {
        self.in_channels * self.kernel_h * self.kernel_w
    }

    /// Output pixels per channel: `OH * OW`.
    pub fn out_pixels(&self) -> usize {
        self.out_h * self.out_w
    }

    /// Input elements per image: `C * H * W`.
    pub fn in_len(&self) -> usize {
        self.in_channels * self.in_h * self.in_w
    }

    /// The input column that output column `out_col` reads at kernel column
    /// `kj`, or `None` if it falls in the padding.
    #[inline]
    pub fn input_col(&self, out_col: usize, kj: usize) -> Option<usize> {
        (out_col * self.stride_w + kj).checked_sub(self.pad_left).filter(|&iw| iw < self.in_w)
    }

    /// Same for rows.
    #[inline]
    pub fn input_row(&self, out_row: usize, ki: usize) -> Option<usize> {
        (out_row * self.stride_h + ki).checked_sub(self.pad_top).filter(|&ih| ih < self.in_h)
    }

    /// The range of output columns `j` whose input column `j*s + kj - pl` is
    /// inside the image: `[first, end)`.
    #[inline]
    pub fn valid_out_cols(&self, kj: usize) -> (usize, usize) {
        // j*s + kj >= pl  <=>  j >= ceil((pl - kj) / s)
        let first = self.pad_left.saturating_sub(kj).div_ceil(self.stride_w);
        // j*s + kj - pl <= W - 1  <=>  j <= (W - 1 + pl - kj) / s
        let end = match (self.in_w + self.pad_left).checked_sub(kj + 1) {
            Some(last) => (last / self.stride_w + 1).min(self.out_w),
            None => 0,
        };
        (first.min(end), end)
    }
}
