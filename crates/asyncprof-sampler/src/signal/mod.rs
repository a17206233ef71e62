//! Every `unsafe` block of asyncprof lives below this module: the stack-copy signal handler,
//! its installation, the copy of a thread's stack from outside it (`remote`), the module
//! tables the unwinder reads (`modules`), files removed at exit (`exit`), and thin wrappers
//! over libc.
//!
//! How a stalled thread's stack is taken depends on what the thread is doing, and the rule is
//! that the service must never notice:
//!
//! - **Off CPU** (asleep in a system call): no signal. The kernel gives its saved stack
//!   pointer and program counter in `/proc/self/task/<tid>/syscall`; its stack is copied
//!   from the watchdog's thread (a read of `/proc/self/mem`) and the copy
//!   kept only if the thread did not run meanwhile (the same syscall line and the same
//!   `schedstat` run count before and after). A signal here could make the system call fail
//!   with `EINTR`: Linux never restarts socket calls with timeouts, `poll`, `epoll_wait`,
//!   `nanosleep` and others after a handler ran, whatever `SA_RESTART` says.
//! - **On CPU** (no system call to interrupt): a signal to that thread only, whose handler
//!   copies its registers and raw stack bytes into a preallocated slot. It does not unwind.
//!   The thread is signalled only after it stayed awake for [`MIN_ON_CPU`] (no voluntary
//!   context switch, on CPU at least half the time), so a thread that alternates short bursts of CPU with blocking
//!   calls is never signalled (it is copied from outside while it sleeps). A thread on CPU
//!   inside a system call (a read copying a large file from the page cache, which a signal
//!   does not interrupt) runs the handler only as the call returns: the slot stays armed for
//!   it ([`SampleError::Pending`]) and the stack it copies then, the call's return with the
//!   caller under it, is collected later ([`StackSampler::take_pending`]).
//!
//! Both copies are unwound on the watchdog's thread with DWARF call-frame information
//! (`crate::unwind`, `framehop`).
//!
//! The handler obeys these invariants (STYLE.md §8):
//! 1. no allocation and no dropping of heap values: it writes into a static slot (registers
//!    and a fixed stack buffer);
//! 2. no blocking locks: the slot is claimed with one compare-and-swap; if the slot is not
//!    armed for this thread, the handler returns (counted as `sampler_busy` by the caller);
//! 3. no panics: no indexing without a check, no `unwrap`, no formatting;
//! 4. `errno` is saved on entry and restored on exit;
//! 5. everything the handler reads is initialized before `sigaction` installs it;
//! 6. a signal the sampler did not send (it sends its own with `rt_tgsigqueueinfo`, carrying
//!    a value of its own) is passed to the previous handler (or ignored when there was none),
//!    whatever the slot's state; one of the sampler's that finds the slot not armed for its
//!    thread (late: its sample was given up) is dropped;
//! 7. it stores raw registers and stack bytes (one `pread` of `/proc/self/mem`, opened
//!    before the handler is installed, which stops at an unmapped page instead of faulting;
//!    the stack's end is not known in the handler) and numbers read with `clock_gettime`;
//!    unwinding and symbolization happen later, on the cold path;
//! 8. it is installed with `SA_SIGINFO | SA_RESTART` (not `SA_ONSTACK`: a signal nested in
//!    it would run on the small alternate stack too), the previous action is kept, and it is restored when the [`StackSampler`] is dropped, unless the service has
//!    installed its own since; pending signals of ours are discarded first (`SIG_IGN`);
//! 9. beside the registers and stack it stores the thread's CPU time at its start, how long
//!    it ran, and what the task probe ([`set_task_probe`]), when one is set, returns on the
//!    sampled thread; the probe's contract is that of this list (read with one atomic load
//!    of a `OnceLock`).
//!
//! The residual race: a thread that computed for [`MIN_ON_CPU`] may enter a blocking system
//! call in the microseconds between the last look and the signal's arrival. The handler
//! detects a system call that returned `EINTR` just before it ran and counts it
//! ([`interrupted_syscalls`]); `benches/sample_cost.rs` measures the rate.

pub(crate) mod exit;
pub(crate) mod modules;
pub(crate) mod remote;

use std::cell::{Cell, UnsafeCell};
use std::ops::Range;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, AtomicUsize, Ordering::*};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::procfs::{self, thread_state, Where};
use crate::unwind::{Regs, StackWalker};

/// The most return addresses one sample keeps.
pub const MAX_FRAMES: usize = 128;

/// Bytes of stack one sample copies, from the stack pointer up: deep enough for a tokio
/// worker's frames from its thread start to the poll and the call that stalls it.
pub const STACK_BYTES: usize = 256 * 1024;

/// A thread on CPU is signalled only after it stayed awake this long (no voluntary context
/// switch, and on CPU at least half the time): a thread that alternates short bursts of CPU with blocking
/// system calls would otherwise be likely to enter one just as the signal arrives, and a
/// call such as `poll` or a socket read with a timeout then fails with `EINTR`. Such a
/// thread is off CPU most of the time, and its stack is copied from outside then.
pub const MIN_ON_CPU: Duration = Duration::from_micros(500);

/// Threads whose time on CPU the sampler follows at once (the oldest is forgotten first).
const ON_CPU_MARKS: usize = 64;

/// How long a signal that was not answered in time stays armed for its thread
/// ([`SampleError::Pending`]) while other threads' signal samples wait for the slot: a thread
/// computing inside one system call answers when it returns, a copy of a large file from the
/// page cache tens of milliseconds later.
const PENDING_MAX: Duration = Duration::from_millis(200);

/// How long a stack a pending signal's handler copied waits to be collected
/// ([`StackSampler::take_pending`]) before another thread's signal sample frees the slot.
const ANSWERED_MAX: Duration = Duration::from_secs(1);

/// How long freeing the slot waits for a handler that is copying into it (microseconds,
/// unless its thread lost its core mid-copy): past it, the slot is freed later.
const WRITING_WAIT: Duration = Duration::from_millis(10);

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
    pc: AtomicU64,
    sp: AtomicU64,
    fp: AtomicU64,
    lr: AtomicU64,
    /// Stack bytes copied into `stack`.
    len: AtomicUsize,
    /// How long the handler ran.
    handler_ns: AtomicU64,
    /// The sampled thread's CPU time when the handler began (its CPU-time clock, as
    /// `StackSampler::sent_cpu_ns`).
    entered_cpu_ns: AtomicU64,
    /// What the task probe returned (0 without one).
    task: AtomicU64,
    /// What the poll probe returned, plus one (0: no probe).
    poll: AtomicU64,
    /// The target thread's stack, when known (0, 0: not known): the handler copies no
    /// further than its top.
    stack_lo: AtomicU64,
    stack_hi: AtomicU64,
    /// Written only by the handler between ARMED and DONE, read only by the sampler between
    /// DONE and IDLE: the state machine makes the two exclusive.
    stack: UnsafeCell<[u8; STACK_BYTES]>,
}

