//! Poll durations and counts against tasks whose polls have a known length.

use std::time::Duration;

use crate::support::{assert_near, location, marked_line, record, record_with, spin, Flavor};

/// A task with exactly five polls of `poll` each (four yields between five spins).
async fn five_busy_polls(poll: Duration) {
    for i in 0..5 {
        spin(poll);
        if i < 4 {
            tokio::task::yield_now().await;
        }
    }
}

/// Five polls of `poll` each, timed with `sample_every` (1: every poll exactly; the default:
/// long polls by the coarse clock).
fn check_five_polls(flavor: Flavor, name: &str, poll: Duration, sample_every: u32) {
    let line = marked_line(file!(), "five");
    let (run, _) = record_with(
        name,
        flavor,
        |b| b.sample_every(sample_every),
        || async move {
            // spawn: five
            tokio::spawn(five_busy_polls(poll)).await.unwrap();
        },
    );
    let loc = location(&run, file!(), line);
    assert_eq!(loc.tasks_spawned, 1);
    assert_eq!(loc.tasks_completed, 1);
    assert_eq!(loc.polls, 5, "exact poll count");
    assert_eq!(loc.poll_ns.count(), 5, "histogram count is exact");
    assert_near("p50 poll", loc.poll_ns.quantile(0.5), poll, 0.25);
    // A poll's wall time grows when its thread is descheduled: bound the max loosely.
    assert!(loc.max_poll_ns >= poll.as_nanos() as u64 * 3 / 4);
    assert!(loc.max_poll_ns < poll.as_nanos() as u64 * 10);
    assert_near("busy time", loc.busy_ns, poll * 5, 0.5);
    let snap = run.snapshot.unwrap();
    assert_eq!(snap.runtime.tasks_spawned, 1);
    assert_eq!(snap.runtime.tasks_completed, 1);
    // Every poll that lasted at least two clock ticks is in the runtime histogram, unless the
    // clock's thread was descheduled for longer than the poll (counted in `clock_gaps`).
    let long = snap
        .runtime
        .poll_ns
        .buckets
        .iter()
        .filter(|[v, _]| *v >= poll.as_nanos() as u64 / 2)
        .map(|[_, c]| c)
        .sum::<u64>();
    assert!(
        long == 5 || (long >= 4 && snap.loss.clock_gaps > 0),
        "runtime {:?}, loss {:?}",
        snap.runtime,
        snap.loss
    );
    assert_eq!(snap.loss.dropped_records, 0);
    assert_eq!(snap.loss.untracked_tasks, 0);
}

#[test]
fn five_polls_of_2ms_timed_exactly_current_thread() {
    crate::support::retry_if_disturbed(|| {
        check_five_polls(
            Flavor::CurrentThread,
            "five-ct",
            Duration::from_millis(2),
            1,
        );
    });
}

#[test]
fn five_polls_of_2ms_timed_exactly_multi_thread() {
    crate::support::retry_if_disturbed(|| {
        check_five_polls(
            Flavor::MultiThread(2),
            "five-mt",
            Duration::from_millis(2),
            1,
        );
    });
}

#[test]
fn five_polls_of_10ms_by_the_coarse_clock_current_thread() {
    crate::support::retry_if_disturbed(|| {
        check_five_polls(
            Flavor::CurrentThread,
            "coarse-ct",
            Duration::from_millis(10),
            64,
        );
    });
}

#[test]
fn five_polls_of_10ms_by_the_coarse_clock_multi_thread() {
    crate::support::retry_if_disturbed(|| {
        check_five_polls(
            Flavor::MultiThread(2),
            "coarse-mt",
            Duration::from_millis(10),
            64,
        );
    });
}

/// Three tasks of one poll of `poll` each: tokio ends a task (its terminate hook) inside its
/// last poll, before the after-poll hook; that poll still counts at the task's location.
fn check_one_poll_tasks(flavor: Flavor, name: &str, poll: Duration, sample_every: u32) {
    let line = marked_line(file!(), "one-poll");
    let (run, _) = record_with(
        name,
        flavor,
        |b| b.sample_every(sample_every),
        || async move {
            for _ in 0..3 {
                // spawn: one-poll
                tokio::spawn(async move { spin(poll) }).await.unwrap();
            }
        },
    );
    let loc = location(&run, file!(), line);
    assert_eq!(loc.tasks_completed, 3);
    assert_eq!(loc.polls, 3, "exact poll count");
    assert_eq!(loc.poll_ns.count(), 3, "histogram count is exact");
    assert_near("p50 poll", loc.poll_ns.quantile(0.5), poll, 0.25);
    assert!(
        loc.max_poll_ns >= poll.as_nanos() as u64 * 3 / 4,
        "max poll {} ns",
        loc.max_poll_ns
    );
    assert!(loc.max_poll_ns < poll.as_nanos() as u64 * 10);
    assert_near("busy time", loc.busy_ns, poll * 3, 0.5);
}

#[test]
fn a_task_s_only_poll_counts_at_its_location() {
    crate::support::retry_if_disturbed(|| {
        for (flavor, name) in [
            (Flavor::CurrentThread, "one-poll-ct"),
            (Flavor::MultiThread(2), "one-poll-mt"),
        ] {
            // By the coarse clock (long), then timed exactly (every poll sampled).
            check_one_poll_tasks(flavor, name, Duration::from_millis(10), 64);
            check_one_poll_tasks(flavor, name, Duration::from_millis(2), 1);
        }
    });
}

