//! `asyncprof report`: render any run file, or several runs of one service merged.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::{term, ReportArgs};

/// Read a run file, with its path in every error.
pub(crate) fn read_run(path: &Path) -> Result<asyncprof_format::RunFile> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read run file {}", path.display()))?;
    asyncprof_format::read_bytes(&bytes)
        .with_context(|| format!("cannot read run file {}", path.display()))
}

/// Write `bytes` to `path`, creating its folder.
pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create folder {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Make sure `dir` exists and takes files, with one clear error if not.
pub(crate) fn writable_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output folder {}", dir.display()))?;
    let probe = dir.join(".asyncprof-write-test");
    std::fs::write(&probe, b"")
        .with_context(|| format!("cannot write to output folder {}", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// A source file's text for the report's excerpts, when readable (and under 4 MB).
pub(crate) fn source(file: &str) -> Option<String> {
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() || meta.len() > 4 << 20 {
        return None;
    }
    std::fs::read_to_string(file).ok()
}

/// The run's summary, its findings' anonymous bodies (`{async_fn#0}`) named after the fn that
/// holds them, and their merged primitives after the one their line calls, where the source
/// is readable: what `report`, `run` and `bench` all show.
pub(crate) fn summarize(
    run: &asyncprof_format::RunFile,
    thresholds: &asyncprof_report::Thresholds,
) -> asyncprof_report::Summary {
    let mut summary = asyncprof_report::Summary::with_thresholds(run, thresholds);
    asyncprof_report::name_anonymous(&mut summary.findings, &source);
    asyncprof_report::name_merged_primitives(&mut summary.findings, &source);
    summary
}

/// The run as an HTML page.
pub(crate) fn html(
    run: &asyncprof_format::RunFile,
    summary: &asyncprof_report::Summary,
) -> Vec<u8> {
    asyncprof_report::render_html(run, summary, &source).into_bytes()
}

/// The reports of one run beside its run file: `.html`, `.txt` and `.json`.
pub(crate) fn write_reports(
    run_file: &Path,
    run: &asyncprof_format::RunFile,
    summary: &asyncprof_report::Summary,
) -> Result<()> {
    write_file(&run_file.with_extension("html"), &html(run, summary))?;
    write_file(
        &run_file.with_extension("txt"),
        &asyncprof_report::render_text(summary),
    )?;
    write_file(
        &run_file.with_extension("json"),
        &asyncprof_report::render_json(summary),
    )
}

fn is_html(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"))
}

pub(crate) fn report(args: &ReportArgs) -> Result<ExitCode> {
    let thresholds = crate::thresholds(&args.diagnose)?;
    match args.run_files.as_slice() {
        [one] => {
            let run = read_run(one)?;
            for w in &run.warnings {
                term::warn(w);
            }
            report_one(&run, args, &thresholds)
        }
        many => match join_runs(read_runs(many)?).as_slice() {
            [(_, one)] => report_one(one, args, &thresholds),
            runs => report_many(runs, args, &thresholds),
        },
    }
}

/// Runs read from several files, the parts of one run (a run that went on in a new file at its
/// size limit) joined into one, named by their files together; in the order first given.
pub(crate) fn join_runs(
    runs: Vec<(String, asyncprof_format::RunFile)>,
) -> Vec<(String, asyncprof_format::RunFile)> {
    let mut groups: Vec<Vec<(String, asyncprof_format::RunFile)>> = Vec::new();
    for (name, run) in runs {
        // Parts of one run, each part once (a file given twice is two instances).
        let joins = |g: &Vec<(String, asyncprof_format::RunFile)>| {
            g[0].1.same_run(&run) && g.iter().all(|(_, r)| r.header.part != run.header.part)
        };
        match groups.iter_mut().find(|g| joins(g)) {
            Some(group) => group.push((name, run)),
            None => groups.push(vec![(name, run)]),
        }
    }
    groups
        .into_iter()
        .filter_map(|group| {
            if group.len() == 1 {
                return group.into_iter().next();
            }
            let name = group
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(" + ");
            let run = asyncprof_format::join_parts(group.into_iter().map(|(_, r)| r).collect())?;
            if let Some(w) = run.warnings.last() {
                term::warn(&format!("{name}: {w}"));
            }
            Some((name, run))
        })
        .collect()
}

fn report_one(
    run: &asyncprof_format::RunFile,
    args: &ReportArgs,
    thresholds: &asyncprof_report::Thresholds,
) -> Result<ExitCode> {
    let summary = summarize(run, thresholds);
    let bytes = if args.json {
        asyncprof_report::render_json(&summary)
    } else if args.output.as_deref().is_some_and(is_html) {
        html(run, &summary)
    } else {
        asyncprof_report::render_text(&summary)
    };
    if let Some(path) = &args.pprof {
        write_pprof(path, run)?;
    }
    if let Some(folded) = &args.folded {
        write_file(folded, asyncprof_report::folded_stalls(run).as_bytes())?;
    }
    emit(args.output.as_deref(), &bytes)?;
    match &args.expect_markers {
        Some(dir) => score_against(dir, &summary.findings),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Several runs (instances of one service), each diagnosed on its own, their findings merged.
fn report_many(
    runs: &[(String, asyncprof_format::RunFile)],
    args: &ReportArgs,
    thresholds: &asyncprof_report::Thresholds,
) -> Result<ExitCode> {
    if args.pprof.is_some() {
        bail!(
            "--pprof takes one run file; {} were given",
            args.run_files.len()
        );
    }
    let summaries: Vec<asyncprof_report::Summary> = runs
        .iter()
        .map(|(_, run)| summarize(run, thresholds))
        .collect();
    let instances: Vec<asyncprof_report::Instance<'_>> = runs
        .iter()
        .zip(&summaries)
        .map(|((name, run), summary)| asyncprof_report::Instance::new(name, run, summary))
        .collect();
    let merged = asyncprof_report::Merged::of(&instances);
    if let Some(w) = merged.programs_warning() {
        term::warn(&w);
    }
    let bytes = if args.json {
        asyncprof_report::render_merged_json(&merged)
    } else if args.output.as_deref().is_some_and(is_html) {
        asyncprof_report::render_merged_html(&merged, &source).into_bytes()
    } else {
        asyncprof_report::render_merged_text(&merged)
    };
    if let Some(folded) = &args.folded {
        let all: Vec<&asyncprof_format::RunFile> = runs.iter().map(|(_, run)| run).collect();
        write_file(folded, asyncprof_report::folded_stalls_of(&all).as_bytes())?;
    }
    emit(args.output.as_deref(), &bytes)?;
    match &args.expect_markers {
        Some(dir) => {
            let findings: Vec<asyncprof_report::Finding> =
                merged.findings.iter().map(|f| f.finding.clone()).collect();
            score_against(dir, &findings)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Read run files, each named as given; their readers' warnings printed with their names.
pub(crate) fn read_runs(paths: &[PathBuf]) -> Result<Vec<(String, asyncprof_format::RunFile)>> {
    paths
        .iter()
        .map(|path| {
            let run = read_run(path)?;
            let name = path.display().to_string();
            for w in &run.warnings {
                term::warn(&format!("{name}: {w}"));
            }
            Ok((name, run))
        })
        .collect()
}

/// Write a report to `output`, or to standard output.
pub(crate) fn emit(output: Option<&Path>, bytes: &[u8]) -> Result<()> {
    match output {
        Some(out) => write_file(out, bytes),
        None => term::print_stdout(bytes),
    }
}

/// The stall profile at `path` and, when the run has one, the CPU profile beside it.
fn write_pprof(path: &Path, run: &asyncprof_format::RunFile) -> Result<()> {
    let stalls = asyncprof_report::pprof::stall_profile(run, &source).with_context(|| {
        format!(
            "no pprof profile written to {}: the run has no stall with a stack",
            path.display()
        )
    })?;
    write_file(path, &stalls)?;
    eprintln!("stall profile (pprof): {}", path.display());
    if let Some(cpu) = asyncprof_report::pprof::cpu_profile(run) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cpu_name = match name.split_once('.') {
            Some((stem, ext)) => format!("{stem}.cpu.{ext}"),
            None => format!("{name}.cpu"),
        };
        let cpu_path = path.with_file_name(cpu_name);
        write_file(&cpu_path, &cpu)?;
        eprintln!("CPU profile (pprof): {}", cpu_path.display());
    }
    Ok(())
}

/// The markers in the Rust sources under `dir`, with paths relative to it (as the compiler
/// names a crate's files: `src/main.rs`). Skips `target` folders and hidden ones.
fn markers_under(dir: &Path) -> Result<Vec<asyncprof_report::Marker>> {
    let mut markers = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    let mut files = 0usize;
    while let Some(d) = todo.pop() {
        let entries =
            std::fs::read_dir(&d).with_context(|| format!("cannot read folder {}", d.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read folder {}", d.display()))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let kind = entry
                .file_type()
                .with_context(|| format!("cannot read {}", path.display()))?;
            if kind.is_dir() && name != "target" && !name.starts_with('.') {
                todo.push(path);
            } else if kind.is_file() && name.ends_with(".rs") {
                files += 1;
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let rel = path.strip_prefix(dir).unwrap_or(&path);
                markers.extend(asyncprof_report::markers_in(&rel.to_string_lossy(), &text));
            }
        }
    }
    anyhow::ensure!(
        files > 0,
        "no Rust source under {} to read markers from",
        dir.display()
    );
    markers.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    Ok(markers)
}

/// Print how `findings` score against the markers under `dir`; 1 unless perfect.
fn score_against(dir: &Path, findings: &[asyncprof_report::Finding]) -> Result<ExitCode> {
    let markers = markers_under(dir)?;
    let score = asyncprof_report::Score::of(findings, &markers);
    eprintln!(
        "score against {}: recall {:.0}% ({}/{} marked defects found), precision {:.0}% ({}/{} \
         findings expected)",
        dir.display(),
        score.recall() * 100.0,
        score.matched_markers,
        score.expected,
        score.precision() * 100.0,
        score.matched_findings,
        score.found
    );
    for m in &score.missed {
        eprintln!("  missed: {} at {}:{}", m.kind, m.file, m.line);
    }
    for u in &score.unexpected {
        eprintln!("  unexpected: {u}");
    }
    Ok(if score.perfect() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
