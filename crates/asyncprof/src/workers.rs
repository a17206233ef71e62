//! The registries of worker threads and runtimes: a thread claims a worker entry at its first
//! event and frees it when it stops; parks and unparks; which runtime each thread works for
//! and whether it holds one of its worker cores.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering::*};
use std::sync::Mutex;

use asyncprof_format as format;
use hdrhistogram::Histogram;

use crate::clock;
use crate::hist::{self, lock};
use crate::poll::{in_poll, ThreadState, THREAD};
use crate::recorder::{Recorder, MAX_RUNTIMES, WORKER_POLL_COUNTS};
use crate::tables::{PollCounters, TaskSlot};

/// Locations a worker holds untracked completions for at once.
pub(crate) const HELD_COMPLETIONS: usize = 8;

thread_local! {
    /// Frees the thread's worker entry when the thread ends, for threads that no tokio hook
    /// sees stop: a current-thread runtime's `block_on` thread, or any thread that ran a
    /// poll, a park or a busy period outside tokio's own threads. Set once, when the thread
    /// registers (cold); [`THREAD`] itself has no destructor, so that the hot path reaches it
    /// without a check.
    static STOP_AT_EXIT: StopAtExit = const {
        StopAtExit {
            recorder: std::cell::Cell::new(None),
            untracked: std::cell::Cell::new(0),
        }
    };
}

/// The recording whose worker entry this thread holds, told at the thread's end.
struct StopAtExit {
    recorder: std::cell::Cell<Option<&'static Recorder>>,
    /// The recording (generation) that found no entry free for this thread and counted it
    /// in `untracked_threads`: such a thread comes back to register at every event.
    untracked: std::cell::Cell<u64>,
}

impl Drop for StopAtExit {
    fn drop(&mut self) {
        if let Some(rec) = self.recorder.take() {
            // A no-op when tokio's thread-stop hook already freed the entry.
            rec.thread_stop();
        }
    }
}

/// One tokio runtime whose threads asyncprof has seen.
#[derive(Debug)]
pub(crate) struct RuntimeEntry {
    pub(crate) info: format::RuntimeInfo,
    /// Registered threads of this runtime that have not stopped.
    live: u32,
    /// A multi-thread runtime's handle, kept while it has live threads: tokio's metrics say
    /// which thread holds each worker, and a thread inside `block_in_place` holds none. In
    /// the stable and hooks tiers a current-thread runtime's too, for its worker's busy time,
    /// until its last registered thread ends or recording stops.
    handle: Option<tokio::runtime::Handle>,
}

