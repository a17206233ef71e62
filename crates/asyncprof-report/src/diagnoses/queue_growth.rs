//! `queue-growth`: an unbounded (or very large) queue whose depth keeps rising.
//!
//! **Measures**: the depth sampled over the run: a fitted growth of at least `growth_min_rate`
//! items a second, the last third's mean depth `growth_ratio` times the first third's, and an
//! end depth of at least `growth_min_depth` and `growth_undrained_share` of the peak (a burst
//! that drains is not growth).
//! **Why it hurts**: the consumer is slower than the producers: memory grows until the process
//! is killed, each item waits longer than the one before, and what is queued at shutdown is lost.
//! **What to do**: bound the queue, sized to the load, so producers slow down with the
//! consumer; or make the consumer keep up (batch, parallelize, move slow work off it).

use asyncprof_format::{DepthPoint, QueueKind, QueueStats, RunFile};

use crate::queues::{consumer_name, evidence, queue_finding};
use crate::{Finding, Severity, Thresholds};

/// The kind's name.
pub const KIND: &str = "queue-growth";

/// Least-squares slope of depth over time, items per second.
fn slope(points: &[DepthPoint]) -> f64 {
    let n = points.len() as f64;
    let (mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0);
    for p in points {
        let x = p.elapsed_ns as f64 / 1e9;
        let y = p.depth as f64;
        sx += x;
        sy += y;
        sxx += x * x;
        sxy += x * y;
    }
    let den = n * sxx - sx * sx;
    if den.abs() < f64::EPSILON {
        0.0
    } else {
        (n * sxy - sx * sy) / den
    }
}

fn mean_depth(points: &[DepthPoint]) -> f64 {
    if points.is_empty() {
        return 0.0;
    }
    points.iter().map(|p| p.depth as f64).sum::<f64>() / points.len() as f64
}

/// Growth findings: unbounded or very large queues whose depth kept rising.
pub(crate) fn findings(run: &RunFile, queues: &[QueueStats], t: &Thresholds) -> Vec<Finding> {
    let mut out = Vec::new();
    for q in queues {
        let candidate = match q.kind {
            QueueKind::Unbounded => true,
            QueueKind::Bounded | QueueKind::Gauge => {
                q.capacity.is_none_or(|c| c >= t.growth_large_capacity)
            }
            _ => false,
        };
        let Some(points) = run.queue_depths.get(&q.id) else {
            continue;
        };
        if !candidate || points.len() < t.queue_min_samples as usize {
            continue;
        }
        let third = points.len() / 3;
        let first = mean_depth(&points[..third]);
        let last = mean_depth(&points[points.len() - third..]);
        let end = points.last().map_or(0, |p| p.depth);
        let max = points.iter().map(|p| p.depth).max().unwrap_or(0);
        let rate = slope(points);
        let grew = last >= first * t.growth_ratio + 1.0
            && end >= t.growth_min_depth
            && end as f64 >= t.growth_undrained_share * max as f64
            && rate >= t.growth_min_rate;
        if !grew {
            continue;
        }
        let mut ev = evidence(q);
        ev.growth_per_s = (rate * 10.0).round() / 10.0;
        let projected_items = end as f64 + rate * 3600.0;
        ev.projected_bytes_1h = (projected_items * q.item_bytes as f64) as u64;
        let memory = if q.item_bytes > 0 {
            format!(
                ", about {} of items (not counting what they point to)",
                bytes(ev.projected_bytes_1h)
            )
        } else {
            String::new()
        };
        let consumer = consumer_name(&ev);
        let recommendation = format!(
            "Queue {:?} grew by {:.0} items/s and ended holding {end} items: its consumer at \
             {consumer} is slower than its producers. At this rate it holds {:.0} items in an \
             hour{memory}, and every item waits longer than the last. Use a bounded channel \
             sized to the load so producers slow down with the consumer, or make the consumer \
             keep up (batch, parallelize, move slow work off it).",
            q.name, rate, projected_items
        );
        let severity = if ev.projected_bytes_1h >= 1 << 30 {
            Severity::Error
        } else {
            Severity::Warning
        };
        // Growth is not waiting: no sender waits, only the items sent.
        let count = q.enqueued;
        out.push(queue_finding(
            KIND,
            q,
            ev,
            severity,
            (count, 0.0, 0.0),
            recommendation,
        ));
    }
    out
}

fn bytes(n: u64) -> String {
    match n {
        0..=1023 => format!("{n} B"),
        1024..=1_048_575 => format!("{:.1} KiB", n as f64 / 1024.0),
        1_048_576..=1_073_741_823 => format!("{:.1} MiB", n as f64 / 1_048_576.0),
        _ => format!("{:.1} GiB", n as f64 / 1_073_741_824.0),
    }
}
