//! A poll that never returns (`block_on` of a future that never completes, inside a task on a
//! current-thread runtime) is in the run file while the process is still stuck.

use std::time::{Duration, Instant};

const CHILD_ENV: &str = "ASYNCPROF_IT_BLOCKED_CHILD";

/// Runs only as the child process of `block_on_inside_the_runtime_is_reported_while_stuck`.
#[test]
fn child_runtime_stuck_in_block_on() {
    let _serial = crate::support::serial();
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let guard = asyncprof::Profiler::builder()
        .out(path)
        .stall_threshold(Duration::from_millis(10))
        .start()
        .unwrap();
    let mut b = tokio::runtime::Builder::new_current_thread();
    let rt = guard.instrument(&mut b).enable_all().build().unwrap();
    rt.block_on(async {
        tokio::spawn(async {
            futures_executor::block_on(std::future::pending::<()>()); // stall: block_on
        })
        .await
        .unwrap();
    });
}

#[test]
fn block_on_inside_the_runtime_is_reported_while_stuck() {
    let _serial = crate::support::serial();
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let path = crate::support::temp_run_path("blocked");
    let started = Instant::now();
    let mut child =
        crate::support::spawn_child("blocked::child_runtime_stuck_in_block_on", CHILD_ENV, &path);
    let found = crate::support::wait_for_run(&path, Duration::from_secs(30), |run| {
        run.stalls
            .into_iter()
            .find(|s| s.ongoing && s.culprit.is_some())
    });
    let seen_after = started.elapsed();
    // The report says a poll never returned once it held its worker for a second while
    // the run ended: wait for the file to show that much before stopping the child.
    let lasting = crate::support::wait_for_run(&path, Duration::from_secs(30), |run| {
        run.stalls
            .into_iter()
            .find(|s| s.ongoing && s.duration_ns >= asyncprof_format::NEVER_RETURNED_NS)
    });
    assert!(
        lasting.is_some(),
        "the stuck poll's record grows while it lasts"
    );
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    let stall = found.expect("the stuck poll is in the run file while the process runs");
    assert!(
        still_running,
        "the child was still stuck when its stall was read"
    );
    eprintln!("ongoing stall visible {seen_after:?} after the child started");
    let line = crate::stalls::stall_line("block_on");
    let culprit = stall.culprit.as_ref().unwrap();
    assert_eq!(culprit.line, Some(line), "{culprit}");
    assert_eq!(
        stall.primitive.as_ref().unwrap().function,
        "futures::executor::block_on"
    );
    let run = asyncprof_format::read_path(&path).unwrap();
    std::fs::remove_file(&path).ok();
    let findings = asyncprof_report::diagnose(&run);
    let f = findings
        .iter()
        .find(|f| f.kind == "runtime-blocked")
        .unwrap_or_else(|| panic!("{findings:#?}"));
    assert_eq!(f.location.line, line);
    assert!(f.location.file.ends_with("tests/it/blocked.rs"));
}
