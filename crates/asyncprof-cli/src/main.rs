//! `asyncprof`: run pipelines under load, profile a service, read run files.
//!
//! Exit codes: 0 success; 1 a gate failed (`bench --check` or `--fail-on`); 2 an error (bad
//! flags, unreadable or damaged run file, unwritable output).
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

/// Find what makes a tokio program slow, and the line to change.
#[derive(Debug, Parser)]
#[command(name = "asyncprof", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the bundled pipelines under load, diagnose them and score the findings.
    Bench {
        /// Pipelines to run (default: all).
        pipelines: Vec<String>,
    },
    /// Summarize a run file.
    Report {
        /// The run file a profiled service wrote (ASYNCPROF_OUT).
        run_file: PathBuf,
        /// Print the machine-readable JSON summary instead of text.
        #[arg(long)]
        json: bool,
        /// Write to this file instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// The pipelines `bench` knows. Empty until the bundled pipelines are registered.
const PIPELINES: &[&str] = &[];

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
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

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Bench { pipelines } => bench(&pipelines),
        Command::Report {
            run_file,
            json,
            output,
        } => report(&run_file, json, output.as_deref()),
    }
}

fn bench(requested: &[String]) -> Result<ExitCode> {
    if let Some(unknown) = requested.iter().find(|p| !PIPELINES.contains(&p.as_str())) {
        anyhow::bail!(
            "unknown pipeline {unknown:?}; known pipelines: {}",
            if PIPELINES.is_empty() {
                "none yet".to_string()
            } else {
                PIPELINES.join(", ")
            }
        );
    }
    eprintln!(
        "asyncprof bench: no pipelines are registered yet (examples/bad-pipelines); nothing to run"
    );
    Ok(ExitCode::SUCCESS)
}

fn report(
    path: &std::path::Path,
    json: bool,
    output: Option<&std::path::Path>,
) -> Result<ExitCode> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read run file {}", path.display()))?;
    let run = asyncprof_format::read_bytes(&bytes)
        .with_context(|| format!("cannot read run file {}", path.display()))?;
    for w in &run.warnings {
        eprintln!("warning: {w}");
    }
    let summary = asyncprof_report::Summary::of(&run);
    let bytes = if json {
        asyncprof_report::render_json(&summary)
    } else {
        asyncprof_report::render_text(&summary)
    };
    match output {
        Some(out) => std::fs::write(out, &bytes)
            .with_context(|| format!("cannot write report to {}", out.display()))?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&bytes)
                .context("cannot write to standard output")?;
            stdout.flush().context("cannot write to standard output")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
