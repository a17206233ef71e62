//! The machine-readable summary of a run: what `asyncprof report --json` prints.

use std::collections::BTreeMap;

use asyncprof_format::{self as format, Histogram, RunFile};
use serde::Serialize;

/// Quantiles of one latency histogram, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Latency {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile (quantile 0.99).
    pub p99_ns: u64,
    /// Largest.
    pub max_ns: u64,
}

impl Latency {
    /// Quantiles of `h`.
    pub fn of(h: &Histogram) -> Self {
        if h.buckets.is_empty() {
            return Latency::default();
        }
        let hdr = h.to_hdr();
        Latency {
            count: hdr.len(),
            p50_ns: hdr.value_at_quantile(0.5),
            p99_ns: hdr.value_at_quantile(0.99),
            max_ns: hdr.max(),
        }
    }
}

/// Runtime-wide numbers.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct RuntimeSummary {
    /// Polls of every task.
    pub polls: u64,
    /// Tasks spawned.
    pub tasks_spawned: u64,
    /// Tasks alive at the end.
    pub tasks_alive: u64,
    /// Tasks completed.
    pub tasks_completed: u64,
    /// Poll durations.
    pub poll: Latency,
    /// Scheduling delays.
    pub scheduled: Latency,
    /// The stalls of the whole run as of the last snapshot, including those of earlier parts
    /// of it whose records are not in this file; `None` for files written before asyncprof
    /// counted them.
    pub stalls: Option<RunStalls>,
}

/// How many stalls the whole run has had, from the run's own count (see
/// [`format::StallTotals`]).
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[non_exhaustive]
pub struct RunStalls {
    /// Stalls that ended.
    pub count: u64,
    /// Their summed duration, ms.
    pub total_ms: f64,
    /// The longest, ms.
    pub longest_ms: f64,
}

impl RunStalls {
    fn of(t: format::StallTotals) -> Self {
        RunStalls {
            count: t.count,
            total_ms: ms(t.total_ns),
            longest_ms: ms(t.longest_ns),
        }
    }
}

/// One worker thread.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct WorkerSummary {
    /// The thread's name.
    pub thread_name: String,
    /// Its runtime's id (see [`Summary::runtimes`]; 0 when not known).
    pub runtime: u64,
    /// Polls it ran.
    pub polls: u64,
    /// Time busy, ms.
    pub busy_ms: f64,
    /// Time parked, ms.
    pub parked_ms: f64,
}

/// All tasks spawned at one location.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct LocationSummary {
    /// `file:line:col`.
    pub location: String,
    /// The file.
    pub file: String,
    /// The line.
    pub line: u32,
    /// The column.
    pub col: u32,
    /// Tasks spawned here.
    pub tasks_spawned: u64,
    /// Tasks completed.
    pub tasks_completed: u64,
    /// Polls.
    pub polls: u64,
    /// Time inside polls, ms.
    pub busy_ms: f64,
    /// Poll durations.
    pub poll: Latency,
    /// Scheduling delays.
    pub scheduled: Latency,
}

/// One live task at the end of the run.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct TaskSummary {
    /// tokio's task id.
    pub id: u64,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// Where it was spawned.
    pub location: String,
    /// Polls.
    pub polls: u64,
    /// Time inside polls, ms.
    pub busy_ms: f64,
    /// Time alive but not polled, ms.
    pub idle_ms: f64,
    /// Poll durations.
    pub poll: Latency,
    /// Scheduling delays.
    pub scheduled: Latency,
}

/// One user span as a stage.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct StageSummary {
    /// The span's name.
    pub name: String,
    /// Its target.
    pub target: String,
    /// Spans closed.
    pub count: u64,
    /// Span lifetimes.
    pub duration: Latency,
}

