//! The kind of one stall, read from its record alone: what `asyncprof report` names a finding
//! of stalls, and what the metrics endpoint and the stall events label a stall with, so that
//! all three say the same.
//!
//! Checked in this order: runtime-blocked, lock-contention, cpu-bound-poll, blocking-call.
//! A stall whose thread was runnable but preempted most of the time, or asleep on a lock inside
//! a future it awaited while the machine had more runnable threads than cores ([`preempted`]),
//! is the machine's doing, not the poll's: the report counts it apart and makes no finding of
//! it.

use crate::{StallClass, StallRecord};

/// What held a worker past the stall threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum StallKind {
    /// A poll that never returned: the stall was still running when the run ended, and had
    /// held its worker for at least [`NEVER_RETURNED_NS`]. (A shorter one was only cut by the
    /// end of the recording, a busy service stopped in the middle of a poll: it is the kind
    /// its record reads as otherwise.)
    RuntimeBlocked,
    /// Asleep in `futex` inside a `std::sync` lock.
    LockContention,
    /// Classed on CPU (see [`crate::StallClass`]), or never found asleep and still on CPU for at least
    /// [`PREEMPTED_CPU_SHARE`] of the stall.
    CpuBoundPoll,
    /// Asleep in a system call, or stopped in a call the stack names; or on CPU inside a
    /// system call (`in_a_system_call_on_cpu`: a read copying a large file from the page
    /// cache).
    BlockingCall,
}

/// How long a poll still running at the end of a run must have held its worker to count as
/// never returning (1 s): less, and the recording's end (a service stopped while it served a
/// request) cut an ordinary stall short.
pub const NEVER_RETURNED_NS: u64 = 1_000_000_000;

/// Below this share of its wall time on CPU, a stall that did not sleep was preempted.
pub const PREEMPTED_CPU_SHARE: f64 = 0.35;

/// At least this share of the looks that found a thread asleep in `futex` must have found the
/// machine crowded (more runnable threads than CPUs) for the wait to count as a lock holder's
/// wait for a core.
pub const CROWDED_SHARE: f64 = 0.5;

/// Whether `s` was the machine's doing, not its poll's:
///
/// - its thread was neither asleep nor computing most of the time: runnable but preempted
///   (the machine had more runnable threads than cores);
/// - or it slept in `futex` inside a future the user's code awaited (a library's own lock, or
///   the C library's allocator lock), or on the C library's allocator lock anywhere (`malloc`,
///   `realloc`, `free`: held for a few hundred instructions), or in a call into tokio itself
///   (its blocking pool's lock in `spawn_blocking`, held while it starts a thread), not in a
///   `std::sync` lock or a blocking call the user's code made, while the machine was crowded
///   in at least
///   [`CROWDED_SHARE`] of the looks: the lock's holder, in a short critical section, was
///   waiting for a core. The user's line waited on nothing of its own.
pub fn preempted(s: &StallRecord) -> bool {
    !s.ongoing && (thread_preempted(s) || holder_preempted(s))
}

fn thread_preempted(s: &StallRecord) -> bool {
    s.class != StallClass::Blocking && s.cpu_share.is_some_and(|c| c < PREEMPTED_CPU_SHARE)
}

fn holder_preempted(s: &StallRecord) -> bool {
    s.class == StallClass::Blocking
        && s.syscall.as_deref() == Some("futex")
        && !is_lock_wait(s)
        && s.crowded_share.is_some_and(|c| c >= CROWDED_SHARE)
        && (awaited_a_future(s) || waits_on_the_allocator(s) || waits_inside_tokio(s))
}

/// The call the user's code made (the stall's primitive, named as the recorder found it) is
/// one of tokio's spawns (`spawn_blocking` waiting for its blocking pool's lock, held while a
/// thread starts; `spawn` binding the task to its runtime): tokio holds those locks for
/// moments. Not its other calls: a `watch` channel's lock is held while the user's own
/// closure or borrow runs.
fn waits_inside_tokio(s: &StallRecord) -> bool {
    s.primitive.as_ref().is_some_and(|p| {
        crate::culprit::in_tokio(p, "/tokio-1.", "tokio::")
            && crate::culprit::last_segment(&p.function).starts_with("spawn")
    })
}

/// The C library's allocator entry points and internals that take its arena lock.
const ALLOCATOR: &[&str] = &[
    "malloc",
    "free",
    "realloc",
    "calloc",
    "__libc_malloc",
    "__libc_free",
    "__libc_realloc",
    "__libc_calloc",
    "_int_malloc",
    "_int_free",
    "_int_realloc",
    "arena_get2",
    "malloc_consolidate",
];

/// The C library's lock wait at the top of `frames` (innermost first): whether a named lock
/// wait (`__lll_lock_wait*`) is there, and whether the first frame outward of the wait (its
/// futex call and the C library's unnamed static functions skipped) is the C library's
/// allocator.
fn allocator_under_wait(frames: &[crate::Frame]) -> (bool, bool) {
    let mut named_wait = false;
    for f in frames {
        let name = f.function.as_str();
        if name.starts_with("__lll_lock_wait") || name == "__GI___lll_lock_wait" {
            named_wait = true;
        } else if !(name.starts_with("0x") || name.contains("futex") || name == "syscall") {
            return (named_wait, ALLOCATOR.contains(&name));
        }
    }
    (named_wait, false)
}

/// In the most sampled stack, the first named frame outward of the lock wait is the C
/// library's allocator: the thread waited for its arena lock.
fn waits_on_the_allocator(s: &StallRecord) -> bool {
    s.stacks
        .iter()
        // The first of the most sampled: the stall's class's stacks come first.
        .rev()
        .max_by_key(|st| st.count)
        .is_some_and(|st| allocator_under_wait(&st.frames).1)
}

/// Whether at least half of the stall's stack samples waited (a named lock wait) for the C
/// library's allocator lock, which it holds for a few hundred instructions: a thread found there again and again
/// is short polls waiting on it in turn (a saturated runtime freeing and growing memory that
/// other threads allocated), or the lock's holder waiting for a core; not one poll of its own.
pub fn mostly_waits_on_the_allocator(s: &StallRecord) -> bool {
    at_least_half(s, |frames| allocator_under_wait(frames) == (true, true))
}

/// Whether at least half of the stall's stack samples (counted with their repeats) have
/// frames that `is` says so of.
fn at_least_half(s: &StallRecord, is: impl Fn(&[crate::Frame]) -> bool) -> bool {
    let total: u64 = s.stacks.iter().map(|st| u64::from(st.count)).sum();
    let those: u64 = s
        .stacks
        .iter()
        .filter(|st| is(&st.frames))
        .map(|st| u64::from(st.count))
        .sum();
    total > 0 && those * 2 >= total
}

