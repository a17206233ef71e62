//! Starting and stopping a recording: configuration, the background threads, the guard.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{
    AtomicBool,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use asyncprof_format::{self as format, RecordKind};

use crate::clock;
use crate::hist::lock;
use crate::recorder::{source, Recorder, Settings};
use crate::{Error, Result};

/// The default stall threshold: a poll holding its worker longer than this is a stall.
pub const DEFAULT_STALL_THRESHOLD: Duration = Duration::from_millis(10);
/// The smallest stall threshold accepted.
pub const MIN_STALL_THRESHOLD: Duration = Duration::from_millis(1);
/// How often a snapshot is appended to the run file by default.
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// The default period of the coarse clock that times polls.
pub const DEFAULT_CLOCK_TICK: Duration = Duration::from_micros(250);
/// By default one poll in this many is timed exactly.
pub const DEFAULT_SAMPLE_EVERY: u32 = 64;
/// Live tasks tracked one by one by default.
pub const DEFAULT_TASK_CAPACITY: usize = 16_384;

/// Encoded frames waiting for the writer; more are dropped and counted.
const WRITER_QUEUE: usize = 64;

/// Configures and starts a recording.
///
/// ```no_run
/// use std::time::Duration;
///
/// # fn main() -> Result<(), asyncprof::Error> {
/// let guard = asyncprof::Profiler::builder()
///     .from_env()?                                  // ASYNCPROF_OUT and friends
///     .stall_threshold(Duration::from_millis(5))    // explicit settings win over the environment
///     .start()?;
/// let mut rt = tokio::runtime::Builder::new_multi_thread();
/// guard.instrument(&mut rt);
/// let rt = rt.enable_all().build().unwrap();
/// rt.block_on(async { /* the service */ });
/// drop(rt);
/// drop(guard); // writes the final snapshot
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    out: Option<PathBuf>,
    config: format::Config,
}

/// Entry point: `Profiler::builder()`.
#[derive(Debug)]
pub struct Profiler(());

impl Profiler {
    /// A builder with the default settings.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl Default for Builder {
    fn default() -> Self {
        let mut config = format::Config::default();
        config.flush_interval_ms = DEFAULT_FLUSH_INTERVAL.as_millis() as u64;
        config.stall_threshold_us = DEFAULT_STALL_THRESHOLD.as_micros() as u64;
        config.clock_tick_ns = DEFAULT_CLOCK_TICK.as_nanos() as u64;
        config.sample_every = DEFAULT_SAMPLE_EVERY;
        config.task_capacity = DEFAULT_TASK_CAPACITY as u32;
        config.stall_signal = asyncprof_sampler::default_signal();
        Builder { out: None, config }
    }
}

/// Reads one environment variable (or a test's stand-in for the environment).
type Lookup<'a> = &'a dyn Fn(&'static str) -> Option<std::ffi::OsString>;

fn env_u64(
    get: Lookup<'_>,
    var: &'static str,
    reason: &'static str,
    min: u64,
    max: u64,
) -> Result<Option<u64>> {
    let Some(value) = get(var) else {
        return Ok(None);
    };
    let value = value.to_string_lossy().into_owned();
    match value.trim().parse::<u64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(Some(v)),
        _ => Err(Error::Env { var, value, reason }),
    }
}

/// Whether `signal` can sample stalled stacks: the signals the sampler accepts.
fn usable_signal(signal: i32) -> bool {
    signal == libc::SIGPROF
        || signal == libc::SIGUSR1
        || signal == libc::SIGUSR2
        || (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&signal)
}

/// `ASYNCPROF_SIGNAL`: 0 (no signal) or a signal [`usable_signal`] accepts.
fn env_signal(get: Lookup<'_>) -> Result<Option<i32>> {
    let Some(value) = get("ASYNCPROF_SIGNAL") else {
        return Ok(None);
    };
    let value = value.to_string_lossy().into_owned();
    match value.trim().parse::<i32>() {
        Ok(sig) if sig == 0 || usable_signal(sig) => Ok(Some(sig)),
        _ => Err(Error::Env {
            var: "ASYNCPROF_SIGNAL",
            value,
            reason: "a signal number: 0 (no signal), SIGUSR1 (10), SIGUSR2 (12), SIGPROF (27) \
                     or a real-time signal from SIGRTMIN to SIGRTMAX (34 to 64 on Linux with \
                     glibc)",
        }),
    }
}