/// One instrumented queue (channel, semaphore or gauge).
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct QueueSummary {
    /// Id within the run.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Channel, semaphore or gauge.
    pub kind: format::QueueKind,
    /// Where it was created.
    pub location: String,
    /// Capacity of one instance, when bounded.
    pub capacity: Option<u64>,
    /// Instances created there under that name.
    pub instances: u64,
    /// Items sent (permits acquired).
    pub enqueued: u64,
    /// Items received.
    pub dequeued: u64,
    /// Sends refused because it was full.
    pub rejected: u64,
    /// Depth at the end.
    pub depth: u64,
    /// Largest depth seen.
    pub max_depth: u64,
    /// Share of samples that found it full or a sender waiting (0 to 1).
    pub full_share: f64,
    /// Sender (acquirer) waits.
    pub send_wait: Latency,
    /// Receiver waits.
    pub recv_wait: Latency,
    /// Where items are sent from.
    pub producer: Option<String>,
    /// Where items are received.
    pub consumer: Option<String>,
}

/// The stalls of the tasks spawned at one place that no stack placed at a line of code (no
/// stack was sampled, or none reached the program's own code) and that joined no finding of
/// their task. They are evidence about the task, not a line to change: the task's code held
/// its worker this long, somewhere.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct TaskStalls {
    /// Where the tasks were spawned, `file:line:col`.
    pub task_location: String,
    /// Stalls.
    pub stalls: u64,
    /// Their summed duration, ms.
    pub total_ms: f64,
    /// The longest, ms.
    pub max_ms: f64,
    /// Of those, on CPU most of the time.
    pub on_cpu: u64,
    /// Of those, asleep in a system call most of the time.
    pub asleep: u64,
    /// Of those, polls still running when the run ended (they never returned).
    pub never_returned: u64,
    /// Of those, stalls whose stacks were sampled but never reached the program's own code
    /// (every frame in the standard library, tokio, or a dependency).
    pub with_stack: u64,
    /// The system calls the asleep ones slept in, most frequent first.
    pub syscalls: Vec<String>,
    /// Why the ones on CPU have no stack, when the run says: [`SIGNALS_OFF`] in a run
    /// recorded without a signal.
    pub note: Option<String>,
}

