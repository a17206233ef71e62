//! A busy service of short polls: the watchdog publishes the clock and looks at every worker
//! every tick, and a stall among the short polls is declared at the threshold, at its line,
//! timed whole, with no stall blamed on the healthy busy task beside it.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::record_guarded;

/// A multi-thread runtime of two workers instrumented by `guard`, and a task on it that
/// yields in a loop until `stop`: a busy service of short polls.
fn yielding(
    guard: &asyncprof::Guard,
    stop: &Arc<AtomicBool>,
) -> (tokio::runtime::Runtime, tokio::task::JoinHandle<()>) {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2);
    let rt = guard.instrument(&mut b).enable_all().build().unwrap();
    let stop = stop.clone();
    let task = rt.spawn(async move {
        while !stop.load(Relaxed) {
            tokio::task::yield_now().await;
        }
    });
    (rt, task)
}

/// Known truth: one task yields in a loop (hundreds of thousands of polls of well under a
/// microsecond: a busy service) while sixteen tasks each hold the other worker 25 ms, asleep
/// or on CPU, 1 to 14 ms apart: each is a stall at its line, declared at the threshold and
/// timed whole, and the yielding task is never one.
#[test]
fn stalls_among_short_polls_are_declared_at_the_threshold() {
    crate::support::retry_if_disturbed(|| {
        const THRESHOLD: Duration = Duration::from_millis(10);
        let stop = Arc::new(AtomicBool::new(false));
        let (run, ()) = record_guarded("busy-stalls", |guard| {
            let (rt, task) = yielding(guard, &stop);
            std::thread::sleep(Duration::from_millis(100));
            for i in 0..16u64 {
                // 1 to 14 ms apart: each stall begins at another point of a tick.
                std::thread::sleep(Duration::from_micros(1_000 + i * 7_919 % 13_000));
                rt.block_on(async move {
                    tokio::spawn(async move {
                        if i % 2 == 0 {
                            std::thread::sleep(Duration::from_millis(25)); // stall: busy-asleep
                        } else {
                            let t = Instant::now();
                            while t.elapsed() < Duration::from_millis(25) {} // stall: busy-spin
                        }
                    })
                    .await
                    .unwrap();
                });
            }
            stop.store(true, Relaxed);
            rt.block_on(task).unwrap();
        });
        let polls = run.snapshot.as_ref().map_or(0, |s| s.runtime.polls);
        assert!(polls >= 100_000, "{polls} polls: not a busy service");
        assert_eq!(run.stalls.len(), 16, "{:#?}", run.stalls);
        let lines = [
            crate::stalls::stall_line("busy-asleep"),
            crate::stalls::stall_line("busy-spin"),
        ];
        let mut late = Vec::new();
        for s in &run.stalls {
            // Timed whole (a spin the machine took the core from runs longer).
            let ms = s.duration_ns as f64 / 1e6;
            assert!((22.5..100.0).contains(&ms), "{ms:.2} ms: {s:#?}");
            late.push((s.detection_latency_ns as f64 - THRESHOLD.as_nanos() as f64) / 1e6);
            // At its line, or, where no stack could be taken (a busy machine keeps the
            // spinning thread off its core when the signal comes), at none: never elsewhere.
            if let Some(c) = &s.culprit {
                assert!(lines.contains(&c.line.unwrap_or(0)), "{s:#?}");
            }
        }
        let placed = run.stalls.iter().filter(|s| s.culprit.is_some()).count();
        assert!(
            placed >= 12,
            "{placed} of 16 at their lines: {:#?}",
            run.stalls
        );
        late.sort_by(f64::total_cmp);
        eprintln!("declared after the threshold (ms): {late:.2?}");
        // Never before the threshold; at it, give or take a tick and the watchdog's wake-up.
        assert!(late[0] >= -0.5, "{late:?}");
        assert!(late[8] <= 3.0, "{late:?}");
    });
}
