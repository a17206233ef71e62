//! `blocking-pool-saturated`: `spawn_blocking` jobs queue for a thread of the blocking pool.
//!
//! **Measures**: ten times a second, tokio's blocking queue depth and its blocking threads
//! (busy and idle; a build with `tokio_unstable`). A sample is saturated when jobs waited, no
//! blocking thread was idle and the pool had not grown since the sample before (below its
//! limit, it starts a thread for each such job: `block_in_place` moving a worker to a new
//! thread, a burst of jobs); at least `saturated_min_share` (25%) of at least
//! `load_min_points` samples must be. The location is the `spawn_blocking` call whose jobs
//! finished most often (tokio reports a blocking job's location when it ends).
//! **Why it hurts**: every job waits behind the others, and the task awaiting it with it;
//! the pool's threads (512 at most by default, fewer if the runtime was built with
//! `max_blocking_threads`) are all taken by slow jobs.
//! **What to do**: bound the concurrency of the call (a semaphore sized to what the
//! dependency can take), make the blocking work faster or async (an async client), batch it,
//! or give the pool more threads if the jobs wait on I/O rather than CPU.

use asyncprof_format::RunFile;

use crate::findings::FindingLocation;
use crate::{Finding, Thresholds};

/// The kind's name.
pub const KIND: &str = "blocking-pool-saturated";

/// One finding per runtime whose blocking pool was saturated past the thresholds.
pub(crate) fn findings(run: &RunFile, t: &Thresholds) -> Vec<Finding> {
    let mut out = Vec::new();
    for (id, points) in super::load_by_runtime(run) {
        if (points.len() as u64) < t.load_min_points {
            continue;
        }
        // A pool below its thread limit starts a thread for a job that finds none idle: the
        // job waits for that thread to start (longer on a busy machine), and the pool has
        // grown since the sample before. Only a pool that could not grow is full.
        let saturated: Vec<_> = points
            .iter()
            .enumerate()
            .filter(|(i, p)| {
                let grew = i
                    .checked_sub(1)
                    .is_some_and(|b| p.blocking_threads > points[b].blocking_threads);
                p.blocking_queue > 0 && p.blocking_idle == 0 && !grew
            })
            .map(|(_, p)| *p)
            .collect();
        let share = saturated.len() as f64 / points.len() as f64;
        if share < t.saturated_min_share {
            continue;
        }
        let mean_queue =
            saturated.iter().map(|p| p.blocking_queue).sum::<u64>() as f64 / saturated.len() as f64;
        let max_queue = saturated
            .iter()
            .map(|p| p.blocking_queue)
            .max()
            .unwrap_or(0);
        let threads = saturated
            .iter()
            .map(|p| p.blocking_threads)
            .max()
            .unwrap_or(0);
        let mut sites: Vec<_> = run
            .snapshot
            .iter()
            .flat_map(|s| s.locations.iter())
            .filter(|l| l.blocking_tasks > 0)
            .collect();
        sites.sort_by_key(|l| std::cmp::Reverse(l.blocking_tasks));
        let mut evidence = vec![
            format!(
                "{} of {} samples (ten a second) found jobs waiting for a blocking thread, \
                 none idle and the pool no larger than at the sample before",
                saturated.len(),
                points.len()
            ),
            format!(
                "jobs waiting then: {mean_queue:.1} on average, {max_queue} at most; blocking \
                 threads: {threads}"
            ),
        ];
        for l in sites.iter().take(3) {
            evidence.push(format!(
                "{} spawn_blocking jobs started at {} finished",
                l.blocking_tasks, l.location
            ));
        }
        // The program's own call site, not a library's (tokio's file system calls, a DNS
        // lookup).
        let location = sites
            .iter()
            .find(|l| asyncprof_format::culprit::is_user_file(&l.location.file))
            .map_or_else(FindingLocation::default, |l| {
                FindingLocation::at(&l.location)
            });
        let site = sites
            .first()
            .map(|l| format!(" The jobs started at {} are the most frequent.", l.location))
            .unwrap_or_default();
        let recommendation = format!(
            "The blocking pool of {} was full: {mean_queue:.1} spawn_blocking jobs waited for \
             one of its {threads} threads in {:.0}% of the run, and each awaiting task waited \
             with them.{site} Bound the call's concurrency with a semaphore sized to what the \
             dependency can take, make the blocking work faster or async (an async client), \
             batch it, or raise max_blocking_threads if the jobs wait on I/O, not CPU.",
            super::runtime_label(run, id),
            share * 100.0
        );
        let severity = super::by_share(share);
        let mut f = Finding::runtime_wide(KIND, severity, location, recommendation, evidence);
        f.count = saturated.len() as u64;
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::synthetic::{at, load_run, location, point};
    use crate::{Finding, Thresholds};

    /// 20 samples, `waiting` of them with jobs queued for the pool and `idle` idle threads.
    fn findings(waiting: u64, idle: u64) -> Vec<Finding> {
        let points = (0..20)
            .map(|i| {
                let mut p = point(i, 0.1, 0, 0.0);
                p.blocking_threads = 4;
                if i < waiting {
                    p.blocking_queue = 6;
                    p.blocking_idle = idle;
                } else {
                    p.blocking_idle = 4;
                }
                p
            })
            .collect();
        let mut check = at(&location("src/fraud.rs", 88), 0, 0, 0);
        check.blocking_tasks = 1200;
        let mut fs = at(&location("src/files.rs", 12), 0, 0, 0);
        fs.blocking_tasks = 30;
        super::findings(&load_run(points, vec![fs, check]), &Thresholds::default())
    }

    #[test]
    fn jobs_waiting_with_no_idle_thread_in_a_quarter_of_the_samples_is_a_finding() {
        let f = findings(5, 0);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, super::KIND);
        assert_eq!(
            (f[0].location.file.as_str(), f[0].location.line),
            ("src/fraud.rs", 88)
        );
        assert!(f[0].evidence.iter().any(|e| e.contains("src/files.rs:12")));
        assert!(findings(4, 0).is_empty());
    }

    /// Known truth: `block_in_place` on a busy machine moves each worker to a new blocking
    /// thread, and that job waits for its thread to start: the pool grows from 2 threads to
    /// 21, jobs waiting and none idle in every sample. Not full. The same pool stopped at its
    /// limit of 12 threads with jobs still waiting is.
    #[test]
    fn a_pool_growing_while_jobs_wait_for_their_new_threads_is_not_full() {
        let run = |limit: u64| {
            let points = (0..20)
                .map(|i| {
                    let mut p = point(i, 0.1, 0, 0.0);
                    p.blocking_threads = (2 + i).min(limit);
                    p.blocking_queue = 1;
                    p.blocking_idle = 0;
                    p
                })
                .collect();
            let mut relaunch = at(
                &location("/r/tokio-1.54.1/src/runtime/scheduler/w.rs", 506),
                0,
                0,
                0,
            );
            relaunch.blocking_tasks = 100;
            super::findings(&load_run(points, vec![relaunch]), &Thresholds::default())
        };
        assert!(run(u64::MAX).is_empty(), "{:?}", run(u64::MAX));
        let f = run(12);
        assert_eq!(f.len(), 1, "{f:?}");
        // Samples 11 to 19 stayed at the limit (sample 10 reached it); sample 0 has none
        // before it to tell.
        assert_eq!(f[0].count, 10);
    }

    #[test]
    fn jobs_queued_while_a_thread_is_idle_are_only_being_handed_over() {
        assert!(findings(20, 1).is_empty());
    }
}
