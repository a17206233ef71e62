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
//! **Not a finding**: a bounded queue whose items went through faster than one per
//! `backpressure_min_item_us` (20 µs) on average and that refused nothing. A pipeline fed as
//! fast as it can go (a batch job, a benchmark) fills the queue before its slowest stage
//! however fast that stage is; a stage taking a few microseconds an item is its pace, not a
//! defect to fix.

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

/// A bounded queue that refused nothing and whose items went through faster than one per
/// `backpressure_min_item_us` on average: the run's length over the items its instances
/// delivered, times the instances (each instance's own pace, were they alike; a queue that
/// lived only part of the run counts as slower than it was, so this errs towards a finding).
fn flat_out(q: &QueueStats, elapsed_ns: u64, t: &Thresholds) -> bool {
    if q.rejected > 0 || q.dequeued == 0 {
        return false;
    }
    let per_item_ns = elapsed_ns as f64 * q.instances.max(1) as f64 / q.dequeued as f64;
    per_item_ns < t.backpressure_min_item_us * 1e3
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
    // Follow a chain to the queue that is not itself upstream of another.
    let end_of = |start: u64| {
        let mut end = start;
        let mut hops = 0;
        while let Some(&next) = upstream_of.get(&end) {
            end = next;
            hops += 1;
            if hops > full.len() {
                break;
            }
        }
        end
    };
    for &up in upstream_of.keys() {
        let end = end_of(up);
        blamed
            .entry(end)
            .or_default()
            .push(format!("{} ({})", full[&up].name, full[&up].location));
    }
    full.values()
        // A chain that ends at a queue filled by a pipeline running flat out is that pace,
        // its queues upstream included (they are full because it is).
        .filter(|q| !upstream_of.contains_key(&q.id) && !flat_out(q, elapsed_ns, t))
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

#[cfg(test)]
mod tests {
    use super::*;
    use asyncprof_format::Histogram;

    /// A bounded queue full in 9 of 10 samples of a 1 s run, its senders having waited 1,000
    /// times (5 µs each); `dequeued` items went through its `instances`, `rejected` sends
    /// were refused.
    fn full_queue(dequeued: u64, rejected: u64, instances: u64) -> QueueStats {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_max(3_600_000_000_000, 2).unwrap();
        h.record_n(5_000, 1_000).unwrap();
        let mut q = QueueStats::default();
        q.id = 1;
        q.name = "q".into();
        q.kind = QueueKind::Bounded;
        q.capacity = Some(256);
        q.instances = instances;
        q.enqueued = dequeued;
        q.dequeued = dequeued;
        q.rejected = rejected;
        q.samples = 10;
        q.full_samples = 9;
        q.send_wait_ns = Histogram::from_hdr(&h);
        q
    }

    #[test]
    fn a_queue_items_go_through_in_microseconds_is_a_finding_only_when_it_refused_sends() {
        let t = Thresholds::default();
        let kinds = |q: QueueStats| findings(&[q], 1_000_000_000, &t).len();
        // An item every 2 ms: a stage that cannot keep up.
        assert_eq!(kinds(full_queue(500, 0, 1)), 1);
        // An item every 0.5 µs: a pipeline running flat out.
        assert_eq!(kinds(full_queue(2_000_000, 0, 1)), 0);
        // ... unless sends were refused: items were lost.
        assert_eq!(kinds(full_queue(2_000_000, 3, 1)), 1);
        // 100,000 items through 10,000 instances: each an item every 100 ms.
        assert_eq!(kinds(full_queue(100_000, 0, 10_000)), 1);
        // Just past the threshold either way (20 µs an item: 50,000 in 1 s).
        assert_eq!(kinds(full_queue(49_000, 0, 1)), 1);
        assert_eq!(kinds(full_queue(51_000, 0, 1)), 0);
    }

    #[test]
    fn a_queue_full_because_the_one_after_it_is_full_flat_out_is_no_finding_either() {
        let t = Thresholds::default();
        // `a` (an item every 2 ms) feeds a stage that splits each item into many on `b`, and
        // that stage waited on `b` nearly all the time; `b` moves an item every 0.5 µs.
        let mut a = full_queue(500, 0, 1);
        a.name = "a".into();
        a.consumer_blocked_ns = 900_000_000;
        a.downstream = Some(2);
        let mut b = full_queue(2_000_000, 0, 1);
        b.id = 2;
        b.name = "b".into();
        assert!(findings(&[a.clone(), b.clone()], 1_000_000_000, &t).is_empty());
        // With `b` slow (an item every 2 ms) the finding is `b`'s, `a` named upstream of it.
        b.dequeued = 500;
        b.enqueued = 500;
        let f = findings(&[a, b], 1_000_000_000, &t);
        assert_eq!(f.len(), 1, "{f:#?}");
        let q = f[0].queue.as_ref().unwrap();
        assert_eq!(q.name, "b");
        assert_eq!(q.upstream.len(), 1, "{q:#?}");
    }
}