// SAFETY: `stack` is accessed only under the state machine described on the field; every
// other field is atomic.
unsafe impl Sync for Slot {}

static SLOT: Slot = Slot {
    state: AtomicU8::new(IDLE),
    target: AtomicI32::new(0),
    pc: AtomicU64::new(0),
    sp: AtomicU64::new(0),
    fp: AtomicU64::new(0),
    lr: AtomicU64::new(0),
    len: AtomicUsize::new(0),
    handler_ns: AtomicU64::new(0),
    entered_cpu_ns: AtomicU64::new(0),
    task: AtomicU64::new(0),
    poll: AtomicU64::new(0),
    stack_lo: AtomicU64::new(0),
    stack_hi: AtomicU64::new(0),
    stack: UnsafeCell::new([0; STACK_BYTES]),
};

/// Called by the handler on the sampled thread ([`set_task_probe`]).
static TASK_PROBE: OnceLock<fn() -> u64> = OnceLock::new();

/// Have the signal handler call `probe` on each thread it samples and keep what it returns
/// in [`Sample::task`]: the id of the task the thread is polling at that instant, say (0:
/// none). `probe` runs inside the signal handler, so it must be async-signal-safe: no
/// allocation, no lock, no panic (a read of a thread-local cell the thread has initialized
/// already). One probe per process: false when one was set already.
pub fn set_task_probe(probe: fn() -> u64) -> bool {
    TASK_PROBE.set(probe).is_ok()
}

/// Called by the handler on the sampled thread ([`set_poll_probe`]).
static POLL_PROBE: OnceLock<fn() -> u64> = OnceLock::new();

/// Have the signal handler call `probe` on each thread it samples and hand what it returns to
/// the check of [`StackSampler::sample_in_while`]: the thread's own record of the poll it is
/// in at that instant, say, so that the check judges the moment the stack was taken, not
/// the moment the sampler saw the answer (a sampler that waited for a CPU sees it late).
/// `probe` runs inside the signal handler, under the rules of [`set_task_probe`]. One probe
/// per process: false when one was set already.
pub fn set_poll_probe(probe: fn() -> u64) -> bool {
    POLL_PROBE.set(probe).is_ok()
}

/// System calls the handler found interrupted with `EINTR` just before it ran.
static INTERRUPTED_SYSCALLS: AtomicU64 = AtomicU64::new(0);

/// Thread `tid`'s CPU time so far, in nanoseconds, exact: its CPU-time clock, one system
/// call (no file read), brought up to date by the kernel when read. The same value at two
/// reads means the thread did not run between them. `None` when the thread is gone.
pub fn thread_cpu_ns(tid: i32) -> Option<u64> {
    remote::cpu_ns(tid)
}

/// How many times the handler ran just after the sampled thread's system call returned
/// `EINTR` (the residual race: the thread entered a blocking call after it was seen on CPU
/// and before the signal arrived). Counted over the life of the process.
pub fn interrupted_syscalls() -> u64 {
    INTERRUPTED_SYSCALLS.load(Relaxed)
}

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
    /// The thread is gone.
    NoThread,
    /// The thread on CPU did not run the handler in time: it computes inside a system call
    /// (a read that copies a large file from the page cache), which a signal does not
    /// interrupt, or waits for a core. The signal stays armed: the handler copies the stack
    /// when the thread next returns to its own code (as the call returns, or where it was
    /// preempted), and a later sample of the thread or [`StackSampler::take_pending`]
    /// collects it ([`Sample::late`]). Until then (at most 200 ms unanswered, 1 s
    /// uncollected), other threads' signal samples are [`SampleError::Busy`].
    Pending,
    /// The thread is on CPU and the sampler has no signal (signals are off).
    NoSignal,
    /// The thread is on CPU but has not stayed there for [`MIN_ON_CPU`] without sleeping
    /// since it was first seen (with [`StackSampler::watch`] or a sample): it is not signalled
    /// yet. A later sample may take it.
    NotYet,
    /// The thread ran while its stack was copied from outside: the copy was discarded.
    Inconsistent,
    /// The thread on CPU blocks the sampling signal, or one is still pending for it: no
    /// other is sent.
    Blocked,
    /// The thread's registers or stack could not be read, or no frame could be unwound.
    Unreadable,
    /// The caller's check ([`StackSampler::sample_in_while`]) said, the moment the stack was
    /// copied, that the thread had moved on: the copy was discarded, not unwound.
    Moved,
}

/// Where an armed signal stands ([`StackSampler::standing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Its handler ran or is copying.
    Answered,
    /// Queued for the thread, which does not block it.
    Queued,
    /// Queued for the thread, which blocks it.
    Masked,
    /// Off the queue and blocked: its handler is running, before it claims the slot.
    Delivered,
    /// Neither queued nor blocked, past [`DELIVERY_WAIT`] (or the thread asleep, or gone):
    /// taken by another handler, or the thread exited.
    Lost,
}

/// How long a signal off the thread's queue and not blocked, its handler not run yet, is given
/// to reach its handler before it counts as lost (the kernel's delivery, when the thread
/// loses its CPU in it). Waited on the watchdog's thread, once for a signal that is lost.
const DELIVERY_WAIT: Duration = Duration::from_millis(2);

/// How a sample was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Capture {
    /// Copied from outside while the thread was off CPU, in system call `syscall` (`None`:
    /// preempted outside one). No signal was sent.
    Frozen {
        /// The system call number.
        syscall: Option<u64>,
    },
    /// Copied by the signal handler while the thread was on CPU.
    Signal,
}

/// Where a signal not answered in time stands ([`StackSampler::pending`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// Its handler has not run; the signal is queued for the thread, which does not block
    /// it: the handler runs as soon as the thread comes back to its own code. Until then the
    /// thread has not run its own code since the signal was sent: it is inside one system
    /// call, or waits for a CPU. Also a signal the kernel has taken off the queue on its way
    /// to the handler, which then runs within moments.
    Unanswered,
    /// Its handler ran (or is copying): [`StackSampler::take_pending`] has the stack.
    Answered,
    /// Not answered, and not sure to be as the thread comes back: it blocks the signal, or
    /// the signal is lost (neither queued nor on its way to the handler: taken by another
    /// handler).
    HeldBack,
}

