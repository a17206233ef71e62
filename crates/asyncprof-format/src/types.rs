use serde::{Deserialize, Serialize};

use crate::Histogram;

/// How the run was captured. The report names it, because what a tier sees differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Tier {
    /// Runtime hooks installed on a `tokio::runtime::Builder`: every poll, cheapest.
    #[default]
    Hooks,
    /// The `tracing_subscriber` layer reading tokio's task spans.
    Layer,
    /// No task-level hooks: worker busy and parked periods only.
    Stable,
    /// Not known yet: the header written when recording starts, before any task event
    /// (a later header names the tier; format version 2 on).
    Unknown,
}

/// The tokio runtime flavor that was profiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Flavor {
    /// `Builder::new_current_thread`: one worker, the thread that calls `block_on`.
    CurrentThread,
    /// `Builder::new_multi_thread`: a pool of workers.
    MultiThread,
    /// Not known: no task was polled yet (the header written at start), or the layer tier
    /// could not see the runtime's builder.
    #[default]
    Unknown,
}

/// What a run's scheduling-delay histograms measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ScheduleSource {
    /// Only the delay from spawn to first poll (hooks tier without tokio's `schedule-latency`).
    #[default]
    SpawnToFirstPoll,
    /// Every wake to the poll that follows it.
    EveryWake,
}

/// The configuration a run was recorded with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Config {
    /// How often the background thread appends a snapshot.
    pub flush_interval_ms: u64,
    /// A poll running longer than this is a stall.
    pub stall_threshold_us: u64,
    /// Period of the coarse clock that times polls (resolution of long polls).
    pub clock_tick_ns: u64,
    /// One poll in this many is timed exactly; the others are timed by the coarse clock.
    pub sample_every: u32,
    /// Live tasks tracked one by one; more are counted in `untracked_tasks`.
    pub task_capacity: u32,
    /// Distinct spawn locations tracked.
    pub location_capacity: u32,
    /// What the scheduling-delay histograms cover.
    pub schedule_source: ScheduleSource,
    /// The signal that samples a stalled thread's stack. 0: no signal at all; threads asleep
    /// in a system call still get stacks, stalls on CPU get none.
    pub stall_signal: i32,
    /// CPU profile samples per second (0: no CPU profile).
    pub cpu_hz: u32,
    /// The disk a run's files take at most, in bytes (0: no limit; 0 in files written before
    /// this setting existed). A file that reaches half of it is renamed (`NAME.old.run`,
    /// replacing the part before) and the run goes on in a new file at its path, a new
    /// [`Header::part`]; a part can pass half the limit by the one batch that starts it.
    #[serde(default)]
    pub max_file_bytes: u64,
}

/// The default disk limit of a run's files ([`Config::max_file_bytes`]): 1 GiB, two parts of
/// 512 MiB.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 1 << 30;

