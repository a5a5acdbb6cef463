//! The report's charts, drawn with `plotters` into SVG strings for inline
//! embedding, with the helpers of `manul-report-html` (palette, canvas,
//! legend, thinning: one home, shared with `manulctl report`).
//!
//! Every function returns `Ok(None)` when it has nothing to draw, so the page
//! shows a note instead. Long series are thinned to
//! [`manul_report_html::charts::MAX_POINTS`] so the page stays small.

use std::collections::BTreeMap;

pub(super) use manul_report_html::charts::{ChartError, FULL, HALF};
use manul_report_html::charts::{above_legend, builder, legend, render, series_color, thin, upper};
use plotters::prelude::*;

use super::stats::sorted_values;
use super::{DataplaneRun, ResourceSample, Sample};

/// `(x, y)` points of one series.
type Points = Vec<(f64, f64)>;

/// The colour a dataplane is drawn in, the same on every chart.
pub(super) fn dataplane_color(name: &str, index: usize) -> RGBColor {
    match name {
        "bpf" => series_color(0),
        "iptables" => series_color(1),
        _ => series_color(index + 4),
    }
}

/// A histogram of one dataplane's TTFP.
pub(super) fn ttfp_histogram(
    dataplane: &str,
    color: RGBColor,
    run: &DataplaneRun,
) -> Result<Option<String>, ChartError> {
    let values = sorted_values(&run.ttfp);
    let (Some(&first), Some(&last)) = (values.first(), values.last()) else {
        return Ok(None);
    };
    let lo = first.min(0.0);
    let hi = upper(last);
    let bins = ((values.len() as f64).sqrt().ceil() as usize).clamp(1, 40);
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0u32; bins];
    for v in &values {
        let bin = (((v - lo) / width) as usize).min(bins - 1);
        if let Some(c) = counts.get_mut(bin) {
            *c += 1;
        }
    }
    let top = counts.iter().copied().max().unwrap_or(0) + 1;
    let caption = format!("{dataplane}: TTFP histogram (n={})", values.len());
    render("TTFP histogram", HALF, |root| {
        let mut chart = builder(root, &caption).build_cartesian_2d(lo..hi, 0u32..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("time to first ping (ms)")
            .y_desc("pods")
            .draw()?;
        chart.draw_series(counts.iter().enumerate().map(|(i, &count)| {
            let x0 = lo + width * i as f64;
            Rectangle::new([(x0, 0), (x0 + width, count)], color.filled())
        }))?;
        Ok(())
    })
}

