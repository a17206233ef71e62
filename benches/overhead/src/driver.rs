//! The driver: runs every (workload, configuration) pair in fresh worker processes, round by
//! round, and prints and writes the table.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Serialize;

use asyncprof_bench_support::{median, median_ci, range};

/// The confidence every comparison is stated at.
const LEVEL: f64 = 0.95;

use crate::{Config, Params, Sample, Size, Workload};

/// asyncprof's side-by-side overhead benchmark.
#[derive(Debug, Parser)]
#[command(name = "asyncprof-overhead", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a service at constant load with a stall every second, watching its memory, threads,
    /// file descriptors and run file from outside.
    Soak(crate::soak::SoakArgs),
    /// Stall a service once, then 1,000 times at 100 distinct lines, and compare its resident
    /// memory at each step with the same service without asyncprof.
    StallMemory(crate::stall_memory::StallMemoryArgs),
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Workload sizes: `full` (the published table) or `tiny` (a smoke run).
    #[arg(long, default_value = "full", value_parser = parse_size)]
    size: Size,
    /// Rounds: each configuration runs once per round, in fresh processes, in an order that
    /// rotates from round to round. Six is the fewest whose median has a 95% interval.
    #[arg(long, default_value_t = 6)]
    rounds: usize,
    /// Keep adding rounds to a workload, up to this many in all, while one of its targets is
    /// neither met nor missed at 95% confidence (default: no more than --rounds).
    #[arg(long)]
    max_rounds: Option<usize>,
    /// Workloads to run (w1…w5 or their full names); all when not given.
    #[arg(long, value_delimiter = ',', value_parser = parse_workload)]
    workloads: Vec<Workload>,
    /// Configurations to run (plain is always run); all when not given.
    #[arg(long, value_delimiter = ',', value_parser = parse_config)]
    configs: Vec<Config>,
    /// A run still going after this many seconds is stopped and shown as "stopped".
    #[arg(long, default_value_t = 120.0)]
    cap_seconds: f64,
    /// A configuration whose run takes longer than this many seconds runs in 3 rounds at most.
    #[arg(long, default_value_t = 15.0)]
    slow_seconds: f64,
    /// Where to write the table as JSON.
    #[arg(long, default_value = "target/asyncprof-overhead.json")]
    json: PathBuf,
}

fn parse_size(s: &str) -> Result<Size, String> {
    Size::parse(s).ok_or_else(|| format!("{s:?}: sizes are tiny and full"))
}

fn parse_workload(s: &str) -> Result<Workload, String> {
    Workload::parse(s).ok_or_else(|| {
        let known: Vec<_> = Workload::ALL.iter().map(|w| w.key()).collect();
        format!("{s:?}: workloads are {}", known.join(", "))
    })
}

fn parse_config(s: &str) -> Result<Config, String> {
    Config::parse(s)
        .filter(|c| *c != Config::CountPolls)
        .ok_or_else(|| {
            let known: Vec<_> = Config::MEASURED.iter().map(|c| c.key()).collect();
            let extra: Vec<_> = Config::EXTRA.iter().map(|c| c.key()).collect();
            format!(
                "{s:?}: configurations are {} (in the table), and {} (named only)",
                known.join(", "),
                extra.join(", ")
            )
        })
}

