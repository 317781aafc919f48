//! The charts: `curves.png`, `confusion.png`, `roc.png`, drawn with plotters
//! on a bitmap, in DejaVu Sans compiled into the binary (no system font is
//! needed), and [`label`] for text on the other pictures.
//!
//! Round tick values and axis labels come from plotters; what is ours is the
//! choice of what to show: the best epoch marked on the curves, the confusion
//! matrix shaded by row share with its counts, the chance diagonal and each
//! curve's AUC on the ROC chart.

use anyhow::{anyhow, Result};
use convnet_io::metrics::Report;
use image::RgbImage;
use plotters::coord::ranged1d::SegmentValue;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::sync::Once;

/// The font every chart uses, registered once.
const FONT: &str = "sans-serif";

fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // the bytes are DejaVu Sans, a valid TrueType font
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

/// matplotlib's tab10, the colours people read charts in.
pub const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Draws on a white `width x height` bitmap and returns it.
fn draw(
    width: u32,
    height: u32,
    paint: impl FnOnce(DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Result<()>,
) -> Result<RgbImage> {
    register_font();
    let mut buffer = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        paint(root.clone())?;
        root.present().map_err(|e| anyhow!("cannot draw a chart: {e}"))?;
    }
    RgbImage::from_raw(width, height, buffer).ok_or_else(|| anyhow!("chart buffer size"))
}

fn chart_error<E: std::fmt::Display>(error: E) -> anyhow::Error {
    anyhow!("cannot draw a chart: {error}")
}

/// One metric's panel of [`curves`]: its name and its series `(label, value per epoch)`.
pub struct Panel<'a> {
    pub metric: &'a str,
    pub series: Vec<(&'a str, Vec<f64>)>,
}

/// `curves.png`: one panel per metric, epochs across, a legend, and the best
/// epoch (`best`, 1-based) marked with a dashed line.
pub fn curves(panels: &[Panel<'_>], best: Option<(usize, &str)>) -> Result<RgbImage> {
    draw(560 * panels.len() as u32, 400, |root| {
        root.fill(&WHITE).map_err(chart_error)?;
        let areas = root.split_evenly((1, panels.len()));
        for (area, panel) in areas.iter().zip(panels) {
            let epochs = panel.series.iter().map(|(_, v)| v.len()).max().unwrap_or(1).max(1);
            let values: Vec<f64> =
                panel.series.iter().flat_map(|(_, v)| v.iter().copied()).filter(|v| v.is_finite()).collect();
            let (low, high) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)));
            let (low, high) = if low.is_finite() { (low, high.max(low + 1e-6)) } else { (0.0, 1.0) };
            let pad = (high - low) * 0.08;
            let x_range = if epochs == 1 { 0.5..1.5 } else { 1.0..epochs as f64 };
            let mut chart = ChartBuilder::on(area)
                .caption(panel.metric, (FONT, 22))
                .margin(14)
                .x_label_area_size(44)
                .y_label_area_size(64)
                .build_cartesian_2d(x_range, (low - pad)..(high + pad))
                .map_err(chart_error)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(panel.metric)
                .x_labels(epochs.min(12) + 1)
                .x_label_formatter(&|x| {
                    // whole epochs only
                    if (x - x.round()).abs() < 1e-9 {
                        format!("{:.0}", x)
                    } else {
                        String::new()
                    }
                })
                .y_label_formatter(&|y| format!("{y:.2}"))
                .label_style((FONT, 14))
                .axis_desc_style((FONT, 15))
                .light_line_style(RGBColor(235, 235, 235))
                .bold_line_style(RGBColor(215, 215, 215))
                .draw()
                .map_err(chart_error)?;
            for (s, (label, series)) in panel.series.iter().enumerate() {
                let color = PALETTE[s % PALETTE.len()];
                let points: Vec<(f64, f64)> = series
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_finite())
                    .map(|(i, &v)| ((i + 1) as f64, v))
                    .collect();
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                    .map_err(chart_error)?
                    .label(*label)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(2)));
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(chart_error)?;
            }
            if let Some((epoch, why)) = best {
                let (y0, y1) = (low - pad, high + pad);
                let gray = RGBColor(90, 90, 90);
                chart
                    .draw_series(DashedLineSeries::new(
                        vec![(epoch as f64, y0), (epoch as f64, y1)],
                        6,
                        4,
                        gray.stroke_width(1),
                    ))
                    .map_err(chart_error)?
                    .label(format!("best: epoch {epoch} ({why})"))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], gray.stroke_width(1)));
            }
            // the legend where the curves are not: below rising curves, above falling ones
            let rising = panel.series.first().is_some_and(|(_, v)| v.len() > 1 && v[v.len() - 1] > v[0]);
            let corner = if rising { SeriesLabelPosition::LowerRight } else { SeriesLabelPosition::UpperRight };
            legend(&mut chart, corner, 14)?;
        }
        Ok(())
    })
}

