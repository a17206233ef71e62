//! Two runs compared: what `asyncprof diff BASE.run NEW.run` shows, and the regression gate
//! of `--fail-on-regression`.
//!
//! A finding is the same in both runs when its kind, file and line are; a finding NEW has and
//! BASE does not is a regression. Numbers (stall time, spawn locations' p99s) regress only
//! where a gate is set ([`DiffThresholds`]), and then only when they grow both by a factor and
//! by an absolute floor: a p99 of a few microseconds that triples is noise. No number gates by
//! default, because runs of the same code differ by more than a factor of 2 with the machine's
//! load. Measured on a 2-core machine with the `scraper` pipeline: its bad variant stalled 739
//! to 771 ms in all in three runs one after the other, 328 to 562 ms in three runs side by
//! side with two others; two runs of its fixed variant, one after the other, had a p99
//! scheduling delay of 5.0 and 13.2 ms at one spawn location.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::merge::{same_finding, stall_time_ns, SameFinding};
use crate::{Finding, FindingLocation, Instance, InstanceSummary, Latency};

/// How much more than BASE's NEW's stall time must be, besides the factor, to regress:
/// 100 ms, ten stalls at the default stall threshold.
pub const DEFAULT_STALL_FLOOR_MS: u64 = 100;
/// How much more than BASE's a p99 (poll time, scheduling delay) must be, besides the factor,
/// to regress: 1 ms. Below it a p99 moves with the machine's load.
pub const DEFAULT_P99_FLOOR_MS: u64 = 1;
/// The fewest values a spawn location's histogram needs in both runs for its p99 to regress: a
/// p99 of fewer values is nearly its maximum, one slow poll.
pub const MIN_VALUES: u64 = 100;

/// When a number counts as a regression: the gates on numbers, both off by default (a new
/// finding always counts).
///
/// ```
/// let mut t = asyncprof_report::DiffThresholds::default();
/// assert_eq!((t.stall_factor, t.stall_floor_ms), (None, 100));
/// t.stall_factor = Some(3.0); // NEW's stall time at least 3 times BASE's, and 100 ms more
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct DiffThresholds {
    /// The stall time regresses when NEW's is at least this many times BASE's (and
    /// `stall_floor_ms` more); `None`: it never does.
    pub stall_factor: Option<f64>,
    /// How much more NEW's stall time must be, ms.
    pub stall_floor_ms: u64,
    /// A spawn location's p99 poll time or scheduling delay regresses when NEW's is at least
    /// this many times BASE's (and `p99_floor_ms` more); `None`: it never does.
    pub p99_factor: Option<f64>,
    /// How much more NEW's p99 must be, ms.
    pub p99_floor_ms: u64,
    /// A spawn location's p99 regresses only with at least this many values in both runs.
    pub min_values: u64,
}

impl Default for DiffThresholds {
    fn default() -> Self {
        DiffThresholds {
            stall_factor: None,
            stall_floor_ms: DEFAULT_STALL_FLOOR_MS,
            p99_factor: None,
            p99_floor_ms: DEFAULT_P99_FLOOR_MS,
            min_values: MIN_VALUES,
        }
    }
}

/// One number in both runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Change {
    /// In BASE, ns (`None`: not there).
    pub base_ns: Option<u64>,
    /// In NEW, ns.
    pub new_ns: Option<u64>,
    /// NEW over BASE (`None` when either is missing or BASE is 0).
    pub factor: Option<f64>,
    /// It grew past its gate ([`DiffThresholds`]).
    pub regressed: bool,
}

impl Change {
    /// `base` → `new`, a regression when both are known, `counts`, and NEW is at least
    /// `factor` (when there is a gate) times BASE and at least `floor_ns` more.
    fn of(
        base: Option<u64>,
        new: Option<u64>,
        factor: Option<f64>,
        floor_ns: u64,
        counts: bool,
    ) -> Self {
        let ratio = match (base, new) {
            (Some(b), Some(n)) if b > 0 => Some(n as f64 / b as f64),
            _ => None,
        };
        let regressed = match (base, new, factor) {
            (Some(b), Some(n), Some(factor)) => {
                counts && n as f64 >= factor * b as f64 && n.saturating_sub(b) >= floor_ns
            }
            _ => false,
        };
        Change {
            base_ns: base,
            new_ns: new,
            factor: ratio.map(|r| (r * 100.0).round() / 100.0),
            regressed,
        }
    }
}

