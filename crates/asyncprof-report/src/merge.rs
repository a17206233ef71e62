//! Many runs of one service at once (one run file per instance): each run is diagnosed on its
//! own, then findings of the same kind at the same line are one finding across the runs,
//! ranked across them, saying on how many instances it appeared.

use std::collections::BTreeMap;

use asyncprof_format::{LossCounters, RunFile};
use serde::Serialize;

use crate::{Finding, LocationSummary, Summary};

/// One run, read and summarized: what [`Merged::of`] and [`crate::Diff::of`] take.
///
/// ```
/// use asyncprof_format::{Header, RunWriter};
///
/// let mut bytes = Vec::new();
/// RunWriter::new(&mut bytes, &Header::new("svc")).unwrap().write_end().unwrap();
/// let run = asyncprof_format::read_bytes(&bytes).unwrap();
/// let summary = asyncprof_report::Summary::of(&run);
/// let one = asyncprof_report::Instance::new("a.run", &run, &summary);
/// let merged = asyncprof_report::Merged::of(&[one, one]);
/// assert_eq!(merged.instances.len(), 2);
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Instance<'a> {
    /// How reports name it: its run file's path, as given.
    pub name: &'a str,
    /// The run.
    pub run: &'a RunFile,
    /// Its summary, diagnosed with the thresholds the caller chose.
    pub summary: &'a Summary,
}

impl<'a> Instance<'a> {
    /// The run `run`, summarized as `summary`, named `name` in reports.
    pub fn new(name: &'a str, run: &'a RunFile, summary: &'a Summary) -> Self {
        Instance { name, run, summary }
    }
}

/// What a merged report or a diff says about each run it read.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct InstanceSummary {
    /// Its run file, as given.
    pub name: String,
    /// The profiled program.
    pub program: String,
    /// Its process id.
    pub pid: u32,
    /// Run length up to the last snapshot, ms.
    pub duration_ms: f64,
    /// The file ends in the middle of a record.
    pub truncated: bool,
    /// The recorder stopped normally.
    pub ended: bool,
    /// Stalls recorded, all kinds.
    pub stalls: u64,
    /// Their summed duration, preempted stalls left out (the machine's doing, not the
    /// program's), ms.
    pub stall_ms: f64,
    /// Findings of this run alone.
    pub findings: usize,
    /// Everything it dropped or clamped.
    pub loss: LossCounters,
}

impl InstanceSummary {
    /// What `i` says about its run.
    pub fn of(i: &Instance<'_>) -> Self {
        let s = i.summary;
        InstanceSummary {
            name: i.name.to_string(),
            program: s.program.clone(),
            pid: s.pid,
            duration_ms: s.duration_ms,
            truncated: s.truncated,
            ended: s.ended,
            stalls: s.stalls,
            stall_ms: crate::queues::ms(stall_time_ns(i.run)),
            findings: s.findings.len(),
            loss: s.loss.clone(),
        }
    }
}

/// The summed duration of a run's stalls, preempted ones left out, ns (saturating: a damaged
/// file may claim anything).
pub(crate) fn stall_time_ns(run: &RunFile) -> u64 {
    run.stalls
        .iter()
        .filter(|s| !crate::diagnoses::preempted(s))
        .fold(0u64, |a, s| a.saturating_add(s.duration_ns))
}

/// What makes two findings of different runs the same one: kind, file and line; with no
/// file (a build without debug info names its culprit's function only), kind and function.
pub(crate) type SameFinding<'a> = (&'static str, &'a str, u32, &'a str);

/// The [`SameFinding`] key of `f`.
pub(crate) fn same_finding(f: &Finding) -> SameFinding<'_> {
    let l = &f.location;
    let function = if l.file.is_empty() {
        l.function.as_str()
    } else {
        ""
    };
    (f.kind, l.file.as_str(), l.line, function)
}

/// A finding merged across instances.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct MergedFinding {
    /// The finding, its evidence summed across the instances: stalls (`count`) and their
    /// time (`total_ms`) added up, `max_ms` and `severity` the worst. The stack, task and
    /// recommendation are those of the instance with the longest stall.
    #[serde(flatten)]
    pub finding: Finding,
    /// Instances that showed it.
    pub instances: usize,
    /// Instances merged.
    pub of: usize,
    /// The runs that showed it, by name.
    pub seen_in: Vec<String>,
}