/// The driver's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Cmd::Soak(args)) => crate::soak::run(args),
        Some(Cmd::StallMemory(args)) => {
            crate::stall_memory::main(&args).map(|()| ExitCode::SUCCESS)
        }
        None => bench(cli.bench),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("asyncprof-overhead: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The two worker binaries.
struct Bins {
    lean: PathBuf,
    traced: Option<PathBuf>,
}

impl Bins {
    fn of(&self, config: Config) -> &Path {
        if config.traced() {
            self.traced
                .as_deref()
                .expect("traced binary resolved when needed")
        } else {
            &self.lean
        }
    }
}

/// The traced worker beside this binary, built first when this runs under cargo.
fn traced_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("this binary has no directory")?;
    let path = dir.join("asyncprof-overhead-traced");
    if let Ok(cargo) = std::env::var("CARGO") {
        // A cargo invocation of its own: built beside the lean driver, the `traced` feature
        // would turn tokio's `tracing` on for every configuration.
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "-p",
            "asyncprof-overhead",
            "--bin",
            "asyncprof-overhead-traced",
            "--features",
            "traced",
        ]);
        match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => {}
            Some("release") => {
                cmd.arg("--release");
            }
            Some(profile) => {
                cmd.args(["--profile", profile]);
            }
            None => {}
        }
        eprintln!("building the traced worker (tokio's `tracing` feature on): {cmd:?}");
        let status = cmd.status().context("running cargo")?;
        anyhow::ensure!(
            status.success(),
            "building asyncprof-overhead-traced failed"
        );
    }
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build it with `cargo build --release -p asyncprof-overhead \
         --bin asyncprof-overhead-traced --features traced`, or run this benchmark through \
         `cargo run --release -p asyncprof-overhead`",
        path.display()
    );
    Ok(path)
}

/// How one worker run ended.
enum Run {
    Done(Sample),
    /// Still running at the cap: stopped.
    Stopped,
}

fn run_worker(
    bin: &Path,
    config: Config,
    workload: Workload,
    size: Size,
    cap: Duration,
) -> anyhow::Result<Run> {
    let mut child = Command::new(bin)
        .args(["--worker", config.key(), workload.key(), size.key()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let mut stderr = child.stderr.take().context("no stderr")?;
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if start.elapsed() > cap {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    let Some(status) = status else {
        return Ok(Run::Stopped);
    };
    let tail: String = {
        let lines: Vec<_> = err.lines().collect();
        lines[lines.len().saturating_sub(12)..].join("\n")
    };
    anyhow::ensure!(
        status.success(),
        "{} on {} failed ({status}):\n{tail}",
        config.key(),
        workload.key()
    );
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("{} on {} printed no result", config.key(), workload.key()))?;
    Ok(Run::Done(serde_json::from_str(line)?))
}

/// The measured runs of one configuration on one workload.
#[derive(Debug, Default)]
struct Runs {
    /// Per round: the sample, or `None` when the run was stopped or skipped.
    by_round: Vec<Option<Sample>>,
    stopped: bool,
}

impl Runs {
    fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.by_round.iter().flatten()
    }
    fn count(&self) -> usize {
        self.samples().count()
    }
}

/// One line of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Configuration key.
    pub config: &'static str,
    /// Configuration label.
    pub label: &'static str,
    /// Runs measured.
    pub runs: usize,
    /// Whether a run was stopped at the cap (then the figures are bounds).
    pub stopped: bool,
    /// Median wall time, seconds.
    pub median_s: Option<f64>,
    /// Median throughput, units per second.
    pub throughput: Option<f64>,
    /// Median of the per-round throughput ratios (each round's run against plain tokio's of
    /// the same round).
    pub ratio: Option<f64>,
    /// Lowest per-round ratio (each round's run against plain tokio's of the same round).
    pub ratio_min: Option<f64>,
    /// Highest per-round ratio.
    pub ratio_max: Option<f64>,
    /// CPU nanoseconds added per poll (median CPU time over plain's, divided by the polls).
    pub ns_per_poll: Option<f64>,
    /// Median CPU time of the whole process, seconds.
    pub cpu_s: Option<f64>,
    /// A 95% confidence interval of the median per-round ratio (distribution-free, from the
    /// order statistics), and its exact coverage (below 95% with fewer than 6 rounds).
    pub ratio_ci: Option<(f64, f64)>,
    /// The coverage of `ratio_ci` and `cpu_ratio_ci`.
    pub ci_coverage: Option<f64>,
    /// Median per-round CPU ratio: plain tokio's CPU time over this configuration's, for the
    /// same work (1: no extra CPU).
    pub cpu_ratio: Option<f64>,
    /// Its confidence interval, as `ratio_ci`.
    pub cpu_ratio_ci: Option<(f64, f64)>,
    /// Throughput and CPU seconds of each round (`None`: no run that round), for comparisons
    /// paired by round.
    pub round_tput: Vec<Option<f64>>,
    /// CPU seconds of each round, as `round_tput`.
    pub round_cpu: Vec<Option<f64>>,
    /// Median peak RSS, MiB.
    pub peak_rss_mib: Option<f64>,
    /// Median peak RSS over plain tokio's, MiB.
    pub extra_rss_mib: Option<f64>,
    /// Median bytes the instrumentation wrote.
    pub output_bytes: Option<u64>,
    /// Median CPU seconds of asyncprof's own threads (see [`Sample::own_threads_cpu_s`]).
    pub own_threads_cpu_s: Option<f64>,
    /// Their CPU as a share of plain tokio's CPU, per round: the median.
    pub own_threads_share: Option<f64>,
    /// Its confidence interval, as `ratio_ci`.
    pub own_threads_share_ci: Option<(f64, f64)>,
    /// The per-round shares, for the targets.
    pub own_threads_shares: Vec<f64>,
}

