//! `task-leak`: tasks spawned at one location pile up: spawned faster than they finish,
//! until the run ends.
//!
//! **Measures**: the live tasks of each spawn location in the program's own code (not a
//! library's: a connection pool spawns a task per connection at its own line) at every
//! snapshot (about once a
//! second), up to their peak: a runtime shut down at the end drops its tasks, so the last
//! snapshots may show them gone. A location leaks when its peak comes in the last third of
//! its snapshots, and up to it, over at least three snapshots, its live tasks grow at least
//! `leak_min_rate` (10) per second by a least-squares fit, reach `leak_min_alive` (100) or
//! more, still grow in the last third, and at least half the tasks it spawned over that time
//! are still alive. The memory they hold is estimated from
//! the process's resident memory over the same time (an upper bound: everything else that
//! grew counts too).
//! **Why it hurts**: each live task keeps its future's state (buffers, connections, timers)
//! and its join handle's slot; memory grows until the process is killed, and timers or
//! sockets they hold wake the runtime for nothing.
//! **What to do**: give the task an end: a timeout (`tokio::time::timeout`), a bounded retry
//! count, a cancellation token or a `JoinSet` dropped with its owner; or do not spawn per
//! event: one long-lived task fed by a channel. The await point that holds them is not shown:
//! tokio's task dumps would name it, but asyncprof does not take them, because taking one
//! changes what the service does: with tokio 1.54 a dump holds every worker at a barrier (up to
//! 250 ms) and can leave a multi-thread runtime stuck (tokio issue #7478). Look for the
//! `.await` in the spawned future that has no deadline.

use asyncprof_format::{RunFile, SourceLocation};

use crate::findings::FindingLocation;
use crate::{Finding, Severity, Thresholds};

/// The kind's name.
pub const KIND: &str = "task-leak";

/// Snapshots a location needs before it is diagnosed.
const MIN_POINTS: usize = 3;

/// Slope in tasks per second of `(seconds, alive)` points by least squares.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx > 0.0 {
        sxy / sxx
    } else {
        0.0
    }
}

/// The process's resident memory nearest to `elapsed_ns`, from the load samples.
fn rss_at(run: &RunFile, elapsed_ns: u64) -> Option<u64> {
    run.load
        .iter()
        .filter(|p| p.rss_bytes > 0)
        .min_by_key(|p| p.elapsed_ns.abs_diff(elapsed_ns))
        .map(|p| p.rss_bytes)
}

