//! The side-by-side overhead benchmark of asyncprof: the same workloads on plain tokio, under
//! asyncprof's three tiers, and under console-subscriber, tokio-metrics and dial9, each run in
//! a fresh process.
//!
//! ```text
//! cargo run --release -p asyncprof-overhead                       # the full table
//! cargo run --release -p asyncprof-overhead -- --size tiny        # a smoke run (CI)
//! cargo run --release -p asyncprof-overhead -- soak --minutes 5   # RSS and run-file growth
//! cargo run --release -p asyncprof-overhead -- stall-memory       # RSS at the first stall
//! ```
//!
//! Configurations that need tokio's `tracing` feature (asyncprof's layer tier,
//! console-subscriber, and plain tokio with the feature compiled in) run in a second binary of
//! this package, `asyncprof-overhead-traced`, which requires the `traced` feature and which the
//! driver builds in a cargo invocation of its own: cargo unifies features across one build, so
//! a single binary would make every configuration pay for it.
//!
//! This library holds the worker side: [`Config`] sets a runtime up, [`Workload`] runs on it,
//! and [`worker_main`] measures one run and prints it as one JSON line.

#![forbid(unsafe_code)]

pub mod driver;
pub mod soak;
mod stall_lines;
pub mod stall_memory;
mod workloads;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use workloads::{Params, Workload};

/// Worker threads of every multi-thread runtime in the benchmark.
pub const WORKERS: usize = 2;

/// One way of running tokio: plain, or under one instrumentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Config {
    /// Plain tokio, no instrumentation.
    Plain,
    /// asyncprof's hooks tier (runtime hooks, `tokio_unstable`), watchdog on.
    Hooks,
    /// asyncprof's stable tier (park/unpark only), watchdog on.
    Stable,
    /// tokio-metrics: every task the workload spawns wrapped in one `TaskMonitor`.
    TokioMetrics,
    /// dial9-tokio-telemetry's `TracedRuntime`, writing its trace to a temporary file.
    Dial9,
    /// Plain tokio compiled with its `tracing` feature, no subscriber.
    PlainTracing,
    /// tokio's `tracing` feature with `tracing_subscriber`'s registry and an empty layer: what
    /// any layer on a registry (asyncprof's, console-subscriber's) pays before it does
    /// anything. (A registry with no layer at all never frees a closed span's data.)
    Registry,
    /// asyncprof's layer tier: the subscriber layer reading tokio's task spans.
    Layer,
    /// console-subscriber's layer with its gRPC server on loopback.
    Console,
    /// asyncprof's hooks tier with its metrics endpoint on, scraped every second by a thread
    /// of the benchmark (as Prometheus would): not in the default table, named with
    /// `--configs`.
    HooksMetrics,
    /// Not measured: plain tokio with a hook counting polls, run once per workload so the
    /// table can say how many nanoseconds each configuration adds per poll.
    CountPolls,
    /// Not in the default table, named with `--configs`: plain tokio with a before-poll and an
    /// after-poll hook that do nothing. What tokio's per-poll hooks cost by themselves, the
    /// floor under any tool built on them (asyncprof's hooks tier among them).
    EmptyHooks,
    /// Not in the default table, named with `--configs`: as [`Config::EmptyHooks`], with a
    /// task-spawn and a task-terminate hook that do nothing as well: the floor under a tool
    /// that also follows tasks (asyncprof's hooks tier does; dial9's default does not).
    EmptyTaskHooks,
}

impl Config {
    /// Every measured configuration, in table order.
    pub const MEASURED: [Config; 9] = [
        Config::Plain,
        Config::Hooks,
        Config::Stable,
        Config::Layer,
        Config::PlainTracing,
        Config::Registry,
        Config::Console,
        Config::TokioMetrics,
        Config::Dial9,
    ];

    /// Configurations run only when `--configs` names them.
    pub const EXTRA: [Config; 3] = [
        Config::HooksMetrics,
        Config::EmptyHooks,
        Config::EmptyTaskHooks,
    ];

