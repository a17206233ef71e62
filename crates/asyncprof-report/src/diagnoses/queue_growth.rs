//! `queue-growth`: an unbounded (or very large) queue whose depth keeps rising.
//!
//! **Measures**: the depth sampled over the run: a fitted growth of at least `growth_min_rate`
//! items a second, the last third's mean depth `growth_ratio` times the first third's, and an
//! end depth of at least `growth_min_depth` and `growth_undrained_share` of the peak (a burst
//! that drains is not growth). A queue that rose so, each third of its rise deeper than the
//! one before, for at least two thirds of the run and drained only after its peak (its
//! producers stopped, its consumer had a grace time) grew too.
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

/// The mean depth of each third of `points`, oldest first (`None` under three points).
fn thirds(points: &[DepthPoint]) -> Option<(f64, f64, f64)> {
    let third = points.len() / 3;
    (third > 0).then(|| {
        (
            mean_depth(&points[..third]),
            mean_depth(&points[third..points.len() - third]),
            mean_depth(&points[points.len() - third..]),
        )
    })
}

/// The fitted growth of `points`, items per second, when the depth rose: the last third's
/// mean `growth_ratio` times the first third's, at least `growth_min_rate`, ending at
/// `growth_min_depth` or more.
fn rise_rate(points: &[DepthPoint], t: &Thresholds) -> Option<f64> {
    let (first, _, last) = thirds(points)?;
    let end = points.last().map_or(0, |p| p.depth);
    let rate = slope(points);
    (last >= first * t.growth_ratio + 1.0 && end >= t.growth_min_depth && rate >= t.growth_min_rate)
        .then_some(rate)
}

/// Each third of `points` is deeper on average than the one before: a rise that lasted, not
/// a burst at the end of a quiet stretch.
fn steady(points: &[DepthPoint]) -> bool {
    thirds(points).is_some_and(|(a, b, c)| a < b && b < c)
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
        let end = points.last().map_or(0, |p| p.depth);
        let max = points.iter().map(|p| p.depth).max().unwrap_or(0);
        let peak_at = points.iter().rposition(|p| p.depth == max).unwrap_or(0);
        // Growth to the end of the run; or growth for at least two thirds of it, to a peak
        // that drained only once the producers stopped (a run that ends after a grace time
        // for the consumer): a burst rises and drains within the run.
        let rise = &points[..=peak_at];
        let undrained = end as f64 >= t.growth_undrained_share * max as f64;
        let grown = match rise_rate(points, t).filter(|_| undrained) {
            Some(rate) => Some((rate, false)),
            None if peak_at + 1 >= points.len() * 2 / 3 && steady(rise) => {
                rise_rate(rise, t).map(|rate| (rate, true))
            }
            None => None,
        };
        let Some((rate, drained)) = grown else {
            continue;
        };
        let mut ev = evidence(q);
        ev.growth_per_s = (rate * 10.0).round() / 10.0;
        let held = if drained { max } else { end };
        let projected_items = held as f64 + rate * 3600.0;
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
            "Queue {:?} grew by {:.0} items/s and {}: its consumer at {consumer} is slower \
             than its producers. At this rate it holds {:.0} items in an hour{memory}, and \
             every item waits longer than the last. Use a bounded channel sized to the load so \
             producers slow down with the consumer, or make the consumer keep up (batch, \
             parallelize, move slow work off it).",
            q.name,
            rate,
            if drained {
                format!("peaked at {max} items, draining only once its producers stopped")
            } else {
                format!("ended holding {end} items")
            },
            projected_items
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An unbounded queue sampled ten times a second with `depths`.
    fn run_with(depths: &[u64]) -> (RunFile, Vec<QueueStats>) {
        let mut bytes = Vec::new();
        let header = asyncprof_format::Header::new("svc");
        asyncprof_format::RunWriter::new(&mut bytes, &header)
            .unwrap()
            .write_end()
            .unwrap();
        let mut run = asyncprof_format::read_bytes(&bytes).unwrap();
        let points = depths
            .iter()
            .enumerate()
            .map(|(i, d)| {
                serde_json::from_value(serde_json::json!({
                    "elapsed_ns": i as u64 * 100_000_000, "depth": d, "waiting": 0
                }))
                .unwrap()
            })
            .collect();
        run.queue_depths.insert(1, points);
        let q: QueueStats = serde_json::from_value(serde_json::json!({
            "id": 1, "name": "results", "kind": QueueKind::Unbounded,
            "enqueued": 9000, "dequeued": 9000, "samples": depths.len(),
        }))
        .unwrap();
        (run, vec![q])
    }

    /// Known truth: the price monitor's unbounded results queue grows for the three seconds
    /// its producers run, then drains in the consumer's grace time before the run ends (on a
    /// machine whose disk syncs fast the store drains it all). That is growth; a burst that
    /// rises and drains within the run, or a queue that stays flat, is not.
    #[test]
    fn growth_that_drains_only_after_the_producers_stopped_is_growth() {
        let t = Thresholds::default();
        // 3 s rising by 40 items a tick to 1,200, then 0.8 s draining to nothing.
        let mut grew: Vec<u64> = (1..=30).map(|i| i * 40).collect();
        grew.extend((0..8).map(|i| 1_200 - (i + 1) * 150));
        let (run, qs) = run_with(&grew);
        let found = findings(&run, &qs, &t);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].recommendation.contains("peaked at 1200 items"));
        // Still growing at the end: the finding as before.
        let (run, qs) = run_with(&grew[..30]);
        let found = findings(&run, &qs, &t);
        assert_eq!(found.len(), 1);
        assert!(found[0].recommendation.contains("ended holding 1200 items"));
        // A burst: up to 2,000 within half a second, drained, then quiet for 3 s.
        let mut burst = vec![0, 500, 1_000, 2_000, 1_000, 300, 0];
        burst.extend([0; 30]);
        let (run, qs) = run_with(&burst);
        assert!(findings(&run, &qs, &t).is_empty());
        // A burst late in a run that was quiet until then: it rose for too short a time.
        let mut late = vec![0; 24];
        late.extend([600, 1_200, 1_800, 2_400, 1_200, 0]);
        let (run, qs) = run_with(&late);
        assert!(findings(&run, &qs, &t).is_empty());
        // Flat.
        let (run, qs) = run_with(&[700; 40]);
        assert!(findings(&run, &qs, &t).is_empty());
    }
}
