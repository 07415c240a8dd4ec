//! Small line charts written as SVG by hand: a grid of panels, each row
//! sharing its y axis (linear or log), one colour per series across panels.
//! Enough for per-second series of a few tenants; no dependency to build.

use std::fmt::Write as _;

/// Colour-blind-friendly palette (Okabe-Ito), then greys.
pub const PALETTE: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999",
];

const PANEL_W: f64 = 460.0;
const PANEL_H: f64 = 210.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 24.0;
const PANEL_TOP: f64 = 28.0;
const PANEL_BOTTOM: f64 = 42.0;
const HEADER: f64 = 64.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    Log,
}

/// One line: `points[k]` is the value of the k-th x step; `None` breaks it.
#[derive(Debug, Clone)]
pub struct Series {
    pub color: &'static str,
    pub points: Vec<Option<f64>>,
}

#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
}

/// Panels side by side sharing one y axis.
#[derive(Debug, Clone)]
pub struct Row {
    pub y_label: String,
    pub scale: Scale,
    pub panels: Vec<Panel>,
}

#[derive(Debug, Clone)]
pub struct Figure {
    pub title: String,
    pub x_label: String,
    /// Width of one x step; point k sits at `(k + 0.5) · x_step`.
    pub x_step: f64,
    pub x_max: f64,
    /// Series names and colours, drawn once under the title.
    pub legend: Vec<(String, &'static str)>,
    pub rows: Vec<Row>,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A round step near `span / 5`: 1, 2, 2.5 or 5 times a power of ten.
pub fn nice_step(span: f64) -> f64 {
    if !(span.is_finite() && span > 0.0) {
        return 1.0;
    }
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude)
}

/// Short tick label: `250`, `1.5k`, `20k`, `0.5`.
pub fn tick_label(value: f64) -> String {
    let abs = value.abs();
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    };
    if abs >= 1000.0 {
        format!("{}k", trim(format!("{:.1}", value / 1000.0)))
    } else if abs >= 1.0 || abs == 0.0 {
        trim(format!("{value:.1}"))
    } else {
        trim(format!("{value:.2}"))
    }
}

