//! The recorder: per-worker state, the hot-path entry points every tier calls, and the
//! snapshot the aggregator builds from them.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering::*};
use std::sync::{Mutex, OnceLock};

use asyncprof_format as format;
use hdrhistogram::Histogram;

use crate::clock;
use crate::hist::{self, lock};
use crate::stages::StageTable;
use crate::tables::{
    LocKey, LocationHists, LocationTable, PollCounters, TaskHists, TaskSlot, TaskTable,
};

/// The most worker threads one recorder tells apart; later threads share nothing and are
/// not timed (counted in `untracked_tasks` terms as lost polls would be).
pub(crate) const MAX_WORKERS: usize = 256;

/// Entries of each worker's table of per-task poll counts (a power of two).
pub(crate) const WORKER_COUNTS: usize = 4096;

/// Per-task histograms alive at once: bounds memory when many tasks have long polls.
pub(crate) const MAX_TASK_HISTS: u32 = 4096;

/// How many live tasks each snapshot lists one by one (the busiest).
pub(crate) const SNAPSHOT_TASKS: usize = 100;

/// Runtimes told apart at most. A process that builds more (one per request, say) reuses the
/// entries of runtimes whose threads have all stopped.
pub(crate) const MAX_RUNTIMES: usize = 64;

/// One tokio runtime whose threads asyncprof has seen.
#[derive(Debug)]
pub(crate) struct RuntimeEntry {
    pub(crate) info: format::RuntimeInfo,
    /// Registered threads of this runtime that have not stopped.
    live: u32,
    /// A multi-thread runtime's handle, kept while it has live threads: tokio's metrics say
    /// which thread holds each worker, and a thread inside `block_in_place` holds none.
    handle: Option<tokio::runtime::Handle>,
}

/// Settings fixed when recording starts.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) config: format::Config,
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
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
    /// Enter/exit pairs that were not polls (the layer tier's drop of a task's future).
    pub(crate) uncounted: AtomicU64,
    pub(crate) hists: Mutex<WorkerHists>,
    /// Polls of recently polled tasks by this worker, indexed by task id modulo the table
    /// size and tagged with the id. Only this worker writes it, so counting a poll touches
    /// no cache line another thread writes. An entry taken over by another task hands its
    /// count to the task's slot.
    pub(crate) task_counts: Box<[TaggedCount]>,
    /// Completions of untracked tasks counted here and not yet added to their location,
    /// indexed by location index modulo the table size and tagged with it: only this worker
    /// writes them, so the workers do not take turns on a location's counter at every task's
    /// end. Snapshots add them in; see [`Recorder::untracked_done`].
    pub(crate) done: [DoneCount; WORKER_DONE],
}

/// Untracked completions a worker holds for one location (`loc` 0: none).
#[derive(Debug, Default)]
pub(crate) struct DoneCount {
    pub(crate) loc: AtomicU32,
    pub(crate) pending: AtomicU64,
}

/// Locations a worker holds untracked completions for at once.
const WORKER_DONE: usize = 8;

/// One entry of a worker's per-task poll counts.
#[derive(Debug, Default)]
pub(crate) struct TaggedCount {
    pub(crate) id: AtomicU64,
    pub(crate) polls: AtomicU64,
}

/// A worker's histograms, written on rare branches only (long polls, samples, delays).
#[derive(Debug)]
pub(crate) struct WorkerHists {
    pub(crate) long: Histogram<u64>,
    pub(crate) sampled: Histogram<u64>,
    pub(crate) sched: Histogram<u64>,
}

impl Worker {
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
            uncounted: AtomicU64::new(0),
            task_counts: (0..WORKER_COUNTS).map(|_| TaggedCount::default()).collect(),
            done: Default::default(),
            hists: Mutex::new(WorkerHists {
                long: hist::new_fine(),
                sampled: hist::new_fine(),
                sched: hist::new_fine(),
            }),
        }
    }
}

/// Which of a task's histograms a value goes to.
#[derive(Debug, Clone, Copy)]
enum Which {
    Poll = 0,
    Sched = 1,
}

/// Where events came from, for the header's tier.
pub(crate) mod source {
    pub(crate) const NONE: u8 = 0;
    pub(crate) const HOOKS: u8 = 1;
    pub(crate) const LAYER: u8 = 2;
    pub(crate) const STABLE: u8 = 3;
}

