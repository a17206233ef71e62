//! The diagnoses, one module per finding kind. Each says what it measures, why it hurts and
//! what to do; its thresholds live in [`crate::Thresholds`].
//!
//! Stall kinds (a poll that held its worker past the stall threshold), checked in this order:
//! [`runtime_blocked`], [`lock_contention`], [`cpu_bound_poll`], [`blocking_call`].
//! Queue kinds: [`queue_backpressure`], [`queue_growth`].
//! Runtime-wide kinds, from the runtimes' load sampled ten times a second and the tasks alive
//! per spawn location: [`runtime_saturated`], [`blocking_pool_saturated`], [`task_leak`], and
//! [`cpu_contention`] (which blames the machine, not a line). From the stages (user spans):
//! [`slow_stage`]. From the spawn locations' scheduling delays and poll times:
//! [`scheduling_delay`].

pub mod blocking_call;
pub mod blocking_pool_saturated;
pub mod cpu_bound_poll;
pub mod cpu_contention;
pub mod lock_contention;
pub mod queue_backpressure;
pub mod queue_growth;
pub mod runtime_blocked;
pub mod runtime_saturated;
pub mod scheduling_delay;
pub mod slow_stage;
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
    slow_stage::KIND,
    scheduling_delay::KIND,
];

/// Whether findings of `kind` are placed at a spawn location (a `tokio::spawn` or
/// `spawn_blocking` call), which only the hooks tier records: in the stable tier they come
/// without a line.
pub fn placed_by_spawn_location(kind: &str) -> bool {
    [
        runtime_saturated::KIND,
        blocking_pool_saturated::KIND,
        task_leak::KIND,
        scheduling_delay::KIND,
    ]
    .contains(&kind)
}

/// The severity of a runtime-wide finding that held in `share` of the run's samples: an
/// error from half of them.
pub(crate) fn by_share(share: f64) -> crate::Severity {
    if share >= 0.5 {
        crate::Severity::Error
    } else {
        crate::Severity::Warning
    }
}

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
pub(crate) fn call(primitive: Option<&str>, same_code: &[String]) -> String {
    let Some(p) = primitive else {
        return "this call".to_string();
    };
    if same_code.is_empty() {
        return format!("`{p}`");
    }
    let others: Vec<String> = same_code.iter().map(|o| format!("`{o}`")).collect();
    format!(
        "`{p}` (or {}: the compiler merged their identical code, and the address names one)",
        others.join(", ")
    )
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
    fn the_playbook_documents_every_kind() {
        let playbook = include_str!("../../../asyncprof/src/playbook.md");
        for kind in super::KINDS {
            assert!(
                playbook.contains(&format!("## `{kind}`")),
                "the playbook has no section for {kind}"
            );
        }
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

/// Synthetic runs for the runtime-wide kinds' tests: load samples and snapshots written with
/// the run-file writer and read back, as `report` reads a real run.
#[cfg(test)]
pub(crate) mod synthetic {
    use asyncprof_format::{
        read_bytes, Header, LoadPoint, LocationStats, RunFile, RunWriter, Snapshot, SourceLocation,
    };

    /// The runtime the samples belong to.
    pub(crate) const RUNTIME: u64 = 1;
    /// A sample period: 100 ms.
    pub(crate) const PERIOD_NS: u64 = 100_000_000;

    /// A sample at index `i` of a 2-worker runtime: busy `busy` of the time, `ready` tasks
    /// waiting, the worker threads waiting `wait` of their runnable time for a CPU.
    pub(crate) fn point(i: u64, busy: f64, ready: u64, wait: f64) -> LoadPoint {
        let mut p = LoadPoint::default();
        p.elapsed_ns = (i + 1) * PERIOD_NS;
        p.runtime = RUNTIME;
        p.workers = 2;
        p.span_ns = 2 * PERIOD_NS;
        p.busy_ns = Some((busy * p.span_ns as f64) as u64);
        p.ready = ready;
        let runnable = p.busy_ns.unwrap_or(0).max(1_000_000);
        p.cpu_wait_ns = (wait * runnable as f64) as u64;
        p.cpu_run_ns = runnable - p.cpu_wait_ns;
        p.rss_bytes = 10 << 20;
        p.machine_ns = 2 * PERIOD_NS;
        p
    }

    /// `p` with the rest of the machine taking `share` of its CPUs.
    pub(crate) fn crowd(mut p: LoadPoint, share: f64) -> LoadPoint {
        p.others_cpu_ns = (share * p.machine_ns as f64) as u64;
        p
    }

    /// The spawn location `file:line`.
    pub(crate) fn location(file: &str, line: u32) -> SourceLocation {
        SourceLocation::new(file, line, 5)
    }

    /// Location stats of `loc`: `spawned` tasks of which `completed` ended, `busy_ns` polled.
    pub(crate) fn at(
        loc: &SourceLocation,
        spawned: u64,
        completed: u64,
        busy_ns: u64,
    ) -> LocationStats {
        let mut l = LocationStats::default();
        l.location = loc.clone();
        l.tasks_spawned = spawned;
        l.tasks_completed = completed;
        l.busy_ns = busy_ns;
        l.polls = spawned;
        l
    }

    /// A run of `snapshots`, each `(elapsed_ns, locations, load points)`.
    pub(crate) fn run(snapshots: Vec<(u64, Vec<LocationStats>, Vec<LoadPoint>)>) -> RunFile {
        let mut bytes = Vec::new();
        let mut w = RunWriter::new(&mut bytes, &Header::new("svc")).unwrap();
        for (elapsed_ns, locations, load) in snapshots {
            let mut s = Snapshot::default();
            s.elapsed_ns = elapsed_ns;
            s.locations = locations;
            s.load = load;
            w.write_snapshot(&s).unwrap();
        }
        w.write_end().unwrap();
        read_bytes(&bytes).unwrap()
    }

    /// A run of one snapshot holding `points`, and `locations`.
    pub(crate) fn load_run(points: Vec<LoadPoint>, locations: Vec<LocationStats>) -> RunFile {
        let end = points.last().map_or(0, |p| p.elapsed_ns);
        run(vec![(end, locations, points)])
    }
}