/// One workload's table.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    /// Workload key.
    pub workload: &'static str,
    /// What it does.
    pub about: String,
    /// Its unit.
    pub unit: &'static str,
    /// Polls it makes (counted once with a poll-counting hook).
    pub polls: Option<u64>,
    /// One row per configuration.
    pub rows: Vec<Row>,
}

/// A target, checked against the tables with a stated confidence.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is checked.
    pub what: String,
    /// The measured value (a median of per-round values).
    pub got: Option<f64>,
    /// Its confidence interval.
    pub ci: Option<(f64, f64)>,
    /// That interval's coverage (95%, or less with fewer than 6 rounds).
    pub coverage: Option<f64>,
    /// What the interval says of the bound.
    pub verdict: Verdict,
}

/// A target's verdict at the stated confidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The whole interval is on the good side of the bound.
    Met,
    /// The whole interval is on the bad side.
    Missed,
    /// The interval straddles the bound, or the rounds are too few for the confidence: more
    /// rounds would tell.
    Unresolved,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "missed",
            Verdict::Unresolved => "unresolved",
        }
    }
}

impl Target {
    /// A target on per-round `values` whose median must be at least `need` (`at_least`) or
    /// at most `need`.
    fn check(what: String, values: Vec<f64>, need: f64, at_least: bool) -> Option<Target> {
        let got = median(values.iter().copied())?;
        let (lo, hi, coverage) = median_ci(values, LEVEL)?;
        let (good, bad) = if at_least {
            (lo >= need, hi < need)
        } else {
            (hi <= need, lo > need)
        };
        // Too few rounds for the stated confidence: no verdict either way.
        let sure = coverage >= LEVEL;
        let verdict = match (good && sure, bad && sure) {
            (true, _) => Verdict::Met,
            (_, true) => Verdict::Missed,
            _ => Verdict::Unresolved,
        };
        Some(Target {
            what,
            got: Some(got),
            ci: Some((lo, hi)),
            coverage: Some(coverage),
            verdict,
        })
    }
}

/// Per-round values of `f(a, b)` for the rounds where both rows ran.
fn paired(a: &[Option<f64>], b: &[Option<f64>], f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    a.iter()
        .zip(b)
        .filter_map(|(x, y)| Some(f((*x)?, (*y)?)))
        .collect()
}

#[derive(Debug, Serialize)]
struct Report {
    command: String,
    size: Size,
    rounds: usize,
    cpus: usize,
    kernel: String,
    tables: Vec<Table>,
    targets: Vec<Target>,
}

fn tput(s: &Sample) -> f64 {
    s.items as f64 / s.wall_s.max(1e-9)
}

