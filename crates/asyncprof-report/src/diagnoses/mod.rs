//! The diagnoses, one module per finding kind. Each says what it measures, why it hurts and
//! what to do; its thresholds live in [`crate::Thresholds`].
//!
//! Stall kinds (a poll that held its worker past the stall threshold), checked in this order:
//! [`runtime_blocked`], [`lock_contention`], [`cpu_bound_poll`], [`blocking_call`].
//! Queue kinds: [`queue_backpressure`], [`queue_growth`].
//! Runtime-wide kinds, from the runtimes' load sampled ten times a second and the tasks alive
//! per spawn location: [`runtime_saturated`], [`blocking_pool_saturated`], [`task_leak`], and
//! [`cpu_contention`] (which blames the machine, not a line).

pub mod blocking_call;
pub mod blocking_pool_saturated;
pub mod cpu_bound_poll;
pub mod cpu_contention;
pub mod lock_contention;
pub mod queue_backpressure;
pub mod queue_growth;
pub mod runtime_blocked;
pub mod runtime_saturated;
pub mod task_leak;

/// Every finding kind, in the order of the list above.
pub const KINDS: &[&str] = &[
    runtime_blocked::KIND,
    lock_contention::KIND,
    cpu_bound_poll::KIND,
    blocking_call::KIND,
    queue_backpressure::KIND,
    queue_growth::KIND,
    runtime_saturated::KIND,
    blocking_pool_saturated::KIND,
    task_leak::KIND,
    cpu_contention::KIND,
];

/// The load points of each runtime, in order.
pub(crate) fn load_by_runtime(
    run: &asyncprof_format::RunFile,
) -> std::collections::BTreeMap<u64, Vec<&asyncprof_format::LoadPoint>> {
    let mut by: std::collections::BTreeMap<u64, Vec<&asyncprof_format::LoadPoint>> =
        std::collections::BTreeMap::new();
    for p in &run.load {
        by.entry(p.runtime).or_default().push(p);
    }
    by
}

/// The label of runtime `id` in `run`: its name, or `runtime <id>`.
pub(crate) fn runtime_label(run: &asyncprof_format::RunFile, id: u64) -> String {
    run.snapshot
        .as_ref()
        .and_then(|s| s.runtimes.iter().find(|r| r.id == id))
        .and_then(|r| r.name.clone())
        .unwrap_or_else(|| format!("runtime {id}"))
}

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
