//! `runtime-saturated`: every worker busy nearly all the time while ready tasks wait for one.
//! No poll is long; there is simply more work than workers.
//!
//! **Measures**: ten times a second, tokio's busy time of the workers and the tasks waiting in
//! its run queues. A sample is saturated when the workers were busy at least
//! `saturated_busy_share` (90%) of it and at least one task per worker waited; at least
//! `saturated_min_share` (25%) of at least `load_min_points` samples must be. Samples whose
//! threads waited for a CPU past `contention_wait_share` while other processes held the CPUs
//! do not count (that is `cpu-contention`, the machine), and a runtime whose busy time went mostly to stalls is
//! left to the stall findings (they name the line).
//! **Why it hurts**: every wake waits behind the queue; latency grows with load although no
//! single poll is slow.
//! **What to do**: more worker threads (if the machine has the cores), less work per item, or
//! CPU-heavy work moved off the runtime (`spawn_blocking`, a rayon pool). The finding names
//! the spawn location whose tasks used the most worker time, and lists the next ones.

use asyncprof_format::RunFile;

use crate::findings::FindingLocation;
use crate::{Finding, Thresholds};

/// The kind's name.
pub const KIND: &str = "runtime-saturated";

/// Spawn locations listed in the evidence.
const LISTED: usize = 3;

