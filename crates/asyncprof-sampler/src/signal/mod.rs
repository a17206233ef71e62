//! Every `unsafe` block of asyncprof lives below this module: the stack-capture signal
//! handler, its installation, and thin wrappers over libc.
//!
//! The handler obeys these invariants (STYLE.md §8):
//! 1. no allocation and no dropping of heap values: it writes into a slot allocated before
//!    the handler is installed (a fixed array of addresses);
//! 2. no blocking locks: the slot is claimed with one compare-and-swap; if the slot is not
//!    armed for this thread, the handler returns (counted as `sampler_busy` by the caller);
//! 3. no panics: no indexing without a check, no `unwrap`, no formatting;
//! 4. `errno` is saved on entry and restored on exit;
//! 5. everything the handler reads is initialized before `sigaction` installs it;
//! 6. a signal on a thread other than the armed target is passed to the previous handler (or
//!    ignored when there was none);
//! 7. it stores raw instruction pointers only; symbolization happens later, on the cold path;
//! 8. it is installed with `SA_SIGINFO | SA_RESTART`, the previous action is kept, and it is
//!    restored when the [`StackSampler`] is dropped.
//!
//! Stacks are walked with the system unwinder (`_Unwind_Backtrace` through the `backtrace`
//! crate), which reads DWARF call-frame information: frame pointers are not needed. With
//! glibc 2.35 or newer the unwinder finds frame tables without taking a lock
//! (`_dl_find_object`).

use std::cell::Cell;
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicUsize, Ordering::*};
use std::time::{Duration, Instant};

/// The most return addresses one sample keeps.
pub const MAX_FRAMES: usize = 128;

/// The kernel thread id of the calling thread (`gettid(2)`), or 0 off Linux.
pub fn current_tid() -> i32 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid takes no arguments, cannot fail and has no side effects.
        unsafe { libc::gettid() }
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

const IDLE: u8 = 0;
const ARMED: u8 = 1;
const WRITING: u8 = 2;
const DONE: u8 = 3;

/// The one preallocated slot the handler writes into. A process has one sampler at a time.
struct Slot {
    state: AtomicU8,
    target: AtomicI32,
    len: AtomicUsize,
    /// Index of the interrupted instruction in `ips` (`usize::MAX`: not found).
    start: AtomicUsize,
    ips: [AtomicUsize; MAX_FRAMES],
}

static SLOT: Slot = Slot {
    state: AtomicU8::new(IDLE),
    target: AtomicI32::new(0),
    len: AtomicUsize::new(0),
    start: AtomicUsize::new(usize::MAX),
    ips: [const { AtomicUsize::new(0) }; MAX_FRAMES],
};

/// The signal the handler is installed for (0: none).
static INSTALLED: AtomicI32 = AtomicI32::new(0);

/// The action that was installed before ours, as raw parts (for chaining from the handler
/// without locks): the handler address and its flags.
static PREV_HANDLER: AtomicUsize = AtomicUsize::new(0);
static PREV_FLAGS: AtomicI32 = AtomicI32::new(0);

thread_local! {
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
}

/// True while the calling thread runs asyncprof's signal handler (for allocation-counting
/// tests: an allocator can check it to prove the handler allocates nothing).
#[doc(hidden)]
pub fn in_handler() -> bool {
    IN_HANDLER.with(|f| f.get())
}

/// The signal asyncprof samples stacks with unless told otherwise: a real-time signal, so
/// that a service's own SIGPROF users (pprof, setitimer) are not disturbed.
pub fn default_signal() -> i32 {
    libc::SIGRTMIN() + 5
}

/// Why a sample could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SampleError {
    /// Another sample is in progress.
    Busy,
    /// The signal could not be sent (the thread exited).
    NoThread,
    /// The thread did not run the handler in time (it is in uninterruptible sleep, or it
    /// blocks the signal).
    Timeout,
}

/// Installs the stack-capture handler for one signal, and restores the previous action
/// when dropped.
#[derive(Debug)]
pub struct StackSampler {
    signal: i32,
    previous: Box<libc::sigaction>,
}