/// One stack: the stopped instruction first, then return addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sample {
    /// The addresses, innermost first.
    pub ips: Vec<usize>,
    /// How the stack was taken.
    pub capture: Capture,
    /// Bytes of stack copied.
    pub stack_bytes: usize,
    /// How long the signal handler ran on the sampled thread, in nanoseconds (what the
    /// sample cost that thread); 0 for a stack copied from outside.
    pub handler_ns: u64,
    /// What the task probe ([`set_task_probe`]) returned on the sampled thread when the
    /// handler ran; 0 without a probe, and for a stack copied from outside.
    pub task: u64,
    /// Taken by a signal not answered in time ([`SampleError::Pending`]): the stack is of the
    /// moment the thread next returned to its own code, not of the sample's call.
    pub late: bool,
    /// The CPU time the sampled thread used between its signal's sending and the handler's
    /// start, in nanoseconds; 0 for a stack copied from outside. A thread in its own code takes
    /// a signal through an interrupt, tens of microseconds after it was sent (18–50 µs on a
    /// 2-core virtual machine); one inside a system call only as the call returns, so a
    /// handler that began after more CPU time than a short call takes, its stack starting in
    /// the call's wrapper, shows the thread computed that long in the kernel. CPU time, not
    /// wall time: a thread that waited for a core meanwhile used none.
    pub answer_cpu_ns: u64,
}

/// A thread seen on CPU: its CPU time and voluntary context switches then, and when.
#[derive(Debug, Clone, Copy)]
struct OnCpu {
    tid: i32,
    cpu_ns: u64,
    switches: u64,
    since: Instant,
}

/// Takes the stacks of other threads of this process: from outside while they are off CPU,
/// with a signal (if one is installed) while they are on CPU. Restores the signal's previous
/// action when dropped.
#[derive(Debug)]
pub struct StackSampler {
    signal: Option<(i32, Box<libc::sigaction>)>,
    walker: StackWalker,
    /// The stack of the thread being sampled, when the caller knows it.
    stack: Option<Range<u64>>,
    buf: Vec<u8>,
    /// Threads seen on CPU (at most [`ON_CPU_MARKS`]).
    on_cpu: Vec<OnCpu>,
    /// The thread whose signal is still armed ([`SampleError::Pending`]), and when it was
    /// sent.
    pending: Option<(i32, Instant)>,
    /// The target's CPU time just before the last signal was armed (its CPU-time clock, which
    /// the handler reads on the thread itself).
    sent_cpu_ns: u64,
    /// The pending signal (when it was sent) found neither queued nor blocked for the whole
    /// of [`DELIVERY_WAIT`]: lost, and not waited for again.
    delivery_waited: Cell<Option<Instant>>,
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
    /// `/proc/self/mem`, which the handler copies stacks with, cannot be opened (no `/proc`,
    /// or a sandbox that hides it): no signal is installed, since it could copy nothing.
    #[error("cannot open /proc/self/mem to copy stacks with")]
    Memory,
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
    /// A sampler that never sends a signal: threads off CPU still get stacks, threads on
    /// CPU get [`SampleError::NoSignal`].
    pub fn without_signal() -> Self {
        // Invariant 5: the memory file the handler reads is open before any handler is
        // installed. Without it, samples fail (counted) and nothing else changes.
        remote::open_memory();
        StackSampler {
            signal: None,
            walker: StackWalker::default(),
            stack: None,
            buf: Vec::new(),
            on_cpu: Vec::new(),
            pending: None,
            sent_cpu_ns: 0,
            delivery_waited: Cell::new(None),
        }
    }