/// Every loss counter with what it counts, in plain words, in the order reports list them.
pub fn loss_counters(l: &format::LossCounters) -> [(u64, &'static str); 16] {
    [
        (
            l.dropped_records,
            "records dropped: the writer fell behind, or the disk refused them",
        ),
        (
            l.histogram_outliers,
            "values above a histogram's bound, recorded as the bound",
        ),
        (
            l.untracked_tasks,
            "tasks spawned while the task table was full: counted, not tracked one by one",
        ),
        (
            l.untracked_locations,
            "spawn locations beyond the location table, folded into one entry",
        ),
        (
            l.clock_gaps,
            "times the watchdog ran late (the machine was busy): a poll that fell inside such a \
             gap may be timed as short, and a stall in it seen late or not at all",
        ),
        (
            l.missed_samples,
            "stack samples that failed: the thread did not answer in time, had exited, or had \
             finished the poll",
        ),
        (
            l.skipped_samples,
            "stack samples not taken: the per-minute budget of sampled stalls was spent (or \
             signals are off and the thread was on CPU); those stalls are recorded and \
             classified without a stack",
        ),
        (
            l.sampler_busy,
            "stack samples refused because the sampler was still busy with another",
        ),
        (
            l.untracked_queues,
            "queues created while the queue registry was full: they work, but are not reported",
        ),
        (
            l.dropped_depth_points,
            "queue depth samples dropped because a queue's sample buffer was full",
        ),
        (
            l.dropped_long_values,
            "long polls and delays missing from their spawn location's histograms (no spare \
             histograms were left for a new location); the runtime-wide numbers have them",
        ),
        (
            l.dropped_stall_events,
            "stall events (tracing) not emitted: over their rate limit, or their thread fell \
             behind; the run file has every stall",
        ),
        (
            l.stalls_without_a_poll,
            "stalls not recorded because they held no worker: a task's poll mostly inside \
             `block_in_place` (its worker handed to another thread); or, in the stable tier, \
             a worker's busy time stood still but nothing showed one poll holding it (every \
             stack in tokio's scheduler between polls, no stack taken, samples of several \
             tasks' polls, a poll on CPU that ended before four samples half a threshold of \
             its CPU time apart confirmed it, waits on the C library's allocator lock, or the \
             thread outside any runtime once a current-thread runtime's `block_on` returned), \
             where a poll that computes for under about one and a half thresholds can be one \
             of these: build with --cfg tokio_unstable to time every poll",
        ),
        (
            l.unwritten_at_file_limit,
            "records (stalls, snapshots) not written: the run file had reached its size limit \
             (ASYNCPROF_MAX_FILE_MB) and could not go on in a new file; the final snapshot \
             still has the whole run's totals",
        ),
        (
            l.untracked_threads,
            "threads not watched for stalls: they ran while the worker table (256 threads) was \
             full; their polls are neither counted nor timed",
        ),
        (
            l.polls_never_ended,
            "task polls whose end asyncprof never saw: the worker's next poll began, or it \
             parked, while asyncprof still counted the poll as running. tokio keeps one \
             callback per hook: an on_after_task_poll set on the runtime's builder after \
             guard.instrument replaces asyncprof's (pass yours through guard.instrument_with). \
             Stalls are watched taking each to last until the next poll's start or the park; \
             no poll time of theirs is recorded",
        ),
    ]
}

/// Said once in every report of a run recorded without a signal (`stall_signal` 0), and of its
/// stalls on CPU that have no stack.
pub const SIGNALS_OFF: &str = "signals off (ASYNCPROF_SIGNAL=0): threads blocked in a system \
                               call still get stacks; stalls on CPU have none";

/// Everything `asyncprof report --json` prints about a run.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// The profiled program.
    pub program: String,
    /// Its process id.
    pub pid: u32,
    /// Capture tier.
    pub tier: format::Tier,
    /// Runtime flavor.
    pub flavor: format::Flavor,
    /// Worker threads.
    pub workers: u32,
    /// Run length up to the last snapshot, ms.
    pub duration_ms: f64,
    /// The file ends in the middle of a record (killed, or still running).
    pub truncated: bool,
    /// The recorder stopped normally.
    pub ended: bool,
    /// Reader warnings.
    pub warnings: Vec<String>,
    /// The recording configuration (clock tick, sampling, thresholds).
    pub config: format::Config,
    /// Everything dropped or clamped.
    pub loss: format::LossCounters,
    /// Runtime-wide numbers.
    pub runtime: RuntimeSummary,
    /// The runtimes the run saw (a process may run several).
    pub runtimes: Vec<format::RuntimeInfo>,
    /// Per worker.
    pub worker_threads: Vec<WorkerSummary>,
    /// Per spawn location, busiest first.
    pub locations: Vec<LocationSummary>,
    /// The busiest live tasks at the end.
    pub tasks: Vec<TaskSummary>,
    /// User spans as stages.
    pub stages: Vec<StageSummary>,
    /// Instrumented queues, by id.
    pub queues: Vec<QueueSummary>,
    /// Stalls recorded (polls past the threshold), all kinds.
    pub stalls: u64,
    /// Stalls with no stack sample and no tracked task: no line to blame, so in no finding.
    pub unattributed_stalls: u64,
    /// Stalls of tracked tasks that no stack placed at a line and that joined no finding, by
    /// the tasks' spawn location, most stall time first: evidence about those tasks.
    pub stalls_without_culprit: Vec<TaskStalls>,
    /// Stalls whose thread was runnable but preempted most of the time (an overloaded
    /// machine), so in no finding.
    pub preempted_stalls: u64,
    /// What is wrong, where, and what to change: most severe first.
    pub findings: Vec<crate::Finding>,
    /// Each runtime's load over the run (ten samples a second).
    pub load: Vec<LoadSummary>,
}

/// One runtime's load over the run, from its samples (ten a second).
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct LoadSummary {
    /// The runtime, by name or `runtime <id>`.
    pub runtime: String,
    /// Samples.
    pub samples: u64,
    /// Share of the workers' time they were busy, over the run (when known).
    pub busy_share: Option<f64>,
    /// Tasks waiting for a worker: mean and most.
    pub ready_mean: f64,
    /// The most tasks seen waiting for a worker.
    pub ready_max: u64,
    /// The most `spawn_blocking` jobs seen waiting for a thread.
    pub blocking_queue_max: u64,
    /// The most blocking threads seen.
    pub blocking_threads_max: u64,
    /// Share of the worker threads' runnable time they waited for a CPU.
    pub cpu_wait_share: Option<f64>,
    /// The process's resident memory at the first and the last sample, MiB.
    pub rss_mib: (f64, f64),
}