fn table(workload: Workload, p: &Params, polls: Option<u64>, runs: &[(Config, Runs)]) -> Table {
    let plain = &runs[0].1;
    let plain_cpu = median(plain.samples().map(|s| s.cpu_s));
    let plain_rss = median(plain.samples().map(|s| s.peak_rss_kib as f64));
    let rows = runs
        .iter()
        .map(|(config, r)| {
            let t = median(r.samples().map(tput));
            let per_round = range(
                r.by_round
                    .iter()
                    .zip(&plain.by_round)
                    .filter_map(|(c, b)| Some(tput(c.as_ref()?) / tput(b.as_ref()?))),
            );
            let cpu = median(r.samples().map(|s| s.cpu_s));
            let round_tput: Vec<Option<f64>> =
                r.by_round.iter().map(|s| s.as_ref().map(tput)).collect();
            let round_cpu: Vec<Option<f64>> = r
                .by_round
                .iter()
                .map(|s| s.as_ref().map(|s| s.cpu_s))
                .collect();
            let plain_tputs: Vec<Option<f64>> = plain
                .by_round
                .iter()
                .map(|s| s.as_ref().map(tput))
                .collect();
            let plain_cpus: Vec<Option<f64>> = plain
                .by_round
                .iter()
                .map(|s| s.as_ref().map(|s| s.cpu_s))
                .collect();
            let ratios = paired(&round_tput, &plain_tputs, |c, b| c / b);
            let cpu_ratios = paired(&plain_cpus, &round_cpu, |b, c| b / c.max(1e-9));
            let ratio_ci = median_ci(ratios.iter().copied(), LEVEL);
            let cpu_ci = median_ci(cpu_ratios.iter().copied(), LEVEL);
            let rss = median(r.samples().map(|s| s.peak_rss_kib as f64));
            let out = median(r.samples().filter_map(|s| s.output_bytes.map(|b| b as f64)));
            let round_own: Vec<Option<f64>> = r
                .by_round
                .iter()
                .map(|s| s.as_ref().and_then(|s| s.own_threads_cpu_s))
                .collect();
            let own_shares = paired(&round_own, &plain_cpus, |o, b| o / b.max(1e-9));
            let own_ci = median_ci(own_shares.iter().copied(), LEVEL);
            Row {
                config: config.key(),
                label: config.label(),
                runs: r.count(),
                stopped: r.stopped,
                median_s: median(r.samples().map(|s| s.wall_s)),
                throughput: t,
                ratio: median(ratios.iter().copied()),
                ratio_min: per_round.map(|(lo, _)| lo),
                ratio_max: per_round.map(|(_, hi)| hi),
                ns_per_poll: cpu
                    .zip(plain_cpu)
                    .zip(polls)
                    .map(|((c, b), n)| (c - b) * 1e9 / n.max(1) as f64),
                cpu_s: cpu,
                ratio_ci: ratio_ci.map(|(lo, hi, _)| (lo, hi)),
                ci_coverage: ratio_ci.map(|(_, _, c)| c),
                cpu_ratio: median(cpu_ratios),
                cpu_ratio_ci: cpu_ci.map(|(lo, hi, _)| (lo, hi)),
                round_tput,
                round_cpu,
                peak_rss_mib: rss.map(|k| k / 1024.0),
                extra_rss_mib: rss.zip(plain_rss).map(|(c, b)| (c - b) / 1024.0),
                output_bytes: out.map(|b| b as u64),
                own_threads_cpu_s: median(r.samples().filter_map(|s| s.own_threads_cpu_s)),
                own_threads_share: median(own_shares.iter().copied()),
                own_threads_share_ci: own_ci.map(|(lo, hi, _)| (lo, hi)),
                own_threads_shares: own_shares,
            }
        })
        .collect();
    Table {
        workload: workload.key(),
        about: workload.describe(p),
        unit: workload.unit(),
        polls,
        rows,
    }
}

/// Configuration `config`'s row of `t`.
fn row<'t>(t: &'t Table, config: &str) -> Option<&'t Row> {
    t.rows.iter().find(|r| r.config == config)
}