/// The TTFP CDFs of all dataplanes on one chart.
pub(super) fn ttfp_cdf(
    runs: &BTreeMap<String, DataplaneRun>,
) -> Result<Option<String>, ChartError> {
    let series: Vec<(String, RGBColor, Vec<f64>)> = runs
        .iter()
        .enumerate()
        .map(|(i, (name, run))| {
            (
                name.clone(),
                dataplane_color(name, i),
                sorted_values(&run.ttfp),
            )
        })
        .filter(|(_, _, values)| !values.is_empty())
        .collect();
    if series.is_empty() {
        return Ok(None);
    }
    let lo = series
        .iter()
        .filter_map(|(_, _, v)| v.first().copied())
        .fold(0.0, f64::min);
    let hi = upper(
        series
            .iter()
            .filter_map(|(_, _, v)| v.last().copied())
            .fold(0.0, f64::max),
    );
    render("TTFP CDF", FULL, |root| {
        let mut chart = builder(root, "TTFP CDF").build_cartesian_2d(lo..hi, 0.0..1.0)?;
        chart
            .configure_mesh()
            .x_desc("time to first ping (ms)")
            .y_desc("fraction of pods")
            .draw()?;
        for (name, color, values) in &series {
            let n = values.len() as f64;
            let steps = thin(values.iter().enumerate().collect())
                .into_iter()
                .flat_map(|(i, &v)| [(v, i as f64 / n), (v, (i + 1) as f64 / n)]);
            let color = *color;
            chart
                .draw_series(LineSeries::new(steps, color.stroke_width(2)))?
                .label(format!("{name} (n={})", values.len()))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}

/// TTFP and policy latencies of one dataplane against run time.
pub(super) fn latency_over_time(
    dataplane: &str,
    run: &DataplaneRun,
) -> Result<Option<String>, ChartError> {
    let series: Vec<(&str, RGBColor, Points)> = [
        ("TTFP", series_color(0), &run.ttfp),
        ("policy allow", series_color(2), &run.policy_allow),
        ("policy deny", series_color(3), &run.policy_deny),
    ]
    .into_iter()
    .map(|(label, color, samples)| (label, color, points(samples)))
    .filter(|(_, _, points)| !points.is_empty())
    .collect();
    let all = || series.iter().flat_map(|(_, _, p)| p.iter().copied());
    if series.is_empty() {
        return Ok(None);
    }
    let x_hi = upper(all().map(|(x, _)| x).fold(0.0, f64::max));
    let y_hi = above_legend(all().map(|(_, y)| y).fold(0.0, f64::max), series.len());
    let x_lo = all().map(|(x, _)| x).fold(0.0, f64::min);
    let y_lo = all().map(|(_, y)| y).fold(0.0, f64::min);
    let caption = format!("{dataplane}: latency over the run");
    render("latency over time", HALF, |root| {
        let mut chart = builder(root, &caption).build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)?;
        chart
            .configure_mesh()
            .x_desc("time since start (s)")
            .y_desc("latency (ms)")
            .draw()?;
        for (label, color, points) in &series {
            let color = *color;
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|&p| Circle::new(p, 2, color.mix(0.6).filled())),
                )?
                .label(*label)
                .legend(move |p| Circle::new(p, 4, color.filled()));
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

/// Which resource a process chart shows.
#[derive(Debug, Clone, Copy)]
pub(super) enum Resource {
    Cpu,
    Rss,
}

/// CPU % or RSS MiB of each process of one dataplane's run against run time.
pub(super) fn resource_over_time(
    dataplane: &str,
    resource: Resource,
    samples: &[ResourceSample],
) -> Result<Option<String>, ChartError> {
    let value = |s: &ResourceSample| match resource {
        Resource::Cpu => s.cpu_percent,
        Resource::Rss => s.rss_bytes as f64 / (1024.0 * 1024.0),
    };
    let mut by_process: BTreeMap<&str, Points> = BTreeMap::new();
    for s in samples {
        let point = (s.at_s, value(s));
        if point.0.is_finite() && point.1.is_finite() {
            by_process.entry(&s.process).or_default().push(point);
        }
    }
    if by_process.is_empty() {
        return Ok(None);
    }
    for points in by_process.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        *points = thin(std::mem::take(points));
    }
    let all = || by_process.values().flat_map(|p| p.iter().copied());
    let x_lo = all().map(|(x, _)| x).fold(0.0, f64::min);
    let x_hi = upper(all().map(|(x, _)| x).fold(0.0, f64::max));
    let y_hi = above_legend(all().map(|(_, y)| y).fold(0.0, f64::max), by_process.len());
    let (name, what, unit) = match resource {
        Resource::Cpu => ("CPU over time", "CPU", "CPU (% of one core)"),
        Resource::Rss => ("RSS over time", "memory (RSS)", "RSS (MiB)"),
    };
    let caption = format!("{dataplane}: {what} of Typha and Felix");
    render(name, HALF, |root| {
        let mut chart = builder(root, &caption).build_cartesian_2d(x_lo..x_hi, 0.0..y_hi)?;
        chart
            .configure_mesh()
            .x_desc("time since start (s)")
            .y_desc(unit)
            .draw()?;
        for (i, (process, points)) in by_process.iter().enumerate() {
            let color = series_color(i);
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(*process)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    })
}

/// The finite `(at_s, value_ms)` points of `samples`, in time order, thinned.
fn points(samples: &[Sample]) -> Points {
    let mut points: Points = samples
        .iter()
        .map(|s| (s.at_s, s.value_ms))
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    thin(points)
}
