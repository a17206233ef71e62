//! Recording settings: the builder, its defaults and limits, and the `ASYNCPROF_*`
//! environment variables.

use std::path::PathBuf;
use std::time::Duration;

use asyncprof_format as format;

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
    pub(crate) out: Option<PathBuf>,
    pub(crate) config: format::Config,
    /// Emit each stall as a `tracing` event ([`Builder::stall_events`]).
    pub(crate) stall_events: bool,
    /// Serve metrics here ([`Builder::metrics_addr`]).
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
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
        Builder {
            out: None,
            config,
            stall_events: false,
            metrics_addr: None,
        }
    }
}

/// Reads one environment variable (or a test's stand-in for the environment).
type Lookup<'a> = &'a dyn Fn(&'static str) -> Option<std::ffi::OsString>;

/// The smallest run-file size limit: room for the header and a few snapshots.
const MIN_MAX_FILE_BYTES: u64 = 64 << 10;

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

/// `ASYNCPROF_METRICS_ADDR`: a port alone on loopback, or an address with a port.
fn env_metrics_addr(value: std::ffi::OsString) -> Result<std::net::SocketAddr> {
    let value = value.to_string_lossy().into_owned();
    let value = value.trim();
    let addr = match value.parse::<u16>() {
        Ok(port) => Some(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
        Err(_) => value.parse().ok(),
    };
    addr.ok_or_else(|| Error::Env {
        var: "ASYNCPROF_METRICS_ADDR",
        value: value.to_string(),
        reason: "a port (9464, on loopback) or an address with a port (0.0.0.0:9464, [::1]:9464)",
    })
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
    /// | `ASYNCPROF_MAX_FILE_MB` | disk the run's files take at most, MiB, 1 to 1048576; 0: no limit ([`Builder::max_file_size`]) | 1024 |
    /// | `ASYNCPROF_STALL_EVENTS` | `1`: each stall also as a `tracing` event ([`Builder::stall_events`]); `0`: not | 0 |
    /// | `ASYNCPROF_METRICS_ADDR` | serve Prometheus metrics at `http://ADDR/metrics` (the `metrics` feature): a port alone (`9464`) is on loopback, `HOST:PORT` as given | off |
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
        if let Some(mb) = env_u64(
            get,
            "ASYNCPROF_MAX_FILE_MB",
            "a whole number of MiB from 1 to 1048576, or 0 for no limit",
            0,
            1 << 20,
        )? {
            self.config.max_file_bytes = mb << 20;
        }
        if let Some(on) = env_u64(get, "ASYNCPROF_STALL_EVENTS", "0 (off) or 1 (on)", 0, 1)? {
            self.stall_events = on == 1;
        }
        if let Some(value) = get("ASYNCPROF_METRICS_ADDR").filter(|v| !v.is_empty()) {
            self.metrics_addr = Some(env_metrics_addr(value)?);
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

    /// The disk the run's files take at most (default 1 GiB; 0: no limit; otherwise at least
    /// 64 KiB), so that a service left recording cannot fill its disk. When the run file
    /// reaches half of it, it is renamed to `NAME.old.run` (replacing the part before, which
    /// is removed) and the run goes on in a new file at the same path: the latest stalls are
    /// always kept, and every part's snapshots have the whole run's totals. Each part says
    /// where the rest is (reports say it too). A part passes half the limit by at most the
    /// batch that starts it (one cycle's records). When the rename or the new file fails,
    /// stalls and snapshots are counted in the loss counter `unwritten_at_file_limit`, not
    /// written, until a later part can start.
    pub fn max_file_size(mut self, bytes: u64) -> Self {
        self.config.max_file_bytes = bytes;
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

    /// Also emit each stall as a `tracing` event (default off), so that it reaches the
    /// service's own logs and, through `tracing-opentelemetry`, its OpenTelemetry pipeline:
    /// target `asyncprof`, level WARN, fields `kind`, `file`, `line`, `function` (the user's
    /// line), `primitive`, `syscall`, `duration` and `duration_ms`, `ongoing`,
    /// `task_location`, `thread`. An event goes out when a stall ends, and once for a stall
    /// still running after a second. They are emitted from asyncprof's own thread to the
    /// global subscriber, at most 60 at once and 10 a second after that; the rest are
    /// counted in the loss counter `dropped_stall_events` (the run file has every stall).
    pub fn stall_events(mut self, on: bool) -> Self {
        self.stall_events = on;
        self
    }

    /// Serve Prometheus/OpenMetrics metrics at `http://ADDR/metrics` from asyncprof's own
    /// thread (default off; the `metrics` feature). Bind a loopback address unless the
    /// endpoint must be reached from another host; port 0 picks a free port
    /// ([`crate::Guard::metrics_addr`] says which). An address that cannot be bound is
    /// reported on standard error and the recording goes on without the endpoint.
    #[cfg(feature = "metrics")]
    pub fn metrics_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.metrics_addr = Some(addr);
        self
    }

    /// Check every setting against its limits.
    pub(crate) fn validate(&self) -> Result<()> {
        let c = &self.config;
        let checks: [(bool, &'static str, &'static str); 6] = [
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
            (
                c.max_file_bytes == 0 || c.max_file_bytes >= MIN_MAX_FILE_BYTES,
                "max_file_size",
                "must be 0 (no limit) or at least 64 KiB",
            ),
        ];
        for (ok, setting, reason) in checks {
            if !ok {
                return Err(Error::Setting { setting, reason });
            }
        }
        Ok(())
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

    #[test]
    fn stall_events_and_the_metrics_address_from_the_environment() {
        let b = from(&[
            ("ASYNCPROF_STALL_EVENTS", "1"),
            ("ASYNCPROF_METRICS_ADDR", "9464"),
        ])
        .unwrap();
        assert!(b.stall_events);
        // A port alone is on loopback.
        assert_eq!(b.metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
        let b = from(&[("ASYNCPROF_METRICS_ADDR", " 0.0.0.0:80 ")]).unwrap();
        assert_eq!(b.metrics_addr, Some("0.0.0.0:80".parse().unwrap()));
        let b = from(&[("ASYNCPROF_METRICS_ADDR", "[::1]:9")]).unwrap();
        assert_eq!(b.metrics_addr, Some("[::1]:9".parse().unwrap()));
        assert!(!from(&[]).unwrap().stall_events);
        for (var, bad) in [
            ("ASYNCPROF_METRICS_ADDR", "localhost"),
            ("ASYNCPROF_METRICS_ADDR", "99999"),
            ("ASYNCPROF_STALL_EVENTS", "yes"),
        ] {
            match from(&[(var, bad)]) {
                Err(Error::Env { var: v, value, .. }) => {
                    assert_eq!((v, value.as_str()), (var, bad))
                }
                other => panic!("{var}={bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn the_run_file_size_limit_from_the_environment_and_the_builder() {
        let default = from(&[]).unwrap();
        assert_eq!(default.config.max_file_bytes, 1 << 30);
        assert!(default.validate().is_ok());
        let b = from(&[("ASYNCPROF_MAX_FILE_MB", "3")]).unwrap();
        assert_eq!(b.config.max_file_bytes, 3 << 20);
        let b = from(&[("ASYNCPROF_MAX_FILE_MB", "0")]).unwrap();
        assert_eq!(b.config.max_file_bytes, 0, "0: no limit");
        assert!(b.validate().is_ok());
        for bad in ["-1", "1.5", "1048577", "1G"] {
            match from(&[("ASYNCPROF_MAX_FILE_MB", bad)]) {
                Err(Error::Env { var, value, .. }) => {
                    assert_eq!((var, value.as_str()), ("ASYNCPROF_MAX_FILE_MB", bad))
                }
                other => panic!("ASYNCPROF_MAX_FILE_MB={bad:?} gave {other:?}"),
            }
        }
        assert!(Builder::default()
            .max_file_size(64 << 10)
            .validate()
            .is_ok());
        match Builder::default().max_file_size(1000).validate() {
            Err(Error::Setting { setting, .. }) => assert_eq!(setting, "max_file_size"),
            other => panic!("a 1000-byte limit gave {other:?}"),
        }
    }
}