/// Why the handler could not be installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// A sampler is already installed in this process.
    #[error("a stack sampler is already installed (signal {0})")]
    AlreadyInstalled(i32),
    /// The signal number is not a usable real-time or user signal.
    #[error("signal {0} cannot be used for stack sampling: use SIGPROF, SIGUSR1, SIGUSR2 or a real-time signal")]
    BadSignal(i32),
    /// `sigaction` refused.
    #[error("cannot install the stack-sampling handler for signal {signal}")]
    Sigaction {
        /// The signal.
        signal: i32,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

impl StackSampler {
    /// Install the handler for `signal` (SIGPROF by default in asyncprof; configurable).
    ///
    /// # Errors
    ///
    /// [`InstallError`] when a sampler is already installed, the signal is not allowed, or
    /// `sigaction` fails.
    pub fn install(signal: i32) -> Result<Self, InstallError> {
        let allowed = signal == libc::SIGPROF
            || signal == libc::SIGUSR1
            || signal == libc::SIGUSR2
            || (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&signal);
        if !allowed {
            return Err(InstallError::BadSignal(signal));
        }
        if let Err(current) = INSTALLED.compare_exchange(0, signal, AcqRel, Acquire) {
            return Err(InstallError::AlreadyInstalled(current));
        }
        // Invariant 5: the slot is static and already initialized; reset it anyway.
        SLOT.state.store(IDLE, Release);
        // SAFETY: an all-zero sigaction is a valid value (no handler, empty mask, no flags).
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = handler as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        // SAFETY: sa_mask is a valid sigset_t owned by `action`.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: as above, zeroed is valid; sigaction fills it in.
        let mut previous: Box<libc::sigaction> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: both pointers are valid for the call; `handler` has the SA_SIGINFO signature.
        let rc = unsafe { libc::sigaction(signal, &action, &mut *previous) };
        if rc != 0 {
            INSTALLED.store(0, Release);
            return Err(InstallError::Sigaction {
                signal,
                source: std::io::Error::last_os_error(),
            });
        }
        let prev = previous.sa_sigaction;
        if prev != libc::SIG_DFL && prev != libc::SIG_IGN {
            PREV_HANDLER.store(prev, Release);
            PREV_FLAGS.store(previous.sa_flags, Release);
        } else {
            PREV_HANDLER.store(0, Release);
        }
        Ok(StackSampler { signal, previous })
    }

    /// The signal this sampler uses.
    pub fn signal(&self) -> i32 {
        self.signal
    }

    /// Capture the stack of thread `tid` of this process: signal it, wait up to `timeout`
    /// for its handler, and return the raw return addresses, innermost first.
    ///
    /// # Errors
    ///
    /// [`SampleError`] when the slot is busy, the thread is gone, or it did not answer.
    pub fn sample(&self, tid: i32, timeout: Duration) -> Result<Vec<usize>, SampleError> {
        if SLOT
            .state
            .compare_exchange(IDLE, ARMED, AcqRel, Acquire)
            .is_err()
        {
            return Err(SampleError::Busy);
        }
        SLOT.target.store(tid, Release);
        SLOT.len.store(0, Relaxed);
        // SAFETY: tgkill with our own pid, a thread id and a valid signal number.
        let rc = unsafe { libc::tgkill(libc::getpid(), tid, self.signal) };
        if rc != 0 {
            SLOT.state.store(IDLE, Release);
            return Err(SampleError::NoThread);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match SLOT.state.load(Acquire) {
                DONE => break,
                ARMED if Instant::now() >= deadline => {
                    // Take the slot back unless the handler started writing just now.
                    if SLOT
                        .state
                        .compare_exchange(ARMED, IDLE, AcqRel, Acquire)
                        .is_ok()
                    {
                        return Err(SampleError::Timeout);
                    }
                }
                _ => std::thread::yield_now(),
            }
        }
        let len = SLOT.len.load(Acquire).min(MAX_FRAMES);
        // From the interrupted instruction outwards when the handler found it: the handler's
        // own frames are not part of the sampled thread's stack.
        let start = match SLOT.start.load(Relaxed) {
            s if s < len => s,
            _ => 0,
        };
        let ips = SLOT.ips[start..len]
            .iter()
            .map(|a| a.load(Relaxed))
            .collect();
        SLOT.state.store(IDLE, Release);
        Ok(ips)
    }
}

impl Drop for StackSampler {
    fn drop(&mut self) {
        // Wait for a handler still writing (bounded: a walk is microseconds), then restore.
        let deadline = Instant::now() + Duration::from_millis(100);
        while SLOT.state.load(Acquire) == WRITING && Instant::now() < deadline {
            std::thread::yield_now();
        }
        SLOT.state.store(IDLE, Release);
        // SAFETY: `previous` is the action sigaction returned for this signal.
        unsafe { libc::sigaction(self.signal, &*self.previous, std::ptr::null_mut()) };
        INSTALLED.store(0, Release);
    }
}

/// The signal handler. See the module's invariants.
extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // Invariant 4: save errno.
    // SAFETY: __errno_location returns a valid pointer to this thread's errno.
    let errno = unsafe { *libc::__errno_location() };
    let me = current_tid();
    let mine = SLOT.target.load(Acquire) == me
        && SLOT
            .state
            .compare_exchange(ARMED, WRITING, AcqRel, Acquire)
            .is_ok();
    if mine {
        IN_HANDLER.with(|f| f.set(true));
        let pc = interrupted_pc(ctx);
        let mut start = usize::MAX;
        let mut n = 0usize;
        // SAFETY: trace_unsynchronized walks this thread's own stack; no other thread uses
        // the unwinder on our behalf, and the callback only stores into preallocated atomics.
        unsafe {
            backtrace::trace_unsynchronized(|frame| {
                if let Some(slot) = SLOT.ips.get(n) {
                    let ip = frame.ip() as usize;
                    if start == usize::MAX && pc != 0 && ip == pc {
                        start = n;
                    }
                    slot.store(ip, Relaxed);
                    n += 1;
                    true
                } else {
                    false
                }
            });
        }
        SLOT.len.store(n, Relaxed);
        SLOT.start.store(start, Relaxed);
        // Release: the sampler that sees DONE sees the addresses above.
        SLOT.state.store(DONE, Release);
        IN_HANDLER.with(|f| f.set(false));
    } else {
        chain(sig, info, ctx);
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// The instruction the signal interrupted, from the handler's context (0 when unknown).
fn interrupted_pc(ctx: *mut libc::c_void) -> usize {
    if ctx.is_null() {
        return 0;
    }
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        // SAFETY: with SA_SIGINFO the kernel passes a valid ucontext_t as the third argument.
        let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
        uc.uc_mcontext.gregs[libc::REG_RIP as usize] as usize
    }
    #[cfg(all(target_os = "linux", target_arch = "aarch64"))]
    {
        // SAFETY: as above.
        let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
        uc.uc_mcontext.pc as usize
    }
    #[cfg(not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))]
    {
        0
    }
}

/// Pass a signal that was not ours to the handler installed before us.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = PREV_HANDLER.load(Acquire);
    if prev == 0 {
        return;
    }
    if PREV_FLAGS.load(Acquire) & libc::SA_SIGINFO != 0 {
        // SAFETY: `prev` was installed with SA_SIGINFO, so it has this signature.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(prev) };
        f(sig, info, ctx);
    } else {
        // SAFETY: `prev` was installed without SA_SIGINFO, so it takes the signal only.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(prev) };
        f(sig);
    }
}

