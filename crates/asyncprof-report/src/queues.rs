//! Queue diagnoses.
//!
//! - `queue-backpressure`: a bounded queue was full (or had senders waiting) for a large share
//!   of the run, and senders waited for room or were refused. Everything upstream of it slows
//!   to the pace of its consumer, latency climbs by the time items sit in it, and refused
//!   items are lost. The consuming stage (where items are received) limits the pipeline:
//!   make it faster, run more consumers of it in parallel, or shed load before the queue.
//!   A full queue whose consumers spent that time waiting to send to a queue further down is
//!   not the bottleneck itself: the finding goes to the queue further down, and names the
//!   queues upstream that filled because of it.
//! - `queue-growth`: an unbounded (or very large) queue whose depth kept growing over the run
//!   and did not drain. Its consumer is slower than its producers, so memory grows until the
//!   process is killed and every queued item waits longer than the one before. Bound the
//!   queue so producers feel the backpressure, or make the consumer keep up.
//!
//! Semaphores are reported but never diagnosed: waiting on a concurrency or rate limit is
//! usually its purpose.

use std::collections::BTreeMap;

use asyncprof_format::{DepthPoint, QueueKind, QueueStats, RunFile};
use serde::Serialize;

use crate::{Finding, FindingLocation, Severity, Thresholds};

/// The evidence of a queue finding.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct QueueEvidence {
    /// The queue's name.
    pub name: String,
    /// Channel, semaphore or gauge.
    pub kind: QueueKind,
    /// Capacity of one instance, when bounded.
    pub capacity: Option<u64>,
    /// Share of depth samples that found it full or a sender waiting (0 to 1).
    pub full_share: f64,
    /// Sends refused because it was full.
    pub rejected: u64,
    /// Items sent and received.
    pub enqueued: u64,
    /// Items received.
    pub dequeued: u64,
    /// Depth at the end, and the largest seen.
    pub depth: u64,
    /// Largest depth seen.
    pub max_depth: u64,
    /// 99th percentile of sender waits, ms.
    pub send_wait_p99_ms: f64,
    /// Growth of the depth, items per second (queue-growth).
    pub growth_per_s: f64,
    /// Memory the queue would hold after one more hour at this growth, bytes (0 when the
    /// item size is unknown).
    pub projected_bytes_1h: u64,
    /// Where items are sent from.
    pub producer: Option<String>,
    /// Where items are received: the consuming stage.
    pub consumer: Option<String>,
    /// Queues upstream that are full because this one is.
    pub upstream: Vec<String>,
}

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e4).round() / 100.0
}

fn share(q: &QueueStats) -> f64 {
    if q.samples == 0 {
        0.0
    } else {
        q.full_samples as f64 / q.samples as f64
    }
}

fn evidence(q: &QueueStats) -> QueueEvidence {
    QueueEvidence {
        name: q.name.clone(),
        kind: q.kind,
        capacity: q.capacity,
        full_share: (share(q) * 1000.0).round() / 1000.0,
        rejected: q.rejected,
        enqueued: q.enqueued,
        dequeued: q.dequeued,
        depth: q.depth,
        max_depth: q.max_depth,
        send_wait_p99_ms: ms(q.send_wait_ns.quantile(0.99)),
        producer: q.producer.as_ref().map(ToString::to_string),
        consumer: q.consumer.as_ref().map(ToString::to_string),
        ..QueueEvidence::default()
    }
}

fn location(q: &QueueStats) -> FindingLocation {
    FindingLocation {
        file: q.location.file.clone(),
        line: q.location.line,
        function: format!("queue {:?}", q.name),
    }
}

/// Total and longest sender wait.
fn waits(q: &QueueStats) -> (u64, f64, f64) {
    let h = q.send_wait_ns.to_hdr();
    let total = h.mean() * h.len() as f64;
    (h.len(), (total / 1e4).round() / 100.0, ms(h.max()))
}

fn is_backpressured(q: &QueueStats, t: &Thresholds) -> bool {
    let bounded = match q.kind {
        QueueKind::Bounded => q.send_wait_ns.count() > 0 || q.rejected > 0,
        QueueKind::Gauge => q.capacity.is_some(),
        _ => false,
    };
    bounded && q.samples >= t.queue_min_samples && share(q) >= t.backpressure_full_share
}

