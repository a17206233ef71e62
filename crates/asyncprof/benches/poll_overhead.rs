//! Per-poll overhead of asyncprof on a yield-heavy workload.
//!
//! Runs 1,000 tasks × 2,000 `yield_now` on a 2-worker runtime, alternating configurations
//! round by round, and prints the median time, the throughput ratio to plain tokio and the
//! CPU nanoseconds added per poll.
//!
//! ```text
//! cargo bench -p asyncprof --bench poll_overhead                           # hooks tier
//! cargo bench -p asyncprof --bench poll_overhead --features tokio-tracing  # + layer tier
//! cargo bench -p asyncprof --bench poll_overhead -- --tasks 50 --yields 50 --rounds 1  # smoke
//! ```
//!
//! With `tokio-tracing` every configuration, plain included, runs on a tokio compiled with
//! its `tracing` feature, so the ratios compare like with like.

use std::time::{Duration, Instant};

const WORKERS: usize = 2;

/// Per-poll overhead of asyncprof on a yield-heavy workload.
#[derive(clap::Parser)]
#[command(name = "poll_overhead")]
struct Args {
    /// Tasks spawned per run.
    #[arg(long, default_value_t = 1000)]
    tasks: usize,
    /// `yield_now` calls per task.
    #[arg(long, default_value_t = 2000)]
    yields: usize,
    /// Rounds: each configuration runs once per round.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Config {
    Plain,
    EmptyHooks,
    Hooks,
    #[cfg(feature = "tokio-tracing")]
    Layer,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Plain => "plain tokio",
            Config::EmptyHooks => "empty poll hooks",
            Config::Hooks => "asyncprof hooks tier",
            #[cfg(feature = "tokio-tracing")]
            Config::Layer => "asyncprof layer tier",
        }
    }
}

fn workload(rt: &tokio::runtime::Runtime, args: &Args) -> Duration {
    let (tasks, yields) = (args.tasks, args.yields);
    rt.block_on(async move {
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                tokio::spawn(async move {
                    for _ in 0..yields {
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.unwrap();
        }
        start.elapsed()
    })
}

/// The runtime for `cfg`, and the subscriber its spawning thread runs under.
fn runtime(cfg: Config, guard: &asyncprof::Guard) -> (tokio::runtime::Runtime, tracing::Dispatch) {
    // Assigned only with the `tokio-tracing` feature.
    #[cfg_attr(not(feature = "tokio-tracing"), allow(unused_mut))]
    let mut dispatch = tracing::Dispatch::none();
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(WORKERS);
    match cfg {
        Config::Plain => {}
        Config::EmptyHooks => {
            b.on_before_task_poll(|m| {
                std::hint::black_box(m.id());
            });
            b.on_after_task_poll(|m| {
                std::hint::black_box(m.id());
            });
        }
        Config::Hooks => {
            guard.instrument(&mut b);
        }
        #[cfg(feature = "tokio-tracing")]
        Config::Layer => {
            use tracing_subscriber::layer::SubscriberExt;
            dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(guard.layer()));
            let workers = dispatch.clone();
            b.on_thread_start(move || {
                // The worker keeps the subscriber for its whole life.
                std::mem::forget(tracing::dispatcher::set_default(&workers));
            });
        }
    }
    (b.build().unwrap(), dispatch)
}

fn run(cfg: Config, guard: &asyncprof::Guard, args: &Args) -> Duration {
    let (rt, dispatch) = runtime(cfg, guard);
    tracing::dispatcher::with_default(&dispatch, || workload(&rt, args))
}

/// The median of `times`, in seconds.
fn median_s(times: &[Duration]) -> f64 {
    asyncprof_bench_support::median(times.iter().map(Duration::as_secs_f64))
        .expect("at least one round")
}

fn main() {
    let args: Args = asyncprof_bench_support::args();
    let path = std::env::temp_dir().join(format!("asyncprof-bench-{}.run", std::process::id()));
    let guard = asyncprof::Profiler::builder().out(&path).start().unwrap();
    #[cfg_attr(not(feature = "tokio-tracing"), allow(unused_mut))]
    let mut configs = vec![Config::Plain, Config::EmptyHooks, Config::Hooks];
    #[cfg(feature = "tokio-tracing")]
    configs.push(Config::Layer);
    let polls = (args.tasks * (args.yields + 1)) as f64;
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); configs.len()];
    // Warm up once, then alternate configurations round by round.
    for &cfg in &configs {
        run(cfg, &guard, &args);
    }
    for _ in 0..args.rounds.max(1) {
        for (i, &cfg) in configs.iter().enumerate() {
            times[i].push(run(cfg, &guard, &args));
        }
    }
    println!(
        "workload: {} tasks x {} yield_now, {WORKERS} workers, {} rounds (median)",
        args.tasks, args.yields, args.rounds
    );
    println!(
        "{:<24} {:>10} {:>8} {:>12} {:>12}",
        "configuration", "median", "ratio", "polls/s", "ns/poll +"
    );
    let base = median_s(&times[0]);
    for (i, cfg) in configs.iter().enumerate() {
        let m = median_s(&times[i]);
        let ratio = base / m;
        // CPU time added per poll: wall time difference times the workers that ran it.
        let added = (m - base) * 1e9 * WORKERS as f64 / polls;
        println!(
            "{:<24} {:>8.1}ms {:>7.2}x {:>12.0} {:>12.1}",
            cfg.name(),
            m * 1e3,
            ratio,
            polls / m,
            added
        );
    }
    drop(guard);
    let run = asyncprof_format::read_path(&path).unwrap();
    let snap = run.snapshot.unwrap();
    println!(
        "run file: {} bytes, {} polls recorded, loss {:?}",
        std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0),
        snap.runtime.polls,
        snap.loss
    );
    std::fs::remove_file(&path).ok();
}
