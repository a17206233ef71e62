//! The state of one recording: the settings, the task and location tables, the worker and
//! runtime registries, the loss counters, and what the header learns once tasks run.
//!
//! What runs per poll, per wake and per task start and end is in [`crate::poll`]; threads and
//! runtimes coming and going in [`crate::workers`]; the snapshot the aggregator builds in
//! [`crate::snapshot`].

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::*};
use std::sync::{Mutex, OnceLock};

use asyncprof_format as format;

use crate::clock;
use crate::spares::HotSpares;
use crate::stages::StageTable;
use crate::tables::{LocationTable, TaskTable};
use crate::workers::{RuntimeEntry, Worker};

/// The most worker threads one recorder tells apart; later threads share nothing and are
/// not timed (counted in `untracked_threads`).
pub(crate) const MAX_WORKERS: usize = 256;

/// Entries of each worker's table of per-task poll counts (a power of two): as many as the
/// task table's default capacity (8 bytes each, 128 KiB a worker), so that as many live tasks
/// keep an entry each. With 4,096, w4-sleep's 10,000 tasks took each other's entries at
/// nearly every poll, and the hand-over (`first_poll_here`) was 13.8% of its CPU samples.
pub(crate) const WORKER_POLL_COUNTS: usize = 16384;

/// Per-task histograms alive at once: bounds memory when many tasks have long polls.
pub(crate) const MAX_TASK_HISTS: u32 = 4096;

/// How many live tasks each snapshot lists one by one (the busiest).
pub(crate) const SNAPSHOT_TASKS: usize = 100;

/// Runtimes told apart at most. A process that builds more (one per request, say) reuses the
/// entries of runtimes whose threads have all stopped.
pub(crate) const MAX_RUNTIMES: usize = 64;

/// Settings fixed when recording starts.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) config: format::Config,
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
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
    /// Long polls and delays a location could not keep one by one: it had no histograms yet
    /// and no spare ones were left ([`crate::spares`]).
    pub(crate) dropped_long_values: AtomicU64,
    /// Stall events not emitted: over the rate limit, or their thread fell behind.
    pub(crate) dropped_stall_events: AtomicU64,
    /// Stable-tier stalls not recorded: nothing showed one poll holding the worker.
    pub(crate) stalls_without_a_poll: AtomicU64,
    /// Records not written: the run file had reached its size limit.
    pub(crate) unwritten_at_file_limit: AtomicU64,
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
    /// Polls (and scheduling delays) at least this long are recorded one by one in
    /// histograms: two clock ticks, the coarse clock's resolution.
    pub(crate) long_threshold_ns: u64,
    /// One poll in this many per worker is timed exactly.
    pub(crate) sample_every: u32,
    pub(crate) tasks: TaskTable,
    pub(crate) locations: LocationTable,
    pub(crate) workers: Box<[OnceLock<Worker>]>,
    pub(crate) loss: Loss,
    pub(crate) task_counters: TaskCounters,
    /// Where events come from (the header's tier): set by the first source seen.
    tier: OnceLock<format::Tier>,
    /// Hooks are installed: the layer leaves tokio's task spans alone.
    pub(crate) hooks_installed: AtomicBool,
    /// The flavor of the first runtime seen.
    flavor: OnceLock<format::Flavor>,
    pub(crate) worker_count: AtomicU32,
    /// Scheduling delays cover every wake (the layer tier sees wakes), not only spawn to
    /// first poll.
    pub(crate) sees_wakes: AtomicBool,
    pub(crate) stages: StageTable,
    /// Preallocated histograms for the hot path's rare branches.
    pub(crate) spares: HotSpares,
    /// Stall records from the watchdog, waiting for the aggregator.
    pub(crate) stalls: Mutex<crate::watchdog::StallBoard>,
    /// When the run began, on the coarse clock's scale.
    pub(crate) run_start_ns: u64,
    /// The runtimes seen, in the order their first thread registered.
    pub(crate) runtimes: Mutex<Vec<RuntimeEntry>>,
    /// Stable tier: threads started so far by each multi-thread runtime, see
    /// [`Recorder::thread_start`].
    pub(crate) thread_starts: Mutex<crate::workers::ThreadStarts>,
    /// The watchdog sleeps until a worker unparks: every worker has been parked a while, so
    /// there is no poll to time or watch. The coarse clock stands still meanwhile.
    pub(crate) watchdog_idle: AtomicBool,
    /// When a thread last woke the idle watchdog: the exact time it read just before
    /// (`clock::publish`; 0: none since the watchdog's last idle wait ended). How late the
    /// watchdog then ran is a gap like a late tick's.
    pub(crate) watchdog_woken_ns: AtomicU64,
    /// The watchdog's thread, for the worker that unparks first to wake it.
    pub(crate) watchdog_thread: OnceLock<std::thread::Thread>,
    /// Threads registered so far: a thread whose first event is a poll (it never parked, so
    /// no unpark tells) wakes the sleeping watchdog, and the watchdog does not fall asleep
    /// past a registration it did not see.
    pub(crate) registrations: AtomicU64,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

