//! Stalls beside a busy service of short polls: the watchdog, watching a runtime whose worker
//! never parks, finds each stall of another runtime at the threshold, at its line, timed
//! whole, and never takes the busy worker for a stalled one.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asyncprof_format::StallClass;

use crate::support::{multi_thread, record_guarded};

/// Known truth: one runtime's worker runs a task that yields in a loop (hundreds of thousands
/// of polls of well under a microsecond: a busy service; a worker of its own, so that no stall
/// holds it), while on a second runtime's worker sixteen tasks each hold it 25 ms, asleep or
/// on CPU, 1 to 14 ms apart. Each is a stall of the second runtime's worker, timed whole, at
/// its line with its class (or, where no stack could be taken, at none: never elsewhere),
/// declared at the threshold; the yielding worker has none.
#[test]
fn stalls_beside_a_busy_service_are_declared_at_the_threshold() {
    crate::support::retry_if_disturbed(|| {
        const THRESHOLD: Duration = Duration::from_millis(10);
        let stop = Arc::new(AtomicBool::new(false));
        let (run, (yields, busy_for)) = record_guarded("busy-stalls", |guard| {
            let busy = multi_thread(guard, 1, Some("busy-yielding"));
            let stop2 = stop.clone();
            let began = Instant::now();
            let yielding = busy.spawn(async move {
                let mut n = 0u64;
                while !stop2.load(Relaxed) {
                    tokio::task::yield_now().await;
                    n += 1;
                }
                n
            });
            let stalled = multi_thread(guard, 1, Some("busy-stalled"));
            std::thread::sleep(Duration::from_millis(100));
            for i in 0..16u64 {
                // 1 to 14 ms apart: each stall begins at another point of a tick.
                std::thread::sleep(Duration::from_micros(1_000 + i * 7_919 % 13_000));
                stalled.block_on(async move {
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
            let busy_for = began.elapsed();
            (busy.block_on(yielding).unwrap(), busy_for)
        });
        let snapshot = run.snapshot.as_ref();
        let polls = snapshot.map_or(0, |s| s.runtime.polls);
        let gaps = snapshot.map_or(0, |s| s.loss.clock_gaps);
        let per_s = yields as f64 / busy_for.as_secs_f64();
        eprintln!("{yields} yields ({per_s:.0} a second), {polls} polls in all, {gaps} clock gaps");
        // A busy service to the watchdog, which looks every tick above 100,000 polls a second
        // (its `BUSY_ABOVE`): twice that at least.
        assert!(
            per_s >= 200_000.0,
            "{per_s:.0} yields a second: not a busy service"
        );
        let (asleep, spin) = (
            crate::stalls::stall_line("busy-asleep"),
            crate::stalls::stall_line("busy-spin"),
        );
        assert_eq!(run.stalls.len(), 16, "{:#?}", run.stalls);
        for s in &run.stalls {
            assert_eq!(s.thread_name, "busy-stalled", "{s:#?}");
            // Timed whole (a spin the machine kept off its core runs longer).
            let ms = s.duration_ns as f64 / 1e6;
            assert!((22.5..100.0).contains(&ms), "{ms:.2} ms: {s:#?}");
            // At its line, or, where no stack could be taken (a busy machine keeps the
            // spinning thread off its core when the signal comes), at none: never elsewhere.
            if let Some(c) = &s.culprit {
                let file = c.file.as_deref().unwrap_or("");
                assert!(file.ends_with("tests/it/busy.rs"), "{s:#?}");
                let class = match c.line {
                    Some(l) if l == asleep => StallClass::Blocking,
                    Some(l) if l == spin => StallClass::CpuBound,
                    _ => panic!("a stall at neither line: {s:#?}"),
                };
                assert_eq!(s.class, class, "{s:#?}");
            }
        }
        let placed = run.stalls.iter().filter(|s| s.culprit.is_some()).count();
        assert!(
            placed >= 12,
            "{placed} of 16 at their lines: {:#?}",
            run.stalls
        );
        let late = crate::stalls::declared_after(&run, THRESHOLD);
        eprintln!("declared after the threshold (ms): {late:.2?}");
        // Not before the threshold (the start is read from the coarse clock, up to a tick
        // early); at it, give or take a tick and the watchdog's wake-up; none far later.
        assert!(late[0] >= -0.5, "{late:?}");
        assert!(late[8] <= 3.0, "{late:?}");
        assert!(late[15] <= 15.0, "{late:?}");
    });
}