impl Builder {
    /// Apply the `ASYNCPROF_*` environment variables:
    ///
    /// | variable | meaning | default |
    /// | --- | --- | --- |
    /// | `ASYNCPROF_OUT` | run file path | `asyncprof-<pid>.run` |
    /// | `ASYNCPROF_STALL_THRESHOLD_MS` | stall threshold, 1 to 60000 | 10 |
    /// | `ASYNCPROF_FLUSH_INTERVAL_MS` | snapshot period, 50 to 60000 | 1000 |
    /// | `ASYNCPROF_CLOCK_TICK_US` | coarse clock period, 10 to 10000 | 250 |
    /// | `ASYNCPROF_SAMPLE_EVERY` | one poll in N timed exactly, 1 to 65536 | 64 |
    /// | `ASYNCPROF_TASK_CAPACITY` | live tasks tracked one by one, 16 to 16777216 | 16384 |
    /// | `ASYNCPROF_SIGNAL` | signal number that samples stalls on CPU: 10, 12, 27 (SIGUSR1, SIGUSR2, SIGPROF) or SIGRTMIN to SIGRTMAX; 0: no signal, only threads asleep in a system call get stacks | SIGRTMIN+5 |
    /// | `ASYNCPROF_CPU_HZ` | whole-run CPU profile, samples per second, 0 to 1000 | 0 (off) |
    ///
    /// # Errors
    ///
    /// [`Error::Env`] naming the variable whose value is out of range or not a number.
    pub fn from_env(self) -> Result<Self> {
        self.apply_env(&|var| std::env::var_os(var))
    }

    /// [`Builder::from_env`] with the variables read by `get`.
    fn apply_env(mut self, get: Lookup<'_>) -> Result<Self> {
        if let Some(out) = get("ASYNCPROF_OUT").filter(|v| !v.is_empty()) {
            self.out = Some(out.into());
        }
        if let Some(ms) = env_u64(
            get,
            "ASYNCPROF_STALL_THRESHOLD_MS",
            "a whole number of milliseconds from 1 to 60000",
            1,
            60_000,
        )? {
            self.config.stall_threshold_us = ms * 1000;
        }
        if let Some(ms) = env_u64(
            get,
            "ASYNCPROF_FLUSH_INTERVAL_MS",
            "a whole number of milliseconds from 50 to 60000",
            50,
            60_000,
        )? {
            self.config.flush_interval_ms = ms;
        }
        if let Some(us) = env_u64(
            get,
            "ASYNCPROF_CLOCK_TICK_US",
            "a whole number of microseconds from 10 to 10000",
            10,
            10_000,
        )? {
            self.config.clock_tick_ns = us * 1000;
        }
        if let Some(n) = env_u64(
            get,
            "ASYNCPROF_SAMPLE_EVERY",
            "a whole number from 1 to 65536",
            1,
            65_536,
        )? {
            self.config.sample_every = n as u32;
        }
        if let Some(n) = env_u64(
            get,
            "ASYNCPROF_TASK_CAPACITY",
            "a whole number from 16 to 16777216",
            16,
            1 << 24,
        )? {
            self.config.task_capacity = n as u32;
        }
        if let Some(hz) = env_u64(
            get,
            "ASYNCPROF_CPU_HZ",
            "a whole number of samples per second from 0 to 1000",
            0,
            1000,
        )? {
            self.config.cpu_hz = hz as u32;
        }
        if let Some(sig) = env_signal(get)? {
            self.config.stall_signal = sig;
        }
        Ok(self)
    }

    /// Where to write the run file (default `asyncprof-<pid>.run` in the working directory).
    pub fn out(mut self, path: impl Into<PathBuf>) -> Self {
        self.out = Some(path.into());
        self
    }

    /// A poll that holds its worker longer than this is a stall (default 10 ms, at least 1 ms).
    pub fn stall_threshold(mut self, threshold: Duration) -> Self {
        self.config.stall_threshold_us = threshold.as_micros().min(u64::MAX as u128) as u64;
        self
    }