impl Default for Config {
    fn default() -> Self {
        Config {
            flush_interval_ms: 1000,
            stall_threshold_us: 10_000,
            clock_tick_ns: 250_000,
            sample_every: 64,
            task_capacity: 16_384,
            location_capacity: 4096,
            schedule_source: ScheduleSource::SpawnToFirstPoll,
            stall_signal: 0,
            cpu_hz: 0,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

/// The first record of every run file, written when recording starts.
///
/// Some facts are learnt only once tasks run: the capture tier, the runtime's flavor and
/// workers, what the scheduling delays cover. The writer then appends the header again with
/// them, and the reader keeps the latest header ([`crate::RunFile::header`]). A process that
/// stopped before its first task poll leaves only the first header: tier
/// [`Tier::Unknown`], flavor [`Flavor::Unknown`], 0 workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Header {
    /// The format version the writer used.
    pub format_version: u32,
    /// The program's name (its executable's file name).
    pub program: String,
    /// The program's arguments, without the executable.
    pub args: Vec<String>,
    /// Process id.
    pub pid: u32,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub start_unix_ms: u64,
    /// How the run was captured.
    pub tier: Tier,
    /// The runtime flavor.
    pub flavor: Flavor,
    /// Worker threads the runtime was built with (0 when unknown).
    pub workers: u32,
    /// The recording configuration.
    pub config: Config,
    /// Which part of the run this file is: 0 for the first; 1 and up for the files that
    /// went on after the run file reached its size limit ([`Config::max_file_bytes`]), each
    /// starting with the header again and holding the run from then on. 0 in files written
    /// before parts existed.
    #[serde(default)]
    pub part: u32,
}

impl Header {
    /// Whether `other` is the header of a part of the same run (the same program, process and
    /// start): the files a run goes on in past its size limit ([`Header::part`]).
    pub fn same_run(&self, other: &Header) -> bool {
        self.pid == other.pid
            && self.start_unix_ms == other.start_unix_ms
            && self.program == other.program
    }
}

/// Where a run file's full part goes when the next one starts: `NAME.old.run` for `NAME.run`,
/// `PATH.old` for any other name.
pub fn previous_part_path(path: &std::path::Path) -> std::path::PathBuf {
    if path.extension().is_some_and(|e| e == "run") {
        path.with_extension("old.run")
    } else {
        let mut p = path.as_os_str().to_owned();
        p.push(".old");
        p.into()
    }
}

/// The last record of a part of a run: its file reached its size limit, was renamed to
/// `previous` and the run goes on in a new file at the old path, part `next_part`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Continued {
    /// The file name this part was renamed to.
    pub previous: String,
    /// The file name the run goes on in.
    pub next: String,
    /// The part the run goes on in.
    pub next_part: u32,
    /// Time since the run started.
    pub elapsed_ns: u64,
}

impl Continued {
    /// The record for a part renamed to `previous`, continued in `next` as part `next_part`.
    pub fn new(previous: String, next: String, next_part: u32, elapsed_ns: u64) -> Self {
        Continued {
            previous,
            next,
            next_part,
            elapsed_ns,
        }
    }
}

impl Default for Header {
    fn default() -> Self {
        Header {
            format_version: crate::FORMAT_VERSION,
            program: String::new(),
            args: Vec::new(),
            pid: 0,
            start_unix_ms: 0,
            tier: Tier::default(),
            flavor: Flavor::default(),
            workers: 0,
            config: Config::default(),
            part: 0,
        }
    }
}

impl Header {
    /// A header for `program` with every other field at its default.
    pub fn new(program: impl Into<String>) -> Self {
        Header {
            program: program.into(),
            ..Header::default()
        }
    }
}

/// Counters of everything asyncprof dropped or clamped. They head every report: data may be
/// lost, but a loss is never hidden.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct LossCounters {
    /// Records the writer could not write (it fell behind, or the disk refused them).
    pub dropped_records: u64,
    /// Values above a histogram's bound, recorded as the bound.
    pub histogram_outliers: u64,
    /// Tasks spawned while the task table was full: counted, not tracked one by one.
    pub untracked_tasks: u64,
    /// Spawn locations beyond the location table, folded into one "other" entry.
    pub untracked_locations: u64,
    /// Stack samples that were tried and failed: the thread did not answer in time, had
    /// exited, or had finished the stalled poll when its stack came back.
    pub missed_samples: u64,
    /// Stack samples not taken, by design rather than failure: a stall that began after the
    /// per-minute budget of sampled stalls was spent (counted once per stall), a stack past a
    /// stall's 64 (a late one, collected at the stall's end), or a look at a
    /// thread on CPU while signals are off ([`Config::stall_signal`] 0). Such stalls are still
    /// recorded and classified from the thread's kernel state, without stacks. 0 in files
    /// written before this counter existed (they counted budget skips in `missed_samples`).
    pub skipped_samples: u64,
    /// Stack samples refused because the sampler slot was still busy.
    pub sampler_busy: u64,
    /// Times the watchdog (the coarse clock's thread) ran late, the machine giving it no CPU:
    /// when it first ran, more than four ticks after the recording started; more than four of
    /// its intervals after its last look began (a tick, or a quiet service's longer sleep),
    /// less the time that look spent sampling stalls; or, woken from its idle wait by a thread, more
    /// than four ticks after the wake (while the service is quiet, four of its look intervals:
    /// 20 ms at the default threshold). A poll that fell entirely inside such a gap was timed
    /// as short (not while the service was quiet: its polls read the exact time then), and a
    /// stall inside it was looked at late, or not at all.
    pub clock_gaps: u64,
    /// Queues created while the queue registry was full: they work, but are not reported.
    pub untracked_queues: u64,
    /// Queue depth and runtime load samples dropped because their buffer was full.
    pub dropped_depth_points: u64,
    /// Long polls and scheduling delays of a spawn location that its histograms miss: the
    /// location had none yet and no preallocated ones were left (the recorder allocates them
    /// off the service's threads, every 100 ms). The runtime-wide histograms and the counts
    /// still have them. 0 in files written before this counter existed.
    pub dropped_long_values: u64,
    /// Stall events (`tracing` events asyncprof emits when asked to) not emitted: over the
    /// rate limit, or the thread that emits them fell behind. The stalls themselves are in
    /// the run file. 0 in files written before this counter existed.
    pub dropped_stall_events: u64,
    /// Stable-tier stalls not recorded because nothing showed a poll holding the worker:
    /// tokio's busy time for it stood still past the threshold (tokio publishes that time only
    /// when a worker parks and every `event_interval` turns of its loop), but every stack taken
    /// found the thread in tokio's scheduler between polls, or none was taken although signals
    /// were on or every look found the thread waiting for a CPU, or the samples showed two
    /// polls (two tasks) before one poll was confirmed, or too few agreed on one, or the
    /// stacks it was judged by waited on the C library's allocator lock, or showed the thread
    /// outside any runtime (a current-thread runtime's `block_on` had returned). In any tier,
    /// also a task's poll whose stacks were mostly inside `block_in_place` (its worker handed
    /// to another thread). 0 in files written before this counter existed.
    pub stalls_without_a_poll: u64,
    /// Records (stalls, snapshots) not written because the run file had reached its size
    /// limit ([`Config::max_file_bytes`]) and the run could not go on in a new file (the
    /// rename or the new file failed); the final snapshot, written when recording stops,
    /// still is. 0 in files written before this counter existed.
    pub unwritten_at_file_limit: u64,
    /// Threads that polled, parked or ran while the worker table (256 entries) was full,
    /// once each: their polls are neither counted nor timed, and the watchdog does not watch
    /// them, so their stalls are not recorded. 0 in files written before this counter existed.
    pub untracked_threads: u64,
    /// Task polls whose end asyncprof never saw (hooks tier): the worker's next poll began, or
    /// it parked, while asyncprof still counted the poll as running. tokio keeps one callback
    /// per hook, so an `on_after_task_poll` set on the runtime's builder after asyncprof's
    /// replaces it (a second runtime's polls inside `block_in_place` are nested, not counted).
    /// The watchdog takes each such poll to last until the next one's start or the park; no
    /// poll time of theirs is recorded. 0 in files written before this counter existed.
    pub polls_never_ended: u64,
}