impl Recorder {
    pub(crate) fn new(settings: Settings) -> Self {
        let c = &settings.config;
        let tick = c.clock_tick_ns.max(1_000);
        Recorder {
            generation: GENERATION.fetch_add(1, Relaxed),
            long_threshold_ns: tick * 2,
            sample_every: c.sample_every.max(1),
            tasks: TaskTable::new(c.task_capacity as usize),
            locations: LocationTable::new(c.location_capacity as usize),
            workers: (0..MAX_WORKERS).map(|_| OnceLock::new()).collect(),
            loss: Loss::default(),
            task_counters: TaskCounters::default(),
            tier: OnceLock::new(),
            hooks_installed: AtomicBool::new(false),
            flavor: OnceLock::new(),
            worker_count: AtomicU32::new(0),
            sees_wakes: AtomicBool::new(false),
            stages: StageTable::default(),
            spares: HotSpares::default(),
            stalls: Mutex::new(crate::watchdog::StallBoard::default()),
            run_start_ns: clock::exact_ns(),
            runtimes: Mutex::new(Vec::new()),
            thread_starts: Mutex::new(Default::default()),
            watchdog_idle: AtomicBool::new(false),
            watchdog_woken_ns: AtomicU64::new(0),
            watchdog_thread: OnceLock::new(),
            registrations: AtomicU64::new(0),
            settings,
        }
    }

    /// Note where events come from (the tier); the first source wins.
    pub(crate) fn note_tier(&self, tier: format::Tier) {
        let _ = self.tier.set(tier);
    }

    /// Where events come from (the tier), `Unknown` before the first event.
    pub(crate) fn tier(&self) -> format::Tier {
        self.tier.get().copied().unwrap_or(format::Tier::Unknown)
    }

    /// Note the flavor of the first runtime seen; the first wins.
    pub(crate) fn note_flavor(&self, flavor: format::Flavor) {
        let _ = self.flavor.set(flavor);
    }

    /// The flavor of the first runtime seen, `Unknown` before it.
    pub(crate) fn flavor(&self) -> format::Flavor {
        self.flavor
            .get()
            .copied()
            .unwrap_or(format::Flavor::Unknown)
    }

    /// The workers registered so far.
    pub(crate) fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.workers.iter().map_while(|w| w.get())
    }

    /// Now, for a task's spawn or wake (once per task event, not per poll): the coarse
    /// clock, or the exact time while the watchdog sleeps and the coarse clock stands still.
    #[inline]
    pub(crate) fn task_time(&self) -> u64 {
        if self.watchdog_idle.load(Relaxed) {
            clock::publish()
        } else {
            clock::coarse_ns()
        }
    }
}