    /// How often a snapshot is appended to the run file (default 1 s, at least 50 ms).
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.config.flush_interval_ms = interval.as_millis().min(u64::MAX as u128) as u64;
        self
    }

    /// Period of the coarse clock (default 250 µs, 10 µs to 10 ms). Shorter ticks resolve
    /// shorter long polls and cost the watchdog thread more wakeups.
    pub fn clock_tick(mut self, tick: Duration) -> Self {
        self.config.clock_tick_ns = tick.as_nanos().min(u64::MAX as u128) as u64;
        self
    }

    /// Time one poll in `n` exactly (default 64). 1 times every poll, at two clock reads each.
    pub fn sample_every(mut self, n: u32) -> Self {
        self.config.sample_every = n;
        self
    }

    /// How many live tasks are tracked one by one (default 16384, rounded up to a power of
    /// two). Each costs about 200 bytes, allocated at start.
    pub fn task_capacity(mut self, n: usize) -> Self {
        self.config.task_capacity = n.min(u32::MAX as usize) as u32;
        self
    }

    /// Record a CPU profile of the whole run at `hz` samples per second (0, the default: no
    /// CPU profile). It costs the profiled program a timer signal per sample; 99 Hz is about
    /// a percent. Written into the run file when recording stops.
    pub fn cpu_profile(mut self, hz: u32) -> Self {
        self.config.cpu_hz = hz.min(1000);
        self
    }

    /// The signal that samples the stack of a worker stalled on CPU (default SIGRTMIN+5, a
    /// real-time signal no common library uses); 0 sends no signal at all: threads asleep in
    /// a system call still get stacks, stalls on CPU get none. If your service uses
    /// that signal, pick another: asyncprof passes signals it did not send on to the handler
    /// that was installed before it.
    pub fn stall_signal(mut self, signal: i32) -> Self {
        self.config.stall_signal = signal;
        self
    }

    fn validate(&self) -> Result<()> {
        let c = &self.config;
        let checks: [(bool, &'static str, &'static str); 5] = [
            (
                c.stall_threshold_us >= 1000,
                "stall_threshold",
                "must be at least 1 ms",
            ),
            (
                c.flush_interval_ms >= 50,
                "flush_interval",
                "must be at least 50 ms",
            ),
            (
                (10_000..=10_000_000).contains(&c.clock_tick_ns),
                "clock_tick",
                "must be from 10 µs to 10 ms",
            ),
            (
                (1..=65_536).contains(&c.sample_every),
                "sample_every",
                "must be from 1 to 65536",
            ),
            (
                (16..=1 << 24).contains(&c.task_capacity),
                "task_capacity",
                "must be from 16 to 16777216",
            ),
        ];
        for (ok, setting, reason) in checks {
            if !ok {
                return Err(Error::Setting { setting, reason });
            }
        }
        Ok(())
    }

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
        let file = create_run_file(&path).map_err(|source| Error::Output {
            path: path.clone(),
            source,
        })?;
        let mut args = std::env::args();
        let program = args
            .next()
            .map(|a| {
                Path::new(&a)
                    .file_name()
                    .map_or(a.clone(), |f| f.to_string_lossy().into_owned())
            })
            .unwrap_or_default();
        let settings = Settings {
            config: self.config.clone(),
            program,
            args: args.collect(),
        };
        clock::publish();
        crate::queues::start_recording();
        let recorder: &'static Recorder = Box::leak(Box::new(Recorder::new(settings)));
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            stop_watchdog: AtomicBool::new(false),
            wake: Mutex::new(false),
            cond: Condvar::new(),
            cpu_frame: Mutex::new(None),
        });
        let start_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let started = Instant::now();

        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(WRITER_QUEUE);
        // The file gets its header now, before any task runs: a process that dies right after
        // `start` still leaves a readable file (program, pid, settings). The tier and the
        // runtime are not known yet; the aggregator writes the header again once they are.
        let facts = Facts::of(recorder);
        let mut first = format::preamble().to_vec();
        match format::encode_frame(RecordKind::Header, &header(recorder, facts, start_unix_ms)) {
            Ok(f) => first.extend_from_slice(&f),
            Err(_) => {
                recorder.loss.dropped_records.fetch_add(1, Relaxed);
            }
        }
        // The channel is empty: this send does not wait.
        let _ = tx.send(first);
        let (written_tx, written_rx) = mpsc::sync_channel::<()>(1);
        let writer = spawn_thread("asyncprof-writer", {
            let path = path.clone();
            move || writer_loop(file, rx, recorder, &path, written_tx)
        })?;
        let tick = Duration::from_nanos(self.config.clock_tick_ns);
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
            move || {
                let mut dog = crate::watchdog::Watchdog::new(recorder, sampler);
                let _ = recorder.watchdog_thread.set(std::thread::current());
                let gap = tick.as_nanos() as u64 * clock::GAP_TICKS;
                let mut last = clock::publish();
                // A thread that first ran long after it was started (a busy machine) left the
                // clock standing still meanwhile: a gap like any other.
                if last.saturating_sub(published) > gap {
                    recorder.loss.clock_gaps.fetch_add(1, Relaxed);
                }
                let _ = running_tx.send(());
                while !shared.stop_watchdog.load(Relaxed) {
                    std::thread::sleep(tick);
                    let now = clock::publish();
                    if now.saturating_sub(last) > gap {
                        recorder.loss.clock_gaps.fetch_add(1, Relaxed);
                    }
                    last = now;
                    dog.look(now);
                    // Every worker parked for a while: nothing to time or watch until one
                    // unparks, and that worker wakes this thread (an idle service costs no
                    // wake-ups 4,000 times a second).
                    let idle_since = now.saturating_sub(IDLE_AFTER_NS);
                    if recorder.all_parked_since(idle_since) {
                        recorder.watchdog_idle.store(true, SeqCst);
                        if recorder.all_parked_since(idle_since)
                            && !shared.stop_watchdog.load(Relaxed)
                        {
                            std::thread::park_timeout(IDLE_WAKE);
                        }
                        recorder.watchdog_idle.store(false, Relaxed);
                        last = clock::publish();
                    }
                }
                dog.shutdown();
            }
        })?;
        // Bounded: a machine that does not run the thread within a second gets a recording
        // whose first gap is counted (above), not a service held up at start.
        let _ = running_rx.recv_timeout(WATCHDOG_START_WAIT);
        let aggregator = spawn_thread("asyncprof-aggregator", {
            let shared = shared.clone();
            let interval = Duration::from_millis(self.config.flush_interval_ms);
            move || {
                aggregator_loop(
                    recorder,
                    &shared,
                    tx,
                    interval,
                    started,
                    start_unix_ms,
                    facts,
                )
            }
        })?;
        let cpu = match self.config.cpu_hz {
            0 => None,
            hz => crate::cpu::CpuProfiler::start(hz),
        };
        // Bounded, as for the watchdog: the header is written and flushed (in the kernel's
        // hands, so a process that dies next still leaves it) before `start` returns, unless
        // the disk takes longer than this; then it follows as soon as the disk allows.
        let _ = written_rx.recv_timeout(WRITER_START_WAIT);
        *active = Some(path.clone());
        Ok(Guard {
            recorder,
            shared,
            watchdog: Some(watchdog),
            threads: vec![aggregator, writer],
            path,
            cpu,
        })
    }
}

