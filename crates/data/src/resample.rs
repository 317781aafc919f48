//! torchvision's preprocessing of a pretrained network's input, to the bit:
//! resize the shorter side to `S` keeping the aspect ratio, with Pillow's
//! bilinear filter, then take the centred `H x W` crop
//! (`transforms.Resize(S)` + `transforms.CenterCrop((H, W))` on a PIL image).
//!
//! Pillow's bilinear resize (`Resample.c`) is a separable triangle filter,
//! widened by the scale when shrinking (antialiased), computed in fixed point
//! on 8-bit pixels: first along rows into an 8-bit image, then along columns.
//!
//! ```text
//! scale   = in / out,   support = max(scale, 1)            (the triangle's half-width, in input pixels)
//! centre  = (o + 0.5) * scale                              for output pixel o
//! window  = [trunc(centre - support + 0.5), trunc(centre + support + 0.5)) clamped to the input
//! w_i     = max(0, 1 - |(i - centre + 0.5) / max(scale, 1)|), normalised to sum 1
//! k_i     = round_away(w_i * 2^22)                         (PRECISION_BITS = 32 - 8 - 2)
//! y       = clamp((2^21 + sum_i x_i k_i) >> 22, 0, 255)
//! ```
//!
//! The sizes follow torchvision: the shorter side becomes `S`, the longer
//! `trunc(S * long / short)`; the crop starts at `round((size - crop) / 2)`,
//! rounding halves to even as Python does.
//!
//! ```
//! use convnet_data::resample::{pil_bilinear, shorter_side_size};
//! // a 4-pixel row halved (Pillow: 71, 209): the first output weighs inputs 0, 1, 2 by 0.75, 0.75, 0.25
//! assert_eq!(pil_bilinear(&[0, 100, 200, 255], 4, 1, 1, 2, 1), vec![71, 209]);
//! assert_eq!(shorter_side_size(640, 480, 256), (341, 256));
//! ```

/// Fixed-point bits of Pillow's 8-bit coefficients.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// For each output pixel in `outputs` along an axis resized from `in_size`
/// to `out_size`: the first input pixel of its window and the window's
/// fixed-point coefficients. Each output pixel depends on its own window only,
/// so a crop of the output needs the coefficients of its pixels only.
fn coefficients(in_size: usize, out_size: usize, outputs: std::ops::Range<usize>) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // the bilinear filter's support is 1
    outputs
        .map(|o| {
            let centre = (o as f64 + 0.5) * scale;
            // C's (int) cast truncates toward zero
            let min = ((centre - support + 0.5) as i64).max(0) as usize;
            let max = ((centre + support + 0.5) as i64).min(in_size as i64) as usize;
            let weights: Vec<f64> = (min..max)
                .map(|i| {
                    let x = (i as f64 - centre + 0.5) / filter_scale;
                    (1.0 - x.abs()).max(0.0)
                })
                .collect();
            let total: f64 = weights.iter().sum();
            let fixed = weights
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    let scaled = w * (1u32 << PRECISION_BITS) as f64;
                    (if scaled < 0.0 { scaled - 0.5 } else { scaled + 0.5 }) as i32
                })
                .collect();
            (min, fixed)
        })
        .collect()
}

/// Pillow's `clip8`: the accumulated fixed-point sum as a byte.
fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes interleaved 8-bit pixels (`channels` per pixel, `width x height`)
/// to `out_width x out_height` exactly as Pillow's `Image.resize(..., BILINEAR)`.
pub fn pil_bilinear(
    pixels: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_width: usize,
    out_height: usize,
) -> Vec<u8> {
    let whole = Window { left: 0, top: 0, width: out_width, height: out_height };
    pil_bilinear_window(pixels, [width, height, channels], [out_width, out_height], whole)
}

/// A rectangle of an image: its top-left corner and size, in pixels.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// First column.
    pub left: usize,
    /// First row.
    pub top: usize,
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
}

