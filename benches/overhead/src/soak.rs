//! The soak: a service at constant load under the hooks tier with a stall injected every
//! second, watched from outside: resident memory, threads, file descriptors, and the run
//! file, read in full at every sample as `asyncprof report` would read it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

/// `asyncprof-overhead soak` arguments.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// How long the service runs, in minutes (fractions allowed).
    #[arg(long, default_value_t = 5.0)]
    minutes: f64,
    /// Seconds between samples.
    #[arg(long, default_value_t = 5.0)]
    every: f64,
    /// Seconds of warm-up before memory must stay flat.
    #[arg(long, default_value_t = 30.0)]
    warmup: f64,
    /// Requests per second the load generator sends.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Exit with status 1 when a verdict fails (memory not flat, a thread or descriptor leak).
    #[arg(long)]
    strict: bool,
    /// Where to write the samples as JSON.
    #[arg(long, default_value = "target/asyncprof-soak.json")]
    json: PathBuf,
}

/// The stall the service injects every second: a blocking sleep on a worker.
const STALL: Duration = Duration::from_millis(30);

/// One look at the service.
#[derive(Debug, Clone, Serialize)]
struct Look {
    t_s: f64,
    rss_kib: u64,
    threads: usize,
    fds: usize,
    run_file_bytes: u64,
    /// Which part of the run the file at the path is (`ASYNCPROF_MAX_FILE_MB`): its size
    /// starts again at each new part.
    part: Option<u32>,
    /// The run file read in full: its snapshots and stalls, or why it could not be read.
    snapshots: Option<usize>,
    stalls: Option<usize>,
    read_error: Option<String>,
}

fn look(pid: u32, run: &Path, t0: Instant) -> Option<Look> {
    use asyncprof_sampler::procfs;
    let (snapshots, stalls, part, read_error) = match asyncprof_format::read_path(run) {
        Ok(r) => (
            Some(r.series.len()),
            Some(r.stalls.len()),
            Some(r.header.part),
            None,
        ),
        Err(e) => (None, None, None, Some(e.to_string())),
    };
    Some(Look {
        t_s: t0.elapsed().as_secs_f64(),
        rss_kib: procfs::status_kib(pid, "VmRSS:")?,
        threads: procfs::thread_count(pid),
        fds: procfs::fd_count(pid),
        run_file_bytes: std::fs::metadata(run).map_or(0, |m| m.len()),
        part,
        snapshots,
        stalls,
        read_error,
    })
}

#[derive(Debug, Serialize)]
struct Verdicts {
    minutes: f64,
    rate: u32,
    warmup_s: f64,
    samples: usize,
    rss_median_mib: f64,
    /// The largest departure from the median after warm-up, percent.
    rss_spread_pct: f64,
    threads_min: usize,
    threads_max: usize,
    fds_min: usize,
    fds_max: usize,
    run_file_bytes_per_s: f64,
    /// The run's own count of its stalls (every part's), from its last snapshot; the records
    /// in the file when an older file has none.
    stalls_recorded: usize,
    /// The stall records in the run file (only its newest part's, when it has parts).
    stalls_in_file: usize,
    unreadable_reads: usize,
    served: u64,
    looks: Vec<Look>,
}