/// One finding per runtime whose workers were saturated past the thresholds.
pub(crate) fn findings(run: &RunFile, t: &Thresholds) -> Vec<Finding> {
    let mut out = Vec::new();
    for (id, points) in super::load_by_runtime(run) {
        let known: Vec<_> = points.iter().filter(|p| p.busy_ns.is_some()).collect();
        if (known.len() as u64) < t.load_min_points {
            continue;
        }
        let saturated: Vec<_> = known
            .iter()
            .filter(|p| {
                p.busy_share().unwrap_or(0.0) >= t.saturated_busy_share
                    && p.ready >= u64::from(p.workers.max(1))
                    && !(super::cpu_contention::starved(p, t)
                        && super::cpu_contention::crowded(p, t))
            })
            .collect();
        let share = saturated.len() as f64 / known.len() as f64;
        if share < t.saturated_min_share {
            continue;
        }
        let busy_ns: u64 = saturated.iter().filter_map(|p| p.busy_ns).sum();
        let stall_ns: u64 = run
            .stalls
            .iter()
            .filter(|s| s.runtime == id && !super::preempted(s))
            .map(|s| s.duration_ns)
            .sum();
        if stall_ns as f64 >= 0.5 * busy_ns as f64 {
            continue;
        }
        let mean_ready =
            saturated.iter().map(|p| p.ready).sum::<u64>() as f64 / saturated.len() as f64;
        let max_ready = saturated.iter().map(|p| p.ready).max().unwrap_or(0);
        let workers = saturated.first().map_or(0, |p| p.workers);
        // Who used the workers' time: spawn locations by busy time (all runtimes' tasks: a
        // location is rarely shared between runtimes).
        let mut locations: Vec<_> = run
            .snapshot
            .iter()
            .flat_map(|s| s.locations.iter())
            .filter(|l| l.busy_ns > 0)
            .collect();
        locations.sort_by_key(|l| std::cmp::Reverse(l.busy_ns));
        let total_busy: u64 = locations.iter().map(|l| l.busy_ns).sum();
        let mut evidence = vec![
            format!(
                "{} of {} samples (ten a second) saturated: workers busy at least {:.0}% \
                 while tasks waited for a worker",
                saturated.len(),
                known.len(),
                t.saturated_busy_share * 100.0
            ),
            format!(
                "tasks waiting in the run queues then: {mean_ready:.1} on average, {max_ready} at \
                 most, for {workers} workers"
            ),
        ];
        // With every wake timed (the hooks tier's `schedule-latency` feature, or the layer
        // tier), what the waiting cost each wake.
        if run.header.config.schedule_source == asyncprof_format::ScheduleSource::EveryWake {
            if let Some(h) = run
                .snapshot
                .as_ref()
                .map(|s| &s.runtime.scheduled_ns)
                .filter(|h| h.count() > 0)
            {
                evidence.push(format!(
                    "from wake to poll, tasks waited {:.1} ms at the median and {:.1} ms at p99 \
                     ({} timed wakes)",
                    h.quantile(0.5) as f64 / 1e6,
                    h.quantile(0.99) as f64 / 1e6,
                    h.count()
                ));
            }
        }
        for l in locations.iter().take(LISTED) {
            evidence.push(format!(
                "tasks spawned at {} used {:.0}% of the polled time ({:.0} ms, {} polls)",
                l.location,
                l.busy_ns as f64 * 100.0 / total_busy.max(1) as f64,
                l.busy_ns as f64 / 1e6,
                l.polls
            ));
        }
        // The line is named only when it is the program's own: tasks spawned by a library (a
        // server's connection tasks) are listed in the evidence, and the profile says which
        // of the program's lines they ran.
        let busiest = locations
            .first()
            .filter(|l| asyncprof_format::culprit::is_user_file(&l.location.file));
        let (location, who) = match busiest {
            Some(l) => (
                FindingLocation::at(&l.location),
                format!(
                    " The tasks spawned at {} used most of it ({:.0}%).",
                    l.location,
                    l.busy_ns as f64 * 100.0 / total_busy.max(1) as f64
                ),
            ),
            // The stable tier does not see tasks.
            None => match locations.first() {
                Some(l) => (
                    FindingLocation::default(),
                    format!(
                        " The tasks spawned at {} (a library's code) used most of it: see the \
                         CPU profile for the lines of yours they ran.",
                        l.location
                    ),
                ),
                None => (FindingLocation::default(), String::new()),
            },
        };
        let recommendation = format!(
            "All {workers} workers of {} were busy while {mean_ready:.1} ready tasks waited for \
             one, in {:.0}% of the run: no poll is long, there is more work than workers.{who} \
             Do less per item there (cache, batch, avoid re-parsing), move CPU-heavy work off \
             the runtime (spawn_blocking or a rayon pool, with bounded concurrency), or run \
             more worker threads if the machine has idle cores.",
            super::runtime_label(run, id),
            share * 100.0
        );
        let severity = super::by_share(share);
        let mut f = Finding::runtime_wide(KIND, severity, location, recommendation, evidence);
        f.count = saturated.len() as u64;
        f.total_ms = (busy_ns as f64 / 1e4).round() / 100.0;
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::synthetic::{at, crowd, load_run, location, point};
    use crate::Thresholds;

    /// 20 samples, `saturated` of them with the workers busy `busy` and `ready` tasks
    /// waiting; the others idle. One spawn location used the time.
    fn kinds(
        saturated: u64,
        busy: f64,
        ready: u64,
        wait: f64,
    ) -> Vec<super::super::super::Finding> {
        let points = (0..20)
            .map(|i| {
                if i < saturated {
                    crowd(point(i, busy, ready, wait), 0.5)
                } else {
                    point(i, 0.1, 0, 0.0)
                }
            })
            .collect();
        let parse = location("src/ingest.rs", 42);
        let other = location("src/main.rs", 7);
        super::findings(
            &load_run(
                points,
                vec![
                    at(&other, 1, 0, 5_000_000),
                    at(&parse, 900, 890, 800_000_000),
                ],
            ),
            &Thresholds::default(),
        )
    }

    #[test]
    fn a_quarter_of_the_samples_saturated_is_a_finding_at_the_busiest_spawn_location() {
        let f = kinds(5, 0.95, 4, 0.0);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, super::KIND);
        assert_eq!(
            (f[0].location.file.as_str(), f[0].location.line),
            ("src/ingest.rs", 42)
        );
        assert_eq!(f[0].count, 5);
        assert!(
            f[0].evidence.iter().any(|e| e.contains("src/ingest.rs:42")),
            "{:?}",
            f[0].evidence
        );
        // Just below: 4 of 20.
        assert!(kinds(4, 0.95, 4, 0.0).is_empty());
    }

    #[test]
    fn busy_just_below_the_threshold_or_fewer_waiting_than_workers_is_not_saturated() {
        assert_eq!(kinds(10, 0.9, 2, 0.0).len(), 1);
        assert!(kinds(10, 0.89, 2, 0.0).is_empty());
        assert!(kinds(10, 0.99, 1, 0.0).is_empty());
    }

    #[test]
    fn samples_whose_threads_waited_for_a_cpu_held_by_others_are_the_machine_not_saturation() {
        assert_eq!(kinds(10, 0.99, 8, 0.19).len(), 1);
        assert!(kinds(10, 0.99, 8, 0.2).is_empty());
    }

    #[test]
    fn waiting_behind_the_process_own_threads_is_still_saturation() {
        let points = (0..20)
            .map(|i| crowd(point(i, 0.99, 8, 0.5), 0.1))
            .collect();
        let f = super::findings(
            &load_run(points, vec![at(&location("src/ingest.rs", 42), 9, 0, 1)]),
            &Thresholds::default(),
        );
        assert_eq!(f.len(), 1);
    }
}
