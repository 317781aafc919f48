//! Drawing PNG pictures without a system font: text comes from the public-domain
//! 8x8 bitmap font of the `font8x8` crate, compiled into the binary.

use anyhow::Result;
use convnet_data::ImageSet;
use convnet_io::atomic::write_atomic;
use convnet_io::metrics::Report;
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

/// A line chart: one panel per metric, each with one or two series.
pub struct Panel<'a> {
    pub title: &'a str,
    pub series: Vec<(&'a str, Vec<f64>, Rgb<u8>)>,
}

/// Renders panels side by side (`curves.png`).
pub fn line_charts(panels: &[Panel<'_>]) -> RgbImage {
    let (panel_w, panel_h) = (480i64, 360i64);
    let mut image = RgbImage::from_pixel((panel_w * panels.len() as i64) as u32, panel_h as u32, WHITE);
    for (p, panel) in panels.iter().enumerate() {
        let ox = p as i64 * panel_w;
        let (left, right, top, bottom) = (ox + 70, ox + panel_w - 20, 40i64, panel_h - 50);
        draw_text(&mut image, ox + (panel_w - text_width(panel.title, 2) as i64) / 2, 10, panel.title, 2, BLACK);
        let values: Vec<f64> =
            panel.series.iter().flat_map(|(_, v, _)| v.iter().copied()).filter(|v| v.is_finite()).collect();
        let (mut low, mut high) =
            values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
        if !low.is_finite() {
            (low, high) = (0.0, 1.0);
        }
        if high - low < 1e-9 {
            high = low + 1.0;
        }
        let margin = (high - low) * 0.05;
        let (low, high) = (low - margin, high + margin);
        let points = panel.series.iter().map(|(_, v, _)| v.len()).max().unwrap_or(0).max(2);
        draw_line(&mut image, (left, bottom), (right, bottom), 1, BLACK);
        draw_line(&mut image, (left, top), (left, bottom), 1, BLACK);
        for tick in 0..=4 {
            let value = low + (high - low) * tick as f64 / 4.0;
            let y = bottom - ((bottom - top) as f64 * tick as f64 / 4.0) as i64;
            draw_line(&mut image, (left - 4, y), (left, y), 1, BLACK);
            draw_text(&mut image, ox + 4, y - 4, &format!("{value:.3}"), 1, BLACK);
        }
        let label = format!("epoch 1..{}", points.max(1));
        draw_text(&mut image, (left + right - text_width(&label, 1) as i64) / 2, bottom + 16, &label, 1, BLACK);
        let to_xy = |i: usize, v: f64| {
            let x = left + ((right - left) as f64 * i as f64 / (points - 1) as f64) as i64;
            let y = bottom - ((bottom - top) as f64 * (v - low) / (high - low)) as i64;
            (x, y)
        };
        for (s, (name, values, color)) in panel.series.iter().enumerate() {
            for i in 1..values.len() {
                if values[i - 1].is_finite() && values[i].is_finite() {
                    draw_line(&mut image, to_xy(i - 1, values[i - 1]), to_xy(i, values[i]), 2, *color);
                }
            }
            for (i, &v) in values.iter().enumerate() {
                if v.is_finite() {
                    let (x, y) = to_xy(i, v);
                    fill_rect(&mut image, x - 2, y - 2, 5, 5, *color);
                }
            }
            let legend_y = bottom + 30;
            let legend_x = left + s as i64 * 150;
            fill_rect(&mut image, legend_x, legend_y, 12, 8, *color);
            draw_text(&mut image, legend_x + 16, legend_y, name, 1, BLACK);
        }
    }
    image
}

/// The PNG encoding of a picture (every picture convnet writes goes through here).
pub fn png_bytes(image: &RgbImage) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| anyhow::anyhow!("cannot encode a PNG picture: {e}"))?;
    Ok(bytes)
}

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
    let title_w = titles.iter().map(|t| text_width(t, 1)).max().unwrap_or(0) as usize;
    let cell_w = (width * scale as usize).max(title_w) + 16;
    let cell_h = height * scale as usize + 32;
    let mut canvas = image::RgbImage::from_pixel((cell_w * cols) as u32, (cell_h * rows) as u32, WHITE);
    for (slot, (&index, title)) in chosen.iter().zip(&titles).enumerate() {
        let (x, y) = ((slot % cols * cell_w) as i64, (slot / cols * cell_h) as i64);
        let color = if predicted[index] == set.labels()[index] { GREEN } else { RED };
        draw_text(&mut canvas, x + (cell_w as i64 - text_width(title, 1) as i64) / 2, y + 8, title, 1, color);
        let image_x = x + (cell_w - width * scale as usize) as i64 / 2;
        blit_chw(&mut canvas, &set.image(index)?, [channels, height, width], image_x, y + 24, scale);
        draw_rect(
            &mut canvas,
            image_x - 2,
            y + 22,
            (width * scale as usize) as i64 + 4,
            (height * scale as usize) as i64 + 4,
            2,
            color,
        );
    }
    Ok(write_atomic(out, &png_bytes(&canvas)?)?)
}