impl LoadSummary {
    fn of(run: &RunFile) -> Vec<LoadSummary> {
        crate::diagnoses::load_by_runtime(run)
            .into_iter()
            .map(|(id, points)| {
                let n = points.len().max(1) as f64;
                let span: u64 = points
                    .iter()
                    .filter(|p| p.busy_ns.is_some())
                    .map(|p| p.span_ns)
                    .sum();
                let busy: u64 = points.iter().filter_map(|p| p.busy_ns).sum();
                let mib = |p: Option<&&format::LoadPoint>| {
                    p.map_or(0.0, |p| p.rss_bytes as f64 / 1_048_576.0)
                };
                LoadSummary {
                    runtime: crate::diagnoses::runtime_label(run, id),
                    samples: points.len() as u64,
                    busy_share: (span > 0).then(|| (busy as f64 / span as f64).min(1.0)),
                    ready_mean: points.iter().map(|p| p.ready).sum::<u64>() as f64 / n,
                    ready_max: points.iter().map(|p| p.ready).max().unwrap_or(0),
                    blocking_queue_max: points.iter().map(|p| p.blocking_queue).max().unwrap_or(0),
                    blocking_threads_max: points
                        .iter()
                        .map(|p| p.blocking_threads)
                        .max()
                        .unwrap_or(0),
                    cpu_wait_share: format::LoadPoint::cpu_wait_share_of(points.iter().copied()),
                    rss_mib: (mib(points.first()), mib(points.last())),
                }
            })
            .collect()
    }
}

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e4).round() / 100.0
}

impl Summary {
    /// Summarize a run from its last snapshot, diagnosing with the default thresholds.
    pub fn of(run: &RunFile) -> Self {
        Self::with_thresholds(run, &crate::Thresholds::default())
    }