/// `confusion.png`: rows are the true classes, columns the predicted ones; each
/// cell is shaded by its share of the row (the recall on the diagonal) and
/// shows its count.
pub fn confusion(report: &Report) -> Result<RgbImage> {
    let classes = report.confusion.len().max(1);
    let names: Vec<String> = report.per_class.iter().enumerate().map(|(k, c)| format!("{} ({k})", c.class)).collect();
    let longest = names.iter().map(|n| n.chars().count()).max().unwrap_or(4) as u32;
    let cell = 52u32;
    let (label_w, width) = (longest * 8 + 30, longest * 8 + 30 + cell * classes as u32 + 60);
    let height = cell * classes as u32 + 130;
    draw(width, height, |root| {
        root.fill(&WHITE).map_err(chart_error)?;
        let title = format!("Confusion matrix - accuracy {:.1}%", report.accuracy * 100.0);
        let k = classes as u32;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT, 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(label_w)
            // integer ranges include their end: 0..k-1 is k segments
            .build_cartesian_2d((0u32..k - 1).into_segmented(), (0u32..k - 1).into_segmented())
            .map_err(chart_error)?;
        let row_of = |y: u32| (k - 1 - y) as usize; // row 0 at the top
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted class")
            .y_desc("true class")
            .x_labels(classes)
            .y_labels(classes)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(j) => j.to_string(),
                _ => String::new(),
            })
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(y) if (*y as usize) < classes => names[row_of(*y)].clone(),
                _ => String::new(),
            })
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .draw()
            .map_err(chart_error)?;
        for (row, counts) in report.confusion.iter().enumerate() {
            let total = counts.iter().sum::<usize>().max(1) as f64;
            let y = k - 1 - row as u32;
            for (j, &count) in counts.iter().enumerate() {
                let share = count as f64 / total;
                // a white-to-blue ramp (matplotlib's Blues, roughly)
                let shade = |from: f64, to: f64| (from + (to - from) * share).round() as u8;
                let fill = RGBColor(shade(247.0, 8.0), shade(251.0, 48.0), shade(255.0, 107.0));
                let x = j as u32;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [
                            (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                            (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                        ],
                        fill.filled(),
                    )))
                    .map_err(chart_error)?;
                let ink = if share > 0.5 { WHITE } else { BLACK };
                let style =
                    TextStyle::from((FONT, 14).into_font()).color(&ink).pos(Pos::new(HPos::Center, VPos::Center));
                chart
                    .draw_series(std::iter::once(Text::new(
                        count.to_string(),
                        (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)),
                        style,
                    )))
                    .map_err(chart_error)?;
            }
        }
        Ok(())
    })
}

/// One curve of [`roc`]: its name, its `(fpr, tpr)` points, its AUC.
pub type RocCurve = (String, Vec<(f64, f64)>, Option<f64>);

/// `roc.png`: ROC curves, false positive rate across, true positive rate up,
/// the chance diagonal dashed, each curve's AUC in the legend.
pub fn roc(curves: &[RocCurve]) -> Result<RgbImage> {
    draw(640, 560, |root| {
        let mut chart = unit_square(&root, "ROC curves", ["false positive rate", "true positive rate"])?;
        diagonal(&mut chart, "chance (AUC 0.5)")?;
        for (i, (name, points, auc)) in curves.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let auc = auc.map_or("AUC -".to_string(), |a| format!("AUC {a:.3}"));
            chart
                .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
                .map_err(chart_error)?
                .label(format!("{name}  {auc}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(2)));
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight, 13)?;
        Ok(())
    })
}

/// The coordinates of a [`unit_square`] chart.
type UnitSquare = Cartesian2d<RangedCoordf64, RangedCoordf64>;

/// A chart of the unit square `[0, 1] x [0, 1]` on a white `root`, its mesh
/// and axis names (`[x, y]`) drawn: the frame of the ROC curves and of the
/// reliability diagram.
fn unit_square<'a, 'b>(
    root: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    [x_desc, y_desc]: [&str; 2],
) -> Result<ChartContext<'a, BitMapBackend<'b>, UnitSquare>> {
    root.fill(&WHITE).map_err(chart_error)?;
    let mut chart = ChartBuilder::on(root)
        .caption(caption, (FONT, 22))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..1f64, 0f64..1.0001f64)
        .map_err(chart_error)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&|x| format!("{x:.1}"))
        .y_label_formatter(&|y| format!("{y:.1}"))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(chart_error)?;
    Ok(chart)
}

/// The series' labels in a box at `position` (white, half-grey border), in
/// `FONT` of `size`: every chart's legend.
fn legend<'a, 'b: 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'b>, CT>,
    position: SeriesLabelPosition,
    size: u32,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(160, 160, 160))
        .label_font((FONT, size))
        .draw()
        .map_err(chart_error)
}

