//! The input format of a network, declared once: how an image file becomes
//! its input tensor. Training's configuration, the model file, decoding
//! ([`crate::decode::DecodeOptions`]) and the ONNX export all read
//! [`InputFormat`].
//!
//! ```
//! use convnet_data::{BitDepth, ColorMode, InputFormat, PixelScale};
//! let format = InputFormat::new([28, 28], ColorMode::Grayscale);
//! assert_eq!(format.input_shape(), [1, 28, 28]);
//! assert_eq!(format.image_len(), 784);
//! assert_eq!(format.pixel_scale, PixelScale::Unit);
//! assert_eq!(format.pixel_scale.factor(), 1.0 / 255.0);
//!
//! // a 16-bit source keeps two bytes per sample: 32896 is 128.0 on the 0-255
//! // scale, 32897 one 257th above it (8 bits would make both 128)
//! let sixteen = InputFormat { bit_depth: BitDepth::Sixteen, ..format };
//! assert_eq!(sixteen.image_len(), 2 * 784);
//! let mut inputs = [0.0f32; 2];
//! sixteen.to_inputs(&[0x80, 0x80, 0x81, 0x80], &mut inputs);
//! assert!((inputs[0] - 128.0 / 255.0).abs() < 1e-7);
//! assert!((inputs[1] - inputs[0] - 1.0 / 257.0 / 255.0).abs() < 1e-7);
//! ```

use serde::{Deserialize, Serialize};

/// The input format: size, channels, resize filter, crop and pixel scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFormat {
    /// Input `[height, width]`.
    pub image_size: [usize; 2],
    /// Input channels as decoded.
    pub color_mode: ColorMode,
    /// Byte-to-float scaling of the input.
    pub pixel_scale: PixelScale,
    /// Resampling filter of the resize.
    pub interpolation: Interpolation,
    /// Centre-crop to the output aspect ratio before resizing (no distortion).
    pub crop_to_aspect_ratio: bool,
    /// torchvision's preprocessing of pretrained networks instead: resize the
    /// shorter side to this many pixels (aspect ratio kept, Pillow's bilinear
    /// filter), then take the centred `image_size` crop (see [`crate::resample`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize_shorter: Option<usize>,
    /// Crop each image to its content first: the bounding box of the pixels
    /// brighter than Otsu's threshold, plus a margin (see [`crate::content_crop`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub crop_content: bool,
    /// Bits kept per decoded sample: 8, or 16 for sources with more than 8
    /// bits (16-bit PNG or TIFF, DICOM after its VOI window).
    #[serde(default, skip_serializing_if = "BitDepth::is_eight")]
    pub bit_depth: BitDepth,
}

impl Default for InputFormat {
    /// 224x224 RGB, the seed's input.
    fn default() -> Self {
        InputFormat::new([224, 224], ColorMode::Rgb)
    }
}

impl InputFormat {
    /// `image_size` in `color_mode`, with the default pipeline: 0-1 pixels,
    /// bilinear resizing, no crop.
    pub fn new(image_size: [usize; 2], color_mode: ColorMode) -> Self {
        InputFormat {
            image_size,
            color_mode,
            pixel_scale: PixelScale::Unit,
            interpolation: Interpolation::Bilinear,
            crop_to_aspect_ratio: false,
            resize_shorter: None,
            crop_content: false,
            bit_depth: BitDepth::Eight,
        }
    }

    /// Checks `resize_shorter`: at least the crop (`image_size`), at most 8192.
    pub fn check_resize(&self) -> Result<(), String> {
        let [height, width] = self.image_size;
        match self.resize_shorter {
            Some(shorter) if shorter < height.max(width) || shorter > 8192 => {
                Err(format!("--resize-shorter {shorter} must be at least the {height}x{width} crop and at most 8192"))
            }
            _ => Ok(()),
        }
    }

    /// Per-sample input shape `(C, H, W)`.
    pub fn input_shape(&self) -> [usize; 3] {
        [self.color_mode.channels(), self.image_size[0], self.image_size[1]]
    }

    /// Samples of one decoded image: `channels * height * width`.
    pub fn samples(&self) -> usize {
        self.color_mode.channels() * self.image_size[0] * self.image_size[1]
    }

