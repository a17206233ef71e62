//! What a service does as a process stays its own: its arguments whatever their encoding, a
//! child it forks after the recording started.

use std::time::{Duration, Instant};

/// An argument that is not UTF-8 (a file name in another encoding) is the service's to take:
/// `examples/demo.rs` (which starts with `asyncprof::init()`) runs with one as it runs
/// without asyncprof, and records it.
#[test]
fn an_argument_that_is_not_utf8_is_the_services_to_take() {
    use std::os::unix::ffi::OsStrExt;
    // The examples are built beside the test binaries' folder (target/<profile>/examples).
    let exe = std::env::current_exe().unwrap();
    let demo = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/demo");
    assert!(
        demo.exists(),
        "{} is built by `cargo test` (with `--test it` alone: `cargo build -p asyncprof --example demo` first)",
        demo.display()
    );
    let path = crate::support::temp_run_path("non-utf8-arg");
    let out = std::process::Command::new(&demo)
        .arg(std::ffi::OsStr::from_bytes(b"caf\xe9.log"))
        .env("ASYNCPROF_OUT", &path)
        .output()
        .unwrap();
    let run = asyncprof_format::read_path(&path);
    std::fs::remove_file(&path).ok();
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let run = run.unwrap();
    assert!(run.ended);
    assert_eq!(run.header.args, vec!["caf\u{fffd}.log".to_string()]);
}

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
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2);
    let rt = guard.instrument(&mut b).enable_all().build().unwrap();
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
