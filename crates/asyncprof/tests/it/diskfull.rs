//! A run file that cannot be written (the disk is full: `/dev/full` refuses every write): the
//! service runs its work at the same pace, asyncprof says so once on stderr, and it stops
//! cleanly.

use std::time::{Duration, Instant};

const CHILD_ENV: &str = "ASYNCPROF_IT_DISKFULL_CHILD";

/// Runs only as a child of the test below: a fixed yield-heavy workload recorded to the path
/// in the environment; prints its wall time.
#[test]
fn child_workload_recorded_to_the_given_path() {
    let _serial = crate::support::serial();
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let guard = asyncprof::Profiler::builder()
        .out(path)
        .flush_interval(Duration::from_millis(50))
        .start()
        .unwrap();
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2);
    let rt = guard.instrument(&mut b).enable_all().build().unwrap();
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        rt.block_on(async {
            let tasks: Vec<_> = (0..1000)
                .map(|_| {
                    tokio::spawn(async {
                        for _ in 0..500 {
                            tokio::task::yield_now().await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        best = best.min(start.elapsed());
        // Let the recorder flush between rounds.
        std::thread::sleep(Duration::from_millis(60));
    }
    drop(rt);
    drop(guard);
    println!("best_us={}", best.as_micros());
}

fn run_child(path: &str) -> (u128, String) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "diskfull::child_workload_recorded_to_the_given_path",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let us = stdout
        .split("best_us=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no timing in {stdout}"))
        .parse()
        .unwrap();
    (us, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_full_disk_costs_the_service_nothing_and_is_said_once() {
    let _serial = crate::support::serial();
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let normal = crate::support::temp_run_path("diskfull-normal");
    let (ok_us, ok_err) = run_child(normal.to_str().unwrap());
    let (full_us, full_err) = run_child("/dev/full");
    std::fs::remove_file(&normal).ok();
    eprintln!("best of five: {ok_us} µs writing a run file, {full_us} µs to a full disk");
    assert!(!ok_err.contains("cannot write run file"), "{ok_err}");
    let warnings = full_err.matches("cannot write run file /dev/full").count();
    assert_eq!(warnings, 1, "said exactly once: {full_err}");
    assert!(full_err.contains("dropped and counted"), "{full_err}");
    // Same pace, within a generous factor for a noisy machine (best of five rounds each).
    assert!(
        full_us < ok_us * 2 + 20_000,
        "recording to a full disk took {full_us} µs against {ok_us} µs"
    );
}