/// Loss counters, updated wherever a loss happens. On their own cache lines, away from the
/// settings every poll reads.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Loss {
    pub(crate) dropped_records: AtomicU64,
    pub(crate) histogram_outliers: AtomicU64,
    pub(crate) untracked_tasks: AtomicU64,
    pub(crate) untracked_locations: AtomicU64,
    pub(crate) untracked_threads: AtomicU64,
    pub(crate) clock_gaps: AtomicU64,
    /// Stack samples tried that failed (no answer in time, thread gone, poll over).
    pub(crate) missed_samples: AtomicU64,
    /// Stack samples not taken: the per-minute budget of sampled stalls was spent (once per
    /// stall), or signals are off and the thread was on CPU.
    pub(crate) skipped_samples: AtomicU64,
    pub(crate) sampler_busy: AtomicU64,
}

/// Counters written once per task. On their own cache lines: a spawn-heavy service writes them
/// constantly, and every poll reads the recorder's settings.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct TaskCounters {
    /// Written by the spawning threads; `completed` by the workers: one cache line each.
    pub(crate) spawned: crate::queues::Padded,
    pub(crate) completed: crate::queues::Padded,
    /// Per-task histograms allocated now.
    pub(crate) hists: AtomicU32,
}

/// All state of one recording. Leaked when recording starts (`&'static`), so hooks and
/// thread-locals can hold plain references; a process starts few recordings.
#[derive(Debug)]
pub(crate) struct Recorder {
    /// Distinguishes recordings, so a thread-local from an earlier one is not reused.
    pub(crate) generation: u64,
    pub(crate) settings: Settings,
    /// Polls at least this long are recorded one by one (two clock ticks).
    pub(crate) long_ns: u64,
    sample_every: u32,
    pub(crate) tasks: TaskTable,
    pub(crate) locations: LocationTable,
    workers: Box<[OnceLock<Worker>]>,
    pub(crate) loss: Loss,
    pub(crate) task_counters: TaskCounters,
    pub(crate) source: AtomicU8,
    /// Hooks are installed: the layer leaves tokio's task spans alone.
    pub(crate) hooks_installed: AtomicBool,
    pub(crate) flavor: AtomicU8,
    pub(crate) worker_count: AtomicU32,
    pub(crate) schedule_source: AtomicU8,
    pub(crate) stages: StageTable,
    /// Stall records from the watchdog, waiting for the aggregator.
    pub(crate) stalls: Mutex<crate::watchdog::StallBoard>,
    /// When the run began, on the coarse clock's scale.
    pub(crate) run_start_ns: u64,
    /// The runtimes seen, in the order their first thread registered.
    pub(crate) runtimes: Mutex<Vec<RuntimeEntry>>,
    /// The watchdog sleeps until a worker unparks: every worker has been parked a while, so
    /// there is no poll to time or watch. The coarse clock stands still meanwhile.
    pub(crate) watchdog_idle: AtomicBool,
    /// The watchdog's thread, for the worker that unparks first to wake it.
    pub(crate) watchdog_thread: OnceLock<std::thread::Thread>,
}

thread_local! {
    static LOCAL: Local = const { Local::new() };
}

/// A thread's private view of its worker: plain cells, no atomics.
struct Local {
    generation: Cell<u64>,
    worker: Cell<Option<&'static Worker>>,
    seq: Cell<u64>,
    start_ns: Cell<u64>,
    countdown: Cell<u32>,
    /// Exact start of a sampled poll (0: this poll is not sampled).
    exact_start_ns: Cell<u64>,
    /// The task of the current poll.
    task_id: Cell<u64>,
}

