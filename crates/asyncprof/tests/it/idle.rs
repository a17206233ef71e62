//! An idle service: with every worker parked, the watchdog sleeps until one unparks, and what
//! follows the idle period is timed as if it had stayed awake.

use std::time::Duration;

use crate::support::{record, record_guarded, task_on_a_new_thread, Flavor};

/// The watchdog thread's voluntary context switches so far (each sleep and wake is one).
fn watchdog_switches() -> u64 {
    let tid = crate::support::watchdog_tid();
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The stall at the line marked `// stall: {marker}`, asserting the watchdog declared it
/// within 30 ms of its start (the threshold is 10 ms).
fn detected_soon<'r>(
    run: &'r asyncprof_format::RunFile,
    marker: &str,
) -> &'r asyncprof_format::StallRecord {
    let stall = crate::stalls::stall_at(run, marker);
    assert!(
        stall.detection_latency_ns < 30_000_000,
        "recorded {} ms after it began (threshold 10 ms)",
        stall.detection_latency_ns / 1_000_000
    );
    stall
}

#[test]
fn an_idle_runtime_lets_the_watchdog_sleep_and_times_what_follows() {
    crate::support::retry_if_disturbed(|| {
        let (run, _) = record("idle", Flavor::MultiThread(2), || async {
            // Both workers poll once, then park.
            for _ in 0..4 {
                tokio::spawn(async {}).await.unwrap();
            }
            // 400 ms with every worker parked (this future runs on block_on's thread, not a
            // worker, and its timer is driven by whichever worker holds the driver: one wake).
            let before = watchdog_switches();
            std::thread::sleep(Duration::from_millis(400));
            let idle = watchdog_switches() - before;
            // Awake, the watchdog would sleep and wake 1,600 times in 400 ms (every 250 µs);
            // asleep, it wakes every 100 ms at most.
            assert!(idle <= 40, "{idle} watchdog wake-ups in 400 ms idle");
            // A task spawned now, from outside the workers, after the idle period: its
            // spawn-to-first-poll delay is small, not the idle time.
            tokio::spawn(async {}).await.unwrap();
            // And a stall right after is recorded while it lasts.
            tokio::spawn(async {
                std::thread::sleep(Duration::from_millis(60)); // stall: after-idle
            })
            .await
            .unwrap();
        });
        let snap = run.snapshot.as_ref().unwrap();
        let max_delay = snap.runtime.scheduled_ns.max();
        assert!(
            max_delay < 50_000_000,
            "spawn-to-poll delays after idling are not the idle time: max {max_delay} ns"
        );
        let stall = detected_soon(&run, "after-idle");
        assert!(stall.duration_ns >= 50_000_000, "{stall:#?}");
    });
}

