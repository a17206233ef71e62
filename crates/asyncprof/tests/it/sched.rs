//! Scheduling delay: a task made ready while its worker is busy with another.

use std::time::Duration;

use crate::support::{location, marked_line, record, spin, Flavor};

const BUSY: Duration = Duration::from_millis(20);

fn check_delay(flavor: Flavor, name: &str) {
    let line = marked_line(file!(), "child");
    let (run, _) = record(name, flavor, || async {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            // The spawned task is ready at once, but this poll holds the only worker for
            // 20 ms: its first poll waits that long.
            // spawn: child
            let child = tokio::spawn(async {});
            spin(BUSY);
            tx.send(child).ok();
        })
        .await
        .unwrap();
        rx.await.unwrap().await.unwrap();
    });
    let loc = location(&run, file!(), line);
    // With every wake timed, the child's first poll is its one wake too.
    assert_eq!(loc.scheduled_ns.count(), 1);
    let delay = loc.scheduled_ns.max();
    assert!(
        delay >= BUSY.as_nanos() as u64 * 3 / 4 && delay < BUSY.as_nanos() as u64 * 5,
        "spawn-to-first-poll delay {:.3} ms, expected about 20 ms",
        delay as f64 / 1e6
    );
    let expected = if cfg!(feature = "schedule-latency") {
        asyncprof_format::ScheduleSource::EveryWake
    } else {
        asyncprof_format::ScheduleSource::SpawnToFirstPoll
    };
    assert_eq!(run.header.config.schedule_source, expected);
}

/// With the `schedule-latency` feature every wake is timed: a task woken ten times while the
/// only worker is busy for 20 ms after each wake has ten delays of about 20 ms, not only the
/// one of its first poll. (`.ci/test` runs this file with the feature.)
#[cfg(feature = "schedule-latency")]
#[test]
fn every_wake_is_timed_with_the_schedule_latency_feature() {
    crate::support::retry_if_disturbed(|| {
        let line = marked_line(file!(), "waiter");
        let (run, _) = crate::support::record_with(
            "sched-every-wake",
            Flavor::CurrentThread,
            // Time every poll exactly, so that every wake's delay is recorded.
            |b| b.sample_every(1),
            || async {
                let notify = std::sync::Arc::new(tokio::sync::Notify::new());
                let n = notify.clone();
                // spawn: waiter
                let waiter = tokio::spawn(async move {
                    for _ in 0..10 {
                        n.notified().await;
                    }
                });
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                    // The waiter is woken now, and waits for this poll to end.
                    notify.notify_one();
                    spin(BUSY);
                    tokio::task::yield_now().await;
                }
                waiter.await.unwrap();
            },
        );
        let loc = location(&run, file!(), line);
        assert!(
            loc.scheduled_ns.count() >= 10,
            "{} delays recorded for the waiter, expected its first poll's and one per wake (10)",
            loc.scheduled_ns.count()
        );
        assert!(
            loc.scheduled_ns.quantile(0.5) >= BUSY.as_nanos() as u64 * 3 / 4,
            "median wake-to-poll delay {:.3} ms, expected about 20 ms",
            loc.scheduled_ns.quantile(0.5) as f64 / 1e6
        );
        assert_eq!(
            run.header.config.schedule_source,
            asyncprof_format::ScheduleSource::EveryWake
        );
    });
}

#[test]
fn delay_while_worker_busy_current_thread() {
    crate::support::retry_if_disturbed(|| {
        check_delay(Flavor::CurrentThread, "sched-ct");
    });
}

#[test]
fn delay_while_worker_busy_multi_thread() {
    crate::support::retry_if_disturbed(|| {
        check_delay(Flavor::MultiThread(1), "sched-mt");
    });
}

/// For 1.5 s, two tasks whose polls compute for 20 ms (then sleep 10 ms), under a 50 ms stall
/// threshold, beside a ticker that spawns a short task every millisecond: while both workers
/// compute, the short tasks wait, no stall says why, the runtime is not saturated (62.7–64.1%
/// busy in 3 runs), and `scheduling-delay` names the computing tasks' spawn line. The fixed
/// twin does the same computing in 0.5 ms slices with a yield between them, and gets no
/// finding.
fn long_polls_under_the_threshold(slice: Duration) -> (asyncprof_format::RunFile, u32) {
    let line = marked_line(file!(), "hog");
    let (run, _) = crate::support::record_with(
        "sched-long-polls",
        Flavor::MultiThread(2),
        |b| b.stall_threshold(Duration::from_millis(50)),
        || async move {
            let end = std::time::Instant::now() + Duration::from_millis(1500);
            let mut hogs = Vec::new();
            for _ in 0..2 {
                // spawn: hog
                hogs.push(tokio::spawn(async move {
                    while std::time::Instant::now() < end {
                        let mut left = Duration::from_millis(20);
                        while !left.is_zero() {
                            spin(slice.min(left));
                            left = left.saturating_sub(slice);
                            if !left.is_zero() {
                                tokio::task::yield_now().await;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }));
            }
            while std::time::Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(1)).await;
                tokio::spawn(async {
                    std::hint::black_box(1 + 1);
                });
            }
            for hog in hogs {
                hog.await.unwrap();
            }
        },
    );
    (run, line)
}

#[test]
fn polls_just_under_the_stall_threshold_that_delay_others_are_named_at_their_spawn() {
    crate::support::retry_if_disturbed(|| {
        let (run, line) = long_polls_under_the_threshold(Duration::from_millis(20));
        assert!(run.stalls.is_empty(), "{} stalls", run.stalls.len());
        let findings = asyncprof_report::diagnose(&run);
        let kinds: Vec<_> = findings.iter().map(|f| (f.kind, f.location.line)).collect();
        assert_eq!(kinds, vec![("scheduling-delay", line)], "{findings:#?}");
        assert!(
            findings[0].evidence[1].starts_with("polls of the tasks spawned here: p99"),
            "{:?}",
            findings[0].evidence
        );
    });
}

#[test]
fn the_same_computing_in_short_slices_delays_nothing() {
    crate::support::retry_if_disturbed(|| {
        let (run, _) = long_polls_under_the_threshold(Duration::from_micros(500));
        let findings = asyncprof_report::diagnose(&run);
        assert!(findings.is_empty(), "{findings:#?}");
    });
}