impl LossCounters {
    /// True when nothing was lost.
    pub fn is_zero(&self) -> bool {
        *self == LossCounters::default()
    }
}

/// A place in source code.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SourceLocation {
    /// File path as the compiler saw it.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
}

impl SourceLocation {
    /// A location.
    pub fn new(file: impl Into<String>, line: u32, col: u32) -> Self {
        SourceLocation {
            file: file.into(),
            line,
            col,
        }
    }
}

impl std::fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// Runtime-wide statistics, cumulative since the start of the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RuntimeStats {
    /// Polls of every task.
    pub polls: u64,
    /// Tasks spawned.
    pub tasks_spawned: u64,
    /// Tasks that completed or were cancelled.
    pub tasks_completed: u64,
    /// Tasks alive at the snapshot.
    pub tasks_alive: u64,
    /// Poll durations of every task.
    pub poll_ns: Histogram,
    /// Scheduling delays of every task (see [`Config::schedule_source`]).
    pub scheduled_ns: Histogram,
    /// The stalls that ended since the run started, counted when their last record went to
    /// the writer (a stall whose record the writer could not take is counted all the same;
    /// see [`LossCounters`] for the records lost before that). A part of a
    /// run ([`Header::part`]) holds only its own stalls' records; this counts them all.
    /// `None` in files written before it existed.
    pub stalls: Option<StallTotals>,
}

/// How many stalls a run has had and how long they held their workers, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct StallTotals {
    /// Stalls that ended.
    pub count: u64,
    /// Their durations, summed.
    pub total_ns: u64,
    /// The longest of them.
    pub longest_ns: u64,
}