/// One thread that polls tasks.
#[derive(Debug)]
// Own cache lines: two workers never write the same line (no false sharing).
#[repr(align(128))]
pub(crate) struct Worker {
    pub(crate) index: u32,
    /// Claimed by a live thread.
    pub(crate) active: AtomicBool,
    pub(crate) tid: AtomicI32,
    /// The thread's stack, lowest and highest address (0, 0: not known), so that a stall's
    /// stack is copied no further than its top.
    pub(crate) stack_lo: AtomicU64,
    pub(crate) stack_hi: AtomicU64,
    pub(crate) name: Mutex<String>,
    /// The thread's std id, to compare with the ids tokio's metrics give.
    pub(crate) thread: Mutex<Option<std::thread::ThreadId>>,
    /// The runtime the thread works for (tokio's runtime id; 0: not known).
    pub(crate) runtime: AtomicU64,
    /// Twice the polls started, plus one while a poll runs: odd means "inside a poll".
    pub(crate) state: AtomicU64,
    /// The task being polled, valid while `state` is odd.
    pub(crate) task_id: AtomicU64,
    /// Coarse start of the current poll, valid while `state` is odd.
    pub(crate) poll_start_ns: AtomicU64,
    /// Long polls and exactly timed samples (its `polls` stays 0: `state` counts polls).
    pub(crate) counts: PollCounters,
    pub(crate) parks: AtomicU64,
    pub(crate) parked_ns: AtomicU64,
    /// When the current park began (0: not parked).
    pub(crate) park_since_ns: AtomicU64,
    pub(crate) registered_ns: AtomicU64,
    pub(crate) stopped_ns: AtomicU64,
    /// Span enters that `state` counted as polls and were not (the layer tier's enter of a
    /// task's span to drop its future).
    pub(crate) non_poll_enters: AtomicU64,
    /// The thread drives a current-thread runtime (calls its `block_on`).
    pub(crate) current_thread: AtomicBool,
    /// Stable tier: the thread registered as it started, presumed one of its multi-thread
    /// runtime's workers (see [`Recorder::thread_start`]); its first park (`parks` above 0)
    /// proves it one.
    pub(crate) presumed: AtomicBool,
    /// The watchdog found that the thread, presumed a worker, runs none (see
    /// [`Worker::runs_no_worker`]): the `registered_ns` of the thread it ruled out (0: none),
    /// so that a mark stored as that thread stops never holds for the entry's next thread.
    pub(crate) ruled_out: AtomicU64,
    /// `parks` when the thread registered: an entry's counts go on from its last thread's.
    pub(crate) parks_at_registration: AtomicU64,
    /// Task polls whose end the after-poll hook never reported (see
    /// [`Recorder::poll_never_ended`]); only the entry's thread writes it, snapshots add them.
    pub(crate) never_ended: AtomicU64,
    pub(crate) hists: Mutex<WorkerHists>,
    /// Polls of recently polled tasks by this worker, indexed by task id modulo the table
    /// size and tagged with the id. Only this worker writes it, so counting a poll touches
    /// no cache line another thread writes. An entry taken over by another task hands its
    /// count to the task's slot.
    /// A fixed-size array: indexed by a masked id, with no bounds check on the hot path.
    task_polls: Box<[TaskPollCount; WORKER_POLL_COUNTS]>,
    /// Completions of untracked tasks counted here and not yet added to their location,
    /// indexed by location index modulo the table size and tagged with it: only this worker
    /// writes them, so the workers do not take turns on a location's counter at every task's
    /// end. Snapshots add them in; see [`Recorder::held_completions`].
    pub(crate) held_completions: [HeldCompletions; HELD_COMPLETIONS],
}

/// Stable tier: the threads of each multi-thread runtime counted as they start (see
/// [`Recorder::thread_start`]).
#[derive(Debug, Default)]
pub(crate) struct ThreadStarts {
    /// (runtime id, threads counted) of the last [`MAX_RUNTIMES`] runtimes.
    counts: Vec<(u64, usize)>,
    /// The highest runtime id let go to make room. tokio numbers runtimes in the order it
    /// builds them, and the oldest is let go first: a runtime at or below it started long
    /// ago, its workers counted then.
    forgotten_up_to: u64,
}

impl ThreadStarts {
    /// Threads of runtime `id` counted so far, plus `add`; `None` for a runtime let go.
    pub(crate) fn count(&mut self, id: u64, add: usize) -> Option<usize> {
        if let Some((_, n)) = self.counts.iter_mut().find(|(r, _)| *r == id) {
            *n += add;
            return Some(*n);
        }
        if id <= self.forgotten_up_to {
            return None;
        }
        if self.counts.len() >= MAX_RUNTIMES {
            if let Some(oldest) = (0..self.counts.len()).min_by_key(|&i| self.counts[i].0) {
                let (old, _) = self.counts.swap_remove(oldest);
                self.forgotten_up_to = self.forgotten_up_to.max(old);
            }
        }
        self.counts.push((id, add));
        Some(add)
    }
}

impl Worker {
    /// Stable tier: the thread, presumed a worker as it started ([`Recorder::thread_start`]),
    /// runs none: it never parked, and the watchdog found every worker of its runtime run by
    /// a thread that did. Its busy period is no worker's (a blocking thread's, begun as it
    /// started): the watchdog ignores it and reports leave it out.
    pub(crate) fn runs_no_worker(&self) -> bool {
        let ruled_out = self.ruled_out.load(Relaxed);
        ruled_out != 0 && ruled_out == self.registered_ns.load(Relaxed) && self.unproven()
    }

    /// Stable tier: the thread was presumed a worker as it started and has not parked since
    /// it registered.
    pub(crate) fn unproven(&self) -> bool {
        self.presumed.load(Relaxed) && !self.parked_since_registration()
    }

