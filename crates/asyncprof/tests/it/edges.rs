//! Runtime edge cases: a service that forks and execs while its worker is being sampled, a
//! task that panics mid-poll, threads of the blocking pool, `block_in_place` (nested too),
//! several runtimes in one process, and a runtime shut down in the middle of a stall.

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
    crate::support::retry_if_disturbed(|| {
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
    });
}

#[test]
fn a_task_that_panics_mid_poll_leaves_the_recording_consistent() {
    crate::support::retry_if_disturbed(|| {
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
        let panicking =
            crate::support::marked_line("crates/asyncprof/tests/it/edges.rs", "panicking");
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
    });
}

#[test]
fn blocking_pool_threads_are_not_stalled_workers() {
    crate::support::retry_if_disturbed(|| {
        let (run, _) = record("spawn-blocking", Flavor::MultiThread(2), || async {
            let started = Instant::now();
            let blocking: Vec<_> = (0..3)
                .map(|_| {
                    tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(150)))
                })
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
    });
}

#[test]
fn a_runtime_shut_down_mid_stall_leaves_the_stall_in_the_file() {
    crate::support::retry_if_disturbed(|| {
        let path = crate::support::temp_run_path("shutdown-mid-stall");
        let guard = asyncprof::Profiler::builder().out(&path).start().unwrap();
        let rt = crate::support::multi_thread(&guard, 2, None);
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
        let (run, ()) = crate::support::read_back(&path, Ok(()));
        assert!(run.ended);
        let stall = crate::stalls::stall_at(&run, "shutdown");
        assert!(stall.ongoing, "it was still running at shutdown");
        assert!(stall.duration_ns >= 150_000_000, "{stall:#?}");
    });
}

#[test]
fn block_in_place_hands_the_worker_off_and_is_no_stall() {
    crate::support::retry_if_disturbed(|| {
        let (run, _) = record("block-in-place", Flavor::MultiThread(2), || async {
            let plain = tokio::spawn(async {
                tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(200)));
            });
            let nested = tokio::spawn(async {
                tokio::task::block_in_place(|| {
                    tokio::task::block_in_place(|| std::thread::sleep(Duration::from_millis(200)))
                });
            });
            // Both workers' threads are inside block_in_place; tokio gave their workers to other
            // threads, which keep running short polls.
            let ticks = tokio::spawn(async {
                let started = Instant::now();
                let mut ticks = 0;
                while started.elapsed() < Duration::from_millis(200) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    ticks += 1;
                }
                ticks
            });
            plain.await.unwrap();
            nested.await.unwrap();
            assert!(ticks.await.unwrap() > 10, "the workers kept running");
            // A real stall afterwards is still found, at its line.
            tokio::spawn(async {
                std::thread::sleep(Duration::from_millis(60)); // stall: after-block-in-place
            })
            .await
            .unwrap();
        });
        assert_eq!(
            run.stalls.len(),
            1,
            "only the marked poll blocked a worker: {:#?}",
            run.stalls
        );
        assert_eq!(
            stalls_at(&run, "after-block-in-place"),
            1,
            "{:#?}",
            run.stalls
        );
    });
}

#[test]
fn several_runtimes_in_one_process_are_told_apart() {
    crate::support::retry_if_disturbed(|| {
        let path = crate::support::temp_run_path("several-runtimes");
        let guard = asyncprof::Profiler::builder().out(&path).start().unwrap();
        let build = |name: &str, workers: usize| {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(workers).name(name);
            guard.instrument(&mut b).enable_all().build().unwrap()
        };
        let front = build("front", 2);
        let db = build("db", 1);
        front.block_on(async {
            let short: Vec<_> = (0..100)
                .map(|_| tokio::spawn(tokio::task::yield_now()))
                .collect();
            for t in short {
                t.await.unwrap();
            }
        });
        db.block_on(async {
            tokio::spawn(async {
                std::thread::sleep(Duration::from_millis(60)); // stall: on-the-db-runtime
            })
            .await
            .unwrap();
        });
        // A current-thread runtime, driven from its own thread.
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut b = tokio::runtime::Builder::new_current_thread();
                b.name("tool");
                let tool = guard.instrument(&mut b).enable_all().build().unwrap();
                tool.block_on(async { tokio::spawn(async {}).await.unwrap() });
            });
        });
        drop(front);
        drop(db);
        drop(guard);
        let (run, ()) = crate::support::read_back(&path, Ok(()));
        let snap = run.snapshot.as_ref().unwrap();
        let named = |name: &str| {
            snap.runtimes
                .iter()
                .find(|r| r.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("runtime {name} is in the file: {:#?}", snap.runtimes))
        };
        let (front, db, tool) = (named("front"), named("db"), named("tool"));
        assert_eq!(snap.runtimes.len(), 3, "{:#?}", snap.runtimes);
        assert_eq!((front.workers, db.workers, tool.workers), (2, 1, 1));
        assert_eq!(front.flavor, asyncprof_format::Flavor::MultiThread);
        assert_eq!(tool.flavor, asyncprof_format::Flavor::CurrentThread);
        assert!(front.id != db.id && db.id != tool.id && front.id != tool.id);
        let threads_of = |id: u64| snap.workers.iter().filter(|w| w.runtime == id).count();
        assert_eq!(
            (threads_of(front.id), threads_of(db.id), threads_of(tool.id)),
            (2, 1, 1),
            "each worker names its runtime: {:#?}",
            snap.workers
        );
        assert_eq!(stalls_at(&run, "on-the-db-runtime"), 1, "{:#?}", run.stalls);
        assert!(
            run.stalls.iter().all(|s| s.runtime == db.id),
            "the stall is the db runtime's: {:#?}",
            run.stalls
        );
    });
}