/// `asyncprof-overhead soak`.
pub(crate) fn run(args: SoakArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.minutes > 0.0, "--minutes must be positive");
    anyhow::ensure!(args.every > 0.0, "--every must be positive");
    let seconds = args.minutes * 60.0;
    let run_file = crate::temp_path("soak.run");
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--soak")
        .arg(format!("{seconds}"))
        .arg(args.rate.to_string())
        .arg(&run_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the soak service")?;
    let pid = child.id();
    let t0 = Instant::now();
    let mut looks: Vec<Look> = Vec::new();
    println!(
        "soak: {:.1} min at {} requests/s, a {} ms blocking stall every second, hooks tier; \
         run file {}",
        args.minutes,
        args.rate,
        STALL.as_millis(),
        run_file.display()
    );
    println!(
        "{:>7} {:>9} {:>7} {:>5} {:>12} {:>9} {:>7}",
        "t s", "RSS MiB", "threads", "fds", "run file B", "snapshots", "stalls"
    );
    let exit = loop {
        std::thread::sleep(Duration::from_secs_f64(args.every));
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Some(l) = look(pid, &run_file, t0) {
            println!(
                "{:>7.0} {:>9.1} {:>7} {:>5} {:>12} {:>9} {:>7}{}",
                l.t_s,
                l.rss_kib as f64 / 1024.0,
                l.threads,
                l.fds,
                l.run_file_bytes,
                l.snapshots.map_or("-".into(), |n| n.to_string()),
                l.stalls.map_or("-".into(), |n| n.to_string()),
                l.read_error
                    .as_deref()
                    .map_or(String::new(), |e| format!("  UNREADABLE: {e}"))
            );
            looks.push(l);
        }
    };
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            out = line;
        }
    }
    anyhow::ensure!(exit.success(), "the soak service failed: {exit}");
    let served: u64 = out
        .trim()
        .strip_prefix("served ")
        .and_then(|n| n.parse().ok())
        .context("the soak service did not say what it served")?;
    let end = asyncprof_format::read_path(&run_file)
        .with_context(|| format!("reading the finished run file {}", run_file.display()))?;
    std::fs::remove_file(&run_file).ok();

    // After the warm-up, and before the service's own end: a look taken while it shuts down
    // sees its threads and sockets closing, not a leak.
    let warm: Vec<&Look> = looks
        .iter()
        .filter(|l| l.t_s >= args.warmup && l.t_s < seconds - 1.0)
        .collect();
    anyhow::ensure!(
        warm.len() >= 2,
        "fewer than two samples after the warm-up: run longer than --warmup"
    );
    let rss: Vec<f64> = warm.iter().map(|l| l.rss_kib as f64).collect();
    let rss_median =
        asyncprof_bench_support::median(rss.iter().copied()).expect("two samples or more");
    // The largest departure from the median, either way.
    let spread = rss
        .iter()
        .map(|&k| (k - rss_median).abs())
        .fold(0.0, f64::max)
        / rss_median
        * 100.0;
    // The write rate over the samples' intervals inside one part of the run (a new part
    // starts its file again).
    let (grown, over) = warm
        .windows(2)
        .filter(|p| p[0].part == p[1].part && p[1].run_file_bytes >= p[0].run_file_bytes)
        .fold((0.0, 0.0), |(b, t), p| {
            (
                b + (p[1].run_file_bytes - p[0].run_file_bytes) as f64,
                t + (p[1].t_s - p[0].t_s),
            )
        });
    let growth = grown / f64::max(over, 1e-9);
    let v = Verdicts {
        minutes: args.minutes,
        rate: args.rate,
        warmup_s: args.warmup,
        samples: looks.len(),
        rss_median_mib: rss_median / 1024.0,
        rss_spread_pct: spread,
        threads_min: warm.iter().map(|l| l.threads).min().unwrap_or(0),
        threads_max: warm.iter().map(|l| l.threads).max().unwrap_or(0),
        fds_min: warm.iter().map(|l| l.fds).min().unwrap_or(0),
        fds_max: warm.iter().map(|l| l.fds).max().unwrap_or(0),
        run_file_bytes_per_s: growth,
        stalls_recorded: end
            .snapshot
            .as_ref()
            .and_then(|n| n.runtime.stalls)
            .map_or(end.stalls.len(), |t| t.count as usize),
        stalls_in_file: end.stalls.len(),
        unreadable_reads: looks.iter().filter(|l| l.read_error.is_some()).count(),
        served,
        looks,
    };
    let flat = v.rss_spread_pct <= 5.0;
    let no_thread_leak = v.threads_max == v.threads_min;
    let no_fd_leak = v.fds_max <= v.fds_min + 2;
    let readable = v.unreadable_reads == 0 && end.ended;
    let stalls_seen = v.stalls_recorded as f64 >= seconds * 0.8;
    println!();
    println!(
        "served {} requests ({:.0}/s); {} stalls recorded in {:.0} s",
        v.served,
        v.served as f64 / seconds,
        v.stalls_recorded,
        seconds
    );
    let verdict = |ok: bool| if ok { "ok" } else { "FAILED" };
    println!(
        "RSS after {:.0} s warm-up: median {:.1} MiB, largest departure ±{:.2}% (must be within ±5%) {}",
        args.warmup,
        v.rss_median_mib,
        v.rss_spread_pct,
        verdict(flat)
    );
    println!(
        "threads {}..{} {}; file descriptors {}..{} {}",
        v.threads_min,
        v.threads_max,
        verdict(no_thread_leak),
        v.fds_min,
        v.fds_max,
        verdict(no_fd_leak)
    );
    println!(
        "run file: {:.0} bytes/s after warm-up; read in full at every sample: {} unreadable \
         of {}; ended cleanly: {} {}",
        v.run_file_bytes_per_s,
        v.unreadable_reads,
        v.samples,
        end.ended,
        verdict(readable)
    );
    println!(
        "stalls: {} recorded ({} of them in the run file's last part), ≥ 80% of the {:.0} \
         injected: {}",
        v.stalls_recorded,
        v.stalls_in_file,
        seconds,
        verdict(stalls_seen)
    );
    if let Some(parent) = args.json.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_vec_pretty(&v)?)
        .with_context(|| format!("writing {}", args.json.display()))?;
    println!("samples written to {}", args.json.display());
    let all = flat && no_thread_leak && no_fd_leak && readable && stalls_seen;
    Ok(if args.strict && !all {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The soak service: `--soak SECONDS RATE RUN_FILE`. A loopback TCP server on an instrumented
/// runtime passes each request line through a named channel to a stage task and answers it;
/// a client thread sends `RATE` requests per second over 16 connections; every second a task
/// blocks its worker for 30 ms.
pub fn service_main(args: &[String]) -> anyhow::Result<()> {
    let [_, seconds, rate, path] = args else {
        anyhow::bail!("usage: --soak SECONDS RATE RUN_FILE");
    };
    let seconds: f64 = seconds.parse().context("SECONDS")?;
    let rate: u32 = rate.parse().context("RATE")?;
    // Settings from the environment (ASYNCPROF_STALL_THRESHOLD_MS and friends), as any
    // profiled service; the run file is the driver's.
    let guard = asyncprof::Profiler::builder()
        .from_env()?
        .out(path)
        .start()?;
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(crate::WORKERS).enable_all();
    let rt = guard.instrument(&mut b).build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let served = Arc::new(AtomicU64::new(0));
    rt.spawn(serve(listener, served.clone()));
    rt.spawn(async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            tokio::spawn(async {
                std::thread::sleep(STALL); // the injected stall
            });
        }
    });
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let client = std::thread::Builder::new()
        .name("soak-client".into())
        .spawn(move || client(addr, rate, deadline))?;
    client
        .join()
        .map_err(|_| anyhow::anyhow!("the load generator panicked"))??;
    rt.shutdown_timeout(Duration::from_secs(1));
    drop(guard);
    let mut out = std::io::stdout().lock();
    writeln!(out, "served {}", served.load(Relaxed))?;
    Ok(())
}

