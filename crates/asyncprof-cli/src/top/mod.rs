//! `asyncprof top`: watch a run file while the service writes it (or step through a finished
//! one): stalls with their lines as they happen, spawn locations, queues, workers and the
//! loss counters. The service does not know a viewer is there: the viewer only reads the
//! file the service already writes. On a pipe it prints one line per stall instead.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

mod follow;
mod ui;
mod view;

use follow::{Follower, Writer};

/// How often the file is looked at for new records.
const POLL_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    /// The run file to watch (ASYNCPROF_OUT of the service), while it is written or after.
    #[arg(value_name = "RUN_FILE", required_unless_present_any = ["pid", "name"])]
    run_file: Option<PathBuf>,
    /// Watch the run file process PID has open.
    #[arg(long, value_name = "PID", conflicts_with_all = ["run_file", "name"])]
    pid: Option<u32>,
    /// Watch the run file of the process named NAME (its command or executable name).
    #[arg(long, value_name = "NAME", conflicts_with = "run_file")]
    name: Option<String>,
    /// Print one line per stall instead of the terminal UI (the default when standard
    /// output is not a terminal); exits when the run ends or its process is gone.
    #[arg(long)]
    plain: bool,
}

pub(crate) fn top(args: &TopArgs) -> Result<ExitCode> {
    let path = match &args.run_file {
        Some(path) => path.clone(),
        None => follow::find_run_file(args.pid, args.name.as_deref())?,
    };
    let follower = Follower::open(&path)?;
    if args.plain || !std::io::stdout().is_terminal() {
        plain(follower)
    } else {
        ui::run(follower)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// One line for a stall: when it began, how long, what, where.
fn stall_line(s: &asyncprof_format::StallRecord) -> String {
    let function = s
        .culprit
        .as_ref()
        .map(|f| format!(" in {}", view::frame_function(f)))
        .unwrap_or_default();
    let call = s
        .primitive
        .as_ref()
        .map(|p| format!(", calling {}", p.function))
        .unwrap_or_default();
    let syscall = s
        .syscall
        .as_deref()
        .map(|c| format!(", asleep in {c}"))
        .unwrap_or_default();
    format!(
        "{:>9.3}s  stall {:>8} {} {}{function}{call}{syscall} (task {}, {})",
        s.start_ns as f64 / 1e9,
        asyncprof_report::dur(s.duration_ns),
        view::stall_kind(s),
        view::culprit(s),
        s.task_id,
        s.thread_name,
    )
}

/// Plain output: a line per stall once it returned, and once for a stall still running after
/// a second; then, when the run is over, a line saying how it ended.
fn plain(mut follower: Follower) -> Result<ExitCode> {
    use std::collections::BTreeSet;
    use std::io::Write;

    let mut out = std::io::stdout().lock();
    let mut printed_done = BTreeSet::new();
    let mut printed_running = BTreeSet::new();
    let mut announced = false;
    loop {
        follower.poll();
        if !announced {
            if let Some(h) = follower.header() {
                writeln!(
                    out,
                    "watching {} (pid {}), run file {}",
                    h.program,
                    h.pid,
                    follower.path().display()
                )?;
                announced = true;
            }
        }
        for id in follower.take_changed() {
            let s = &follower.stalls[&id];
            if !s.ongoing && printed_done.insert(id) {
                writeln!(out, "{}", stall_line(s))?;
            } else if s.ongoing
                && s.duration_ns >= 1_000_000_000
                && !printed_done.contains(&id)
                && printed_running.insert(id)
            {
                writeln!(out, "{} (still running)", stall_line(s))?;
            }
        }
        out.flush()?;
        if follower.finished() {
            break;
        }
        std::thread::sleep(POLL_EVERY);
    }
    let stalls = follower.stalls.len();
    let mut running = 0;
    for s in follower.stalls.values().filter(|s| s.ongoing) {
        running += 1;
        if !printed_running.contains(&s.id) {
            writeln!(out, "{} (never returned)", stall_line(s))?;
        }
    }
    if let Some(problem) = &follower.problem {
        writeln!(out, "stopped reading after {stalls} stalls")?;
        anyhow::bail!("{problem}");
    }
    let how = match follower.writer() {
        Writer::Ended => "the run ended".to_string(),
        _ => format!(
            "process {} is gone without ending its run (killed or crashed)",
            follower.header().map_or(0, |h| h.pid)
        ),
    };
    let never = if running > 0 {
        format!(", {running} of them never returned")
    } else {
        String::new()
    };
    writeln!(out, "{how}: {stalls} stalls{never}")?;
    Ok(ExitCode::SUCCESS)
}
