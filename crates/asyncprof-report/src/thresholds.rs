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
    /// `queue-backpressure`: a bounded queue whose items went through faster than one per
    /// this many microseconds on average (its instances together, over the run) and that
    /// refused no send is a pipeline running as fast as it can, not a stage that cannot keep
    /// up: a pipeline fed flat out always fills the queue before its slowest stage, however
    /// fast that stage is. Default 20 (50,000 items a second).
    pub backpressure_min_item_us: f64,
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
    /// Load samples (ten per second) a runtime needs before the runtime-wide kinds look at
    /// it. Default 5.
    pub load_min_points: u64,
    /// `runtime-saturated`: a sample is saturated when the workers were busy at least this
    /// share of the time and at least one task per worker waited. Default 0.9.
    pub saturated_busy_share: f64,
    /// `runtime-saturated` and `blocking-pool-saturated`: the share of a runtime's samples
    /// that must be saturated. Default 0.25.
    pub saturated_min_share: f64,
    /// `cpu-contention`: the share of the worker threads' runnable time they spent waiting
    /// for a CPU. Default 0.2. Samples past it do not count as `runtime-saturated`.
    pub contention_wait_share: f64,
    /// `cpu-contention`: the waiting must add up to at least this share of the workers'
    /// time (the run's length times the workers). Default 0.05.
    pub contention_min_share: f64,
    /// `cpu-contention`: a sample counts only when everything else on the machine (other
    /// processes, the hypervisor's steal, a CPU quota's throttling) took at least this share
    /// of its CPUs; waiting behind the process's own threads, or a hypervisor's usual steal, is
    /// not the machine being oversubscribed. Default 0.5.
    pub contention_others_share: f64,
    /// `slow-stage`: a stage's mean must be at least this share of an item's end-to-end
    /// mean. Default 0.5.
    pub slow_stage_share: f64,
    /// `slow-stage`: a stage's mean must be at least this long, in milliseconds: some stage
    /// always takes most of a fast item's time. Default 10.
    pub slow_stage_min_ms: f64,
    /// `slow-stage`: closed spans a stage (and the end-to-end latency) needs. Default 20.
    pub stage_min_count: u64,
    /// `task-leak`: tasks alive at one spawn location at the end. Default 100.
    pub leak_min_alive: u64,
    /// `task-leak`: the live tasks must grow at least this many per second. Default 10.
    pub leak_min_rate: f64,
    /// `scheduling-delay`: the 99th percentile of a spawn location's scheduling delays (ms)
    /// from which its tasks waited too long for a worker. Default 5.
    pub sched_delay_p99_ms: f64,
    /// `scheduling-delay`: delays a location needs before its percentile counts. Default 50.
    pub sched_min_delays: u64,
    /// `scheduling-delay`: a poll this long (ms) or longer holds its worker long enough to
    /// delay others; a location whose 99th percentile poll is at least this is a culprit.
    /// Default 1.
    pub long_poll_ms: f64,
    /// `scheduling-delay`: a culprit's long polls must add up to at least this share of the
    /// workers' busy time. Default 0.05.
    pub long_poll_share: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            backpressure_full_share: 0.25,
            backpressure_upstream_share: 0.5,
            backpressure_min_item_us: 20.0,
            queue_min_samples: 5,
            growth_ratio: 1.5,
            growth_min_depth: 500,
            growth_min_rate: 10.0,
            growth_large_capacity: 10_000,
            growth_undrained_share: 0.25,
            load_min_points: 5,
            saturated_busy_share: 0.9,
            saturated_min_share: 0.25,
            contention_wait_share: 0.2,
            contention_min_share: 0.05,
            contention_others_share: 0.5,
            slow_stage_share: 0.5,
            slow_stage_min_ms: 10.0,
            stage_min_count: 20,
            leak_min_alive: 100,
            leak_min_rate: 10.0,
            sched_delay_p99_ms: 5.0,
            sched_min_delays: 50,
            long_poll_ms: 1.0,
            long_poll_share: 0.05,
        }
    }
}

