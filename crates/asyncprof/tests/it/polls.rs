//! Poll durations and counts against tasks whose polls have a known length.

use std::time::Duration;

use crate::support::{assert_near, location, marked_line, record, spin, Flavor};

const POLL: Duration = Duration::from_millis(2);

/// A task with exactly five polls of 2 ms each (four yields between five spins).
async fn five_busy_polls() {
    for i in 0..5 {
        spin(POLL);
        if i < 4 {
            tokio::task::yield_now().await;
        }
    }
}

fn check_five_polls(flavor: Flavor, name: &str) {
    let line = marked_line(file!(), "five");
    let (run, _) = record(name, flavor, || async {
        tokio::spawn(five_busy_polls()).await.unwrap(); // spawn: five
    });
    let loc = location(&run, file!(), line);
    assert_eq!(loc.tasks_spawned, 1);
    assert_eq!(loc.tasks_completed, 1);
    assert_eq!(loc.polls, 5, "exact poll count");
    assert_eq!(loc.poll_ns.count(), 5, "histogram count is exact");
    assert_near("p50 poll", loc.poll_ns.quantile(0.5), POLL, 0.25);
    // A poll's wall time grows when its thread is descheduled: bound the max loosely.
    assert!(loc.max_poll_ns >= POLL.as_nanos() as u64 * 3 / 4);
    assert!(loc.max_poll_ns < POLL.as_nanos() as u64 * 10);
    assert_near("busy time", loc.busy_ns, POLL * 5, 0.5);
    let snap = run.snapshot.unwrap();
    assert!(snap.runtime.poll_ns.count() >= 5);
    assert!(snap.loss.is_zero(), "{:?}", snap.loss);
}

#[test]
fn five_polls_of_2ms_current_thread() {
    check_five_polls(Flavor::CurrentThread, "five-ct");
}

#[test]
fn five_polls_of_2ms_multi_thread() {
    check_five_polls(Flavor::MultiThread(2), "five-mt");
}

#[test]
fn short_polls_are_counted_exactly_and_sampled() {
    let line = marked_line(file!(), "short");
    let (run, _) = record("short", Flavor::MultiThread(2), || async {
        let handles: Vec<_> = (0..100)
            .map(|_| {
                tokio::spawn(async {
                    // spawn: short
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
    assert_eq!(snap.workers.len(), 2);
    assert_eq!(
        snap.workers.iter().map(|w| w.polls).sum::<u64>(),
        snap.runtime.polls
    );
    assert_eq!(run.header.workers, 2);
    assert_eq!(run.header.flavor, asyncprof_format::Flavor::MultiThread);
}