impl StallTotals {
    /// Count a stall that ended after `duration_ns`.
    pub fn add(&mut self, duration_ns: u64) {
        self.count += 1;
        self.total_ns = self.total_ns.saturating_add(duration_ns);
        self.longest_ns = self.longest_ns.max(duration_ns);
    }
}

/// One tokio runtime the recording saw. A process may run several (a runtime for requests
/// and one for a database pool, say); workers and stalls name theirs by [`RuntimeInfo::id`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct RuntimeInfo {
    /// tokio's runtime id (`Handle::id`), unique among the runtimes alive at one time.
    pub id: u64,
    /// The name given with `Builder::name`, when one was.
    pub name: Option<String>,
    /// Its flavor.
    pub flavor: Flavor,
    /// Its worker threads.
    pub workers: u32,
}

impl RuntimeInfo {
    /// The runtime as people name it: its name, else `runtime <id>`.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("runtime {}", self.id),
        }
    }
}

/// One worker thread, cumulative.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct WorkerStats {
    /// Order in which asyncprof first saw the thread.
    pub index: u32,
    /// The runtime the thread works for ([`RuntimeInfo::id`]; 0 when not known).
    pub runtime: u64,
    /// The thread's name.
    pub thread_name: String,
    /// The kernel's thread id.
    pub tid: i32,
    /// Polls this thread ran.
    pub polls: u64,
    /// Time spent inside polls, estimated from the coarse clock and exact samples.
    pub busy_ns: u64,
    /// Time parked (idle), measured at every park and unpark.
    pub parked_ns: u64,
    /// Times the worker parked.
    pub parks: u64,
}

/// All tasks spawned at one source location, cumulative; completed tasks fold in here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct LocationStats {
    /// The `tokio::spawn` call site.
    pub location: SourceLocation,
    /// Tasks spawned here.
    pub tasks_spawned: u64,
    /// Of those, completed.
    pub tasks_completed: u64,
    /// `spawn_blocking` jobs started here that finished (their spawns are not seen: tokio
    /// reports only their end).
    pub blocking_tasks: u64,
    /// Polls of those tasks.
    pub polls: u64,
    /// Time inside those polls.
    pub busy_ns: u64,
    /// The longest of those polls.
    pub max_poll_ns: u64,
    /// Poll durations.
    pub poll_ns: Histogram,
    /// Scheduling delays.
    pub scheduled_ns: Histogram,
}

/// One live task (the busiest ones are written to each snapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TaskStats {
    /// tokio's task id.
    pub id: u64,
    /// The task's name, when it was given one.
    pub name: Option<String>,
    /// Where it was spawned.
    pub location: SourceLocation,
    /// Polls.
    pub polls: u64,
    /// Time inside polls.
    pub busy_ns: u64,
    /// Time alive but not being polled.
    pub idle_ns: u64,
    /// The longest poll.
    pub max_poll_ns: u64,
    /// Poll durations.
    pub poll_ns: Histogram,
    /// Scheduling delays.
    pub scheduled_ns: Histogram,
}

/// A user span (`#[instrument]`, `info_span!`) as a pipeline stage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct StageStats {
    /// The span's name.
    pub name: String,
    /// The span's target (module path by default).
    pub target: String,
    /// Where the span was declared, when known.
    pub location: Option<SourceLocation>,
    /// Spans closed.
    pub count: u64,
    /// Time spent entered, summed.
    pub busy_ns: u64,
    /// Span lifetimes, creation to close.
    pub duration_ns: Histogram,
}

/// The state of the profiled program at one moment, cumulative since the start of the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Snapshot {
    /// Time since the run started.
    pub elapsed_ns: u64,
    /// True for the snapshot written when recording stopped.
    pub is_final: bool,
    /// Everything that was dropped or clamped.
    pub loss: LossCounters,
    /// Runtime-wide statistics.
    pub runtime: RuntimeStats,
    /// The runtimes seen, in the order their first worker appeared.
    pub runtimes: Vec<RuntimeInfo>,
    /// Per worker thread.
    pub workers: Vec<WorkerStats>,
    /// Per spawn location.
    pub locations: Vec<LocationStats>,
    /// The busiest live tasks.
    pub tasks: Vec<TaskStats>,
    /// User spans as stages.
    pub stages: Vec<StageStats>,
    /// Instrumented channels, semaphores and gauges.
    pub queues: Vec<QueueStats>,
    /// The runtimes' load sampled since the previous snapshot (10 per second).
    pub load: Vec<LoadPoint>,
}

