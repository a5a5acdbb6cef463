//! Charts drawn with `plotters` into SVG strings for inline embedding,
//! and the helpers every report's charts share: one palette, one canvas,
//! one caption style and legend, axis ends, thinning of long series.
//!
//! A chart function returns `Ok(None)` when it has nothing to draw, so the
//! page shows a note instead. Text is emitted as SVG `<text>` (plotters'
//! built-in font metrics, no system fonts) and escaped by the SVG backend.

use plotters::coord::Shift;
use plotters::drawing::DrawingAreaErrorKind;
use plotters::prelude::*;

/// Width and height of a chart shown beside another.
pub const HALF: (u32, u32) = (560, 340);
/// Width and height of a chart that spans the page.
pub const FULL: (u32, u32) = (1000, 380);
/// The most points drawn for one series.
pub const MAX_POINTS: usize = 4000;
/// The most rows a bar chart draws (the largest first).
pub const MAX_BARS: usize = 40;

pub type DrawError = DrawingAreaErrorKind<std::io::Error>;
pub type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing the {chart} chart")]
pub struct ChartError {
    chart: &'static str,
    #[source]
    source: DrawError,
}

/// Distinct, readable colours for series, cycled.
const PALETTE: [RGBColor; 10] = [
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

/// The `index`th series colour.
pub fn series_color(index: usize) -> RGBColor {
    PALETTE[index % PALETTE.len()]
}

/// Draws onto a white SVG canvas of `size` and returns the SVG text.
pub fn render(
    chart: &'static str,
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> Result<(), DrawError>,
) -> Result<Option<String>, ChartError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present())
            .map_err(|source| ChartError { chart, source })?;
    }
    Ok(Some(svg))
}

/// A chart builder with the reports' common caption, margins and label areas.
pub fn builder<'a, 'b>(root: &'a Area<'b>, caption: &str) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut b = ChartBuilder::on(root);
    b.caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55);
    b
}

/// Draws the series legend at `position`.
pub fn legend<'a, 'b: 'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> Result<(), DrawError>
where
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
}

/// The upper end of an axis whose largest value is `max`: a little above it,
/// and never an empty range.
pub fn upper(max: f64) -> f64 {
    if max.is_finite() && max > 0.0 {
        max * 1.05
    } else {
        1.0
    }
}

/// The upper end of a y axis whose largest value is `max`, with room at the
/// top for a legend of `series` entries so it does not hide the data.
pub fn above_legend(max: f64, series: usize) -> f64 {
    if max.is_finite() && max > 0.0 {
        max * (1.1 + 0.1 * series as f64)
    } else {
        1.0
    }
}

/// At most [`MAX_POINTS`] items of `items`, evenly spaced, keeping the last.
pub fn thin<T>(items: Vec<T>) -> Vec<T> {
    let n = items.len();
    if n <= MAX_POINTS {
        return items;
    }
    let step = n.div_ceil(MAX_POINTS);
    items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| i % step == 0 || *i == n - 1)
        .map(|(_, item)| item)
        .collect()
}

/// One row of a bar chart: its label and one value per series, stacked.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub values: Vec<f64>,
}

/// Horizontal stacked bars, one row per [`Bar`] (at most [`MAX_BARS`],
/// the largest totals, in the order given), with the `series` names in
/// the legend; `None` when every total is zero.
pub fn bars(
    chart: &'static str,
    caption: &str,
    x_desc: &str,
    series: &[&str],
    rows: &[Bar],
) -> Result<Option<String>, ChartError> {
    let total = |b: &Bar| {
        b.values
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .sum::<f64>()
    };
    let mut shown: Vec<(usize, &Bar)> = rows.iter().enumerate().collect();
    shown.sort_by(|a, b| total(b.1).total_cmp(&total(a.1)).then(a.0.cmp(&b.0)));
    shown.truncate(MAX_BARS);
    shown.sort_by_key(|(i, _)| *i);
    let max = shown.iter().map(|(_, b)| total(b)).fold(0.0, f64::max);
    if max <= 0.0 {
        return Ok(None);
    }
    let labels: Vec<String> = shown.iter().map(|(_, b)| b.label.clone()).collect();
    let n = shown.len();
    let height = 90 + 22 * n as u32 + 18 * series.len() as u32;
    let size = (FULL.0, height);
    let label_width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let y_area = (label_width as u32 * 7 + 10).clamp(60, 420);
    render(chart, size, |root| {
        let mut b = builder(root, caption);
        b.y_label_area_size(y_area);
        let mut c = b.build_cartesian_2d(0.0..above_legend(max, 0), 0.0..n as f64)?;
        c.configure_mesh()
            .disable_y_mesh()
            .y_labels(n.max(1) * 2 + 1)
            .y_label_formatter(&|y: &f64| {
                let f = y - y.floor();
                if (f - 0.5).abs() > 0.01 {
                    return String::new();
                }
                // Row 0 at the top.
                let i = n.saturating_sub(1 + y.floor() as usize);
                labels.get(i).cloned().unwrap_or_default()
            })
            .x_desc(x_desc)
            .draw()?;
        for (s, name) in series.iter().enumerate() {
            let color = series_color(s);
            c.draw_series(shown.iter().enumerate().map(|(row, (_, bar))| {
                let start: f64 = bar
                    .values
                    .iter()
                    .take(s)
                    .copied()
                    .filter(|v| v.is_finite())
                    .sum();
                let v = bar
                    .values
                    .get(s)
                    .copied()
                    .filter(|v| v.is_finite())
                    .unwrap_or(0.0);
                let y = (n - 1 - row) as f64;
                Rectangle::new([(start, y + 0.15), (start + v, y + 0.85)], color.filled())
            }))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        }
        legend(&mut c, SeriesLabelPosition::LowerRight)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_draw_the_largest_rows_with_their_labels_and_nothing_when_empty() {
        let rows: Vec<Bar> = (0..50)
            .map(|i| Bar {
                label: format!("policy-{i}"),
                values: vec![i as f64, 1.0],
            })
            .collect();
        let svg = bars("hits", "hits", "flows", &["allowed", "denied"], &rows)
            .unwrap()
            .unwrap();
        assert!(svg.contains("policy-49") && svg.contains("allowed"));
        assert!(!svg.contains("policy-0<"), "a smallest row is left out");
        let zero = [Bar {
            label: "a".into(),
            values: vec![0.0],
        }];
        assert!(
            bars("hits", "hits", "flows", &["x"], &zero)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn thinning_keeps_the_last_point() {
        let v: Vec<usize> = (0..10_001).collect();
        let t = thin(v);
        assert!(t.len() <= MAX_POINTS);
        assert_eq!(t.last(), Some(&10_000));
    }
}