fn targets(tables: &[Table]) -> Vec<Target> {
    let mut out = Vec::new();
    for t in tables {
        let (Some(plain), Some(us)) = (row(t, "plain"), row(t, "asyncprof-hooks")) else {
            continue;
        };
        let ratios = |r: &Row| paired(&r.round_tput, &plain.round_tput, |c, b| c / b);
        let need = match t.workload {
            "w1-yield" => Some(0.87),
            "w2-spawn" | "w4-sleep" => Some(0.95),
            _ => None,
        };
        if let Some(need) = need {
            out.extend(Target::check(
                format!("hooks tier >= {need}x on {}", t.workload),
                ratios(us),
                need,
                true,
            ));
        }
        if t.workload == "w1-yield" {
            if let Some(layer) = row(t, "asyncprof-layer") {
                out.extend(Target::check(
                    "layer tier >= 0.5x on w1-yield".into(),
                    ratios(layer),
                    0.5,
                    true,
                ));
            }
        }
        for peer in ["console-subscriber", "tokio-metrics", "dial9"] {
            let Some(theirs) = row(t, peer) else { continue };
            if theirs.runs == 0 {
                // Every run of the peer was stopped at the cap.
                out.push(Target {
                    what: format!(
                        "hooks tier ahead of {peer} on {} (peer stopped)",
                        t.workload
                    ),
                    got: None,
                    ci: None,
                    coverage: None,
                    verdict: if theirs.stopped {
                        Verdict::Met
                    } else {
                        Verdict::Unresolved
                    },
                });
                continue;
            }
            let rate_bound = us
                .ratio
                .zip(theirs.ratio)
                .is_some_and(|(a, b)| (a - b).abs() < 0.01);
            out.extend(if rate_bound {
                // Both at the offered load: the one that spent less CPU on it is ahead.
                Target::check(
                    format!(
                        "hooks tier ahead of {peer} on {} (same throughput: its CPU over ours)",
                        t.workload
                    ),
                    paired(&theirs.round_cpu, &us.round_cpu, |b, a| b / a.max(1e-9)),
                    1.0,
                    true,
                )
            } else {
                Target::check(
                    format!(
                        "hooks tier ahead of {peer} on {} (throughput ratio)",
                        t.workload
                    ),
                    paired(&us.round_tput, &theirs.round_tput, |a, b| a / b),
                    1.0,
                    true,
                )
            });
        }
        if t.workload == "w5-pipeline" && !us.own_threads_shares.is_empty() {
            // Part of the extra CPU, measured apart from the machine's spread: what asyncprof's
            // own threads spent, by their CPU clocks, against plain tokio's CPU of the round.
            out.extend(Target::check(
                "hooks tier's own threads' CPU on w5 <= 2% of plain's".into(),
                us.own_threads_shares.clone(),
                0.02,
                false,
            ));
        }
        if t.workload == "w5-pipeline" {
            if let Some(tm) = row(t, "tokio-metrics") {
                // Per round: (ours − tokio-metrics') CPU as a share of plain's.
                let extra: Vec<f64> = us
                    .round_cpu
                    .iter()
                    .zip(&tm.round_cpu)
                    .zip(&plain.round_cpu)
                    .filter_map(|((u, m), p)| Some(((*u)? - (*m)?) / (*p)?.max(1e-9)))
                    .collect();
                out.extend(Target::check(
                    "hooks tier CPU on w5 <= tokio-metrics' + 2% of plain's".into(),
                    extra,
                    0.02,
                    false,
                ));
            }
        }
        if t.workload == "w2-spawn" {
            if let Some(extra) = us.extra_rss_mib {
                out.push(Target {
                    what: "hooks tier extra peak RSS < 32 MiB on w2-spawn".into(),
                    got: Some(extra),
                    ci: None,
                    coverage: None,
                    verdict: if extra < 32.0 {
                        Verdict::Met
                    } else {
                        Verdict::Missed
                    },
                });
            }
        }
    }
    out
}

fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let workloads = if args.workloads.is_empty() {
        Workload::ALL.to_vec()
    } else {
        args.workloads.clone()
    };
    let mut configs = vec![Config::Plain];
    if args.configs.is_empty() {
        configs.extend(Config::MEASURED.into_iter().skip(1));
    } else {
        configs.extend(args.configs.iter().filter(|c| **c != Config::Plain));
    }
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    let bins = Bins {
        lean: std::env::current_exe()?,
        traced: if configs.iter().any(|c| c.traced()) {
            Some(traced_binary()?)
        } else {
            None
        },
    };
    if let Some(parent) = args.json.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // Fail on an unwritable path now, not after the runs.
    std::fs::write(&args.json, b"")
        .with_context(|| format!("cannot write {}", args.json.display()))?;
    let params = Params::of(args.size);
    let cap = Duration::from_secs_f64(args.cap_seconds);
    let mut tables = Vec::new();
    for &w in &workloads {
        eprintln!("{}: {}", w.key(), w.describe(&params));
        let polls = match run_worker(&bins.lean, Config::CountPolls, w, args.size, cap)? {
            Run::Done(s) => s.polls,
            Run::Stopped => None,
        };
        let mut runs: Vec<(Config, Runs)> = configs.iter().map(|c| (*c, Runs::default())).collect();
        let max_rounds = args.max_rounds.unwrap_or(args.rounds).max(args.rounds);
        let mut round = 0;
        while round < max_rounds {
            if round >= args.rounds {
                let open: Vec<Target> = targets(&[table(w, &params, polls, &runs)])
                    .into_iter()
                    .filter(|t| t.verdict == Verdict::Unresolved)
                    .collect();
                if open.is_empty() {
                    break;
                }
                eprintln!(
                    "  round {} for {} unresolved target(s), e.g. {}",
                    round + 1,
                    open.len(),
                    open[0].what
                );
            }
            let n = runs.len();
            for k in 0..n {
                let i = (k + round) % n;
                let (config, r) = &mut runs[i];
                let slow = r.samples().any(|s| s.wall_s > args.slow_seconds);
                if r.stopped || (slow && r.count() >= 3) {
                    r.by_round.push(None);
                    continue;
                }
                let started = Instant::now();
                let run = run_worker(bins.of(*config), *config, w, args.size, cap)?;
                let took = started.elapsed().as_secs_f64();
                match run {
                    Run::Done(s) => {
                        eprintln!(
                            "  round {}/{} {:<30} {:>8.3} s  {:>12.0} {}/s",
                            round + 1,
                            max_rounds,
                            config.label(),
                            s.wall_s,
                            tput(&s),
                            w.unit()
                        );
                        r.by_round.push(Some(s));
                    }
                    Run::Stopped => {
                        eprintln!(
                            "  round {}/{} {:<30} stopped after {took:.0} s",
                            round + 1,
                            max_rounds,
                            config.label()
                        );
                        r.stopped = true;
                        r.by_round.push(None);
                    }
                }
            }
            round += 1;
        }
        let t = table(w, &params, polls, &runs);
        print_table(&t);
        tables.push(t);
    }
    let targets = targets(&tables);
    print_summary(&tables, &targets, &args);
    let report = Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        size: args.size,
        rounds: args.rounds,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: asyncprof_sampler::procfs::kernel_release().unwrap_or_default(),
        tables,
        targets,
    };
    std::fs::write(&args.json, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", args.json.display()))?;
    println!("table written to {}", args.json.display());
    Ok(ExitCode::SUCCESS)
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.prec$}"))
}

