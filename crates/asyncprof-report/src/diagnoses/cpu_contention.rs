//! `cpu-contention`: the runtime's worker threads were runnable but not running; the machine
//! (or the container's CPU quota) had no core for them.
//!
//! **Measures**: the time the worker threads spent runnable but waiting for a CPU, from the
//! kernel's scheduler statistics (`schedstat`), sampled ten times a second, and what the
//! rest of the machine used meanwhile (`/proc/stat`'s busy time less the process's own, the
//! hypervisor's steal, a cgroup quota's throttling). A sample counts when the workers waited
//! at least `contention_wait_share` (20%) of their runnable time while everything else took
//! at least `contention_others_share` (half) of the machine's CPUs; the waiting in those
//! samples must add up to at least `contention_min_share` (5%) of the workers' time over the
//! run. Waiting behind the process's own threads (too many busy threads for the cores) is not
//! counted: that is the program, not the machine.
//! **Why it hurts**: every task waits for the core as well as for its worker; polls look long
//! and stalls appear at lines that did nothing wrong (they are counted as `preempted_stalls`).
//! **What to do**: nothing in the code. Give the process more CPU (a higher quota, fewer
//! neighbours on the machine), or run fewer worker threads than the cores it really gets.
//! A process-level finding: it names no line.

use asyncprof_format::{LoadPoint, RunFile};

use crate::findings::FindingLocation;
use crate::{Finding, Thresholds};

/// The kind's name.
pub const KIND: &str = "cpu-contention";

/// Whether the worker threads waited for a CPU past the threshold in sample `p`.
pub(crate) fn starved(p: &LoadPoint, t: &Thresholds) -> bool {
    p.cpu_wait_share()
        .is_some_and(|s| s >= t.contention_wait_share)
}

/// Whether everything else on the machine took at least `contention_others_share` of its
/// CPUs during sample `p` (unknown: assumed so).
pub(crate) fn crowded(p: &LoadPoint, t: &Thresholds) -> bool {
    p.others_share()
        .is_none_or(|s| s >= t.contention_others_share)
}

/// One finding per runtime whose workers waited for a CPU past the thresholds.
pub(crate) fn findings(run: &RunFile, t: &Thresholds) -> Vec<Finding> {
    let mut out = Vec::new();
    for (id, points) in super::load_by_runtime(run) {
        if (points.len() as u64) < t.load_min_points {
            continue;
        }
        let span: u64 = points.iter().map(|p| p.span_ns).sum();
        let hit: Vec<_> = points
            .iter()
            .filter(|p| starved(p, t) && crowded(p, t))
            .collect();
        let wait: u64 = hit.iter().map(|p| p.cpu_wait_ns).sum();
        let ran: u64 = hit.iter().map(|p| p.cpu_run_ns).sum();
        if hit.is_empty() || span == 0 || (wait as f64) < t.contention_min_share * span as f64 {
            continue;
        }
        let share = wait as f64 / (wait + ran).max(1) as f64;
        let others: Vec<f64> = hit.iter().filter_map(|p| p.others_share()).collect();
        let starved_points = hit.len();
        let preempted = run
            .stalls
            .iter()
            .filter(|s| s.runtime == id && super::preempted(s))
            .count();
        let evidence = vec![
            format!(
                "the worker threads waited {:.0} ms for a CPU while runnable, {:.0}% of their \
                 runnable time ({:.0} ms on a CPU)",
                wait as f64 / 1e6,
                share * 100.0,
                ran as f64 / 1e6
            ),
            format!(
                "{starved_points} of {} samples (ten a second) found them waiting past {:.0}% \
                 while the rest of the machine took {} of its CPUs",
                points.len(),
                t.contention_wait_share * 100.0,
                if others.is_empty() {
                    "an unknown share".to_string()
                } else {
                    format!(
                        "{:.0}%",
                        others.iter().sum::<f64>() * 100.0 / others.len() as f64
                    )
                }
            ),
            format!("{preempted} long polls were preempted rather than slow"),
        ];
        let recommendation = format!(
            "The machine, not the code: while other processes held the CPUs, the {} worker \
             threads of {} were ready to run but had no CPU for {:.0}% of their runnable time. Polls and latencies measured in this run \
             include that wait. Give the process more CPU (raise the container's quota, move \
             neighbours off the machine) or run fewer worker threads than the cores it really \
             gets; then profile again before changing code.",
            points.first().map_or(0, |p| p.workers),
            super::runtime_label(run, id),
            share * 100.0
        );
        let severity = super::by_share(share);
        let mut f = Finding::runtime_wide(
            KIND,
            severity,
            FindingLocation::default(),
            recommendation,
            evidence,
        );
        f.total_ms = (wait as f64 / 1e4).round() / 100.0;
        f.count = starved_points as u64;
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::synthetic::{crowd, load_run, point};
    use crate::{Finding, Marker, Score, Thresholds};

    /// 20 busy samples whose threads waited `wait` of their runnable time for a CPU while
    /// other processes took `others` of the machine's CPUs.
    fn crowded(wait: f64, others: f64) -> Vec<Finding> {
        let points = (0..20)
            .map(|i| crowd(point(i, 0.5, 0, wait), others))
            .collect();
        super::findings(&load_run(points, Vec::new()), &Thresholds::default())
    }

    fn findings(wait: f64) -> Vec<Finding> {
        crowded(wait, 0.6)
    }

    #[test]
    fn threads_waiting_a_fifth_of_their_runnable_time_blame_the_machine() {
        let f = findings(0.2);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, super::KIND);
        assert!(f[0].location.file.is_empty());
        assert!(f[0].blames_the_machine());
        assert!(f[0].recommendation.starts_with("The machine, not the code"));
        assert!(findings(0.19).is_empty());
    }

    #[test]
    fn waiting_behind_the_process_own_threads_is_not_the_machine() {
        assert_eq!(crowded(0.5, 0.5).len(), 1);
        assert!(crowded(0.5, 0.49).is_empty());
    }

    #[test]
    fn little_waiting_in_all_is_no_finding_however_large_its_share() {
        // Runnable 1 ms per sample, waiting 60% of it: 12 ms of 4 s of worker time.
        let points = (0..20).map(|i| crowd(point(i, 0.0, 0, 0.6), 0.9)).collect();
        assert!(super::findings(&load_run(points, Vec::new()), &Thresholds::default()).is_empty());
    }

    #[test]
    fn a_finding_that_blames_the_machine_is_not_scored() {
        let f = findings(0.5);
        let score = Score::of(&f, &[Marker::new("blocking-call", "src/main.rs", 3)]);
        assert_eq!((score.found, score.matched_findings), (0, 0));
        assert!(score.unexpected.is_empty());
        assert_eq!(score.unplaced.len(), 1);
    }
}
