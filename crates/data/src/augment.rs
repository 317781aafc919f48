//! Random augmentation for training images, each transform seeded.
//!
//! Applied to one `C x H x W` float image at a time, in this order:
//!
//! 1. flips (horizontal, vertical), each with probability 1/2;
//! 2. one affine resampling combining a rotation by `U(-rotation, rotation)`
//!    degrees, a zoom by `1 + U(-zoom, zoom)` and a translation by
//!    `U(-translation, translation)` of the width/height, about the centre,
//!    with bilinear interpolation; pixels that come from outside the image take
//!    the nearest edge value (Keras' `fill_mode="nearest"`);
//! 3. brightness: add `U(-brightness, brightness)` times the pixel range;
//! 4. contrast: scale the deviation from each channel's mean by
//!    `1 + U(-contrast, contrast)`.
//!
//! The generator of image `i` in epoch `e` is seeded by `(seed, e, i)`, so the
//! augmented images do not depend on batch composition or thread count.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Which augmentations to apply, and how strongly. All off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Augmentation {
    /// Random left-right flips.
    pub flip_horizontal: bool,
    /// Random top-bottom flips.
    pub flip_vertical: bool,
    /// Largest rotation, in degrees.
    pub rotation_degrees: f32,
    /// Largest relative zoom (0.1 = 10% in or out).
    pub zoom: f32,
    /// Largest shift as a fraction of the size.
    pub translation: f32,
    /// Largest brightness change as a fraction of the pixel range.
    pub brightness: f32,
    /// Largest relative contrast change.
    pub contrast: f32,
}

impl Augmentation {
    /// The `--augment` preset: horizontal flips, 10 degrees, 10% zoom and shift,
    /// 10% brightness and contrast.
    pub fn standard() -> Self {
        Augmentation {
            flip_horizontal: true,
            flip_vertical: false,
            rotation_degrees: 10.0,
            zoom: 0.1,
            translation: 0.1,
            brightness: 0.1,
            contrast: 0.1,
        }
    }

    /// Applies the augmentations to `image` (`channels x height x width`,
    /// values in `[0, range]`), using `scratch` (same length) as workspace.
    pub fn apply(&self, image: &mut [f32], scratch: &mut [f32], shape: [usize; 3], range: f32, rng: &mut impl Rng) {
        let [channels, height, width] = shape;
        let plane = height * width;
        if self.flip_horizontal && rng.random_bool(0.5) {
            for row in image.chunks_exact_mut(width) {
                row.reverse();
            }
        }
        if self.flip_vertical && rng.random_bool(0.5) {
            for channel in image.chunks_exact_mut(plane) {
                for i in 0..height / 2 {
                    let (top, bottom) = channel.split_at_mut((height - 1 - i) * width);
                    top[i * width..(i + 1) * width].swap_with_slice(&mut bottom[..width]);
                }
            }
        }
        let sym = |rng: &mut dyn rand::RngCore, limit: f32| -> f32 {
            if limit > 0.0 {
                rng.random_range(-limit..=limit)
            } else {
                0.0
            }
        };
        let angle = sym(rng, self.rotation_degrees).to_radians();
        let zoom = 1.0 + sym(rng, self.zoom);
        let (shift_x, shift_y) =
            (sym(rng, self.translation) * width as f32, sym(rng, self.translation) * height as f32);
        if angle != 0.0 || zoom != 1.0 || shift_x != 0.0 || shift_y != 0.0 {
            scratch[..image.len()].copy_from_slice(image);
            let (cos, sin) = (angle.cos(), angle.sin());
            let (cx, cy) = ((width as f32 - 1.0) / 2.0, (height as f32 - 1.0) / 2.0);
            for y in 0..height {
                for x in 0..width {
                    // inverse map: output pixel -> source position
                    let (dx, dy) = (x as f32 - cx - shift_x, y as f32 - cy - shift_y);
                    let sx = (cos * dx + sin * dy) / zoom + cx;
                    let sy = (-sin * dx + cos * dy) / zoom + cy;
                    let sx = sx.clamp(0.0, width as f32 - 1.0);
                    let sy = sy.clamp(0.0, height as f32 - 1.0);
                    let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
                    let (x1, y1) = ((x0 + 1).min(width - 1), (y0 + 1).min(height - 1));
                    let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
                    for c in 0..channels {
                        let src = &scratch[c * plane..(c + 1) * plane];
                        let top = src[y0 * width + x0] * (1.0 - fx) + src[y0 * width + x1] * fx;
                        let bottom = src[y1 * width + x0] * (1.0 - fx) + src[y1 * width + x1] * fx;
                        image[c * plane + y * width + x] = top * (1.0 - fy) + bottom * fy;
                    }
                }
            }
        }
        let brightness = sym(rng, self.brightness) * range;
        let contrast = 1.0 + sym(rng, self.contrast);
        if brightness != 0.0 || contrast != 1.0 {
            for channel in image.chunks_exact_mut(plane) {
                let mean = channel.iter().sum::<f32>() / plane as f32;
                for value in channel.iter_mut() {
                    *value = ((*value - mean) * contrast + mean + brightness).clamp(0.0, range);
                }
            }
        }
    }
}