    /// Summarize a run, diagnosing with `thresholds`.
    pub fn with_thresholds(run: &RunFile, thresholds: &crate::Thresholds) -> Self {
        let h = &run.header;
        let mut s = Summary {
            program: h.program.clone(),
            pid: h.pid,
            tier: h.tier,
            flavor: h.flavor,
            workers: h.workers,
            truncated: run.truncated,
            ended: run.ended,
            warnings: run.warnings.clone(),
            config: h.config.clone(),
            ..Summary::default()
        };
        s.stalls = run.stalls.len() as u64;
        s.unattributed_stalls = run
            .stalls
            .iter()
            .filter(|st| {
                st.culprit.is_none()
                    && st.task_location.is_none()
                    && !crate::diagnoses::preempted(st)
            })
            .count() as u64;
        s.preempted_stalls = run
            .stalls
            .iter()
            .filter(|st| crate::diagnoses::preempted(st))
            .count() as u64;
        let (findings, unplaced) = crate::findings::diagnosis(run, thresholds);
        s.findings = findings;
        s.load = LoadSummary::of(run);
        s.stalls_without_culprit = task_stalls(&unplaced, h.config.stall_signal == 0);
        if h.part > 0 {
            let ended_here = run.stalls.iter().filter(|st| !st.ongoing).count();
            // The last snapshot can be a moment older than the last stall records (which go
            // out every 100 ms): the run has had at least the stalls this file holds.
            let totals = run.snapshot.as_ref().and_then(|n| n.runtime.stalls);
            let counted = match totals.map(RunStalls::of) {
                Some(t) => format!(
                    ": {} of the run's {} stalls that ended are here (the run's own count: \
                     {:.1} ms stalled in all, the longest {:.1} ms)",
                    ended_here,
                    t.count.max(ended_here as u64),
                    t.total_ms,
                    t.longest_ms
                ),
                None => String::new(),
            };
            s.warnings.push(format!(
                "part {} of the run: its run file reached its size limit (ASYNCPROF_MAX_FILE_MB) \
                 and the run went on in a new file, so the stalls before part {} are not here{} \
                 (each full part is renamed to NAME.old.run when the next begins, and the one \
                 before it removed). Poll and task totals and rates cover the whole run",
                h.part, h.part, counted
            ));
        }
        if let Some(c) = &run.continued {
            s.warnings.push(format!(
                "the run went on in {} (part {}): this file, part {} of the run, reached its \
                 size limit (ASYNCPROF_MAX_FILE_MB) {:.1} s into the run and was renamed to {}; \
                 numbers are as of its last snapshot",
                c.next,
                c.next_part,
                h.part,
                c.elapsed_ns as f64 / 1e9,
                c.previous
            ));
        } else if !run.ended && !run.truncated {
            s.warnings.push(if run.snapshot.is_some() {
                "the run has no end record: the process was killed or is still running; \
                 numbers are as of its last snapshot"
                    .into()
            } else {
                "the run has no end record: the process was killed or is still running".into()
            });
        }
        if stacks_without_files(run) {
            s.warnings.push(
                "the stall stacks have no source files or lines: the program was built without \
                 debug info (cargo's release profile leaves it out). Findings name the \
                 program's functions only; for file and line, set debug = \"line-tables-only\" \
                 under [profile.release] in Cargo.toml and build again"
                    .into(),
            );
        }
        if h.tier == format::Tier::Stable {
            s.warnings.push(
                "recorded in the stable tier (no tokio task hooks: a build without \
                 `--cfg tokio_unstable`): workers' busy and parked time and stalls with their \
                 stacks, but no per-task polls, spawn locations or scheduling delays, and a \
                 stall is a worker busy without parking. For the hooks tier, build with \
                 RUSTFLAGS=\"--cfg tokio_unstable\" and instrument the runtime's builder \
                 (guard.instrument or #[asyncprof::main])"
                    .into(),
            );
        }
        let Some(snap) = &run.snapshot else {
            // How far the process got: the header is written when recording starts, and
            // written again when the first task is polled.
            s.warnings.push(if h.tier == format::Tier::Unknown {
                "the run file holds only its header: recording started, but the process \
                 stopped (or is still running) before any task was polled and before the first \
                 snapshot"
                    .into()
            } else {
                format!(
                    "the run file holds no snapshot yet: tasks ran ({:?} tier), but the process \
                     stopped (or is still running) before the first snapshot",
                    h.tier
                )
            });
            return s;
        };
        if h.tier == format::Tier::Unknown && snap.runtime.polls == 0 {
            s.warnings.push(
                "asyncprof saw no task run: instrument the runtime's builder \
                 (guard.instrument) or install the layer before the runtime starts"
                    .into(),
            );
        }
        s.duration_ms = ms(snap.elapsed_ns);
        s.loss = snap.loss.clone();
        let r = &snap.runtime;
        s.runtime = RuntimeSummary {
            polls: r.polls,
            tasks_spawned: r.tasks_spawned,
            tasks_alive: r.tasks_alive,
            tasks_completed: r.tasks_completed,
            poll: Latency::of(&r.poll_ns),
            scheduled: Latency::of(&r.scheduled_ns),
            stalls: r.stalls.map(RunStalls::of),
        };
        s.worker_threads = snap
            .workers
            .iter()
            .map(|w| WorkerSummary {
                thread_name: w.thread_name.clone(),
                runtime: w.runtime,
                polls: w.polls,
                busy_ms: ms(w.busy_ns),
                parked_ms: ms(w.parked_ns),
            })
            .collect();
        s.runtimes = snap.runtimes.clone();
        s.locations = merge_locations(&snap.locations);
        s.tasks = snap
            .tasks
            .iter()
            .map(|t| TaskSummary {
                id: t.id,
                name: t.name.clone(),
                location: t.location.to_string(),
                polls: t.polls,
                busy_ms: ms(t.busy_ns),
                idle_ms: ms(t.idle_ns),
                poll: Latency::of(&t.poll_ns),
                scheduled: Latency::of(&t.scheduled_ns),
            })
            .collect();
        s.stages = snap
            .stages
            .iter()
            .map(|st| StageSummary {
                name: st.name.clone(),
                target: st.target.clone(),
                count: st.count,
                duration: Latency::of(&st.duration_ns),
            })
            .collect();
        s.queues = snap
            .queues
            .iter()
            .map(|q| QueueSummary {
                id: q.id,
                name: q.name.clone(),
                kind: q.kind,
                location: q.location.to_string(),
                capacity: q.capacity,
                instances: q.instances,
                enqueued: q.enqueued,
                dequeued: q.dequeued,
                rejected: q.rejected,
                depth: q.depth,
                max_depth: q.max_depth,
                full_share: if q.samples == 0 {
                    0.0
                } else {
                    (q.full_samples as f64 / q.samples as f64 * 1000.0).round() / 1000.0
                },
                send_wait: Latency::of(&q.send_wait_ns),
                recv_wait: Latency::of(&q.recv_wait_ns),
                producer: q.producer.as_ref().map(ToString::to_string),
                consumer: q.consumer.as_ref().map(ToString::to_string),
            })
            .collect();
        s
    }
}