impl Local {
    const fn new() -> Self {
        Local {
            generation: Cell::new(0),
            worker: Cell::new(None),
            seq: Cell::new(0),
            start_ns: Cell::new(0),
            countdown: Cell::new(1),
            exact_start_ns: Cell::new(0),
            task_id: Cell::new(0),
        }
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Untracked completions a worker counts on its own before adding them to their location.
const DONE_BATCH: u64 = 1024;

impl Recorder {
    pub(crate) fn new(settings: Settings) -> Self {
        let c = &settings.config;
        let tick = c.clock_tick_ns.max(1_000);
        Recorder {
            generation: GENERATION.fetch_add(1, Relaxed),
            long_ns: tick * 2,
            sample_every: c.sample_every.max(1),
            tasks: TaskTable::new(c.task_capacity as usize),
            locations: LocationTable::new(c.location_capacity as usize),
            workers: (0..MAX_WORKERS).map(|_| OnceLock::new()).collect(),
            loss: Loss::default(),
            task_counters: TaskCounters::default(),
            source: AtomicU8::new(source::NONE),
            hooks_installed: AtomicBool::new(false),
            flavor: AtomicU8::new(0),
            worker_count: AtomicU32::new(0),
            schedule_source: AtomicU8::new(0),
            stages: StageTable::default(),
            stalls: Mutex::new(crate::watchdog::StallBoard::default()),
            run_start_ns: clock::exact_ns(),
            runtimes: Mutex::new(Vec::new()),
            watchdog_idle: AtomicBool::new(false),
            watchdog_thread: OnceLock::new(),
            settings,
        }
    }

    /// Note where events come from; the first source wins.
    pub(crate) fn note_source(&self, s: u8) {
        let _ = self
            .source
            .compare_exchange(source::NONE, s, Relaxed, Relaxed);
    }

    /// The workers registered so far.
    pub(crate) fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.workers.iter().map_while(|w| w.get())
    }

    // === hot path ===

    /// Hot path: a poll of task `id` begins on this thread. `sched_ns` is tokio's measured
    /// scheduling latency, when the runtime tracks it. `WAKES` is true for the layer tier,
    /// which sees wakes: every poll may then end a wake-to-poll delay.
    #[inline]
    pub(crate) fn poll_start<const WAKES: bool>(&'static self, id: u64, sched_ns: Option<u64>) {
        LOCAL.with(|l| {
            let Some(w) = self.local_worker(l) else {
                return;
            };
            let Some(now) = open(l, w, id) else { return };
            l.task_id.set(id);
            let entry = &w.task_counts[id as usize & (WORKER_COUNTS - 1)];
            if entry.id.load(Relaxed) == id {
                // Single writer (this worker): a plain increment, no atomic RMW.
                entry.polls.store(entry.polls.load(Relaxed) + 1, Relaxed);
            } else {
                self.first_poll_here(w, entry, id, now);
            }
            if WAKES {
                self.check_ready(w, id, now);
            }
            let countdown = l.countdown.get();
            if countdown <= 1 {
                l.countdown.set(self.sample_every);
                self.start_sample(l, w, id, sched_ns);
            } else {
                l.countdown.set(countdown - 1);
            }
        })
    }

    /// Hot path: the poll begun by [`Recorder::poll_start`] on this thread ends.
    #[inline]
    pub(crate) fn poll_end(&'static self) {
        LOCAL.with(|l| {
            let Some(w) = l.worker.get() else { return };
            if l.generation.get() != self.generation || !close(l, w) {
                return;
            }
            let coarse = clock::coarse_ns().saturating_sub(l.start_ns.get());
            if coarse >= self.long_ns || l.exact_start_ns.get() != 0 {
                self.finish_timed_poll(l, w, coarse);
            }
        })
    }

    /// Stable tier: the calling worker unparked and is busy from now on. The watchdog sees a
    /// busy period as it sees a poll (with no task).
    pub(crate) fn busy_start(&'static self) {
        LOCAL.with(|l| {
            if let Some(w) = self.local_worker(l) {
                open(l, w, 0);
            }
        })
    }

    /// Stable tier: the calling worker is about to park.
    pub(crate) fn busy_end(&'static self) {
        LOCAL.with(|l| {
            if let Some(w) = self.local_worker(l) {
                close(l, w);
            }
        })
    }

    /// Hot path: this thread's worker entry, registering the thread on its first event.
    #[inline(always)]
    fn local_worker(&'static self, l: &Local) -> Option<&'static Worker> {
        match l.worker.get() {
            Some(w) if l.generation.get() == self.generation => Some(w),
            _ => self.register_thread(l),
        }
    }

    #[cold]
    #[inline(never)]
    fn start_sample(&self, l: &Local, w: &Worker, id: u64, sched_ns: Option<u64>) {
        l.exact_start_ns.set(clock::exact_ns().max(1));
        if let Some(ns) = sched_ns {
            self.record_sched(w, self.tasks.find(id), ns);
        }
    }

    /// This worker polls task `id` for the first time lately: take over its count entry
    /// (handing the previous task's count to that task's slot), and measure the delay since
    /// the task became ready if it was just spawned.
    #[cold]
    #[inline(never)]
    fn first_poll_here(&self, w: &Worker, entry: &TaggedCount, id: u64, now: u64) {
        let old = entry.id.load(Relaxed);
        let polls = entry.polls.load(Relaxed);
        if old != 0 && polls != 0 {
            if let Some(s) = self.tasks.find(old) {
                s.counts.polls.fetch_add(polls, Relaxed);
            }
        }
        entry.polls.store(1, Relaxed);
        entry.id.store(id, Relaxed);
        self.check_ready(w, id, now);
    }

    /// End task `id`'s wait to be polled, if it was waiting.
    fn check_ready(&self, w: &Worker, id: u64, now: u64) {
        let Some(s) = self.tasks.find(id) else { return };
        if s.ready_since_ns.load(Relaxed) != 0 {
            let since = s.ready_since_ns.swap(0, Relaxed);
            if since != 0 {
                self.record_sched(w, Some(s), now.saturating_sub(since));
            }
        }
    }

    fn record_sched(&self, w: &Worker, slot: Option<&TaskSlot>, ns: u64) {
        let outliers = &self.loss.histogram_outliers;
        hist::record(&mut lock(&w.hists).sched, ns, outliers);
        let Some(s) = slot else { return };
        let long = ns >= self.long_ns;
        s.counts.add_sched(ns, long);
        if long {
            self.record_long(s, ns, Which::Sched);
        }
    }

    /// Record a long poll or delay of the task in `s`. The task's first of each kind waits
    /// in its slot ([`TaskSlot::pending_long`]); a second one moves both into the task's own
    /// histograms when it has or can get them, else into its location's (which its own fold
    /// into at the end anyway).
    fn record_long(&self, s: &TaskSlot, ns: u64, which: Which) {
        let k = which as usize;
        if s.pending_long[k]
            .compare_exchange(0, ns.max(1), Relaxed, Relaxed)
            .is_ok()
        {
            return;
        }
        let outliers = &self.loss.histogram_outliers;
        let pending = s.pending_long[k].swap(0, Relaxed);
        let mut g = self.task_hists(s);
        if let Some(h) = g.as_mut() {
            let h = match which {
                Which::Poll => &mut h.poll,
                Which::Sched => &mut h.sched,
            };
            for v in [pending, ns].into_iter().filter(|v| *v != 0) {
                hist::record(h, v, outliers);
            }
            return;
        }
        drop(g);
        let loc = self.locations.get(s.location.load(Relaxed));
        with_location_hists(loc, |lh| {
            let h = match which {
                Which::Poll => &mut lh.poll,
                Which::Sched => &mut lh.sched,
            };
            for v in [pending, ns].into_iter().filter(|v| *v != 0) {
                hist::record(h, v, outliers);
            }
        });
    }

    /// The task's histograms, allocated on first use while fewer than [`MAX_TASK_HISTS`]
    /// exist. Once per task at most, on a rare branch.
    fn task_hists<'s>(&self, s: &'s TaskSlot) -> std::sync::MutexGuard<'s, Option<Box<TaskHists>>> {
        let mut g = lock(&s.hists);
        if g.is_none() && self.task_counters.hists.fetch_add(1, Relaxed) < MAX_TASK_HISTS {
            *g = Some(Box::new(TaskHists {
                poll: hist::new_coarse(),
                sched: hist::new_coarse(),
            }));
        } else if g.is_none() {
            self.task_counters.hists.fetch_sub(1, Relaxed);
        }
        g
    }