/// Create (or truncate) the run file with the user's umask, never through a symbolic link: a
/// link planted at the path cannot make asyncprof overwrite the file it points to.
fn create_run_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o666)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// The run file of the recording in progress, if any.
static ACTIVE: Mutex<Option<PathBuf>> = Mutex::new(None);

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    stop_watchdog: AtomicBool,
    wake: Mutex<bool>,
    cond: Condvar,
    /// The CPU profile's frame, handed to the aggregator at stop.
    cpu_frame: Mutex<Option<Vec<u8>>>,
}

fn spawn_thread(name: &'static str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
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

/// What the header says that is learnt only once tasks run: the tier (from the first task
/// event), the runtime's flavor and workers (from its first worker), what the scheduling
/// delays cover. A change is written as a new header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Facts {
    source: u8,
    flavor: u8,
    workers: u32,
    schedule_source: u8,
}

impl Facts {
    fn of(recorder: &Recorder) -> Self {
        Facts {
            source: recorder.source.load(Relaxed),
            flavor: recorder.flavor.load(Relaxed),
            workers: recorder.worker_count.load(Relaxed),
            schedule_source: recorder.schedule_source.load(Relaxed),
        }
    }
}

fn header(recorder: &Recorder, facts: Facts, start_unix_ms: u64) -> format::Header {
    let mut h = format::Header::new(recorder.settings.program.clone());
    h.args = recorder.settings.args.clone();
    h.pid = std::process::id();
    h.start_unix_ms = start_unix_ms;
    h.tier = match facts.source {
        source::HOOKS => format::Tier::Hooks,
        source::LAYER => format::Tier::Layer,
        source::STABLE => format::Tier::Stable,
        _ => format::Tier::Unknown,
    };
    h.flavor = match facts.flavor {
        1 => format::Flavor::CurrentThread,
        2 => format::Flavor::MultiThread,
        _ => format::Flavor::Unknown,
    };
    h.workers = facts.workers;
    h.config = recorder.settings.config.clone();
    if facts.schedule_source == 1 {
        h.config.schedule_source = format::ScheduleSource::EveryWake;
    }
    h
}