    /// Bytes of one decoded image: its samples times 1 (8-bit) or 2 (16-bit,
    /// little-endian).
    pub fn image_len(&self) -> usize {
        self.samples() * self.bit_depth.bytes()
    }

    /// Network inputs from one decoded image's bytes: `x * factor` for an
    /// 8-bit sample `x`, `(v / 257) * factor` for a 16-bit one `v` (the same
    /// 0-255 range, with the 257 steps between two 8-bit levels kept).
    pub fn to_inputs(&self, bytes: &[u8], out: &mut [f32]) {
        self.bit_depth.to_inputs(self.pixel_scale, bytes, out);
    }
}

/// Bits per decoded sample.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BitDepth {
    /// One byte per sample (0-255).
    #[default]
    #[serde(rename = "8")]
    Eight,
    /// Two bytes per sample (0-65535, little-endian).
    #[serde(rename = "16")]
    Sixteen,
}

impl BitDepth {
    /// Bytes per sample.
    pub fn bytes(self) -> usize {
        match self {
            BitDepth::Eight => 1,
            BitDepth::Sixteen => 2,
        }
    }

    /// Whether this is 8 bits (the default, left out of model files).
    pub fn is_eight(&self) -> bool {
        *self == BitDepth::Eight
    }

    /// Network inputs from samples of this depth (see [`InputFormat::to_inputs`]).
    pub fn to_inputs(self, scale: PixelScale, bytes: &[u8], out: &mut [f32]) {
        let factor = scale.factor();
        match self {
            BitDepth::Eight => {
                for (input, &sample) in out.iter_mut().zip(bytes) {
                    *input = sample as f32 * factor;
                }
            }
            BitDepth::Sixteen => {
                let factor = factor / 257.0;
                for (input, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *input = u16::from_le_bytes([pair[0], pair[1]]) as f32 * factor;
                }
            }
        }
    }

    /// 8-bit samples for display (a 16-bit `v` becomes `round(v / 257)`).
    pub fn to_display(self, bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
        match self {
            BitDepth::Eight => std::borrow::Cow::Borrowed(bytes),
            BitDepth::Sixteen => bytes
                .chunks_exact(2)
                .map(|pair| ((u16::from_le_bytes([pair[0], pair[1]]) as u32 + 128) / 257) as u8)
                .collect(),
        }
    }
}

/// Channels of the decoded image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorMode {
    /// 3 channels.
    #[default]
    Rgb,
    /// 1 channel (ITU-R 601 luma).
    Grayscale,
    /// 4 channels.
    Rgba,
}

impl ColorMode {
    /// Number of channels.
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Rgb => 3,
            ColorMode::Grayscale => 1,
            ColorMode::Rgba => 4,
        }
    }

    /// Parses `rgb`, `grayscale` (or `greyscale`), `rgba`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "rgb" => Some(ColorMode::Rgb),
            "grayscale" | "greyscale" => Some(ColorMode::Grayscale),
            "rgba" => Some(ColorMode::Rgba),
            _ => None,
        }
    }
}

/// Resampling filter used for resizing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// Bilinear (triangle filter; antialiased when shrinking, unlike
    /// TensorFlow's default `tf.image.resize`).
    #[default]
    Bilinear,
    /// Nearest neighbour.
    Nearest,
    /// Area averaging (box filter), the best choice for large reductions.
    Area,
    /// Lanczos with a 3-lobe window.
    Lanczos3,
}

impl Interpolation {
    /// Parses `bilinear`, `nearest`, `area`, `lanczos3`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "bilinear" => Some(Interpolation::Bilinear),
            "nearest" => Some(Interpolation::Nearest),
            "area" => Some(Interpolation::Area),
            "lanczos3" => Some(Interpolation::Lanczos3),
            _ => None,
        }
    }
}

/// How pixel bytes become network inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelScale {
    /// `x / 255`, in `[0, 1]` (the default; Keras' `Rescaling(1/255)`).
    #[default]
    Unit,
    /// The raw values `0..=255` (what the original Keras script fed its model).
    Raw,
}

impl PixelScale {
    /// The factor that multiplies a byte.
    pub fn factor(self) -> f32 {
        match self {
            PixelScale::Unit => 1.0 / 255.0,
            PixelScale::Raw => 1.0,
        }
    }
}