/// One spawn location in both runs.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct LocationChange {
    /// `file:line:col`.
    pub location: String,
    /// Polls there in BASE (0: not there).
    pub base_polls: u64,
    /// Polls there in NEW.
    pub new_polls: u64,
    /// p99 poll time.
    pub poll_p99: Change,
    /// p99 scheduling delay.
    pub scheduled_p99: Change,
}

/// A finding in both runs.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct FindingChange {
    /// Its kind.
    pub kind: &'static str,
    /// Its line (as NEW names it).
    pub location: FindingLocation,
    /// Stalls (queue findings: sender waits, or items sent) in BASE.
    pub base_count: u64,
    /// In NEW.
    pub new_count: u64,
    /// Their time in BASE, ms.
    pub base_total_ms: f64,
    /// In NEW.
    pub new_total_ms: f64,
}

/// BASE against NEW: what changed, and what fails the gate.
///
/// ```
/// use asyncprof_format::{Header, RunWriter};
/// use asyncprof_report::{Diff, DiffThresholds, Instance, Summary};
///
/// let mut bytes = Vec::new();
/// RunWriter::new(&mut bytes, &Header::new("svc")).unwrap().write_end().unwrap();
/// let run = asyncprof_format::read_bytes(&bytes).unwrap();
/// let summary = Summary::of(&run);
/// let one = Instance::new("base.run", &run, &summary);
/// let d = Diff::of(&one, &one, &DiffThresholds::default());
/// assert!(!d.regressed() && d.new_findings.is_empty());
/// ```
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Diff {
    /// The base run.
    pub base: InstanceSummary,
    /// The new run.
    pub new: InstanceSummary,
    /// The thresholds applied.
    pub thresholds: DiffThresholds,
    /// Summed stall time, preempted stalls left out.
    pub stall_time: Change,
    /// Findings NEW has and BASE does not: most severe and costly first.
    pub new_findings: Vec<Finding>,
    /// Findings BASE had and NEW does not.
    pub vanished_findings: Vec<Finding>,
    /// Findings in both.
    pub persisting_findings: Vec<FindingChange>,
    /// Spawn locations of either run: regressed first, then NEW's busiest first, then
    /// those only BASE had.
    pub locations: Vec<LocationChange>,
    /// Everything that fails `--fail-on-regression`, in words: new findings, then the stall
    /// time, then spawn locations' p99s (those two only where their gates are set).
    pub regressions: Vec<String>,
}

/// `412.0µs → 3.1ms (×7.52)`; `-` for a side without the number.
pub(crate) fn change_text(c: &Change) -> String {
    let side = |v: Option<u64>| v.map_or_else(|| "-".to_string(), crate::text::dur);
    format!(
        "{} → {}{}",
        side(c.base_ns),
        side(c.new_ns),
        c.factor.map_or_else(String::new, |f| format!(" (×{f})"))
    )
}

/// The findings of `findings` whose key the other run does not have, in their order (most
/// severe and costly first, as summaries list them).
fn absent<'a>(findings: &'a [Finding], present: impl Fn(&SameFinding<'a>) -> bool) -> Vec<Finding> {
    findings
        .iter()
        .filter(|f| !present(&same_finding(f)))
        .cloned()
        .collect()
}

