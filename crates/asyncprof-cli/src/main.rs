//! `asyncprof`: run pipelines under load, profile a service, read run files.
//!
//! Exit codes: 0 success; 1 a gate failed (`bench --check`, `--fail-on`,
//! `diff --fail-on-regression`) or the program that `run` ran failed; 2 an error (bad flags,
//! unreadable or damaged run file, unwritable output).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};

mod bench;
mod diff;
mod report;
mod run;
mod term;
mod top;

/// Find what makes a tokio program slow, and the line to change.
///
/// Exit codes: 0 success; 1 a gate failed (bench --check or --fail-on, diff
/// --fail-on-regression) or the program run by `run` failed; 2 an error (bad flags, unreadable
/// run file, unwritable output).
#[derive(Debug, Parser)]
#[command(name = "asyncprof", version, about, long_about)]
struct Cli {
    /// Print only errors and the final verdict.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the bundled pipelines under load, diagnose them and score the findings.
    ///
    /// Each pipeline variant runs in a process of its own, recording to OUT/NAME-VARIANT.run;
    /// one that outlives its time budget is stopped and reported from its run file.
    Bench(BenchArgs),
    /// Run your own program (instrumented with asyncprof), optionally under HTTP load, and
    /// report on it when it exits.
    Run(RunArgs),
    /// Summarize a run file, or merge the runs of one service's instances into one report.
    ///
    /// With several run files (one per instance of a service), each run is diagnosed on its
    /// own, then findings of the same kind at the same line are one finding, ranked across
    /// the instances (severity, then stall time, then instances) and saying on how many it
    /// appeared ("3 of 3 instances"); its evidence is summed (stalls, stall time) or the worst
    /// (longest stall, severity). Runs of different programs are merged with a warning.
    Report(ReportArgs),
    /// Compare two runs: new and vanished findings, stall time, and each spawn location's p99
    /// poll time and scheduling delay, BASE → NEW.
    ///
    /// A finding is the same in both runs when its kind, file and line are. With
    /// --fail-on-regression, exit 1 when NEW has a finding BASE does not (the gate). Numbers
    /// gate only when asked, and only when they grow both by a factor and by a floor:
    /// --stall-factor for the stall time (preempted stalls left out), --p99-factor for a spawn
    /// location's p99 poll time or scheduling delay (with at least 100 values in both runs).
    /// Neither is on by default: runs of the same code on a loaded machine differ by more than
    /// a factor of 2 (measured: a p99 scheduling delay of 5.0 and 13.2 ms in two runs of one
    /// pipeline), and a healthy run must pass.
    Diff(DiffArgs),
    /// Watch a run file while the service writes it: stalls with their lines as they happen,
    /// spawn locations, queues, workers and the loss counters, live (or step through a
    /// finished run).
    ///
    /// The service does not know a viewer is there: `top` only reads the run file it already
    /// writes (ASYNCPROF_OUT). --pid or --name find the file of a running process. On a pipe
    /// (or with --plain) it prints one line per stall instead, and exits when the run ends or
    /// its process is gone. Keys: ? help, q quit, 1-4 views, s sort, / filter, Enter stacks,
    /// space pause, ← → step through time.
    Top(top::TopArgs),
    /// Run one pipeline variant in this process (what `bench` starts for each run).
    #[command(name = "__pipeline", hide = true)]
    Pipeline {
        name: String,
        variant: String,
        load: String,
        #[arg(default_value = "hooks")]
        tier: String,
    },
}

/// Which variants of each pipeline to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum VariantArg {
    Bad,
    Fixed,
    Both,
}

/// Which capture tiers `bench` records each variant in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TierArg {
    /// tokio's task hooks: every poll (the default of a build with `--cfg tokio_unstable`).
    Hooks,
    /// Workers' busy and parked periods only, as a service built without `tokio_unstable`.
    Stable,
    /// Each variant in both tiers, scored side by side.
    Both,
}