/// `confusion.png`: the matrix as a heat map with counts.
pub fn confusion_png(report: &Report) -> RgbImage {
    let this = report;
    let classes = this.confusion.len();
    let cell = 48i64;
    let label_w = 8 * this.per_class.iter().map(|c| c.class.len() + 3).max().unwrap_or(4) as i64 + 10;
    let (width, height) = (label_w + cell * classes as i64 + 20, 60 + cell * classes as i64 + 30);
    let mut image = RgbImage::from_pixel(width as u32, height as u32, WHITE);
    let title = format!("Confusion matrix - accuracy {:.1}%", this.accuracy * 100.0);
    draw_text(&mut image, 10, 10, &title, 2, BLACK);
    draw_text(&mut image, label_w, 36, "predicted ->", 1, BLACK);
    for (k, row) in this.confusion.iter().enumerate() {
        let total: usize = row.iter().sum::<usize>().max(1);
        let y = 60 + k as i64 * cell;
        draw_text(&mut image, 4, y + cell / 2 - 4, &format!("{k} {}", this.per_class[k].class), 1, BLACK);
        for (j, &count) in row.iter().enumerate() {
            let x = label_w + j as i64 * cell;
            let share = count as f64 / total as f64;
            let shade = (255.0 * (1.0 - share)) as u8;
            let color = if j == k { Rgb([shade, 255, shade]) } else { Rgb([255, shade, shade]) };
            fill_rect(&mut image, x, y, cell - 2, cell - 2, color);
            let text = count.to_string();
            draw_text(&mut image, x + (cell - 2 - text_width(&text, 1) as i64) / 2, y + cell / 2 - 5, &text, 1, BLACK);
        }
    }
    image
}

/// One curve of [`roc_png`]: its name, its `(fpr, tpr)` points, its AUC.
pub type RocCurve = (String, Vec<(f64, f64)>, Option<f64>);

/// `roc.png`: ROC curves, false positive rate across, true positive rate up,
/// the chance diagonal dashed, the AUC of each curve in its legend entry.
pub fn roc_png(curves: &[RocCurve]) -> RgbImage {
    // matplotlib's tab10
    const PALETTE: [Rgb<u8>; 10] = [
        BLUE,
        ORANGE,
        Rgb([44, 160, 44]),
        Rgb([214, 39, 40]),
        Rgb([148, 103, 189]),
        Rgb([140, 86, 75]),
        Rgb([227, 119, 194]),
        Rgb([127, 127, 127]),
        Rgb([188, 189, 34]),
        Rgb([23, 190, 207]),
    ];
    let (plot, left, top) = (360i64, 56i64, 56i64);
    let legend_w = curves.iter().map(|(name, _, _)| text_width(name, 1) as i64 + 110).max().unwrap_or(0);
    let (width, height) = (left + plot + 24 + legend_w, top + plot + 56);
    let mut image = RgbImage::from_pixel(width as u32, height as u32, WHITE);
    draw_text(&mut image, left, 10, "ROC curves", 2, BLACK);
    let to_pixel = |(fpr, tpr): (f64, f64)| {
        (left + (fpr * plot as f64).round() as i64, top + plot - (tpr * plot as f64).round() as i64)
    };
    draw_rect(&mut image, left, top, plot + 1, plot + 1, 1, BLACK);
    for tick in 0..=4 {
        let value = tick as f64 / 4.0;
        let (x, y) = to_pixel((value, value));
        draw_line(&mut image, (x, top + plot), (x, top + plot + 4), 1, BLACK);
        draw_line(&mut image, (left - 4, y), (left, y), 1, BLACK);
        let label = format!("{value:.2}");
        draw_text(&mut image, x - text_width(&label, 1) as i64 / 2, top + plot + 8, &label, 1, BLACK);
        draw_text(&mut image, left - 8 - text_width(&label, 1) as i64, y - 4, &label, 1, BLACK);
    }
    draw_text(&mut image, left + plot / 2 - 80, top + plot + 24, "false positive rate", 1, BLACK);
    draw_text(&mut image, 4, top - 14, "true positive rate", 1, BLACK);
    // chance: the diagonal, dashed
    for step in (0..plot).step_by(8) {
        draw_line(
            &mut image,
            (left + step, top + plot - step),
            (left + step + 4, top + plot - step - 4),
            1,
            Rgb([160, 160, 160]),
        );
    }
    for (i, (name, curve, auc)) in curves.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        for pair in curve.windows(2) {
            draw_line(&mut image, to_pixel(pair[0]), to_pixel(pair[1]), 2, color);
        }
        let y = top + 8 + 16 * i as i64;
        fill_rect(&mut image, left + plot + 24, y, 16, 4, color);
        let auc = auc.map_or("AUC -".to_string(), |a| format!("AUC {a:.3}"));
        draw_text(&mut image, left + plot + 46, y - 2, &format!("{name}  {auc}"), 1, BLACK);
    }
    image
}
