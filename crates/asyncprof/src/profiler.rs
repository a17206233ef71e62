//! Starting and stopping a recording: the background threads and the guard.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use asyncprof_format::{self as format, RecordKind};

use crate::aggregator::{aggregator_loop, header, Facts};
use crate::clock;
use crate::config::Builder;
use crate::hist::lock;
use crate::recorder::{Recorder, Settings};
use crate::writer::{create_run_file, writer_loop, WRITER_QUEUE};
use crate::{Error, Result};

/// Entry point: `Profiler::builder()`.
#[derive(Debug)]
pub struct Profiler(());

impl Profiler {
    /// A builder with the default settings.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl Builder {
    /// Start recording: create the run file and the background threads.
    ///
    /// # Errors
    ///
    /// [`Error::Setting`] for an out-of-range setting, [`Error::Output`] when the run file
    /// cannot be created, [`Error::AlreadyRunning`] when this process is already recording,
    /// [`Error::Thread`] when a thread cannot be started.
    pub fn start(self) -> Result<Guard> {
        self.validate()?;
        let path = self
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("asyncprof-{}.run", std::process::id())));
        let mut active = lock(&ACTIVE);
        if let Some(running) = active.as_ref() {
            return Err(Error::AlreadyRunning {
                path: running.clone(),
            });
        }
        let (path, file) = match create_run_file(&path) {
            Ok(file) => (path, file),
            // Another process records there: a child that inherited ASYNCPROF_OUT (a service
            // that runs copies of itself), a second instance. Its run is left alone; this
            // process records beside it, under its own pid.
            Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy => {
                let own = own_run_file(&path);
                let file = create_run_file(&own).map_err(|source| Error::Output {
                    path: own.clone(),
                    source,
                })?;
                eprintln!(
                    "asyncprof: another process records to {}; this one (pid {}) records to {}",
                    path.display(),
                    std::process::id(),
                    own.display()
                );
                (own, file)
            }
            Err(source) => return Err(Error::Output { path, source }),
        };
        // `args_os`: an argument that is not UTF-8 (a file name in another encoding) is the
        // service's to take, and `std::env::args` would panic on it here.
        let mut args = std::env::args_os();
        let program = args
            .next()
            .map(|a| {
                let a = Path::new(&a);
                a.file_name()
                    .unwrap_or(a.as_os_str())
                    .to_string_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        // A build without debug info names its frames with no files: the executable's crate
        // tells the program's own functions from its libraries'.
        let exe = std::env::current_exe().ok();
        let stem = exe.as_deref().and_then(Path::file_stem);
        asyncprof_format::culprit::set_own_crate(
            &stem.map_or_else(|| program.clone(), |s| s.to_string_lossy().into_owned()),
        );
        let settings = Settings {
            config: self.config.clone(),
            program,
            args: args.map(|a| a.to_string_lossy().into_owned()).collect(),
        };
        clock::publish();
        crate::queues::start_recording();
        let recorder: &'static Recorder = Box::leak(Box::new(Recorder::new(settings)));
        let shared = Arc::new(Shared {
            writer_backlog: crate::writer::Backlog::default(),
            stop: AtomicBool::new(false),
            stop_watchdog: AtomicBool::new(false),
            wake: Mutex::new(false),
            cond: Condvar::new(),
            cpu_frame: Mutex::new(None),
            cpu: Mutex::new(None),
        });
        let start_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let started = Instant::now();

        let (tx, rx) = mpsc::sync_channel::<crate::writer::Batch>(WRITER_QUEUE);
        // The file gets its header now, before any task runs: a process that dies right after
        // `start` still leaves a readable file (program, pid, settings). The tier and the
        // runtime are not known yet; the aggregator writes the header again once they are.
        let facts = Facts::of(recorder);
        let mut first = format::preamble().to_vec();
        match format::encode_frame(
            RecordKind::Header,
            &header(recorder, facts, start_unix_ms, 0),
        ) {
            Ok(f) => first.extend_from_slice(&f),
            Err(_) => {
                recorder.loss.dropped_records.fetch_add(1, Relaxed);
            }
        }
        // Only a regular file goes on in parts: a run file at `/dev/null` or a pipe has no
        // limit (it takes no disk), and renaming it would move what is not asyncprof's.
        let regular = file.metadata().is_ok_and(|m| m.is_file());
        let max_file_bytes = if regular {
            self.config.max_file_bytes
        } else {
            0
        };
        // The writer renames and makes files by this path later: absolute, so that a service
        // that changes its directory meanwhile does not send the run elsewhere.
        let lasting_path = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
        let file_limit =
            crate::aggregator::FileLimit::new(max_file_bytes, first.len(), &lasting_path);
        // The channel is empty: this send does not wait.
        shared.writer_backlog.add(first.len());
        let _ = tx.send(crate::writer::Batch {
            bytes: first,
            records: 1,
            new_part: None,
            last: false,
        });
        let (written_tx, written_rx) = mpsc::sync_channel::<()>(1);
        let writer = spawn_thread("asyncprof-writer", {
            let path = lasting_path;
            let shared = shared.clone();
            move || {
                writer_loop(
                    file,
                    rx,
                    recorder,
                    &shared.writer_backlog,
                    &path,
                    written_tx,
                )
            }
        })?;
        let tick = Duration::from_nanos(self.config.clock_tick_ns);
        // A sample taken by the signal says which task its thread was polling (the stable
        // tier tells one long poll from many short ones by it). Set once per process.
        asyncprof_sampler::set_task_probe(polled_task);
        // And which of its worker's polls: a stack is judged by the poll its thread was in
        // as the handler took it, not when the watchdog (which may wait for a CPU) saw it.
        asyncprof_sampler::set_poll_probe(crate::poll::thread_poll_state);
        // Threads asleep in a system call get stacks without a signal; the signal is only
        // for threads on CPU.
        let sampler = match self.config.stall_signal {
            0 => asyncprof_sampler::StackSampler::without_signal(),
            sig => match asyncprof_sampler::StackSampler::install(sig) {
                Ok(s) => s,
                Err(err) => {
                    eprintln!(
                        "asyncprof: {err}; stalls on CPU are recorded without stacks (threads \
                         blocked in a system call still get theirs)"
                    );
                    asyncprof_sampler::StackSampler::without_signal()
                }
            },
        };
        // The coarse clock runs once the watchdog does: until its first tick, a poll would be
        // timed by the clock as it stood (from an earlier recording, or from just now).
        let (running_tx, running_rx) = mpsc::sync_channel::<()>(1);
        let published = clock::publish();
        let watchdog = spawn_thread("asyncprof-watchdog", {
            let shared = shared.clone();
            move || crate::watchdog::run(recorder, sampler, &shared, tick, published, running_tx)
        })?;
        // Bounded: a machine that does not run the thread within a second gets a recording
        // whose first gap is counted (above), not a service held up at start.
        let _ = running_rx.recv_timeout(WATCHDOG_START_WAIT);
        let mut outputs = crate::aggregator::Outputs::default();
        let mut threads = Vec::new();
        if self.stall_events {
            let (events, rx) = crate::events::StallEvents::new();
            // Not `spawn_thread`: this thread emits to the service's global subscriber.
            let emitter = std::thread::Builder::new()
                .name("asyncprof-events".into())
                .spawn(move || crate::events::emit_loop(rx))
                .map_err(|source| Error::Thread {
                    name: "asyncprof-events",
                    source,
                })?;
            outputs.events = Some(events);
            threads.push(emitter);
        }
        #[cfg(feature = "metrics")]
        let metrics = self.metrics_addr.and_then(|addr| {
            let state = Arc::new(crate::metrics::State::default());
            match crate::metrics::Endpoint::start(addr, state.clone()) {
                Ok(endpoint) => {
                    outputs.metrics = Some(state);
                    Some(endpoint)
                }
                Err(err) => {
                    eprintln!(
                        "asyncprof: cannot serve metrics at {addr}: {err}; recording goes on \
                         without the metrics endpoint"
                    );
                    None
                }
            }
        });
        #[cfg(not(feature = "metrics"))]
        if let Some(addr) = self.metrics_addr {
            eprintln!(
                "asyncprof: ASYNCPROF_METRICS_ADDR={addr} is ignored: this build of asyncprof \
                 has no `metrics` feature"
            );
        }
        let aggregator = spawn_thread("asyncprof-aggregator", {
            let shared = shared.clone();
            let interval = Duration::from_millis(self.config.flush_interval_ms);
            move || {
                aggregator_loop(
                    recorder,
                    &shared,
                    tx,
                    interval,
                    crate::aggregator::Start {
                        started,
                        unix_ms: start_unix_ms,
                        facts,
                        file: file_limit,
                    },
                    outputs,
                )
            }
        })?;
        *lock(&shared.cpu) = match self.config.cpu_hz {
            0 => None,
            hz => crate::cpu::CpuProfiler::start(hz),
        };
        // Bounded, as for the watchdog: the header is written and flushed (in the kernel's
        // hands, so a process that dies next still leaves it) before `start` returns, unless
        // the disk takes longer than this; then it follows as soon as the disk allows.
        let _ = written_rx.recv_timeout(WRITER_START_WAIT);
        *active = Some(path.clone());
        *lock(&RUNNING) = Some(Running {
            pid: std::process::id(),
            shared: shared.clone(),
            watchdog,
            // The aggregator first: the events thread ends when it does, the writer after.
            threads: [aggregator]
                .into_iter()
                .chain(threads)
                .chain([writer])
                .collect(),
        });
        // A process that exits without dropping the guard (`std::process::exit`, a guard
        // leaked or held in a static) still ends its run: the last snapshot, the stalls going
        // on, the CPU profile and the end record.
        asyncprof_sampler::call_at_exit(stop_at_exit);
        Ok(Guard {
            recorder,
            shared,
            #[cfg(feature = "metrics")]
            metrics,
            path,
            pid: std::process::id(),
        })
    }
}

