//! Test harness: record a workload on an instrumented runtime and read the run file back.

mod known;

pub(crate) use known::{location, marked_line, spin};

use std::cell::Cell;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use asyncprof_format::RunFile;

/// One test of this binary at a time. A recording needs the process to itself (one profiler
/// per process), and the tests that time things (stall detection within 5 ms of the
/// threshold, a 20 ms scheduling delay, a burst that drains) measure wrong on a machine whose
/// cores another test keeps busy: on 2 cores, a test's two workers, its watchdog and a
/// neighbour's spinning threads outnumber the cores, and a preempted watchdog times nothing.
/// Every test takes this lock first; the whole binary takes as long serial as in parallel.
static SERIAL: Mutex<()> = Mutex::new(());

thread_local! {
    /// Whether this test's thread holds [`SERIAL`] already (a test that holds it and then
    /// records takes it once).
    static HELD: Cell<bool> = const { Cell::new(false) };
}

/// Hold for the whole test: see [`SERIAL`]. Taken again on the same thread, it is a no-op.
pub(crate) struct Serial(Option<MutexGuard<'static, ()>>);

impl Drop for Serial {
    fn drop(&mut self) {
        if self.0.take().is_some() {
            HELD.with(|h| h.set(false));
        }
    }
}

/// Run this test alone: see [`SERIAL`].
pub(crate) fn serial() -> Serial {
    if HELD.with(Cell::get) {
        return Serial(None);
    }
    // A test that panicked while holding the lock poisons it; the next test still runs.
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    HELD.with(|h| h.set(true));
    Serial(Some(guard))
}

/// Which runtime to build.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Flavor {
    CurrentThread,
    MultiThread(usize),
}

thread_local! {
    /// Clock gaps the recordings of this test's current attempt counted.
    static CLOCK_GAPS: Cell<u64> = const { Cell::new(0) };
}

/// Count the clock gaps `run` recorded toward this test's current attempt: see
/// [`retry_if_disturbed`]. [`record_with`] does it for every run it reads back.
pub(crate) fn note_clock_gaps(run: &RunFile) {
    let gaps = run.snapshot.as_ref().map_or(0, |s| s.loss.clock_gaps);
    CLOCK_GAPS.with(|g| g.set(g.get() + gaps));
}

/// Attempts a timing test gets while the machine keeps descheduling the watchdog.
const ATTEMPTS: u32 = 4;

/// Run `attempt` (a test's recordings and its assertions on them) until it passes.
///
/// Timings and stall detection rest on the watchdog thread running every tick: it publishes
/// the coarse clock and looks at every worker. A run file counts each time it woke more than
/// four ticks late (`clock_gaps`): the machine did not give it a CPU, as when a virtual
/// machine's host takes the CPUs for tens of milliseconds. An attempt that fails after such
/// a gap measured the machine, not asyncprof, and is tried again, [`ATTEMPTS`] in all. An
/// attempt that fails without a gap fails the test at once, and so does the last one.
/// The test runs alone ([`serial`]).
pub(crate) fn retry_if_disturbed(attempt: impl Fn()) {
    let _serial = serial();
    for n in 1..=ATTEMPTS {
        CLOCK_GAPS.with(|g| g.set(0));
        let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&attempt)) else {
            return;
        };
        let gaps = CLOCK_GAPS.with(Cell::get);
        if gaps == 0 || n == ATTEMPTS {
            std::panic::resume_unwind(panic);
        }
        eprintln!(
            "attempt {n} of {ATTEMPTS} failed after {gaps} clock gaps (the watchdog was \
             descheduled): trying again"
        );
    }
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
    rt.block_on(f());
    drop(rt);
    let footprint = guard.footprint();
    drop(guard);
    let run = asyncprof_format::read_path(&path).unwrap();
    std::fs::remove_file(&path).ok();
    note_clock_gaps(&run);
    assert!(run.ended, "the guard's drop writes the end record");
    (run, footprint)
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