    /// The thread parked since it registered (only a worker's thread parks).
    pub(crate) fn parked_since_registration(&self) -> bool {
        self.parks.load(Relaxed) > self.parks_at_registration.load(Relaxed)
    }
}

/// Untracked completions a worker holds for one location.
#[derive(Debug, Default)]
pub(crate) struct HeldCompletions {
    /// The location's index (0: none).
    pub(crate) location: AtomicU32,
    pub(crate) count: AtomicU64,
}

/// One entry of a worker's per-task poll counts: the task and its polls on this worker in one
/// word, 8 bytes (two words took twice the cache, and a workload with more live tasks than a
/// worker's caches hold missed them at every poll). The high 32 bits are the task id's bits
/// above the entry's index, plus one (0: no task); the low 32 bits its polls. Task ids 2^46
/// apart share a tag: a count handed over from an entry then goes to the task with the lower
/// id if that one is still alive (2^46 spawns take 81 days at 10 million a second).
#[derive(Debug, Default)]
pub(crate) struct TaskPollCount(AtomicU64);

/// Bits of a task id that the entry's index stands for.
const INDEX_BITS: u32 = WORKER_POLL_COUNTS.trailing_zeros();

impl TaskPollCount {
    /// Task `id`'s tag (the high word of its entry).
    #[inline(always)]
    fn tag(id: u64) -> u64 {
        (((id >> INDEX_BITS) + 1) & u64::from(u32::MAX)).max(1)
    }

    /// Whether entry value `e` is task `id`'s.
    #[inline(always)]
    fn is_of(e: u64, id: u64) -> bool {
        e >> 32 == Self::tag(id)
    }

    /// Hot path: count one more poll of task `id` if this entry is its own and not full.
    /// Only the worker's own thread calls this.
    #[inline(always)]
    pub(crate) fn count(&self, id: u64) -> bool {
        let e = self.0.load(Relaxed);
        if Self::is_of(e, id) && e as u32 != u32::MAX {
            // Single writer: a plain increment, no atomic RMW.
            self.0.store(e + 1, Relaxed);
            true
        } else {
            false
        }
    }

    /// The entry's task and its polls here, `(0, 0)` when it has none; `id` is any task id
    /// that maps to this entry.
    pub(crate) fn held(&self, id: u64) -> (u64, u64) {
        let e = self.0.load(Relaxed);
        let tag = e >> 32;
        if tag == 0 {
            return (0, 0);
        }
        let index = id & ((1 << INDEX_BITS) - 1);
        (((tag - 1) << INDEX_BITS) | index, u64::from(e as u32))
    }

    /// Task `id`'s polls held here.
    pub(crate) fn polls_of(&self, id: u64) -> u64 {
        let e = self.0.load(Relaxed);
        if Self::is_of(e, id) {
            u64::from(e as u32)
        } else {
            0
        }
    }

    /// The entry now counts task `id`, one poll so far; returns what it held before (as
    /// [`TaskPollCount::held`]). Only the worker's own thread calls this.
    pub(crate) fn take_over(&self, id: u64) -> (u64, u64) {
        let before = self.held(id);
        self.0.store((Self::tag(id) << 32) | 1, Relaxed);
        before
    }

    /// Take back one poll of task `id` counted here; false when the entry holds none of it.
    /// Only the worker's own thread calls this.
    pub(crate) fn uncount(&self, id: u64) -> bool {
        let e = self.0.load(Relaxed);
        if Self::is_of(e, id) && e as u32 > 0 {
            self.0.store(e - 1, Relaxed);
            true
        } else {
            false
        }
    }
}

/// A worker's histograms, written on rare branches only (long polls, samples, delays).
#[derive(Debug)]
pub(crate) struct WorkerHists {
    pub(crate) long: Histogram<u64>,
    pub(crate) sampled: Histogram<u64>,
    pub(crate) sched: Histogram<u64>,
}

impl Worker {
    /// Hot path: the entry of this worker's per-task poll counts that task `id` maps to.
    #[inline(always)]
    pub(crate) fn poll_count(&self, id: u64) -> &TaskPollCount {
        &self.task_polls[id as usize & (WORKER_POLL_COUNTS - 1)]
    }

