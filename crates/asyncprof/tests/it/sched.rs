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
