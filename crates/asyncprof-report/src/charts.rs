//! Charts as SVG strings, drawn with plotters: latency percentile distributions, queue depth
//! over time and a worker timeline.

use asyncprof_format::{DepthPoint, Histogram, StallRecord};
use maud::{html, Markup};
use plotters::prelude::*;
use std::collections::BTreeMap;

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Quantiles plotted: 0, 90%, 99%, … in tenths of a decade of 1/(1-q), up to 99.999%.
fn quantiles() -> Vec<f64> {
    (0..=50)
        .map(|i| 1.0 - 10f64.powf(-f64::from(i) / 10.0))
        .collect()
}

/// An HdrHistogram percentile-distribution plot: latency (ms, log axis) against percentile
/// (log axis of 1/(1-q)), one line per histogram. Empty when no histogram holds a value.
pub fn percentile_plot(title: &str, series: &[(String, &Histogram)]) -> String {
    let lines: Vec<(String, Vec<(f64, f64)>)> = series
        .iter()
        .filter(|(_, h)| h.count() > 0)
        .map(|(name, h)| {
            let hdr = h.to_hdr();
            let mut pts: Vec<(f64, f64)> = quantiles()
                .into_iter()
                .map(|q| {
                    let v = hdr.value_at_quantile(q) as f64 / 1e6;
                    (1.0 / (1.0 - q).max(1e-5), v.max(1e-6))
                })
                .collect();
            pts.push((1e5, (hdr.max() as f64 / 1e6).max(1e-6)));
            (name.clone(), pts)
        })
        .collect();
    if lines.is_empty() {
        return String::new();
    }
    let (lo, hi) = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
    let (lo, hi) = (lo / 1.5, hi * 1.5);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (600, 300)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d((1f64..1e5).log_scale(), (lo..hi).log_scale());
        let Ok(mut chart) = chart else {
            return String::new();
        };
        let _ = chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("ms")
            .x_label_formatter(&|x| {
                let q = 100.0 * (1.0 - 1.0 / x);
                if q < 1.0 {
                    "0%".into()
                } else {
                    let digits = format!("{q:.3}");
                    format!("{}%", digits.trim_end_matches('0').trim_end_matches('.'))
                }
            })
            .y_label_formatter(&|y| fmt_ms(*y))
            .draw();
        for (i, (name, pts)) in lines.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            if let Ok(s) =
                chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            {
                s.label(name.clone()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            }
        }
        let _ = chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw();
        let _ = root.present();
    }
    svg
}

/// A millisecond value with about three significant digits.
fn fmt_ms(y: f64) -> String {
    if y >= 100.0 {
        format!("{y:.0}")
    } else if y >= 1.0 {
        format!("{y:.1}")
    } else {
        let s = format!("{y:.6}");
        let t = s.trim_end_matches('0');
        // Keep three significant digits after the leading zeros.
        let first = t
            .find(|c: char| c.is_ascii_digit() && c != '0' && c != '.')
            .unwrap_or(t.len());
        t[..(first + 3).min(t.len())].to_string()
    }
}

/// Queue depth over time (seconds), with the capacity as a line when bounded.
pub fn depth_chart(title: &str, points: &[DepthPoint], capacity: Option<u64>) -> String {
    if points.is_empty() {
        return String::new();
    }
    let t_end = points
        .last()
        .map_or(1.0, |p| p.elapsed_ns as f64 / 1e9)
        .max(0.1);
    let top = points
        .iter()
        .map(|p| p.depth)
        .max()
        .unwrap_or(0)
        .max(capacity.unwrap_or(0))
        .max(1) as f64
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (600, 220)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let Ok(mut chart) = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..t_end, 0f64..top)
        else {
            return String::new();
        };
        let _ = chart.configure_mesh().x_desc("s").y_desc("items").draw();
        let _ = chart.draw_series(LineSeries::new(
            points
                .iter()
                .map(|p| (p.elapsed_ns as f64 / 1e9, p.depth as f64)),
            COLORS[0].stroke_width(2),
        ));
        if let Some(c) = capacity {
            let _ = chart.draw_series(LineSeries::new(
                [(0.0, c as f64), (t_end, c as f64)],
                COLORS[1].stroke_width(1),
            ));
        }
        let _ = root.present();
    }
    svg
}

/// One row per worker: its stalls as bars over the run, with busy and parked shares.
pub fn worker_timeline(
    workers: &[(String, f64, f64)],
    stalls: &[StallRecord],
    duration_ns: u64,
    kind_of: impl Fn(&StallRecord) -> &'static str,
) -> Markup {
    if workers.is_empty() {
        return html! {};
    }
    let (w, row, left) = (1200.0, 24.0, 260.0);
    let h = row * workers.len() as f64 + 30.0;
    let span = duration_ns.max(1) as f64;
    let x = |ns: u64| left + (w - left - 10.0) * (ns as f64 / span).min(1.0);
    let index: BTreeMap<&str, usize> = workers
        .iter()
        .enumerate()
        .map(|(i, (n, _, _))| (n.as_str(), i))
        .collect();
    let bars: Vec<(f64, f64, f64, &'static str, &StallRecord)> = stalls
        .iter()
        .filter_map(|s| {
            let i = *index.get(s.thread_name.as_str())?;
            let y = 6.0 + row * i as f64;
            let (x0, x1) = (x(s.start_ns), x(s.start_ns.saturating_add(s.duration_ns)));
            Some((x0, (x1 - x0).max(1.0), y, kind_of(s), s))
        })
        .collect();
    let color = |kind: &str| match kind {
        "cpu-bound-poll" => "#d62728",
        "lock-contention" => "#9467bd",
        "runtime-blocked" => "#000000",
        _ => "#ff7f0e",
    };
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class="chart" width=(w) height=(h)
            viewBox=(format!("0 0 {w} {h}")) font-family="sans-serif" font-size="11" {
            @for (i, (name, busy, parked)) in workers.iter().enumerate() {
                @let y = 6.0 + row * i as f64;
                text x="4" y=(format!("{:.1}", y + 15.0)) {
                    (name) " · busy " (format!("{:.0}", busy * 100.0)) "% parked "
                    (format!("{:.0}", parked * 100.0)) "%"
                }
                rect x=(left) y=(format!("{y:.1}")) width=(format!("{:.1}", w - left - 10.0))
                    height=(row - 6.0) fill="#e8eef6" {}
            }
            @for (x0, width, y, kind, s) in &bars {
                rect x=(format!("{x0:.1}")) y=(format!("{y:.1}")) width=(format!("{width:.1}"))
                    height=(row - 6.0) fill=(color(kind)) {
                    title {
                        (kind) " " (format!("{:.1}", s.duration_ns as f64 / 1e6)) " ms at "
                        (format!("{:.2}", s.start_ns as f64 / 1e9)) " s"
                    }
                }
            }
            text x=(left) y=(format!("{:.1}", h - 6.0)) { "0 s" }
            text x=(format!("{:.1}", w - 10.0)) y=(format!("{:.1}", h - 6.0)) text-anchor="end" {
                (format!("{:.1} s", span / 1e9))
            }
        }
    }
}
