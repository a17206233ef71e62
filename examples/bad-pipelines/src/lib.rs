//! Async pipelines with one real, common defect each and a fixed twin, run by
//! `asyncprof bench`. They are its demo, its regression suite and its ground truth.
//!
//! Each pipeline is a module with a `bad` and a `fixed` variant sharing everything but the
//! defect. The defect's line carries a marker comment, `// asyncprof-expect: KIND` (for
//! example `blocking-call`), which scoring reads; fixed twins must produce no finding of the
//! stall and queue kinds under the same load.
//!
//! Everything is real and local: HTTP servers (axum) and clients (reqwest, ureq), UDP
//! sockets, WebSockets (tokio-tungstenite) and SQLite (rusqlite). The fake upstream services
//! and load generators run on their own runtime and threads, outside the profiled runtime,
//! so they do not distort what is measured. Every pipeline is seeded, bounded in items and
//! time, and stops by itself.
//!
//! ```no_run
//! use asyncprof_pipelines::{Load, Tier, Variant};
//!
//! // In a process of its own: records to $ASYNCPROF_OUT, prints the outcome.
//! let outcome =
//!     asyncprof_pipelines::run_profiled("scraper", Variant::Bad, Load::Quick, None, Tier::Hooks)
//!         .unwrap();
//! println!("{} items, p99 {:.1} ms", outcome.items, outcome.p99_ms);
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

mod pipelines;
pub mod upstream;

pub use upstream::Upstream;

/// A pipeline variant: the defect, or its fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// The pipeline with its defect.
    Bad,
    /// The fixed twin.
    Fixed,
}

impl Variant {
    /// `bad` or `fixed`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Bad => "bad",
            Variant::Fixed => "fixed",
        }
    }

    /// Parse `bad` or `fixed`.
    pub fn parse(s: &str) -> Option<Variant> {
        match s {
            "bad" => Some(Variant::Bad),
            "fixed" => Some(Variant::Fixed),
            _ => None,
        }
    }
}

/// How much work a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Load {
    /// A smoke run: every variant in under 3 s.
    Quick,
    /// The bench's load: every variant in under 10 s.
    Default,
    /// Twice the default.
    Heavy,
}

impl Load {
    /// `quick`, `default` or `heavy`.
    pub fn name(self) -> &'static str {
        match self {
            Load::Quick => "quick",
            Load::Default => "default",
            Load::Heavy => "heavy",
        }
    }

    /// Parse `quick`, `default` or `heavy`.
    pub fn parse(s: &str) -> Option<Load> {
        match s {
            "quick" => Some(Load::Quick),
            "default" => Some(Load::Default),
            "heavy" => Some(Load::Heavy),
            _ => None,
        }
    }

    /// Pick the value for this load.
    pub fn pick<T>(self, quick: T, default: T, heavy: T) -> T {
        match self {
            Load::Quick => quick,
            Load::Default => default,
            Load::Heavy => heavy,
        }
    }
}

/// The runtime a pipeline runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Two worker threads.
    MultiThread,
    /// One thread.
    CurrentThread,
}

/// What a run did, measured by the pipeline itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Outcome {
    /// Pipeline name.
    pub pipeline: String,
    /// `bad` or `fixed`.
    pub variant: String,
    /// Items that made it through the whole pipeline.
    pub items: u64,
    /// Items that failed for good.
    pub errors: u64,
    /// Items sent to a dead-letter queue.
    pub dead_letters: u64,
    /// Wall time of the run, seconds.
    pub elapsed_s: f64,
    /// Items per second.
    pub throughput: f64,
    /// End-to-end latency of one item, ms.
    pub p50_ms: f64,
    /// 99th percentile item latency, ms.
    pub p99_ms: f64,
    /// Slowest item, ms.
    pub max_ms: f64,
    /// What the pipeline checked about its own result (rows stored, pages parsed, …).
    pub checks: BTreeMap<String, u64>,
}

/// What a pipeline gets to run with.
#[derive(Debug)]
pub struct Ctx {
    /// The load to run at.
    pub load: Load,
    /// Fake upstream services, on their own runtime.
    pub upstream: Upstream,
    /// A directory for the run's files (SQLite databases), removed afterwards.
    pub dir: std::path::PathBuf,
    /// End-to-end latency per item.
    pub latency: asyncprof::Latency,
}

/// A pipeline's future.
pub type RunFuture = Pin<Box<dyn Future<Output = anyhow::Result<Outcome>> + Send + 'static>>;