impl MergedFinding {
    /// On how many instances it appeared: `3 of 3 instances`, or with their names when not
    /// on all, `2 of 3 instances (a.run, c.run)`.
    pub fn seen(&self) -> String {
        let s = if self.of == 1 { "" } else { "s" };
        let mut seen = format!("{} of {} instance{s}", self.instances, self.of);
        if self.instances < self.of {
            seen.push_str(&format!(" ({})", self.seen_in.join(", ")));
        }
        seen
    }
}

/// Several runs of one service as one report: what `asyncprof report A.run B.run ...` shows.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct Merged {
    /// The programs profiled, each once, in the order of the runs.
    pub programs: Vec<String>,
    /// The runs, in the order given.
    pub instances: Vec<InstanceSummary>,
    /// What a reader should know: the runs' own warnings, each prefixed by its run, and runs
    /// of different programs.
    pub warnings: Vec<String>,
    /// Stalls recorded, all runs.
    pub stalls: u64,
    /// Stalls with no stack sample and no tracked task, all runs.
    pub unattributed_stalls: u64,
    /// Stalls of a thread that was preempted, all runs.
    pub preempted_stalls: u64,
    /// Findings across the runs: most severe first, then most stall time, then seen on most
    /// instances.
    pub findings: Vec<MergedFinding>,
    /// Spawn locations, each one's histograms merged across the runs, busiest first.
    pub locations: Vec<LocationSummary>,
}