/// The dashed grey diagonal `y = x` of a [`unit_square`], with its legend `label`.
fn diagonal(chart: &mut ChartContext<'_, BitMapBackend<'_>, UnitSquare>, label: &str) -> Result<()> {
    let gray = RGBColor(150, 150, 150);
    chart
        .draw_series(DashedLineSeries::new(vec![(0.0, 0.0), (1.0, 1.0)], 6, 4, gray.stroke_width(1)))
        .map_err(chart_error)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], gray.stroke_width(1)));
    Ok(())
}

/// The reliability diagram: for each of the 15 bins of the top probability,
/// the share of its images predicted right (a bar) against the bin's mean
/// confidence; a calibrated model's bars follow the diagonal.
pub fn reliability(bins: &[convnet_io::calibration::ReliabilityBin], ece: f64) -> Result<RgbImage> {
    draw(640, 560, |root| {
        let caption = format!("Reliability (ECE {ece:.3})");
        let mut chart = unit_square(&root, &caption, ["confidence (top probability)", "accuracy"])?;
        let bars = bins.iter().filter(|bin| bin.count > 0);
        let blue = PALETTE[0];
        chart
            .draw_series(
                bars.map(|bin| Rectangle::new([(bin.low, 0.0), (bin.high, bin.accuracy)], blue.mix(0.6).filled())),
            )
            .map_err(chart_error)?
            .label("accuracy of the images in each bin")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], blue.mix(0.6).filled()));
        let red = RGBColor(200, 40, 40);
        let confidence: Vec<(f64, f64)> =
            bins.iter().filter(|bin| bin.count > 0).map(|bin| ((bin.low + bin.high) / 2.0, bin.confidence)).collect();
        chart
            .draw_series(confidence.iter().map(|&point| Circle::new(point, 4, red.filled())))
            .map_err(chart_error)?
            .label("mean confidence in each bin")
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, red.filled()));
        diagonal(&mut chart, "perfect calibration")?;
        legend(&mut chart, SeriesLabelPosition::UpperLeft, 13)?;
        Ok(())
    })
}

/// Width in pixels of `text` at `size` points, as [`label`] draws it.
pub fn label_width(text: &str, size: u32) -> u32 {
    register_font();
    (FONT, size as f64).into_font().box_size(text).map(|(w, _)| w).unwrap_or(0)
}

/// Draws `text` at `size` points with its top-left corner at (x, y) on `image`.
pub fn label(image: &mut RgbImage, x: i32, y: i32, text: &str, size: u32, color: image::Rgb<u8>) -> Result<()> {
    register_font();
    let (width, height) = image.dimensions();
    let root = BitMapBackend::with_buffer(image.as_mut(), (width, height)).into_drawing_area();
    let ink = RGBColor(color[0], color[1], color[2]);
    let style = TextStyle::from((FONT, size as f64).into_font()).color(&ink);
    root.draw_text(text, &style, (x, y)).map_err(chart_error)?;
    root.present().map_err(chart_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use convnet_io::metrics::report;

    fn ink(image: &RgbImage, x0: u32, x1: u32) -> usize {
        image.enumerate_pixels().filter(|(x, _, p)| (x0..x1).contains(x) && p.0 != [255, 255, 255]).count()
    }

    #[test]
    fn curves_draw_both_panels_and_the_best_epoch() {
        let panels = [
            Panel { metric: "loss", series: vec![("train", vec![1.0, 0.6, 0.4]), ("validation", vec![0.9, 0.7, 0.8])] },
            Panel { metric: "accuracy", series: vec![("train", vec![0.5, 0.7, 0.8])] },
        ];
        let image = curves(&panels, Some((2, "best.safetensors"))).unwrap();
        assert_eq!(image.dimensions(), (1120, 400));
        assert!(ink(&image, 0, 560) > 2000 && ink(&image, 560, 1120) > 2000);
        // the two series' colours are on the left panel
        let has = |c: RGBColor| image.pixels().any(|p| p.0 == [c.0, c.1, c.2]);
        assert!(has(PALETTE[0]) && has(PALETTE[1]));
    }

    #[test]
    fn the_confusion_matrix_is_shaded_by_row_share() {
        // class a: 3 of 3 right; class b: 1 of 4 right
        let names = vec!["a".to_string(), "b".to_string()];
        let result = report(0.5, &[0, 0, 0, 1, 1, 1, 1], &[0, 0, 0, 0, 0, 0, 1], &names);
        let image = confusion(&result).unwrap();
        let darkest = RGBColor(8, 48, 107); // a share of 1: the end of the ramp
        assert!(image.pixels().any(|p| p.0 == [darkest.0, darkest.1, darkest.2]), "row a's diagonal is 100%");
    }

    #[test]
    fn labels_are_drawn_in_the_compiled_in_font() {
        let mut image = RgbImage::from_pixel(200, 40, image::Rgb([255, 255, 255]));
        assert!(label_width("Pred: Bag", 14) > 40);
        label(&mut image, 4, 4, "Pred: Bag", 14, image::Rgb([0, 140, 0])).unwrap();
        assert!(ink(&image, 0, 200) > 50);
    }
}