/// Axis range and ticks of a row.
#[derive(Debug, Clone, PartialEq)]
struct Axis {
    scale: Scale,
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Axis {
    fn for_values(scale: Scale, values: impl Iterator<Item = f64>) -> Self {
        let values: Vec<f64> = values.filter(|v| v.is_finite()).collect();
        match scale {
            Scale::Linear => {
                let max = values.iter().copied().fold(0.0, f64::max);
                let step = nice_step(if max > 0.0 { max } else { 1.0 });
                let hi = (max / step).ceil().max(1.0) * step;
                let ticks = (0..=((hi / step).round() as usize))
                    .map(|k| k as f64 * step)
                    .collect();
                Self {
                    scale,
                    lo: 0.0,
                    hi,
                    ticks,
                }
            }
            Scale::Log => {
                let positive = values.iter().copied().filter(|v| *v > 0.0);
                let min = positive.clone().fold(f64::INFINITY, f64::min);
                let max = positive.fold(0.0, f64::max);
                let (lo_exp, hi_exp) = if max > 0.0 {
                    let lo = min.log10().floor();
                    (lo, max.log10().ceil().max(lo + 1.0))
                } else {
                    (0.0, 1.0)
                };
                let mut ticks = Vec::new();
                let mut e = lo_exp;
                while e <= hi_exp {
                    ticks.push(10f64.powf(e));
                    e += 1.0;
                }
                Self {
                    scale,
                    lo: 10f64.powf(lo_exp),
                    hi: 10f64.powf(hi_exp),
                    ticks,
                }
            }
        }
    }

    /// 0 at the bottom, 1 at the top.
    fn fraction(&self, v: f64) -> f64 {
        let f = match self.scale {
            Scale::Linear => (v - self.lo) / (self.hi - self.lo),
            Scale::Log => {
                (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
            }
        };
        f.clamp(0.0, 1.0)
    }
}

/// The figure as a standalone SVG document.
pub fn render(figure: &Figure) -> String {
    let cols = figure
        .rows
        .iter()
        .map(|r| r.panels.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let cell_w = LEFT + PANEL_W + RIGHT;
    let cell_h = PANEL_TOP + PANEL_H + PANEL_BOTTOM;
    let width = cols as f64 * cell_w + 10.0;
    let height = HEADER + figure.rows.len() as f64 * cell_h + 10.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{x}" y="22" font-size="16" font-weight="bold">{title}</text>
"#,
        x = LEFT,
        title = escape(&figure.title),
    );
    let mut lx = LEFT;
    for (name, color) in &figure.legend {
        let _ = writeln!(
            svg,
            r#"<rect x="{lx}" y="36" width="14" height="4" fill="{color}"/><text x="{tx}" y="42">{name}</text>"#,
            tx = lx + 18.0,
            name = escape(name),
        );
        lx += 18.0 + 7.0 * name.chars().count() as f64 + 22.0;
    }
    for (r, row) in figure.rows.iter().enumerate() {
        let axis = Axis::for_values(
            row.scale,
            row.panels.iter().flat_map(|p| {
                p.series
                    .iter()
                    .flat_map(|s| s.points.iter().flatten().copied())
            }),
        );
        for (c, panel) in row.panels.iter().enumerate() {
            let x0 = c as f64 * cell_w + LEFT;
            let y0 = HEADER + r as f64 * cell_h + PANEL_TOP;
            draw_panel(&mut svg, figure, row, panel, &axis, x0, y0);
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn draw_panel(
    svg: &mut String,
    figure: &Figure,
    row: &Row,
    panel: &Panel,
    axis: &Axis,
    x0: f64,
    y0: f64,
) {
    let x_of = |x: f64| x0 + PANEL_W * (x / figure.x_max.max(f64::MIN_POSITIVE)).clamp(0.0, 1.0);
    let y_of = |v: f64| y0 + PANEL_H * (1.0 - axis.fraction(v));
    let _ = writeln!(
        svg,
        r#"<text x="{x0}" y="{ty}" font-weight="bold">{title}</text>"#,
        ty = y0 - 8.0,
        title = escape(&panel.title),
    );
    for &tick in &axis.ticks {
        let y = y_of(tick);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{tx}" y="{ty:.1}" text-anchor="end">{label}</text>"##,
            x1 = x0 + PANEL_W,
            tx = x0 - 6.0,
            ty = y + 4.0,
            label = tick_label(tick),
        );
    }
    let x_step = nice_step(figure.x_max).max(1.0);
    let mut x = 0.0;
    while x <= figure.x_max + 1e-9 {
        let px = x_of(x);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{y0}" x2="{px:.1}" y2="{y1}" stroke="#f0f0f0"/><text x="{px:.1}" y="{ty}" text-anchor="middle">{label}</text>"##,
            y1 = y0 + PANEL_H,
            ty = y0 + PANEL_H + 16.0,
            label = tick_label(x),
        );
        x += x_step;
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{x0}" y="{y0}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#444"/>
<text x="{cx}" y="{by}" text-anchor="middle">{x_label}</text>
<text transform="translate({lx},{cy}) rotate(-90)" text-anchor="middle">{y_label}</text>"##,
        cx = x0 + PANEL_W / 2.0,
        by = y0 + PANEL_H + 34.0,
        x_label = escape(&figure.x_label),
        lx = x0 - 52.0,
        cy = y0 + PANEL_H / 2.0,
        y_label = escape(&row.y_label),
    );
    for series in &panel.series {
        let point = |k: usize, v: f64| (x_of((k as f64 + 0.5) * figure.x_step), y_of(v));
        let mut segment: Vec<(f64, f64)> = Vec::new();
        let mut flush = |segment: &mut Vec<(f64, f64)>| {
            if segment.len() > 1 {
                let coords: Vec<String> = segment
                    .iter()
                    .map(|(x, y)| format!("{x:.1},{y:.1}"))
                    .collect();
                let _ = writeln!(
                    svg,
                    r#"<polyline fill="none" stroke="{}" stroke-width="1.6" points="{}"/>"#,
                    series.color,
                    coords.join(" ")
                );
            }
            for (x, y) in segment.iter() {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{x:.1}" cy="{y:.1}" r="2" fill="{}"/>"#,
                    series.color
                );
            }
            segment.clear();
        };
        for (k, value) in series.points.iter().enumerate() {
            match value {
                Some(v) if v.is_finite() && (axis.scale == Scale::Linear || *v > 0.0) => {
                    segment.push(point(k, *v))
                }
                _ => flush(&mut segment),
            }
        }
        flush(&mut segment);
    }
}
