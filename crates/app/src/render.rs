//! Drawing PNG pictures without a system font: the prediction grid (its titles
//! in DejaVu Sans through [`crate::charts::label`]) and the pixel-level helpers
//! of the feature-map pictures, whose small labels use the public-domain 8x8
//! bitmap font of the `font8x8` crate. The charts are in [`crate::charts`].

use crate::charts::{label, label_width};
use anyhow::Result;
use convnet_data::ImageSet;
use convnet_io::atomic::write_atomic;
use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};
use std::path::Path;

pub const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
pub const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
pub const GREEN: Rgb<u8> = Rgb([0, 140, 0]);
pub const RED: Rgb<u8> = Rgb([200, 0, 0]);
pub const BLUE: Rgb<u8> = Rgb([31, 119, 180]);
pub const ORANGE: Rgb<u8> = Rgb([255, 127, 14]);

/// Width in pixels of `text` at `scale`.
pub fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * 8 * scale
}

/// Draws `text` with its top-left corner at (x, y); characters outside the
/// font's range are drawn as '?'. Pixels outside the image are clipped.
pub fn draw_text(image: &mut RgbImage, x: i64, y: i64, text: &str, scale: u32, color: Rgb<u8>) {
    let scale = scale.max(1) as i64;
    for (i, ch) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS
            .get(ch)
            .or_else(|| font8x8::LATIN_FONTS.get(ch))
            .or_else(|| font8x8::BASIC_FONTS.get('?'));
        let Some(glyph) = glyph else { continue };
        let origin_x = x + i as i64 * 8 * scale;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        put(image, origin_x + col * scale + dx, y + row as i64 * scale + dy, color);
                    }
                }
            }
        }
    }
}

/// Sets one pixel if it is inside the image.
pub fn put(image: &mut RgbImage, x: i64, y: i64, color: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < image.width() && (y as u32) < image.height() {
        image.put_pixel(x as u32, y as u32, color);
    }
}

/// Fills a rectangle.
pub fn fill_rect(image: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, color: Rgb<u8>) {
    for yy in y..y + h {
        for xx in x..x + w {
            put(image, xx, yy, color);
        }
    }
}

/// Draws a line of the given thickness (Bresenham, thickened by squares).
pub fn draw_line(image: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), thickness: i64, color: Rgb<u8>) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut error) = (x0, y0, dx + dy);
    loop {
        fill_rect(image, x - thickness / 2, y - thickness / 2, thickness, thickness, color);
        if x == x1 && y == y1 {
            break;
        }
        let doubled = 2 * error;
        if doubled >= dy {
            error += dy;
            x += sx;
        }
        if doubled <= dx {
            error += dx;
            y += sy;
        }
    }
}

/// Draws an unfilled rectangle.
pub fn draw_rect(image: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, thickness: i64, color: Rgb<u8>) {
    fill_rect(image, x, y, w, thickness, color);
    fill_rect(image, x, y + h - thickness, w, thickness, color);
    fill_rect(image, x, y, thickness, h, color);
    fill_rect(image, x + w - thickness, y, thickness, h, color);
}

/// Copies a `C x H x W` byte image (1 or 3+ channels) into `canvas` at (x, y),
/// scaled by an integer factor (nearest neighbour).
pub fn blit_chw(canvas: &mut RgbImage, chw: &[u8], shape: [usize; 3], x: i64, y: i64, scale: u32) {
    let [channels, height, width] = shape;
    let plane = height * width;
    for row in 0..height {
        for col in 0..width {
            let p = row * width + col;
            let color =
                if channels >= 3 { Rgb([chw[p], chw[plane + p], chw[2 * plane + p]]) } else { Rgb([chw[p]; 3]) };
            fill_rect(
                canvas,
                x + (col as u32 * scale) as i64,
                y + (row as u32 * scale) as i64,
                scale as i64,
                scale as i64,
                color,
            );
        }
    }
}

/// The PNG encoding of a picture (every picture convnet writes goes through here).
pub fn png_bytes(image: &RgbImage) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| anyhow::anyhow!("cannot encode a PNG picture: {e}"))?;
    Ok(bytes)
}

/// Point size of the grid's titles (DejaVu Sans).
const TITLE_SIZE: u32 = 14;

/// Draws the "Pred: X | Real: Y" grid for a random choice of images.
pub fn draw_grid(set: &ImageSet, predicted: &[usize], rows: usize, cols: usize, seed: u64, out: &Path) -> Result<()> {
    let count = (rows * cols).min(set.len());
    let mut chosen: Vec<usize> = (0..set.len()).collect();
    rand::seq::SliceRandom::shuffle(chosen.as_mut_slice(), &mut convnet_tensor::rng::rng_at(seed, 0x5A0));
    chosen.truncate(count);
    let [channels, height, width] = set.image_shape();
    let scale = (224 / height.max(width)).max(1) as u32;
    let names = set.class_names();
    let titles: Vec<String> =
        chosen.iter().map(|&i| format!("Pred: {} | Real: {}", names[predicted[i]], names[set.labels()[i]])).collect();
    let title_w = titles.iter().map(|t| label_width(t, TITLE_SIZE)).max().unwrap_or(0) as usize;
    let cell_w = (width * scale as usize).max(title_w) + 16;
    let cell_h = height * scale as usize + 38;
    let mut canvas = image::RgbImage::from_pixel((cell_w * cols) as u32, (cell_h * rows) as u32, WHITE);
    for (slot, (&index, title)) in chosen.iter().zip(&titles).enumerate() {
        let (x, y) = ((slot % cols * cell_w) as i64, (slot / cols * cell_h) as i64);
        let color = if predicted[index] == set.labels()[index] { GREEN } else { RED };
        let title_x = x + (cell_w as i64 - label_width(title, TITLE_SIZE) as i64) / 2;
        label(&mut canvas, title_x as i32, y as i32 + 7, title, TITLE_SIZE, color)?;
        let image_x = x + (cell_w - width * scale as usize) as i64 / 2;
        let display = set.depth().to_display(&set.image(index)?).into_owned();
        blit_chw(&mut canvas, &display, [channels, height, width], image_x, y + 30, scale);
        draw_rect(
            &mut canvas,
            image_x - 2,
            y + 28,
            (width * scale as usize) as i64 + 4,
            (height * scale as usize) as i64 + 4,
            2,
            color,
        );
    }
    Ok(write_atomic(out, &png_bytes(&canvas)?)?)
}