/// How much work each pipeline does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LoadArg {
    /// Under 3 s a variant: a smoke run.
    Quick,
    /// Under 10 s a variant: the bench's load.
    Default,
    /// Twice the default.
    Heavy,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Pipelines to run (default: all). `asyncprof bench --list` names them.
    pipelines: Vec<String>,
    /// List the pipelines and their defects, and exit.
    #[arg(long)]
    list: bool,
    /// Which variants to run.
    #[arg(long, value_enum, default_value = "both")]
    variant: VariantArg,
    /// How much work each pipeline does.
    #[arg(long, value_enum, default_value = "default")]
    load: LoadArg,
    /// Which capture tiers to record each variant in.
    #[arg(long, value_enum, default_value = "hooks")]
    tier: TierArg,
    /// Stop each variant after this long (default: its own budget), e.g. 5s, 1500ms.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stall threshold in milliseconds (1 to 60000).
    #[arg(long, value_name = "MS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    threshold: u64,
    /// Where run files and reports go.
    #[arg(long, value_name = "DIR", default_value = "reports")]
    out: PathBuf,
    /// Write the machine-readable results to FILE (`-`: standard output, and the human
    /// output goes to standard error).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Exit with 1 when a finding of this kind appears (repeatable), e.g. blocking-call.
    #[arg(long, value_name = "KIND")]
    fail_on: Vec<String>,
    /// Exit with 1 unless every marked defect is found and nothing else is (recall and
    /// precision both 100%).
    #[arg(long)]
    check: bool,
    /// Override a diagnosis threshold, NAME=VALUE (repeatable; also ASYNCPROF_DIAGNOSE).
    #[arg(long, value_name = "NAME=VALUE")]
    diagnose: Vec<String>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Where the run file and the report go.
    #[arg(long, value_name = "DIR", default_value = "reports")]
    out: PathBuf,
    /// Stall threshold in milliseconds (1 to 60000).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    threshold: Option<u64>,
    /// Drive HTTP GET load at this loopback URL while the program runs.
    #[arg(long, value_name = "URL", conflicts_with = "load_cmd")]
    load: Option<String>,
    /// Run this client as the load once the program listens (redis-benchmark, wrk, ghz, a
    /// script), then stop the program and report. One quoted string, split into words as a
    /// shell would (quotes and backslashes), but started directly, never through a shell;
    /// its output and exit status are shown. E.g. --load-cmd 'redis-benchmark -p 6379 -q'.
    #[arg(long, value_name = "CMD", value_parser = parse_command)]
    load_cmd: Option<CommandLine>,
    /// With --load-cmd: the address the program listens on (e.g. 127.0.0.1:6379). By default
    /// the client starts once the program listens on any TCP port.
    #[arg(long, value_name = "ADDR", requires = "load_cmd")]
    listen: Option<std::net::SocketAddr>,
    /// Requests per second of the load (1 to 10000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    rate: u32,
    /// How long to drive the load, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Stop the program after this long (SIGTERM, then SIGKILL 2 s later), e.g. 60s.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Override a diagnosis threshold, NAME=VALUE (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    diagnose: Vec<String>,
    /// CPU profile samples per second (0 to 1000; 0: none). Set 0 for a program that runs
    /// pprof itself: one process has one SIGPROF profiler, and asyncprof's would take it.
    /// Default: ASYNCPROF_CPU_HZ when it is set, else 99.
    #[arg(long, value_name = "HZ", value_parser = clap::value_parser!(u32).range(0..=1000))]
    cpu_hz: Option<u32>,
    /// The program and its arguments (run directly, never through a shell; passed exactly,
    /// in whatever encoding).
    #[arg(last = true, required = true, value_name = "CMD", value_parser = clap::value_parser!(std::ffi::OsString))]
    command: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// The run file a profiled program wrote (ASYNCPROF_OUT); several (one per instance of a
    /// service) to merge them into one report.
    #[arg(required = true, value_name = "RUN_FILE")]
    run_files: Vec<PathBuf>,
    /// Print the machine-readable JSON summary instead of text (several runs: the merged
    /// findings, the runs and the merged spawn locations).
    #[arg(long)]
    json: bool,
    /// Write the report to FILE instead of standard output: HTML when FILE ends in .html.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Also write the stall stacks as folded stacks (for inferno, speedscope, flamegraph.pl);
    /// of several runs, one profile with their weights added.
    #[arg(long, value_name = "FILE")]
    folded: Option<PathBuf>,
    /// Override a diagnosis threshold, NAME=VALUE (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    diagnose: Vec<String>,
    /// Also write the stalls as a pprof profile (gzipped protobuf; values: stalls and stall
    /// time in nanoseconds, each stack weighted by its share of its stall), for `go tool
    /// pprof` and pprof backends; and, when the run has a CPU profile, that one beside it as
    /// FILE with `.cpu` before its extension (e.g. stalls.pb.gz and stalls.cpu.pb.gz). Takes
    /// one run file.
    #[arg(long, value_name = "FILE")]
    pprof: Option<PathBuf>,
    /// Score the findings against the defects marked in a program's source, as `bench` does:
    /// every `// asyncprof-expect: KIND` comment in the .rs files under DIR is a defect that
    /// must be found at its line with that kind, and every finding must match one. Prints the
    /// score; exits 1 unless recall and precision are both 100% (a clean twin: no marker, no
    /// finding). With several runs, scores the merged findings.
    #[arg(long, value_name = "DIR")]
    expect_markers: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct DiffArgs {
    /// The run to compare against (the known-good run).
    base: PathBuf,
    /// The run to check.
    new: PathBuf,
    /// Print the comparison as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Exit with 1 when NEW regressed: a finding BASE does not have, or a number past a gate
    /// set below. A CI gate.
    #[arg(long)]
    fail_on_regression: bool,
    /// Gate on stall time too: it regresses when NEW's is at least X times BASE's and
    /// --stall-floor-ms more (e.g. 3). Off by default.
    #[arg(long, value_name = "X", value_parser = parse_factor)]
    stall_factor: Option<f64>,
    /// With --stall-factor: how much more, in ms, NEW's stall time must be.
    #[arg(long, value_name = "MS", default_value_t = asyncprof_report::DEFAULT_STALL_FLOOR_MS)]
    stall_floor_ms: u64,
    /// Gate on spawn locations' p99 poll time and scheduling delay too: one regresses when
    /// NEW's is at least X times BASE's and --p99-floor-ms more (e.g. 3). Off by default.
    #[arg(long, value_name = "X", value_parser = parse_factor)]
    p99_factor: Option<f64>,
    /// With --p99-factor: how much more, in ms, NEW's p99 must be.
    #[arg(long, value_name = "MS", default_value_t = asyncprof_report::DEFAULT_P99_FLOOR_MS)]
    p99_floor_ms: u64,
    /// Override a diagnosis threshold, NAME=VALUE (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    diagnose: Vec<String>,
}

