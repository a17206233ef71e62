//! Every diagnosis threshold, in one place.

use serde::Serialize;

/// The thresholds the diagnoses use. `Thresholds::default()` holds the documented defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Thresholds {
    /// `queue-backpressure`: the share of depth samples (0 to 1) that must find a bounded
    /// queue full or a sender waiting. Default 0.25.
    pub backpressure_full_share: f64,
    /// `queue-backpressure`: a full queue whose consumers spent at least this share of its
    /// full time waiting to send further down is blamed on the queue further down.
    /// Default 0.5.
    pub backpressure_upstream_share: f64,
    /// Depth samples (ten per second) a queue needs before it is diagnosed. Default 5.
    pub queue_min_samples: u64,
    /// `queue-growth`: the mean depth of the last third of the run must exceed this many
    /// times that of the first third. Default 1.5.
    pub growth_ratio: f64,
    /// `queue-growth`: the depth at the end must be at least this. Default 500 items.
    pub growth_min_depth: u64,
    /// `queue-growth`: the fitted growth must be at least this many items per second.
    /// Default 10.
    pub growth_min_rate: f64,
    /// `queue-growth`: bounded queues at least this large are checked for growth too.
    /// Default 10,000.
    pub growth_large_capacity: u64,
    /// `queue-growth`: the depth at the end must be at least this share of the largest seen
    /// (a queue that drained is a burst, not growth). Default 0.25.
    pub growth_undrained_share: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            backpressure_full_share: 0.25,
            backpressure_upstream_share: 0.5,
            queue_min_samples: 5,
            growth_ratio: 1.5,
            growth_min_depth: 500,
            growth_min_rate: 10.0,
            growth_large_capacity: 10_000,
            growth_undrained_share: 0.25,
        }
    }
}