/// One sample of a runtime's load, taken by asyncprof's background thread (10 per second)
/// from tokio's runtime metrics and the kernel's scheduler statistics; never on the
/// service's threads. Rates and shares cover the time since the previous point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct LoadPoint {
    /// Time since the run started.
    pub elapsed_ns: u64,
    /// The runtime (tokio's id).
    pub runtime: u64,
    /// Its worker threads.
    pub workers: u32,
    /// The workers' time since the previous point: its length times the workers.
    pub span_ns: u64,
    /// Of it, the time they were busy (tokio's busy durations). `None` when not known.
    pub busy_ns: Option<u64>,
    /// Tasks ready to run and waiting for a worker: the injection queue plus the workers'
    /// local queues (local queues only in a build with `tokio_unstable`).
    pub ready: u64,
    /// `spawn_blocking` jobs waiting for a blocking thread (`tokio_unstable` builds).
    pub blocking_queue: u64,
    /// Blocking threads alive (`tokio_unstable` builds).
    pub blocking_threads: u64,
    /// Idle blocking threads.
    pub blocking_idle: u64,
    /// Tasks alive in the runtime.
    pub alive_tasks: u64,
    /// Time the runtime's worker threads spent runnable but waiting for a CPU since the
    /// previous point, summed over them (the kernel's `schedstat`).
    pub cpu_wait_ns: u64,
    /// Time they spent on a CPU since the previous point, summed over them.
    pub cpu_run_ns: u64,
    /// The process's resident memory, bytes.
    pub rss_bytes: u64,
    /// CPU time used by everything else on the machine since the previous point: the
    /// machine's busy time (time the hypervisor stole included) less this process's, plus the
    /// time a CPU quota throttled the process. At clock-tick resolution (10 ms).
    pub others_cpu_ns: u64,
    /// What the machine's CPUs could give since the previous point: its length times the
    /// CPUs online.
    pub machine_ns: u64,
}

/// What kind of queue a [`QueueStats`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum QueueKind {
    /// `asyncprof::sync::mpsc::channel`: senders wait when it is full.
    #[default]
    Bounded,
    /// `asyncprof::sync::mpsc::unbounded_channel`: never full, may grow without bound.
    Unbounded,
    /// `asyncprof::sync::Semaphore`: depth is permits held, waits are permit waits.
    Semaphore,
    /// A gauge registered for any other queue: depth only, sampled.
    Gauge,
}

/// One sample of a queue's depth, taken by the background thread (10 per second).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct DepthPoint {
    /// Time since the run started.
    pub elapsed_ns: u64,
    /// Items queued (permits held, for a semaphore).
    pub depth: u64,
    /// Senders (acquirers) waiting at that moment.
    pub waiting: u64,
}

/// One named queue, cumulative since it was created. Channels created at the same place with
/// the same name (one per connection, say) are summed into one entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct QueueStats {
    /// Stable id within the run.
    pub id: u64,
    /// The name given at creation.
    pub name: String,
    /// Channel, semaphore or gauge.
    pub kind: QueueKind,
    /// Where it was created.
    pub location: SourceLocation,
    /// Capacity of one instance (permits, for a semaphore); none when unbounded.
    pub capacity: Option<u64>,
    /// Size of one item in bytes (0 when not known).
    pub item_bytes: u64,
    /// Instances created with this name and location.
    pub instances: u64,
    /// Instances still alive.
    pub live_instances: u64,
    /// Items sent (permits acquired).
    pub enqueued: u64,
    /// Items received.
    pub dequeued: u64,
    /// Sends refused because the queue was full (`try_send`, a `send_timeout` that expired).
    pub rejected: u64,
    /// Depth at the last sample.
    pub depth: u64,
    /// Largest sampled depth (the capacity when a sender had to wait).
    pub max_depth: u64,
    /// Depth samples taken.
    pub samples: u64,
    /// Samples that found the queue full or a sender waiting.
    pub full_samples: u64,
    /// How long senders (acquirers) waited for room, one value per wait.
    pub send_wait_ns: Histogram,
    /// How long receivers waited for an item, one value per wait.
    pub recv_wait_ns: Histogram,
    /// Time the receiving tasks spent waiting to send to another queue, after receiving from
    /// this one: this queue is full because of a queue further down.
    pub consumer_blocked_ns: u64,
    /// The queue its consumers waited on most recently, by id.
    pub downstream: Option<u64>,
    /// Where items are sent from (the first sending call).
    pub producer: Option<SourceLocation>,
    /// Where items are received (the first receiving call): the consuming stage.
    pub consumer: Option<SourceLocation>,
    /// Depth samples since the previous snapshot; the reader joins them into
    /// [`crate::RunFile::queue_depths`].
    pub points: Vec<DepthPoint>,
}

