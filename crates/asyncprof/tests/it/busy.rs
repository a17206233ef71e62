//! A busy service of short polls keeps the coarse clock fresh itself (a poll in
//! `sample_every`, timed exactly, publishes the time it read once the clock has stood half a
//! tick), and its watchdog then looks every four ticks instead of every tick until a poll runs
//! past half the threshold: stalls are declared as soon as before.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{record_guarded, watchdog_tid};

/// The default clock tick.
const TICK: Duration = Duration::from_micros(250);

/// Thread `tid`'s voluntary context switches so far: the watchdog's sleeps, one a look.
fn sleeps(tid: libc::pid_t) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches in /proc/self/task/<tid>/status")
}

/// A multi-thread runtime of two workers instrumented by `guard`, and `n` tasks on it that
/// yield in a loop until `stop`: a busy service of short polls.
fn yielding(
    guard: &asyncprof::Guard,
    n: usize,
    stop: &Arc<AtomicBool>,
) -> (tokio::runtime::Runtime, Vec<tokio::task::JoinHandle<()>>) {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2);
    let rt = guard.instrument(&mut b).enable_all().build().unwrap();
    let tasks = (0..n)
        .map(|_| {
            let stop = stop.clone();
            rt.spawn(async move {
                while !stop.load(Relaxed) {
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    (rt, tasks)
}

/// Known truth: four tasks yielding in a loop on two workers for half a second (millions of
/// polls of well under a microsecond), no poll long: the watchdog sleeps far fewer times than
/// once a tick. Before, it woke every tick (4,000 times a second), each time taking a core
/// from a busy worker.
#[test]
fn a_busy_service_of_short_polls_is_looked_at_every_four_ticks() {
    crate::support::retry_if_disturbed(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let (run, (looks, elapsed)) = record_guarded("busy-looks", |guard| {
            let (rt, tasks) = yielding(guard, 4, &stop);
            // The watchdog finds the service busy once a 20 ms window saw the polls.
            std::thread::sleep(Duration::from_millis(100));
            let tid = watchdog_tid();
            let (before, start) = (sleeps(tid), Instant::now());
            std::thread::sleep(Duration::from_millis(400));
            let looks = (sleeps(tid) - before, start.elapsed());
            stop.store(true, Relaxed);
            for t in tasks {
                rt.block_on(t).unwrap();
            }
            looks
        });
        let polls = run.snapshot.as_ref().map_or(0, |s| s.runtime.polls);
        let ticks = elapsed.as_nanos() / TICK.as_nanos();
        eprintln!("{looks} looks in {elapsed:?} ({ticks} ticks), {polls} polls");
        assert!(polls >= 1_000_000, "{polls} polls: not a busy service");
        // Every four ticks is a quarter of them; a tick's looks on a busy machine, late now
        // and then, still come to over three quarters.
        assert!(
            u128::from(looks) * 2 < ticks,
            "{looks} looks in {elapsed:?}: {ticks} ticks"
        );
    });
}

/// Known truth: one task yields in a loop (its worker keeps the clock, and the watchdog looks
/// every four ticks) while sixteen tasks each hold the other worker 25 ms, asleep or on CPU,
/// begun at every point of the watchdog's longer interval: each is a stall at its line,
/// declared at the threshold as a tick's looks would declare it, and timed whole.
#[test]
fn stalls_among_short_polls_are_declared_at_the_threshold() {
    crate::support::retry_if_disturbed(|| {
        const THRESHOLD: Duration = Duration::from_millis(10);
        let stop = Arc::new(AtomicBool::new(false));
        let (run, ()) = record_guarded("busy-stalls", |guard| {
            let (rt, tasks) = yielding(guard, 1, &stop);
            std::thread::sleep(Duration::from_millis(100));
            for i in 0..16u64 {
                // 1 to 14 ms apart: each stall begins at another point of the interval.
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
            for t in tasks {
                rt.block_on(t).unwrap();
            }
        });
        let mut late = Vec::new();
        for marker in ["busy-asleep", "busy-spin"] {
            let line = crate::stalls::stall_line(marker);
            let at: Vec<_> = run
                .stalls
                .iter()
                .filter(|s| s.culprit.as_ref().is_some_and(|c| c.line == Some(line)))
                .collect();
            assert_eq!(at.len(), 8, "{marker}: {:#?}", run.stalls);
            for s in at {
                crate::support::assert_near(marker, s.duration_ns, Duration::from_millis(25), 0.3);
                late.push((s.detection_latency_ns as f64 - THRESHOLD.as_nanos() as f64) / 1e6);
            }
        }
        late.sort_by(f64::total_cmp);
        eprintln!("declared after the threshold (ms): {late:.2?}");
        // Never before the threshold; at it, give or take a tick and the watchdog's wake-up
        // (looks four ticks apart until half the threshold would put none of them later).
        assert!(late[0] >= -0.5, "{late:?}");
        assert!(late[8] <= 3.0, "{late:?}");
    });
}
