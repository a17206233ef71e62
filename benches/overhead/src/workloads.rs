//! The five workloads, and the runtime each configuration runs them on.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

use crate::{Config, Sample, Size, WORKERS};

/// One workload of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workload {
    /// W1: tasks that do nothing but `yield_now`: the per-poll cost, bare.
    Yield,
    /// W2: many tiny tasks, each sending once on an mpsc: the per-task cost and memory.
    Spawn,
    /// W3: a 3-stage pipeline over bounded channels: the per-item channel cost.
    Channels,
    /// W4: many tasks sleeping briefly, over and over: timers and wakeups.
    Sleep,
    /// W5: the fixed log-aggregator of `examples/bad-pipelines`, end to end (UDP, HTTP, SQLite).
    Pipeline,
}

impl Workload {
    /// Every workload, in table order.
    pub const ALL: [Workload; 5] = [
        Workload::Yield,
        Workload::Spawn,
        Workload::Channels,
        Workload::Sleep,
        Workload::Pipeline,
    ];

    /// Its name on the command line and in the JSON.
    pub fn key(self) -> &'static str {
        match self {
            Workload::Yield => "w1-yield",
            Workload::Spawn => "w2-spawn",
            Workload::Channels => "w3-channels",
            Workload::Sleep => "w4-sleep",
            Workload::Pipeline => "w5-pipeline",
        }
    }

    /// The workload named `key` (or just `w1`…`w5`).
    pub fn parse(key: &str) -> Option<Workload> {
        Workload::ALL
            .into_iter()
            .find(|w| w.key() == key || w.key().split('-').next() == Some(key))
    }

    /// What it does at `p`'s size, in one line.
    pub fn describe(self, p: &Params) -> String {
        match self {
            Workload::Yield => format!("{} tasks x {} yield_now", p.tasks, p.yields),
            Workload::Spawn => format!(
                "{} tasks alive at once, each sending once on an mpsc",
                p.spawns
            ),
            Workload::Channels => format!(
                "3-stage pipeline moving {} u64 over bounded channels (capacity {})",
                p.items, CHANNEL_CAPACITY
            ),
            Workload::Sleep => format!(
                "{} tasks x {} sleeps of {} ms",
                p.sleepers,
                p.sleeps,
                SLEEP.as_millis()
            ),
            Workload::Pipeline => format!(
                "asyncprof-pipelines log-aggregator (fixed), {} load",
                p.pipeline_load.name()
            ),
        }
    }

    /// What one unit of its throughput is.
    pub fn unit(self) -> &'static str {
        match self {
            Workload::Yield => "polls",
            Workload::Spawn => "tasks",
            Workload::Channels => "items",
            Workload::Sleep => "sleeps",
            Workload::Pipeline => "lines",
        }
    }
}

const CHANNEL_CAPACITY: usize = 1024;
const SLEEP: Duration = Duration::from_millis(1);

/// The workloads' sizes.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// W1 tasks.
    pub tasks: usize,
    /// W1 `yield_now` per task.
    pub yields: usize,
    /// W2 tasks.
    pub spawns: usize,
    /// W3 items.
    pub items: u64,
    /// W4 tasks.
    pub sleepers: usize,
    /// W4 sleeps per task.
    pub sleeps: usize,
    /// W5 load.
    pub pipeline_load: asyncprof_pipelines::Load,
}

impl Params {
    /// The sizes of `size`.
    pub fn of(size: Size) -> Params {
        match size {
            Size::Full => Params {
                tasks: 1_000,
                yields: 2_000,
                spawns: 200_000,
                items: 2_000_000,
                sleepers: 10_000,
                sleeps: 50,
                pipeline_load: asyncprof_pipelines::Load::Default,
            },
            Size::Tiny => Params {
                tasks: 20,
                yields: 50,
                spawns: 2_000,
                items: 20_000,
                sleepers: 100,
                sleeps: 5,
                pipeline_load: asyncprof_pipelines::Load::Quick,
            },
        }
    }
}

/// Spawns the workload's tasks, through a `TaskMonitor` under tokio-metrics.
#[derive(Clone, Default)]
struct Spawner {
    monitor: Option<tokio_metrics::TaskMonitor>,
}

impl Spawner {
    fn spawn<F>(&self, f: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.monitor {
            Some(m) => tokio::spawn(m.instrument(f)),
            None => tokio::spawn(f),
        }
    }
}

/// What a configuration keeps alive while a workload runs.
#[derive(Default)]
struct Instruments {
    asyncprof: Option<asyncprof::Guard>,
    dial9: Option<dial9_tokio_telemetry::telemetry::TelemetryGuard>,
    spawner: Spawner,
    polls: Option<Arc<AtomicU64>>,
    outputs: Vec<std::path::PathBuf>,
    scraper: Option<Scraper>,
}

