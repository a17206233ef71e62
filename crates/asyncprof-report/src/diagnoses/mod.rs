//! The diagnoses, one module per finding kind. Each says what it measures, why it hurts and
//! what to do; its thresholds live in [`crate::Thresholds`].
//!
//! Stall kinds (a poll that held its worker past the stall threshold), checked in this order:
//! [`runtime_blocked`], [`lock_contention`], [`cpu_bound_poll`], [`blocking_call`].
//! Queue kinds: [`queue_backpressure`], [`queue_growth`].

pub mod blocking_call;
pub mod cpu_bound_poll;
pub mod lock_contention;
pub mod queue_backpressure;
pub mod queue_growth;
pub mod runtime_blocked;

/// Every finding kind, in the order of the list above.
pub const KINDS: &[&str] = &[
    runtime_blocked::KIND,
    lock_contention::KIND,
    cpu_bound_poll::KIND,
    blocking_call::KIND,
    queue_backpressure::KIND,
    queue_growth::KIND,
];

pub use asyncprof_format::{preempted, PREEMPTED_CPU_SHARE};

/// The blocking call a finding names, for its recommendation.
pub(crate) fn call(primitive: Option<&str>) -> String {
    primitive.map_or_else(|| "this call".to_string(), |p| format!("`{p}`"))
}

#[cfg(test)]
mod tests {
    use asyncprof_format::{StallClass, StallRecord};

    fn stall(class: StallClass, cpu_share: Option<f64>, ongoing: bool) -> StallRecord {
        let mut s = StallRecord::default();
        s.class = class;
        s.cpu_share = cpu_share;
        s.ongoing = ongoing;
        s
    }

    #[test]
    fn only_a_stall_that_neither_slept_nor_computed_is_preemption() {
        assert!(super::preempted(&stall(
            StallClass::CpuBound,
            Some(0.1),
            false
        )));
        assert!(super::preempted(&stall(
            StallClass::Unknown,
            Some(0.2),
            false
        )));
        assert!(!super::preempted(&stall(
            StallClass::CpuBound,
            Some(0.9),
            false
        )));
        assert!(!super::preempted(&stall(
            StallClass::Blocking,
            Some(0.0),
            false
        )));
        assert!(!super::preempted(&stall(StallClass::CpuBound, None, false)));
        assert!(!super::preempted(&stall(
            StallClass::CpuBound,
            Some(0.1),
            true
        )));
    }
}
