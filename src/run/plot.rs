//! Line charts of runs' curves, drawn by `plotters` as SVG and PNG with the same content: a title,
//! axis names and tick numbers, a grid, each series' line (and its band), and a legend beside
//! the plot. Text in the PNG is drawn from a font we ship (`data/fonts`), so a machine with no
//! fonts installed draws the same picture; the SVG names the font family and leaves the drawing
//! of its text to the viewer.

use anyhow::{Context, Result, anyhow, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use std::path::Path;
use std::sync::Once;

/// One curve: points (x, y) and optionally a band (x, low, high) drawn under it.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub band: Vec<(f64, f64, f64)>,
}

#[derive(Clone, Debug, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// Several charts side by side in one picture, `columns` to a row, under one title.
#[derive(Clone, Debug, Default)]
pub struct Figure {
    pub title: String,
    pub charts: Vec<Chart>,
    pub columns: usize,
}

/// Size of a single chart.
pub const WIDTH: u32 = 800;
pub const HEIGHT: u32 = 450;
/// Size of one panel of a figure.
const PANEL: (u32, u32) = (560, 340);
/// Width of the legend beside a chart.
const LEGEND: u32 = 150;

/// Colours of the series in order (Tableau 10), cycling.
pub const PALETTE: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// The font every text is drawn in.
const FONT: &str = "sans-serif";

fn colour(i: usize) -> RGBColor {
    let [r, g, b] = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// Makes the shipped font the one `plotters` draws "sans-serif" text with.
fn register_shipped_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../data/fonts/DejaVuSans-Latin1.ttf");
        if register_font(FONT, FontStyle::Normal, bytes).is_err() {
            panic!("the font shipped in data/fonts does not parse");
        }
    });
}

/// The data ranges of a chart, widened so that a flat or empty curve still has a frame.
fn ranges(chart: &Chart) -> ((f64, f64), (f64, f64)) {
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    let mut see = |x: f64, y: f64| {
        if x.is_finite() && y.is_finite() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    };
    for s in &chart.series {
        for &(x, y) in &s.points {
            see(x, y);
        }
        for &(x, lo, hi) in &s.band {
            see(x, lo);
            see(x, hi);
        }
    }
    if x0 > x1 {
        return ((0.0, 1.0), (0.0, 1.0));
    }
    if x1 - x0 < 1e-12 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    if y1 - y0 < 1e-12 {
        let pad = if y0.abs() > 0.0 { y0.abs() * 0.1 } else { 0.5 };
        y0 -= pad;
        y1 += pad;
    } else {
        let pad = (y1 - y0) * 0.05;
        y0 -= pad;
        y1 += pad;
    }
    ((x0, x1), (y0, y1))
}

/// A tick label: short, without trailing zeros.
fn label(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.1e}");
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The finite runs of a curve: a non-finite value breaks the line instead of bending it.
fn segments(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut out = vec![Vec::new()];
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            out.last_mut().expect("never empty").push((x, y));
        } else if !out.last().expect("never empty").is_empty() {
            out.push(Vec::new());
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn draw_err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow!("drawing the chart: {e}")
}

/// Draws `chart` on `area`: the plot on the left, the legend in a column on the right.
fn draw_chart<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, chart: &Chart) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let (w, h) = area.dim_in_pixel();
    let small = h < 400;
    let (title_size, label_size, tick_size) = if small { (17, 14, 12) } else { (20, 15, 13) };
    let (plot, legend) =
        area.split_horizontally(w.saturating_sub(if small { 110 } else { LEGEND }));
    let ((x0, x1), (y0, y1)) = ranges(chart);
    let mut cc = ChartBuilder::on(&plot)
        .caption(&chart.title, (FONT, title_size))
        .margin(10)
        .x_label_area_size(if small { 38 } else { 45 })
        .y_label_area_size(if small { 58 } else { 66 })
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(draw_err)?;
    cc.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .axis_desc_style((FONT, label_size))
        .label_style((FONT, tick_size))
        .x_label_formatter(&|v| label(*v))
        .y_label_formatter(&|v| label(*v))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(RGBColor(229, 229, 229))
        .x_labels(8)
        .y_labels(6)
        .draw()
        .map_err(draw_err)?;
    for (i, s) in chart.series.iter().enumerate() {
        let band: Vec<(f64, f64, f64)> = s
            .band
            .iter()
            .copied()
            .filter(|b| b.0.is_finite() && b.1.is_finite() && b.2.is_finite())
            .collect();
        if band.len() >= 2 {
            let mut outline: Vec<(f64, f64)> = band.iter().map(|b| (b.0, b.2)).collect();
            outline.extend(band.iter().rev().map(|b| (b.0, b.1)));
            cc.draw_series(std::iter::once(Polygon::new(
                outline,
                colour(i).mix(0.18).filled(),
            )))
            .map_err(draw_err)?;
        }
    }
    for (i, s) in chart.series.iter().enumerate() {
        let style = ShapeStyle::from(colour(i)).stroke_width(2);
        for seg in segments(&s.points) {
            if seg.len() == 1 {
                cc.draw_series(std::iter::once(Circle::new(seg[0], 3, style.filled())))
                    .map_err(draw_err)?;
            } else {
                cc.draw_series(LineSeries::new(seg, style))
                    .map_err(draw_err)?;
            }
        }
    }
    // The legend: a short line in each series' colour and its name, from the top down.
    let top = if chart.title.is_empty() { 12 } else { 40 };
    for (i, s) in chart.series.iter().enumerate() {
        let y = top + 22 * i as i32;
        legend
            .draw(&PathElement::new(
                vec![(4, y), (28, y)],
                ShapeStyle::from(colour(i)).stroke_width(3),
            ))
            .map_err(draw_err)?;
        legend
            .draw(&Text::new(
                s.name.clone(),
                (34, y - label_size / 2 + 2),
                (FONT, label_size).into_font().color(&BLACK),
            ))
            .map_err(draw_err)?;
    }
    Ok(())
}