/// One frame of a symbolized stack.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Frame {
    /// The function, demangled, without its hash.
    pub function: String,
    /// The source file, when line tables are present.
    pub file: Option<String>,
    /// The line, when line tables are present.
    pub line: Option<u32>,
    /// Other names of this function's machine code, demangled: functions whose code was the
    /// same were merged into one (std's `TcpStream::read` and `UdpSocket::recv` are one
    /// function), the debug info names one of them, and the address cannot tell which the
    /// program called. Only names of another method than `function`'s (a caller's line tells
    /// those apart), at most four. Empty for a function with one name, for an inlined frame,
    /// and where the module has no symbol table.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub same_code: Vec<String>,
}

impl Frame {
    /// A frame.
    pub fn new(function: impl Into<String>, file: Option<String>, line: Option<u32>) -> Self {
        Frame {
            function: function.into(),
            file,
            line,
            same_code: Vec::new(),
        }
    }
}

impl std::fmt::Display for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{} ({file}:{line})", self.function),
            (Some(file), None) => write!(f, "{} ({file})", self.function),
            _ => write!(f, "{}", self.function),
        }
    }
}

/// One distinct stack seen during a stall, innermost frame first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct StackSample {
    /// Times this stack was sampled.
    pub count: u32,
    /// The frames, innermost first (the signal handler's own frames removed).
    pub frames: Vec<Frame>,
    /// Of `count`, the samples that found the thread inside a system call for a while: copied
    /// from outside while it slept in one, or taken by a signal whose handler began only after
    /// the thread had used [`crate::IN_A_CALL_NS`] or more of CPU time since it was sent (a
    /// handler runs as a call returns). The others were answered at once, in the thread's own
    /// code or as a short call returned. `None` in a record written before asyncprof counted
    /// them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_a_call: Option<u32>,
}

/// What a stalled thread was doing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum StallClass {
    /// On CPU for most of its time (a poll's stall, from its thread's `schedstat`), or in most
    /// of the watchdog's looks (a busy period's): computing.
    CpuBound,
    /// Asleep in a system call for most of its time, or in most looks: waiting.
    Blocking,
    /// No sample could be classified.
    #[default]
    Unknown,
}

