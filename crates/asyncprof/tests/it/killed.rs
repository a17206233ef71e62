//! A process killed with SIGKILL leaves a run file readable up to its last flush.

use std::time::Duration;

const CHILD_ENV: &str = "ASYNCPROF_IT_KILLED_CHILD";

/// Runs only as the child process of `sigkill_leaves_a_readable_run_file`: records a busy
/// service that never ends.
#[test]
fn child_service_that_never_ends() {
    let _serial = crate::support::serial();
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let guard = asyncprof::Profiler::builder()
        .out(path)
        .flush_interval(Duration::from_millis(100))
        .start()
        .unwrap();
    let rt = crate::support::multi_thread(&guard, 2, None);
    rt.block_on(async {
        loop {
            tokio::spawn(async { crate::support::spin(Duration::from_millis(1)) })
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
    });
}

#[test]
fn sigkill_leaves_a_readable_run_file() {
    let _serial = crate::support::serial();
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let path = crate::support::temp_run_path("killed");
    let mut child =
        crate::support::spawn_child("killed::child_service_that_never_ends", CHILD_ENV, &path);
    // Wait for the child's recorder to have flushed a few snapshots.
    let flushed = crate::support::wait_for_run(&path, Duration::from_secs(30), |run| {
        (run.series.len() >= 3).then_some(())
    })
    .is_some();
    child.kill().unwrap(); // SIGKILL: no destructor, no final flush
    child.wait().unwrap();
    assert!(flushed, "the child flushed snapshots while running");
    let run = asyncprof_format::read_path(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert!(!run.ended, "a killed process writes no end record");
    let snap = run
        .snapshot
        .expect("snapshots written before the kill survive");
    assert!(snap.runtime.polls > 0);
    assert!(snap.runtime.tasks_spawned > 0);
    assert_eq!(run.header.workers, 2);
}

const EARLY_ENV: &str = "ASYNCPROF_IT_EARLY_CHILD";

/// Runs only as the child of `runtime_facts_are_written_at_the_first_poll`: default settings.
#[test]
fn child_service_with_default_flush() {
    let _serial = crate::support::serial();
    let Ok(path) = std::env::var(EARLY_ENV) else {
        return;
    };
    let guard = asyncprof::Profiler::builder().out(path).start().unwrap();
    let mut b = tokio::runtime::Builder::new_current_thread();
    let rt = guard.instrument(&mut b).enable_all().build().unwrap();
    rt.block_on(async {
        tokio::spawn(async {
            loop {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
    });
}

#[test]
fn runtime_facts_are_written_at_the_first_poll() {
    let _serial = crate::support::serial();
    if std::env::var(EARLY_ENV).is_ok() {
        return;
    }
    let path = crate::support::temp_run_path("early");
    let started = std::time::Instant::now();
    let mut child =
        crate::support::spawn_child("killed::child_service_with_default_flush", EARLY_ENV, &path);
    // The header is there from the start; the runtime's flavor comes with the first poll.
    let run = crate::support::wait_for_run(&path, Duration::from_secs(30), |run| {
        (run.header.flavor != asyncprof_format::Flavor::Unknown).then_some(run)
    });
    let readable_after = started.elapsed();
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_file(&path).ok();
    let run = run.expect("a readable run file");
    eprintln!("run file readable {readable_after:?} after the child started");
    // The flush interval is 1 s; the runtime's facts and a first snapshot come with the first
    // poll.
    assert!(
        readable_after < Duration::from_millis(900),
        "{readable_after:?}"
    );
    assert_eq!(run.header.flavor, asyncprof_format::Flavor::CurrentThread);
    assert_eq!(run.header.tier, asyncprof_format::Tier::Hooks);
    assert_eq!(run.header.workers, 1);
    assert!(run.snapshot.is_some());
}

/// `start` returns once the run file holds its header: a process that dies at any moment
/// after it leaves a readable file, before any runtime exists.
#[test]
fn the_run_file_is_readable_when_start_returns() {
    let _serial = crate::support::serial();
    let path = crate::support::temp_run_path("at-start");
    let guard = asyncprof::Profiler::builder().out(&path).start().unwrap();
    let run = asyncprof_format::read_path(&path);
    drop(guard);
    let final_run = asyncprof_format::read_path(&path);
    std::fs::remove_file(&path).ok();
    let run = run.expect("the header is on disk when start returns");
    assert_eq!(run.header.pid, std::process::id());
    assert_eq!(run.header.tier, asyncprof_format::Tier::Unknown);
    assert_eq!(run.header.flavor, asyncprof_format::Flavor::Unknown);
    assert!(run.snapshot.is_none() && !run.ended && !run.truncated);
    // No task ever ran: the tier stays unknown, and the run still ends normally.
    let final_run = final_run.unwrap();
    assert!(final_run.ended);
    assert_eq!(final_run.header.tier, asyncprof_format::Tier::Unknown);
}
