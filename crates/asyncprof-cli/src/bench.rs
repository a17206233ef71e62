//! `asyncprof bench`: run the bundled pipelines, each variant in a process of its own,
//! diagnose every run, score the findings against the pipelines' markers, and gate.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use asyncprof_pipelines::{Load, Outcome, Pipeline, Tier, Variant};
use asyncprof_report::{Finding, Marker, Score, Thresholds};
use serde::Serialize;

use crate::report::{read_run, writable_dir, write_file, write_reports};
use crate::{term, BenchArgs, LoadArg, TierArg, VariantArg};

/// Time a stopped child gets past its budget before it is killed.
const KILL_MARGIN: Duration = Duration::from_secs(3);

/// How one variant's process ended.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Status {
    /// It finished its work.
    Finished,
    /// It outlived its budget and stopped itself (its run file was flushed first).
    StoppedAtBudget,
    /// It outlived its budget and did not stop: killed.
    Killed,
    /// It failed (exit status, last lines of its standard error).
    Failed { code: Option<i32>, stderr: String },
}

/// One variant's results.
#[derive(Debug, Serialize)]
struct RunResult {
    pipeline: String,
    variant: String,
    /// The capture tier it recorded in: `hooks` or `stable`.
    tier: &'static str,
    status: Status,
    elapsed_s: f64,
    run_file: PathBuf,
    outcome: Option<Outcome>,
    stalls: u64,
    findings: Vec<Finding>,
    expected: Vec<Marker>,
    score: Score,
    /// Why the run file could not be read, if it could not.
    run_file_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct PipelineScore {
    pipeline: String,
    tier: &'static str,
    recall: f64,
    precision: f64,
}

/// One capture tier's score over every pipeline it ran.
#[derive(Debug, Serialize)]
struct TierScore {
    tier: &'static str,
    recall: f64,
    precision: f64,
    score: Score,
}

/// Everything `--json` writes.
#[derive(Debug, Serialize)]
struct Results {
    load: String,
    threshold_ms: u64,
    line_window: u32,
    elapsed_s: f64,
    recall: f64,
    precision: f64,
    score: Score,
    tiers: Vec<TierScore>,
    pipelines: Vec<PipelineScore>,
    runs: Vec<RunResult>,
}

fn load_of(l: LoadArg) -> Load {
    match l {
        LoadArg::Quick => Load::Quick,
        LoadArg::Default => Load::Default,
        LoadArg::Heavy => Load::Heavy,
    }
}

/// What `bench` starts in each child process.
pub(crate) fn child(name: &str, variant: &str, load: &str, tier: &str) -> Result<ExitCode> {
    let variant = Variant::parse(variant).context("the variant is bad or fixed")?;
    let load = Load::parse(load).context("the load is quick, default or heavy")?;
    let tier = Tier::parse(tier).context("the tier is hooks or stable")?;
    let budget = std::env::var("ASYNCPROF_BENCH_BUDGET_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis);
    let outcome = asyncprof_pipelines::run_profiled(name, variant, load, budget, tier)?;
    println!("{}", serde_json::to_string(&outcome)?);
    Ok(ExitCode::SUCCESS)
}

fn list() {
    for p in asyncprof_pipelines::pipelines() {
        let kinds: Vec<String> = asyncprof_pipelines::expected(p)
            .into_iter()
            .map(|e| e.kind)
            .collect();
        println!(
            "{:<28} {}\n{:<28} defect: {} (expect {})",
            p.name,
            p.about,
            "",
            p.defect,
            kinds.join(", ")
        );
    }
}

pub(crate) fn bench(args: &BenchArgs, quiet: bool) -> Result<ExitCode> {
    if args.list {
        list();
        return Ok(ExitCode::SUCCESS);
    }
    let all = asyncprof_pipelines::pipelines();
    let mut chosen: Vec<&'static Pipeline> = Vec::new();
    for name in &args.pipelines {
        match asyncprof_pipelines::find(name) {
            Some(p) => chosen.push(p),
            None => bail!(
                "unknown pipeline {name:?}; known pipelines: {}",
                all.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
            ),
        }
    }
    if chosen.is_empty() {
        chosen = all.iter().collect();
    }
    let kinds = asyncprof_report::diagnoses::KINDS;
    if let Some(k) = args.fail_on.iter().find(|k| !kinds.contains(&k.as_str())) {
        bail!(
            "--fail-on {k:?}: unknown finding kind; kinds: {}",
            kinds.join(", ")
        );
    }
    let thresholds = crate::thresholds(&args.diagnose)?;
    writable_dir(&args.out)?;
    let load = load_of(args.load);
    let variants: &[Variant] = match args.variant {
        VariantArg::Bad => &[Variant::Bad],
        VariantArg::Fixed => &[Variant::Fixed],
        VariantArg::Both => &[Variant::Bad, Variant::Fixed],
    };
    let tiers: &[Tier] = match args.tier {
        TierArg::Hooks => &[Tier::Hooks],
        TierArg::Stable => &[Tier::Stable],
        TierArg::Both => &[Tier::Hooks, Tier::Stable],
    };
    let json_stdout = args.json.as_deref() == Some(Path::new("-"));
    // Human output goes to standard error when standard output carries the JSON.
    let say = |s: &str| {
        if quiet {
            return;
        }
        if json_stdout {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    };

    let started = Instant::now();
    let mut runs = Vec::new();
    for p in &chosen {
        for &tier in tiers {
            for &variant in variants {
                let r = run_variant(p, variant, tier, load, args, &thresholds, quiet)?;
                runs.push(r);
            }
        }
    }
    let elapsed = started.elapsed();

    // Scores.
    let mut total = Score::default();
    let mut per_pipeline = Vec::new();
    let mut per_tier = Vec::new();
    for &tier in tiers {
        let mut t = Score::default();
        for p in &chosen {
            let mut s = Score::default();
            for r in runs
                .iter()
                .filter(|r| r.pipeline == p.name && r.tier == tier.name())
            {
                s.add(&r.score);
            }
            per_pipeline.push(PipelineScore {
                pipeline: p.name.to_string(),
                tier: tier.name(),
                recall: s.recall(),
                precision: s.precision(),
            });
            t.add(&s);
        }
        total.add(&t);
        per_tier.push(TierScore {
            tier: tier.name(),
            recall: t.recall(),
            precision: t.precision(),
            score: t,
        });
    }

    say(&table(&runs, tiers.len() > 1));
    let bad_findings: Vec<&RunResult> = runs
        .iter()
        .filter(|r| r.variant == "bad" && !r.findings.is_empty())
        .collect();
    if !bad_findings.is_empty() {
        say("\nfindings of the bad variants:");
        for r in bad_findings {
            let pipeline = if tiers.len() > 1 {
                format!("{} ({})", r.pipeline, r.tier)
            } else {
                r.pipeline.clone()
            };
            for f in &r.findings {
                // A finding that names no line says why, as the report does.
                let at = match f.no_line_reason() {
                    Some(why) => why.to_string(),
                    None => format!(
                        "{}:{} in {}",
                        short_path(&f.location.file),
                        f.location.line,
                        f.location.function
                    ),
                };
                say(&format!(
                    "  {:<28} {:<18} {}\n  {:<28} {}",
                    pipeline, f.kind, at, "", f.recommendation
                ));
            }
        }
    }
    for r in &runs {
        for m in &r.score.missed {
            say(&format!(
                "missed: {} {} ({} tier) expected {} at {}:{}",
                r.pipeline, r.variant, r.tier, m.kind, m.file, m.line
            ));
        }
        for u in &r.score.unexpected {
            say(&format!(
                "unexpected: {} {} ({} tier) {u}",
                r.pipeline, r.variant, r.tier
            ));
        }
        for m in &r.score.unplaced {
            say(&format!(
                "no line named (not scored): {} {} ({} tier) {m}",
                r.pipeline, r.variant, r.tier
            ));
        }
    }
    let scored = |s: &Score| {
        format!(
            "recall {:.0}% ({}/{} defects found), precision {:.0}% ({}/{} findings expected)",
            s.recall() * 100.0,
            s.matched_markers,
            s.expected,
            s.precision() * 100.0,
            s.matched_findings,
            s.found,
        )
    };
    let by_tier = if per_tier.len() > 1 {
        per_tier
            .iter()
            .map(|t| format!("{} tier: {}", t.tier, scored(&t.score)))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    } else {
        String::new()
    };
    let verdict_line = format!(
        "{by_tier}{}{}; {} runs in {:.1} s; reports in {}",
        if per_tier.len() > 1 {
            "both tiers: "
        } else {
            ""
        },
        scored(&total),
        runs.len(),
        elapsed.as_secs_f64(),
        args.out.display()
    );
    if json_stdout {
        eprintln!("\n{verdict_line}");
    } else {
        println!("\n{verdict_line}");
    }

    let rows: Vec<asyncprof_report::IndexRow> = runs
        .iter()
        .map(|r| {
            let variant = match r.tier {
                "hooks" => r.variant.clone(),
                tier => format!("{} ({tier} tier)", r.variant),
            };
            let mut row = asyncprof_report::IndexRow::new(r.pipeline.clone(), variant);
            row.throughput = r.outcome.as_ref().map(|o| o.throughput);
            row.p99_ms = r.outcome.as_ref().map(|o| o.p99_ms);
            row.stalls = r.stalls;
            row.findings = r.findings.iter().map(|f| f.kind.to_string()).collect();
            row.expected = r.expected.len();
            row.verdict = verdict(r).to_string();
            row.report = format!("{}.html", run_name(&r.pipeline, &r.variant, r.tier));
            row
        })
        .collect();
    write_file(
        &args.out.join("index.html"),
        asyncprof_report::render_index("asyncprof bench", &verdict_line, &rows).as_bytes(),
    )?;
    let results = Results {
        load: load.name().to_string(),
        threshold_ms: args.threshold,
        line_window: asyncprof_report::LINE_WINDOW,
        elapsed_s: elapsed.as_secs_f64(),
        recall: total.recall(),
        precision: total.precision(),
        score: total.clone(),
        tiers: per_tier,
        pipelines: per_pipeline,
        runs,
    };
    let json = serde_json::to_vec_pretty(&results)?;
    write_file(&args.out.join("results.json"), &json)?;
    match args.json.as_deref() {
        Some(p) if p == Path::new("-") => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(&json)
                .context("cannot write to standard output")?;
            out.write_all(b"\n")
                .context("cannot write to standard output")?;
        }
        Some(p) => write_file(p, &json)?,
        None => {}
    }

    let mut failed = false;
    if args.check && !total.perfect() {
        term::error("bench --check: recall and precision must both be 100%");
        failed = true;
    }
    for kind in &args.fail_on {
        let hits: usize = results
            .runs
            .iter()
            .map(|r| r.findings.iter().filter(|f| f.kind == kind).count())
            .sum();
        if hits > 0 {
            term::error(&format!("--fail-on {kind}: {hits} finding(s) of that kind"));
            failed = true;
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn short_path(p: &str) -> &str {
    p.find("examples/").map_or(p, |i| &p[i..])
}

/// Run one variant in a child process and diagnose its run file.
fn run_variant(
    p: &Pipeline,
    variant: Variant,
    tier: Tier,
    load: Load,
    args: &BenchArgs,
    thresholds: &Thresholds,
    quiet: bool,
) -> Result<RunResult> {
    let run_file = args.out.join(format!(
        "{}.run",
        run_name(p.name, variant.name(), tier.name())
    ));
    let _ = std::fs::remove_file(&run_file);
    let budget = args
        .duration
        .unwrap_or_else(|| asyncprof_pipelines::budget(p, load));
    let exe = std::env::current_exe().context("cannot find the asyncprof executable")?;
    let mut child = Command::new(exe)
        .args([
            "__pipeline",
            p.name,
            variant.name(),
            load.name(),
            tier.name(),
        ])
        .env("ASYNCPROF_OUT", &run_file)
        .env("ASYNCPROF_STALL_THRESHOLD_MS", args.threshold.to_string())
        .env("ASYNCPROF_CPU_HZ", "99")
        .env("ASYNCPROF_BENCH_BUDGET_MS", budget.as_millis().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start the {} pipeline", p.name))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(120));
        b
    };
    let started = Instant::now();
    let item_stage = format!("{} item latency", p.name);
    let mut last_look = Instant::now() - Duration::from_secs(1);
    let mut killed = false;
    let exit = loop {
        if let Some(status) = child.try_wait().context("cannot wait for a pipeline")? {
            break status;
        }
        let elapsed = started.elapsed();
        if elapsed > budget + KILL_MARGIN {
            let _ = child.kill();
            killed = true;
        }
        if last_look.elapsed() >= Duration::from_millis(500) {
            last_look = Instant::now();
            // Items processed so far, from the run file the child is writing.
            let items = asyncprof_format::read_path(&run_file)
                .ok()
                .and_then(|r| r.snapshot)
                .and_then(|s| s.stages.into_iter().find(|st| st.name == item_stage))
                .map_or(0, |st| st.count);
            bar.set_message(format!(
                "{:<28} {:<5} {:<6} {:5.1} s  {items} items",
                p.name,
                variant.name(),
                tier.name(),
                elapsed.as_secs_f64()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let status = match (killed, exit.code()) {
        (true, _) => Status::Killed,
        (false, Some(0)) => Status::Finished,
        (false, Some(124)) => Status::StoppedAtBudget,
        (false, code) => Status::Failed {
            code,
            stderr: stderr
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n"),
        },
    };
    let outcome: Option<Outcome> = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok());
    let expected: Vec<Marker> = match variant {
        Variant::Bad => asyncprof_pipelines::expected(p)
            .into_iter()
            // The stable tier sees no spawn locations: a kind placed by them is reported
            // without a line there, and not expected at one.
            .filter(|e| {
                tier == Tier::Hooks
                    || !asyncprof_report::diagnoses::placed_by_spawn_location(&e.kind)
            })
            .map(|e| Marker::new(e.kind, e.file, e.line))
            .collect(),
        Variant::Fixed => Vec::new(),
    };
    // One read and one diagnosis per run: the reports and the score share them.
    let (findings, stalls, run_file_error) = match read_run(&run_file) {
        Ok(run) => {
            let summary = crate::report::summarize(&run, thresholds);
            write_reports(&run_file, &run, &summary)?;
            (summary.findings, run.stalls.len() as u64, None)
        }
        Err(e) => (Vec::new(), 0, Some(format!("{e:#}"))),
    };
    if let Status::Failed { code, stderr } = &status {
        term::warn(&format!(
            "{} {} failed (exit {}): {}",
            p.name,
            variant.name(),
            code.map_or("by signal".into(), |c| c.to_string()),
            stderr
        ));
    }
    if let Some(e) = &run_file_error {
        term::warn(e);
    }
    let score = Score::of(&findings, &expected);
    if !quiet && !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!(
            "{} {} ({} tier): {:.1} s, {} finding{}",
            p.name,
            variant.name(),
            tier.name(),
            elapsed.as_secs_f64(),
            findings.len(),
            if findings.len() == 1 { "" } else { "s" }
        );
    }
    Ok(RunResult {
        pipeline: p.name.to_string(),
        variant: variant.name().to_string(),
        tier: tier.name(),
        status,
        elapsed_s: elapsed.as_secs_f64(),
        run_file,
        outcome,
        stalls,
        findings,
        expected,
        score,
        run_file_error,
    })
}

/// A run's file name without its extension: `scraper-bad`, or `scraper-bad-stable` in the
/// stable tier.
fn run_name(pipeline: &str, variant: &str, tier: &str) -> String {
    match tier {
        "hooks" => format!("{pipeline}-{variant}"),
        _ => format!("{pipeline}-{variant}-{tier}"),
    }
}

/// One word on how a run scored.
fn verdict(r: &RunResult) -> &'static str {
    match (
        r.score.perfect(),
        r.variant == "fixed",
        r.score.missed.is_empty(),
    ) {
        (true, true, _) => "clean",
        (true, false, _) => "found",
        (false, true, _) => "false positive",
        (false, false, true) => "extra finding",
        (false, false, false) => "missed",
    }
}

fn table(runs: &[RunResult], tiers: bool) -> String {
    let variant = |r: &RunResult| {
        if tiers {
            format!("{} {}", r.variant, r.tier)
        } else {
            r.variant.clone()
        }
    };
    let w = if tiers { 12 } else { 6 };
    let mut out = format!(
        "{:<28} {:<w$} {:>8} {:>10} {:>11} {:>7} {:>9} {:>9}  {}\n",
        "pipeline",
        if tiers { "variant tier" } else { "variant" },
        "time",
        "items/s",
        "p99 latency",
        "stalls",
        "findings",
        "expected",
        "verdict"
    );
    for r in runs {
        let (thr, p99) = match &r.outcome {
            Some(o) => (
                format!("{:.0}", o.throughput),
                format!("{:.1} ms", o.p99_ms),
            ),
            None => ("-".into(), "-".into()),
        };
        let time = match r.status {
            Status::StoppedAtBudget | Status::Killed => format!("{:.1} s*", r.elapsed_s),
            _ => format!("{:.1} s", r.elapsed_s),
        };
        let v = verdict(r);
        let verdict = term::paint(v, if r.score.perfect() { "32" } else { "31" });
        let kinds: Vec<&str> = r.findings.iter().map(|f| f.kind).collect();
        out.push_str(&format!(
            "{:<28} {:<w$} {:>8} {:>10} {:>11} {:>7} {:>9} {:>9}  {}{}\n",
            r.pipeline,
            variant(r),
            time,
            thr,
            p99,
            r.stalls,
            r.findings.len(),
            r.expected.len(),
            verdict,
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" ({})", kinds.join(", "))
            }
        ));
    }
    out.push_str("* stopped at its time budget (the run file holds what happened until then)");
    out
}