async fn serve(listener: tokio::net::TcpListener, served: Arc<AtomicU64>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    type Job = (u64, tokio::sync::oneshot::Sender<u64>);
    let (tx, mut rx) = asyncprof::sync::mpsc::channel::<Job>("soak requests", 256);
    tokio::spawn(async move {
        while let Some((n, reply)) = rx.recv().await {
            let mut h = n;
            for _ in 0..64 {
                h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
            }
            let _ = reply.send(h);
        }
    });
    while let Ok((conn, _)) = listener.accept().await {
        let tx = tx.clone();
        let served = served.clone();
        tokio::spawn(async move {
            let (r, mut w) = conn.into_split();
            let mut lines = tokio::io::BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(n) = line.trim().parse::<u64>() else {
                    break;
                };
                let (reply, answer) = tokio::sync::oneshot::channel();
                if tx.send((n, reply)).await.is_err() {
                    break;
                }
                let Ok(h) = answer.await else { break };
                if w.write_all(format!("{h}\n").as_bytes()).await.is_err() {
                    break;
                }
                served.fetch_add(1, Relaxed);
            }
        });
    }
}

/// The load generator, on its own runtime outside the profiled one.
fn client(addr: std::net::SocketAddr, rate: u32, deadline: Instant) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    const CONNECTIONS: u32 = 16;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let per_conn = Duration::from_secs_f64(CONNECTIONS as f64 / rate.max(1) as f64);
        let mut conns = Vec::new();
        for c in 0..CONNECTIONS {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            conns.push(tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut lines = tokio::io::BufReader::new(r).lines();
                let mut tick = tokio::time::interval(per_conn);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n = u64::from(c);
                while Instant::now() < deadline {
                    tick.tick().await;
                    n += u64::from(CONNECTIONS);
                    w.write_all(format!("{n}\n").as_bytes()).await?;
                    if lines.next_line().await?.is_none() {
                        anyhow::bail!("the server closed a connection");
                    }
                }
                anyhow::Ok(())
            }));
        }
        for c in conns {
            c.await??;
        }
        anyhow::Ok(())
    })
}
