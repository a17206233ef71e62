//! `scheduling-delay`: ready tasks waited long for a worker, held by polls that are long but
//! shorter than the stall threshold, so that no stall names them.
//!
//! **Measures**: each spawn location's scheduling delays (from spawn to first poll, or from
//! every wake to its poll with asyncprof's `schedule-latency` feature or in the layer tier;
//! the run's header says which). A location's tasks waited too long when, over at least
//! `sched_min_delays` (50) delays, the 99th percentile is at least `sched_delay_p99_ms`
//! (5 ms). The culprits are the spawn locations of the program's own code whose 99th
//! percentile poll is at least `long_poll_ms` (1 ms) and whose polls of that length add up to
//! at least `long_poll_share` (5%) of the workers' busy time (at least ten such polls), and
//! which had no stall (a stall finding names their line with a stack). Nothing is found when
//! the runtime was saturated or the machine short of CPUs (`runtime-saturated`,
//! `cpu-contention` explain the delays), when the worker threads waited for a CPU at least
//! `contention_wait_share` (20%) of their runnable time over the run, whoever held the cores
//! (a task then waits for the core, and a poll preempted midway looks long: neither is the
//! polls' doing), when the run's stalls held the workers at least as long as the culprit's
//! long polls (the stall findings explain them, with lines), or when no culprit holds: a
//! delay without a poll to blame names no line.
//! **Why it hurts**: a worker running one long poll runs nothing else; every task queued
//! behind it (a request's next step, a timer's wake) waits that long, which shows as p99
//! latency although the runtime is far from busy.
//! **What to do**: break the long polls up: `tokio::task::yield_now().await` (or
//! `tokio::task::consume_budget`) inside the loop that computes, or move the computing to
//! `spawn_blocking` or a rayon pool. Lowering the stall threshold (`ASYNCPROF_STALL_THRESHOLD_MS`)
//! turns these polls into stalls, whose stacks name the line inside the task.

use asyncprof_format::{LoadPoint, LocationStats, RunFile, ScheduleSource};

use crate::findings::FindingLocation;
use crate::queues::ms;
use crate::{Finding, Severity, Thresholds};

/// The kind's name.
pub const KIND: &str = "scheduling-delay";

/// The polls of at least `min_ns` and their time, from a location's poll histogram.
fn long_polls(l: &LocationStats, min_ns: u64) -> (u64, u64) {
    if l.poll_ns.count() == 0 {
        return (0, 0);
    }
    l.poll_ns
        .to_hdr()
        .iter_recorded()
        .filter(|v| v.value_iterated_to() >= min_ns)
        .fold((0, 0), |(n, ns), v| {
            (
                n + v.count_at_value(),
                ns + v.value_iterated_to().saturating_mul(v.count_at_value()),
            )
        })
}

/// Polls a culprit needs before its 99th percentile says anything.
const MIN_POLLS: u64 = 20;

/// Long polls a culprit needs: a single long poll (a task's start, a cache filled once) holds
/// a worker once, not the run's delays.
const MIN_LONG_POLLS: u64 = 10;