impl Diff {
    /// Compare `base` with `new`.
    pub fn of(base: &Instance<'_>, new: &Instance<'_>, t: &DiffThresholds) -> Diff {
        let in_base: BTreeMap<_, &Finding> = base
            .summary
            .findings
            .iter()
            .map(|f| (same_finding(f), f))
            .collect();
        let in_new: BTreeSet<_> = new.summary.findings.iter().map(same_finding).collect();
        let new_findings = absent(&new.summary.findings, |k| in_base.contains_key(k));
        let vanished_findings = absent(&base.summary.findings, |k| in_new.contains(k));
        let persisting_findings = new
            .summary
            .findings
            .iter()
            .filter_map(|f| {
                let b = in_base.get(&same_finding(f))?;
                Some(FindingChange {
                    kind: f.kind,
                    location: f.location.clone(),
                    base_count: b.count,
                    new_count: f.count,
                    base_total_ms: b.total_ms,
                    new_total_ms: f.total_ms,
                })
            })
            .collect();

        let stall_time = Change::of(
            Some(stall_time_ns(base.run)),
            Some(stall_time_ns(new.run)),
            t.stall_factor,
            t.stall_floor_ms.saturating_mul(1_000_000),
            true,
        );
        let p99 = |b: Option<&Latency>, n: Option<&Latency>| {
            let counts = b.is_some_and(|b| b.count >= t.min_values)
                && n.is_some_and(|n| n.count >= t.min_values);
            Change::of(
                b.map(|l| l.p99_ns),
                n.map(|l| l.p99_ns),
                t.p99_factor,
                t.p99_floor_ms.saturating_mul(1_000_000),
                counts,
            )
        };
        let base_locs: BTreeMap<&str, &crate::LocationSummary> = base
            .summary
            .locations
            .iter()
            .map(|l| (l.location.as_str(), l))
            .collect();
        let new_locs: BTreeMap<&str, &crate::LocationSummary> = new
            .summary
            .locations
            .iter()
            .map(|l| (l.location.as_str(), l))
            .collect();
        // NEW's busiest first, then what only BASE had, in its order.
        let order = new.summary.locations.iter().chain(
            base.summary
                .locations
                .iter()
                .filter(|l| !new_locs.contains_key(l.location.as_str())),
        );
        let mut locations: Vec<LocationChange> = order
            .map(|l| {
                let b = base_locs.get(l.location.as_str()).copied();
                let n = new_locs.get(l.location.as_str()).copied();
                LocationChange {
                    location: l.location.clone(),
                    base_polls: b.map_or(0, |b| b.polls),
                    new_polls: n.map_or(0, |n| n.polls),
                    poll_p99: p99(b.map(|b| &b.poll), n.map(|n| &n.poll)),
                    scheduled_p99: p99(b.map(|b| &b.scheduled), n.map(|n| &n.scheduled)),
                }
            })
            .collect();
        // Stable: the regressed ones first, each group in the order above.
        locations.sort_by_key(|l| !(l.poll_p99.regressed || l.scheduled_p99.regressed));

        let mut regressions: Vec<String> = new_findings
            .iter()
            .map(|f| {
                let place = f.no_line_reason().unwrap_or_else(|| {
                    format!(
                        "at {}:{} in {}",
                        f.location.file, f.location.line, f.location.function
                    )
                });
                format!(
                    "new finding: {} {place} ({} events, {:.1} ms in all)",
                    f.kind, f.count, f.total_ms
                )
            })
            .collect();
        if stall_time.regressed {
            regressions.push(format!("stall time {}", change_text(&stall_time)));
        }
        for l in &locations {
            if l.poll_p99.regressed {
                regressions.push(format!(
                    "p99 poll time at {}: {}",
                    l.location,
                    change_text(&l.poll_p99)
                ));
            }
            if l.scheduled_p99.regressed {
                regressions.push(format!(
                    "p99 scheduling delay at {}: {}",
                    l.location,
                    change_text(&l.scheduled_p99)
                ));
            }
        }
        Diff {
            base: InstanceSummary::of(base),
            new: InstanceSummary::of(new),
            thresholds: t.clone(),
            stall_time,
            new_findings,
            vanished_findings,
            persisting_findings,
            locations,
            regressions,
        }
    }