    /// Install the handler for `signal` (asyncprof's default is [`default_signal`]).
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
        // Invariant 5: the slot is static and already initialized; reset it anyway. The
        // memory file the handler reads is opened now, before the handler is installed: without
        // it the handler could copy nothing, and a signal would be a risk for nothing.
        reclaim_slot();
        if !remote::open_memory() {
            INSTALLED.store(0, Release);
            return Err(InstallError::Memory);
        }
        // SAFETY: as above, zeroed is valid; sigaction fills it in.
        let mut previous: Box<libc::sigaction> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: a null new action only reads the current one into `previous`.
        let rc = unsafe { libc::sigaction(signal, std::ptr::null(), &mut *previous) };
        if rc != 0 {
            INSTALLED.store(0, Release);
            return Err(InstallError::Sigaction {
                signal,
                source: std::io::Error::last_os_error(),
            });
        }
        // Invariant 5 again: the action to chain to is known before the handler can run.
        let prev = previous.sa_sigaction;
        if prev != libc::SIG_DFL && prev != libc::SIG_IGN {
            PREV_FLAGS.store(previous.sa_flags, Release);
            PREV_HANDLER.store(prev, Release);
        } else {
            PREV_HANDLER.store(0, Release);
        }
        // SAFETY: an all-zero sigaction is a valid value (no handler, empty mask, no flags).
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = handler as *const () as usize;
        // No SA_ONSTACK: on the small alternate stack std gives its threads, another signal
        // arriving during our handler (a CPU profiler's SIGPROF, whose handler has a frame of
        // several KiB) would run on that stack too and overflow it.
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        // SAFETY: sa_mask is a valid sigset_t owned by `action`.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: a valid action whose handler has the SA_SIGINFO signature.
        let rc = unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) };
        if rc != 0 {
            PREV_HANDLER.store(0, Release);
            INSTALLED.store(0, Release);
            return Err(InstallError::Sigaction {
                signal,
                source: std::io::Error::last_os_error(),
            });
        }
        let mut sampler = StackSampler::without_signal();
        sampler.signal = Some((signal, previous));
        Ok(sampler)
    }

    /// The signal this sampler uses (0: none).
    pub fn signal(&self) -> i32 {
        self.signal.as_ref().map_or(0, |(s, _)| *s)
    }

    /// Capture the stack of thread `tid` of this process. A thread off CPU is copied from
    /// outside, without a signal; a thread on CPU is signalled (if this sampler has a signal)
    /// and its handler waited for up to `timeout` ([`SampleError::Pending`] past it: the
    /// handler's stack is then returned by a later sample of the same thread or by
    /// [`StackSampler::take_pending`]).
    ///
    /// # Errors
    ///
    /// [`SampleError`] says why no stack was taken.
    pub fn sample(&mut self, tid: i32, timeout: Duration) -> Result<Sample, SampleError> {
        self.sample_in(tid, None, timeout)
    }

    /// [`sample`](Self::sample), knowing the thread's stack (as [`current_stack`] gave it on
    /// that thread): no copy goes past its top, so a sample copies a few KiB instead of
    /// [`STACK_BYTES`]. A range that is wrong (stale) costs only a shorter or longer copy.
    ///
    /// # Errors
    ///
    /// [`SampleError`] says why no stack was taken.
    pub fn sample_in(
        &mut self,
        tid: i32,
        stack: Option<Range<u64>>,
        timeout: Duration,
    ) -> Result<Sample, SampleError> {
        self.sample_in_while(tid, stack, timeout, &|_| true)
    }

    /// [`sample_in`](Self::sample_in), keeping a new stack only when `current` says so the
    /// moment it is copied (its signal's handler answered; for a copy from outside, asked
    /// while the thread is proven asleep through the copy, or right after it),
    /// before it is unwound: unwinding takes up to milliseconds (the first of a process reads
    /// the binary's unwind tables), and what the caller checks (that the thread is still in
    /// the poll it sampled) can have changed by then, the copy taken in it. For a stack a
    /// signal took with a poll probe set ([`set_poll_probe`]), `current` gets what the probe
    /// returned in the handler, on the thread, as it took the stack: the caller can judge that
    /// instant, however late it saw the answer; otherwise `None`. A late stack
    /// ([`Sample::late`]) is returned without the check.
    ///
    /// # Errors
    ///
    /// [`SampleError`] says why no stack was taken; [`SampleError::Moved`] when `current`
    /// said no.
    pub fn sample_in_while(
        &mut self,
        tid: i32,
        stack: Option<Range<u64>>,
        timeout: Duration,
        current: &dyn Fn(Option<u64>) -> bool,
    ) -> Result<Sample, SampleError> {
        self.stack = stack.filter(|r| r.start < r.end);
        if self.is_pending(tid) {
            if let Some((_, answered)) = self.take_pending() {
                return answered;
            }
            if self.pending_is_dead(tid) {
                self.cancel_pending();
            }
        }
        match procfs::locate(tid) {
            Where::Frozen { nr, sp, pc, line } => {
                self.sample_frozen(tid, nr, sp, pc, &line, current)
            }
            Where::Running if self.signal.is_none() => Err(SampleError::NoSignal),
            // Its signal is on its way still: no other is sent.
            Where::Running if self.is_pending(tid) => Err(SampleError::Pending),
            Where::Running => {
                // Only a thread that stayed awake (on CPU, or runnable and waiting for one)
                // since it was first seen there, at least MIN_ON_CPU ago, is signalled: it is
                // computing, not alternating short bursts with blocking calls.
                let (Some(cpu), Some(status)) = (remote::cpu_ns(tid), procfs::status(tid)) else {
                    return Err(SampleError::NoThread);
                };
                match self.on_cpu_mark(tid, cpu, status.voluntary_switches) {
                    Some(since) if since.elapsed() >= MIN_ON_CPU => {
                        // One more look, the moment before the signal: a thread that went to
                        // sleep meanwhile is copied from outside instead.
                        match procfs::locate(tid) {
                            Where::Running => self.sample_signal(tid, status, timeout, current),
                            Where::Frozen { nr, sp, pc, line } => {
                                self.sample_frozen(tid, nr, sp, pc, &line, current)
                            }
                            Where::Unknown => Err(SampleError::NoThread),
                        }
                    }
                    _ => Err(SampleError::NotYet),
                }
            }
            // The thread is gone, or the kernel does not say where it is: without knowing it
            // is outside a system call, it is never signalled.
            Where::Unknown => match thread_state(tid) {
                None => Err(SampleError::NoThread),
                Some(_) => Err(SampleError::Unreadable),
            },
        }
    }

    /// Note that thread `tid` is about to be sampled: if it is on CPU now, the time it then
    /// stays awake counts towards [`MIN_ON_CPU`]. Cheap: a few small `/proc` reads and a
    /// clock read; no signal.
    pub fn watch(&mut self, tid: i32) {
        if self.signal.is_some() && procfs::locate(tid) == Where::Running {
            if let (Some(cpu), Some(st)) = (remote::cpu_ns(tid), procfs::status(tid)) {
                self.on_cpu_mark(tid, cpu, st.voluntary_switches);
            }
        }
    }

    /// Since when thread `tid` has stayed awake, given its CPU time and voluntary context
    /// switches now: `None` when this is the first look at it, or when it slept since the
    /// mark (a voluntary switch, or less CPU than half the time): the mark starts again.
    fn on_cpu_mark(&mut self, tid: i32, cpu_ns: u64, switches: u64) -> Option<Instant> {
        let now = Instant::now();
        let fresh = OnCpu {
            tid,
            cpu_ns,
            switches,
            since: now,
        };
        if let Some(m) = self.on_cpu.iter_mut().find(|m| m.tid == tid) {
            let wall = now.saturating_duration_since(m.since).as_nanos() as u64;
            let computed = cpu_ns.saturating_sub(m.cpu_ns);
            // A thread preempted by others still computes; one that slept does not. Half the
            // time on CPU allows two busy threads per core beside it.
            if m.switches == switches
                && (wall < MIN_ON_CPU.as_nanos() as u64 || computed * 2 >= wall)
            {
                return Some(m.since);
            }
            *m = fresh;
            return None;
        }
        if self.on_cpu.len() >= ON_CPU_MARKS {
            self.on_cpu.remove(0);
        }
        self.on_cpu.push(fresh);
        None
    }

    /// How many bytes to copy from stack pointer `sp`: to the stack's top when it is known,
    /// at most [`STACK_BYTES`].
    fn copy_len(&self, sp: u64) -> usize {
        match &self.stack {
            Some(r) if r.contains(&sp) => ((r.end - sp) as usize).min(STACK_BYTES),
            _ => STACK_BYTES,
        }
    }

    /// Copy the stack of a thread that is off CPU, and keep it if the thread did not run
    /// while it was copied. The caller's check is asked before the copy when the thread is
    /// proven asleep from then until the copy is checked: found asleep in the same call after
    /// its count of times put on a CPU was read, that count unchanged at the end (a thread
    /// running when the count is read can run on without adding to it, so being found asleep
    /// after it is what makes it count). A check asked after the copy, by a caller that may
    /// lose its CPU in between, could see a later moment than the copy's. Without the count,
    /// the check is asked after the copy.
    fn sample_frozen(
        &mut self,
        tid: i32,
        nr: Option<u64>,
        sp: u64,
        pc: u64,
        line: &str,
        current: &dyn Fn(Option<u64>) -> bool,
    ) -> Result<Sample, SampleError> {
        let runs = procfs::run_count(tid);
        let proven = runs.is_some()
            && matches!(procfs::locate(tid), Where::Frozen { line: l, .. } if l == line);
        if proven && !current(None) {
            return Err(SampleError::Moved);
        }
        if self.buf.len() < STACK_BYTES {
            self.buf.resize(STACK_BYTES, 0);
        }
        let want = self.copy_len(sp);
        let n = remote::copy_own_memory(sp, &mut self.buf[..want]);
        let still = match procfs::locate(tid) {
            Where::Frozen { line: l, .. } => l == line,
            _ => false,
        };
        if !still || procfs::run_count(tid) != runs {
            return Err(SampleError::Inconsistent);
        }
        if n < 16 {
            return Err(SampleError::Unreadable);
        }
        if !proven && !current(None) {
            return Err(SampleError::Moved);
        }
        let regs = Regs {
            pc,
            sp,
            fp: None,
            lr: None,
        };
        let capture = Capture::Frozen { syscall: nr };
        walked(&mut self.walker, regs, &self.buf[..n], capture, 0)
    }

    /// Signal a thread on CPU; its handler copies registers and stack into the slot.
    fn sample_signal(
        &mut self,
        tid: i32,
        status: procfs::Status,
        timeout: Duration,
        current: &dyn Fn(Option<u64>) -> bool,
    ) -> Result<Sample, SampleError> {
        let Some((signal, _)) = self.signal.as_ref() else {
            return Err(SampleError::NoSignal);
        };
        let signal = *signal;
        // A thread that blocks the signal, or has one pending already (an earlier sample's,
        // given up before it ran), is not sent another: it would queue up, and reach the
        // service later through a signalfd, sigwait or a masked ppoll.
        if status.holds(signal) {
            return Err(SampleError::Blocked);
        }
        // The service replaced our handler: a signal would go to its handler instead.
        if !our_handler_installed(signal) {
            return Err(SampleError::NoSignal);
        }
        // Another thread's signal is pending: the slot is its, until that signal is answered
        // and collected, or given up.
        if let Some((_, sent)) = self.pending {
            let answered = SLOT.state.load(Acquire) == DONE;
            let age = sent.elapsed();
            if age < PENDING_MAX || (answered && age < ANSWERED_MAX) {
                return Err(SampleError::Busy);
            }
            self.cancel_pending();
        }
        // With no signal pending, a slot not IDLE was left by a given-up signal's handler (or
        // by a sampler before this one): free it, unless a handler is copying into it now.
        if !reclaim_slot() {
            return Err(SampleError::Busy);
        }
        // The thread's CPU time before the signal can be taken (a clock read, about a
        // microsecond; unknown: no sample counts as late on CPU).
        self.sent_cpu_ns = remote::cpu_ns(tid).unwrap_or(u64::MAX);
        // The slot is IDLE and no handler can claim it before it is armed: set it up, then
        // arm it. Release: the handler that claims the armed slot (AcqRel) sees the target
        // and range.
        SLOT.len.store(0, Relaxed);
        let (lo, hi) = match &self.stack {
            Some(r) => (r.start, r.end),
            None => (0, 0),
        };
        SLOT.stack_lo.store(lo, Relaxed);
        SLOT.stack_hi.store(hi, Relaxed);
        SLOT.target.store(tid, Relaxed);
        if SLOT
            .state
            .compare_exchange(IDLE, ARMED, AcqRel, Acquire)
            .is_err()
        {
            return Err(SampleError::Busy);
        }
        // No look at the thread between the arming and the signal: a last read of its state
        // here (a /proc read, tens of µs) was measured to widen the window in which it can
        // enter a blocking call before the signal lands (EINTR in `sample_cost`'s race: 1.5%
        // of signals against 0.55% without it).
        let sent = Instant::now();
        let rc = send_ours(tid, signal);
        if rc != 0 {
            // No signal went out. A given-up signal's handler may hold the slot for a moment
            // (WRITING, then ARMED again): not overwritten; `reclaim_slot` frees it later.
            let _ = SLOT.state.compare_exchange(ARMED, IDLE, AcqRel, Acquire);
            return Err(SampleError::NoThread);
        }
        let deadline = Instant::now() + timeout;
        let mut spins = 0u32;
        loop {
            match SLOT.state.load(Acquire) {
                DONE => break,
                ARMED if Instant::now() >= deadline => {
                    // The signal stays armed for the thread: its handler runs when the thread
                    // next returns to its own code.
                    self.pending = Some((tid, sent));
                    return Err(SampleError::Pending);
                }
                // A handler runs within microseconds on a thread that is on CPU; past that,
                // the thread waits for a CPU, and spinning would take one from it.
                _ if spins < 200 => {
                    spins += 1;
                    std::thread::yield_now();
                }
                _ => std::thread::sleep(Duration::from_micros(50)),
            }
        }
        let probed = SLOT.poll.load(Relaxed).checked_sub(1);
        if !current(probed) {
            // DONE: the handler is finished with the slot, which only this sampler arms.
            SLOT.state.store(IDLE, Release);
            return Err(SampleError::Moved);
        }
        self.collect(false)
    }

    /// Whether the signal sent to thread `tid` is still armed, not answered yet
    /// ([`SampleError::Pending`]).
    pub fn is_pending(&self, tid: i32) -> bool {
        self.pending_sent(tid).is_some()
    }

    /// When the signal pending for thread `tid` ([`SampleError::Pending`]) was sent (each
    /// signal sent has its own); `None` when none is pending for it. No `/proc` read.
    pub fn pending_sent(&self, tid: i32) -> Option<Instant> {
        self.pending
            .filter(|(t, _)| *t == tid)
            .map(|(_, sent)| sent)
    }

    /// The signal pending for thread `tid` ([`SampleError::Pending`]): when it was sent (each
    /// signal sent has its own) and where it stands. `None` when none is pending for it. A
    /// few small `/proc` reads; for a signal off the thread's queue and not blocked, its
    /// handler not run, for up to 2 ms, once for each signal.
    pub fn pending(&self, tid: i32) -> Option<(Instant, Pending)> {
        let sent = self.pending_sent(tid)?;
        if SLOT.state.load(Acquire) != ARMED {
            return Some((sent, Pending::Answered));
        }
        let state = match self.standing(tid) {
            Standing::Answered => Pending::Answered,
            Standing::Queued | Standing::Delivered => Pending::Unanswered,
            Standing::Masked | Standing::Lost => Pending::HeldBack,
        };
        Some((sent, state))
    }

    /// Where the signal armed for thread `tid` stands, from the slot and the thread's
    /// `status` (a few small `/proc` reads). One reading for [`pending`](Self::pending) and
    /// [`pending_is_dead`](Self::pending_is_dead). Between the kernel taking the signal off
    /// the thread's queue and its handler claiming the slot, the signal shows nowhere for a
    /// moment (microseconds, or longer when the thread loses its CPU right then), as for a
    /// signal lost to another handler: a runnable thread is given that moment
    /// ([`DELIVERY_WAIT`]) before its signal counts as lost.
    fn standing(&self, tid: i32) -> Standing {
        let signal = self.signal();
        let sent = self.pending.map(|(_, sent)| sent);
        // Waited for once: a lost signal costs the watchdog one wait, not one at every look.
        let wait = if sent.is_some() && self.delivery_waited.get() == sent {
            Duration::ZERO
        } else {
            DELIVERY_WAIT
        };
        let deadline = Instant::now() + wait;
        loop {
            let status = procfs::status(tid);
            // The handler may have run during the read (the signal no longer queued): the
            // slot says so after it.
            if SLOT.state.load(Acquire) != ARMED {
                return Standing::Answered;
            }
            let Some(st) = status else {
                return Standing::Lost;
            };
            match (st.queued(signal), st.blocks(signal)) {
                (true, false) => return Standing::Queued,
                (true, true) => return Standing::Masked,
                // Taken off the queue, and blocked while its handler runs (the handler is
                // installed without SA_NODEFER): about to claim the slot.
                (false, true) => return Standing::Delivered,
                (false, false) if !st.runnable => return Standing::Lost,
                (false, false) if Instant::now() >= deadline => {
                    self.delivery_waited.set(sent);
                    return Standing::Lost;
                }
                (false, false) => std::thread::sleep(Duration::from_micros(50)),
            }
        }
    }

    /// The thread whose signal was not answered in time ([`SampleError::Pending`]) and its
    /// stack, once its handler ran: taken where the thread returned to its own code (a system
    /// call's return). `None` while it has not run, or when no signal is pending.
    pub fn take_pending(&mut self) -> Option<(i32, Result<Sample, SampleError>)> {
        let (tid, _) = self.pending?;
        match SLOT.state.load(Acquire) {
            DONE => {}
            // The handler is copying (microseconds): wait for it.
            WRITING => {
                let deadline = Instant::now() + WRITING_WAIT;
                while SLOT.state.load(Acquire) == WRITING && Instant::now() < deadline {
                    std::thread::yield_now();
                }
                if SLOT.state.load(Acquire) != DONE {
                    return None;
                }
            }
            _ => return None,
        }
        self.pending = None;
        Some((tid, self.collect(true)))
    }

    /// Whether the signal pending for thread `tid`, not answered, never will be: the thread
    /// is gone, or the signal is no longer queued for it while the slot is still armed (taken
    /// by the service's own handler, installed since, or lost to a given-up signal's handler
    /// that held the slot for a moment). Its age does not count here: a thread inside a read
    /// of a gigabyte answers after hundreds of milliseconds, and its own stall waits for it
    /// (only another thread's sample gives it up, [`PENDING_MAX`]). A signal on its way right
    /// now may be taken for dead: that sample is lost, nothing else.
    fn pending_is_dead(&self, tid: i32) -> bool {
        self.is_pending(tid) && self.standing(tid) == Standing::Lost
    }

    /// Give up the signal still armed for a thread ([`SampleError::Pending`]): its handler,
    /// when it runs, finds the slot no longer armed and copies nothing; a stack it copied
    /// already is dropped.
    pub fn cancel_pending(&mut self) {
        if self.pending.take().is_none() {
            return;
        }
        // Take the slot back, dropping what a handler wrote; a handler writing now is waited
        // for a moment, else the slot is freed by the next sample (`reclaim_slot`).
        let deadline = Instant::now() + WRITING_WAIT;
        while !reclaim_slot() && Instant::now() < deadline {
            std::thread::yield_now();
        }
    }

    /// The sample the handler wrote into the slot (its state DONE), and the slot free again;
    /// `late` for a signal that was not answered in time.
    fn collect(&mut self, late: bool) -> Result<Sample, SampleError> {
        let regs = Regs {
            pc: SLOT.pc.load(Relaxed),
            sp: SLOT.sp.load(Relaxed),
            fp: Some(SLOT.fp.load(Relaxed)),
            lr: Some(SLOT.lr.load(Relaxed)),
        };
        let len = SLOT.len.load(Relaxed).min(STACK_BYTES);
        // SAFETY: the state is DONE: the handler wrote the stack and will not write again
        // until the state is ARMED, which only this sampler sets (below, IDLE first).
        let stack: &[u8] = unsafe { &(&*SLOT.stack.get())[..len] };
        let handler_ns = SLOT.handler_ns.load(Relaxed);
        // Read before the slot was armed: no handler of this signal began earlier.
        let answer_cpu_ns = SLOT
            .entered_cpu_ns
            .load(Relaxed)
            .saturating_sub(self.sent_cpu_ns);
        let sample = if len >= 16 && regs.pc != 0 {
            walked(&mut self.walker, regs, stack, Capture::Signal, handler_ns).map(|mut s| {
                s.task = SLOT.task.load(Relaxed);
                s.late = late;
                s.answer_cpu_ns = answer_cpu_ns;
                s
            })
        } else {
            Err(SampleError::Unreadable)
        };
        SLOT.state.store(IDLE, Release);
        sample
    }
}

