//! `asyncprof diff BASE NEW`: compare two runs, and gate on regressions.

use std::process::ExitCode;

use anyhow::Result;

use crate::report::{emit, read_runs, summarize};
use crate::{term, DiffArgs};

pub(crate) fn diff(args: &DiffArgs) -> Result<ExitCode> {
    let diagnosis = crate::thresholds(&args.diagnose)?;
    let runs = read_runs(&[args.base.clone(), args.new.clone()])?;
    let [(base_name, base), (new_name, new)] = &runs[..] else {
        unreachable!("two paths read into two runs")
    };
    let (base_summary, new_summary) = (summarize(base, &diagnosis), summarize(new, &diagnosis));
    if base_summary.program != new_summary.program {
        term::warn(&format!(
            "comparing runs of different programs ({} and {})",
            base_summary.program, new_summary.program
        ));
    }
    let mut thresholds = asyncprof_report::DiffThresholds::default();
    thresholds.stall_factor = args.stall_factor;
    thresholds.stall_floor_ms = args.stall_floor_ms;
    thresholds.p99_factor = args.p99_factor;
    thresholds.p99_floor_ms = args.p99_floor_ms;
    let d = asyncprof_report::Diff::of(
        &asyncprof_report::Instance::new(base_name, base, &base_summary),
        &asyncprof_report::Instance::new(new_name, new, &new_summary),
        &thresholds,
    );
    let bytes = if args.json {
        asyncprof_report::render_diff_json(&d)
    } else {
        asyncprof_report::render_diff_text(&d)
    };
    emit(None, &bytes)?;
    if args.fail_on_regression && d.regressed() {
        term::error(&format!(
            "diff --fail-on-regression: {} regressed against {}: {}",
            new_name,
            base_name,
            d.regressions.join("; ")
        ));
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