/// A thread that GETs asyncprof's metrics endpoint every second, as Prometheus would.
struct Scraper {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Scraper {
    fn start(addr: std::net::SocketAddr) -> std::io::Result<Scraper> {
        use std::io::{Read, Write};
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::thread::Builder::new().name("scraper".into()).spawn({
            let stop = stop.clone();
            move || {
                while !stop.load(Relaxed) {
                    if let Ok(mut conn) = std::net::TcpStream::connect(addr) {
                        let _ = conn.write_all(
                            b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\
                              Accept: application/openmetrics-text; version=1.0.0\r\n\r\n",
                        );
                        let mut body = Vec::new();
                        let _ = conn.read_to_end(&mut body);
                        std::hint::black_box(body);
                    }
                    std::thread::park_timeout(std::time::Duration::from_secs(1));
                }
            }
        })?;
        Ok(Scraper { stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Relaxed);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

impl Instruments {
    /// Start what `config` needs before its runtime is built.
    fn start(config: Config) -> anyhow::Result<Instruments> {
        let mut i = Instruments::default();
        match config {
            Config::Hooks | Config::Stable | Config::Layer => {
                let path = crate::temp_path("asyncprof.run");
                // ASYNCPROF_* variables (the clock tick, the sample rate...) apply, so that a
                // setting's cost can be measured; the run file stays the bench's own.
                let builder = asyncprof::Profiler::builder().from_env()?;
                i.asyncprof = Some(builder.out(&path).start()?);
                i.outputs.push(path);
            }
            Config::HooksMetrics => {
                let path = crate::temp_path("asyncprof.run");
                let guard = asyncprof::Profiler::builder()
                    .out(&path)
                    .metrics_addr(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
                    .start()?;
                let addr = guard
                    .metrics_addr()
                    .ok_or_else(|| anyhow::anyhow!("the metrics endpoint did not start"))?;
                i.scraper = Some(Scraper::start(addr)?);
                i.asyncprof = Some(guard);
                i.outputs.push(path);
            }
            Config::TokioMetrics => i.spawner.monitor = Some(tokio_metrics::TaskMonitor::new()),
            Config::CountPolls => i.polls = Some(Arc::new(AtomicU64::new(0))),
            Config::Dial9 => i.outputs.push(crate::temp_path("dial9")),
            Config::Plain
            | Config::PlainTracing
            | Config::Registry
            | Config::Console
            | Config::EmptyHooks
            | Config::EmptyTaskHooks => {}
        }
        #[cfg(feature = "traced")]
        traced::set_subscriber(config, i.asyncprof.as_ref())?;
        Ok(i)
    }

    /// Build the runtime from `b` the way `config` instruments it.
    fn build(&mut self, config: Config, mut b: Builder) -> std::io::Result<Runtime> {
        match config {
            Config::Hooks | Config::HooksMetrics => {
                if let Some(g) = &self.asyncprof {
                    g.instrument(&mut b);
                }
            }
            Config::Stable => {
                if let Some(g) = &self.asyncprof {
                    g.instrument_stable(&mut b, asyncprof::Hooks::new());
                }
            }
            Config::CountPolls => {
                let polls = self.polls.clone().unwrap_or_default();
                b.on_after_task_poll(move |_| {
                    polls.fetch_add(1, Relaxed);
                });
            }
            Config::EmptyHooks => {
                b.on_before_task_poll(|_| {}).on_after_task_poll(|_| {});
            }
            Config::EmptyTaskHooks => {
                b.on_before_task_poll(|_| {})
                    .on_after_task_poll(|_| {})
                    .on_task_spawn(|_| {})
                    .on_task_terminate(|_| {});
            }
            Config::Dial9 => {
                use dial9_tokio_telemetry::telemetry::{RotatingWriter, TracedRuntime};
                let dir = &self.outputs[0];
                std::fs::create_dir_all(dir)?;
                let writer = RotatingWriter::new(dir.join("trace.bin"), 256 << 20, 4 << 30)?;
                let (rt, guard) = TracedRuntime::builder().build_and_start(b, writer)?;
                self.dial9 = Some(guard);
                return Ok(rt);
            }
            Config::Plain
            | Config::PlainTracing
            | Config::Registry
            | Config::Layer
            | Config::Console
            | Config::TokioMetrics => {}
        }
        b.build()
    }

    /// Stop recording and count what was written.
    fn finish(self) -> Option<u64> {
        if let Some(m) = &self.spawner.monitor {
            // Read the monitor, as a service exporting its metrics would.
            std::hint::black_box(m.cumulative());
        }
        if let Some(s) = self.scraper {
            s.stop();
        }
        drop(self.asyncprof);
        drop(self.dial9);
        let mut bytes = None;
        // ASYNCPROF_OVERHEAD_KEEP=1 keeps what the instrumentation wrote, to look at it.
        let keep = std::env::var_os("ASYNCPROF_OVERHEAD_KEEP").is_some();
        for path in &self.outputs {
            *bytes.get_or_insert(0) += du(path);
            if keep {
                eprintln!("kept {}", path.display());
            } else if path.is_dir() {
                std::fs::remove_dir_all(path).ok();
            } else {
                std::fs::remove_file(path).ok();
            }
        }
        bytes
    }
}

/// Bytes under `path`, a file or a directory.
fn du(path: &std::path::Path) -> u64 {
    match std::fs::read_dir(path) {
        Ok(dir) => dir.flatten().map(|e| du(&e.path())).sum(),
        Err(_) => std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
    }
}

/// Run `workload` once under `config` and measure it.
pub(crate) fn measure(config: Config, workload: Workload, p: Params) -> anyhow::Result<Sample> {
    let mut inst = Instruments::start(config)?;
    let spawner = inst.spawner.clone();
    let channels = config.asyncprof_channels();
    let own0 = crate::own_threads_cpu_ns();
    let cpu0 = crate::process_cpu();
    let start = Instant::now();
    // The pipeline's own clock: from its first item to its last, without its upstream
    // services' start and its SQLite files' setup.
    let mut pipeline_wall = None;
    let items = if workload == Workload::Pipeline {
        let (items, wall) = pipeline(config, &mut inst, p)?;
        pipeline_wall = Some(wall);
        items
    } else {
        let mut b = Builder::new_multi_thread();
        b.worker_threads(WORKERS).enable_all();
        let rt = inst.build(config, b)?;
        let items = rt.block_on(async move {
            match workload {
                Workload::Yield => yields(&spawner, p).await,
                Workload::Spawn => spawns(&spawner, p).await,
                Workload::Channels if channels => channels_asyncprof(&spawner, p).await,
                Workload::Channels => channels_tokio(&spawner, p).await,
                Workload::Sleep => sleeps(&spawner, p).await,
                Workload::Pipeline => unreachable!("run above"),
            }
        });
        drop(rt);
        items
    };
    let wall = pipeline_wall.unwrap_or_else(|| start.elapsed());
    let cpu = crate::process_cpu().saturating_sub(cpu0);
    let own = crate::own_threads_cpu_since(&own0);
    let polls = inst.polls.as_ref().map(|p| p.load(Relaxed));
    let footprint = inst.asyncprof.as_ref().map(|g| g.footprint());
    let output_bytes = inst.finish();
    Ok(Sample {
        wall_s: wall.as_secs_f64(),
        cpu_s: cpu.as_secs_f64(),
        items,
        peak_rss_kib: crate::peak_rss_kib(),
        polls,
        output_bytes,
        asyncprof_tables_kib: footprint.as_ref().map(|f| f.table_bytes as u64 / 1024),
        asyncprof_tasks_tracked: footprint.map(|f| f.tasks_tracked as u64),
        own_threads_cpu_s: own.map(|d| d.as_secs_f64()),
    })
}

/// W1 and W4: `tasks` tasks, each awaiting `step()` `times` times, all joined.
async fn repeat<F, Fut>(spawner: &Spawner, tasks: usize, times: usize, step: F)
where
    F: Fn() -> Fut + Copy + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            spawner.spawn(async move {
                for _ in 0..times {
                    step().await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("a workload task panicked");
    }
}

/// W1: every `yield_now` is a poll, plus each task's first.
async fn yields(spawner: &Spawner, p: Params) -> u64 {
    repeat(spawner, p.tasks, p.yields, tokio::task::yield_now).await;
    (p.tasks * (p.yields + 1)) as u64
}

/// W2: the tiny tasks are spawned from `block_on`'s thread, outside the workers, and the
/// receiver starts once all are spawned: the channel fills and the rest wait for room, so
/// all 200,000 are alive at once in every configuration and peak memory compares like with
/// like. (Spawned from a task instead, the 200,000 spawns would be one 200 ms poll holding a
/// worker: a stall asyncprof rightly reports and captures.)
async fn spawns(spawner: &Spawner, p: Params) -> u64 {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(CHANNEL_CAPACITY);
    for i in 0..p.spawns as u64 {
        let tx = tx.clone();
        spawner.spawn(async move {
            let _ = tx.send(i).await;
        });
    }
    drop(tx);
    let receiver = spawner.spawn(async move {
        let mut n = 0u64;
        while rx.recv().await.is_some() {
            n += 1;
        }
        n
    });
    let n = receiver.await.expect("the receiver panicked");
    assert_eq!(n, p.spawns as u64, "every task sends once");
    n
}

/// W3, written once for both channel kinds: `$channel(name, capacity)` makes a channel.
macro_rules! three_stages {
    ($spawner:expr, $p:expr, $channel:expr) => {{
        let (tx1, mut rx1) = $channel("w3 source", CHANNEL_CAPACITY);
        let (tx2, mut rx2) = $channel("w3 transform", CHANNEL_CAPACITY);
        let n = $p.items;
        let source = $spawner.spawn(async move {
            for i in 0..n {
                if tx1.send(i).await.is_err() {
                    break;
                }
            }
        });
        let transform = $spawner.spawn(async move {
            while let Some(x) = rx1.recv().await {
                let y: u64 = x.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (x >> 7);
                if tx2.send(y).await.is_err() {
                    break;
                }
            }
        });
        let sink = $spawner.spawn(async move {
            let (mut count, mut sum) = (0u64, 0u64);
            while let Some(y) = rx2.recv().await {
                count += 1;
                sum = sum.wrapping_add(y);
            }
            std::hint::black_box(sum);
            count
        });
        source.await.expect("source panicked");
        transform.await.expect("transform panicked");
        let count = sink.await.expect("sink panicked");
        assert_eq!(count, n, "every item reaches the sink");
        count
    }};
}

async fn channels_tokio(spawner: &Spawner, p: Params) -> u64 {
    three_stages!(spawner, p, |_name: &str, cap| tokio::sync::mpsc::channel::<
        u64,
    >(cap))
}

async fn channels_asyncprof(spawner: &Spawner, p: Params) -> u64 {
    three_stages!(spawner, p, |name: &str, cap| {
        asyncprof::sync::mpsc::channel::<u64>(name, cap)
    })
}

/// W4.
async fn sleeps(spawner: &Spawner, p: Params) -> u64 {
    repeat(spawner, p.sleepers, p.sleeps, || tokio::time::sleep(SLEEP)).await;
    (p.sleepers * p.sleeps) as u64
}

/// W5: the pipeline builds its own runtime (two workers); `config` instruments it.
fn pipeline(config: Config, inst: &mut Instruments, p: Params) -> anyhow::Result<(u64, Duration)> {
    let pipeline = asyncprof_pipelines::find("log-aggregator")
        .ok_or_else(|| anyhow::anyhow!("asyncprof-pipelines has no log-aggregator"))?;
    let monitor = inst.spawner.monitor.clone();
    let outcome = asyncprof_pipelines::run_on(
        pipeline,
        asyncprof_pipelines::Variant::Fixed,
        p.pipeline_load,
        |b| inst.build(config, b),
        |run| match monitor {
            // tokio-metrics sees the tasks a service wraps: here, the pipeline's root task
            // (its stages are spawned inside the pipeline's code, out of the benchmark's reach).
            Some(m) => Box::pin(m.instrument(run)),
            None => run,
        },
    )?;
    anyhow::ensure!(outcome.items > 0, "the pipeline processed nothing");
    Ok((outcome.items, Duration::from_secs_f64(outcome.elapsed_s)))
}

#[cfg(feature = "traced")]
mod traced {
    use tracing_subscriber::layer::SubscriberExt;

    use crate::Config;

    /// Install the process-wide subscriber of the traced configurations.
    pub(super) fn set_subscriber(
        config: Config,
        guard: Option<&asyncprof::Guard>,
    ) -> anyhow::Result<()> {
        match config {
            Config::Layer => {
                let guard = guard.ok_or_else(|| anyhow::anyhow!("the layer needs a recording"))?;
                tracing::subscriber::set_global_default(
                    tracing_subscriber::registry().with(guard.layer()),
                )?;
            }
            Config::Registry => {
                // The empty layer makes the registry free closed spans, as with any layer.
                tracing::subscriber::set_global_default(
                    tracing_subscriber::registry().with(tracing_subscriber::layer::Identity::new()),
                )?;
            }
            Config::Console => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port();
                let layer = console_subscriber::ConsoleLayer::builder()
                    .server_addr(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
                    .spawn();
                tracing::subscriber::set_global_default(
                    tracing_subscriber::registry().with(layer),
                )?;
            }
            _ => {}
        }
        Ok(())
    }
}