/// Kernel state of one thread of this process, read from `/proc/self/task/<tid>/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ThreadState {
    /// The scheduler state letter: `R` running, `S` sleeping, `D` uninterruptible, ….
    pub state: char,
    /// CPU time used so far, in nanoseconds (from `schedstat`; from `stat`'s clock ticks,
    /// 10 ms resolution, where `schedstat` is missing).
    pub cpu_ns: u64,
    /// The system call the thread is blocked in, if any.
    pub syscall: Option<u64>,
}

/// Read the state of thread `tid` of this process. `None` when the thread is gone.
pub fn thread_state(tid: i32) -> Option<ThreadState> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // utime and stime are fields 14 and 15 of stat; after the ')' they are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let cpu_ns = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or_else(|| (utime + stime) * 1_000_000_000 / clock_ticks_per_second());
    let syscall = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
        .ok()
        .and_then(|s| {
            let first = s.split_whitespace().next()?;
            first.parse::<u64>().ok()
        });
    Some(ThreadState {
        state,
        cpu_ns,
        syscall,
    })
}

/// How long thread `tid` of this process has waited on a run queue (runnable, but another
/// thread had the CPU), in nanoseconds, from `schedstat`. `None` where it is not available.
pub fn run_delay_ns(tid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    s.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time this whole process has used so far, every thread included
/// (`CLOCK_PROCESS_CPUTIME_ID`), for benchmarks that charge an instrumentation for its own
/// threads. `None` if the clock cannot be read.
pub fn process_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// Hand memory the allocator holds free back to the kernel (glibc's `malloc_trim`), after a
/// large cache was dropped. Elsewhere a no-op. It takes each malloc arena's lock in turn, so
/// call it rarely, and never from a signal handler.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; glibc documents it as safe to call at any time
    // outside signal handlers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Clock ticks per second of `/proc`'s `stat` times.
fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf with a valid name has no side effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// Send `signal` to process `pid` (`kill(2)`), for the CLI to pass Ctrl-C on to the program it
/// runs and to stop it politely before killing it.
///
/// # Errors
///
/// The OS error: no such process, or not permitted.
pub fn send_signal(pid: u32, signal: i32) -> std::io::Result<()> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: kill takes plain integers; a positive pid names one process.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
