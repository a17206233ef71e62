//! One test at a time, and timing tests tried again when the machine kept the watchdog from
//! running. Shared by the test binaries that record (`asyncprof`'s and the compatibility
//! tests').

use std::cell::Cell;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use asyncprof_format::RunFile;

/// One test of the binary at a time. A recording needs the process to itself (one profiler
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

/// Hold for the whole test: see [`serial`]. Taken again on the same thread, it is a no-op.
#[derive(Debug)]
#[must_use = "the test runs alone only while this is held"]
pub struct Serial(Option<MutexGuard<'static, ()>>);

impl Drop for Serial {
    fn drop(&mut self) {
        if self.0.take().is_some() {
            HELD.with(|h| h.set(false));
        }
    }
}

/// Run this test alone: one test of the binary at a time, as a recording needs the process
/// to itself and a timing test measures wrong on cores another test keeps busy (the lock
/// `SERIAL`, whose comment says more).
pub fn serial() -> Serial {
    if HELD.with(Cell::get) {
        return Serial(None);
    }
    // A test that panicked while holding the lock poisons it; the next test still runs.
    let guard = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    HELD.with(|h| h.set(true));
    Serial(Some(guard))
}

thread_local! {
    /// Clock gaps the recordings of this test's current attempt counted.
    static CLOCK_GAPS: Cell<u64> = const { Cell::new(0) };
}

/// Count the clock gaps `run` recorded toward this test's current attempt: see
/// [`retry_if_disturbed`]. [`read_back`] does it for every run it reads.
fn note_clock_gaps(run: &RunFile) {
    let gaps = run.snapshot.as_ref().map_or(0, |s| s.loss.clock_gaps);
    CLOCK_GAPS.with(|g| g.set(g.get() + gaps));
}

/// Read back the run a recording wrote to `path` (removing the file) and count its clock gaps
/// toward this attempt; then re-raise the workload's panic, if it had one, so a workload that
/// failed an assertion still has its gaps counted.
pub fn read_back<T>(path: &Path, workload: std::thread::Result<T>) -> (RunFile, T) {
    let run = asyncprof_format::read_path(path).unwrap();
    std::fs::remove_file(path).ok();
    note_clock_gaps(&run);
    match workload {
        Ok(out) => (run, out),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Attempts a timing test gets while the machine keeps descheduling the watchdog.
const ATTEMPTS: u32 = 4;

/// Run `attempt` (a test's recordings and its assertions on them) until it passes.
///
/// Timings and stall detection rest on the watchdog thread running on time: it publishes the
/// coarse clock and looks at every worker. A run file counts each time it ran late: more than
/// four of its intervals after its last look began (less the time that look spent sampling
/// stalls), or after a thread woke it from its idle wait (`clock_gaps`): the machine did not
/// give it a CPU, as when a virtual machine's host takes the CPUs for tens of milliseconds.
/// An attempt that fails after such a gap measured the machine, not asyncprof, and is tried
/// again, `ATTEMPTS` times in all. An attempt that fails without a gap fails the test at once,
/// and so does the last one. The test runs alone ([`serial`]).
///
/// The same holds for an attempt during which the hypervisor took CPU time from this machine
/// (`steal` in `/proc/stat`): a worker whose CPU was taken mid-poll shows a longer poll, with
/// the watchdog running on time on the other CPU.
pub fn retry_if_disturbed(attempt: impl Fn()) {
    let _serial = serial();
    for n in 1..=ATTEMPTS {
        CLOCK_GAPS.with(|g| g.set(0));
        let steal_before = steal_ticks();
        let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&attempt)) else {
            return;
        };
        let gaps = CLOCK_GAPS.with(Cell::get);
        let stolen = steal_ticks().saturating_sub(steal_before);
        if (gaps == 0 && stolen == 0) || n == ATTEMPTS {
            std::panic::resume_unwind(panic);
        }
        eprintln!(
            "attempt {n} of {ATTEMPTS} failed after {gaps} clock gaps and {stolen} ticks of \
             CPU time taken by the hypervisor: trying again"
        );
    }
}

/// The machine's CPU time taken by the hypervisor so far, in clock ticks (`steal`, the eighth
/// value of `/proc/stat`'s first line; 0 where it cannot be read).
fn steal_ticks() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().next()?.split_whitespace().nth(8)?.parse().ok())
        .unwrap_or(0)
}
