//! What a service does as a process stays its own: a child it forks after the recording
//! started, a child that inherited its run file, its exit without dropping the guard. (Its
//! arguments whatever their encoding: `tests/args.rs`.)

use std::time::{Duration, Instant};

/// A child forked after the recording started (a daemon forking before it builds its
/// runtime, a pre-forking server) has none of asyncprof's threads: dropping its guard must
/// not wait for them, and the parent's recording goes on to its end.
#[test]
fn a_child_forked_after_the_start_exits_as_it_would_without_asyncprof() {
    let _one = crate::support::serial();
    let path = crate::support::temp_run_path("fork");
    let guard = asyncprof::Profiler::builder().out(&path).start().unwrap();
    // SAFETY: the child only drops its guard and exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        drop(guard);
        // SAFETY: ends the child without running the test harness's exit handlers.
        unsafe { libc::_exit(7) };
    }
    let started = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: waits for the child forked above, without blocking.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            break;
        }
        if started.elapsed() > Duration::from_secs(20) {
            // SAFETY: the child forked above is stuck: stop it before failing.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let waited = started.elapsed();
    let rt = crate::support::multi_thread(&guard, 2, None);
    rt.block_on(async { tokio::spawn(async { 1 }).await.unwrap() });
    drop(rt);
    drop(guard);
    let run = asyncprof_format::read_path(&path);
    std::fs::remove_file(&path).ok();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 7,
        "the child exits with its own status (wait status {status:#x} after {waited:?})"
    );
    let run = run.unwrap();
    assert!(run.ended, "the parent's recording ends as usual");
    assert_eq!(run.snapshot.unwrap().runtime.tasks_spawned, 1);
}

const SHARED_CHILD_ENV: &str = "ASYNCPROF_IT_SHARED_RUN_FILE";

/// Runs only as the child of `a_child_given_its_parents_run_file_records_beside_it`: records
/// to the run file its parent records to (as a child that inherited `ASYNCPROF_OUT` does).
#[test]
fn child_records_to_its_parents_run_file() {
    let Some(path) = std::env::var_os(SHARED_CHILD_ENV) else {
        return;
    };
    let guard = asyncprof::Profiler::builder().out(path).start().unwrap();
    let mut b = tokio::runtime::Builder::new_current_thread();
    let rt = guard.instrument(&mut b).enable_all().build().unwrap();
    rt.block_on(async { tokio::spawn(async { 1 }).await.unwrap() });
    drop(rt);
    drop(guard);
}

/// A process that records to a run file another one records to (a service that runs copies
/// of itself, which inherit `ASYNCPROF_OUT`) leaves that run alone and records beside it,
/// under its own pid. It used to truncate the file under the other's writes.
#[test]
fn a_child_given_its_parents_run_file_records_beside_it() {
    if std::env::var_os(SHARED_CHILD_ENV).is_some() {
        return;
    }
    let _one = crate::support::serial();
    let path = crate::support::temp_run_path("shared");
    let guard = asyncprof::Profiler::builder().out(&path).start().unwrap();
    let rt = crate::support::multi_thread(&guard, 2, None);
    rt.block_on(async { tokio::spawn(async { 1 }).await.unwrap() });
    let mut child = crate::support::spawn_child(
        "process::child_records_to_its_parents_run_file",
        SHARED_CHILD_ENV,
        &path,
    );
    let status = wait_bounded(&mut child);
    rt.block_on(async { tokio::spawn(async { 2 }).await.unwrap() });
    drop(rt);
    drop(guard);
    let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
    let beside = path.with_file_name(format!("{stem}.{}.run", child.id()));
    let (ours, theirs) = (
        asyncprof_format::read_path(&path),
        asyncprof_format::read_path(&beside),
    );
    std::fs::remove_file(&path).ok();
    std::fs::remove_file(&beside).ok();
    assert!(status.is_some_and(|s| s.success()), "the child: {status:?}");
    let ours = ours.unwrap();
    assert_eq!(
        ours.header.pid,
        std::process::id(),
        "the parent's run is its own"
    );
    assert!(ours.ended);
    assert_eq!(ours.snapshot.unwrap().runtime.tasks_spawned, 2);
    let theirs = theirs.unwrap();
    assert_eq!(theirs.header.pid, child.id());
    assert!(theirs.ended);
    assert_eq!(theirs.snapshot.unwrap().runtime.tasks_spawned, 1);
}

const EXIT_CHILD_ENV: &str = "ASYNCPROF_IT_EXIT_RUN_FILE";

/// Runs only as the child of `a_process_that_exits_without_dropping_its_guard_ends_its_run`:
/// records a task that computes for 300 ms with the CPU profile on, then calls
/// `std::process::exit` with the guard still alive.
#[test]
fn child_exits_with_its_guard_alive() {
    let Some(path) = std::env::var_os(EXIT_CHILD_ENV) else {
        return;
    };
    let guard = asyncprof::Profiler::builder()
        .out(path)
        .cpu_profile(99)
        .start()
        .unwrap();
    let rt = crate::support::multi_thread(&guard, 2, None);
    rt.block_on(async {
        tokio::spawn(async { crate::support::spin(Duration::from_millis(300)) })
            .await
            .unwrap();
    });
    std::process::exit(0);
}

/// A process that exits without dropping its guard (`std::process::exit`, a guard leaked or
/// held in a static) still ends its run: its last snapshot, its CPU profile and the end
/// record are written on the way out. They used to be lost (the CPU profile whole).
#[test]
fn a_process_that_exits_without_dropping_its_guard_ends_its_run() {
    if std::env::var_os(EXIT_CHILD_ENV).is_some() {
        return;
    }
    let path = crate::support::temp_run_path("exit-with-guard");
    let mut child = crate::support::spawn_child(
        "process::child_exits_with_its_guard_alive",
        EXIT_CHILD_ENV,
        &path,
    );
    let status = wait_bounded(&mut child);
    let run = asyncprof_format::read_path(&path);
    std::fs::remove_file(&path).ok();
    assert!(status.is_some_and(|s| s.success()), "the child: {status:?}");
    let run = run.unwrap();
    assert!(run.ended, "the end record is written at exit");
    assert_eq!(run.snapshot.unwrap().runtime.tasks_completed, 1);
    let cpu = run.cpu_profile.expect("the CPU profile is written at exit");
    assert!(cpu.samples > 0, "{cpu:?}");
}

/// Wait for `child` for 30 s at most (then it is killed): its status, `None` when killed.
fn wait_bounded(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