    fn new(index: u32) -> Self {
        Worker {
            index,
            active: AtomicBool::new(false),
            tid: AtomicI32::new(0),
            stack_lo: AtomicU64::new(0),
            stack_hi: AtomicU64::new(0),
            name: Mutex::new(String::new()),
            thread: Mutex::new(None),
            runtime: AtomicU64::new(0),
            state: AtomicU64::new(0),
            task_id: AtomicU64::new(0),
            poll_start_ns: AtomicU64::new(0),
            counts: PollCounters::default(),
            parks: AtomicU64::new(0),
            parked_ns: AtomicU64::new(0),
            park_since_ns: AtomicU64::new(0),
            registered_ns: AtomicU64::new(0),
            stopped_ns: AtomicU64::new(0),
            non_poll_enters: AtomicU64::new(0),
            current_thread: AtomicBool::new(false),
            presumed: AtomicBool::new(false),
            ruled_out: AtomicU64::new(0),
            parks_at_registration: AtomicU64::new(0),
            never_ended: AtomicU64::new(0),
            task_polls: (0..WORKER_POLL_COUNTS)
                .map(|_| TaskPollCount::default())
                .collect::<Box<[_]>>()
                .try_into()
                .expect("WORKER_POLL_COUNTS entries"),
            held_completions: Default::default(),
            hists: Mutex::new(WorkerHists {
                long: hist::new_fine(),
                sampled: hist::new_fine(),
                sched: hist::new_fine(),
            }),
        }
    }
}

impl Recorder {
    // === park and unpark ===

    /// Hot path (per park): the calling thread parks (idles).
    pub(crate) fn park(&'static self) {
        THREAD.with(|t| {
            if let Some(w) = self.thread_worker(t) {
                self.parked_with(t, w);
                w.parks.fetch_add(1, Relaxed);
                w.park_since_ns.store(clock::exact_ns().max(1), Relaxed);
            }
        })
    }