    /// Its name on the command line and in the JSON.
    pub fn key(self) -> &'static str {
        match self {
            Config::Plain => "plain",
            Config::Hooks => "asyncprof-hooks",
            Config::HooksMetrics => "asyncprof-hooks-metrics",
            Config::Stable => "asyncprof-stable",
            Config::TokioMetrics => "tokio-metrics",
            Config::Dial9 => "dial9",
            Config::PlainTracing => "plain-tracing",
            Config::Registry => "tracing-registry",
            Config::Layer => "asyncprof-layer",
            Config::Console => "console-subscriber",
            Config::CountPolls => "count-polls",
            Config::EmptyHooks => "empty-hooks",
            Config::EmptyTaskHooks => "empty-task-hooks",
        }
    }

    /// Its name in the table.
    pub fn label(self) -> &'static str {
        match self {
            Config::Plain => "plain tokio",
            Config::Hooks => "asyncprof hooks tier",
            Config::HooksMetrics => "asyncprof hooks tier + metrics scraped every 1 s",
            Config::Stable => "asyncprof stable tier",
            Config::TokioMetrics => "tokio-metrics TaskMonitor",
            Config::Dial9 => "dial9-tokio-telemetry",
            Config::PlainTracing => "tokio + tracing feature",
            Config::Registry => "registry + an empty layer",
            Config::Layer => "asyncprof layer tier",
            Config::Console => "console-subscriber",
            Config::CountPolls => "poll counter",
            Config::EmptyHooks => "tokio's poll hooks, empty",
            Config::EmptyTaskHooks => "tokio's poll, spawn and terminate hooks, empty",
        }
    }

    /// The configuration named `key`.
    pub fn parse(key: &str) -> Option<Config> {
        Config::MEASURED
            .into_iter()
            .chain(Config::EXTRA)
            .chain([Config::CountPolls])
            .find(|c| c.key() == key)
    }

    /// Whether it runs in the binary built with tokio's `tracing` feature.
    pub fn traced(self) -> bool {
        matches!(
            self,
            Config::PlainTracing | Config::Registry | Config::Layer | Config::Console
        )
    }

    /// Whether the workloads use asyncprof's instrumented channels under it.
    pub fn asyncprof_channels(self) -> bool {
        matches!(
            self,
            Config::Hooks | Config::HooksMetrics | Config::Stable | Config::Layer
        )
    }
}

/// How big the workloads are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    /// A few milliseconds each: shows the benchmark works.
    Tiny,
    /// The sizes the published table is measured at.
    Full,
}

impl Size {
    /// Its name on the command line.
    pub fn key(self) -> &'static str {
        match self {
            Size::Tiny => "tiny",
            Size::Full => "full",
        }
    }

    /// The size named `key`.
    pub fn parse(key: &str) -> Option<Size> {
        match key {
            "tiny" => Some(Size::Tiny),
            "full" => Some(Size::Full),
            _ => None,
        }
    }
}

/// One measured run of one workload under one configuration, as the worker prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// Wall time of the workload, seconds.
    pub wall_s: f64,
    /// CPU time of the whole process (every thread, the instrumentation's own included)
    /// during the workload, seconds.
    pub cpu_s: f64,
    /// Units of work done (polls, tasks, items, sleeps, pipeline items).
    pub items: u64,
    /// Peak resident set of the process, KiB.
    pub peak_rss_kib: u64,
    /// Polls counted (only under [`Config::CountPolls`]).
    pub polls: Option<u64>,
    /// Bytes the instrumentation wrote (run file, trace files).
    pub output_bytes: Option<u64>,
    /// asyncprof's task and location tables, KiB: allocated once at start, whatever the
    /// number of tasks.
    #[serde(default)]
    pub asyncprof_tables_kib: Option<u64>,
    /// Tasks asyncprof still tracks once the workload is over (completed tasks keep nothing).
    #[serde(default)]
    pub asyncprof_tasks_tracked: Option<u64>,
    /// CPU time of asyncprof's own threads (watchdog, aggregator, writer, …) during the
    /// workload, seconds, each by its thread's CPU clock: the part of `cpu_s` the service's
    /// threads do not spend, measured apart from the machine's noise. `None` without them.
    #[serde(default)]
    pub own_threads_cpu_s: Option<f64>,
}

/// A temporary path for this process's output files.
pub(crate) fn temp_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("asyncprof-overhead-{}-{what}", std::process::id()))
}

/// CPU time of this process so far (user + system, every thread).
pub fn process_cpu() -> Duration {
    asyncprof_sampler::process_cpu_time().unwrap_or_default()
}

