//! `queue-backpressure`: a bounded queue that stays full while its senders wait.
//!
//! **Measures**: the share of depth samples (ten a second) that found a bounded queue (or a
//! gauge with a capacity) full or a sender waiting, when senders waited for room or sends were
//! refused; at least `backpressure_full_share` (25%) of at least `queue_min_samples` samples.
//! **Why it hurts**: everything upstream slows to the pace of the queue's consumer, each item
//! waits in the queue, and refused items are lost (a UDP socket drops datagrams meanwhile).
//! **What to do**: make the consuming stage faster, run more consumers of it with bounded
//! concurrency sized to the load, or shed load before the queue; a bigger buffer only delays
//! the wait. A full queue whose consumers spent most of that time waiting to send to another
//! full queue is named in that queue's finding instead (it is full because of it).

use std::collections::BTreeMap;

use asyncprof_format::{QueueKind, QueueStats};

use crate::queues::{consumer_name, evidence, queue_finding, share, waits};
use crate::{Finding, Severity, Thresholds};

/// The kind's name.
pub const KIND: &str = "queue-backpressure";

fn is_backpressured(q: &QueueStats, t: &Thresholds) -> bool {
    let bounded = match q.kind {
        QueueKind::Bounded => q.send_wait_ns.count() > 0 || q.rejected > 0,
        QueueKind::Gauge => q.capacity.is_some(),
        _ => false,
    };
    bounded && q.samples >= t.queue_min_samples && share(q) >= t.backpressure_full_share
}

/// Backpressure findings, one per bottleneck queue.
pub(crate) fn findings(queues: &[QueueStats], elapsed_ns: u64, t: &Thresholds) -> Vec<Finding> {
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
            let (count, total_ms, _) = waits(q);
            let consumer = consumer_name(&ev);
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
            let severity = if share(q) >= 0.5 || q.rejected > 0 {
                Severity::Error
            } else {
                Severity::Warning
            };
            queue_finding(KIND, q, ev, severity, waits(q), recommendation)
        })
        .collect()
}
