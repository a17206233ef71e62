//! The stall-memory bench: what a service's stalls cost it in resident memory under the hooks
//! tier, beside the same service without asyncprof. Each service idles, stalls once, then
//! stalls again and again at 100 distinct lines; the driver reads its memory from outside at
//! each step (`VmRSS`, and `VmHWM` for the peak in between).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::stall_lines::STALLS;

/// `asyncprof-overhead stall-memory` arguments.
#[derive(Debug, clap::Args)]
pub struct StallMemoryArgs {
    /// Stalls in all (the first one alone, then the rest).
    #[arg(long, default_value_t = 1000)]
    stalls: u32,
    /// Distinct lines the stalls cycle through (1 to 100).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100))]
    lines: u32,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "target/asyncprof-stall-memory.json")]
    json: std::path::PathBuf,
}

/// One service's memory at each step, in KiB.
#[derive(Debug, Clone, Default, Serialize)]
struct Steps {
    idle_rss: u64,
    first_stall_rss: u64,
    first_stall_peak: u64,
    all_stalls_rss: u64,
    all_stalls_peak: u64,
    /// Stalls in the run file and the distinct lines they blame (asyncprof only).
    stalls_recorded: Option<usize>,
    lines_blamed: Option<usize>,
}

#[derive(Debug, Serialize)]
struct Results {
    stalls: u32,
    lines: u32,
    plain: Steps,
    asyncprof: Steps,
}

/// `(VmRSS, VmHWM)` of `pid`, in KiB.
fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// Run the service once, with asyncprof or without, and read its memory at each step.
fn measure(profiled: bool, args: &StallMemoryArgs) -> anyhow::Result<Steps> {
    let run = crate::temp_path("stall-memory.run");
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--stall-service",
            if profiled { "asyncprof" } else { "plain" },
            &args.stalls.to_string(),
            &args.lines.to_string(),
        ])
        .arg(&run)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the stall service")?;
    let pid = child.id();
    let mut to = child.stdin.take().context("stdin")?;
    let mut from = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut wait_for = |what: &str| -> anyhow::Result<()> {
        match from.next() {
            Some(Ok(l)) if l == what => Ok(()),
            other => anyhow::bail!("the stall service said {other:?}, not {what:?}"),
        }
    };
    let mut steps = Steps::default();
    wait_for("idle")?;
    steps.idle_rss = memory(pid)?.0;
    writeln!(to, "go")?;
    wait_for("first")?;
    (steps.first_stall_rss, steps.first_stall_peak) = memory(pid)?;
    writeln!(to, "go")?;
    wait_for("all")?;
    (steps.all_stalls_rss, steps.all_stalls_peak) = memory(pid)?;
    writeln!(to, "go")?;
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "the stall service failed: {status}");
    if profiled {
        let r = asyncprof_format::read_path(&run)?;
        let mut lines: Vec<u32> = r
            .stalls
            .iter()
            .filter_map(|s| s.culprit.as_ref()?.line)
            .collect();
        lines.sort_unstable();
        lines.dedup();
        steps.stalls_recorded = Some(r.stalls.len());
        steps.lines_blamed = Some(lines.len());
    }
    let _ = std::fs::remove_file(&run);
    Ok(steps)
}

/// The driver: both services, then the table.
pub fn main(args: &StallMemoryArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.stalls >= 1, "--stalls must be at least 1");
    let plain = measure(false, args)?;
    let asyncprof = measure(true, args)?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let over = |a: u64, p: u64| (a as f64 - p as f64) / 1024.0;
    println!(
        "stall memory: 1 stall, then {} more at {} distinct lines (15 ms each), hooks tier",
        args.stalls - 1,
        args.lines
    );
    println!(
        "{:<28} {:>10} {:>10} {:>12}",
        "MiB", "plain", "asyncprof", "over plain"
    );
    for (name, p, a) in [
        ("idle RSS", plain.idle_rss, asyncprof.idle_rss),
        (
            "after the first stall",
            plain.first_stall_rss,
            asyncprof.first_stall_rss,
        ),
        (
            "peak by the first stall",
            plain.first_stall_peak,
            asyncprof.first_stall_peak,
        ),
        (
            "after every stall",
            plain.all_stalls_rss,
            asyncprof.all_stalls_rss,
        ),
        (
            "peak over the run",
            plain.all_stalls_peak,
            asyncprof.all_stalls_peak,
        ),
    ] {
        println!(
            "{name:<28} {:>10.1} {:>10.1} {:>+12.1}",
            mib(p),
            mib(a),
            over(a, p)
        );
    }
    println!(
        "first stall: +{:.1} MiB over its own idle RSS at the peak; run file: {} stalls at {} lines",
        over(asyncprof.first_stall_peak, asyncprof.idle_rss),
        asyncprof.stalls_recorded.unwrap_or(0),
        asyncprof.lines_blamed.unwrap_or(0)
    );
    let results = Results {
        stalls: args.stalls,
        lines: args.lines,
        plain,
        asyncprof,
    };
    if let Some(parent) = args.json.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.json, serde_json::to_vec_pretty(&results)?)
        .with_context(|| format!("writing {}", args.json.display()))?;
    println!("results written to {}", args.json.display());
    Ok(())
}

/// The stall service: `--stall-service plain|asyncprof STALLS LINES RUN_FILE`. A runtime with a
/// task ticking every millisecond; it says `idle` after a second, then at each line on its
/// standard input takes the next step: one stall (`first`), the other stalls one after the
/// other, cycling through `LINES` lines (`all`), exit. Each step waits 1.5 s after its last
/// stall, so the recorder has written (and symbolized) them.
pub fn service_main(args: &[String]) -> anyhow::Result<()> {
    let [_, config, stalls, lines, path] = args else {
        anyhow::bail!("usage: --stall-service plain|asyncprof STALLS LINES RUN_FILE");
    };
    let stalls: u32 = stalls.parse().context("STALLS")?;
    let lines: usize = lines.parse().context("LINES")?;
    let guard = match config.as_str() {
        "asyncprof" => Some(asyncprof::Profiler::builder().out(path).start()?),
        "plain" => None,
        other => anyhow::bail!("unknown configuration {other:?}"),
    };
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(crate::WORKERS).enable_all();
    if let Some(g) = &guard {
        g.instrument(&mut b);
    }
    let rt = b.build()?;
    rt.spawn(async {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        loop {
            tick.tick().await;
        }
    });
    let mut input = std::io::stdin().lock().lines();
    let mut out = std::io::stdout().lock();
    let mut step = |said: &str| -> anyhow::Result<()> {
        std::thread::sleep(Duration::from_millis(1500));
        writeln!(out, "{said}")?;
        out.flush()?;
        match input.next() {
            Some(Ok(_)) => Ok(()),
            _ => anyhow::bail!("the driver went away"),
        }
    };
    step("idle")?;
    rt.block_on(async {
        let _ = tokio::spawn(async { STALLS[0]() }).await;
    });
    step("first")?;
    rt.block_on(async {
        for i in 1..stalls as usize {
            let stall = STALLS[i % lines];
            let _ = tokio::spawn(async move { stall() }).await;
        }
    });
    step("all")?;
    drop(rt);
    drop(guard);
    Ok(())
}
