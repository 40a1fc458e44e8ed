//! SVG plots for the report, drawn with plotters' SVG backend (no fonts or network
//! needed: the browser lays out the text). Each line is one cell; its colour is its
//! kernel, so kernels separate at a glance and repeats show their spread.
//!
//! Every axis is fitted to every plotted point: its ends are ticks (1-2-5 steps) at or
//! beyond the extreme values, with a little room so no point sits on the frame, and the
//! top label is never below the largest value. The legend is not drawn inside the plot
//! (where it covered curves); the report puts one legend per scenario, in HTML, above
//! its plots, so long kernel names wrap instead of overflowing a box.

use std::ops::Range;

use kchaos_model::units::Unit;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
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

/// `#0072b2`, for the HTML legend.
pub fn colour_hex(kernel: usize) -> String {
    let RGBColor(r, g, b) = colour(kernel);
    format!("#{r:02x}{g:02x}{b:02x}")
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

/// The most ticks an axis gets before it switches to coarser steps.
const MAX_TICKS: usize = 12;

/// Latency percentile curves (log y axis): one line per cell over [`PERCENTILES`].
/// Non-positive values have no place on a log axis and are left out.
pub fn percentiles(title: &str, unit: Unit, lines: &[Line]) -> String {
    let lines: Vec<Line> = lines
        .iter()
        .map(|l| Line {
            kernel: l.kernel,
            points: l.points.iter().copied().filter(|p| p.1 > 0.0).collect(),
        })
        .collect();
    let fmt_y = move |v: &f64| unit.format(*v);
    let fmt_x = |v: &f64| {
        // Key points are the exact positions 0..5.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let i = v.round() as usize;
        PERCENTILES.get(i).copied().unwrap_or("").to_owned()
    };
    let (lo, hi) = extremes(&lines, |p| p.1);
    let y_ticks = log_ticks(lo, hi);
    let (y0, y1) = ends(&y_ticks);
    draw(title, &lines, |root| {
        let mut chart = frame(root, title, 28).build_cartesian_2d(
            Ticked::new(
                RangedCoordf64::from(-0.2f64..4.2f64),
                vec![0.0, 1.0, 2.0, 3.0, 4.0],
            ),
            // A little room beyond the end ticks, in log space.
            Ticked::new(LogCoord::from((y0 / 1.15..y1 * 1.15).log_scale()), y_ticks),
        )?;
        chart
            .configure_mesh()
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&fmt_y)
            .y_desc("latency")
            .draw()?;
        draw_lines(&mut chart, &lines)
    })
}

/// Counters over time (linear axes): one line per cell, x in seconds.
pub fn series(title: &str, unit: Unit, lines: &[Line]) -> String {
    let fmt_y = move |v: &f64| unit.format(*v);
    let fmt_x = |v: &f64| format!("{}", (v * 1000.0).round() / 1000.0);
    let (lo, hi) = extremes(lines, |p| p.1);
    let y_ticks = linear_ticks(lo, hi);
    let (_, x_hi) = extremes(lines, |p| p.0);
    let x_ticks = linear_ticks(0.0, x_hi.max(1.0));
    let (x0, x1) = padded(&x_ticks);
    let (y0, y1) = padded(&y_ticks);
    draw(title, lines, |root| {
        let mut chart = frame(root, title, 40).build_cartesian_2d(
            Ticked::new(RangedCoordf64::from(x0..x1), x_ticks),
            Ticked::new(RangedCoordf64::from(y0..y1), y_ticks),
        )?;
        chart
            .configure_mesh()
            .x_label_formatter(&fmt_x)
            .y_label_formatter(&fmt_y)
            .x_desc("seconds into the workload")
            .draw()?;
        draw_lines(&mut chart, lines)
    })
}

type PlotResult = Result<Area, Box<dyn std::error::Error>>;

/// The plotting rectangle in SVG pixels: left, top, right, bottom.
type Area = (i32, i32, i32, i32);

fn area_of<DB: DrawingBackend, CT: CoordTranslate>(a: &DrawingArea<DB, CT>) -> Area {
    let (x, y) = a.get_pixel_range();
    (x.start, y.start, x.end, y.end)
}

/// Renders with `body`, as a `<figure class="plot">` whose `data-area` is the plotting
/// rectangle (the browser test checks every point against it: plotters clamps a point
/// beyond its axis onto the frame, so one on the frame is one the axis missed); a plot
/// that cannot be drawn becomes a note, not a failed report.
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
        drawn.and_then(|area| root.present().map(|()| area).map_err(|e| e.into()))
    };
    match outcome {
        Ok((x0, y0, x1, y1)) => {
            format!("<figure class=\"plot\" data-area=\"{x0} {y0} {x1} {y1}\">{buf}</figure>")
        }
        Err(e) => format!(
            "<p class=\"note\">{}: cannot plot ({})</p>",
            super::escape(title),
            super::escape(&e.to_string())
        ),
    }
}