/// Free the slot from a state no sample owns, when no signal is pending for a thread: a
/// given-up signal's handler left it ARMED (put back after finding another thread's target)
/// or DONE, or a sampler before this one left it so. True when the slot is IDLE after it;
/// false while a handler is copying into it (WRITING). The sampler is the only one that arms
/// the slot, so outside its own sample and pending signal, ARMED and DONE are no one's.
fn reclaim_slot() -> bool {
    // A given-up signal's handler can hold the slot for a moment (ARMED, WRITING, ARMED):
    // a few tries.
    for _ in 0..8 {
        match SLOT.state.load(Acquire) {
            IDLE => return true,
            s @ (ARMED | DONE) => {
                if SLOT
                    .state
                    .compare_exchange(s, IDLE, AcqRel, Acquire)
                    .is_ok()
                {
                    return true;
                }
            }
            _ => return false,
        }
    }
    false
}

/// Walk a copied stack into a sample; no frame at all is [`SampleError::Unreadable`].
fn walked(
    walker: &mut StackWalker,
    regs: Regs,
    stack: &[u8],
    capture: Capture,
    handler_ns: u64,
) -> Result<Sample, SampleError> {
    let mut ips = Vec::new();
    walker.walk(regs, stack, MAX_FRAMES, &mut ips);
    if ips.is_empty() {
        return Err(SampleError::Unreadable);
    }
    Ok(Sample {
        ips,
        capture,
        stack_bytes: stack.len(),
        handler_ns,
        task: 0,
        late: false,
        answer_cpu_ns: 0,
    })
}