fn print_table(t: &Table) {
    println!();
    println!(
        "{}: {}{}",
        t.workload,
        t.about,
        t.polls.map_or(String::new(), |p| format!(", {p} polls"))
    );
    println!(
        "  {:<30} {:>4} {:>9} {:>13} {:>7} {:>13} {:>13} {:>7} {:>13} {:>9} {:>8} {:>8} {:>10}",
        "configuration",
        "runs",
        "median s",
        format!("{}/s", t.unit),
        "ratio",
        "min-max",
        "95% CI",
        "cpu",
        "cpu 95% CI",
        "ns/poll+",
        "RSS MiB",
        "+RSS",
        "output"
    );
    for r in &t.rows {
        let ratio = match (r.ratio, r.stopped) {
            (Some(x), _) => format!("{x:.3}x"),
            (None, true) => "stopped".into(),
            (None, false) => "-".into(),
        };
        let ci = |c: Option<(f64, f64)>| c.map_or("-".into(), |(a, b)| format!("{a:.3}-{b:.3}"));
        println!(
            "  {:<30} {:>4} {:>9} {:>13} {:>7} {:>13} {:>13} {:>7} {:>13} {:>9} {:>8} {:>8} {:>10}",
            r.label,
            r.runs,
            opt(r.median_s, 3),
            opt(r.throughput, 0),
            ratio,
            match (r.ratio_min, r.ratio_max) {
                (Some(a), Some(b)) => format!("{a:.3}-{b:.3}"),
                _ => "-".into(),
            },
            ci(r.ratio_ci),
            r.cpu_ratio.map_or("-".into(), |x| format!("{x:.3}x")),
            ci(r.cpu_ratio_ci),
            opt(r.ns_per_poll, 1),
            opt(r.peak_rss_mib, 1),
            opt(r.extra_rss_mib, 1),
            r.output_bytes.map_or("-".into(), human_bytes),
        );
    }
    for r in &t.rows {
        if let (Some(cpu), Some(share)) = (r.own_threads_cpu_s, r.own_threads_share) {
            let ci = r.own_threads_share_ci.map_or(String::new(), |(a, b)| {
                format!(" ({:.2}%-{:.2}%)", a * 100.0, b * 100.0)
            });
            println!(
                "  {}: its own threads {:.2} ms of CPU, {:.2}%{ci} of plain tokio's",
                r.label,
                cpu * 1e3,
                share * 100.0
            );
        }
    }
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.0} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// The ratios of every configuration on every workload, as a Markdown table (the README's).
fn print_summary(tables: &[Table], targets: &[Target], args: &BenchArgs) {
    println!();
    println!(
        "Throughput relative to plain tokio (median of per-round ratios over {}{} rounds, 95% \
         confidence interval of that median in brackets; 2 workers; `{}`):",
        args.rounds,
        match args.max_rounds {
            Some(m) if m > args.rounds => format!(" to {m}"),
            _ => String::new(),
        },
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!();
    let mut header = "| configuration |".to_string();
    let mut rule = "| --- |".to_string();
    for t in tables {
        header.push_str(&format!(" {} |", t.workload));
        rule.push_str(" --- |");
    }
    println!("{header}");
    println!("{rule}");
    let mut by_config: Vec<(&str, HashMap<&str, &Row>)> = Vec::new();
    for t in tables {
        for r in &t.rows {
            match by_config.iter_mut().find(|(l, _)| *l == r.label) {
                Some((_, m)) => {
                    m.insert(t.workload, r);
                }
                None => by_config.push((r.label, HashMap::from([(t.workload, r)]))),
            }
        }
    }
    for (label, rows) in &by_config {
        let mut line = format!("| {label} |");
        for t in tables {
            let cell = match rows.get(t.workload) {
                Some(r) if r.config == "plain" => r
                    .throughput
                    .map_or("-".into(), |x| format!("{} {}/s", si(x), t.unit)),
                Some(r) => match (r.ratio, r.ratio_ci) {
                    (Some(x), Some((a, b))) if r.runs > 1 => {
                        format!("{x:.2}× ({a:.2}–{b:.2})")
                    }
                    (Some(x), ..) => format!("{x:.3}×"),
                    (None, ..) if r.stopped => {
                        format!("stopped at {:.0} s", args.cap_seconds)
                    }
                    _ => "-".into(),
                },
                None => "-".into(),
            };
            line.push_str(&format!(" {cell} |"));
        }
        println!("{line}");
    }
    println!();
    for t in tables {
        let polls = t.polls.map_or(String::new(), |p| format!(", {p} polls"));
        let rss: Vec<String> = t
            .rows
            .iter()
            .filter_map(|r| Some(format!("{} {:.0}", r.label, r.peak_rss_mib?)))
            .collect();
        println!(
            "{}: {}{polls}; peak RSS MiB: {}",
            t.workload,
            t.about,
            rss.join(", ")
        );
    }
    println!();
    for t in targets {
        let ci = match (t.ci, t.coverage) {
            (Some((a, b)), Some(c)) => format!("[{a:.3}, {b:.3}] at {:.1}%", c * 100.0),
            _ => String::new(),
        };
        println!(
            "target {:<72} {:>8} {:<26} {}",
            t.what,
            opt(t.got, 3),
            ci,
            t.verdict.word()
        );
    }
}

/// `12.3 M`-style numbers for the summary.
fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}