    /// Stable tier, once per thread at its start: a multi-thread runtime's first threads to
    /// take a task from its blocking pool's queue run its workers (tokio queues one task per
    /// worker as it builds the runtime, before the runtime can queue any other, and the
    /// queue is first in, first out). Such a thread registers now and begins a busy period,
    /// so that a worker busy from its start, which never parks, is watched: its first event
    /// would otherwise be its first park. Threads are counted after they register, as they
    /// go on to take their task: a thread that starts beside a worker's (a `spawn_blocking`
    /// as the runtime starts) can still take that worker's place in the count, and is then
    /// taken for a worker until every worker has parked once (see [`Worker::runs_no_worker`]).
    pub(crate) fn thread_start(&'static self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return;
        }
        // tokio's sharded blocking queue (opt-in, also by this variable in any build) hands
        // tasks out in no order: no thread is presumed then.
        static SHARDED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let sharded = SHARDED.get_or_init(|| {
            std::env::var_os("TOKIO_UNSTABLE_SHARDED_BLOCKING_QUEUE")
                .is_some_and(|v| !v.is_empty() && v != "0")
        });
        if *sharded {
            return;
        }
        let id = runtime_id(handle.id());
        let workers = handle.metrics().num_workers();
        // Threads of this runtime counted so far, plus `add`.
        let count = |add: usize| {
            lock(&self.thread_starts)
                .count(id, add)
                .unwrap_or(usize::MAX)
        };
        if count(0) >= workers {
            return;
        }
        let Some(w) = self.current_worker() else {
            return;
        };
        // As an unpark does: the clock may stand still while the watchdog sleeps.
        clock::publish();
        if count(1) > workers {
            // Every worker's place was taken while this thread registered: it leaves no
            // record (an entry never registered is not reported).
            w.registered_ns.store(0, Relaxed);
            self.thread_stop();
            return;
        }
        w.presumed.store(true, Relaxed);
        self.busy_start();
    }

    /// Hot path (per unpark): the calling thread unparks. The first worker to unpark while
    /// the watchdog sleeps wakes it.
    pub(crate) fn unpark(&'static self) {
        let now = clock::publish();
        if let Some(w) = self.current_worker() {
            // SeqCst with the load of `watchdog_idle` below, against the watchdog's store of
            // it and its reading of the park states: either the watchdog sees this worker
            // unparked and stays awake, or this worker sees it asleep and wakes it.
            let since = w.park_since_ns.swap(0, SeqCst);
            if since != 0 {
                w.parked_ns.fetch_add(now.saturating_sub(since), Relaxed);
            }
        }
        if self.watchdog_idle.load(SeqCst) {
            self.wake_watchdog(now);
        }
    }

    /// Wake the idle watchdog, noting when (`now`, the exact time this thread just read):
    /// stored before the thread unpark, so the watchdog, whose wait this unpark ends, sees it
    /// (an unpark synchronizes with the park that takes its token).
    #[cold]
    #[inline(never)]
    fn wake_watchdog(&self, now: u64) {
        if self.watchdog_idle.swap(false, Relaxed) {
            self.watchdog_woken_ns.store(now.max(1), Relaxed);
            if let Some(t) = self.watchdog_thread.get() {
                t.unpark();
            }
        }
    }

    /// Polls (busy periods, in the stable tier) begun on every worker so far. Cold: the
    /// watchdog's poll rate.
    pub(crate) fn polls_begun(&self) -> u64 {
        self.workers()
            .map(|w| w.state.load(Relaxed).div_ceil(2))
            .sum()
    }

    /// Whether every worker has been parked since `since` or earlier; true with no worker
    /// at all (none yet, or every thread ended). Then the watchdog may sleep until one
    /// unparks or a thread registers (both wake it). A blocking thread taken for a worker as
    /// it started ([`Worker::runs_no_worker`]) does not count.
    pub(crate) fn all_parked_since(&self, since: u64) -> bool {
        for w in self.workers() {
            if !w.active.load(Acquire) || w.runs_no_worker() {
                continue;
            }
            let parked = w.park_since_ns.load(SeqCst);
            if parked == 0 || parked > since || in_poll(w) {
                return false;
            }
        }
        true
    }

    fn current_worker(&'static self) -> Option<&'static Worker> {
        THREAD.with(|t| self.thread_worker(t))
    }

    // === threads coming and going ===

    /// The calling thread stops: free its worker entry for a later thread.
    pub(crate) fn thread_stop(&'static self) {
        THREAD.with(|t| {
            if t.generation.get() != self.generation {
                return;
            }
            if let Some(w) = t.worker.take() {
                // A poll or busy period the thread ends inside (a `block_on` thread's last
                // busy period, which no park closes) ends here: the entry's next thread
                // starts from a closed one. Release, as `publish_poll_end`.
                let seq = t.seq.get();
                if seq & 1 == 1 {
                    t.seq.set(seq + 1);
                    w.state.store(seq + 1, Release);
                }
                for held in &w.held_completions {
                    self.release_held_completions(held);
                }
                w.stopped_ns.store(clock::exact_ns(), Relaxed);
                self.runtime_thread_stopped(w.runtime.load(Relaxed));
                w.active.store(false, Release);
            }
        })
    }

    /// Worker entry `i`, claimed for thread `tid` as if that thread had registered (for the
    /// watchdog's tests, which play a worker's part by hand).
    #[cfg(test)]
    pub(crate) fn claim_worker_for_test(&self, i: usize, tid: i32) -> &Worker {
        let w = self.workers[i].get_or_init(|| Worker::new(i as u32));
        w.tid.store(tid, Relaxed);
        w.active.store(true, Release);
        w
    }

    /// First event on this thread: claim a worker entry (reusing one a stopped thread freed).
    /// Once per thread.
    #[cold]
    #[inline(never)]
    pub(crate) fn register_thread(&'static self, t: &ThreadState) -> Option<&'static Worker> {
        let mut found = None;
        for (i, cell) in self.workers.iter().enumerate() {
            let w = cell.get_or_init(|| Worker::new(i as u32));
            // Acquire: see the stopped thread's last writes before reusing its entry.
            if w.active
                .compare_exchange(false, true, Acquire, Relaxed)
                .is_ok()
            {
                found = Some(w);
                break;
            }
        }
        let Some(w) = found else {
            // Once per thread and recording.
            let first = STOP_AT_EXIT
                .try_with(|s| s.untracked.replace(self.generation) != self.generation)
                .unwrap_or(false);
            if first {
                self.loss.untracked_threads.fetch_add(1, Relaxed);
            }
            return None;
        };
        w.tid.store(asyncprof_sampler::current_tid(), Relaxed);
        let stack = asyncprof_sampler::current_stack().unwrap_or(0..0);
        w.stack_lo.store(stack.start, Relaxed);
        w.stack_hi.store(stack.end, Relaxed);
        let me = std::thread::current();
        *lock(&w.name) = me.name().unwrap_or("<unnamed>").to_string();
        *lock(&w.thread) = Some(me.id());
        w.registered_ns.store(clock::exact_ns(), Relaxed);
        w.stopped_ns.store(0, Relaxed);
        w.presumed.store(false, Relaxed);
        w.ruled_out.store(0, Relaxed);
        w.parks_at_registration
            .store(w.parks.load(Relaxed), Relaxed);
        w.park_since_ns.store(0, Relaxed);
        // The entry's poll count continues from where the last thread left it, even: past a
        // poll it left open, so that the watchdog does not take this thread's first poll for
        // that one (`thread_stop` closes it; a thread that ended without stopping may not).
        let seq = (w.state.load(Relaxed) + 1) & !1;
        w.state.store(seq, Relaxed);
        t.seq.set(seq);
        t.generation.set(self.generation);
        t.worker.set(Some(w));
        w.task_id.store(0, Relaxed);
        t.exact_start_ns.set(0);
        t.countdown.set(1);
        self.note_runtime(w);
        // Gone at the thread's end (no destructor runs where thread-locals are already
        // being torn down: the entry stays claimed then, as before).
        let _ = STOP_AT_EXIT.try_with(|s| s.recorder.set(Some(self)));
        // SeqCst, against the watchdog's store of `watchdog_idle` and its reading of this
        // count (as in `unpark`): either the watchdog sees this thread and stays awake, or
        // this thread sees it asleep and wakes it. A first event that is a poll comes with
        // no unpark to wake it.
        self.registrations.fetch_add(1, SeqCst);
        if self.watchdog_idle.load(SeqCst) {
            // As an unpark does: the clock stood still while the watchdog slept.
            self.wake_watchdog(clock::publish());
        }
        Some(w)
    }

    // === runtimes ===

    /// Learn which runtime this thread runs for: its id, name, flavor and worker count (the
    /// header's flavor and worker count are those of the first runtime seen).
    fn note_runtime(&self, w: &Worker) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            w.runtime.store(0, Relaxed);
            w.current_thread.store(false, Relaxed);
            return;
        };
        let flavor = match handle.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::CurrentThread => format::Flavor::CurrentThread,
            tokio::runtime::RuntimeFlavor::MultiThread => format::Flavor::MultiThread,
            _ => format::Flavor::Unknown,
        };
        let workers = handle.metrics().num_workers() as u32;
        self.note_flavor(flavor);
        let _ = self
            .worker_count
            .compare_exchange(0, workers, Relaxed, Relaxed);
        let id = runtime_id(handle.id());
        w.runtime.store(id, Relaxed);
        w.current_thread
            .store(flavor == format::Flavor::CurrentThread, Relaxed);
        // Busy periods (the stable tier's, and in the hooks tier a current-thread runtime's
        // time between its tasks' polls) are checked against tokio's busy time of each worker
        // (see `crate::watchdog`): of a multi-thread runtime while its threads live, and of a
        // current-thread one too, whose `block_on` thread tokio never says has stopped: its
        // handle is let go when that thread ends or recording stops
        // (`Recorder::release_runtime_handles`).
        let keep = (flavor == format::Flavor::MultiThread
            || (flavor == format::Flavor::CurrentThread
                && matches!(self.tier(), format::Tier::Stable | format::Tier::Hooks)))
        .then(|| handle.clone());
        let mut rts = lock(&self.runtimes);
        if let Some(e) = rts.iter_mut().find(|e| e.info.id == id) {
            e.live += 1;
            e.handle = e.handle.take().or(keep);
            return;
        }
        let mut info = format::RuntimeInfo::default();
        info.id = id;
        info.name = handle.name().map(str::to_string);
        info.flavor = flavor;
        info.workers = workers;
        let entry = RuntimeEntry {
            info,
            live: 1,
            handle: keep,
        };
        if rts.len() < MAX_RUNTIMES {
            rts.push(entry);
        } else if let Some(free) = rts.iter_mut().find(|e| e.live == 0) {
            *free = entry;
        }
    }

    /// A registered thread of runtime `id` stopped; with its last, its handle is let go.
    fn runtime_thread_stopped(&self, id: u64) {
        let released = {
            let mut rts = lock(&self.runtimes);
            rts.iter_mut().find(|e| e.info.id == id).and_then(|e| {
                e.live = e.live.saturating_sub(1);
                if e.live == 0 {
                    e.handle.take()
                } else {
                    None
                }
            })
        };
        // Dropped outside the lock.
        drop(released);
    }

    /// Recording stopped: let go of every runtime handle kept (a current-thread runtime's is
    /// otherwise kept until its `block_on` thread ends, with the runtime's driver handles).
    pub(crate) fn release_runtime_handles(&self) {
        let released: Vec<_> = lock(&self.runtimes)
            .iter_mut()
            .filter_map(|e| e.handle.take())
            .collect();
        // Dropped outside the lock.
        drop(released);
    }

    /// Whether runtime `id` is a multi-thread runtime (as far as known).
    pub(crate) fn is_multi_thread(&self, id: u64) -> bool {
        lock(&self.runtimes)
            .iter()
            .any(|e| e.info.id == id && e.info.flavor == format::Flavor::MultiThread)
    }

    /// The runtimes seen so far.
    pub(crate) fn runtime_infos(&self) -> Vec<format::RuntimeInfo> {
        lock(&self.runtimes)
            .iter()
            .map(|e| e.info.clone())
            .collect()
    }

    /// The handle of multi-thread runtime `id` while it has live threads (for its load and for
    /// which thread holds a worker). Cold.
    pub(crate) fn runtime_handle(&self, id: u64) -> Option<tokio::runtime::Handle> {
        lock(&self.runtimes)
            .iter()
            .find(|e| e.info.id == id && e.info.flavor == format::Flavor::MultiThread)
            .and_then(|e| e.handle.clone())
    }

    /// The handle of runtime `id` kept for its workers' busy times (a multi-thread runtime
    /// while it has live threads; in the stable and hooks tiers a current-thread one too), and
    /// whether it is a current-thread runtime. Cold: the watchdog asks while a busy period or a
    /// stretch between polls is watched, and keeps the handle no longer than that.
    pub(crate) fn busy_time_handle(&self, id: u64) -> Option<(tokio::runtime::Handle, bool)> {
        lock(&self.runtimes)
            .iter()
            .find(|e| e.info.id == id)
            .and_then(|e| {
                let current_thread = e.info.flavor == format::Flavor::CurrentThread;
                e.handle.clone().map(|h| (h, current_thread))
            })
    }

    /// Whether runtime `id` still has live threads (and asyncprof its handle).
    pub(crate) fn runtime_live(&self, id: u64) -> bool {
        lock(&self.runtimes)
            .iter()
            .any(|e| e.info.id == id && e.handle.is_some())
    }

    /// Whether worker `w`'s thread holds one of its runtime's worker cores now. A thread
    /// inside `block_in_place` handed its core to another thread: its long poll keeps no
    /// worker from running tasks, so it is no stall. `None` when not known: a current-thread
    /// runtime (which has no `block_in_place`), or a build without `tokio_unstable`, where
    /// tokio does not say which thread holds a worker. Cold: the watchdog asks only about
    /// polls past half the stall threshold, at most every 10 ms each.
    pub(crate) fn holds_core(&self, w: &Worker) -> Option<bool> {
        #[cfg(tokio_unstable)]
        {
            let handle = self.runtime_handle(w.runtime.load(Relaxed))?;
            let me = (*lock(&w.thread))?;
            let metrics = handle.metrics();
            Some((0..metrics.num_workers()).any(|i| metrics.worker_thread_id(i) == Some(me)))
        }
        #[cfg(not(tokio_unstable))]
        {
            let _ = w;
            None
        }
    }

    // === counts the workers hold (read by snapshots) ===

    /// Polls of live task `id` (in `slot`) so far: what workers handed to its slot, plus what
    /// their count tables still hold for it. Also called once at the task's end.
    pub(crate) fn task_polls(&self, slot: &TaskSlot, id: u64) -> u64 {
        let held: u64 = self.workers().map(|w| w.poll_count(id).polls_of(id)).sum();
        slot.counts.polls.load(Relaxed) + held
    }

    /// Untracked completions the workers hold and have not yet added to their locations, as
    /// (location index, count).
    pub(crate) fn held_completions(&self) -> Vec<(u32, u64)> {
        self.workers()
            .flat_map(|w| w.held_completions.iter())
            .map(|d| (d.location.load(Relaxed), d.count.load(Relaxed)))
            .filter(|&(li, n)| li != 0 && n != 0)
            .collect()
    }
}

