//! An idle service: with every worker parked, the watchdog sleeps until one unparks, and what
//! follows the idle period is timed as if it had stayed awake.

use std::time::Duration;

use crate::support::{record, Flavor};

/// The watchdog thread's voluntary context switches so far (each sleep and wake is one).
fn watchdog_switches() -> u64 {
    let mut seen = Vec::new();
    // A new thread names itself when it first runs, which on a busy machine can come
    // milliseconds after the recording started; and listing /proc/self/task while threads
    // start and end can skip an entry. List again, for at most 10 s, before concluding.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        seen.clear();
        for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let dir = entry.path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if comm.trim_end() == "asyncprof-watch" {
                let status = std::fs::read_to_string(dir.join("status")).unwrap();
                return status
                    .lines()
                    .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
            }
            seen.push(comm.trim_end().to_string());
        }
        if std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::yield_now();
    }
    panic!("no asyncprof-watchdog thread among {seen:?}")
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
        let stall = crate::stalls::stall_at(&run, "after-idle");
        assert!(
            stall.detection_latency_ns < 30_000_000,
            "recorded {} ms after it began (threshold 10 ms)",
            stall.detection_latency_ns / 1_000_000
        );
        assert!(stall.duration_ns >= 50_000_000, "{stall:#?}");
    });
}
