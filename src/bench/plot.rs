//! `rchat bench --plot FILE.svg`: the results drawn as an SVG (plotters).
//!
//! One run gives one chart, its latency CDF: latency on a log scale
//! across, the percentile of deliveries that took at most that long up the
//! side. A sweep gives the CDF of every point on top, and below it two
//! panels against the client count: deliveries per second, and p99
//! latency.
//!
//! Only plotters' SVG backend is used, without font support: the SVG holds
//! text elements, and the viewer picks the font, so nothing here needs the
//! system's fonts or libraries.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::Report;

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("nothing to plot")]
    Empty,
    #[error("cannot draw the plot: {0}")]
    Draw(String),
    #[error("cannot write the plot to {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn draw_err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// Draws `reports` (one run, or the points of a sweep) and writes the SVG
/// to `path`.
pub fn write_svg(path: &Path, reports: &[Report]) -> Result<(), PlotError> {
    let svg = render_svg(reports)?;
    std::fs::write(path, svg).map_err(|source| PlotError::Write {
        path: path.to_owned(),
        source,
    })
}

/// The SVG text for `reports`.
pub fn render_svg(reports: &[Report]) -> Result<String, PlotError> {
    if reports.is_empty() {
        return Err(PlotError::Empty);
    }
    let sweep = reports.len() > 1;
    let size = if sweep { (1000, 900) } else { (900, 560) };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        if sweep {
            let (top, bottom) = root.split_vertically(480);
            latency_cdf(&top, reports)?;
            let (left, right) = bottom.split_horizontally(500);
            against_clients(
                &left,
                reports,
                "Throughput against clients",
                "deliveries/s",
                |r| r.deliveries_per_sec,
                false,
            )?;
            against_clients(
                &right,
                reports,
                "p99 latency against clients",
                "p99 latency (ms)",
                |r| r.latency.p99_ms,
                true,
            )?;
        } else {
            latency_cdf(&root, reports)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// A label for one run in a legend.
fn label(r: &Report) -> String {
    let nodes = match r.settings.other_addrs.len() {
        0 => String::new(),
        n => format!(", {} nodes", n + 1),
    };
    format!(
        "{} clients, {} sending{nodes}",
        r.settings.clients, r.settings.senders
    )
}

fn latency_cdf(area: &Area<'_>, reports: &[Report]) -> Result<(), PlotError> {
    let points = reports
        .iter()
        .flat_map(|r| r.latency.cdf.iter())
        .filter(|p| p.latency_ms > 0.0);
    let (lo, hi) = points.fold((f64::INFINITY, 0.0f64), |(lo, hi), p| {
        (lo.min(p.latency_ms), hi.max(p.latency_ms))
    });
    // No samples at all still gives axes, so the file says "empty" plainly.
    let (lo, hi) = if lo.is_finite() {
        (lo, hi)
    } else {
        (0.01, 1.0)
    };
    let x_range = (lo / 1.5)..(hi * 1.5);
    let title = match reports {
        [r] => format!("Latency CDF: {}", label(r)),
        _ => "Latency CDF".to_string(),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range.log_scale(), 0.0f64..100.0)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc("percentile of deliveries")
        .x_label_formatter(&|v| format_ms(*v))
        .draw()
        .map_err(draw_err)?;
    for (i, r) in reports.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let series: Vec<(f64, f64)> = r
            .latency
            .cdf
            .iter()
            .filter(|p| p.latency_ms > 0.0)
            .map(|p| (p.latency_ms, p.percentile))
            .collect();
        if series.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(series, color.stroke_width(2)))
            .map_err(draw_err)?
            .label(label(r))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err)?;
    Ok(())
}

/// One figure of each report against its client count.
fn against_clients(
    area: &Area<'_>,
    reports: &[Report],
    title: &str,
    y_desc: &str,
    value: fn(&Report) -> f64,
    log_y: bool,
) -> Result<(), PlotError> {
    let mut points: Vec<(f64, f64)> = reports
        .iter()
        .map(|r| (r.settings.clients as f64, value(r)))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let x_lo = points.first().map_or(1.0, |p| p.0);
    let x_hi = points.last().map_or(10.0, |p| p.0);
    let x_range = (x_lo / 1.5)..(x_hi * 1.5);
    let y_hi = points.iter().map(|p| p.1).fold(0.0f64, f64::max);
    let caption = (title, ("sans-serif", 20));
    let style = ShapeStyle::from(&BLUE).stroke_width(2);
    if log_y {
        let positive: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.1 > 0.0).collect();
        let y_lo = positive.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let (y_lo, y_hi) = if y_lo.is_finite() {
            (y_lo / 2.0, y_hi * 2.0)
        } else {
            (0.01, 1.0)
        };
        let mut chart = ChartBuilder::on(area)
            .caption(caption.0, caption.1)
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(x_range.log_scale(), (y_lo..y_hi).log_scale())
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("clients (log scale)")
            .light_line_style(TRANSPARENT)
            .y_desc(format!("{y_desc}, log scale"))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format_ms(*v))
            .draw()
            .map_err(draw_err)?;
        chart
            .draw_series(LineSeries::new(positive.clone(), style))
            .map_err(draw_err)?;
        chart
            .draw_series(positive.iter().map(|&p| Circle::new(p, 4, style.filled())))
            .map_err(draw_err)?;
    } else {
        let mut chart = ChartBuilder::on(area)
            .caption(caption.0, caption.1)
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(x_range.log_scale(), 0.0..(y_hi * 1.15).max(1.0))
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("clients (log scale)")
            .light_line_style(TRANSPARENT)
            .y_desc(y_desc)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format_count(*v))
            .draw()
            .map_err(draw_err)?;
        chart
            .draw_series(LineSeries::new(points.clone(), style))
            .map_err(draw_err)?;
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, style.filled())))
            .map_err(draw_err)?;
    }
    Ok(())
}

/// Milliseconds with as many decimals as a log axis needs.
fn format_ms(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else if v >= 0.01 {
        format!("{v:.2}")
    } else {
        format!("{v:.0e}")
    }
}

/// Counts with an SI suffix: 1.5M, 320k.
fn format_count(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}