/// Whether at least half of the stall's stack samples show a thread that held no worker then
/// ([`crate::culprit::holds_no_worker`]: inside tokio's `block_in_place`, or back in the
/// blocking pool after it). A worker busy without parking (the stable tier) is not held up by
/// such a thread; without `tokio_unstable` asyncprof sees the hand-off only so.
pub fn mostly_without_a_worker(s: &StallRecord) -> bool {
    at_least_half(s, crate::culprit::holds_no_worker)
}

/// Whether at least half of the stall's stack samples show a thread outside every tokio runtime
/// ([`crate::culprit::outside_any_runtime`]) and none shows a runtime driven
/// ([`crate::culprit::shows_a_runtime`]): a current-thread runtime's `block_on` returned, and the
/// thread went on with the caller's own code. Its busy period (the stable tier), begun at its last
/// unpark, has no park to end it; no worker is held. A busy period that runs on into the next
/// `block_on` (tokio polls its future before it parks) and holds it there shows the runtime in
/// those samples, and is kept.
pub fn mostly_outside_a_runtime(s: &StallRecord) -> bool {
    !s.stacks
        .iter()
        .any(|st| crate::culprit::shows_a_runtime(&st.frames))
        && at_least_half(s, crate::culprit::outside_any_runtime)
}

/// Whether the stall's stacks, every one whole (reaching the thread's start), never show the
/// thread inside a current-thread `block_on` ([`crate::culprit::in_current_thread_block_on`]):
/// the hooks tier's stretch between a current-thread runtime's task polls, whose thread then
/// waited in another runtime's `block_on` or was back in a blocking pool, polled neither the
/// `block_on` future nor a `LocalSet`. False without stacks, or with one cut short: it cannot
/// tell.
pub fn never_in_a_current_thread_block_on(s: &StallRecord) -> bool {
    !s.stacks.is_empty()
        && s.stacks
            .iter()
            .all(|st| crate::culprit::reaches_thread_start(&st.frames))
        && !s
            .stacks
            .iter()
            .any(|st| crate::culprit::in_current_thread_block_on(&st.frames))
}

/// In the most sampled stack, the call the user's code made (the frame inward of its first
/// frame) is a future's poll or an async function's body: the user's line was an `.await`,
/// not a blocking call.
fn awaited_a_future(s: &StallRecord) -> bool {
    s.stacks
        .iter()
        // The first of the most sampled: the stall's class's stacks come first.
        .rev()
        .max_by_key(|st| st.count)
        .and_then(|st| crate::culprit::call_frame(&st.frames))
        // A logging macro's closure (`tracing::info!`'s) is a call, not a future's body.
        .is_some_and(|f| is_poll(&f.function) && crate::culprit::macro_call(f).is_none())
}

/// `<Pending as Future>::poll`, `poll_next`, `Response::text::{{closure}}` (an async fn's
/// body), `{async_block#0}`: names of code that runs when a future is polled. Read without
/// type arguments: a generic function whose last type argument is a closure
/// (`reduce<Map<..>, handle::{async_fn#0}::{closure_env#5}>`) is a call, not a closure.
fn is_poll(function: &str) -> bool {
    crate::culprit::innermost_segment(function).starts_with("poll")
        || !matches!(
            crate::culprit::body_kind(function),
            crate::culprit::Body::Plain
        )
}

impl StallKind {
    /// Every kind, in the order they are checked.
    pub const ALL: [StallKind; 4] = [
        StallKind::RuntimeBlocked,
        StallKind::LockContention,
        StallKind::CpuBoundPoll,
        StallKind::BlockingCall,
    ];

    /// The kind of `s` (for a [`preempted`] stall too: the kind its record reads as).
    pub fn of(s: &StallRecord) -> StallKind {
        if s.ongoing && s.duration_ns >= NEVER_RETURNED_NS {
            StallKind::RuntimeBlocked
        } else if is_lock_wait(s) {
            StallKind::LockContention
        } else if s.class == StallClass::CpuBound
            || (s.class == StallClass::Unknown
                && s.cpu_share.is_some_and(|c| c >= PREEMPTED_CPU_SHARE))
        {
            if in_a_system_call_on_cpu(s) {
                StallKind::BlockingCall
            } else {
                StallKind::CpuBoundPoll
            }
        } else if s.class == StallClass::Blocking || s.primitive.is_some() {
            StallKind::BlockingCall
        } else {
            StallKind::CpuBoundPoll
        }
    }

    /// What metrics and stall events call `s`: its kind's name, or `preempted` for a
    /// [`preempted`] stall (the machine's doing, which the report counts apart).
    pub fn label(s: &StallRecord) -> &'static str {
        if preempted(s) {
            "preempted"
        } else {
            StallKind::of(s).name()
        }
    }

    /// Its name in findings, metrics and events (`runtime-blocked`, `lock-contention`,
    /// `cpu-bound-poll`, `blocking-call`).
    pub const fn name(self) -> &'static str {
        match self {
            StallKind::RuntimeBlocked => "runtime-blocked",
            StallKind::LockContention => "lock-contention",
            StallKind::CpuBoundPoll => "cpu-bound-poll",
            StallKind::BlockingCall => "blocking-call",
        }
    }
}

/// The C library's system-call wrappers, without the prefixes and suffix of their internal
/// names (`__libc_read`, `__GI___libc_write`, `__read_nocancel`): calls into the kernel that
/// can compute there for long on a thread that stays on CPU (copies to and from the page
/// cache, `getrandom`, `copy_file_range`). The calls that give memory back, which can too, are
/// [`MEMORY_CALLS`], apart: the allocator's, not the program's I/O.
const SYSCALL_WRAPPERS: &[&str] = &[
    "read",
    "write",
    "pread",
    "pwrite",
    "pread64",
    "pwrite64",
    "readv",
    "writev",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "copy_file_range",
    "sendfile",
    "sendfile64",
    "splice",
    "getrandom",
    "fsync",
    "fdatasync",
];

/// Calls that give memory back to the kernel or move it, which can compute there for long
/// too: unmapping a large buffer as it is freed (`munmap` of 96 MiB written to: 9.2–10.8 ms
/// on a 2-core virtual machine), and its kin. The C library's allocator makes them; a sample
/// at one answered at once shows the allocator at work, not I/O ([`gives_memory_back`]).
const MEMORY_CALLS: &[&str] = &["munmap", "madvise", "mremap"];

/// Whether `call` (a [`call_wrapper`]'s name) gives memory back to the kernel or moves it
/// (`munmap`, `madvise`, `mremap`): the allocator's doing, not the program's I/O.
pub fn gives_memory_back(call: &str) -> bool {
    MEMORY_CALLS.contains(&call)
}

/// Of the calls [`begins_in_a_call`] knows, those a record without
/// [`crate::StackSample::in_a_call`] did not name (read as computing there): `pread`, `pwrite`
/// and [`MEMORY_CALLS`].
fn named_with_the_count(name: &str) -> bool {
    ["pread", "pwrite"].contains(&name) || gives_memory_back(name)
}