/// tokio's runtime id as a number (it shows the number it holds).
pub(crate) fn runtime_id(id: tokio::runtime::Id) -> u64 {
    crate::hooks::hashed_u64(&id)
}

#[cfg(test)]
mod tests {
    use super::{TaskPollCount, ThreadStarts, INDEX_BITS};
    use crate::recorder::MAX_RUNTIMES;

    #[test]
    fn a_runtime_id_is_the_number_tokio_prints() {
        for rt in [
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .build()
                .unwrap(),
        ] {
            let id = rt.handle().id();
            assert_eq!(super::runtime_id(id).to_string(), id.to_string());
        }
    }

    #[test]
    fn a_runtime_let_go_from_the_thread_counts_is_not_counted_afresh() {
        let mut starts = ThreadStarts::default();
        assert_eq!(starts.count(7, 0), Some(0));
        assert_eq!(starts.count(7, 1), Some(1));
        assert_eq!(starts.count(7, 1), Some(2));
        // Newer runtimes push the oldest out: its threads are not counted from zero again
        // (its later blocking threads would be taken for its workers).
        for id in 8..8 + MAX_RUNTIMES as u64 {
            assert_eq!(starts.count(id, 1), Some(1));
        }
        assert_eq!(starts.count(7, 1), None);
        assert_eq!(starts.count(8, 1), Some(2));
        // A runtime built later is counted.
        let next = 8 + MAX_RUNTIMES as u64;
        assert_eq!(starts.count(next, 1), Some(1));
        assert_eq!(starts.count(8, 0), None, "the oldest left went next");
    }