    /// Whether NEW regressed: a new finding, or a number past its gate.
    pub fn regressed(&self) -> bool {
        !self.regressions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use asyncprof_format::{Histogram, LocationStats, RunFile, Snapshot, SourceLocation};

    use super::*;
    use crate::merge::tests::{run, stall};
    use crate::Summary;

    /// `base` against `new` with both gates on numbers set, at a factor of 2.
    fn diff(base: &RunFile, new: &RunFile) -> Diff {
        let t = DiffThresholds {
            stall_factor: Some(2.0),
            p99_factor: Some(2.0),
            ..DiffThresholds::default()
        };
        diff_with(base, new, &t)
    }

    fn diff_with(base: &RunFile, new: &RunFile, t: &DiffThresholds) -> Diff {
        let (bs, ns) = (Summary::of(base), Summary::of(new));
        Diff::of(
            &Instance::new("base.run", base, &bs),
            &Instance::new("new.run", new, &ns),
            t,
        )
    }

    /// Known truth: a build without debug info, its culprits named by function only (no
    /// file, no line). A blocking call in a new function is a new finding, not the old
    /// function's persisting.
    #[test]
    fn findings_without_a_line_are_told_apart_by_their_function() {
        let in_fn = |id, function: &str| {
            let mut s = stall(id, 20, 150, false);
            s.task_location = None;
            let user = asyncprof_format::Frame::new(function, None, None);
            s.stacks[0].frames[1] = user.clone();
            s.culprit = Some(user);
            s
        };
        let base = run("svc", &[in_fn(1, "svc::load")]);
        let new = run("svc", &[in_fn(1, "svc::load"), in_fn(2, "svc::save")]);
        let d = diff(&base, &new);
        assert_eq!(d.persisting_findings.len(), 1, "{d:#?}");
        assert_eq!(d.new_findings.len(), 1, "{d:#?}");
        assert_eq!(d.new_findings[0].location.function, "svc::save");
        assert!(
            d.regressions[0].starts_with("new finding: blocking-call in svc::save (no line:"),
            "{:?}",
            d.regressions
        );
    }

    #[test]
    fn the_same_run_twice_has_no_regression() {
        let r = run("svc", &[stall(1, 20, 150, false), stall(2, 20, 30, false)]);
        let d = diff(&r, &r);
        assert!(!d.regressed(), "{:?}", d.regressions);
        assert!(d.new_findings.is_empty() && d.vanished_findings.is_empty());
        assert_eq!(d.persisting_findings.len(), 1);
        assert_eq!(d.stall_time.factor, Some(1.0));
        assert!(!d.stall_time.regressed);
    }

    /// Known truth: BASE blocked at line 20; NEW blocks at line 20 and computes at line 50.
    /// One new finding (line 50), none vanished, and the stall time grew from 40 ms to
    /// 240 ms: past both the factor (×6) and the floor (+200 ms).
    #[test]
    fn a_new_finding_and_grown_stall_time_are_regressions() {
        let base = run("svc", &[stall(1, 20, 40, false)]);
        let new = run("svc", &[stall(1, 20, 40, false), stall(2, 50, 200, true)]);
        let d = diff(&base, &new);
        let kinds: Vec<_> = d
            .new_findings
            .iter()
            .map(|f| (f.kind, f.location.line))
            .collect();
        assert_eq!(kinds, [("cpu-bound-poll", 50)]);
        assert!(d.vanished_findings.is_empty());
        assert_eq!(
            (
                d.stall_time.base_ns,
                d.stall_time.new_ns,
                d.stall_time.factor
            ),
            (Some(40_000_000), Some(240_000_000), Some(6.0))
        );
        assert!(d.stall_time.regressed);
        assert_eq!(d.regressions.len(), 2, "{:?}", d.regressions);
        assert!(d.regressions[0].starts_with("new finding: cpu-bound-poll at src/svc.rs:50"));
        assert!(d.regressions[1].starts_with("stall time 40.0ms → 240.0ms (×6)"));

        // The other way round, the finding vanished and nothing regressed.
        let back = diff(&new, &base);
        assert!(!back.regressed(), "{:?}", back.regressions);
        assert_eq!(back.vanished_findings[0].location.line, 50);

        // Without a gate on stall time, only the new finding counts.
        let ungated = diff_with(&base, &new, &DiffThresholds::default());
        assert!(!ungated.stall_time.regressed);
        assert_eq!(ungated.regressions.len(), 1, "{:?}", ungated.regressions);

        let text = String::from_utf8(crate::render_diff_text(&d)).unwrap();
        assert!(text.contains("new findings (1):"), "{text}");
        assert!(text.contains("cpu-bound-poll at src/svc.rs:50"), "{text}");
        assert!(
            text.contains("stall time: 40.0ms → 240.0ms (×6)  REGRESSED"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_slice(&crate::render_diff_json(&d)).unwrap();
        assert_eq!(json["new_findings"][0]["location"]["line"], 50);
        assert_eq!(json["stall_time"]["regressed"], true);
    }

    /// Stall time that doubles but stays under the floor (10 ms → 30 ms) is noise.
    #[test]
    fn stall_time_under_the_floor_is_not_a_regression() {
        let base = run("svc", &[stall(1, 20, 10, false)]);
        let new = run("svc", &[stall(1, 20, 30, false)]);
        let d = diff(&base, &new);
        assert_eq!(d.stall_time.factor, Some(3.0));
        assert!(!d.regressed(), "{:?}", d.regressions);
    }

    /// A run whose one spawn location polls `polls` times, each `poll_ms` long.
    fn run_with_location(polls: u64, poll_ms: u64) -> RunFile {
        let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        h.record_n(poll_ms * 1_000_000, polls).unwrap();
        let mut l = LocationStats::default();
        l.location = SourceLocation::new("src/svc.rs", 10, 5);
        l.polls = polls;
        l.poll_ns = Histogram::from_hdr(&h);
        let mut snap = Snapshot::default();
        snap.locations = vec![l];
        let mut bytes = Vec::new();
        let mut w =
            asyncprof_format::RunWriter::new(&mut bytes, &asyncprof_format::Header::new("svc"))
                .unwrap();
        w.write_snapshot(&snap).unwrap();
        w.write_end().unwrap();
        asyncprof_format::read_bytes(&bytes).unwrap()
    }

    /// p99 poll time 1 ms → 4 ms over 200 polls regresses (×4, +3 ms); over 50 polls it does
    /// not count (too few values), and 0.1 ms → 0.4 ms is under the floor.
    #[test]
    fn a_p99_regresses_past_factor_and_floor_with_enough_values() {
        let d = diff(&run_with_location(200, 1), &run_with_location(200, 4));
        let l = &d.locations[0];
        assert_eq!(l.location, "src/svc.rs:10:5");
        assert!(l.poll_p99.regressed, "{l:?}");
        assert!(
            (3.9..4.1).contains(&l.poll_p99.factor.unwrap()),
            "{:?}",
            l.poll_p99
        );
        assert!(
            d.regressions[0].starts_with("p99 poll time at src/svc.rs:10:5: 1.0ms → 4.0ms"),
            "{:?}",
            d.regressions
        );
        let few = diff(&run_with_location(50, 1), &run_with_location(50, 4));
        assert!(!few.regressed(), "{:?}", few.regressions);
        let ungated = diff_with(
            &run_with_location(200, 1),
            &run_with_location(200, 4),
            &DiffThresholds::default(),
        );
        assert!(!ungated.regressed(), "{:?}", ungated.regressions);

        let small = |ns: u64| {
            let mut r = run_with_location(200, 1);
            let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
            h.record_n(ns, 200).unwrap();
            if let Some(s) = r.snapshot.as_mut() {
                s.locations[0].poll_ns = Histogram::from_hdr(&h);
            }
            r
        };
        let tiny = diff(&small(100_000), &small(400_000));
        assert!(tiny.locations[0].poll_p99.factor.unwrap() > 3.9);
        assert!(!tiny.regressed(), "{:?}", tiny.regressions);
    }
}