/// One finding per spawn location whose live tasks grew past the thresholds.
pub(crate) fn findings(run: &RunFile, t: &Thresholds) -> Vec<Finding> {
    let mut locations: Vec<&SourceLocation> = run
        .series
        .iter()
        .flat_map(|p| p.locations.iter().map(|l| &l.location))
        // Tasks a library spawns (a connection pool's connections) at its own line: that
        // line is not the program's to change, and pools grow to their size by design.
        .filter(|l| asyncprof_format::culprit::is_user_file(&l.file))
        .collect();
    locations.sort();
    locations.dedup();
    let mut out = Vec::new();
    for loc in locations {
        // (elapsed, spawned, completed) at each snapshot that listed it.
        let seen: Vec<(u64, u64, u64)> = run
            .series
            .iter()
            .filter_map(|p| {
                let l = p.locations.iter().find(|l| &l.location == loc)?;
                Some((p.elapsed_ns, l.spawned, l.completed))
            })
            .collect();
        let alive = |s: &(u64, u64, u64)| s.1.saturating_sub(s.2);
        // Up to the peak (the last snapshot with the most live tasks), which must come in
        // the last third: a runtime shut down drops its tasks after it.
        let Some(peak) = (0..seen.len()).max_by_key(|&i| (alive(&seen[i]), i)) else {
            continue;
        };
        if peak + 1 < MIN_POINTS || 3 * peak < 2 * (seen.len() - 1) {
            continue;
        }
        let seen = &seen[..=peak];
        let (first, last) = (seen[0], seen[seen.len() - 1]);
        if alive(&last) < t.leak_min_alive {
            continue;
        }
        let xy: Vec<(f64, f64)> = seen
            .iter()
            .map(|s| (s.0 as f64 / 1e9, alive(s) as f64))
            .collect();
        let rate = slope(&xy);
        if rate < t.leak_min_rate {
            continue;
        }
        // Still growing at the end: the last third's last point above everything before it.
        let cut = seen.len() - seen.len().div_ceil(3);
        let before = seen[..cut.max(1)].iter().map(alive).max().unwrap_or(0);
        if alive(&last) <= before {
            continue;
        }
        // Most of what was spawned meanwhile is still alive.
        let spawned = last.1.saturating_sub(first.1);
        let gained = alive(&last).saturating_sub(alive(&first));
        if spawned == 0 || (gained as f64) < 0.5 * spawned as f64 {
            continue;
        }
        let secs = (last.0.saturating_sub(first.0)) as f64 / 1e9;
        let mut evidence = vec![
            format!(
                "live tasks spawned here: {} at {:.1} s, {} at {:.1} s ({rate:.0} per second by \
                 a least-squares fit over {} snapshots)",
                alive(&first),
                first.0 as f64 / 1e9,
                alive(&last),
                last.0 as f64 / 1e9,
                seen.len()
            ),
            format!(
                "{spawned} spawned and {} finished over those {secs:.1} s",
                last.2.saturating_sub(first.2)
            ),
        ];
        if let (Some(a), Some(b)) = (rss_at(run, first.0), rss_at(run, last.0)) {
            let grew = b.saturating_sub(a);
            evidence.push(format!(
                "the process's resident memory grew {:.1} MiB meanwhile, at most {:.1} KiB per \
                 task gained (everything else that grew counts too)",
                grew as f64 / 1_048_576.0,
                grew as f64 / 1024.0 / gained.max(1) as f64
            ));
        }
        if let Some(snap) = &run.snapshot {
            let mut idle: Vec<u64> = snap
                .tasks
                .iter()
                .filter(|task| &task.location == loc)
                .map(|task| task.idle_ns)
                .collect();
            if !idle.is_empty() {
                idle.sort_unstable();
                evidence.push(format!(
                    "{} of the busiest live tasks listed are from here, idle {:.0} ms on median",
                    idle.len(),
                    idle[idle.len() / 2] as f64 / 1e6
                ));
            }
        }
        evidence.push(
            "where they wait is not shown: asyncprof takes no tokio task dumps (a dump holds \
             every worker up to 250 ms and can leave the runtime stuck), so the `.await` \
             holding them is not known"
                .to_string(),
        );
        let recommendation = format!(
            "Tasks spawned at {loc} do not finish: {} are alive and {rate:.0} more pile up \
             every second. Give each one an end (a timeout around the awaited call, a bounded \
             retry count, a cancellation token, or a JoinSet owned by what started them), or \
             feed one long-lived task through a channel instead of spawning per event. Look \
             for the `.await` in that future that has no deadline.",
            alive(&last)
        );
        let severity = if alive(&last) >= 10 * t.leak_min_alive {
            Severity::Error
        } else {
            Severity::Warning
        };
        let mut f = Finding::runtime_wide(
            KIND,
            severity,
            FindingLocation::at(loc),
            recommendation,
            evidence,
        );
        f.count = alive(&last);
        f.task_location = Some(loc.to_string());
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::synthetic::{at, location, run};
    use crate::{Finding, Thresholds};

    const SEC: u64 = 1_000_000_000;

    /// Snapshots at 0.5 s, 1.5 s, … of one spawn location: `(spawned, completed)` each.
    fn findings(counts: &[(u64, u64)]) -> Vec<Finding> {
        findings_at("src/retry.rs", counts)
    }

    fn findings_at(file: &str, counts: &[(u64, u64)]) -> Vec<Finding> {
        let retry = location(file, 131);
        let snapshots = counts
            .iter()
            .enumerate()
            .map(|(i, &(s, c))| {
                (
                    i as u64 * SEC + SEC / 2,
                    vec![at(&retry, s, c, 1_000_000)],
                    Vec::new(),
                )
            })
            .collect();
        super::findings(&run(snapshots), &Thresholds::default())
    }

    #[test]
    fn live_tasks_that_keep_growing_are_a_leak_at_their_spawn_location() {
        let f = findings(&[(5, 0), (45, 0), (85, 0), (125, 0)]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, super::KIND);
        assert_eq!(
            (f[0].location.file.as_str(), f[0].location.line),
            ("src/retry.rs", 131)
        );
        assert_eq!(f[0].count, 125);
        assert!(
            f[0].recommendation.contains("40 more pile up every second"),
            "{}",
            f[0].recommendation
        );
    }

    #[test]
    fn tasks_a_library_spawns_at_its_own_line_are_not_the_programs_leak() {
        let pool =
            "/home/u/.cargo/registry/src/index.crates.io-1/hyper-util-0.1.21/src/rt/tokio.rs";
        assert!(findings_at(pool, &[(5, 0), (45, 0), (85, 0), (125, 0)]).is_empty());
    }

    #[test]
    fn the_thresholds_hold_just_below_and_at_them() {
        // 100 alive at the end, growing 10 a second: a leak; 99, or 9 a second: not.
        assert_eq!(findings(&[(70, 0), (80, 0), (90, 0), (100, 0)]).len(), 1);
        assert!(findings(&[(69, 0), (79, 0), (89, 0), (99, 0)]).is_empty());
        assert!(findings(&[(73, 0), (82, 0), (91, 0), (100, 0)]).is_empty());
    }

    #[test]
    fn tasks_dropped_when_the_runtime_shuts_down_do_not_hide_the_leak() {
        let f = findings(&[(5, 0), (45, 0), (85, 0), (125, 0), (125, 120)]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].count, 125);
    }

    #[test]
    fn a_burst_that_drained_or_tasks_that_mostly_finish_are_no_leak() {
        // The peak came early and the tasks finished.
        assert!(findings(&[(5, 0), (300, 0), (600, 400), (650, 600), (700, 690)]).is_empty());
        // Many more spawned than stay alive: a busy location, not a leak.
        assert!(
            findings(&[(1_000, 995), (2_000, 1_950), (3_000, 2_900), (4_000, 3_850)]).is_empty()
        );
    }
}