impl Thresholds {
    /// The names of the settings, for `set`.
    pub const NAMES: &'static [&'static str] = &[
        "backpressure_full_share",
        "backpressure_upstream_share",
        "backpressure_min_item_us",
        "queue_min_samples",
        "growth_ratio",
        "growth_min_depth",
        "growth_min_rate",
        "growth_large_capacity",
        "growth_undrained_share",
        "load_min_points",
        "saturated_busy_share",
        "saturated_min_share",
        "contention_wait_share",
        "contention_min_share",
        "contention_others_share",
        "slow_stage_share",
        "slow_stage_min_ms",
        "stage_min_count",
        "leak_min_alive",
        "leak_min_rate",
        "sched_delay_p99_ms",
        "sched_min_delays",
        "long_poll_ms",
        "long_poll_share",
    ];

    /// Set one threshold from `name=value`.
    ///
    /// # Errors
    ///
    /// A message naming the unknown setting or the value that is not a number.
    pub fn set(&mut self, assignment: &str) -> Result<(), String> {
        let (name, value) = assignment
            .split_once('=')
            .ok_or_else(|| format!("{assignment:?} is not NAME=VALUE"))?;
        let (name, value) = (name.trim(), value.trim());
        let number = |v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("{name}: {v:?} is not a number of at least 0"))
        };
        let x = number(value)?;
        match name {
            "backpressure_full_share" => self.backpressure_full_share = x,
            "backpressure_upstream_share" => self.backpressure_upstream_share = x,
            "backpressure_min_item_us" => self.backpressure_min_item_us = x,
            "queue_min_samples" => self.queue_min_samples = x as u64,
            "growth_ratio" => self.growth_ratio = x,
            "growth_min_depth" => self.growth_min_depth = x as u64,
            "growth_min_rate" => self.growth_min_rate = x,
            "growth_large_capacity" => self.growth_large_capacity = x as u64,
            "growth_undrained_share" => self.growth_undrained_share = x,
            "load_min_points" => self.load_min_points = x as u64,
            "saturated_busy_share" => self.saturated_busy_share = x,
            "saturated_min_share" => self.saturated_min_share = x,
            "contention_wait_share" => self.contention_wait_share = x,
            "contention_min_share" => self.contention_min_share = x,
            "contention_others_share" => self.contention_others_share = x,
            "slow_stage_share" => self.slow_stage_share = x,
            "slow_stage_min_ms" => self.slow_stage_min_ms = x,
            "stage_min_count" => self.stage_min_count = x as u64,
            "leak_min_alive" => self.leak_min_alive = x as u64,
            "leak_min_rate" => self.leak_min_rate = x,
            "sched_delay_p99_ms" => self.sched_delay_p99_ms = x,
            "sched_min_delays" => self.sched_min_delays = x as u64,
            "long_poll_ms" => self.long_poll_ms = x,
            "long_poll_share" => self.long_poll_share = x,
            _ => {
                return Err(format!(
                    "unknown threshold {name:?}; known: {}",
                    Self::NAMES.join(", ")
                ))
            }
        }
        Ok(())
    }

    /// The defaults with the settings of `ASYNCPROF_DIAGNOSE` (`name=value,name=value`)
    /// applied.
    ///
    /// # Errors
    ///
    /// As [`Thresholds::set`], naming the variable.
    pub fn from_env() -> Result<Self, String> {
        let mut t = Thresholds::default();
        if let Ok(v) = std::env::var("ASYNCPROF_DIAGNOSE") {
            for a in v.split(',').filter(|a| !a.trim().is_empty()) {
                t.set(a).map_err(|e| format!("ASYNCPROF_DIAGNOSE: {e}"))?;
            }
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_setting_can_be_set_and_bad_input_is_refused() {
        let mut t = Thresholds::default();
        for name in Thresholds::NAMES {
            t.set(&format!("{name}=7")).unwrap();
        }
        assert_eq!(t.queue_min_samples, 7);
        assert_eq!(t.growth_undrained_share, 7.0);
        assert!(t.set("nope=1").unwrap_err().contains("unknown threshold"));
        assert!(t
            .set("growth_ratio=x")
            .unwrap_err()
            .contains("not a number"));
        assert!(t.set("growth_ratio").unwrap_err().contains("NAME=VALUE"));
        assert!(t.set("growth_ratio=-1").is_err());
    }
}
