//! SVG plots for the report, drawn with plotters' SVG backend (no fonts or network
//! needed: the browser lays out the text). Each line is one cell; its colour is its
//! kernel, so kernels separate at a glance and repeats show their spread.

use kchaos_model::units::Unit;
use plotters::prelude::*;

/// Kernel colours, in matrix order (colour-blind-safe Okabe–Ito palette).
pub const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(0, 0, 0),
];

pub fn colour(kernel: usize) -> RGBColor {
    PALETTE[kernel % PALETTE.len()]
}

/// One line on a plot: which kernel it belongs to and its points.
#[derive(Debug, Clone)]
pub struct Line {
    pub kernel: usize,
    pub points: Vec<(f64, f64)>,
}

const SIZE: (u32, u32) = (640, 300);

/// The percentiles a latency plot shows, as x positions 0..5.
pub const PERCENTILES: [&str; 5] = ["p50", "p90", "p99", "p99.9", "max"];

/// Latency percentile curves (log y axis): one line per cell over [`PERCENTILES`].
pub fn percentiles(title: &str, unit: Unit, lines: &[Line], kernels: &[String]) -> String {
    let fmt_y = move |v: &f64| unit.format(*v);
    let fmt_x = |v: &f64| {
        // Exact positions only: plotters asks for labels at tick positions.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let i = v.round() as usize;
        if (v - v.round()).abs() < 1e-9 {
            PERCENTILES.get(i).copied().unwrap_or("").to_owned()
        } else {
            String::new()
        }
    };
    let (lo, hi) = y_range(lines, true);
    draw(title, lines, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.2f64..4.2f64, (lo..hi).log_scale())?;
        chart
            .configure_mesh()
            .x_labels(5)
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&fmt_y)
            .y_desc("latency")
            .draw()?;
        series_lines(&mut chart, lines, kernels)
    })
}

/// Counters over time (linear axes): one line per cell, x in seconds.
pub fn series(title: &str, unit: Unit, lines: &[Line], kernels: &[String]) -> String {
    let fmt_y = move |v: &f64| unit.format(*v);
    let (lo, hi) = y_range(lines, false);
    let x_hi = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    draw(title, lines, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_hi, lo..hi)?;
        chart
            .configure_mesh()
            .y_label_formatter(&fmt_y)
            .x_desc("seconds into the workload")
            .draw()?;
        series_lines(&mut chart, lines, kernels)
    })
}

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// Renders with `body`; a plot that cannot be drawn becomes a note, not a failed report.
fn draw(
    title: &str,
    lines: &[Line],
    body: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> PlotResult,
) -> String {
    if lines.iter().all(|l| l.points.is_empty()) {
        return format!("<p class=\"note\">{}: no data</p>", super::escape(title));
    }
    let mut buf = String::new();
    let outcome = {
        let root = SVGBackend::with_string(&mut buf, SIZE).into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)
            .and_then(|()| body(&root));
        drawn.and_then(|()| root.present().map_err(|e| e.into()))
    };
    match outcome {
        Ok(()) => buf,
        Err(e) => format!(
            "<p class=\"note\">{}: cannot plot ({})</p>",
            super::escape(title),
            super::escape(&e.to_string())
        ),
    }
}

fn series_lines<'a, 'b: 'a, Y>(
    chart: &mut ChartContext<
        'a,
        SVGBackend<'b>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, Y>,
    >,
    lines: &[Line],
    kernels: &[String],
) -> PlotResult
where
    Y: Ranged<ValueType = f64>,
{
    let mut labelled = vec![false; kernels.len().max(1)];
    for line in lines {
        let c = colour(line.kernel);
        let drawn = chart.draw_series(LineSeries::new(
            line.points.iter().copied(),
            c.stroke_width(2),
        ))?;
        if let Some(done) = labelled.get_mut(line.kernel) {
            if !*done {
                *done = true;
                let name = kernels.get(line.kernel).cloned().unwrap_or_default();
                drawn.label(name).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3))
                });
            }
        }
        chart.draw_series(line.points.iter().map(|&p| Circle::new(p, 2, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

/// A y range covering every point with a margin; strictly positive for log axes.
fn y_range(lines: &[Line], log: bool) -> (f64, f64) {
    let values = lines.iter().flat_map(|l| l.points.iter().map(|p| p.1));
    let values: Vec<f64> = if log {
        values.filter(|v| *v > 0.0).collect()
    } else {
        values.collect()
    };
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (1.0, 10.0);
    }
    if log {
        (lo / 1.5, hi * 1.5)
    } else {
        let pad = ((hi - lo) * 0.08).max(hi.abs() * 0.05).max(1e-9);
        // Counters that never go negative keep zero as their floor.
        let floor = if lo >= 0.0 {
            (lo - pad).max(0.0)
        } else {
            lo - pad
        };
        (floor, hi + pad)
    }
}