/// One bundled pipeline.
#[derive(Debug, Clone, Copy)]
pub struct Pipeline {
    /// Its name, as `bench` takes it.
    pub name: &'static str,
    /// What it does, in one line.
    pub about: &'static str,
    /// The defect of the bad variant, in one line.
    pub defect: &'static str,
    /// The source file holding its `asyncprof-expect` markers, relative to the workspace.
    pub source: &'static str,
    /// The runtime it runs on.
    pub flavor: Flavor,
    /// The runtime's `max_blocking_threads` (0: tokio's default, 512).
    pub blocking_threads: usize,
    /// The longest a variant may run at the default load before it is stopped.
    pub budget: Duration,
    /// Run one variant.
    pub run: fn(Variant, Arc<Ctx>) -> RunFuture,
}

/// Every bundled pipeline.
pub fn pipelines() -> &'static [Pipeline] {
    pipelines::ALL
}

/// The pipeline named `name`.
pub fn find(name: &str) -> Option<&'static Pipeline> {
    pipelines().iter().find(|p| p.name == name)
}

/// A marker `// asyncprof-expect: KIND` in a pipeline's source: a defect the bad variant must
/// be diagnosed with, at that line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Expected {
    /// Finding kind.
    pub kind: String,
    /// Source file, relative to the workspace.
    pub file: String,
    /// 1-based line.
    pub line: u32,
}

/// The markers in `source` (a pipeline's file, as text).
pub fn markers(file: &str, source: &str) -> Vec<Expected> {
    asyncprof_report::markers_in(file, source)
        .into_iter()
        .map(|m| Expected {
            kind: m.kind,
            file: m.file,
            line: m.line,
        })
        .collect()
}

/// The markers of a bundled pipeline, read from its source compiled into this crate.
pub fn expected(p: &Pipeline) -> Vec<Expected> {
    markers(p.source, pipelines::source_of(p.name))
}

/// Time one run of `p`: build its runtime (instrumented by `guard` when given), start the
/// upstream services, run the variant, and measure its outcome. The run is stopped at the
/// pipeline's budget (scaled by load) when it has not finished.
///
/// # Errors
///
/// When the upstream services cannot start, the pipeline fails, or it outlives its budget.
pub fn run_with(
    p: &Pipeline,
    variant: Variant,
    load: Load,
    guard: Option<&asyncprof::Guard>,
) -> anyhow::Result<Outcome> {
    run_in_tier(p, variant, load, guard, Tier::Hooks)
}

/// Which of asyncprof's capture tiers a profiled run records in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Every poll, through tokio's task hooks (a build with `--cfg tokio_unstable`).
    Hooks,
    /// Workers' busy and parked periods only, as a service built without `tokio_unstable`
    /// records.
    Stable,
}

impl Tier {
    /// `hooks` or `stable`.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Hooks => "hooks",
            Tier::Stable => "stable",
        }
    }

    /// The tier named `s`, if any.
    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "hooks" => Some(Tier::Hooks),
            "stable" => Some(Tier::Stable),
            _ => None,
        }
    }
}

/// [`run_with`], recording in `tier`.
///
/// # Errors
///
/// As [`run_with`].
pub fn run_in_tier(
    p: &Pipeline,
    variant: Variant,
    load: Load,
    guard: Option<&asyncprof::Guard>,
    tier: Tier,
) -> anyhow::Result<Outcome> {
    run_on(
        p,
        variant,
        load,
        |mut builder| {
            match (guard, tier) {
                (Some(g), Tier::Hooks) => {
                    g.instrument(&mut builder);
                }
                (Some(g), Tier::Stable) => {
                    g.instrument_stable(&mut builder, asyncprof::Hooks::new());
                }
                (None, _) => {}
            }
            builder.build()
        },
        |run| run,
    )
}