#[test]
fn short_polls_are_counted_exactly_and_sampled() {
    crate::support::retry_if_disturbed(|| {
        let line = marked_line(file!(), "short");
        let (run, _) = record("short", Flavor::MultiThread(2), || async {
            let handles: Vec<_> = (0..100)
                .map(|_| {
                    // spawn: short
                    tokio::spawn(async {
                        for _ in 0..99 {
                            tokio::task::yield_now().await;
                        }
                    })
                })
                .collect();
            for h in handles {
                h.await.unwrap();
            }
        });
        let loc = location(&run, file!(), line);
        assert_eq!(loc.tasks_completed, 100);
        assert_eq!(loc.polls, 100 * 100);
        assert_eq!(loc.poll_ns.count(), 100 * 100);
        // yield_now polls take nanoseconds to microseconds, never a millisecond.
        assert!(
            loc.poll_ns.quantile(0.5) < 1_000_000,
            "{}",
            loc.poll_ns.quantile(0.5)
        );
        let snap = run.snapshot.unwrap();
        let total = snap.runtime.poll_ns.count() as f64;
        let polls = snap.runtime.polls as f64;
        assert!(polls >= 10_000.0);
        assert!(
            (total - polls).abs() / polls < 0.1,
            "histogram {total} vs polls {polls}"
        );
        // Threads appear once they poll or park; a worker that found no task may be absent.
        assert!((1..=2).contains(&snap.workers.len()), "{:?}", snap.workers);
        assert_eq!(
            snap.workers.iter().map(|w| w.polls).sum::<u64>(),
            snap.runtime.polls
        );
        assert_eq!(run.header.workers, 2);
        assert_eq!(run.header.flavor, asyncprof_format::Flavor::MultiThread);
    });
}

/// (spawned, completed) of the tasks spawned at lines `a` and `b` of this file, then of the
/// runtime, in `run`'s last snapshot (`None` until it has one with both locations).
fn untracked_counts(run: &asyncprof_format::RunFile, a: u32, b: u32) -> Option<[(u64, u64); 3]> {
    let snap = run.snapshot.as_ref()?;
    let at = |line| {
        snap.locations
            .iter()
            .find(|l| l.location.file.ends_with(file!()) && l.location.line == line)
            .map(|l| (l.tasks_spawned, l.tasks_completed))
    };
    let r = &snap.runtime;
    Some([at(a)?, at(b)?, (r.tasks_spawned, r.tasks_completed)])
}

/// Far more tasks alive at once than the task table holds, ending on both workers and
/// alternating between two spawn locations: every end is counted at its location, exactly,
/// both in a snapshot taken while the workers still run (they count ends of untracked tasks
/// on their own before adding them up) and in the last one.
#[test]
fn untracked_tasks_are_counted_where_they_were_spawned_exactly() {
    crate::support::retry_if_disturbed(|| {
        const N: u64 = 20_000;
        let (a, b) = (
            marked_line(file!(), "untracked-a"),
            marked_line(file!(), "untracked-b"),
        );
        let path = crate::support::temp_run_path("untracked");
        let guard = asyncprof::Profiler::builder()
            .out(&path)
            .task_capacity(64)
            .start()
            .unwrap();
        let rt = crate::support::multi_thread(&guard, 2, None);
        rt.block_on(async {
            let (go, ready) = tokio::sync::watch::channel(false);
            let mut handles = Vec::new();
            for _ in 0..N {
                let mut r = ready.clone();
                // spawn: untracked-a
                handles.push(tokio::spawn(async move {
                    let _ = r.wait_for(|go| *go).await;
                }));
                let mut r = ready.clone();
                // spawn: untracked-b
                handles.push(tokio::spawn(async move {
                    let _ = r.wait_for(|go| *go).await;
                }));
            }
            go.send(true).unwrap();
            for h in handles {
                h.await.unwrap();
            }
        });
        // Every task has ended and the workers are parked, still alive: a snapshot now counts
        // what they hold. Written on request; read until it shows up (bounded).
        let expected = [(N, N), (N, N), (2 * N, 2 * N)];
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut seen = None;
        while std::time::Instant::now() < deadline {
            guard.flush();
            // Until the writer's first flush the file may not even hold its header.
            if let Some(counts) = asyncprof_format::read_path(&path)
                .ok()
                .and_then(|run| untracked_counts(&run, a, b))
            {
                seen = Some(counts);
                if counts == expected {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            seen,
            Some(expected),
            "live snapshot (spawned, completed): a, b, runtime"
        );
        drop(rt);
        drop(guard);
        let (run, ()) = crate::support::read_back(&path, Ok(()));
        assert_eq!(
            untracked_counts(&run, a, b),
            Some(expected),
            "last snapshot"
        );
        let snap = run.snapshot.as_ref().unwrap();
        assert_eq!(snap.runtime.tasks_alive, 0);
        assert!(
            snap.loss.untracked_tasks >= 2 * N - 64,
            "{} untracked",
            snap.loss.untracked_tasks
        );
    });
}