/// Backpressure findings, one per bottleneck queue.
pub(crate) fn backpressure(queues: &[QueueStats], elapsed_ns: u64, t: &Thresholds) -> Vec<Finding> {
    let full: BTreeMap<u64, &QueueStats> = queues
        .iter()
        .filter(|q| is_backpressured(q, t))
        .map(|q| (q.id, q))
        .collect();
    // A full queue whose consumers spent most of its full time blocked sending further down
    // is full because of that queue.
    let mut blamed: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut upstream_of: BTreeMap<u64, u64> = BTreeMap::new();
    for q in full.values() {
        let full_ns = share(q) * elapsed_ns as f64;
        if let Some(d) = q.downstream.filter(|d| full.contains_key(d)) {
            if q.consumer_blocked_ns as f64 >= t.backpressure_upstream_share * full_ns {
                upstream_of.insert(q.id, d);
            }
        }
    }
    for (&up, &down) in &upstream_of {
        // Follow the chain to the queue that is not itself upstream of another.
        let mut end = down;
        let mut hops = 0;
        while let Some(&next) = upstream_of.get(&end) {
            end = next;
            hops += 1;
            if hops > full.len() {
                break;
            }
        }
        blamed
            .entry(end)
            .or_default()
            .push(format!("{} ({})", full[&up].name, full[&up].location));
    }
    full.values()
        .filter(|q| !upstream_of.contains_key(&q.id))
        .map(|q| {
            let mut ev = evidence(q);
            ev.upstream = blamed.remove(&q.id).unwrap_or_default();
            let (count, total_ms, max_ms) = waits(q);
            let consumer = ev
                .consumer
                .clone()
                .unwrap_or_else(|| "its consumer".to_string());
            let refused = if q.rejected > 0 {
                format!(" {} sends were refused (items lost or retried).", q.rejected)
            } else {
                String::new()
            };
            let recommendation = format!(
                "Queue {:?} was full {:.0}% of the run: senders waited {count} times, {total_ms:.1} ms \
                 in all.{refused} The stage that receives from it, at {consumer}, cannot keep up \
                 and limits the whole pipeline. Make that stage faster (move blocking or CPU work \
                 off it), run several consumers in parallel with bounded concurrency sized to \
                 the load, or shed load before the queue. A bigger buffer only delays the wait.",
                q.name,
                share(q) * 100.0
            );
            Finding {
                kind: "queue-backpressure",
                severity: if share(q) >= 0.5 || q.rejected > 0 {
                    Severity::Error
                } else {
                    Severity::Warning
                },
                location: location(q),
                primitive: None,
                syscall: None,
                count,
                total_ms,
                max_ms,
                recommendation,
                task_location: ev.consumer.clone(),
                stack: Vec::new(),
                queue: Some(ev),
                also: Vec::new(),
            }
        })
        .collect()
}

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
pub(crate) fn growth(run: &RunFile, queues: &[QueueStats], t: &Thresholds) -> Vec<Finding> {
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
        let consumer = ev
            .consumer
            .clone()
            .unwrap_or_else(|| "its consumer".to_string());
        let recommendation = format!(
            "Queue {:?} grew by {:.0} items/s and ended holding {end} items: its consumer at \
             {consumer} is slower than its producers. At this rate it holds {:.0} items in an \
             hour{memory}, and every item waits longer than the last. Use a bounded channel \
             sized to the load so producers slow down with the consumer, or make the consumer \
             keep up (batch, parallelize, move slow work off it).",
            q.name, rate, projected_items
        );
        out.push(Finding {
            kind: "queue-growth",
            severity: if ev.projected_bytes_1h >= 1 << 30 {
                Severity::Error
            } else {
                Severity::Warning
            },
            location: location(q),
            primitive: None,
            syscall: None,
            count: q.enqueued,
            total_ms: 0.0,
            max_ms: 0.0,
            recommendation,
            task_location: ev.consumer.clone(),
            stack: Vec::new(),
            queue: Some(ev),
            also: Vec::new(),
        });
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