/// The frame every plot shares: `title` above, `x_labels` pixels below for the x
/// axis's labels, and room on the left for unit-formatted latencies and counts.
fn frame<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    title: &str,
    x_labels: u32,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(x_labels)
        .y_label_area_size(70);
    builder
}

/// Draws each line and its points in its kernel's colour; the plotting area they were
/// drawn in is what [`draw`] reports.
fn draw_lines<'a, 'b: 'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>,
    lines: &[Line],
) -> PlotResult
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for line in lines {
        let c = colour(line.kernel);
        chart.draw_series(LineSeries::new(
            line.points.iter().copied(),
            c.stroke_width(2),
        ))?;
        chart.draw_series(line.points.iter().map(|&p| Circle::new(p, 2, c.filled())))?;
    }
    Ok(area_of(chart.plotting_area()))
}

/// An axis with the ticks we chose, on any f64 axis. (plotters' own `with_key_points`
/// loses the value formatter of its f64 axes, which the unit-aware labels need.)
struct Ticked<R> {
    inner: R,
    ticks: Vec<f64>,
}

impl<R: Ranged<ValueType = f64>> Ticked<R> {
    fn new(inner: R, ticks: Vec<f64>) -> Ticked<R> {
        Ticked { inner, ticks }
    }
}

impl<R: Ranged<ValueType = f64>> Ranged for Ticked<R> {
    // Labels always come from the plot's own formatters.
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Bold mesh lines and labels at the ticks; no light lines between them.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.inner.range()
    }

    fn axis_pixel_range(&self, limit: (i32, i32)) -> Range<i32> {
        self.inner.axis_pixel_range(limit)
    }
}

/// The smallest and largest finite coordinate `of` the points; `(0, 1)` when none.
fn extremes(lines: &[Line], of: impl Fn(&(f64, f64)) -> f64) -> (f64, f64) {
    let values = lines
        .iter()
        .flat_map(|l| l.points.iter().map(&of))
        .filter(|v| v.is_finite());
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo > hi {
        (0.0, 1.0)
    } else {
        (lo, hi)
    }
}

fn ends(ticks: &[f64]) -> (f64, f64) {
    (
        ticks.first().copied().unwrap_or(1.0),
        ticks.last().copied().unwrap_or(10.0),
    )
}

/// The end ticks with 2% of the span beyond each, so a point on an end tick is drawn
/// whole, not cut by the frame.
fn padded(ticks: &[f64]) -> (f64, f64) {
    let (lo, hi) = ends(ticks);
    let pad = (hi - lo) * 0.02;
    (lo - pad, hi + pad)
}

/// Ticks at 1, 2 and 5 times powers of ten (coarser if that makes too many), from the
/// largest at or below `lo` to the smallest at or above `hi`; both must be positive.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (lo, hi) = if lo > 0.0 && hi >= lo && hi.is_finite() {
        (lo, hi)
    } else {
        (1.0, 10.0)
    };
    // Decades are small integers for any finite positive f64.
    #[allow(clippy::cast_possible_truncation)]
    let (first, last) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let steps: [(&[f64], i32); 4] = [(&[1.0, 2.0, 5.0], 1), (&[1.0], 1), (&[1.0], 2), (&[1.0], 5)];
    let mut ticks = Vec::new();
    for (mults, every) in steps {
        let candidates: Vec<f64> = (first.div_euclid(every) * every..=last + every)
            .step_by(usize::try_from(every).unwrap_or(1))
            .flat_map(|d| mults.iter().map(move |m| m * 10f64.powi(d)))
            .collect();
        let start = candidates.iter().rposition(|&t| t <= lo * (1.0 + 1e-12));
        let end = candidates.iter().position(|&t| t >= hi * (1.0 - 1e-12));
        if let (Some(s), Some(e)) = (start, end) {
            ticks = candidates[s..=e].to_vec();
            if ticks.len() <= MAX_TICKS {
                break;
            }
        }
    }
    ticks
}