/// A thread whose first event is a poll (a runtime's thread that never parked before its
/// first task: a current-thread runtime's `block_on` running a task it just spawned, or a
/// worker that found a task before it ever parked) tells the watchdog nothing by unparking.
/// While every worker it knows sleeps, the watchdog sleeps too: the thread must wake it as
/// it registers, or a stall in that first poll goes unseen until the watchdog's next wake
/// (up to 100 ms later), or at all.
#[test]
fn a_stall_in_a_new_threads_first_poll_wakes_an_idle_watchdog() {
    crate::support::retry_if_disturbed(|| {
        let (run, idle_switches) = record_guarded("first-poll", |guard| {
            // One worker the watchdog knows: it polls once, then parks for good.
            let idle = crate::support::multi_thread(guard, 1, None);
            idle.block_on(async { tokio::spawn(async {}).await.unwrap() });
            let mut idle_switches = Vec::new();
            // Idle periods of different lengths, so that the stalls below begin at different
            // points of the sleeping watchdog's own wake-ups (every 100 ms or so).
            for idle_ms in [250, 280, 370] {
                // Every worker parked: the watchdog sleeps.
                let before = watchdog_switches();
                std::thread::sleep(Duration::from_millis(idle_ms));
                idle_switches.push(watchdog_switches() - before);
                // A new thread whose first poll stalls for 150 ms.
                task_on_a_new_thread(guard, || {
                    std::thread::sleep(Duration::from_millis(150)); // stall: first-poll
                });
            }
            idle_switches
        });
        // The case is exercised: the watchdog slept through each idle period (awake, it
        // would wake every 250 µs, or every 5 to 10 ms on a quiet service).
        assert!(
            idle_switches.iter().all(|n| *n <= 30),
            "watchdog wake-ups in each idle period: {idle_switches:?}"
        );
        let line = crate::stalls::stall_line("first-poll");
        let stalls: Vec<_> = run
            .stalls
            .iter()
            .filter(|s| s.culprit.as_ref().is_some_and(|c| c.line == Some(line)))
            .collect();
        let latencies: Vec<_> = stalls
            .iter()
            .map(|s| s.detection_latency_ns / 1_000_000)
            .collect();
        assert_eq!(stalls.len(), 3, "detected after (ms): {latencies:?}");
        assert!(
            latencies.iter().all(|ms| *ms < 30),
            "detected after (ms; threshold 10): {latencies:?}"
        );
    });
}

/// Once every thread that ran an instrumented runtime has ended, there is nothing to watch:
/// the watchdog sleeps (a program that ran its runtime and went on without it pays no
/// wake-ups), and a thread that starts a runtime later wakes it.
#[test]
fn the_watchdog_sleeps_once_every_runtime_thread_has_ended() {
    crate::support::retry_if_disturbed(|| {
        let (run, idle) = record_guarded("all-ended", |guard| {
            task_on_a_new_thread(guard, || {});
            // Its thread has ended: no worker is left.
            std::thread::sleep(Duration::from_millis(50));
            let before = watchdog_switches();
            std::thread::sleep(Duration::from_millis(300));
            let idle = watchdog_switches() - before;
            // And a new one is watched from its first poll.
            task_on_a_new_thread(guard, || {
                std::thread::sleep(Duration::from_millis(60)); // stall: after-all-ended
            });
            idle
        });
        // Awake, the watchdog would wake every 5 ms on a quiet service (60 times); asleep,
        // every 100 ms at most.
        assert!(
            idle <= 15,
            "{idle} watchdog wake-ups in 300 ms with no worker left"
        );
        detected_soon(&run, "after-all-ended");
    });
}

/// A quiet service (a task ticking every millisecond: its workers park between ticks) keeps
/// the watchdog looking for stalls, but after a look that found no poll going on it sleeps a
/// whole threshold (half of one more than it would after a look that found one), which is the
/// most it can sleep and still look at a stall past half the threshold as early as before.
#[test]
fn a_quiet_services_watchdog_wakes_about_once_a_threshold() {
    crate::support::retry_if_disturbed(|| {
        let _ = crate::support::record_with(
            "quiet-wakes",
            Flavor::MultiThread(2),
            |b| b.stall_threshold(Duration::from_millis(10)),
            || async {
                let ticker = tokio::spawn(async {
                    let mut every = tokio::time::interval(Duration::from_millis(1));
                    for _ in 0..900 {
                        every.tick().await;
                    }
                });
                // The service is quiet after the first 20 ms window of polls counted.
                std::thread::sleep(Duration::from_millis(200));
                let before = watchdog_switches();
                std::thread::sleep(Duration::from_millis(500));
                let wakes = watchdog_switches() - before;
                eprintln!("{wakes} watchdog wake-ups in 500 ms");
                // Every 10 ms, 50 in 500 ms (a look that finds a tick's poll going on sleeps
                // 5 ms); every 5 ms, as a quiet watchdog looked before, 100.
                assert!(
                    (25..=75).contains(&wakes),
                    "{wakes} watchdog wake-ups in 500 ms of a quiet service"
                );
                ticker.await.unwrap();
            },
        );
    });
}

