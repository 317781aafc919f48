//! The input format of a network, declared once: how an image file becomes
//! its input tensor. Training's configuration, the model file, decoding
//! ([`crate::decode::DecodeOptions`]) and the ONNX export all read
//! [`InputFormat`].
//!
//! ```
//! use convnet_data::{ColorMode, InputFormat, PixelScale};
//! let format = InputFormat::new([28, 28], ColorMode::Grayscale);
//! assert_eq!(format.input_shape(), [1, 28, 28]);
//! assert_eq!(format.image_len(), 784);
//! assert_eq!(format.pixel_scale, PixelScale::Unit);
//! assert_eq!(format.pixel_scale.factor(), 1.0 / 255.0);
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

    /// Bytes of one decoded image: `channels * height * width`.
    pub fn image_len(&self) -> usize {
        self.color_mode.channels() * self.image_size[0] * self.image_size[1]
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