/// A factor of at least 1 (NEW at least as large as BASE).
fn parse_factor(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 1.0 => Ok(f),
        _ => Err(format!("{s:?} is not a factor of 1 or more (e.g. 2, 1.5)")),
    }
}

/// A command line split into words as a shell would (quotes, backslashes), for running it
/// without a shell: the program, then its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CommandLine(Vec<String>);

fn parse_command(s: &str) -> Result<CommandLine, String> {
    match shlex::split(s) {
        Some(words) if !words.is_empty() => Ok(CommandLine(words)),
        Some(_) => Err("an empty command".into()),
        None => Err(format!(
            "{s:?} has an unclosed quote or a trailing backslash"
        )),
    }
}

/// A duration as humantime reads it (`500ms`, `10s`, `1.5s`, `2m`, `1m 30s`); a bare number is
/// seconds. At most 24 h.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    // A bare number is seconds, as it always was; humantime wants a unit.
    let bare = !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.');
    let parsed = if bare {
        humantime::parse_duration(&format!("{s}s"))
    } else {
        humantime::parse_duration(s)
    };
    let d = parsed.map_err(|e| format!("{s:?} is not a duration (e.g. 500ms, 10s, 2m): {e}"))?;
    if d > Duration::from_secs(86_400) {
        return Err(format!("{s:?} is out of range (0 to 24 h)"));
    }
    Ok(d)
}

/// Diagnosis thresholds from the environment, then the command line.
fn thresholds(overrides: &[String]) -> Result<asyncprof_report::Thresholds> {
    let mut t = asyncprof_report::Thresholds::from_env().map_err(anyhow::Error::msg)?;
    for o in overrides {
        t.set(o)
            .map_err(|e| anyhow::anyhow!("--diagnose {o}: {e}"))?;
    }
    Ok(t)
}

fn main() -> ExitCode {
    // `asyncprof run`'s signal witness, not a command of the CLI (see `run::Witness`).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == run::WITNESS_COMMAND)
    {
        return run::witness(std::env::args_os().nth(2)).unwrap_or(ExitCode::FAILURE);
    }
    let cli = Cli::parse();
    let quiet = cli.quiet;
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            term::error(&format!("{err:#}"));
            let _ = quiet;
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Bench(args) => bench::bench(&args, cli.quiet),
        Command::Run(args) => run::run(&args, cli.quiet),
        Command::Report(args) => report::report(&args),
        Command::Diff(args) => diff::diff(&args),
        Command::Top(args) => top::top(&args),
        Command::Pipeline {
            name,
            variant,
            load,
            tier,
        } => bench::child(&name, &variant, &load, &tier),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units_or_bare_seconds() {
        let ok = [
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("1.5s", Duration::from_millis(1500)),
            ("2m", Duration::from_secs(120)),
            ("1.5m", Duration::from_secs(90)),
            ("1m 30s", Duration::from_secs(90)),
            ("10", Duration::from_secs(10)),
            ("0.25", Duration::from_millis(250)),
            (" 3s ", Duration::from_secs(3)),
            ("0s", Duration::ZERO),
            ("24h", Duration::from_secs(86_400)),
        ];
        for (s, d) in ok {
            assert_eq!(parse_duration(s), Ok(d), "{s:?}");
        }
        for s in ["ten", "", "5 parsecs", "-1s", "25h", "1.2.3"] {
            assert!(parse_duration(s).is_err(), "{s:?} accepted");
        }
    }
}
