//! Cropping an image to its content (`--crop content`): a mammogram is a
//! bright breast on a black background that can fill half the film; resized
//! whole, the breast gets half the pixels it could have.
//!
//! ```text
//! luma      the image's grey levels (ITU-R 601, 8 bits)
//! t         Otsu's threshold: the level that maximises the between-class variance
//!           w0(t) w1(t) (mu0(t) - mu1(t))^2 of the histogram split at t
//! box       the smallest rectangle holding every pixel brighter than t
//! margin    the box grown by MARGIN (2%) of the image's size on each side, clipped to the image
//! ```
//!
//! An image with no dark background (every pixel above `t` in some row and
//! column, or a flat image) keeps its whole frame.
//!
//! ```
//! use convnet_data::content_crop::{content_box, otsu_threshold};
//! // a 10x10 black image with a bright 4x3 block at columns 2-5, rows 6-8
//! let mut luma = vec![0u8; 100];
//! for y in 6..9 { for x in 2..6 { luma[y * 10 + x] = 200; } }
//! assert!(otsu_threshold(&luma) < 200);
//! // (left, top, width, height), grown by the margin (at least a pixel)
//! assert_eq!(content_box(&luma, 10, 10), (1, 5, 6, 5));
//! ```

/// The margin around the content, as a fraction of the image's width and height.
pub const MARGIN: f64 = 0.02;

/// Otsu's threshold of 8-bit levels: pixels `> t` are the foreground.
pub fn otsu_threshold(luma: &[u8]) -> u8 {
    let mut histogram = [0u64; 256];
    for &v in luma {
        histogram[v as usize] += 1;
    }
    let total = luma.len() as f64;
    let sum_all: f64 = histogram.iter().enumerate().map(|(v, &n)| v as f64 * n as f64).sum();
    let (mut best, mut best_variance) = (0u8, -1.0);
    let (mut weight_low, mut sum_low) = (0.0, 0.0);
    for (t, &count) in histogram.iter().enumerate().take(255) {
        weight_low += count as f64;
        sum_low += t as f64 * count as f64;
        let weight_high = total - weight_low;
        if weight_low == 0.0 || weight_high == 0.0 {
            continue;
        }
        let (mean_low, mean_high) = (sum_low / weight_low, (sum_all - sum_low) / weight_high);
        let variance = weight_low * weight_high * (mean_low - mean_high).powi(2);
        if variance > best_variance {
            (best, best_variance) = (t as u8, variance);
        }
    }
    best
}

/// The content's box `(left, top, width, height)` in a `width x height` grey
/// image, with the margin; the whole image when nothing stands out.
pub fn content_box(luma: &[u8], width: usize, height: usize) -> (usize, usize, usize, usize) {
    let threshold = otsu_threshold(luma);
    let (mut left, mut top, mut right, mut bottom) = (width, height, 0, 0);
    for (y, row) in luma.chunks(width).enumerate() {
        for (x, &v) in row.iter().enumerate() {
            if v > threshold {
                (left, top, right, bottom) = (left.min(x), top.min(y), right.max(x + 1), bottom.max(y + 1));
            }
        }
    }
    if right <= left || bottom <= top {
        return (0, 0, width, height);
    }
    let margin_x = ((width as f64 * MARGIN).ceil() as usize).max(1);
    let margin_y = ((height as f64 * MARGIN).ceil() as usize).max(1);
    let (left, top) = (left.saturating_sub(margin_x), top.saturating_sub(margin_y));
    let (right, bottom) = ((right + margin_x).min(width), (bottom + margin_y).min(height));
    (left, top, right - left, bottom - top)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bright_region_in_a_black_frame_is_cropped_to_it_within_the_margin() {
        // 200x100, noise up to 20 in the frame, a region of levels 120-220 at x 60..150, y 20..70
        let (width, height) = (200, 100);
        let luma: Vec<u8> = (0..width * height)
            .map(|i| {
                let (x, y) = (i % width, i / width);
                let inside = (60..150).contains(&x) && (20..70).contains(&y);
                if inside {
                    120 + ((x * 7 + y * 3) % 100) as u8
                } else {
                    ((x * 13 + y * 5) % 21) as u8
                }
            })
            .collect();
        let (left, top, w, h) = content_box(&luma, width, height);
        let (mx, my) = (4, 2); // 2% of 200 and of 100
        assert_eq!((left, top, left + w, top + h), (60 - mx, 20 - my, 150 + mx, 70 + my));
        // nothing stands out: the whole frame
        assert_eq!(content_box(&[7u8; 50], 10, 5), (0, 0, 10, 5));
    }
}
