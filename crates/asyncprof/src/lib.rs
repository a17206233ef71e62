//! asyncprof records how long every task's polls take and how long tasks wait to be polled,
//! cheaply enough to leave on, and writes it to a run file that `asyncprof report` reads.
//!
//! A service adds one line. With runtime hooks (the hooks tier, cheapest):
//!
//! ```
//! # fn main() -> Result<(), asyncprof::Error> {
//! # let path = std::env::temp_dir().join(format!("asyncprof-doc-lib-{}", std::process::id()));
//! # std::env::set_var("ASYNCPROF_OUT", &path);
//! let guard = asyncprof::init()?; // run file: $ASYNCPROF_OUT or asyncprof-<pid>.run
//! let mut builder = tokio::runtime::Builder::new_multi_thread();
//! let rt = guard.instrument(&mut builder).enable_all().build().unwrap();
//! rt.block_on(async {
//!     tokio::spawn(async { tokio::task::yield_now().await }).await.unwrap();
//! });
//! drop(rt);
//! drop(guard); // writes the final snapshot
//! # std::env::remove_var("ASYNCPROF_OUT");
//! # let run = asyncprof_format::read_path(&path).unwrap();
//! # assert!(run.ended);
//! # std::fs::remove_file(&path).ok();
//! # Ok(())
//! # }
//! ```
//!
//! A service that keeps `#[tokio::main]` uses the subscriber layer instead (the layer tier):
//! add [`Guard::layer`] to its own registry beside `fmt`, `EnvFilter` or console-subscriber.
//! asyncprof never installs a global subscriber itself, so the service's own setup works
//! whatever the order.
//!
//! What a report says, finding by finding, and what to change: the [`playbook`].
//!
//! # What is recorded
//!
//! Per task (tokio's id, its name in the layer tier, its spawn location): polls, busy time,
//! idle time, a histogram of poll durations and one of scheduling delays. Runtime-wide: the
//! same histograms, per-worker busy and parked time, tasks spawned, alive and completed.
//! Completed tasks fold into their spawn location, so memory stays bounded however many
//! tasks a service spawns. User spans (`#[instrument]`, `info_span!`) become per-stage
//! latency histograms. Named queues ([`sync::mpsc`] channels, [`sync::Semaphore`], any
//! other queue through a [`Gauge`]) record items in and out, sender and receiver waits, and
//! their depth over time.
//!
//! **Timing.** A background thread publishes a coarse clock every 250 µs (configurable);
//! each poll reads it twice, a relaxed load each. Polls of at least two ticks (500 µs) are
//! recorded one by one at that resolution (±1 tick). Shorter polls are timed exactly on a
//! sample, one poll in 64 per worker: the runtime histogram scales that sample to the count
//! of short polls, and per-task and per-location histograms place short polls at their
//! sampled mean. The run file's header states the tick and sampling rate used.
//!
//! **Scheduling delay** is the time from a task becoming ready to its poll starting. The
//! hooks tier sees when a task is spawned but not when it is woken, so there it covers the
//! delay from spawn to first poll. The layer tier with the `tokio-tracing` feature sees
//! every wake (tokio's waker events) and covers every wake-to-poll delay. The header says
//! which (`schedule_source`).
//!
//! # Feature flags
//!
//! - `tokio-tracing`: read tokio's task spans in the layer tier. Turns on tokio's `tracing`
//!   feature, which by itself costs tokio 13–41% on poll-heavy work, so the hooks tier never
//!   needs it.
//!
//! # Overhead
//!
//! Two benchmarks measure it; the README's Overhead section has their tables and what bounds
//! them. Per poll, in one process (`cargo bench -p asyncprof --bench poll_overhead`, 1,000
//! tasks × 2,000 `yield_now`, 2 workers): the hooks tier runs at 0.75–0.79× the throughput of
//! plain tokio, 21–29 ns of CPU per poll; the layer tier, which needs tokio's `tracing`
//! feature, at 0.38×, 193 ns per poll. Side by side with console-subscriber, tokio-metrics and
//! dial9 on five workloads, each run in a fresh process (`cargo run --release -p
//! asyncprof-overhead`): on w1-yield, the same per-poll workload, the hooks tier runs at 0.76×
//! and the layer tier at 0.24×, where `tracing-subscriber`'s registry with an empty layer is
//! already 0.33× (the layer tier's floor). The two benchmarks differ in how they count: the
//! first alternates configurations in one process, the second charges each process's start
//! and its whole CPU.
//!
//! # Limitations
//!
//! - Live tasks beyond the task capacity (16,384 by default) are counted in
//!   `untracked_tasks` and in their worker's numbers, not one by one.
//! - The coarse clock stands still while its thread is descheduled; on an overloaded machine
//!   long polls can read short by up to that delay.
//! - One recording per process at a time.
//! - A stall's stack is copied from outside while its thread sleeps in a system call, with no
//!   signal. A thread on CPU is signalled (once it stayed awake for 0.5 ms); if it enters a
//!   blocking system call in the microseconds before the signal arrives, a call that Linux
//!   does not restart (`poll`, a socket read with a timeout, `nanosleep`, …) returns `EINTR`.
//!   Measured with `cargo bench -p asyncprof-sampler --bench sample_cost`: a thread that
//!   alternates 20 µs of CPU with a 1 ms `poll` was signalled at most once in 3 s, with no
//!   `EINTR`; one that alternates 2 ms of CPU with a 1 ms `poll` saw `EINTR` for 0.5–2.3% of
//!   the signals (five runs), sampled
//!   without pause (the watchdog samples a stall 1, 2, 4, … ms apart). `ASYNCPROF_SIGNAL=0`
//!   sends no signal at all.
#![forbid(unsafe_code)]