/// The run file of the recording in progress, if any.
static ACTIVE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// asyncprof's threads of the recording in progress: stopped by the guard's drop, or by the
/// exit handler when the process exits without dropping it.
static RUNNING: Mutex<Option<Running>> = Mutex::new(None);

/// The longest the exit handler waits for the run's last records to be written: a process
/// that calls `exit` is not held up longer by a slow disk.
const EXIT_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Running {
    /// The process that started them: a child forked from it has none of them.
    pid: u32,
    shared: Arc<Shared>,
    watchdog: JoinHandle<()>,
    threads: Vec<JoinHandle<()>>,
}

impl Running {
    /// End the recording: the watchdog first (it hands over the stalls still running, marked
    /// ongoing), then the CPU profile, then the aggregator's last records and the writer.
    /// With `by` (at exit), a thread not done by then is not waited for.
    fn stop(self, by: Option<Instant>) {
        let Running {
            pid,
            shared,
            watchdog,
            threads,
        } = self;
        if pid != std::process::id() {
            // A forked child: its parent's threads are not here to stop.
            std::mem::forget((shared, watchdog, threads));
            return;
        }
        shared.stop_watchdog.store(true, Relaxed);
        watchdog.thread().unpark();
        join(watchdog, by);
        let cpu = lock(&shared.cpu).take();
        if let Some(cpu) = cpu {
            let fold = move || {
                cpu.finish()
                    .and_then(|p| format::encode_frame(RecordKind::CpuProfile, &p).ok())
            };
            let frame = match by {
                None => fold(),
                // At exit, on a thread of its own and for half the time left at most:
                // folding symbolizes every stack, which can take seconds in a large binary,
                // and the other half is the last snapshot's and the end record's.
                Some(by) => std::thread::Builder::new()
                    .name("asyncprof-cpu-fold".into())
                    .spawn(fold)
                    .ok()
                    .and_then(|t| {
                        let now = Instant::now();
                        finished_by(&t, now + by.saturating_duration_since(now) / 2)
                            .then(|| t.join().ok().flatten())
                            .flatten()
                    }),
            };
            if let Some(f) = frame {
                *lock(&shared.cpu_frame) = Some(f);
            }
        }
        shared.stop.store(true, Relaxed);
        *lock(&shared.wake) = true;
        shared.cond.notify_all();
        for t in threads {
            join(t, by);
        }
    }
}