/// Whether a stall on CPU computed inside system calls: more than half of its sampled stacks
/// begin in the C library's wrapper of one (`read`; not the generic `syscall`, through which
/// std's and parking_lot's futex waits go) and stayed there. A signal sent to a thread
/// computing inside a system call runs its handler only as the call returns (a read from the
/// page cache is not interrupted), so the stack it copies begins in the wrapper, the user's
/// call under it, and the handler runs late: the poll did blocking I/O, on CPU in the kernel,
/// not a computation of its own.
///
/// A stack in a wrapper whose handler ran at once is no such evidence: a signal reaches a
/// thread in its own code through an interrupt (18–50 µs after it was sent, measured on a
/// 2-core virtual machine), and one that enters a short system call before then takes it as
/// that call returns. A loop computing a 4 KiB block (one pass) and writing it with `pwrite`,
/// 2–9% of its CPU time in the kernel, had 56 of 59 samples in `pwrite`, answered 25–94 µs
/// after their signals in wall time; SQLite's commit of a full-text index, its page reads and
/// writes a sixth of its CPU time, was made a blocking call so in 2 bench runs of 11. So a
/// sample counts only when its thread used at least [`IN_A_CALL_NS`] of CPU time between the
/// signal's sending and its handler (it computed in the call; one that waited for a core
/// meanwhile used none), or was copied from outside asleep in it
/// ([`crate::StackSample::in_a_call`]; a record without the count: all of them but those it
/// did not name, `pread`, `pwrite` and `MEMORY_CALLS`). A poll that spends
/// most of its time in many short calls (a file read in 8 KiB pieces) is so a `cpu-bound-poll`
/// too, its call still named as the primitive: the samples cannot tell it from a computation
/// between such calls.
pub(crate) fn in_a_system_call_on_cpu(s: &StallRecord) -> bool {
    if s.class == StallClass::Blocking {
        return false;
    }
    let total: u32 = s.stacks.iter().map(|st| st.count).sum();
    let stayed: u32 = s.stacks.iter().map(samples_in_a_call).sum();
    stayed * 2 > total
}

/// Whether a stack begins in the C library's wrapper of a system call that can compute in the
/// kernel for long (`read`, `write`, `pread64`, `pwrite`, `getrandom`, `copy_file_range` and
/// the like, by the name of a frame with no file; under the cancellation frames that newer C
/// libraries put above the call). `pread`, `pwrite`, `munmap`, `madvise` and `mremap` count
/// only in a record that says how many of the stack's samples stayed in a call
/// ([`crate::StackSample::in_a_call`]): one from before did not name them.
pub fn begins_in_a_call(st: &crate::StackSample) -> bool {
    call_wrapper(st).is_some()
}

/// The system call a stack begins in ([`begins_in_a_call`]), by its wrapper's plain name
/// (`write` for `__GI___libc_write`, `read` for `__read_nocancel`).
pub fn call_wrapper(st: &crate::StackSample) -> Option<&str> {
    wrapper_frame(st).map(|(_, name)| name)
}

/// [`call_wrapper`], with the wrapper's index among the stack's frames.
fn wrapper_frame(st: &crate::StackSample) -> Option<(usize, &str)> {
    let (at, top) = st.frames.iter().enumerate().find(|(_, f)| {
        !(f.file.is_none()
            && matches!(
                f.function.as_str(),
                "__syscall_cancel_arch" | "__internal_syscall_cancel" | "__syscall_cancel"
            ))
    })?;
    if top.file.is_some() {
        return None;
    }
    let name = top.function.as_str();
    let name = ["__GI___libc_", "__libc_", "__GI___", "__"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name);
    let name = name.strip_suffix("_nocancel").unwrap_or(name);
    // A record from before the count read `pread` and `pwrite` as computing, and `munmap`
    // and its kin.
    let known = (SYSCALL_WRAPPERS.contains(&name) || gives_memory_back(name))
        && (st.in_a_call.is_some() || !named_with_the_count(name));
    known.then_some((at, name))
}

/// Of a stack's samples, those that stayed in the system call it begins in
/// ([`begins_in_a_call`], [`crate::StackSample::in_a_call`]; a record without the count: all
/// of them); 0 for a stack that begins in no call.
fn samples_in_a_call(st: &crate::StackSample) -> u32 {
    if begins_in_a_call(st) {
        stayed_in_the_call(st)
    } else {
        0
    }
}

/// [`samples_in_a_call`] of a stack known to begin in a call.
fn stayed_in_the_call(st: &crate::StackSample) -> u32 {
    st.in_a_call.unwrap_or(st.count).min(st.count)
}

/// Of a stack's samples, those taken as a short system call returned: the stack begins in a
/// call's wrapper ([`begins_in_a_call`]) and the thread did not stay in it
/// ([`crate::StackSample::in_a_call`]; a record without the count: none). Such a sample shows
/// the thread computing in the moments before the call: the signal's interrupt was overtaken
/// by the call.
pub fn samples_at_a_short_call(st: &crate::StackSample) -> u32 {
    if begins_in_a_call(st) {
        st.count - stayed_in_the_call(st)
    } else {
        0
    }
}

/// Of a stack's samples, those that place no line of the user's while other samples of its
/// stall do: taken as a short system call returned ([`samples_at_a_short_call`]) that the
/// user's line made through the toolchain's libraries alone (`File::write_at`, `println!`:
/// std does little besides the call), so the thread was computing just before it elsewhere in
/// the user's code (a loop that hashes at one line and writes at the next). A call made inside
/// another library keeps them: that library computed before it, under the same line (SQLite's
/// page reads under `commit`).
pub fn samples_placing_no_line(st: &crate::StackSample) -> u32 {
    let Some((at, _)) = wrapper_frame(st) else {
        return 0;
    };
    let through_std = st.frames[at + 1..]
        .iter()
        .take_while(|f| !crate::culprit::is_user_frame(f))
        .all(|f| {
            f.file
                .as_deref()
                .is_some_and(crate::culprit::is_toolchain_file)
        });
    if through_std {
        st.count - stayed_in_the_call(st)
    } else {
        0
    }
}

/// How much CPU time a thread on CPU must have used between a signal's sending and its
/// handler, its stack starting in a system call's wrapper, for the sample to show a call that
/// kept it computing in the kernel (0.2 ms): a thread in its own code, or in a short call (a
/// page read from the page cache, microseconds), takes it within tens of microseconds; one
/// copying a large file from the page cache, as the read returns, milliseconds later.
pub const IN_A_CALL_NS: u64 = 200_000;

/// Crates whose locks park a thread in `futex` as std's do, by their registry directory.
const LOCK_CRATES: &[&str] = &["/lock_api-", "/parking_lot-"];