/// The `window` of [`pil_bilinear`]'s output, computing only its pixels
/// (`[width, height, channels]` in, `[out_width, out_height]` resized size).
pub fn pil_bilinear_window(
    pixels: &[u8],
    [width, height, channels]: [usize; 3],
    [out_width, out_height]: [usize; 2],
    window: Window,
) -> Vec<u8> {
    assert_eq!(pixels.len(), width * height * channels, "pixels must be width x height x channels");
    let rows = coefficients(height, out_height, window.top..window.top + window.height);
    let columns = coefficients(width, out_width, window.left..window.left + window.width);
    // the rows the vertical pass will read, and only those, go through the horizontal one
    let first_row = rows.iter().map(|(min, _)| *min).min().unwrap_or(0);
    let last_row = rows.iter().map(|(min, k)| min + k.len()).max().unwrap_or(0);
    let stride = window.width * channels;
    // pass 1, along rows: (last_row - first_row) x window.width pixels, rounded to bytes as Pillow does
    let mut horizontal = vec![0u8; (last_row - first_row) * stride];
    for (y, out_row) in (first_row..last_row).zip(horizontal.chunks_exact_mut(stride)) {
        let in_row = &pixels[y * width * channels..(y + 1) * width * channels];
        for (x, (min, k)) in columns.iter().enumerate() {
            for c in 0..channels {
                let mut sum = 1i32 << (PRECISION_BITS - 1);
                for (i, &k) in k.iter().enumerate() {
                    sum += in_row[(min + i) * channels + c] as i32 * k;
                }
                out_row[x * channels + c] = clip8(sum);
            }
        }
    }
    // pass 2, along columns: window.height x window.width pixels
    let mut out = vec![0u8; window.height * stride];
    for ((min, k), out_row) in rows.iter().zip(out.chunks_exact_mut(stride)) {
        for (x, value) in out_row.iter_mut().enumerate() {
            let mut sum = 1i32 << (PRECISION_BITS - 1);
            for (i, &k) in k.iter().enumerate() {
                sum += horizontal[(min - first_row + i) * stride + x] as i32 * k;
            }
            *value = clip8(sum);
        }
    }
    out
}

/// torchvision's `Resize(shorter)` size `(width, height)` for a `width x height` image.
pub fn shorter_side_size(width: usize, height: usize, shorter: usize) -> (usize, usize) {
    let (short, long) = if width <= height { (width, height) } else { (height, width) };
    let new_long = (shorter as f64 * long as f64 / short as f64) as usize;
    if width <= height {
        (shorter, new_long)
    } else {
        (new_long, shorter)
    }
}

/// torchvision's `CenterCrop` offset: `round((size - crop) / 2)`, halves to even.
pub fn centre_crop_offset(size: usize, crop: usize) -> usize {
    let excess = size.saturating_sub(crop);
    let half = excess / 2;
    if excess % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Resize-shorter-side-then-centre-crop of interleaved pixels into
/// `crop_height x crop_width` interleaved pixels (only the crop is computed).
pub fn resize_shorter_and_crop(
    pixels: &[u8],
    [width, height, channels]: [usize; 3],
    shorter: usize,
    [crop_height, crop_width]: [usize; 2],
) -> Vec<u8> {
    let (new_width, new_height) = shorter_side_size(width, height, shorter);
    let window = Window {
        left: centre_crop_offset(new_width, crop_width),
        top: centre_crop_offset(new_height, crop_height),
        width: crop_width,
        height: crop_height,
    };
    pil_bilinear_window(pixels, [width, height, channels], [new_width, new_height], window)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_offsets_round_halves_to_even_like_python() {
        // round(0.5) = 0, round(1.5) = 2, round(2.5) = 2, round(3.5) = 4
        assert_eq!([1, 3, 5, 7].map(|excess| centre_crop_offset(224 + excess, 224)), [0, 2, 2, 4]);
        assert_eq!(centre_crop_offset(256, 224), 16);
    }

    #[test]
    fn the_same_size_is_a_copy_and_upscaling_interpolates() {
        let pixels: Vec<u8> = (0..12).map(|v| v * 20).collect();
        assert_eq!(pil_bilinear(&pixels, 4, 3, 1, 4, 3), pixels);
        // doubling a 2-pixel row: Pillow gives 0, 25, 75, 100 for 0, 100
        assert_eq!(pil_bilinear(&[0, 100], 2, 1, 1, 4, 1), vec![0, 25, 75, 100]);
    }
}