/// One finding per culprit location, when some location's tasks waited past the thresholds.
/// `found` are the run's other findings: a saturated runtime or a crowded machine among them
/// explains the delays.
pub(crate) fn findings(run: &RunFile, t: &Thresholds, found: &[Finding]) -> Vec<Finding> {
    let Some(snap) = &run.snapshot else {
        return Vec::new();
    };
    if found
        .iter()
        .any(|f| f.kind == super::runtime_saturated::KIND || f.kind == super::cpu_contention::KIND)
    {
        return Vec::new();
    }
    // The worker threads' wait for a CPU over the run (every runtime's load samples).
    if LoadPoint::cpu_wait_share_of(&run.load).is_some_and(|share| share >= t.contention_wait_share)
    {
        return Vec::new();
    }
    let delay_floor = (t.sched_delay_p99_ms * 1e6) as u64;
    let Some(victim) = snap
        .locations
        .iter()
        .filter(|l| l.scheduled_ns.count() >= t.sched_min_delays.max(1))
        .filter(|l| l.scheduled_ns.quantile(0.99) >= delay_floor)
        .max_by_key(|l| l.scheduled_ns.quantile(0.99))
    else {
        return Vec::new();
    };
    // The workers' busy time (tokio's, per worker), or the tasks' where workers say nothing.
    let busy_ns: u64 = match snap.workers.iter().map(|w| w.busy_ns).sum::<u64>() {
        0 => snap.locations.iter().map(|l| l.busy_ns).sum(),
        workers => workers,
    };
    // Stalls hold workers far longer than polls under the threshold, and their findings name
    // their lines: delays they explain are theirs.
    let stalled_ns: u64 = run
        .stalls
        .iter()
        .filter(|s| !super::preempted(s))
        .map(|s| s.duration_ns)
        .sum();
    let long_ns = (t.long_poll_ms * 1e6) as u64;
    let stall_ns = run.header.config.stall_threshold_us * 1000;
    let source = match run.header.config.schedule_source {
        ScheduleSource::EveryWake => "from every wake to its poll",
        _ => "from spawn to first poll",
    };
    let mut out = Vec::new();
    for culprit in snap.locations.iter() {
        if !asyncprof_format::culprit::is_user_file(&culprit.location.file)
            || culprit.poll_ns.count() < MIN_POLLS
            || culprit.poll_ns.quantile(0.99) < long_ns
        {
            continue;
        }
        let (long, held) = long_polls(culprit, long_ns);
        if long < MIN_LONG_POLLS
            || busy_ns == 0
            || (held as f64) < t.long_poll_share * busy_ns as f64
            || stalled_ns >= held
        {
            continue;
        }
        // Its long polls that were stalls have a stall finding, which names the line.
        let stalled = run
            .stalls
            .iter()
            .any(|s| s.task_location.as_ref() == Some(&culprit.location) && !super::preempted(s));
        if stalled {
            continue;
        }
        let longest = culprit.max_poll_ns.max(culprit.poll_ns.max());
        let evidence = vec![
            format!(
                "tasks spawned at {}: {} scheduling delays ({source}), p50 {:.2} ms, p99 {:.2} \
                 ms, longest {:.2} ms",
                victim.location,
                victim.scheduled_ns.count(),
                ms(victim.scheduled_ns.quantile(0.5)),
                ms(victim.scheduled_ns.quantile(0.99)),
                ms(victim.scheduled_ns.max()),
            ),
            format!(
                "polls of the tasks spawned here: p99 {:.2} ms, longest {:.2} ms, under the stall \
                 threshold of {:.0} ms (no stall recorded)",
                ms(culprit.poll_ns.quantile(0.99)),
                ms(longest),
                ms(stall_ns),
            ),
            format!(
                "their polls of {:.0} ms or more took {:.0} ms, {:.0}% of the workers' busy time",
                t.long_poll_ms,
                ms(held),
                held as f64 * 100.0 / busy_ns as f64
            ),
        ];
        let recommendation = format!(
            "Polls of the tasks spawned at {} run up to {:.1} ms without yielding, under the \
             stall threshold, and the workers run nothing else meanwhile: ready tasks waited up \
             to {:.1} ms (p99) for a worker. Break the computing up (`tokio::task::yield_now().\
             await` in its loop) or move it to `spawn_blocking`; a lower stall threshold \
             (ASYNCPROF_STALL_THRESHOLD_MS) has the line inside the task named by a stack.",
            culprit.location,
            ms(longest),
            ms(victim.scheduled_ns.quantile(0.99)),
        );
        let mut f = Finding::runtime_wide(
            KIND,
            Severity::Warning,
            FindingLocation::at(&culprit.location),
            recommendation,
            evidence,
        );
        f.count = culprit.poll_ns.count();
        f.total_ms = ms(held);
        f.max_ms = ms(longest);
        f.task_location = Some(culprit.location.to_string());
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use asyncprof_format::{Histogram, LocationStats, SourceLocation, StallRecord};

    use super::super::synthetic::{at, location, run};
    use crate::{Finding, Thresholds};

    const MS: u64 = 1_000_000;

    fn hist(values: &[(u64, u64)]) -> Histogram {
        let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for &(v, n) in values {
            h.record_n(v, n).unwrap();
        }
        Histogram::from_hdr(&h)
    }

    /// Victims at `src/api.rs:10` with `delays` delays of which 2% are `slow_ns`; a culprit at
    /// `file:20` with 100 polls, `long` of them of `poll_ns`, the rest 10 µs; 1 s of other
    /// busy time.
    fn case(delays: u64, slow_ns: u64, file: &str, long: u64, poll_ns: u64) -> Vec<LocationStats> {
        let mut victim = at(&location("src/api.rs", 10), delays, delays, 1_000 * MS);
        let fast = delays - (delays / 50).max(1);
        victim.scheduled_ns = hist(&[(20_000, fast), (slow_ns, delays - fast)]);
        let mut culprit = at(
            &location(file, 20),
            2,
            0,
            long * poll_ns + (100 - long) * 10_000,
        );
        culprit.polls = 100;
        culprit.poll_ns = hist(&[(10_000, 100 - long), (poll_ns, long)]);
        culprit.max_poll_ns = poll_ns;
        vec![victim, culprit]
    }

    fn findings(locations: Vec<LocationStats>) -> Vec<Finding> {
        with_stall(locations, None)
    }

    /// The findings of a run of `locations` with, when given, a stall `(file, line, ms)` of a
    /// task spawned at `file:line`.
    fn with_stall(locations: Vec<LocationStats>, stall: Option<(&str, u32, u64)>) -> Vec<Finding> {
        let mut r = run(vec![(3_000 * MS, locations, Vec::new())]);
        if let Some((file, line, stall_ms)) = stall {
            let mut s = StallRecord::default();
            s.task_location = Some(SourceLocation::new(file, line, 5));
            s.duration_ns = stall_ms * MS;
            r.stalls.push(s);
        }
        super::findings(&r, &Thresholds::default(), &[])
    }

    #[test]
    fn delayed_tasks_and_long_polls_under_the_threshold_name_the_long_polls_spawn() {
        let f = findings(case(100, 6 * MS, "src/hog.rs", 10, 8 * MS));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, super::KIND);
        assert_eq!(
            (f[0].location.file.as_str(), f[0].location.line),
            ("src/hog.rs", 20)
        );
        assert!(
            f[0].evidence[0].contains("p99 6.00 ms"),
            "{:?}",
            f[0].evidence
        );
        assert!(
            f[0].recommendation.contains("up to 8.0 ms"),
            "{}",
            f[0].recommendation
        );
    }

    #[test]
    fn a_saturated_runtime_or_a_crowded_machine_explains_the_delays() {
        let r = run(vec![(
            3_000 * MS,
            case(100, 6 * MS, "src/hog.rs", 10, 8 * MS),
            Vec::new(),
        )]);
        let t = Thresholds::default();
        assert_eq!(super::findings(&r, &t, &[]).len(), 1);
        for kind in [
            super::super::runtime_saturated::KIND,
            super::super::cpu_contention::KIND,
        ] {
            let found = Finding::runtime_wide(
                kind,
                crate::Severity::Warning,
                crate::findings::FindingLocation::at(&location("src/x.rs", 1)),
                String::new(),
                Vec::new(),
            );
            assert!(super::findings(&r, &t, &[found]).is_empty(), "{kind}");
        }
    }

    /// Delays and long polls while the worker threads waited for a CPU (behind the process's
    /// own threads: no `cpu-contention`, which counts only the rest of the machine): the
    /// wait explains them, not the polls. A recorded fixed twin (the scraper's, whose
    /// in-process HTTP server shared the two cores) had a run-wide wait of 44%, a victim p99
    /// of 5.01 ms and a "culprit" whose longest poll was 3.1 ms.
    #[test]
    fn workers_waiting_for_a_cpu_explain_the_delays() {
        use super::super::synthetic::point;
        let with_wait = |wait: f64| {
            let mut r = run(vec![(
                3_000 * MS,
                case(100, 6 * MS, "src/hog.rs", 10, 8 * MS),
                Vec::new(),
            )]);
            r.load = (0..30).map(|i| point(i, 0.3, 2, wait)).collect();
            super::findings(&r, &Thresholds::default(), &[])
        };
        assert_eq!(with_wait(0.0).len(), 1);
        assert_eq!(with_wait(0.19).len(), 1);
        assert!(with_wait(0.2).is_empty());
        assert!(with_wait(0.44).is_empty());
    }

    #[test]
    fn the_thresholds_hold_just_below_and_at_them() {
        // Delays: p99 at 5 ms counts, 4.9 ms does not; 50 delays count, 49 do not.
        assert_eq!(
            findings(case(100, 5 * MS, "src/hog.rs", 10, 8 * MS)).len(),
            1
        );
        assert!(findings(case(100, 4_900_000, "src/hog.rs", 10, 8 * MS)).is_empty());
        assert_eq!(
            findings(case(50, 6 * MS, "src/hog.rs", 10, 8 * MS)).len(),
            1
        );
        assert!(findings(case(49, 6 * MS, "src/hog.rs", 10, 8 * MS)).is_empty());
        // The culprit's p99 poll: 1 ms counts, 0.9 ms does not (60 of them: 5.7% and 5.1%
        // of the busy time).
        assert_eq!(findings(case(100, 6 * MS, "src/hog.rs", 60, MS)).len(), 1);
        assert!(findings(case(100, 6 * MS, "src/hog.rs", 60, 900_000)).is_empty());
        // Its long polls' share of the busy time: 10 polls of 5.4 ms (5.1% of 1.055 s)
        // count, of 5 ms (4.8%) do not.
        assert_eq!(
            findings(case(100, 6 * MS, "src/hog.rs", 10, 5_400_000)).len(),
            1
        );
        assert!(findings(case(100, 6 * MS, "src/hog.rs", 10, 5 * MS)).is_empty());
    }

    #[test]
    fn a_single_long_poll_or_stalls_elsewhere_that_held_the_workers_longer_name_nothing() {
        // 9 long polls of 60 ms: under ten; 10 count.
        assert!(findings(case(100, 6 * MS, "src/hog.rs", 9, 60 * MS)).is_empty());
        assert_eq!(
            findings(case(100, 6 * MS, "src/hog.rs", 10, 60 * MS)).len(),
            1
        );
        // A stall of another task at least as long as the culprit's 80 ms of long polls: the
        // stall explains the delays (its finding names its line); a shorter one does not.
        let hog = || case(100, 6 * MS, "src/hog.rs", 10, 8 * MS);
        assert!(with_stall(hog(), Some(("src/compress.rs", 7, 81))).is_empty());
        assert_eq!(with_stall(hog(), Some(("src/compress.rs", 7, 70))).len(), 1);
    }

    #[test]
    fn no_culprit_of_the_programs_own_or_one_with_stalls_names_nothing() {
        let lib =
            "/home/u/.cargo/registry/src/index.crates.io-1/hyper-1.7.0/src/proto/h1/dispatch.rs";
        assert!(findings(case(100, 6 * MS, lib, 10, 8 * MS)).is_empty());
        // Its polls that were stalls have their own finding, with the line.
        let hog = case(100, 6 * MS, "src/hog.rs", 10, 8 * MS);
        assert!(with_stall(hog, Some(("src/hog.rs", 20, 12))).is_empty());
    }
}