/// Every worker parked at least this long (one default tick) lets the watchdog sleep until one
/// unparks. Measured on w4-sleep (workers park between 1 ms timers): 0 made the waking
/// workers pay 0.81-0.97x; 250 µs gives 0.99x, and w5 the same saving.
const IDLE_AFTER_NS: u64 = 250_000;
/// The longest `start` waits for the watchdog thread to run its first tick.
const WATCHDOG_START_WAIT: Duration = Duration::from_secs(1);
/// The longest `start` waits for the writer to put the run file's header on disk.
const WRITER_START_WAIT: Duration = Duration::from_secs(1);
/// The longest the idle watchdog sleeps without being woken.
const IDLE_WAKE: Duration = Duration::from_millis(100);

/// How often the aggregator hands new stall records to the writer.
const STALL_PERIOD: Duration = Duration::from_millis(100);

fn aggregator_loop(
    recorder: &'static Recorder,
    shared: &Shared,
    tx: SyncSender<Vec<u8>>,
    interval: Duration,
    started: Instant,
    start_unix_ms: u64,
    mut written: Facts,
) {
    let mut symbolizer = crate::symbolize::Symbolizer::default();
    let mut next_snapshot = Instant::now() + interval;
    loop {
        let (stopping, asked) = {
            let woken = lock(&shared.wake);
            let (mut woken, _) = shared
                .cond
                .wait_timeout_while(woken, STALL_PERIOD.min(interval), |w| !*w)
                .unwrap_or_else(|p| p.into_inner());
            let asked = std::mem::replace(&mut *woken, false);
            (shared.stop.load(Relaxed), asked)
        };
        let now = Instant::now();
        symbolizer.release_if_idle(now);
        crate::queues::sample(started.elapsed().as_nanos() as u64);
        // The start's header said the tier and the runtime were not known. Once tasks run
        // (the first poll), the header goes out again with them, and with it a first
        // snapshot, so that a process killed early still leaves them in its file.
        let facts = Facts::of(recorder);
        let learnt = facts != written;
        let snapshot_due = stopping || asked || learnt || now >= next_snapshot;
        let pending = std::mem::take(&mut lock(&recorder.stalls).pending);
        if pending.is_empty() && !snapshot_due {
            continue;
        }
        let mut frames = Vec::new();
        let header_frame = learnt
            .then(|| {
                format::encode_frame(RecordKind::Header, &header(recorder, facts, start_unix_ms))
                    .ok()
            })
            .flatten();
        if learnt && header_frame.is_none() {
            // It cannot be encoded (it never grows): not tried again.
            written = facts;
        }
        let header_first = header_frame.is_some();
        frames.extend(header_frame);
        for raw in pending.values() {
            let record = symbolizer.record(raw, recorder.run_start_ns);
            if let Ok(f) = format::encode_frame(RecordKind::Stall, &record) {
                frames.push(f);
            }
        }
        if snapshot_due {
            next_snapshot = now + interval;
            let elapsed = started.elapsed().as_nanos() as u64;
            let snapshot = recorder.snapshot(elapsed, stopping);
            if let Ok(f) = format::encode_frame(RecordKind::Snapshot, &snapshot) {
                frames.push(f);
            }
        }
        if stopping {
            if let Some(f) = lock(&shared.cpu_frame).take() {
                frames.push(f);
            }
            frames.push(format::end_frame());
            // The last records wait for the writer: losing them would lose the run's end.
            for f in frames {
                let _ = tx.send(f);
            }
            return;
        }
        for (i, f) in frames.into_iter().enumerate() {
            match tx.try_send(f) {
                // A header dropped (the writer fell behind) is sent again next time.
                Ok(()) if i == 0 && header_first => written = facts,
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    recorder.loss.dropped_records.fetch_add(1, Relaxed);
                }
            }
        }
    }
}