/// Whether `thread` has ended by `by`, waiting for it until then.
fn finished_by<T>(thread: &JoinHandle<T>, by: Instant) -> bool {
    while !thread.is_finished() && Instant::now() < by {
        std::thread::sleep(Duration::from_millis(1));
    }
    thread.is_finished()
}

/// Wait for `thread` to end, until `by` at most (past it, the process is exiting: the thread
/// ends with it).
fn join(thread: JoinHandle<()>, by: Option<Instant>) {
    if by.is_none_or(|by| finished_by(&thread, by)) {
        let _ = thread.join();
    }
}

/// The exit handler's part: end a recording whose guard was not dropped. Never waits for the
/// lock (a thread stopping the recording right now holds it); in a child forked after the
/// start, [`Running::stop`] does nothing.
fn stop_at_exit() {
    // `exit` called on one of asyncprof's own threads (a subscriber of the service's, fed by
    // the events thread, that exits): that thread cannot wait for itself, and may hold a lock
    // the stop needs. The run file then reads up to its last flush.
    if std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with("asyncprof-"))
    {
        return;
    }
    let running = match RUNNING.try_lock() {
        Ok(mut r) => r.take(),
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().take(),
        Err(std::sync::TryLockError::WouldBlock) => None,
    };
    if let Some(running) = running {
        running.stop(Some(Instant::now() + EXIT_WAIT));
    }
}