impl Drop for StackSampler {
    fn drop(&mut self) {
        let Some((signal, previous)) = self.signal.take() else {
            return;
        };
        // Free the slot, waiting for a handler still writing (bounded: a copy is microseconds;
        // one still writing past it leaves the slot to the next sampler's `reclaim_slot`),
        // then restore.
        self.pending = None;
        let deadline = Instant::now() + Duration::from_millis(100);
        while !reclaim_slot() && Instant::now() < deadline {
            std::thread::yield_now();
        }
        if our_handler_installed(signal) {
            // A signal of ours still pending (a sample given up on a thread that had not run
            // yet) would meet the restored action, by default one that ends the process:
            // ignoring the signal first discards every pending instance of it.
            // SAFETY: an all-zero sigaction with SIG_IGN (0 is SIG_DFL; set explicitly).
            let mut ignore: libc::sigaction = unsafe { std::mem::zeroed() };
            ignore.sa_sigaction = libc::SIG_IGN;
            // SAFETY: a valid action; no previous action wanted.
            unsafe { libc::sigaction(signal, &ignore, std::ptr::null_mut()) };
            // SAFETY: `previous` is the action that was installed before ours.
            unsafe { libc::sigaction(signal, &*previous, std::ptr::null_mut()) };
        }
        // Otherwise the service installed its own handler since: it stays.
        PREV_HANDLER.store(0, Release);
        INSTALLED.store(0, Release);
    }
}