/// [`run_with`] on a runtime built by `build` from the pipeline's builder (its flavor, two
/// workers, every driver enabled), with the pipeline's root future passed through `wrap`:
/// how a benchmark runs a pipeline under another instrumentation.
///
/// # Errors
///
/// When the runtime or the upstream services cannot start, or the pipeline fails.
pub fn run_on(
    p: &Pipeline,
    variant: Variant,
    load: Load,
    build: impl FnOnce(tokio::runtime::Builder) -> std::io::Result<tokio::runtime::Runtime>,
    wrap: impl FnOnce(RunFuture) -> RunFuture,
) -> anyhow::Result<Outcome> {
    let dir = scratch_dir(p, variant);
    std::fs::create_dir_all(&dir)?;
    // Removed however the run ends here (an error included).
    let _scratch = RemoveOnDrop(dir.clone());
    let ctx = Arc::new(Ctx {
        load,
        upstream: Upstream::start()?,
        dir: dir.clone(),
        latency: asyncprof::Latency::register(&format!("{} item latency", p.name)),
    });
    let mut builder = match p.flavor {
        Flavor::MultiThread => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(2);
            b
        }
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
    };
    builder.enable_all().thread_name("pipeline-worker");
    if p.blocking_threads > 0 {
        builder.max_blocking_threads(p.blocking_threads);
    }
    let rt = build(builder)?;
    let before = ctx.latency.count();
    let start = Instant::now();
    // A task, like the stages of a real service: `block_on`'s own future does not run on a
    // worker thread.
    let task = rt.spawn(wrap((p.run)(variant, ctx.clone())));
    let mut outcome = rt.block_on(task)??;
    let elapsed = start.elapsed();
    // Tasks the pipeline left behind must not keep the process alive.
    rt.shutdown_timeout(Duration::from_millis(200));
    outcome.pipeline = p.name.to_string();
    outcome.variant = variant.name().to_string();
    outcome.elapsed_s = elapsed.as_secs_f64();
    outcome.throughput = outcome.items as f64 / elapsed.as_secs_f64().max(1e-9);
    if ctx.latency.count() > before {
        let ms = |q: f64| ctx.latency.quantile(q).as_secs_f64() * 1e3;
        outcome.p50_ms = ms(0.5);
        outcome.p99_ms = ms(0.99);
        outcome.max_ms = ms(1.0);
    }
    drop(ctx);
    Ok(outcome)
}

/// A folder removed with everything in it when this is dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// The folder a run of `p` keeps its files in (its SQLite store, its downloads), removed when
/// the run ends, and by [`run_profiled`] when the run outlives its budget.
fn scratch_dir(p: &Pipeline, variant: Variant) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "bad-pipelines-{}-{}-{}",
        p.name,
        variant.name(),
        std::process::id()
    ))
}

/// Run one variant in this process with asyncprof recording (settings from the
/// environment: `ASYNCPROF_OUT` and friends). When it outlives its budget (the pipeline's
/// own for `load` unless given), the run file is flushed and the process exits with status
/// 124, leaving the stall that held it in the file. `tier` says how the runtime is
/// instrumented.
///
/// # Errors
///
/// An unknown pipeline, a profiler that cannot start, or any error of [`run_with`].
pub fn run_profiled(
    name: &str,
    variant: Variant,
    load: Load,
    budget: Option<Duration>,
    tier: Tier,
) -> anyhow::Result<Outcome> {
    let p = find(name).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown pipeline {name:?}; known: {}",
            pipelines()
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let guard = std::sync::Arc::new(asyncprof::Profiler::builder().from_env()?.start()?);
    // The pipelines' spans become stages through asyncprof's layer (the process's subscriber:
    // one pipeline runs per process). Where one is set already, it stays.
    {
        use tracing_subscriber::layer::SubscriberExt;
        let _ = tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(guard.layer()),
        );
    }
    let budget = budget.unwrap_or_else(|| self::budget(p, load));
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watcher = {
        // The budget: a pipeline whose runtime is stuck cannot stop itself.
        let guard = guard.clone();
        std::thread::Builder::new()
            .name("pipeline-budget".into())
            .spawn(move || {
                if finished.recv_timeout(budget) == Err(RecvTimeoutError::Timeout) {
                    eprintln!(
                        "bad-pipelines: {} ({}) outlived its budget of {:.1} s; stopping it",
                        p.name,
                        variant.name(),
                        budget.as_secs_f64()
                    );
                    guard.flush();
                    std::thread::sleep(Duration::from_millis(300));
                    // The stuck pipeline never reaches its own clean-up.
                    std::fs::remove_dir_all(scratch_dir(p, variant)).ok();
                    std::process::exit(124);
                }
            })?
    };
    let outcome = run_in_tier(p, variant, load, Some(&guard), tier);
    drop(done);
    let _ = watcher.join();
    // The watcher is gone: this is the last reference, and dropping it ends the run file.
    drop(std::sync::Arc::into_inner(guard));
    outcome
}

/// The time `p` may run at `load`.
pub fn budget(p: &Pipeline, load: Load) -> Duration {
    match load {
        Load::Quick => (p.budget / 2).min(Duration::from_secs(3)),
        Load::Default => p.budget,
        Load::Heavy => p.budget * 2,
    }
}

/// A small seeded generator (splitmix64): the pipelines' data is the same on every run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A float in `0..1`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A deterministic hash of two numbers, for seeded decisions without shared state.
pub fn mix(a: u64, b: u64) -> u64 {
    Rng::new(a.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ b).next_u64()
}
