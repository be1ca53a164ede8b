//! Line charts of a run's curves, drawn by our own code: SVG (text, axes, ticks, legend) and PNG
//! (the same frame, grid, bands and lines rasterised into an RGB buffer, with tick numbers in a
//! small pixel font; titles, axis names and the legend's names are in the SVG only).

use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::path::Path;

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

pub const WIDTH: u32 = 800;
pub const HEIGHT: u32 = 450;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 170.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;

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

fn colour(i: usize) -> [u8; 3] {
    PALETTE[i % PALETTE.len()]
}

fn hex(c: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
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

/// Round tick positions covering [lo, hi]: steps of 1, 2 or 5 times a power of ten, about 5 ticks.
pub fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = hi - lo;
    if span.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) || !span.is_finite() {
        return vec![lo];
    }
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let m = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .find(|m| span / (m * mag) <= 6.0)
        .unwrap_or(10.0);
    let step = m * mag;
    // A tick is k * m * mag; for mag < 1 dividing by 1/mag (a whole number) keeps values such as
    // 0.6 exact, where 3 * 0.2 would give 0.6000000000000001.
    let value = |k: f64| {
        if mag < 1.0 {
            k * m / (1.0 / mag).round()
        } else {
            k * step
        }
    };
    let mut k = (lo / step).ceil();
    let mut out = Vec::new();
    while value(k) <= hi + step * 1e-9 {
        out.push(value(k));
        k += 1.0;
    }
    out
}

fn label(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.1e}");
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Maps data coordinates to pixels for a plot area of `w` x `h`.
struct Frame {
    xr: (f64, f64),
    yr: (f64, f64),
    w: f64,
    h: f64,
}

impl Frame {
    fn new(chart: &Chart, w: f64, h: f64) -> Frame {
        let (xr, yr) = ranges(chart);
        Frame { xr, yr, w, h }
    }
    fn px(&self, x: f64) -> f64 {
        LEFT + (x - self.xr.0) / (self.xr.1 - self.xr.0) * (self.w - LEFT - RIGHT)
    }
    fn py(&self, y: f64) -> f64 {
        TOP + (self.yr.1 - y) / (self.yr.1 - self.yr.0) * (self.h - TOP - BOTTOM)
    }
}

/// The chart as a standalone SVG document. Each series is a `<path class="series">` whose
/// `data-name` is the series name; bands are `<path class="band">`.
pub fn svg(chart: &Chart) -> String {
    let (w, h) = (WIDTH as f64, HEIGHT as f64);
    let f = Frame::new(chart, w, h);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        w / 2.0,
        escape(&chart.title)
    );
    let (x_left, x_right, y_top, y_bottom) = (LEFT, w - RIGHT, TOP, h - BOTTOM);
    for t in ticks(f.xr.0, f.xr.1) {
        let x = f.px(t);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.2}" y1="{y_top}" x2="{x:.2}" y2="{y_bottom}" stroke="#e5e5e5"/><text x="{x:.2}" y="{}" text-anchor="middle">{}</text>"##,
            y_bottom + 16.0,
            label(t)
        );
    }
    for t in ticks(f.yr.0, f.yr.1) {
        let y = f.py(t);
        let _ = writeln!(
            s,
            r##"<line x1="{x_left}" y1="{y:.2}" x2="{x_right}" y2="{y:.2}" stroke="#e5e5e5"/><text x="{}" y="{:.2}" text-anchor="end">{}</text>"##,
            x_left - 6.0,
            y + 4.0,
            label(t)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{x_left}" y="{y_top}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
        x_right - x_left,
        y_bottom - y_top
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (x_left + x_right) / 2.0,
        h - 14.0,
        escape(&chart.x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{0}" text-anchor="middle" transform="rotate(-90 18 {0})">{1}</text>"#,
        (y_top + y_bottom) / 2.0,
        escape(&chart.y_label)
    );
    for (i, ser) in chart.series.iter().enumerate() {
        let c = hex(colour(i));
        let band: Vec<&(f64, f64, f64)> = ser
            .band
            .iter()
            .filter(|b| b.0.is_finite() && b.1.is_finite() && b.2.is_finite())
            .collect();
        if band.len() >= 2 {
            let mut d = String::new();
            for (k, b) in band.iter().enumerate() {
                let _ = write!(
                    d,
                    "{}{:.2},{:.2} ",
                    if k == 0 { "M" } else { "L" },
                    f.px(b.0),
                    f.py(b.2)
                );
            }
            for b in band.iter().rev() {
                let _ = write!(d, "L{:.2},{:.2} ", f.px(b.0), f.py(b.1));
            }
            d.push('Z');
            let _ = writeln!(
                s,
                r#"<path class="band" data-name="{}" d="{d}" fill="{c}" fill-opacity="0.18" stroke="none"/>"#,
                escape(&ser.name)
            );
        }
    }
    for (i, ser) in chart.series.iter().enumerate() {
        let c = hex(colour(i));
        let mut d = String::new();
        let mut pen_down = false;
        for &(x, y) in &ser.points {
            // A non-finite value breaks the line rather than bending it to the frame.
            if !(x.is_finite() && y.is_finite()) {
                pen_down = false;
                continue;
            }
            let _ = write!(
                d,
                "{}{:.2},{:.2} ",
                if pen_down { "L" } else { "M" },
                f.px(x),
                f.py(y)
            );
            pen_down = true;
        }
        let _ = writeln!(
            s,
            r#"<path class="series" data-name="{}" d="{}" fill="none" stroke="{c}" stroke-width="1.6"/>"#,
            escape(&ser.name),
            d.trim_end()
        );
        let ly = y_top + 10.0 + 20.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{0}" y1="{ly}" x2="{1}" y2="{ly}" stroke="{c}" stroke-width="3"/><text x="{2}" y="{3}">{4}</text>"#,
            x_right + 10.0,
            x_right + 30.0,
            x_right + 36.0,
            ly + 4.0,
            escape(&ser.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A 3x5 pixel font for tick labels in the PNG: rows top to bottom, 3 bits each (high bit left).
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b111, 0b001, 0b111],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b010, 0b010, 0b010],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
        '.' => [0b000, 0b000, 0b000, 0b000, 0b010],
        '-' => [0b000, 0b000, 0b111, 0b000, 0b000],
        'e' => [0b000, 0b111, 0b111, 0b100, 0b111],
        _ => return None,
    })
}