/// CPU nanoseconds so far of each of this process's threads named `asyncprof-…` (asyncprof's
/// own background threads), by thread id. Left out: the process's main thread, and any thread
/// named after this binary (`asyncprof-overhead…`, truncated to `asyncprof-overh` by Linux:
/// a thread spawned without a name takes its parent's).
pub(crate) fn own_threads_cpu_ns() -> Vec<(i32, u64)> {
    let main = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| e.file_name() != main.as_str())
        .filter_map(|e| {
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let tid: i32 = e.file_name().to_str()?.parse().ok()?;
            (comm.starts_with("asyncprof-") && !comm.starts_with("asyncprof-overh"))
                .then(|| Some((tid, asyncprof_sampler::thread_cpu_ns(tid)?)))
                .flatten()
        })
        .collect()
}

/// The CPU asyncprof's own threads used between `before` (from [`own_threads_cpu_ns`]) and now;
/// a thread started since counts from 0. `None` when there are none.
pub(crate) fn own_threads_cpu_since(before: &[(i32, u64)]) -> Option<Duration> {
    let now = own_threads_cpu_ns();
    if now.is_empty() {
        return None;
    }
    let ns = now
        .iter()
        .map(|(tid, ns)| {
            let then = before.iter().find(|(t, _)| t == tid).map_or(0, |(_, n)| *n);
            ns.saturating_sub(then)
        })
        .sum();
    Some(Duration::from_nanos(ns))
}

/// Peak resident set of this process, KiB.
pub fn peak_rss_kib() -> u64 {
    asyncprof_sampler::procfs::own_status_kib("VmHWM:").unwrap_or(0)
}

/// The worker's entry point: `--worker CONFIG WORKLOAD SIZE` runs one workload once and prints
/// its [`Sample`] as one JSON line on stdout. Any other arguments: an error.
///
/// # Errors
///
/// Bad arguments, a configuration this binary was not built for, or a failed workload.
pub fn worker_main(args: &[String]) -> anyhow::Result<()> {
    let [flag, config, workload, size] = args else {
        anyhow::bail!("usage: --worker CONFIG WORKLOAD SIZE");
    };
    anyhow::ensure!(flag == "--worker", "usage: --worker CONFIG WORKLOAD SIZE");
    let config =
        Config::parse(config).ok_or_else(|| anyhow::anyhow!("unknown configuration {config:?}"))?;
    let workload = Workload::parse(workload)
        .ok_or_else(|| anyhow::anyhow!("unknown workload {workload:?}"))?;
    let size = Size::parse(size).ok_or_else(|| anyhow::anyhow!("unknown size {size:?}"))?;
    anyhow::ensure!(
        config.traced() == cfg!(feature = "traced"),
        "{} runs in the {} binary",
        config.key(),
        if config.traced() {
            "asyncprof-overhead-traced"
        } else {
            "asyncprof-overhead"
        }
    );
    let sample = workloads::measure(config, workload, Params::of(size))?;
    println!("{}", serde_json::to_string(&sample)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// A thread named `asyncprof-…` is counted from the first read on, and only it: the
    /// calling thread's own spinning is not.
    #[test]
    fn own_threads_count_the_asyncprof_threads_only() {
        let before = super::own_threads_cpu_ns();
        // Spins until the calling thread has used `d` of CPU (a busy machine may take its
        // CPU meanwhile).
        let spin = |d: Duration| {
            let tid = asyncprof_sampler::current_tid();
            let cpu = || asyncprof_sampler::thread_cpu_ns(tid).unwrap();
            let start = cpu();
            while cpu() - start < d.as_nanos() as u64 {}
        };
        let (started, go) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let named = std::thread::Builder::new()
            .name("asyncprof-test".into())
            .spawn(move || {
                spin(Duration::from_millis(60));
                started.send(()).unwrap();
                // Alive (and idle) while it is read.
                let _ = stopped.recv();
            })
            .unwrap();
        go.recv().unwrap();
        spin(Duration::from_millis(100));
        let own = super::own_threads_cpu_since(&before).expect("the named thread");
        stop.send(()).unwrap();
        named.join().unwrap();
        assert!(
            (Duration::from_millis(60)..Duration::from_millis(95)).contains(&own),
            "{own:?}"
        );
    }
}