/// Evenly spaced ticks at a 1-2-5 step, about five of them, from the largest multiple
/// of the step at or below `lo` to the smallest at or above `hi`.
pub fn linear_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (lo, hi) = if lo.is_finite() && hi.is_finite() && hi >= lo {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    let span = if hi > lo {
        hi - lo
    } else {
        // One value: a span around it (or around zero).
        (hi.abs() * 0.2).max(1.0)
    };
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw * (1.0 - 1e-12))
        .unwrap_or(mag * 10.0);
    let start = (lo / step + 1e-9).floor();
    let mut end = (hi / step - 1e-9).ceil();
    if end <= start {
        end = start + 1.0;
    }
    // A handful of steps: start..=end is at most about 6 apart.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = (end - start).round() as usize;
    (0..=n).map(|i| (start + i as f64) * step).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The circles' centres in an SVG.
    fn circles(svg: &str) -> Vec<(i32, i32)> {
        let attr = |tag: &str, name: &str| -> i32 {
            let at = tag.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
            tag[at..].split('"').next().unwrap().parse().unwrap()
        };
        svg.split("<circle")
            .skip(1)
            .map(|t| (attr(t, "cx"), attr(t, "cy")))
            .collect()
    }

    fn area(html: &str) -> (i32, i32, i32, i32) {
        let at = html.find("data-area=\"").unwrap() + 11;
        let v: Vec<i32> = html[at..]
            .split('"')
            .next()
            .unwrap()
            .split(' ')
            .map(|x| x.parse().unwrap())
            .collect();
        (v[0], v[1], v[2], v[3])
    }

    /// Strictly inside: plotters clamps a point beyond its axis onto the frame, so a
    /// point on the frame is one the axis did not fit.
    fn assert_inside(html: &str) {
        let (x0, y0, x1, y1) = area(html);
        let points = circles(html);
        assert!(!points.is_empty());
        for (x, y) in points {
            assert!(
                x0 < x && x < x1 && y0 < y && y < y1,
                "({x}, {y}) not inside ({x0}, {y0})-({x1}, {y1})"
            );
        }
    }

    /// The report's case: wakeup_throttled's max of 2.55 s was drawn off a chart whose
    /// axis topped out at 1 s, under its legend.
    #[test]
    fn an_outlier_is_inside_the_plot_and_under_the_top_tick() {
        let lines = vec![
            Line {
                kernel: 0,
                points: vec![
                    (0.0, 5e6),
                    (1.0, 1e8),
                    (2.0, 9e8),
                    (3.0, 2.0e9),
                    (4.0, 2.55e9),
                ],
            },
            Line {
                kernel: 1,
                points: vec![(0.0, 4e6), (1.0, 5e7), (2.0, 3e8), (3.0, 6e8), (4.0, 0.0)],
            },
        ];
        let html = percentiles("wakeup_throttled", Unit::Ns, &lines);
        assert_inside(&html);
        // Nine points: the zero had no place on a log axis.
        assert_eq!(circles(&html).len(), 9);
        assert!(html.contains("5.00s"), "the top label is above 2.55 s");
        assert!(!html.contains("path:"), "no legend in the plot");
        let lines = vec![
            Line {
                kernel: 0,
                points: vec![(0.0, 0.0), (0.5, 1e9), (1.0, 2.55e9), (1.5, 0.8e9)],
            },
            Line {
                kernel: 1,
                points: vec![(0.0, 0.0), (0.5, 0.5e9), (1.0, 0.9e9)],
            },
        ];
        let html = series("over time", Unit::Ns, &lines);
        assert_inside(&html);
        assert!(html.contains("3.00s"), "{html}");
    }

    #[test]
    fn log_ticks_cover_the_values_at_1_2_5_steps() {
        let table: &[(f64, f64, &[f64])] = &[
            (
                4e6,
                2.55e9,
                &[2e6, 5e6, 1e7, 2e7, 5e7, 1e8, 2e8, 5e8, 1e9, 2e9, 5e9],
            ),
            (1e6, 1e6, &[1e6]),
            (3.0, 7.0, &[2.0, 5.0, 10.0]),
            (0.3, 0.4, &[0.2, 0.5]),
            // Eight decades: 1-2-5 would be 25 ticks, decades are 9.
            (1.0, 1e8, &[1.0, 10.0, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8]),
        ];
        for &(lo, hi, want) in table {
            let got = log_ticks(lo, hi);
            assert_eq!(got.len(), want.len(), "{lo} {hi}: {got:?}");
            for (g, w) in got.iter().zip(want) {
                assert!((g / w - 1.0).abs() < 1e-9, "{lo} {hi}: {got:?}");
            }
        }
        // Twenty decades still fit in a dozen ticks.
        let wide = log_ticks(1e-5, 1e15);
        assert!(wide.len() <= MAX_TICKS, "{wide:?}");
        assert!(wide[0] <= 1e-5 && *wide.last().unwrap() >= 1e15, "{wide:?}");
    }

    #[test]
    fn linear_ticks_cover_the_values() {
        let table: &[(f64, f64, &[f64])] = &[
            (0.0, 2.55, &[0.0, 1.0, 2.0, 3.0]),
            (0.0, 1000.0, &[0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]),
            (40.0, 40.0, &[40.0, 42.0]),
            (-3.0, 7.0, &[-4.0, -2.0, 0.0, 2.0, 4.0, 6.0, 8.0]),
            (0.0, 0.0, &[0.0, 0.2]),
        ];
        for &(lo, hi, want) in table {
            let got = linear_ticks(lo, hi);
            assert_eq!(got.len(), want.len(), "{lo} {hi}: {got:?}");
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-9, "{lo} {hi}: {got:?}");
            }
        }
    }
}