/// Asleep in `futex` inside `std::sync::Mutex`, `RwLock` or `Condvar` (by name, or by std's
/// source file when the debug info gives bare names), or inside the `parking_lot` crate's
/// (called through `lock_api`, its locks' generic front: bare names such as `lock_api::lock`
/// are told by the crate's file).
fn is_lock_wait(s: &StallRecord) -> bool {
    // By its path: drop glue keeps the type it drops (`drop_in_place::<Arc<Mutex<T>>>`),
    // which is no lock wait.
    let primitive = crate::culprit::without_type_arguments(
        s.primitive.as_ref().map_or("", |p| p.function.as_str()),
    );
    let file = s
        .primitive
        .as_ref()
        .and_then(|p| p.file.as_deref())
        .unwrap_or("");
    let lockish = ["Mutex", "RwLock", "Condvar"]
        .iter()
        .any(|l| primitive.contains(l))
        || ((file.contains("/sync/") || LOCK_CRATES.iter().any(|c| file.contains(c)))
            && ["mutex", "rwlock", "condvar"]
                .iter()
                .any(|l| file.contains(l)));
    s.class == StallClass::Blocking
        && s.syscall.as_deref() == Some("futex")
        && (lockish || waits_inside_a_lock(s))
}

/// Whether most of a stall's stacks through its primitive (the call the user's code made, by
/// its file and line: a poll that waited and then computed has stacks of both) wait inside a
/// lock's acquisition below that call: a crate's own lock built on `lock_api` (dashmap's
/// shards, whose guards hold them until dropped: the call is `DashMap::entry`, `get_mut`), or
/// a lock's contended path reached through a library's call. Read from the innermost frame
/// outwards, up to the first of the user's frames; a `Condvar` met first is a wait for a
/// notification (rayon's latch, tokio's parker), not for a lock, and so is std's standard
/// output or error met first (its `ReentrantLock`): a print through any crate (`println!`,
/// `anstream`, a terminal crate) waits there behind a slow write, a blocking call with advice
/// of its own. Not for calls of std, tokio, `tracing` and `log` (their locks are named
/// above; a log line waits for its writer's lock behind a slow write), nor for an awaited
/// future (a client's `Pending::poll` waiting for its pool's lock: the call is async
/// already, and on a crowded machine the holder waited for a core, [`holder_preempted`]).
fn waits_inside_a_lock(s: &StallRecord) -> bool {
    let primitive = s.primitive.as_ref().map_or("", |p| p.function.as_str());
    if KEEP_THEIR_KIND
        .iter()
        .any(|c| crate::culprit::in_crate(primitive, c))
        || awaited_a_future(s)
    {
        return false;
    }
    let call = s
        .primitive
        .as_ref()
        .and_then(|p| Some((p.file.as_deref()?, p.line?)));
    let through_call = |st: &&crate::StackSample| {
        call.is_none_or(|(file, line)| {
            st.frames
                .iter()
                .any(|f| f.line == Some(line) && f.file.as_deref() == Some(file))
        })
    };
    let locked = |st: &&crate::StackSample| {
        let below_call = || {
            st.frames
                .iter()
                .take_while(|f| !crate::culprit::is_user_frame(f))
        };
        // Standard output's or error's lock, wherever the print came from.
        let stdio = |f: &crate::Frame| {
            let file = f.file.as_deref().unwrap_or("");
            f.function.contains("ReentrantLock")
                || file.ends_with("/io/stdio.rs")
                || file.ends_with("/sync/reentrant_lock.rs")
        };
        if below_call().any(stdio) {
            return false;
        }
        for f in below_call() {
            let file = f.file.as_deref().unwrap_or("");
            if f.function.contains("Condvar") || file.contains("condvar") {
                return false;
            }
            if acquires_a_lock(&f.function, file) {
                return true;
            }
        }
        false
    };
    let (total, locked) = s
        .stacks
        .iter()
        .filter(through_call)
        .fold((0u32, 0u32), |(total, n), st| {
            (total + st.count, n + if locked(&st) { st.count } else { 0 })
        });
    total > 0 && locked * 2 > total
}

/// Crates whose calls keep their kind when a lock is found inside them
/// ([`waits_inside_a_lock`]).
const KEEP_THEIR_KIND: &[&str] = &[
    "std",
    "core",
    "alloc",
    "tokio",
    "tracing",
    "tracing_core",
    "tracing_subscriber",
    "log",
];