/// The stalls no stack placed at a line, by their task's spawn location, most stall time first.
fn task_stalls(stalls: &[&format::StallRecord], signals_off: bool) -> Vec<TaskStalls> {
    let mut by: BTreeMap<String, (TaskStalls, u64, u64, BTreeMap<String, u64>)> = BTreeMap::new();
    for st in stalls {
        let Some(loc) = &st.task_location else {
            continue;
        };
        let (t, total_ns, max_ns, syscalls) = by.entry(loc.to_string()).or_default();
        t.stalls += 1;
        *total_ns = total_ns.saturating_add(st.duration_ns);
        *max_ns = (*max_ns).max(st.duration_ns);
        match st.class {
            format::StallClass::CpuBound => t.on_cpu += 1,
            format::StallClass::Blocking => t.asleep += 1,
            _ => {}
        }
        t.never_returned += u64::from(st.ongoing);
        t.with_stack += u64::from(!st.stacks.is_empty());
        if let Some(sc) = &st.syscall {
            *syscalls.entry(sc.clone()).or_default() += 1;
        }
        if signals_off && st.class == format::StallClass::CpuBound && st.stacks.is_empty() {
            t.note = Some(SIGNALS_OFF.to_string());
        }
    }
    let mut out: Vec<(u64, TaskStalls)> = by
        .into_iter()
        .map(|(location, (mut t, total_ns, max_ns, syscalls))| {
            t.task_location = location;
            t.total_ms = ms(total_ns);
            t.max_ms = ms(max_ns);
            let mut syscalls: Vec<(String, u64)> = syscalls.into_iter().collect();
            syscalls.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            t.syscalls = syscalls.into_iter().map(|(name, _)| name).collect();
            (total_ns, t)
        })
        .collect();
    out.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then(a.1.task_location.cmp(&b.1.task_location))
    });
    out.into_iter().map(|(_, t)| t).collect()
}

/// Whether the run's stalls have stacks and not one of their frames has a source file: a
/// program built without debug info (its libraries and the standard library too).
fn stacks_without_files(run: &RunFile) -> bool {
    let mut frames = run
        .stalls
        .iter()
        .flat_map(|s| &s.stacks)
        .flat_map(|st| &st.frames)
        .peekable();
    frames.peek().is_some() && frames.all(|f| f.file.is_none())
}