/// Pixels per font pixel.
const FONT_SCALE: i64 = 2;

/// Width in pixels of `text` in the PNG font.
fn text_width(text: &str) -> f64 {
    (text.chars().count() as i64 * 4 * FONT_SCALE) as f64
}

/// An RGB image being drawn on.
struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Canvas {
        Canvas {
            w,
            h,
            px: vec![255; w * h * 3],
        }
    }

    /// Blends colour `c` over pixel (x, y) with opacity `a` in [0, 1].
    fn blend(&mut self, x: i64, y: i64, c: [u8; 3], a: f64) {
        if x < 0 || y < 0 || x >= self.w as i64 || y >= self.h as i64 {
            return;
        }
        let i = (y as usize * self.w + x as usize) * 3;
        for (p, &ck) in self.px[i..i + 3].iter_mut().zip(&c) {
            let old = *p as f64;
            *p = (old + (ck as f64 - old) * a).round() as u8;
        }
    }

    /// Draws `text` with its top-left corner at (x, y); characters without a glyph are blank.
    fn text(&mut self, x: f64, y: f64, text: &str, c: [u8; 3]) {
        let (x0, y0) = (x.round() as i64, y.round() as i64);
        for (k, ch) in text.chars().enumerate() {
            let Some(rows) = glyph(ch) else { continue };
            let gx = x0 + k as i64 * 4 * FONT_SCALE;
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..3 {
                    if bits & (0b100 >> col) != 0 {
                        for dy in 0..FONT_SCALE {
                            for dx in 0..FONT_SCALE {
                                self.blend(
                                    gx + col * FONT_SCALE + dx,
                                    y0 + r as i64 * FONT_SCALE + dy,
                                    c,
                                    1.0,
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    fn hline(&mut self, x0: f64, x1: f64, y: f64, c: [u8; 3]) {
        for x in x0.round() as i64..=x1.round() as i64 {
            self.blend(x, y.round() as i64, c, 1.0);
        }
    }

    fn vline(&mut self, x: f64, y0: f64, y1: f64, c: [u8; 3]) {
        for y in y0.round() as i64..=y1.round() as i64 {
            self.blend(x.round() as i64, y, c, 1.0);
        }
    }

    /// A line `width` pixels wide: pixels are covered by their distance to the segment, with one
    /// pixel of soft edge so slopes do not look stepped.
    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), width: f64, c: [u8; 3]) {
        let r = width / 2.0;
        let xa = (x0.min(x1) - r - 1.0).floor() as i64;
        let xb = (x0.max(x1) + r + 1.0).ceil() as i64;
        let ya = (y0.min(y1) - r - 1.0).floor() as i64;
        let yb = (y0.max(y1) + r + 1.0).ceil() as i64;
        let (dx, dy) = (x1 - x0, y1 - y0);
        let len2 = dx * dx + dy * dy;
        for y in ya..=yb {
            for x in xa..=xb {
                let (px, py) = (x as f64, y as f64);
                let t = if len2 > 0.0 {
                    (((px - x0) * dx + (py - y0) * dy) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                let (qx, qy) = (x0 + t * dx, y0 + t * dy);
                let d = ((px - qx).powi(2) + (py - qy).powi(2)).sqrt();
                let cover = (r + 0.5 - d).clamp(0.0, 1.0);
                if cover > 0.0 {
                    self.blend(x, y, c, cover);
                }
            }
        }
    }

    /// Fills the area between two piecewise-linear curves given at the same x (pixel) positions.
    fn band(&mut self, pts: &[(f64, f64, f64)], c: [u8; 3], a: f64) {
        for w in pts.windows(2) {
            let (xa, la, ha) = w[0];
            let (xb, lb, hb) = w[1];
            if xb <= xa {
                continue;
            }
            for x in xa.round() as i64..xb.round() as i64 {
                let t = ((x as f64 - xa) / (xb - xa)).clamp(0.0, 1.0);
                let lo = la + t * (lb - la);
                let hi = ha + t * (hb - ha);
                let (top, bot) = (lo.min(hi), lo.max(hi));
                for y in top.round() as i64..=bot.round() as i64 {
                    self.blend(x, y, c, a);
                }
            }
        }
    }
}

/// The chart rasterised as RGB rows (`WIDTH` x `HEIGHT` x 3 bytes).
pub fn rgb(chart: &Chart) -> Vec<u8> {
    let (w, h) = (WIDTH as usize, HEIGHT as usize);
    let f = Frame::new(chart, w as f64, h as f64);
    let mut cv = Canvas::new(w, h);
    let (x_left, x_right, y_top, y_bottom) = (LEFT, w as f64 - RIGHT, TOP, h as f64 - BOTTOM);
    let grid = [229, 229, 229];
    for t in ticks(f.xr.0, f.xr.1) {
        let x = f.px(t);
        cv.vline(x, y_top, y_bottom, grid);
        cv.vline(x, y_bottom, y_bottom + 5.0, [51, 51, 51]);
        let l = label(t);
        cv.text(x - text_width(&l) / 2.0, y_bottom + 9.0, &l, [51, 51, 51]);
    }
    for t in ticks(f.yr.0, f.yr.1) {
        let y = f.py(t);
        cv.hline(x_left, x_right, y, grid);
        cv.hline(x_left - 5.0, x_left, y, [51, 51, 51]);
        let l = label(t);
        cv.text(x_left - 9.0 - text_width(&l), y - 5.0, &l, [51, 51, 51]);
    }
    for (i, ser) in chart.series.iter().enumerate() {
        let pts: Vec<(f64, f64, f64)> = ser
            .band
            .iter()
            .filter(|b| b.0.is_finite() && b.1.is_finite() && b.2.is_finite())
            .map(|&(x, lo, hi)| (f.px(x), f.py(lo), f.py(hi)))
            .collect();
        cv.band(&pts, colour(i), 0.18);
    }
    for (i, ser) in chart.series.iter().enumerate() {
        let pts: Vec<Option<(f64, f64)>> = ser
            .points
            .iter()
            .map(|&(x, y)| (x.is_finite() && y.is_finite()).then(|| (f.px(x), f.py(y))))
            .collect();
        for p in pts.windows(2) {
            if let (Some(a), Some(b)) = (p[0], p[1]) {
                cv.line(a, b, 1.6, colour(i));
            }
        }
        if let [Some(a)] = pts[..] {
            cv.line(a, a, 3.0, colour(i));
        }
        let ly = y_top + 10.0 + 20.0 * i as f64;
        cv.line((x_right + 10.0, ly), (x_right + 30.0, ly), 3.0, colour(i));
    }
    let frame = [51, 51, 51];
    cv.hline(x_left, x_right, y_top, frame);
    cv.hline(x_left, x_right, y_bottom, frame);
    cv.vline(x_left, y_top, y_bottom, frame);
    cv.vline(x_right, y_top, y_bottom, frame);
    cv.px
}

/// The chart as PNG file bytes.
pub fn png(chart: &Chart) -> Result<Vec<u8>> {
    let pixels = rgb(chart);
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, WIDTH, HEIGHT);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().context("PNG header")?;
        writer.write_image_data(&pixels).context("PNG data")?;
        writer.finish().context("PNG end")?;
    }
    Ok(out)
}

/// Writes `<stem>.svg` and `<stem>.png` (atomically) into `dir`.
pub fn write_both(chart: &Chart, dir: &Path, stem: &str) -> Result<()> {
    if stem.is_empty() || stem.contains('/') {
        bail!("bad plot name {stem:?}");
    }
    crate::model::io::write_atomic(&dir.join(format!("{stem}.svg")), svg(chart).as_bytes())?;
    crate::model::io::write_atomic(&dir.join(format!("{stem}.png")), &png(chart)?)?;
    Ok(())
}