/// Writes frames as they come, flushing each. `written` hears when the first (the preamble
/// and the header) has been tried, for `start` to return.
fn writer_loop(
    file: File,
    rx: mpsc::Receiver<Vec<u8>>,
    recorder: &Recorder,
    path: &Path,
    written: SyncSender<()>,
) {
    let mut out = std::io::BufWriter::new(file);
    let mut warned = false;
    let mut written = Some(written);
    for frame in rx {
        let res = std::io::Write::write_all(&mut out, &frame)
            .and_then(|()| std::io::Write::flush(&mut out));
        if let Some(w) = written.take() {
            let _ = w.send(());
        }
        if let Err(err) = res {
            recorder.loss.dropped_records.fetch_add(1, Relaxed);
            if !warned {
                warned = true;
                eprintln!(
                    "asyncprof: cannot write run file {}: {err}; the service keeps running and \
                     further records are dropped and counted",
                    path.display()
                );
            }
        }
    }
}

/// A running recording. Dropping it writes the final snapshot and stops asyncprof's threads.
///
/// Keep it alive for as long as the service runs: bind it to a named variable
/// (`let _guard = ...`), never to `_`, which drops it at once.
#[must_use = "dropping the guard stops recording; bind it to a named variable"]
#[derive(Debug)]
pub struct Guard {
    pub(crate) recorder: &'static Recorder,
    shared: Arc<Shared>,
    watchdog: Option<JoinHandle<()>>,
    threads: Vec<JoinHandle<()>>,
    path: PathBuf,
    cpu: Option<crate::cpu::CpuProfiler>,
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
        // The watchdog first: it hands over the stalls still running, marked ongoing.
        self.shared.stop_watchdog.store(true, Relaxed);
        if let Some(w) = self.watchdog.take() {
            w.thread().unpark();
            let _ = w.join();
        }
        if let Some(profile) = self.cpu.take().and_then(|c| c.finish()) {
            if let Ok(f) = format::encode_frame(RecordKind::CpuProfile, &profile) {
                *lock(&self.shared.cpu_frame) = Some(f);
            }
        }
        self.shared.stop.store(true, Relaxed);
        self.flush();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        *lock(&ACTIVE) = None;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::ffi::OsString;

    use super::Builder;
    use crate::Error;

    /// The builder after reading `vars` as the environment.
    fn from(vars: &[(&'static str, &str)]) -> crate::Result<Builder> {
        let env: HashMap<&str, OsString> = vars.iter().map(|(k, v)| (*k, v.into())).collect();
        Builder::default().apply_env(&|var| env.get(var).cloned())
    }

    #[test]
    fn asyncprof_signal_is_read_and_checked() {
        let default = Builder::default().config.stall_signal;
        assert_eq!(from(&[]).unwrap().config.stall_signal, default);
        assert_eq!(
            from(&[("ASYNCPROF_SIGNAL", "0")])
                .unwrap()
                .config
                .stall_signal,
            0
        );
        for sig in [
            libc::SIGPROF,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGRTMIN(),
            libc::SIGRTMAX(),
        ] {
            let b = from(&[("ASYNCPROF_SIGNAL", &format!(" {sig} "))]).unwrap();
            assert_eq!(b.config.stall_signal, sig);
        }
        // Negative, SIGKILL, SIGSEGV, past SIGRTMAX, a name, nothing.
        for bad in ["-1", "9", "11", "65", "SIGPROF", ""] {
            match from(&[("ASYNCPROF_SIGNAL", bad)]) {
                Err(Error::Env { var, value, reason }) => {
                    assert_eq!((var, value.as_str()), ("ASYNCPROF_SIGNAL", bad));
                    assert!(reason.contains("0 (no signal)"), "{reason}");
                }
                other => panic!("ASYNCPROF_SIGNAL={bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn the_other_variables_still_apply() {
        let b = from(&[
            ("ASYNCPROF_OUT", "/tmp/x.run"),
            ("ASYNCPROF_STALL_THRESHOLD_MS", "5"),
            ("ASYNCPROF_CPU_HZ", "99"),
        ])
        .unwrap();
        assert_eq!(b.out.as_deref(), Some(std::path::Path::new("/tmp/x.run")));
        assert_eq!(b.config.stall_threshold_us, 5000);
        assert_eq!(b.config.cpu_hz, 99);
        assert!(matches!(
            from(&[("ASYNCPROF_FLUSH_INTERVAL_MS", "10")]),
            Err(Error::Env {
                var: "ASYNCPROF_FLUSH_INTERVAL_MS",
                ..
            })
        ));
    }
}