/// Draws a figure's charts in a grid under its title.
fn draw_figure<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, fig: &Figure) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let inner = area.titled(&fig.title, (FONT, 24)).map_err(draw_err)?;
    let (cols, rows) = figure_grid(fig);
    let panels = inner.split_evenly((rows, cols));
    for (panel, chart) in panels.iter().zip(&fig.charts) {
        draw_chart(panel, chart)?;
    }
    Ok(())
}

/// Columns and rows of a figure's grid.
fn figure_grid(fig: &Figure) -> (usize, usize) {
    let cols = fig.columns.clamp(1, fig.charts.len().max(1));
    (cols, fig.charts.len().div_ceil(cols).max(1))
}

/// Pixel size of a figure.
pub fn figure_size(fig: &Figure) -> (u32, u32) {
    let (cols, rows) = figure_grid(fig);
    (PANEL.0 * cols as u32, PANEL.1 * rows as u32 + 40)
}

/// Draws with `paint` on an SVG canvas of `size`.
fn to_svg(
    size: (u32, u32),
    paint: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<()>,
) -> Result<String> {
    register_shipped_font();
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        paint(&root)?;
        root.present().map_err(draw_err)?;
    }
    Ok(out)
}

/// Draws with `paint` on an RGB canvas of `size` (3 bytes a pixel, rows top to bottom).
fn to_rgb(
    size: (u32, u32),
    paint: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Result<()>,
) -> Result<Vec<u8>> {
    register_shipped_font();
    let mut px = vec![255u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut px, size).into_drawing_area();
        paint(&root)?;
        root.present().map_err(draw_err)?;
    }
    Ok(px)
}

/// RGB pixels as PNG file bytes.
fn encode_png(px: &[u8], (w, h): (u32, u32)) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().context("PNG header")?;
        writer.write_image_data(px).context("PNG data")?;
        writer.finish().context("PNG end")?;
    }
    Ok(out)
}

/// The chart as a standalone SVG document.
pub fn svg(chart: &Chart) -> Result<String> {
    to_svg((WIDTH, HEIGHT), |a| draw_chart(a, chart))
}

/// The chart rasterised as RGB rows (`WIDTH` x `HEIGHT` x 3 bytes).
pub fn rgb(chart: &Chart) -> Result<Vec<u8>> {
    to_rgb((WIDTH, HEIGHT), |a| draw_chart(a, chart))
}

/// The chart as PNG file bytes.
pub fn png(chart: &Chart) -> Result<Vec<u8>> {
    encode_png(&rgb(chart)?, (WIDTH, HEIGHT))
}

/// The figure as a standalone SVG document.
pub fn figure_svg(fig: &Figure) -> Result<String> {
    to_svg(figure_size(fig), |a| draw_figure(a, fig))
}

/// The figure rasterised as RGB rows (`figure_size` x 3 bytes).
pub fn figure_rgb(fig: &Figure) -> Result<Vec<u8>> {
    to_rgb(figure_size(fig), |a| draw_figure(a, fig))
}

/// Writes `bytes` as `<dir>/<stem>.<ext>`, atomically.
fn write_file(dir: &Path, stem: &str, ext: &str, bytes: &[u8]) -> Result<()> {
    if stem.is_empty() || stem.contains('/') {
        bail!("bad plot name {stem:?}");
    }
    crate::files::write_atomic(&dir.join(format!("{stem}.{ext}")), bytes)
}

/// Writes `<stem>.svg` and `<stem>.png` (atomically) into `dir`.
pub fn write_both(chart: &Chart, dir: &Path, stem: &str) -> Result<()> {
    write_file(dir, stem, "svg", svg(chart)?.as_bytes())?;
    write_file(dir, stem, "png", &png(chart)?)
}

/// Writes a figure as `<stem>.svg` and `<stem>.png` (atomically) into `dir`.
pub fn write_figure(fig: &Figure, dir: &Path, stem: &str) -> Result<()> {
    if fig.charts.is_empty() {
        bail!("a figure needs at least one chart");
    }
    write_file(dir, stem, "svg", figure_svg(fig)?.as_bytes())?;
    write_file(
        dir,
        stem,
        "png",
        &encode_png(&figure_rgb(fig)?, figure_size(fig))?,
    )
}