/// Stalls that begin at every point of a quiet watchdog's longer sleep are declared at the
/// threshold, at their lines, asleep in a call (the stack copied from outside) or on CPU (the
/// thread signalled, once the watchdog has seen it stay on CPU since half the threshold); and
/// so are stalls that begin as a worker wakes the watchdog from its idle wait.
#[test]
fn stalls_beginning_while_a_quiet_watchdog_sleeps_are_declared_at_the_threshold() {
    crate::support::retry_if_disturbed(|| {
        const THRESHOLD: Duration = Duration::from_millis(10);
        let (run, _) = crate::support::record_with(
            "quiet-stalls",
            Flavor::MultiThread(2),
            |b| b.stall_threshold(THRESHOLD),
            || async {
                for i in 0..16u64 {
                    // Parked for 1 to 14 ms: each stall begins at another point of the
                    // watchdog's sleep.
                    let idle = Duration::from_micros(1_000 + i * 7_919 % 13_000);
                    tokio::time::sleep(idle).await;
                    tokio::spawn(async move {
                        if i % 2 == 0 {
                            std::thread::sleep(Duration::from_millis(25)); // stall: quiet-asleep
                        } else {
                            let t = std::time::Instant::now();
                            while t.elapsed() < Duration::from_millis(25) {} // stall: quiet-spin
                        }
                    })
                    .await
                    .unwrap();
                }
                for idle_ms in [170, 190, 230] {
                    // Every worker parked for 100 ms: the watchdog waits for one to unpark.
                    tokio::time::sleep(Duration::from_millis(idle_ms)).await;
                    tokio::spawn(async {
                        std::thread::sleep(Duration::from_millis(25)); // stall: quiet-woken
                    })
                    .await
                    .unwrap();
                }
            },
        );
        let late = |marker: &str, n: usize| {
            let line = crate::stalls::stall_line(marker);
            let mut late: Vec<f64> = run
                .stalls
                .iter()
                .filter(|s| s.culprit.as_ref().is_some_and(|c| c.line == Some(line)))
                .map(|s| (s.detection_latency_ns as f64 - THRESHOLD.as_nanos() as f64) / 1e6)
                .collect();
            assert_eq!(late.len(), n, "{marker}: {:#?}", run.stalls);
            late.sort_by(f64::total_cmp);
            late
        };
        let mut during_sleep = late("quiet-asleep", 8);
        during_sleep.extend(late("quiet-spin", 8));
        during_sleep.sort_by(f64::total_cmp);
        let woken = late("quiet-woken", 3);
        eprintln!(
            "declared after the threshold (ms): {during_sleep:.2?}; after an idle wait {woken:.2?}"
        );
        // Declared at the threshold, give or take the watchdog's tick and its own wake-up
        // (a look half a threshold late would put most of them 5 ms late).
        assert!(during_sleep[8] <= 3.0, "{during_sleep:?}");
        assert!(woken[1] <= 3.0, "{woken:?}");
    });
}

/// A clock tick longer than half the quiet interval's cap (any the builder accepts, up to
/// 10 ms) sets how far apart a quiet service's looks are; the watchdog runs and records the
/// stall.
#[test]
fn a_long_clock_tick_still_watches_a_quiet_service() {
    crate::support::retry_if_disturbed(|| {
        let (run, _) = crate::support::record_with(
            "long-tick",
            Flavor::MultiThread(2),
            |b| b.clock_tick(Duration::from_millis(8)),
            || async {
                // Quiet: a few polls, then a stall well past the threshold and the tick.
                tokio::time::sleep(Duration::from_millis(100)).await;
                tokio::spawn(async {
                    std::thread::sleep(Duration::from_millis(80)); // stall: long-tick
                })
                .await
                .unwrap();
            },
        );
        let stall = crate::stalls::stall_at(&run, "long-tick");
        assert!(stall.duration_ns >= 50_000_000, "{stall:#?}");
    });
}