/// A frame of a lock's acquisition: a lock crate's lock (`lock_api`'s front, `Mutex::lock`,
/// `RwLock::write`, and parking_lot's raw locks, by their files: [`LOCK_CRATES`]), a raw lock's methods as `lock_api` names them (`lock_exclusive`, `lock_shared`,
/// `lock_upgradable` and their slow paths, in any crate that implements them), or std's
/// contended paths (`lock_contended`, `read_contended`, `write_contended`).
fn acquires_a_lock(function: &str, file: &str) -> bool {
    let in_a_lock_crate = LOCK_CRATES.iter().any(|c| file.contains(c))
        && ["mutex", "rwlock"].iter().any(|l| file.contains(l));
    let name = crate::culprit::last_segment(function);
    in_a_lock_crate
        || ["lock_exclusive", "lock_shared", "lock_upgradable"]
            .iter()
            .any(|m| name.starts_with(m))
        || ["lock_contended", "read_contended", "write_contended"].contains(&name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known truth: a handler reading a 96 MiB file from the page cache with `std::fs::read`,
    /// 50-70 ms on CPU inside one `read` (the stack its signal took as the call returned, as
    /// recorded); a computation whose samples mostly landed in its own code, one at a
    /// `write`; SQLite's commit of a full-text index, on CPU with many short page reads and
    /// writes, its samples in `pread64` and `pwrite` answered at once (from `asyncprof bench
    /// log-aggregator`, where 2 runs in 11 made it a blocking call so).
    #[test]
    fn a_poll_on_cpu_inside_a_read_is_a_blocking_call() {
        let std_file = |f: &str| Some(format!("/rustc/abc/library/std/src/{f}"));
        let frames = |top: &str| {
            vec![
                crate::Frame::new(top, None, None),
                crate::Frame::new(
                    "<std::sys::fs::unix::File>::read_buf",
                    std_file("sys/fs/unix.rs"),
                    Some(1711),
                ),
                crate::Frame::new("std::fs::read::inner", std_file("fs.rs"), Some(346)),
                crate::Frame::new(
                    "media::handle::{async_fn#0}",
                    Some("src/main.rs".into()),
                    Some(146),
                ),
            ]
        };
        let on_cpu_in_calls = |stacks: Vec<(&str, u32, Option<u32>)>| StallRecord {
            class: StallClass::CpuBound,
            cpu_share: Some(0.99),
            duration_ns: 60_000_000,
            stacks: stacks
                .into_iter()
                .map(|(top, count, in_a_call)| crate::StackSample {
                    count,
                    frames: frames(top),
                    in_a_call,
                })
                .collect(),
            ..StallRecord::default()
        };
        // Each stack's samples that stayed in the call (`in_a_call`): all of them.
        let stayed = |stacks: Vec<(&str, u32)>| {
            let stacks = stacks.into_iter().map(|(top, n)| (top, n, Some(n)));
            on_cpu_in_calls(stacks.collect())
        };
        for top in [
            "read",
            "__libc_read",
            "__GI___libc_read",
            "__read_nocancel",
            "pread64",
        ] {
            let s = stayed(vec![(top, 1)]);
            assert_eq!(StallKind::of(&s), StallKind::BlockingCall, "{top}");
            assert!(!preempted(&s));
            // A record from before the count reads so too.
            let old = on_cpu_in_calls(vec![(top, 1, None)]);
            assert_eq!(StallKind::of(&old), StallKind::BlockingCall, "{top}");
        }
        // It read `pread` and `pwrite` as a computation's.
        for top in ["pread", "pwrite"] {
            let old = on_cpu_in_calls(vec![(top, 1, None)]);
            assert_eq!(StallKind::of(&old), StallKind::CpuBoundPoll, "{top}");
        }
        assert!(in_a_system_call_on_cpu(&stayed(vec![(
            "__libc_pread64",
            2
        )])));
        // Samples in calls answered at once: a computation that makes short calls. One
        // that stayed, among more that did not, is not the most of the stall.
        for stacks in [
            vec![("pread64", 1, Some(0))],
            vec![("pwrite", 4, Some(0))],
            vec![("pread64", 1, Some(0)), ("pwrite", 1, Some(0))],
            vec![("pread64", 1, Some(1)), ("pwrite", 1, Some(0))],
            vec![
                ("pread64", 1, Some(1)),
                ("media::checksum", 1, Some(0)),
                ("read", 1, Some(0)),
            ],
            // A count past the samples' (a damaged file) is read as all of them, not more.
            vec![("write", 1, Some(7)), ("media::checksum", 3, Some(0))],
        ] {
            let commit = on_cpu_in_calls(stacks.clone());
            assert!(!in_a_system_call_on_cpu(&commit), "{stacks:?}");
            assert_eq!(
                StallKind::of(&commit),
                StallKind::CpuBoundPoll,
                "{stacks:?}"
            );
        }
        for stacks in [
            vec![("pread64", 3, Some(2))],
            vec![("pread64", 2, Some(2)), ("pwrite64", 1, Some(0))],
            vec![("pwrite", 1, Some(1))],
            vec![("pread", 1, Some(1))],
        ] {
            assert!(
                in_a_system_call_on_cpu(&on_cpu_in_calls(stacks.clone())),
                "{stacks:?}"
            );
        }
        // Mostly in its own code, or half: a computation (a signal during a log line's
        // `write` lands at its return).
        for stacks in [
            vec![("media::checksum", 5), ("write", 1)],
            vec![("media::checksum", 1), ("write", 1)],
            vec![("syscall", 3)],
        ] {
            let computing = stayed(stacks);
            assert!(!in_a_system_call_on_cpu(&computing));
            assert_eq!(StallKind::of(&computing), StallKind::CpuBoundPoll);
        }
        // A function of the program's own named `read` has a file.
        let mut own = stayed(vec![("read", 1)]);
        own.stacks[0].frames[0].file = Some("src/codec.rs".into());
        assert_eq!(StallKind::of(&own), StallKind::CpuBoundPoll);
    }

    /// Known truth: a task that reads a 96 MiB file from the page cache (`std::fs::read`) and
    /// drops it, 50 ms on CPU: one sample as the read returned, its signal held until then, and
    /// one in `munmap` as the buffer was freed, held too (`it::stalls`' large file read, in
    /// the stable tier). Both samples stayed in a call: a blocking call. Unmapping answered at
    /// once is not evidence of one; a record from before the count read `munmap` as computing.
    #[test]
    fn a_large_buffer_freed_in_the_kernel_is_inside_a_call_too() {
        let user = crate::Frame::new(
            "media::load::{closure}",
            Some("src/main.rs".into()),
            Some(181),
        );
        let stack = |frames: Vec<crate::Frame>, in_a_call| crate::StackSample {
            count: 1,
            frames,
            in_a_call,
        };
        let read = |in_a_call| {
            stack(
                vec![
                    crate::Frame::new("read", None, None),
                    crate::Frame::new(
                        "std::fs::read",
                        Some("/rustc/abc/library/std/src/fs.rs".into()),
                        Some(346),
                    ),
                    user.clone(),
                ],
                in_a_call,
            )
        };
        let unmap = |top: &str, in_a_call| {
            stack(
                vec![
                    crate::Frame::new(top, None, None),
                    crate::Frame::new("__libc_free", None, None),
                    user.clone(),
                ],
                in_a_call,
            )
        };
        let stall = |stacks| StallRecord {
            class: StallClass::CpuBound,
            cpu_share: Some(1.0),
            duration_ns: 50_000_000,
            stacks,
            ..StallRecord::default()
        };
        for top in ["__munmap", "munmap", "__GI___munmap", "madvise", "mremap"] {
            let s = stall(vec![unmap(top, Some(1)), read(Some(1))]);
            assert_eq!(StallKind::of(&s), StallKind::BlockingCall, "{top}");
            let s = stall(vec![unmap(top, Some(0)), read(Some(1))]);
            assert_eq!(StallKind::of(&s), StallKind::CpuBoundPoll, "{top}");
            let old = stall(vec![unmap(top, None), read(None)]);
            assert_eq!(StallKind::of(&old), StallKind::CpuBoundPoll, "{top}");
        }
    }

    /// Known truth: a render on CPU cut by the end of the recording after 150 ms (a service
    /// stopped while it served a request), and a `block_on` asleep for good for 4 s.
    #[test]
    fn a_poll_cut_by_the_end_of_the_run_is_not_one_that_never_returned() {
        let mut cut = StallRecord {
            ongoing: true,
            class: StallClass::CpuBound,
            duration_ns: 150_000_000,
            ..StallRecord::default()
        };
        assert_eq!(StallKind::of(&cut), StallKind::CpuBoundPoll);
        cut.duration_ns = NEVER_RETURNED_NS - 1;
        assert_eq!(StallKind::of(&cut), StallKind::CpuBoundPoll);
        cut.duration_ns = NEVER_RETURNED_NS;
        assert_eq!(StallKind::of(&cut), StallKind::RuntimeBlocked);
        let stuck = StallRecord {
            ongoing: true,
            class: StallClass::Blocking,
            syscall: Some("futex".into()),
            duration_ns: 4_136_000_000,
            ..StallRecord::default()
        };
        assert_eq!(StallKind::of(&stuck), StallKind::RuntimeBlocked);
        assert_eq!(StallKind::label(&stuck), "runtime-blocked");
    }

    fn frame(function: &str, file: &str) -> crate::Frame {
        crate::Frame::new(function, Some(file.to_string()), Some(1))
    }

    /// Known truth: the caller's own code once a current-thread `block_on` returned (no
    /// runtime frame, from the thread's start in), and a busy period that runs on from there
    /// into the next `block_on`, blocked inside it: outside in most samples, but one sample
    /// in the runtime keeps it.
    #[test]
    fn a_stall_is_outside_a_runtime_only_when_no_sample_shows_one() {
        let sample = |count, inner: &[(&str, &str)]| {
            let mut frames = vec![crate::Frame::new("clock_nanosleep", None, None)];
            frames.extend(inner.iter().map(|&(f, file)| frame(f, file)));
            frames.push(frame("app::main", "/work/app/src/main.rs"));
            frames.push(frame(
                "std::rt::lang_start_internal",
                "/rustc/1/library/std/src/rt.rs",
            ));
            crate::StackSample {
                count,
                frames,
                in_a_call: None,
            }
        };
        let outside = sample(
            9,
            &[(
                "std::thread::sleep",
                "/rustc/1/library/std/src/thread/functions.rs",
            )],
        );
        let inside = sample(
            3,
            &[
                (
                    "std::thread::sleep",
                    "/rustc/1/library/std/src/thread/functions.rs",
                ),
                ("app::main::{{closure}}", "/work/app/src/main.rs"),
                (
                    "tokio::runtime::scheduler::current_thread::CoreGuard::block_on",
                    "/r/registry/src/i/tokio-1.54.1/src/runtime/scheduler/current_thread/mod.rs",
                ),
            ],
        );
        let mut s = StallRecord {
            class: StallClass::Blocking,
            stacks: vec![outside.clone()],
            ..StallRecord::default()
        };
        assert!(mostly_outside_a_runtime(&s));
        s.stacks.push(inside);
        assert!(!mostly_outside_a_runtime(&s));
        // Samples that cannot tell (a Rust frame without its file) count against "mostly".
        let mut unnamed = outside.clone();
        unnamed.frames[1] = crate::Frame::new("app::helper", None, None);
        unnamed.count = 10;
        s.stacks = vec![outside, unnamed];
        assert!(!mostly_outside_a_runtime(&s));
        s.stacks[1].count = 9;
        assert!(mostly_outside_a_runtime(&s));
        // Whole stacks, none in a current-thread `block_on`; without stacks it cannot tell.
        s.stacks.truncate(1);
        assert!(never_in_a_current_thread_block_on(&s));
        assert!(!never_in_a_current_thread_block_on(&StallRecord::default()));
    }

    /// A futex wait, sampled with `call` (a function in `file`) as the frame inward of the
    /// user's line, the machine crowded in `crowded` of the looks.
    fn futex_wait(call: &str, file: &str, crowded: Option<f64>) -> StallRecord {
        StallRecord {
            class: StallClass::Blocking,
            syscall: Some("futex".into()),
            duration_ns: 40_000_000,
            crowded_share: crowded,
            stacks: vec![crate::StackSample {
                count: 3,
                in_a_call: None,
                frames: vec![
                    frame("__lll_lock_wait_private", "lowlevellock.c"),
                    frame(call, file),
                    frame("scraper::fetch::{{closure}}", "src/scraper.rs"),
                    frame(
                        "tokio::runtime::task::raw::poll",
                        "/r/registry/src/i/tokio-1.0/src/x.rs",
                    ),
                ],
            }],
            ..StallRecord::default()
        }
    }

    /// Known truth: a handler that took a `parking_lot::Mutex` another thread held for 35 ms,
    /// built with `debug = "line-tables-only"` (bare names: its call shows as
    /// `lock_api::lock` in lock_api's `mutex.rs`), and one asleep on a crossbeam channel's
    /// `recv` (a call, not a lock).
    #[test]
    fn a_parking_lot_lock_wait_is_lock_contention_and_a_channel_wait_is_not() {
        let reg = "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f";
        let waiting = |function: &str, file: String| StallRecord {
            primitive: Some(crate::Frame::new(function, Some(file), Some(213))),
            ..futex_wait(
                "park",
                "/r/parking_lot_core-0.9.12/src/parking_lot.rs",
                None,
            )
        };
        for (function, file) in [
            ("lock_api::lock", "lock_api-0.4.14/src/mutex.rs"),
            ("lock_api::write", "lock_api-0.4.14/src/rwlock.rs"),
            (
                "parking_lot::wait_while",
                "parking_lot-0.12.5/src/condvar.rs",
            ),
        ] {
            let s = waiting(function, format!("{reg}/{file}"));
            assert_eq!(StallKind::of(&s), StallKind::LockContention, "{function}");
        }
        let recv = waiting(
            "crossbeam_channel::recv",
            format!("{reg}/crossbeam-channel-0.5.17/src/channel.rs"),
        );
        assert_eq!(StallKind::of(&recv), StallKind::BlockingCall);
    }

    /// Known truth, as recorded from an accounts service (`line-tables-only`, bare names):
    /// a handler whose `DashMap::entry` waited 25 ms for its shard, write-locked by another
    /// handler computing under its `RefMut`, and that then computed under its own (two stacks
    /// in its checksum, not through the call); a handler whose rayon `sum` waited for rayon's
    /// threads (a `Condvar`, no lock); and a `println!` that waited for stdout's lock behind a
    /// write to a slow pipe (std's call keeps its kind and its advice).
    #[test]
    fn a_wait_inside_a_library_s_lock_is_lock_contention_and_a_latch_is_not() {
        let reg = "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f";
        let std = "/rustc/59807616e/library/std/src";
        // std's `Mutex`, contended: the innermost frames of a wait in it.
        let std_mutex_wait = || {
            vec![
                (
                    "std::sys::pal::unix::futex::futex_wait",
                    format!("{std}/sys/pal/unix/futex.rs"),
                ),
                (
                    "<std::sys::sync::mutex::futex::Mutex>::lock_contended",
                    format!("{std}/sys/sync/mutex/futex.rs"),
                ),
            ]
        };
        let user = (
            "accounts::handle::{async_fn#0}",
            "/srv/accounts/src/main.rs".to_string(),
            102,
        );
        let stall = |primitive: (&str, String, u32),
                     waiting: Vec<(&str, String)>,
                     computing: u32| {
            let mut frames = vec![crate::Frame::new("syscall", None, None)];
            frames.extend(waiting.into_iter().map(|(f, file)| frame(f, &file)));
            let call = crate::Frame::new(primitive.0, Some(primitive.1.clone()), Some(primitive.2));
            frames.push(call.clone());
            frames.push(crate::Frame::new(
                user.0,
                Some(user.1.clone()),
                Some(user.2),
            ));
            let mut stacks = vec![crate::StackSample {
                count: 2,
                frames,
                in_a_call: None,
            }];
            if computing > 0 {
                stacks.push(crate::StackSample {
                    count: computing,
                    in_a_call: None,
                    frames: vec![
                        frame(
                            "wrapping_mul",
                            &format!("{std}/../../core/src/num/uint_macros.rs"),
                        ),
                        crate::Frame::new("accounts::checksum", Some(user.1.clone()), Some(53)),
                        crate::Frame::new(user.0, Some(user.1.clone()), Some(107)),
                    ],
                });
            }
            StallRecord {
                class: StallClass::Blocking,
                syscall: Some("futex".into()),
                duration_ns: 25_000_000,
                primitive: Some(crate::Frame::new(
                    crate::culprit::primitive_name(&crate::culprit::qualified(&call)),
                    call.file.clone(),
                    call.line,
                )),
                stacks,
                ..StallRecord::default()
            }
        };
        let dashmap = |computing| {
            stall(
                (
                    "entry<u64, accounts::Session>",
                    format!("{reg}/dashmap-6.2.1/src/lib.rs"),
                    872,
                ),
                vec![
                    (
                        "futex_wait",
                        format!("{reg}/parking_lot_core-0.9.12/src/thread_parker/linux.rs"),
                    ),
                    (
                        "park<dashmap::lock::{impl#2}::lock_exclusive_slow::{closure_env#0}>",
                        format!("{reg}/parking_lot_core-0.9.12/src/parking_lot.rs"),
                    ),
                    (
                        "lock_exclusive_slow",
                        format!("{reg}/dashmap-6.2.1/src/lock.rs"),
                    ),
                    ("lock_exclusive", format!("{reg}/dashmap-6.2.1/src/lock.rs")),
                    (
                        "write<dashmap::lock::RawRwLock, hashbrown::raw::RawTable<u64>>",
                        format!("{reg}/lock_api-0.4.14/src/rwlock.rs"),
                    ),
                    (
                        "_entry<u64, accounts::Session>",
                        format!("{reg}/dashmap-6.2.1/src/lib.rs"),
                    ),
                ],
                computing,
            )
        };
        assert_eq!(
            dashmap(0).primitive.as_ref().unwrap().function,
            "dashmap::entry"
        );
        assert_eq!(StallKind::of(&dashmap(0)), StallKind::LockContention);
        // Its stacks computing after the wait are not through the call.
        assert_eq!(StallKind::of(&dashmap(2)), StallKind::LockContention);
        let rayon = stall(
            (
                "sum<rayon::iter::map::Map<rayon::slice::Iter<f64>>, f64>",
                format!("{reg}/rayon-1.11.0/src/iter/mod.rs"),
                1381,
            ),
            vec![
                (
                    "std::sys::pal::unix::futex::futex_wait",
                    format!("{std}/sys/pal/unix/futex.rs"),
                ),
                (
                    "<std::sys::sync::condvar::futex::Condvar>::wait_optional_timeout",
                    format!("{std}/sys/sync/condvar/futex.rs"),
                ),
                ("wait<bool>", format!("{std}/sync/poison/condvar.rs")),
                (
                    "wait_and_reset",
                    format!("{reg}/rayon-core-1.13.0/src/latch.rs"),
                ),
                (
                    "in_worker_cold<rayon_core::join::join_context::{closure_env#0}>",
                    format!("{reg}/rayon-core-1.13.0/src/registry.rs"),
                ),
            ],
            0,
        );
        assert_eq!(StallKind::of(&rayon), StallKind::BlockingCall);
        let println = stall(
            ("_print", format!("{std}/io/stdio.rs"), 1200),
            [
                std_mutex_wait(),
                vec![("lock", format!("{std}/sync/reentrant_lock.rs"))],
            ]
            .concat(),
            0,
        );
        assert_eq!(StallKind::of(&println), StallKind::BlockingCall);
        // The same lock reached through another crate's print (`anstream::println!`).
        let anstream = stall(
            (
                "write_fmt<anstream::auto::AutoStream<std::io::stdio::Stdout>>",
                format!("{reg}/anstream-0.6.18/src/auto.rs"),
                220,
            ),
            [
                std_mutex_wait(),
                vec![
                    ("lock", format!("{std}/sync/reentrant_lock.rs")),
                    ("lock", format!("{std}/io/stdio.rs")),
                ],
            ]
            .concat(),
            0,
        );
        assert_eq!(StallKind::of(&anstream), StallKind::BlockingCall);
        // An awaited client future waiting for its pool's lock (a std `Mutex` in
        // hyper-util's pool under reqwest's `Pending::poll`): the call is async already, and
        // on a crowded machine the holder waited for a core.
        let mut pool = stall(
            (
                "<reqwest::async_impl::client::Pending as core::future::future::Future>::poll",
                format!("{reg}/reqwest-0.12.28/src/async_impl/client.rs"),
                2791,
            ),
            [
                std_mutex_wait(),
                vec![
                    (
                        "lock<hyper_util::client::legacy::pool::PoolInner>",
                        format!("{std}/sync/poison/mutex.rs"),
                    ),
                    (
                        "checkout",
                        format!("{reg}/hyper-util-0.1.21/src/client/legacy/pool.rs"),
                    ),
                ],
            ]
            .concat(),
            0,
        );
        assert_eq!(StallKind::of(&pool), StallKind::BlockingCall);
        pool.crowded_share = Some(0.9);
        assert!(preempted(&pool));
        // A `Condvar` met before a lock, inward to outward: a wait for a notification.
        let notified = stall(
            ("recv<app::Job>", format!("{reg}/jobq-0.3.0/src/lib.rs"), 40),
            vec![
                (
                    "futex_wait",
                    format!("{reg}/parking_lot_core-0.9.12/src/thread_parker/linux.rs"),
                ),
                (
                    "wait_until_internal",
                    format!("{reg}/parking_lot-0.12.5/src/condvar.rs"),
                ),
                (
                    "read<parking_lot::raw_rwlock::RawRwLock, app::Queue>",
                    format!("{reg}/lock_api-0.4.14/src/rwlock.rs"),
                ),
            ],
            0,
        );
        assert_eq!(StallKind::of(&notified), StallKind::BlockingCall);
    }

    /// Known truth: a handler's `spawn_blocking` (the fix for its sort) slept 49 ms in futex on
    /// tokio's blocking-pool lock, held by a thread starting a new pool thread while sorts
    /// took both cores. With the machine crowded, the holder's wait for a core; not crowded,
    /// the poll's.
    #[test]
    fn a_futex_wait_inside_tokio_s_spawn_blocking_on_a_crowded_machine_is_preempted() {
        let pool = "/r/registry/src/i/tokio-1.54.1/src/runtime/blocking/pool.rs";
        let spawn = "tokio::runtime::blocking::pool::spawn_blocking";
        let waited = |file: Option<&str>, crowded| StallRecord {
            primitive: Some(crate::Frame::new(spawn, file.map(str::to_string), Some(1))),
            ..futex_wait(spawn, pool, crowded)
        };
        assert!(preempted(&waited(Some(pool), Some(0.9))));
        // Without files (a build without debug info), by its name.
        assert!(preempted(&waited(None, Some(0.9))));
        assert!(!preempted(&waited(Some(pool), Some(0.2))));
        assert_eq!(
            StallKind::label(&waited(Some(pool), Some(0.2))),
            "blocking-call"
        );
        // Another call of tokio's (a `watch` channel's lock, held while the sender's closure
        // runs): the poll's.
        let watch = StallRecord {
            primitive: Some(crate::Frame::new(
                "tokio::sync::watch::Receiver<T>::borrow",
                Some("/r/registry/src/i/tokio-1.54.1/src/sync/watch.rs".into()),
                Some(1),
            )),
            ..futex_wait("tokio::sync::watch::Receiver<T>::borrow", pool, Some(0.9))
        };
        assert!(!preempted(&watch));
        // A call into the program's own library: the poll's.
        let own = StallRecord {
            primitive: Some(crate::Frame::new("svc_db::query", None, None)),
            ..futex_wait("svc_db::query", "/app/db/src/lib.rs", Some(0.9))
        };
        assert!(!preempted(&own));
    }

    /// Known truth: the scraper's fixed twin, on a machine where other processes took the
    /// cores, slept in futex under reqwest's `Pending::poll` (its pool's lock, glibc's malloc
    /// lock) at its `.send().await` line. With the machine crowded in most looks that is the
    /// machine's doing; with it not crowded, or with the wait in a call the user's code made
    /// (a std lock, `block_on`, a channel's `recv`), it stays the poll's.
    #[test]
    fn a_futex_wait_inside_an_awaited_future_on_a_crowded_machine_is_preempted() {
        let reqwest = "/r/registry/src/index/reqwest-0.12.0/src/async_impl/client.rs";
        let pending =
            "<reqwest::async_impl::client::Pending as core::future::future::Future>::poll";
        let crowded = futex_wait(pending, reqwest, Some(0.8));
        assert!(preempted(&crowded));
        assert_eq!(StallKind::label(&crowded), "preempted");
        let body = futex_wait("reqwest::Response::text::{{closure}}", reqwest, Some(0.5));
        assert!(preempted(&body));
        // At the edge and below it, not crowded, not known: the poll's.
        for share in [Some(0.49), Some(0.0), None] {
            let s = futex_wait(pending, reqwest, share);
            assert!(!preempted(&s), "{share:?}");
            assert_eq!(StallKind::label(&s), "blocking-call");
        }
        // Calls the user's code made that wait by design, on a crowded machine.
        let std_lock = futex_wait(
            "std::sync::poison::mutex::Mutex<T>::lock",
            "/rustc/abc/library/std/src/sync/poison/mutex.rs",
            Some(1.0),
        );
        let std_lock = StallRecord {
            primitive: Some(crate::Frame::new("std::sync::Mutex::lock", None, None)),
            ..std_lock
        };
        assert!(!preempted(&std_lock));
        assert_eq!(StallKind::label(&std_lock), "lock-contention");
        // Dropping a value whose type holds a lock (its `Drop` joins a thread, in futex) is
        // no lock wait: the type argument of the drop glue does not count.
        let drop_glue = StallRecord {
            primitive: Some(crate::Frame::new(
                "core::ptr::drop_in_place::<alloc::sync::Arc<std::sync::Mutex<app::Pool>>>",
                Some("/rustc/abc/library/core/src/ptr/mod.rs".into()),
                Some(805),
            )),
            crowded_share: Some(0.0),
            ..std_lock.clone()
        };
        assert_eq!(StallKind::label(&drop_glue), "blocking-call");
        // A log line waiting for its writer's lock (another thread's write holds it): the
        // macro's closure is a call, not an awaited future's body, so a crowded machine
        // does not make it the machine's doing.
        let log_line = StallRecord {
            primitive: Some(crate::Frame::new("tracing::event!", None, None)),
            ..futex_wait(
                "{closure#7}",
                "/r/registry/src/i/tracing-0.1.41/src/macros.rs",
                Some(1.0),
            )
        };
        assert!(!preempted(&log_line));
        assert_eq!(StallKind::label(&log_line), "blocking-call");
        for call in [
            "futures_executor::local_pool::block_on",
            "std::sync::mpsc::Receiver<T>::recv",
            "std::thread::park",
        ] {
            let s = futex_wait(call, "/r/x.rs", Some(1.0));
            assert!(!preempted(&s), "{call}");
        }
        // Known truth: a handler's rayon `reduce`, asleep while rayon's threads computed (60 of
        // 60 requests, the machine crowded by them), its closures among the type arguments as
        // line-tables-only debug info names it. Read as an awaited closure, it was preempted.
        let rayon = futex_wait(
            "reduce<rayon::iter::map::Map<rayon::range::Iter<u64>, fn(u64) -> u64>, \
             shop::handle::{async_fn#0}::{closure_env#5}, shop::handle::{async_fn#0}::{closure_env#4}>",
            "/r/registry/src/index/rayon-1.12.0/src/iter/mod.rs",
            Some(1.0),
        );
        assert!(!preempted(&rayon));
        assert_eq!(StallKind::label(&rayon), "blocking-call");
        // Still running at the end of the run: not preempted, whatever the machine.
        let ongoing = StallRecord {
            ongoing: true,
            ..futex_wait(pending, reqwest, Some(1.0))
        };
        assert!(!preempted(&ongoing));
    }

    /// Known truth: beside two CPU hogs, the bench's fixed scraper and its saturated log
    /// aggregator slept in futex on glibc's arena lock inside `realloc` (a `String` growing)
    /// at a line of their own code, a call that is not a future's poll. With the machine
    /// crowded that is the lock holder waiting for a core; not crowded, it stays the poll's.
    #[test]
    fn a_futex_wait_on_the_allocator_lock_on_a_crowded_machine_is_preempted() {
        let realloc = |crowded| StallRecord {
            class: StallClass::Blocking,
            syscall: Some("futex".into()),
            duration_ns: 20_000_000,
            crowded_share: crowded,
            stacks: vec![crate::StackSample {
                count: 2,
                in_a_call: None,
                frames: vec![
                    frame("__lll_lock_wait_private", "lowlevellock.c"),
                    crate::Frame::new("realloc", None, None),
                    frame("realloc", "/rustc/abc/library/alloc/src/alloc.rs"),
                    frame(
                        "alloc::string::String::push_str",
                        "/rustc/abc/library/alloc/src/string.rs",
                    ),
                    frame("app::redact", "src/redact.rs"),
                ],
            }],
            ..StallRecord::default()
        };
        assert!(preempted(&realloc(Some(0.7))));
        // `free`, with glibc's static `_int_free` unnamed between it and the wait.
        let mut free = realloc(Some(0.7));
        free.stacks[0].frames[1] = crate::Frame::new("0x7fb37a94997d", None, None);
        free.stacks[0].frames[2] = crate::Frame::new("__libc_free", None, None);
        assert!(preempted(&free));
        assert!(!preempted(&realloc(Some(0.3))));
        assert!(!preempted(&realloc(None)));
    }
}