    #[test]
    fn a_count_entry_counts_its_task_hands_over_to_another_and_says_whose_it_was() {
        let e = TaskPollCount::default();
        let a = 7 + (3 << INDEX_BITS);
        let b = 7 + (5 << INDEX_BITS);
        assert!(!e.count(a), "an empty entry counts no one");
        assert_eq!(e.held(a), (0, 0));
        assert_eq!(e.take_over(a), (0, 0));
        assert!(e.count(a) && e.count(a));
        assert_eq!((e.polls_of(a), e.polls_of(b)), (3, 0));
        assert!(!e.count(b), "another task with the same index");
        // The old task's id comes back whole from its tag and the index.
        assert_eq!(e.take_over(b), (a, 3));
        assert_eq!((e.polls_of(a), e.polls_of(b)), (0, 1));
        assert!(e.uncount(b) && !e.uncount(b) && !e.uncount(a));
        // Task ids below the index's size have a tag too.
        let low = 7;
        assert_eq!(e.take_over(low), (b, 0));
        assert_eq!(e.held(low), (low, 1));
    }

    #[test]
    fn a_full_count_goes_on_through_a_hand_over_to_the_same_task() {
        let e = TaskPollCount::default();
        let id = 42 + (9 << INDEX_BITS);
        e.take_over(id);
        e.0.store(
            (e.0.load(std::sync::atomic::Ordering::Relaxed) & !u64::from(u32::MAX))
                | u64::from(u32::MAX - 1),
            std::sync::atomic::Ordering::Relaxed,
        );
        assert!(e.count(id));
        assert!(!e.count(id), "full: 2^32 - 1 polls");
        assert_eq!(e.take_over(id), (id, u64::from(u32::MAX)));
        assert_eq!(e.polls_of(id), 1);
    }
}
