//! What the queue diagnoses share: the evidence of a queue finding and helpers.

use asyncprof_format::{QueueKind, QueueStats};
use serde::Serialize;

use crate::{Finding, FindingLocation, Severity};

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

pub(crate) fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e4).round() / 100.0
}

pub(crate) fn share(q: &QueueStats) -> f64 {
    if q.samples == 0 {
        0.0
    } else {
        q.full_samples as f64 / q.samples as f64
    }
}

pub(crate) fn evidence(q: &QueueStats) -> QueueEvidence {
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

pub(crate) fn location(q: &QueueStats) -> FindingLocation {
    FindingLocation {
        file: q.location.file.clone(),
        line: q.location.line,
        function: format!("queue {:?}", q.name),
    }
}

/// Total and longest sender wait.
pub(crate) fn waits(q: &QueueStats) -> (u64, f64, f64) {
    let h = q.send_wait_ns.to_hdr();
    let total = h.mean() * h.len() as f64;
    (h.len(), (total / 1e4).round() / 100.0, ms(h.max()))
}

/// The name of a queue's consumer for a recommendation: where it receives, if known.
pub(crate) fn consumer_name(ev: &QueueEvidence) -> String {
    ev.consumer
        .clone()
        .unwrap_or_else(|| "its consumer".to_string())
}

/// What a queue diagnosis found about queue `q`: how often and how long its senders waited
/// (`waits`: count, total ms, longest ms), located at the queue's creation and blamed on its
/// consumer.
pub(crate) fn queue_finding(
    kind: &'static str,
    q: &QueueStats,
    ev: QueueEvidence,
    severity: Severity,
    (count, total_ms, max_ms): (u64, f64, f64),
    recommendation: String,
) -> Finding {
    Finding {
        kind,
        severity,
        location: location(q),
        primitive: None,
        primitive_same_code: Vec::new(),
        syscall: None,
        count,
        total_ms,
        max_ms,
        recommendation,
        task_location: ev.consumer.clone(),
        stack: Vec::new(),
        queue: Some(ev),
        also: Vec::new(),
        called_from: Vec::new(),
        runtimes: Vec::new(),
        evidence: Vec::new(),
    }
}