/// A poll that held its worker longer than the stall threshold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct StallRecord {
    /// Identifies the stall; a later record with the same id supersedes an earlier one.
    pub id: u64,
    /// The worker (index in the snapshot's workers).
    pub worker: u32,
    /// The runtime that worker belongs to ([`RuntimeInfo::id`]; 0 when not known).
    pub runtime: u64,
    /// The worker thread's name.
    pub thread_name: String,
    /// Its kernel thread id.
    pub tid: i32,
    /// The task being polled.
    pub task_id: u64,
    /// Where that task was spawned.
    pub task_location: Option<SourceLocation>,
    /// When the poll began, ns since the run started (at the coarse clock's resolution).
    pub start_ns: u64,
    /// How long the poll ran; for an ongoing stall, until the last look.
    pub duration_ns: u64,
    /// The poll had not returned at the last look: for the final record of a run, it never
    /// returned.
    pub ongoing: bool,
    /// From the poll's start to the watchdog recording the stall.
    pub detection_latency_ns: u64,
    /// On CPU or asleep.
    pub class: StallClass,
    /// The system call the thread slept in most often, by name (or number).
    pub syscall: Option<String>,
    /// The share of the stall on CPU, which decides its class: for a poll's stall, of its
    /// thread's time on CPU or asleep (its `schedstat`; time waiting for a core left out);
    /// for a busy period's stall, or without `schedstat`, of the looks that found the thread
    /// on CPU or asleep.
    pub on_cpu_ratio: f64,
    /// The share of the stall's wall time the thread spent on CPU (its schedstat), from half
    /// the threshold to the end; `None` while it lasts or when unknown. Well under 1 without
    /// sleeping: the thread was runnable but preempted.
    pub cpu_share: Option<f64>,
    /// The share of the looks that found the thread asleep during which the machine had more
    /// runnable threads than CPUs (`/proc/loadavg`): a lock's holder may then be waiting for a
    /// core while this thread waits for the lock. `None` when never asleep or unknown.
    pub crowded_share: Option<f64>,
    /// Stacks sampled during the stall, with their counts.
    pub stacks: Vec<StackSample>,
    /// The blocking primitive (the call the user's code made), when one was found.
    pub primitive: Option<Frame>,
    /// The first frame in the user's own code.
    pub culprit: Option<Frame>,
    /// The most tasks seen queued (ready, waiting for a worker) while the stall lasted.
    pub max_ready_tasks: u64,
    /// A poll that both slept and computed past the threshold each, at two lines: the part of
    /// the other class than the stall's (a blocking call before a longer computation, say).
    pub part: Option<StallPart>,
}

/// The smaller part of a poll's stall that both slept and computed past the threshold each
/// (from its thread's `schedstat`), at a line of its own: the stall's class is the larger
/// part's, this is the other, with the stall's stacks of its class (most of which reach its
/// line).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct StallPart {
    /// On CPU or asleep: the other class than the stall's.
    pub class: StallClass,
    /// The thread's time in this class during the stall (ns): on CPU, or asleep.
    pub duration_ns: u64,
    /// The system call it slept in most often (a blocking part).
    pub syscall: Option<String>,
    /// The stacks of this class, with their counts.
    pub stacks: Vec<StackSample>,
    /// The blocking primitive of its line, when one was found.
    pub primitive: Option<Frame>,
    /// Its line: the first frame in the user's own code.
    pub culprit: Option<Frame>,
}

impl StallRecord {
    /// The stall's time shared among its stacks, ns, by how often each was sampled; with a
    /// part ([`StallRecord::part`]), the part's time among the part's stacks and the rest
    /// among the others, since the looks that took them came closest at the stall's start
    /// (a sleep before a longer computation has the most samples). The shares add up to the
    /// stall's duration (up to rounding).
    pub fn stack_times(&self) -> Vec<(&StackSample, u64)> {
        let part = self.part.as_ref();
        let in_part =
            |s: &StackSample| part.is_some_and(|p| p.stacks.iter().any(|q| q.frames == s.frames));
        let samples = |of_part: bool| -> u64 {
            self.stacks
                .iter()
                .filter(|s| in_part(s) == of_part)
                .map(|s| u64::from(s.count))
                .sum()
        };
        let (part_n, rest_n) = (samples(true), samples(false));
        if part_n + rest_n == 0 {
            // No sample (a damaged file): nothing to share.
            return Vec::new();
        }
        // The part's time among its stacks, the rest among the others; when either has no
        // stack, the whole among all.
        let split = part
            .filter(|_| part_n > 0 && rest_n > 0)
            .map(|p| p.duration_ns.min(self.duration_ns));
        self.stacks
            .iter()
            .map(|s| {
                let (ns, n) = match split {
                    Some(part_ns) if in_part(s) => (part_ns, part_n),
                    Some(part_ns) => (self.duration_ns - part_ns, rest_n),
                    None => (self.duration_ns, part_n + rest_n),
                };
                let share = u128::from(ns) * u128::from(s.count) / u128::from(n.max(1));
                (s, share as u64)
            })
            .collect()
    }

    /// The stall's part ([`StallRecord::part`]) as a stall of its own: its class, time, line
    /// and stacks, the rest as the stall's. Its CPU share is not known (the stall's is the
    /// whole poll's), so it is never taken for a preempted thread.
    pub fn part_as_stall(&self) -> Option<StallRecord> {
        let part = self.part.as_ref()?;
        let mut s = self.clone();
        s.class = part.class;
        s.duration_ns = part.duration_ns;
        s.on_cpu_ratio = if part.class == StallClass::CpuBound {
            1.0
        } else {
            0.0
        };
        s.cpu_share = None;
        s.syscall = part.syscall.clone();
        s.stacks = part.stacks.clone();
        s.primitive = part.primitive.clone();
        s.culprit = part.culprit.clone();
        s.part = None;
        Some(s)
    }
}