mod aggregator;
mod clock;
mod config;
mod cpu;
mod error;
mod events;
mod gauge;
mod hist;
mod hooks;
mod latency;
mod layer;
mod load;
#[cfg(feature = "metrics")]
mod metrics;
mod poll;
mod profiler;
mod queues;
mod recorder;
mod resolve;
mod snapshot;
mod spares;
mod stages;
mod symbolize;
pub mod sync;
mod tables;

/// How to read a report: the diagnosis playbook.
///
#[doc = include_str!("playbook.md")]
pub mod playbook {}
mod watchdog;
mod workers;
mod writer;

pub use config::{
    Builder, DEFAULT_CLOCK_TICK, DEFAULT_FLUSH_INTERVAL, DEFAULT_SAMPLE_EVERY,
    DEFAULT_STALL_THRESHOLD, DEFAULT_TASK_CAPACITY, MIN_STALL_THRESHOLD,
};
pub use error::{Error, Result};
pub use gauge::Gauge;
pub use hooks::Hooks;
pub use latency::Latency;
pub use layer::TaskLayer;
pub use profiler::{Footprint, Guard, Profiler};

/// Use in place of `#[tokio::main]`: runs the `async fn` on a tokio runtime with
/// asyncprof's hooks installed, recording with the settings from the environment
/// (`ASYNCPROF_OUT` and friends), and writes the final snapshot when it returns.
///
/// Takes tokio's arguments `flavor = "current_thread"` (default `"multi_thread"`) and
/// `worker_threads = N`. If the environment holds a bad setting, the error is printed and the
/// program runs without profiling: asyncprof never stops a service from starting.
///
/// ```no_run
/// #[asyncprof::main(flavor = "current_thread")]
/// async fn main() {
///     tokio::spawn(async { /* the service */ }).await.unwrap();
/// }
/// ```
pub use asyncprof_macros::main;

#[doc(hidden)]
pub mod __private {
    /// What `#[asyncprof::main]` expands to.
    pub fn run_main<F: std::future::Future>(
        multi_thread: bool,
        workers: usize,
        fut: F,
    ) -> F::Output {
        let guard = match crate::Profiler::builder()
            .from_env()
            .and_then(|b| b.start())
        {
            Ok(g) => Some(g),
            Err(err) => {
                eprintln!("asyncprof: {err}; running without profiling");
                None
            }
        };
        let mut builder = if multi_thread {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if workers > 0 {
                b.worker_threads(workers);
            }
            b
        } else {
            tokio::runtime::Builder::new_current_thread()
        };
        builder.enable_all();
        if let Some(g) = &guard {
            g.instrument(&mut builder);
        }
        let rt = builder.build().expect("failed building the tokio runtime");
        let out = rt.block_on(fut);
        drop(rt);
        drop(guard);
        out
    }
}

/// Start recording with the settings from the environment (`ASYNCPROF_OUT` and friends).
///
/// It installs no global `tracing` subscriber: a service sets its own (`tracing_subscriber::
/// fmt().init()` and the like) before or after, as it did without asyncprof. Runtimes built
/// through [`Guard::instrument`] are recorded (the hooks tier); for user spans (per-stage
/// latency) and the layer tier, add [`Guard::layer`] to the service's subscriber.
///
/// Returns the guard: keep it alive for as long as the service runs (`let _guard = ...`;
/// binding it to `_` drops it at once). Dropping it writes the final snapshot.
///
/// # Errors
///
/// Every error of [`Builder::from_env`] and [`Builder::start`].
pub fn init() -> Result<Guard> {
    Profiler::builder().from_env()?.start()
}