/// Whether asyncprof's handler is still the action for `signal` (the service may have
/// installed its own since).
fn our_handler_installed(signal: i32) -> bool {
    // SAFETY: all-zero is a valid sigaction; a null new action only reads the current one.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::sigaction(signal, std::ptr::null(), &mut current) };
    rc == 0 && current.sa_sigaction == handler as *const () as usize
}

/// `si_code` of a signal queued with a value (`sigqueue`, `rt_tgsigqueueinfo`) on Linux.
const SI_QUEUE: libc::c_int = -1;

/// The value the sampler's signals carry: a signal of the same number that the service sends
/// itself (`raise`, `pthread_kill`), that another process sends (`kill -USR1` to reopen logs)
/// or that the kernel sends (a SIGPROF timer) does not, and goes to the service's handler.
const OUR_VALUE: usize = 0x6173_796e_6370_726f_u64 as usize;

/// `siginfo_t` as `rt_tgsigqueueinfo` reads it for `SI_QUEUE` on Linux: the three ints, the
/// union (at offset 16 on 64-bit targets, 12 on 32-bit ones) as its `_rt` member (pid, uid,
/// value), 128 bytes in all.
#[repr(C)]
struct QueuedInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    #[cfg(target_pointer_width = "64")]
    _pad: libc::c_int,
    pid: libc::pid_t,
    uid: libc::uid_t,
    value: usize,
    #[cfg(target_pointer_width = "64")]
    _rest: [u64; 12],
    #[cfg(target_pointer_width = "32")]
    _rest: [u32; 26],
}

const _: () = assert!(std::mem::size_of::<QueuedInfo>() == std::mem::size_of::<libc::siginfo_t>());

/// Send the sampler's signal to thread `tid` of this process, marked as ours ([`OUR_VALUE`]);
/// 0, or -1 with errno set.
fn send_ours(tid: i32, signal: i32) -> libc::c_long {
    let info = QueuedInfo {
        signo: signal,
        errno: 0,
        code: SI_QUEUE,
        #[cfg(target_pointer_width = "64")]
        _pad: 0,
        // SAFETY: getpid and getuid take no arguments and cannot fail.
        pid: unsafe { libc::getpid() },
        // SAFETY: as above.
        uid: unsafe { libc::getuid() },
        value: OUR_VALUE,
        _rest: Default::default(),
    };
    // SAFETY: rt_tgsigqueueinfo with our own pid, a thread id, a valid signal number and a
    // pointer to a siginfo-sized, initialized buffer that outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            libc::getpid(),
            tid,
            signal,
            &info as *const QueuedInfo,
        )
    }
}

/// Whether the signal `info` describes was sent by [`send_ours`].
fn is_ours(info: *const libc::siginfo_t) -> bool {
    if info.is_null() {
        return false;
    }
    // SAFETY: with SA_SIGINFO the kernel passes a valid siginfo; its value is read only for
    // SI_QUEUE, whose union member holds one.
    unsafe { (*info).si_code == SI_QUEUE && (*info).si_value().sival_ptr as usize == OUR_VALUE }
}