/// A CPU profile of the whole run: stacks sampled on a timer (SIGPROF) across every thread.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CpuProfile {
    /// Samples per second per thread on CPU.
    pub hz: u32,
    /// Samples taken.
    pub samples: u64,
    /// Folded stacks: `thread;outermost;…;innermost count` per line.
    pub folded: String,
    /// Stacks left out to keep the record small (the least sampled).
    pub dropped_stacks: u64,
    /// Set when the profile stopped before the run did, this long after the run started:
    /// the sampler's spill file (pprof's, in the temporary folder) reached its limit, a
    /// quarter of [`Config::max_file_bytes`]. The profile covers the run up to then.
    pub stopped_at_ns: Option<u64>,
}

impl LoadPoint {
    /// Share of the workers' time they were busy, 0 to 1, when known.
    pub fn busy_share(&self) -> Option<f64> {
        let busy = self.busy_ns?;
        (self.span_ns > 0).then(|| (busy as f64 / self.span_ns as f64).min(1.0))
    }

    /// Share of the machine's CPU time that went to other processes (or was stolen or
    /// throttled), 0 to 1, when known.
    pub fn others_share(&self) -> Option<f64> {
        (self.machine_ns > 0).then(|| (self.others_cpu_ns as f64 / self.machine_ns as f64).min(1.0))
    }

    /// Share of the worker threads' runnable time they waited for a CPU, 0 to 1, when they
    /// were runnable at all.
    pub fn cpu_wait_share(&self) -> Option<f64> {
        Self::cpu_wait_share_of([self])
    }

    /// [`LoadPoint::cpu_wait_share`] over several samples together (their waits over their
    /// runnable time, not a mean of shares).
    pub fn cpu_wait_share_of<'a>(points: impl IntoIterator<Item = &'a LoadPoint>) -> Option<f64> {
        let (wait, ran) = points.into_iter().fold((0u64, 0u64), |(w, r), p| {
            (w + p.cpu_wait_ns, r + p.cpu_run_ns)
        });
        (wait + ran > 0).then(|| wait as f64 / (wait + ran) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(count: u32, function: &str) -> StackSample {
        StackSample {
            count,
            in_a_call: None,
            frames: vec![Frame::new(function, Some("src/main.rs".into()), Some(1))],
        }
    }

    /// Known truth: a 120 ms poll that slept 25 ms (four samples, the densest: a stall's
    /// first) and then computed (three samples). Shared by samples alone, the sleep got 4/7 of
    /// the time; with its part's time, 25 ms.
    #[test]
    fn a_parts_time_goes_to_its_stacks() {
        let mut s = StallRecord {
            duration_ns: 120_000_000,
            stacks: vec![stack(4, "sleep"), stack(2, "loop"), stack(1, "hash")],
            ..StallRecord::default()
        };
        let times = |s: &StallRecord| -> Vec<u64> {
            s.stack_times().into_iter().map(|(_, ns)| ns).collect()
        };
        assert_eq!(times(&s), [68_571_428, 34_285_714, 17_142_857]);
        let mut part = StallPart {
            class: StallClass::Blocking,
            duration_ns: 25_000_000,
            stacks: vec![stack(4, "sleep")],
            ..StallPart::default()
        };
        s.part = Some(part.clone());
        assert_eq!(times(&s), [25_000_000, 63_333_333, 31_666_666]);
        // A part whose stacks are the stall's only ones: shared as before.
        s.stacks.truncate(1);
        assert_eq!(times(&s), [120_000_000]);
        // A part longer than its stall (a damaged file): capped.
        part.duration_ns = u64::MAX;
        s.stacks = vec![stack(1, "sleep"), stack(1, "loop")];
        s.part = Some(part);
        assert_eq!(times(&s), [120_000_000, 0]);
        // No sample at all: nothing.
        s.stacks = vec![stack(0, "sleep")];
        assert!(times(&s).is_empty());
    }
}