impl Merged {
    /// Merge the instances' findings and spawn locations.
    pub fn of(instances: &[Instance<'_>]) -> Merged {
        let mut m = Merged {
            instances: instances.iter().map(InstanceSummary::of).collect(),
            ..Merged::default()
        };
        for i in instances {
            if !m.programs.contains(&i.summary.program) {
                m.programs.push(i.summary.program.clone());
            }
            m.warnings.extend(
                i.summary
                    .warnings
                    .iter()
                    .map(|w| format!("{}: {w}", i.name)),
            );
            m.stalls += i.summary.stalls;
            m.unattributed_stalls += i.summary.unattributed_stalls;
            m.preempted_stalls += i.summary.preempted_stalls;
        }
        if let Some(w) = m.programs_warning() {
            m.warnings.insert(0, w);
        }
        let mut by: BTreeMap<SameFinding<'_>, Vec<(usize, &Finding)>> = BTreeMap::new();
        for (n, i) in instances.iter().enumerate() {
            for f in &i.summary.findings {
                by.entry(same_finding(f)).or_default().push((n, f));
            }
        }
        m.findings = by
            .into_values()
            .map(|parts| combine(&parts, instances))
            .collect();
        m.findings.sort_by(|a, b| {
            let (fa, fb) = (&a.finding, &b.finding);
            fb.severity
                .cmp(&fa.severity)
                .then(fb.total_ms.total_cmp(&fa.total_ms))
                .then(b.instances.cmp(&a.instances))
                .then(same_finding(fa).cmp(&same_finding(fb)))
        });
        let locations: Vec<asyncprof_format::LocationStats> = instances
            .iter()
            .filter_map(|i| i.run.snapshot.as_ref())
            .flat_map(|s| s.locations.iter().cloned())
            .collect();
        m.locations = crate::summary::merge_locations(&locations);
        m
    }

    /// The warning that the runs are of different programs, naming them; `None` when they
    /// are all of one.
    pub fn programs_warning(&self) -> Option<String> {
        (self.programs.len() > 1).then(|| {
            format!(
                "the runs are of different programs ({}): their findings are merged as if they \
                 were one service's",
                self.programs.join(", ")
            )
        })
    }

    /// The loss counters summed across the runs, each with what it counts.
    pub(crate) fn loss(&self) -> Vec<(u64, &'static str)> {
        let mut sum = crate::summary::loss_counters(&LossCounters::default()).to_vec();
        for i in &self.instances {
            for (acc, (n, _)) in sum.iter_mut().zip(crate::summary::loss_counters(&i.loss)) {
                acc.0 = acc.0.saturating_add(n);
            }
        }
        sum
    }
}

/// One finding from the same finding of several runs (`parts`, with their runs' indices in
/// `instances`).
fn combine(parts: &[(usize, &Finding)], instances: &[Instance<'_>]) -> MergedFinding {
    // The run with the longest stall speaks for the others: its recommendation is sized by
    // that stall, which is the merged finding's longest.
    let (_, worst) = parts
        .iter()
        .copied()
        .max_by(|a, b| a.1.max_ms.total_cmp(&b.1.max_ms))
        .expect("a merged finding has at least one part");
    let mut f = worst.clone();
    f.count = parts
        .iter()
        .fold(0u64, |a, (_, p)| a.saturating_add(p.count));
    f.total_ms = (parts.iter().map(|(_, p)| p.total_ms).sum::<f64>() * 100.0).round() / 100.0;
    f.severity = parts
        .iter()
        .map(|(_, p)| p.severity)
        .max()
        .unwrap_or(f.severity);
    if f.primitive.is_none() {
        if let Some((_, p)) = parts.iter().find(|(_, p)| p.primitive.is_some()) {
            f.primitive.clone_from(&p.primitive);
            f.primitive_same_code.clone_from(&p.primitive_same_code);
        }
    }
    f.syscall = f
        .syscall
        .or_else(|| parts.iter().find_map(|(_, p)| p.syscall.clone()));
    // Each instance's callers, their stall counts added up per place.
    let mut callers: Vec<(String, u64)> = Vec::new();
    for (_, p) in parts {
        for a in &p.also {
            if !f.also.contains(a) {
                f.also.push(a.clone());
            }
        }
        callers.extend(
            p.called_from
                .iter()
                .filter_map(|c| crate::findings::caller_parts(c)),
        );
        f.runtimes.extend(p.runtimes.iter().cloned());
    }
    f.called_from = crate::findings::callers_text(callers.into_iter());
    f.runtimes.sort();
    f.runtimes.dedup();
    // By index, not name: the same file given twice is two instances.
    let mut seen: Vec<usize> = parts.iter().map(|(n, _)| *n).collect();
    seen.dedup();
    MergedFinding {
        finding: f,
        instances: seen.len(),
        of: instances.len(),
        seen_in: seen
            .iter()
            .map(|&n| instances[n].name.to_string())
            .collect(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use asyncprof_format::{
        read_bytes, Frame, Header, RunWriter, SourceLocation, StackSample, StallClass, StallRecord,
    };

    use super::*;

    /// A stall of `ms` at `line` of `src/svc.rs` (in a function of its own), asleep in
    /// `std::thread::sleep` (a blocking-call), or on CPU (a cpu-bound-poll).
    pub(crate) fn stall(id: u64, line: u32, ms: u64, cpu: bool) -> StallRecord {
        let mut s = StallRecord::default();
        s.id = id;
        s.duration_ns = ms * 1_000_000;
        s.task_location = Some(SourceLocation::new("src/svc.rs", 10, 5));
        let user = Frame::new(
            format!("svc::at_{line}"),
            Some("src/svc.rs".into()),
            Some(line),
        );
        let mut sample = StackSample::default();
        sample.count = 1;
        if cpu {
            s.class = StallClass::CpuBound;
            s.cpu_share = Some(1.0);
            sample.frames = vec![user.clone()];
        } else {
            let call = Frame::new("std::thread::sleep", None, None);
            s.class = StallClass::Blocking;
            s.cpu_share = Some(0.0);
            s.syscall = Some("clock_nanosleep".into());
            sample.frames = vec![call.clone(), user.clone()];
            s.primitive = Some(call);
        }
        s.stacks = vec![sample];
        s.culprit = Some(user);
        s
    }

    pub(crate) fn run(program: &str, stalls: &[StallRecord]) -> RunFile {
        let mut bytes = Vec::new();
        let mut w = RunWriter::new(&mut bytes, &Header::new(program)).unwrap();
        w.write_snapshot(&asyncprof_format::Snapshot::default())
            .unwrap();
        for s in stalls {
            w.write_stall(s).unwrap();
        }
        w.write_end().unwrap();
        read_bytes(&bytes).unwrap()
    }

    fn merged(runs: &[(&str, RunFile)]) -> Merged {
        let summaries: Vec<Summary> = runs.iter().map(|(_, r)| Summary::of(r)).collect();
        let instances: Vec<Instance<'_>> = runs
            .iter()
            .zip(&summaries)
            .map(|((name, r), s)| Instance::new(name, r, s))
            .collect();
        Merged::of(&instances)
    }

    /// Known truth: three instances stalled at line 20 (20+30, 40, 15 ms), two of them also at
    /// line 50 on CPU (each 150 ms): two findings, the costlier first, their evidence added
    /// up, each saying on how many instances it appeared.
    #[test]
    fn the_same_finding_on_several_instances_is_one_finding_with_summed_evidence() {
        let m = merged(&[
            (
                "a.run",
                run("svc", &[stall(1, 20, 20, false), stall(2, 20, 30, false)]),
            ),
            (
                "b.run",
                run("svc", &[stall(1, 20, 40, false), stall(2, 50, 150, true)]),
            ),
            (
                "c.run",
                run("svc", &[stall(1, 20, 15, false), stall(2, 50, 150, true)]),
            ),
        ]);
        assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        assert_eq!(m.programs, ["svc"]);
        assert_eq!(m.stalls, 6);
        let got: Vec<_> = m
            .findings
            .iter()
            .map(|f| {
                (
                    f.finding.kind,
                    f.finding.location.line,
                    f.finding.count,
                    f.finding.total_ms,
                    f.finding.max_ms,
                    f.seen(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "cpu-bound-poll",
                    50,
                    2,
                    300.0,
                    150.0,
                    "2 of 3 instances (b.run, c.run)".into()
                ),
                (
                    "blocking-call",
                    20,
                    4,
                    105.0,
                    40.0,
                    "3 of 3 instances".into()
                ),
            ],
            "{:#?}",
            m.findings
        );
        assert_eq!(m.findings[0].seen_in, ["b.run", "c.run"]);
        assert_eq!(m.findings[0].finding.severity, crate::Severity::Error);
        assert_eq!(
            m.findings[1].finding.syscall.as_deref(),
            Some("clock_nanosleep")
        );
        assert_eq!(m.instances[0].stall_ms, 50.0);

        let text = String::from_utf8(crate::render_merged_text(&m)).unwrap();
        assert!(text.contains("3 instances of svc"), "{text}");
        assert!(
            text.contains("blocking-call at src/svc.rs:20 in svc::at_20, on 3 of 3 instances"),
            "{text}"
        );
        assert!(
            text.contains("4 stalls, 105.0 ms in all, longest 40.0 ms"),
            "{text}"
        );
        assert!(
            text.contains("on 2 of 3 instances (b.run, c.run)"),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_slice(&crate::render_merged_json(&m)).unwrap();
        assert_eq!(json["findings"][1]["kind"], "blocking-call");
        assert_eq!(json["findings"][1]["instances"], 3);
        assert_eq!(json["findings"][1]["of"], 3);
        assert_eq!(json["findings"][1]["location"]["line"], 20);
        let html = crate::render_merged_html(&m, &|_| None);
        assert!(html.contains("3 of 3 instances"), "{html}");
        assert!(html.contains("id=\"findings\""));
    }

    /// Known truth: two lines of one function stalled, one in each of two runs. Each run's
    /// finding is at its own line: two findings, one instance each (the same kind at another
    /// line is another finding).
    #[test]
    fn another_line_is_another_finding() {
        let m = merged(&[
            ("a.run", run("svc", &[stall(1, 20, 20, false)])),
            ("b.run", run("svc", &[stall(1, 21, 20, false)])),
        ]);
        let got: Vec<_> = m
            .findings
            .iter()
            .map(|f| (f.finding.location.line, f.seen()))
            .collect();
        assert_eq!(
            got,
            [
                (20, "1 of 2 instances (a.run)".into()),
                (21, "1 of 2 instances (b.run)".into())
            ]
        );
    }

    /// One run file given twice is two instances, not one.
    #[test]
    fn the_same_run_twice_is_two_instances() {
        let r = run("svc", &[stall(1, 20, 20, false)]);
        let m = merged(&[("a.run", r.clone()), ("a.run", r)]);
        assert_eq!(m.findings.len(), 1);
        assert_eq!(m.findings[0].seen(), "2 of 2 instances");
        assert_eq!(m.findings[0].finding.count, 2);
    }

    #[test]
    fn runs_of_different_programs_merge_with_a_warning_naming_them() {
        let m = merged(&[
            ("a.run", run("svc", &[stall(1, 20, 20, false)])),
            ("b.run", run("other", &[stall(1, 20, 20, false)])),
        ]);
        assert_eq!(m.programs, ["svc", "other"]);
        assert!(
            m.warnings[0].contains("different programs (svc, other)"),
            "{:?}",
            m.warnings
        );
        assert_eq!(m.findings.len(), 1);
        assert_eq!(m.findings[0].seen(), "2 of 2 instances");
    }
}
