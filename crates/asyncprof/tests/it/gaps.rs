//! The watchdog held off its CPU: a machine that gives it none (one core busy, the other's
//! thread inside a long system call) leaves the coarse clock standing
//! and stalls unwatched. The run counts each such gap (`clock_gaps`), so that what it timed
//! meanwhile is read with that in mind. Played here by a signal whose handler holds the
//! watchdog's thread for [`HOLD`].

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Once;
use std::time::{Duration, Instant};

use crate::support::{multi_thread, record_guarded, wait_for_run, watchdog_tid};

/// How long the handler holds the watchdog's thread: far past any gap's bound (four ticks, or
/// four of a quiet watchdog's intervals: 40 ms at most at these tests' 10 ms threshold).
const HOLD: Duration = Duration::from_millis(100);

/// The handler is running on the watchdog's thread.
static HOLDING: AtomicBool = AtomicBool::new(false);

extern "C" fn hold_handler(_: libc::c_int) {
    // SAFETY: this thread's errno, saved and given back: the interrupted code may read it.
    let errno = unsafe { *libc::__errno_location() };
    HOLDING.store(true, SeqCst);
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: HOLD.as_nanos() as libc::c_long,
    };
    // SAFETY: nanosleep is async-signal-safe; `ts` outlives the call.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
    HOLDING.store(false, SeqCst);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Hold thread `tid` of this process for [`HOLD`] from now: returns once its handler runs.
fn hold(tid: libc::pid_t) {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: a zeroed sigaction is valid; the handler only stores atomics and sleeps.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = hold_handler as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut()), 0);
        }
    });
    HOLDING.store(false, SeqCst);
    // SAFETY: a signal to a thread of this process, whose handler is installed above.
    let sent = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGUSR2) };
    assert_eq!(sent, 0, "tgkill: {}", std::io::Error::last_os_error());
    wait_until("the handler to run", || HOLDING.load(SeqCst));
}

/// Wait (at most 10 s) until `done`, looking every half millisecond.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "waited 10 s for {what}");
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// The system call thread `tid` is blocked in, if any (`/proc/.../syscall`'s first number).
fn syscall_of(tid: libc::pid_t) -> Option<libc::c_long> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn clock_gaps(run: &asyncprof_format::RunFile) -> u64 {
    run.snapshot.as_ref().map_or(0, |s| s.loss.clock_gaps)
}

/// The gaps `guard`'s recording counted so far: it writes a snapshot now, read back once in
/// its file.
fn gaps_so_far(guard: &asyncprof::Guard) -> u64 {
    let before = asyncprof_format::read_path(guard.path())
        .unwrap()
        .snapshot
        .map(|s| s.elapsed_ns);
    guard.flush();
    wait_for_run(guard.path(), Duration::from_secs(10), |run| {
        let s = run.snapshot.filter(|s| Some(s.elapsed_ns) > before)?;
        Some(s.loss.clock_gaps)
    })
    .expect("no new snapshot in 10 s")
}

/// Known truth: every worker parked, the watchdog waits for one to unpark; it is held off its
/// CPU as a worker wakes it (a task spawned from outside the runtime), and runs 100 ms late:
/// one gap more than before. Before, a late wake from that wait counted nothing: the file
/// read of a task that unparked a worker went unwatched, and a test of it failed without the
/// gap that would have explained it.
#[test]
fn a_watchdog_woken_late_from_its_idle_wait_counts_a_clock_gap() {
    let (run, before) = record_guarded("late-wake", |guard| {
        let rt = multi_thread(guard, 2, None);
        let tid = watchdog_tid();
        // Every worker parked: the watchdog waits for an unpark (a futex), not in its sleep
        // between looks.
        let idle = || syscall_of(tid) == Some(libc::SYS_futex);
        wait_until("the watchdog's idle wait", idle);
        let before = gaps_so_far(guard);
        wait_until("the watchdog's idle wait", idle);
        hold(tid);
        rt.block_on(async { tokio::spawn(async {}).await.unwrap() });
        before
    });
    let after = clock_gaps(&run);
    assert!(after > before, "{before} gaps before, {after} after");
}

/// Known truth: a quiet service (a few polls a second: polls read the exact time) with a poll
/// blocked for 300 ms; 50 ms into it, the watchdog, looking every tick at the stall, is held
/// off its CPU for 100 ms: one gap more than before, and the stall is still recorded whole.
/// Before, a quiet watchdog's late looks counted nothing.
#[test]
fn a_late_look_while_the_service_is_quiet_counts_a_clock_gap() {
    let (run, before) = record_guarded("late-look", |guard| {
        let rt = multi_thread(guard, 2, None);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let task = rt.spawn(async move {
            let start = Instant::now();
            std::thread::sleep(Duration::from_millis(50));
            ready_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            std::thread::sleep(Duration::from_millis(300).saturating_sub(start.elapsed()));
        });
        ready_rx.recv().unwrap();
        let before = gaps_so_far(guard);
        hold(watchdog_tid());
        go_tx.send(()).unwrap();
        rt.block_on(task).unwrap();
        before
    });
    let after = clock_gaps(&run);
    assert!(after > before, "{before} gaps before, {after} after");
    let longest = run.stalls.iter().map(|s| s.duration_ns).max().unwrap_or(0);
    assert!(
        longest >= 250_000_000,
        "longest stall {} ms: {:#?}",
        longest / 1_000_000,
        run.stalls
    );
}