/// The signal handler. See the module's invariants.
extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // Invariant 4: save errno.
    // SAFETY: __errno_location returns a valid pointer to this thread's errno.
    let errno = unsafe { *libc::__errno_location() };
    // Invariant 6: a signal the sampler did not send is the service's, whatever the slot.
    if !is_ours(info) {
        chain(sig, info, ctx);
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = errno };
        return;
    }
    let me = current_tid();
    // Claim the armed slot, then check it was armed for this thread (AcqRel: the target and
    // range stored before arming are seen). A late signal of an earlier, given-up sample
    // that finds the slot armed for another thread gives it back untouched.
    let claimed = SLOT
        .state
        .compare_exchange(ARMED, WRITING, AcqRel, Acquire)
        .is_ok();
    let mine = claimed && SLOT.target.load(Relaxed) == me;
    if claimed && !mine {
        SLOT.state.store(ARMED, Release);
    }
    if mine {
        let entered = monotonic_ns();
        SLOT.entered_cpu_ns
            .store(clock_ns(libc::CLOCK_THREAD_CPUTIME_ID), Relaxed);
        IN_HANDLER.with(|f| f.set(true));
        // Before the stack copy: the probe's answer is about the instant of the registers.
        SLOT.task
            .store(TASK_PROBE.get().map_or(0, |probe| probe()), Relaxed);
        SLOT.poll.store(
            POLL_PROBE
                .get()
                .map_or(0, |probe| probe().saturating_add(1)),
            Relaxed,
        );
        let regs = interrupted_regs(ctx);
        let mut len = 0;
        if let Some(r) = regs {
            SLOT.pc.store(r.pc, Relaxed);
            SLOT.sp.store(r.sp, Relaxed);
            SLOT.fp.store(r.fp.unwrap_or(0), Relaxed);
            SLOT.lr.store(r.lr.unwrap_or(0), Relaxed);
            // SAFETY: the state is WRITING, claimed by this handler: nothing else touches
            // the buffer until it is DONE.
            let buf: &mut [u8] = unsafe { &mut *SLOT.stack.get() };
            // To the top of the thread's stack when the sampler knows it (a few KiB, not
            // the whole buffer). A read of /proc/self/mem, never a plain copy: a stack range
            // that turned out stale cannot make the handler fault.
            let (lo, hi) = (SLOT.stack_lo.load(Relaxed), SLOT.stack_hi.load(Relaxed));
            let want = if lo <= r.sp && r.sp < hi {
                ((hi - r.sp) as usize).min(buf.len())
            } else {
                buf.len()
            };
            // `want <= buf.len()`: checked slicing would be a panic path in the handler.
            let (head, _) = buf.split_at_mut(want);
            len = remote::copy_own_memory(r.sp, head);
        } else {
            SLOT.pc.store(0, Relaxed);
        }
        SLOT.len.store(len, Relaxed);
        SLOT.handler_ns
            .store(monotonic_ns().saturating_sub(entered), Relaxed);
        // Release: the sampler that sees DONE sees the registers and bytes above.
        SLOT.state.store(DONE, Release);
        IN_HANDLER.with(|f| f.set(false));
    } else if sig < libc::SIGRTMIN() {
        // A late signal of ours (its sample was given up). A standard signal is not queued: one
        // the service sent meanwhile was merged into ours, and is passed on with it.
        chain(sig, info, ctx);
    }
    // Else a late real-time signal of ours: queued apart from the service's, dropped.
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// The calling thread's stack, lowest to highest address (`pthread_getattr_np`), to pass to
/// [`StackSampler::sample_in`] when sampling this thread later. `None` where it cannot be
/// read. Not for signal handlers: it may allocate and read `/proc` (for the main thread).
pub fn current_stack() -> Option<Range<u64>> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: an all-zero pthread_attr_t is only written by pthread_getattr_np, which
        // initializes it; it is destroyed after use.
        unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
                return None;
            }
            let mut addr: *mut libc::c_void = std::ptr::null_mut();
            let mut size: libc::size_t = 0;
            let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
            libc::pthread_attr_destroy(&mut attr);
            if rc != 0 || addr.is_null() || size == 0 {
                return None;
            }
            let lo = addr as u64;
            Some(lo..lo + size as u64)
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// The monotonic clock in nanoseconds (`clock_gettime` is async-signal-safe).
fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// A clock every kernel has, in nanoseconds (async-signal-safe: `clock_gettime`).
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid, writable timespec and a clock every kernel has.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The interrupted registers, from the handler's context. Counts a system call that the
/// signal interrupted with `EINTR` (see [`interrupted_syscalls`]).
fn interrupted_regs(ctx: *mut libc::c_void) -> Option<Regs> {
    if ctx.is_null() {
        return None;
    }
    #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
    {
        // SAFETY: with SA_SIGINFO the kernel passes a valid ucontext_t as the third argument.
        let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
        let g = &uc.uc_mcontext.gregs;
        let pc = g[libc::REG_RIP as usize] as u64;
        let rax: i64 = g[libc::REG_RAX as usize];
        // A system call that returned EINTR leaves -EINTR in rax with the instruction after
        // `syscall` (0f 05) next. The two bytes before pc are read only when they lie in pc's
        // own page, which is mapped: it holds the instruction the thread was about to run.
        if rax == -(libc::EINTR as i64) && pc >= 2 {
            // Read through /proc/self/mem, never a plain load: code pages may be execute-only.
            let mut insn = [0u8; 2];
            if remote::copy_own_memory(pc - 2, &mut insn) == 2 && insn == [0x0f, 0x05] {
                INTERRUPTED_SYSCALLS.fetch_add(1, Relaxed);
            }
        }
        Some(Regs {
            pc,
            sp: g[libc::REG_RSP as usize] as u64,
            fp: Some(g[libc::REG_RBP as usize] as u64),
            lr: None,
        })
    }
    #[cfg(all(target_os = "linux", target_arch = "aarch64"))]
    {
        // SAFETY: as above.
        let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
        let m = &uc.uc_mcontext;
        Some(Regs {
            pc: m.pc,
            sp: m.sp,
            fp: Some(m.regs[29]),
            lr: Some(m.regs[30]),
        })
    }
    #[cfg(not(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )))]
    {
        None
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
pub(crate) fn clock_ticks_per_second() -> u64 {
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

/// Block every signal that can be blocked in the calling thread. A process-directed signal
/// then goes to another thread of the process; processes the thread starts inherit the mask
/// (the standard library keeps the spawning thread's), and it survives `exec`.
///
/// # Errors
///
/// The OS error of `pthread_sigmask`.
pub fn block_all_signals_in_this_thread() -> std::io::Result<()> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset initialises the set it is given; pthread_sigmask reads it and
    // changes only the calling thread's mask.
    unsafe {
        if libc::sigfillset(set.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        match libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut()) {
            0 => Ok(()),
            e => Err(std::io::Error::from_raw_os_error(e)),
        }
    }
}

/// Have the kernel end `cmd`'s process (SIGKILL) when the thread that starts it ends
/// (`PR_SET_PDEATHSIG`): with the process, for a thread that lasts as long as it does.
pub fn end_with_this_thread(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and makes one system call
    // with plain integers; it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Wait up to `timeout` for one of `signals`, which the calling thread blocks, and take it
/// (`sigtimedwait(2)`): its number and the process that sent it (0: the kernel, such as a
/// terminal's Ctrl-C). `None` when none came (or the wait was interrupted).
///
/// # Errors
///
/// The OS error, other than a timeout or an interruption.
pub fn wait_for_signal(
    signals: &[i32],
    timeout: std::time::Duration,
) -> std::io::Result<Option<(i32, u32)>> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::zeroed();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: sigemptyset initialises the set before sigaddset and sigtimedwait read it;
    // sigtimedwait writes the siginfo it is given (zeroed, so it is initialised either way);
    // si_pid reads the sender's pid, which the kernel fills for the signals a process or the
    // kernel sends (0 where there is none).
    unsafe {
        if libc::sigemptyset(set.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        for &s in signals {
            if libc::sigaddset(set.as_mut_ptr(), s) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let got = libc::sigtimedwait(set.as_ptr(), info.as_mut_ptr(), &ts);
        if got < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
                _ => Err(e),
            };
        }
        let pid = info.assume_init_ref().si_pid();
        Ok(Some((got, u32::try_from(pid).unwrap_or(0))))
    }
}

/// Take an exclusive advisory lock on `file` (`flock(2)`) without waiting: true when taken,
/// false when another open file description holds one (another process records to the same
/// run file). The lock goes with the file's last descriptor.
///
/// # Errors
///
/// The OS error, other than the lock being held.
pub fn try_lock_exclusive(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock takes a descriptor the borrowed file keeps open, and plain flags.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}