/// What the guard shares with asyncprof's threads.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The aggregator writes its last records and ends.
    pub(crate) stop: AtomicBool,
    /// The watchdog hands over the stalls still running and ends.
    pub(crate) stop_watchdog: AtomicBool,
    /// A snapshot was asked for ([`Guard::flush`]); `cond` wakes the aggregator.
    pub(crate) wake: Mutex<bool>,
    pub(crate) cond: Condvar,
    /// The CPU profile's frame, handed to the aggregator at stop (or made by it, when the
    /// profile stopped at its spill file's limit).
    pub(crate) cpu_frame: Mutex<Option<Vec<u8>>>,
    /// The CPU profile being recorded: finished by the guard at stop, or by the aggregator
    /// when its spill file reaches its limit.
    pub(crate) cpu: Mutex<Option<crate::cpu::CpuProfiler>>,
    /// Bytes handed to the writer and not written yet.
    pub(crate) writer_backlog: crate::writer::Backlog,
}

pub(crate) fn spawn_thread<T: Send + 'static>(
    name: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // asyncprof never profiles itself: its threads emit to no subscriber.
            let _quiet =
                tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
            f()
        })
        .map_err(|source| Error::Thread { name, source })
}

/// The longest `start` waits for the watchdog thread to run its first tick.
const WATCHDOG_START_WAIT: Duration = Duration::from_secs(1);
/// The longest `start` waits for the writer to put the run file's header on disk.
const WRITER_START_WAIT: Duration = Duration::from_secs(1);

/// A running recording. Dropping it writes the final snapshot and stops asyncprof's threads.
///
/// Keep it alive for as long as the service runs: bind it to a named variable
/// (`let _guard = ...`), never to `_`, which drops it at once.
#[must_use = "dropping the guard stops recording; bind it to a named variable"]
#[derive(Debug)]
pub struct Guard {
    pub(crate) recorder: &'static Recorder,
    shared: Arc<Shared>,
    path: PathBuf,
    /// The process that started the recording: a child forked from it has none of its threads.
    pid: u32,
    #[cfg(feature = "metrics")]
    metrics: Option<crate::metrics::Endpoint>,
}

/// How much memory asyncprof's task state holds, for checking that it stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Footprint {
    /// Slots of the live-task table (fixed at start).
    pub task_slots: usize,
    /// Slots in use now.
    pub tasks_tracked: usize,
    /// Spawn locations interned.
    pub locations: usize,
    /// Bytes of the task and location tables (fixed at start).
    pub table_bytes: usize,
}

impl Guard {
    /// The run file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The address the metrics endpoint listens on, when it runs
    /// ([`crate::Builder::metrics_addr`], `ASYNCPROF_METRICS_ADDR`).
    #[cfg(feature = "metrics")]
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().map(crate::metrics::Endpoint::addr)
    }

    /// Append a snapshot now instead of at the next interval. Returns at once.
    pub fn flush(&self) {
        *lock(&self.shared.wake) = true;
        self.shared.cond.notify_all();
    }

    /// The size of asyncprof's task state now.
    pub fn footprint(&self) -> Footprint {
        let r = self.recorder;
        Footprint {
            task_slots: r.tasks.capacity(),
            tasks_tracked: r.tasks.iter().count(),
            locations: r
                .locations
                .slots()
                .iter()
                .filter(|l| l.info.get().is_some())
                .count(),
            table_bytes: r.tasks.bytes() + r.locations.bytes(),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if std::process::id() != self.pid {
            // A child forked after the start (a pre-forking server, a daemon): asyncprof's
            // threads are the parent's only, so joining them would wait forever, and a lock
            // one of them held at the fork stays held here. The parent's recording is not
            // the child's to end: leave it all as it is.
            #[cfg(feature = "metrics")]
            std::mem::forget(self.metrics.take());
            return;
        }
        let running = lock(&RUNNING).take();
        if let Some(r) = running {
            r.stop(None);
        }
        self.recorder.release_runtime_handles();
        #[cfg(feature = "metrics")]
        drop(self.metrics.take());
        *lock(&ACTIVE) = None;
    }
}

/// This process's own run file beside `path`, which another process records to:
/// `svc.run` → `svc.<pid>.run`.
fn own_run_file(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or_else(|| "asyncprof".into(), |s| s.to_string_lossy().into_owned());
    path.with_file_name(format!("{stem}.{}.run", std::process::id()))
}

/// The stack sampler's task probe, run inside its signal handler on a worker thread: the
/// task that thread is polling (0: none, between polls). tokio keeps it in a thread-local
/// cell it sets around each poll (`tokio::task::try_id`), initialized on the worker's first
/// poll: reading it allocates nothing, takes no lock and cannot panic.
fn polled_task() -> u64 {
    tokio::task::try_id().map_or(0, crate::hooks::task_id)
}