/// One entry per source location (the recorder may hold two for one place), busiest first.
/// A location where no task was spawned or polled is left out: only `spawn_blocking` jobs (and tokio's
/// own worker threads, which it starts as blocking jobs) ended there, with no polls to show.
pub(crate) fn merge_locations(locs: &[format::LocationStats]) -> Vec<LocationSummary> {
    struct Acc {
        stats: format::LocationStats,
        poll: hdrhistogram::Histogram<u64>,
        sched: hdrhistogram::Histogram<u64>,
    }
    let mut by: BTreeMap<format::SourceLocation, Acc> = BTreeMap::new();
    for l in locs {
        let poll = l.poll_ns.to_hdr();
        let sched = l.scheduled_ns.to_hdr();
        match by.get_mut(&l.location) {
            Some(acc) => {
                let s = &mut acc.stats;
                s.tasks_spawned += l.tasks_spawned;
                s.tasks_completed += l.tasks_completed;
                s.polls += l.polls;
                s.busy_ns += l.busy_ns;
                s.max_poll_ns = s.max_poll_ns.max(l.max_poll_ns);
                let _ = acc.poll.add(&poll);
                let _ = acc.sched.add(&sched);
            }
            None => {
                by.insert(
                    l.location.clone(),
                    Acc {
                        stats: l.clone(),
                        poll,
                        sched,
                    },
                );
            }
        }
    }
    let mut out: Vec<LocationSummary> = by
        .into_values()
        .filter(|a| a.stats.tasks_spawned > 0 || a.stats.polls > 0)
        .map(|a| {
            let s = a.stats;
            let mut poll = Latency::of(&Histogram::from_hdr(&a.poll));
            if poll.count > 0 && s.max_poll_ns > 0 {
                // The exact maximum, not its histogram bucket's upper edge; no quantile
                // above it.
                poll.max_ns = s.max_poll_ns;
                poll.p50_ns = poll.p50_ns.min(poll.max_ns);
                poll.p99_ns = poll.p99_ns.min(poll.max_ns);
            }
            LocationSummary {
                location: s.location.to_string(),
                file: s.location.file.clone(),
                line: s.location.line,
                col: s.location.col,
                tasks_spawned: s.tasks_spawned,
                tasks_completed: s.tasks_completed,
                polls: s.polls,
                busy_ms: ms(s.busy_ns),
                poll,
                scheduled: Latency::of(&Histogram::from_hdr(&a.sched)),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.busy_ms
            .total_cmp(&a.busy_ms)
            .then(a.location.cmp(&b.location))
    });
    out
}

#[cfg(test)]
mod tests {
    use asyncprof_format as format;

    fn at(line: u32, spawned: u64, blocking: u64, busy_ns: u64) -> format::LocationStats {
        let mut l = format::LocationStats::default();
        l.location = format::SourceLocation::new("src/main.rs", line, 5);
        l.tasks_spawned = spawned;
        l.blocking_tasks = blocking;
        l.busy_ns = busy_ns;
        l
    }

    /// A run whose stall stacks have frames with no file at all (a build without debug info)
    /// says how to get lines; one frame with a file (a build with line tables, whose vDSO
    /// and C library frames have none) does not.
    #[test]
    fn a_run_without_debug_info_says_how_to_get_lines() {
        let stall = |file: Option<&str>| {
            let mut st = format::StackSample::default();
            st.count = 1;
            st.frames = vec![
                format::Frame::new("syscall", None, None),
                format::Frame::new("svc::main::{{closure}}", file.map(str::to_string), Some(9)),
            ];
            let mut s = format::StallRecord::default();
            s.duration_ns = 30_000_000;
            s.stacks = vec![st];
            s
        };
        let warned = |stalls: &[format::StallRecord]| {
            let mut bytes = Vec::new();
            let mut w = format::RunWriter::new(&mut bytes, &format::Header::new("svc")).unwrap();
            for s in stalls {
                w.write_stall(s).unwrap();
            }
            w.write_end().unwrap();
            let run = format::read_bytes(&bytes).unwrap();
            crate::Summary::of(&run)
                .warnings
                .iter()
                .any(|w| w.contains("line-tables-only"))
        };
        assert!(warned(&[stall(None), stall(None)]));
        assert!(!warned(&[stall(None), stall(Some("src/main.rs"))]));
        assert!(!warned(&[]), "no stacks, nothing to say");
    }

    #[test]
    fn locations_with_only_blocking_jobs_are_not_spawn_locations() {
        let locs = [
            at(10, 0, 40, 0),
            at(20, 3, 0, 5_000_000),
            at(30, 2, 0, 9_000_000),
        ];
        let out = super::merge_locations(&locs);
        let lines: Vec<u32> = out.iter().map(|l| l.line).collect();
        assert_eq!(
            lines,
            [30, 20],
            "busiest first, the blocking-only site left out"
        );
    }
}