    #[cold]
    #[inline(never)]
    fn finish_timed_poll(&self, l: &Local, w: &Worker, coarse: u64) {
        let exact_start = l.exact_start_ns.replace(0);
        let ns = if exact_start != 0 {
            clock::exact_ns().saturating_sub(exact_start)
        } else {
            coarse
        };
        let long = coarse >= self.long_ns || ns >= self.long_ns;
        let outliers = &self.loss.histogram_outliers;
        {
            let mut h = lock(&w.hists);
            if long {
                hist::record(&mut h.long, ns, outliers);
            } else {
                hist::record(&mut h.sampled, ns, outliers);
            }
        }
        w.counts.add_poll(ns, long);
        let Some(s) = self.tasks.find(l.task_id.get()) else {
            return;
        };
        s.counts.add_poll(ns, long);
        if long {
            self.record_long(s, ns, Which::Poll);
        }
    }

    // === task lifecycle (once per task) ===

    /// A task was spawned at `loc`. `ready` marks it as scheduled now, so that its first
    /// poll measures the spawn-to-first-poll delay.
    pub(crate) fn task_spawned(&self, id: u64, loc: LocKey<'_>, name: Option<&str>) {
        self.task_counters.spawned.0.fetch_add(1, Relaxed);
        let (li, known) = self.locations.intern(loc);
        if !known {
            self.loss.untracked_locations.fetch_add(1, Relaxed);
        }
        self.locations.spawned(li).fetch_add(1, Relaxed);
        let Some(slot) = self.tasks.claim(id) else {
            self.loss.untracked_tasks.fetch_add(1, Relaxed);
            return;
        };
        slot.location.store(li, Relaxed);
        let now = self.task_time();
        slot.spawned_ns.store(now, Relaxed);
        slot.ready_since_ns.store(now.max(1), Relaxed);
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            *lock(&slot.name) = Some(name.into());
        }
    }

    /// Task `id` completed (or was cancelled): fold its numbers into its location.
    ///
    /// A task that is not in the table was either spawned while the table was full (it is
    /// counted at its location when `loc` names one that has such tasks alive) or never seen
    /// spawning at all (tokio runs its workers as blocking tasks that report only their end):
    /// those are ignored.
    pub(crate) fn task_terminated(&self, id: u64, loc: Option<LocKey<'_>>) {
        let Some(index) = self.tasks.index(id) else {
            let Some(li) = loc.and_then(|l| self.locations.find(l)) else {
                return;
            };
            // On a worker, counted in the worker's own entry for the location; added to the
            // location when another location takes the entry over, the count is large, or
            // the thread stops.
            let worker = LOCAL.with(|l| {
                l.worker
                    .get()
                    .filter(|_| l.generation.get() == self.generation)
            });
            let Some(w) = worker else {
                self.add_untracked_done(li, 1);
                return;
            };
            let d = &w.done[li as usize % WORKER_DONE];
            let pending = d.pending.load(Relaxed);
            if d.loc.load(Relaxed) == li && pending < DONE_BATCH {
                d.pending.store(pending + 1, Relaxed);
            } else {
                self.flush_untracked_done(d);
                d.loc.store(li, Relaxed);
                d.pending.store(1, Relaxed);
            }
            return;
        };
        self.task_counters.completed.0.fetch_add(1, Relaxed);
        let slot = self.tasks.slot(index);
        let loc = self.locations.get(slot.location.load(Relaxed));
        let mut counts = slot.counts.load();
        counts.polls = self.task_polls(slot, id);
        loc.folded.fold(&counts);
        loc.tasks_completed.fetch_add(1, Relaxed);
        if let Some(h) = lock(&slot.hists).take() {
            self.task_counters.hists.fetch_sub(1, Relaxed);
            with_location_hists(loc, |lh| {
                hist::merge(&mut lh.poll, &h.poll);
                hist::merge(&mut lh.sched, &h.sched);
            });
        }
        for (k, pending) in slot.pending_long.iter().enumerate() {
            let v = pending.load(Relaxed);
            if v != 0 {
                loc.record_pending(k, v);
            }
        }
        self.tasks.release(index);
    }

    /// Add a worker's pending untracked completions to their location. Called by the worker's
    /// own thread (the only one that writes them): the count is taken out before it is added,
    /// so a snapshot in between misses it for a moment rather than counting it twice.
    fn flush_untracked_done(&self, d: &DoneCount) {
        let n = d.pending.load(Relaxed);
        if n == 0 {
            return;
        }
        d.pending.store(0, Relaxed);
        self.add_untracked_done(d.loc.load(Relaxed), n);
    }

    /// `n` untracked tasks spawned at location `li` completed. A location never counts more
    /// completions than spawns: tasks that end without having been seen spawning are not its.
    fn add_untracked_done(&self, li: u32, n: u64) {
        if li == 0 {
            return;
        }
        let spawned = self.locations.spawned(li).load(Relaxed);
        let counter = &self.locations.get(li).tasks_completed;
        if let Ok(done) = counter.fetch_update(Relaxed, Relaxed, |d| {
            (d < spawned).then(|| d.saturating_add(n).min(spawned))
        }) {
            let added = done.saturating_add(n).min(spawned) - done;
            self.task_counters.completed.0.fetch_add(added, Relaxed);
        }
    }

    /// Untracked completions the workers hold and have not yet added to their locations, as
    /// (location index, count).
    pub(crate) fn untracked_done(&self) -> Vec<(u32, u64)> {
        self.workers()
            .flat_map(|w| w.done.iter())
            .map(|d| (d.loc.load(Relaxed), d.pending.load(Relaxed)))
            .filter(|&(li, n)| li != 0 && n != 0)
            .collect()
    }

    /// Task `id`'s span closed (layer tier). tracing enters a task's span once more to drop
    /// its future, after its last poll; that enter was counted as a poll, so take it back.
    pub(crate) fn task_closed_by_layer(&'static self, id: u64) {
        if let Some(w) = self.current_worker() {
            w.uncounted.fetch_add(1, Relaxed);
            // The drop's enter was counted on this thread, in its entry for the task.
            let entry = &w.task_counts[id as usize & (WORKER_COUNTS - 1)];
            let polls = entry.polls.load(Relaxed);
            if entry.id.load(Relaxed) == id && polls > 0 {
                entry.polls.store(polls - 1, Relaxed);
            } else if let Some(slot) = self.tasks.find(id) {
                let _ = slot
                    .counts
                    .polls
                    .fetch_update(Relaxed, Relaxed, |p| p.checked_sub(1));
            }
        }
        self.task_terminated(id, None);
    }

    /// Polls of live task `id` (in `slot`) so far: what workers handed to its slot, plus what
    /// their count tables still hold for it. Cold path.
    pub(crate) fn task_polls(&self, slot: &TaskSlot, id: u64) -> u64 {
        let held: u64 = self
            .workers()
            .map(|w| {
                let e = &w.task_counts[id as usize & (WORKER_COUNTS - 1)];
                if e.id.load(Relaxed) == id {
                    e.polls.load(Relaxed)
                } else {
                    0
                }
            })
            .sum();
        slot.counts.polls.load(Relaxed) + held
    }

    /// Task `id` was woken: its next poll measures the delay from now.
    pub(crate) fn task_woken(&self, id: u64) {
        if let Some(slot) = self.tasks.find(id) {
            // Only the first wake counts: waking a task that is already scheduled does not
            // reset its delay.
            let _ =
                slot.ready_since_ns
                    .compare_exchange(0, self.task_time().max(1), Relaxed, Relaxed);
        }
    }

    // === worker lifecycle ===

    /// The calling thread parks (idles).
    pub(crate) fn park(&'static self) {
        if let Some(w) = self.current_worker() {
            w.parks.fetch_add(1, Relaxed);
            w.park_since_ns.store(clock::exact_ns().max(1), Relaxed);
        }
    }

    /// The calling thread unparks. The first worker to unpark while the watchdog sleeps
    /// wakes it.
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
            self.wake_watchdog();
        }
    }

    #[cold]
    #[inline(never)]
    fn wake_watchdog(&self) {
        if self.watchdog_idle.swap(false, Relaxed) {
            if let Some(t) = self.watchdog_thread.get() {
                t.unpark();
            }
        }
    }

    /// Whether every worker has been parked since `since` or earlier (and at least one
    /// worker is known). Then the watchdog may sleep until one unparks.
    pub(crate) fn all_parked_since(&self, since: u64) -> bool {
        let mut any = false;
        for w in self.workers() {
            if !w.active.load(Acquire) {
                continue;
            }
            any = true;
            let parked = w.park_since_ns.load(SeqCst);
            if parked == 0 || parked > since || w.state.load(Acquire) & 1 == 1 {
                return false;
            }
        }
        any
    }

    /// Now, for a task's spawn or wake (once per task event, not per poll): the coarse
    /// clock, or the exact time while the watchdog sleeps and the coarse clock stands still.
    fn task_time(&self) -> u64 {
        if self.watchdog_idle.load(Relaxed) {
            clock::publish()
        } else {
            clock::coarse_ns()
        }
    }

    /// The calling thread stops: free its worker entry for a later thread.
    pub(crate) fn thread_stop(&'static self) {
        LOCAL.with(|l| {
            if l.generation.get() != self.generation {
                return;
            }
            if let Some(w) = l.worker.take() {
                for d in &w.done {
                    self.flush_untracked_done(d);
                }
                w.stopped_ns.store(clock::exact_ns(), Relaxed);
                self.runtime_thread_stopped(w.runtime.load(Relaxed));
                w.active.store(false, Release);
            }
        })
    }

    fn current_worker(&'static self) -> Option<&'static Worker> {
        LOCAL.with(|l| self.local_worker(l))
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
    #[cold]
    #[inline(never)]
    fn register_thread(&'static self, l: &Local) -> Option<&'static Worker> {
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
            self.loss.untracked_threads.fetch_add(1, Relaxed);
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
        w.park_since_ns.store(0, Relaxed);
        // The entry's poll count continues from where the last thread left it, even.
        let seq = w.state.load(Relaxed) & !1;
        w.state.store(seq, Relaxed);
        l.seq.set(seq);
        l.generation.set(self.generation);
        l.worker.set(Some(w));
        l.task_id.set(0);
        l.exact_start_ns.set(0);
        l.countdown.set(1);
        self.note_runtime(w);
        Some(w)
    }

    /// Learn which runtime this thread runs for: its id, name, flavor and worker count (the
    /// header's flavor and worker count are those of the first runtime seen).
    fn note_runtime(&self, w: &Worker) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            w.runtime.store(0, Relaxed);
            return;
        };
        let (flavor, code) = match handle.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::CurrentThread => (format::Flavor::CurrentThread, 1),
            tokio::runtime::RuntimeFlavor::MultiThread => (format::Flavor::MultiThread, 2),
            _ => (format::Flavor::Unknown, 0),
        };
        let workers = handle.metrics().num_workers() as u32;
        let _ = self.flavor.compare_exchange(0, code, Relaxed, Relaxed);
        let _ = self
            .worker_count
            .compare_exchange(0, workers, Relaxed, Relaxed);
        let id = runtime_id(handle.id());
        w.runtime.store(id, Relaxed);
        let keep = (flavor == format::Flavor::MultiThread).then(|| handle.clone());
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

    /// The runtimes seen so far.
    pub(crate) fn runtime_infos(&self) -> Vec<format::RuntimeInfo> {
        lock(&self.runtimes)
            .iter()
            .map(|e| e.info.clone())
            .collect()
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
            let id = w.runtime.load(Relaxed);
            let handle = lock(&self.runtimes)
                .iter()
                .find(|e| e.info.id == id)
                .and_then(|e| e.handle.clone())?;
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
}

/// tokio's runtime id as a number (it shows the number it holds).
fn runtime_id(id: tokio::runtime::Id) -> u64 {
    id.to_string().parse().unwrap_or(0)
}

/// Hot path: begin a poll (or, in the stable tier, a busy period) of task `id` on worker `w`:
/// publish its start and task to the watchdog. Returns the start, or `None` when the worker
/// is already inside one (a poll inside a poll, as a nested `block_on` makes: the outer one
/// keeps the worker).
#[inline(always)]
fn open(l: &Local, w: &Worker, id: u64) -> Option<u64> {
    let seq = l.seq.get();
    if seq & 1 == 1 {
        return None;
    }
    let now = clock::coarse_ns();
    l.start_ns.set(now);
    w.poll_start_ns.store(now, Relaxed);
    w.task_id.store(id, Relaxed);
    l.seq.set(seq + 1);
    // Release: a watchdog that reads this odd state also sees the start and task above.
    w.state.store(seq + 1, Release);
    Some(now)
}

/// Hot path: end the poll or busy period [`open`] began. False when none was open.
#[inline(always)]
fn close(l: &Local, w: &Worker) -> bool {
    let seq = l.seq.get();
    if seq & 1 == 0 {
        return false;
    }
    l.seq.set(seq + 1);
    // Release: pairs with the watchdog's acquire load, like `open`.
    w.state.store(seq + 1, Release);
    true
}

/// Run `f` on a location's histograms, allocating them on first use.
pub(crate) fn with_location_hists<R>(
    loc: &crate::tables::LocationSlot,
    f: impl FnOnce(&mut LocationHists) -> R,
) -> R {
    let mut g = lock(&loc.hists);
    let h = g.get_or_insert_with(|| {
        Box::new(LocationHists {
            poll: hist::new_fine(),
            sched: hist::new_fine(),
        })
    });
    f(h)
}
