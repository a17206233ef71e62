//! Runtime edge cases: a service that forks and execs while its worker is being sampled, a
//! task that panics mid-poll, threads of the blocking pool, and a runtime shut down in the
//! middle of a stall.

use std::time::{Duration, Instant};

use asyncprof_format::RunFile;

use crate::support::{record, Flavor};

fn stalls_at(run: &RunFile, marker: &str) -> usize {
    let line = crate::stalls::stall_line(marker);
    run.stalls
        .iter()
        .filter(|s| s.culprit.as_ref().is_some_and(|c| c.line == Some(line)))
        .count()
}

#[test]
fn a_service_that_forks_and_execs_while_sampled_keeps_working() {
    let (run, _) = record("fork-exec", Flavor::MultiThread(2), || async {
        tokio::spawn(async {
            // One long poll that runs child processes: the watchdog samples this worker
            // (signals arrive during fork, exec and waitpid) the whole time.
            let start = Instant::now();
            let mut children = 0;
            while start.elapsed() < Duration::from_millis(400) {
                let status = std::process::Command::new("sh")
                    .args(["-c", "exit 7"])
                    .status() // stall: fork-exec
                    .expect("sh runs");
                assert_eq!(status.code(), Some(7), "every child runs and reports");
                children += 1;
            }
            assert!(children >= 5, "only {children} children in 400 ms");
        })
        .await
        .unwrap();
    });
    let stall = run
        .stalls
        .iter()
        .max_by_key(|s| s.duration_ns)
        .expect("the poll running children is a stall");
    assert!(
        !stall.stacks.is_empty(),
        "sampled while forking: {stall:#?}"
    );
    assert!(stalls_at(&run, "fork-exec") >= 1, "{:#?}", run.stalls);
}

#[test]
fn a_task_that_panics_mid_poll_leaves_the_recording_consistent() {
    let (run, _) = record("panic", Flavor::MultiThread(2), || async {
        for _ in 0..3 {
            // spawn: panicking
            let r = tokio::spawn(async {
                crate::support::spin(Duration::from_millis(5));
                panic!("a bug in the service");
            })
            .await;
            assert!(r.unwrap_err().is_panic());
        }
        // After the panics: a stall at a known line is still found, on the same workers.
        tokio::spawn(async {
            std::thread::sleep(Duration::from_millis(60)); // stall: after-panic
        })
        .await
        .unwrap();
        // And nothing else: the panicked polls did not leave a worker looking busy.
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
    let snap = run.snapshot.as_ref().unwrap();
    assert_eq!(snap.runtime.tasks_spawned, 4, "{:#?}", snap.runtime);
    assert_eq!(
        snap.runtime.tasks_alive, 0,
        "panicked tasks end: {:#?}",
        snap.runtime
    );
    assert_eq!(stalls_at(&run, "after-panic"), 1, "{:#?}", run.stalls);
    // The panicking polls may be stalls themselves (the panic hook can print a symbolized
    // backtrace from inside the poll); but none outlives its poll.
    let panicking = crate::support::marked_line("crates/asyncprof/tests/it/edges.rs", "panicking");
    for s in &run.stalls {
        assert!(
            !s.ongoing,
            "a panicked poll is not a stall that never ends: {s:#?}"
        );
        let line = s.task_location.as_ref().map(|l| l.line);
        let at_marker = s.culprit.as_ref().and_then(|c| c.line)
            == Some(crate::stalls::stall_line("after-panic"));
        assert!(
            line == Some(panicking) || at_marker,
            "only the panicking tasks and the marked line stall: {s:#?}"
        );
    }
}

#[test]
fn blocking_pool_threads_are_not_stalled_workers() {
    let (run, _) = record("spawn-blocking", Flavor::MultiThread(2), || async {
        let started = Instant::now();
        let blocking: Vec<_> = (0..3)
            .map(|_| tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(150))))
            .collect();
        // The workers stay free meanwhile: short polls keep running.
        let mut ticks = 0;
        while started.elapsed() < Duration::from_millis(150) {
            tokio::time::sleep(Duration::from_millis(2)).await;
            ticks += 1;
        }
        for b in blocking {
            b.await.unwrap();
        }
        assert!(ticks > 10);
    });
    assert!(
        run.stalls.is_empty(),
        "spawn_blocking threads are not workers: {:#?}",
        run.stalls
    );
    let snap = run.snapshot.as_ref().unwrap();
    assert_eq!(
        snap.workers.len(),
        2,
        "blocking threads get no worker entry: {:#?}",
        snap.workers
    );
}

#[test]
fn a_runtime_shut_down_mid_stall_leaves_the_stall_in_the_file() {
    let _one = crate::support::lock_recording();
    let path = crate::support::temp_run_path("shutdown-mid-stall");
    let guard = asyncprof::Profiler::builder().out(&path).start().unwrap();
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2);
    let rt = guard.instrument(&mut b).enable_all().build().unwrap();
    let (started, is_started) = std::sync::mpsc::channel();
    rt.spawn(async move {
        started.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(800)); // stall: shutdown
    });
    is_started.recv().unwrap();
    // Let the watchdog see it, then shut down without waiting for the stuck worker.
    std::thread::sleep(Duration::from_millis(200));
    rt.shutdown_timeout(Duration::from_millis(10));
    drop(guard);
    let run = asyncprof_format::read_path(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert!(run.ended);
    let at = crate::stalls::stall_line("shutdown");
    let stall = run
        .stalls
        .iter()
        .find(|s| s.culprit.as_ref().is_some_and(|c| c.line == Some(at)))
        .unwrap_or_else(|| panic!("the stall at line {at} is in the file: {:#?}", run.stalls));
    assert!(stall.ongoing, "it was still running at shutdown");
    assert!(stall.duration_ns >= 150_000_000, "{stall:#?}");
}
