//! `cpu-contention`: the runtime's worker threads were runnable but not running; the machine
//! (or the container's CPU quota) had no core for them.
//!
//! **Measures**: the time the worker threads spent runnable but waiting for a CPU, from the
//! kernel's scheduler statistics (`schedstat`), sampled ten times a second: at least
//! `contention_wait_share` (20%) of their runnable time, adding up to at least
//! `contention_min_share` (5%) of the workers' time over the run.
//! **Why it hurts**: every task waits for the core as well as for its worker; polls look long
//! and stalls appear at lines that did nothing wrong (they are counted as `preempted_stalls`).
//! **What to do**: nothing in the code. Give the process more CPU (a higher quota, fewer
//! neighbours on the machine), or run fewer worker threads than the cores it really gets.
//! A process-level finding: it names no line.

use asyncprof_format::{LoadPoint, RunFile};

use crate::findings::FindingLocation;
use crate::{Finding, Severity, Thresholds};

/// The kind's name.
pub const KIND: &str = "cpu-contention";

/// Whether the worker threads waited for a CPU past the threshold in sample `p`.
pub(crate) fn starved(p: &LoadPoint, t: &Thresholds) -> bool {
    p.cpu_wait_share()
        .is_some_and(|s| s >= t.contention_wait_share)
}

/// One finding per runtime whose workers waited for a CPU past the thresholds.
pub(crate) fn findings(run: &RunFile, t: &Thresholds) -> Vec<Finding> {
    let mut out = Vec::new();
    for (id, points) in super::load_by_runtime(run) {
        if (points.len() as u64) < t.load_min_points {
            continue;
        }
        let wait: u64 = points.iter().map(|p| p.cpu_wait_ns).sum();
        let ran: u64 = points.iter().map(|p| p.cpu_run_ns).sum();
        let span: u64 = points.iter().map(|p| p.span_ns).sum();
        if wait + ran == 0 || span == 0 {
            continue;
        }
        let share = wait as f64 / (wait + ran) as f64;
        let of_span = wait as f64 / span as f64;
        if share < t.contention_wait_share || of_span < t.contention_min_share {
            continue;
        }
        let starved_points = points.iter().filter(|p| starved(p, t)).count();
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
                "{starved_points} of {} samples (ten a second) found them waiting past {:.0}%",
                points.len(),
                t.contention_wait_share * 100.0
            ),
            format!("{preempted} long polls were preempted rather than slow"),
        ];
        let recommendation = format!(
            "The machine, not the code: the {} worker threads of {} were ready to run but had \
             no CPU for {:.0}% of their runnable time. Polls and latencies measured in this run \
             include that wait. Give the process more CPU (raise the container's quota, move \
             neighbours off the machine) or run fewer worker threads than the cores it really \
             gets; then profile again before changing code.",
            points.first().map_or(0, |p| p.workers),
            super::runtime_label(run, id),
            share * 100.0
        );
        let severity = if share >= 0.5 {
            Severity::Error
        } else {
            Severity::Warning
        };
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
