//! Test harness: record a workload on an instrumented runtime and read the run file back.

pub(crate) use asyncprof_test_support::{
    location, marked_line, read_back, retry_if_disturbed, serial, spin,
};

use std::path::PathBuf;
use std::time::{Duration, Instant};

use asyncprof_format::RunFile;

/// Which runtime to build.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Flavor {
    CurrentThread,
    MultiThread(usize),
}

pub(crate) fn temp_run_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("asyncprof-it-{name}-{}.run", std::process::id()))
}

/// Run `f` inside an instrumented runtime of `flavor`, stop recording, and return the run file
/// with the guard's footprint taken just before it stopped.
pub(crate) fn record<F, Fut>(name: &str, flavor: Flavor, f: F) -> (RunFile, asyncprof::Footprint)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    record_with(name, flavor, |b| b, f)
}

/// [`record`] with the profiler's settings adjusted by `configure`.
pub(crate) fn record_with<F, Fut>(
    name: &str,
    flavor: Flavor,
    configure: impl FnOnce(asyncprof::Builder) -> asyncprof::Builder,
    f: F,
) -> (RunFile, asyncprof::Footprint)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // One recording per process at a time (the test holds the lock already).
    let _one = serial();
    let path = temp_run_path(name);
    let guard = configure(asyncprof::Profiler::builder().out(&path))
        .start()
        .unwrap();
    let mut builder = match flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Flavor::MultiThread(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    let rt = guard.instrument(&mut builder).enable_all().build().unwrap();
    // A workload that fails an assertion still has its run read, for the clock gaps that
    // decide whether the attempt is tried again.
    let workload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.block_on(f())));
    drop(rt);
    let footprint = guard.footprint();
    drop(guard);
    let (run, ()) = read_back(&path, workload);
    assert!(run.ended, "the guard's drop writes the end record");
    (run, footprint)
}

/// Start a recording (stall threshold 10 ms), run `f` with its guard (for tests that build
/// their runtimes themselves, on threads of their own), stop it, and return the run file with
/// `f`'s result.
pub(crate) fn record_guarded<T>(
    name: &str,
    f: impl FnOnce(&asyncprof::Guard) -> T,
) -> (RunFile, T) {
    let _one = serial();
    let path = temp_run_path(name);
    let guard = asyncprof::Profiler::builder()
        .out(&path)
        .stall_threshold(Duration::from_millis(10))
        .start()
        .unwrap();
    let workload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&guard)));
    drop(guard);
    read_back(&path, workload)
}

/// On a new thread, a current-thread runtime instrumented by `guard`, whose `block_on`
/// spawns one task running `work` and waits for it: the thread's first event is that task's
/// poll (it never parked before), and the thread ends right after.
pub(crate) fn task_on_a_new_thread(guard: &asyncprof::Guard, work: impl FnOnce() + Send + 'static) {
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut b = tokio::runtime::Builder::new_current_thread();
            let rt = guard.instrument(&mut b).enable_all().build().unwrap();
            rt.block_on(async move { tokio::spawn(async move { work() }).await.unwrap() });
        });
    });
}

/// Assert `actual` is within `tolerance` (a fraction) of `expected`.
pub(crate) fn assert_near(what: &str, actual: u64, expected: Duration, tolerance: f64) {
    let e = expected.as_nanos() as f64;
    let a = actual as f64;
    assert!(
        (a - e).abs() <= e * tolerance,
        "{what}: {:.3} ms, expected {:.3} ms ± {:.0}%",
        a / 1e6,
        e / 1e6,
        tolerance * 100.0
    );
}

/// Start test `test` of this test binary as a child process, with `env` set to `path`.
pub(crate) fn spawn_child(test: &str, env: &str, path: &std::path::Path) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture"])
        .env(env, path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// A multi-thread runtime of `workers` workers instrumented by `guard` (the hooks tier), its
/// threads named `name` when given.
pub(crate) fn multi_thread(
    guard: &asyncprof::Guard,
    workers: usize,
    name: Option<&str>,
) -> tokio::runtime::Runtime {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(workers);
    if let Some(name) = name {
        b.thread_name(name);
    }
    guard.instrument(&mut b).enable_all().build().unwrap()
}

/// The id of the recording's watchdog thread (`asyncprof-watchdog`, cut to 15 bytes by the
/// kernel). A new thread names itself when it first runs, which on a busy machine can come
/// milliseconds after the recording started, and listing `/proc/self/task` while threads
/// start and end can skip an entry: it lists again, for at most 10 s, before it gives up.
pub(crate) fn watchdog_tid() -> libc::pid_t {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut seen = Vec::new();
        for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            if comm.trim_end() == "asyncprof-watch" {
                if let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) {
                    return tid;
                }
            }
            seen.push(comm.trim_end().to_string());
        }
        assert!(
            Instant::now() < deadline,
            "no asyncprof-watchdog thread among {seen:?}"
        );
        std::thread::yield_now();
    }
}

/// Read the run file at `path` until `found` picks something from it or `timeout` passes:
/// waiting on a condition, bounded in time.
pub(crate) fn wait_for_run<T>(
    path: &std::path::Path,
    timeout: Duration,
    mut found: impl FnMut(RunFile) -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = asyncprof_format::read_path(path).ok().and_then(&mut found) {
            return Some(t);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
