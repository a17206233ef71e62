//! Scoring findings against known defects: the markers `// asyncprof-expect: KIND` that a
//! program's source carries on its defect lines.

use serde::Serialize;

use crate::Finding;

/// A finding matches a marker when their kinds agree, the files agree (one path ends with
/// the other) and the lines are at most this far apart.
pub const LINE_WINDOW: u32 = 5;

/// A known defect: a marker in the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Marker {
    /// The finding kind expected there.
    pub kind: String,
    /// Source file, as written in the marker's program (relative or absolute).
    pub file: String,
    /// 1-based line of the marker.
    pub line: u32,
}

impl Marker {
    /// A marker.
    pub fn new(kind: impl Into<String>, file: impl Into<String>, line: u32) -> Self {
        Marker {
            kind: kind.into(),
            file: file.into(),
            line,
        }
    }

    /// Whether `f` is the finding this marker expects.
    pub fn matches(&self, f: &Finding) -> bool {
        let (a, b) = (f.location.file.as_str(), self.file.as_str());
        f.kind == self.kind
            && !a.is_empty()
            && (a.ends_with(b) || b.ends_with(a))
            && f.location.line.abs_diff(self.line) <= LINE_WINDOW
    }
}

/// What marks a defect's line in a program's source: `// asyncprof-expect: KIND` (several
/// kinds separated by commas or spaces).
pub const MARK: &str = "// asyncprof-expect: ";

/// The markers in `source`, the text of the file named `file`.
///
/// ```
/// let src = "fn main() {\n    std::thread::sleep(d); // asyncprof-expect: blocking-call\n}\n";
/// let m = asyncprof_report::markers_in("src/main.rs", src);
/// assert_eq!(m, [asyncprof_report::Marker::new("blocking-call", "src/main.rs", 2)]);
/// ```
pub fn markers_in(file: &str, source: &str) -> Vec<Marker> {
    source
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let at = l.find(MARK)?;
            let kinds = &l[at + MARK.len()..];
            Some(
                kinds
                    .split([',', ' '])
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(|k| Marker::new(k, file, i as u32 + 1))
                    .collect::<Vec<_>>(),
            )
        })
        .flatten()
        .collect()
}

/// How a run's findings compare with its markers.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct Score {
    /// Markers (known defects).
    pub expected: usize,
    /// Findings of the scored kinds.
    pub found: usize,
    /// Markers that a finding matched.
    pub matched_markers: usize,
    /// Findings that matched a marker.
    pub matched_findings: usize,
    /// Markers no finding matched.
    pub missed: Vec<Marker>,
    /// Findings that match no marker, as `kind at file:line in function` with their evidence
    /// (stalls or sender waits, the longest, the total).
    pub unexpected: Vec<String>,
    /// Findings that name no line (`cpu-contention`, which blames the machine, and
    /// runtime-wide findings the recording could not place), with their evidence: not scored.
    pub unplaced: Vec<String>,
}

impl Score {
    /// Score `findings` against `markers`.
    pub fn of(findings: &[Finding], markers: &[Marker]) -> Score {
        // A finding that names no line (the machine's, or a runtime-wide one the recording
        // could not place) is neither right nor wrong about a line: reported apart (see
        // [`Score::unplaced`]).
        let unplaced: Vec<String> = findings
            .iter()
            .filter(|f| f.names_no_line())
            .map(|f| format!("{}: {}", f.kind, f.evidence.join("; ")))
            .collect();
        let findings: Vec<&Finding> = findings.iter().filter(|f| !f.names_no_line()).collect();
        let missed: Vec<Marker> = markers
            .iter()
            .filter(|m| !findings.iter().any(|f| m.matches(f)))
            .cloned()
            .collect();
        let unexpected: Vec<String> = findings
            .iter()
            .filter(|f| !markers.iter().any(|m| m.matches(f)))
            .map(|f| {
                format!(
                    "{} at {}:{} in {} ({} events, longest {:.1} ms, {:.1} ms in all)",
                    f.kind,
                    f.location.file,
                    f.location.line,
                    f.location.function,
                    f.count,
                    f.max_ms,
                    f.total_ms
                )
            })
            .collect();
        Score {
            expected: markers.len(),
            found: findings.len(),
            matched_markers: markers.len() - missed.len(),
            matched_findings: findings.len() - unexpected.len(),
            missed,
            unexpected,
            unplaced,
        }
    }

    /// Add another run's score.
    pub fn add(&mut self, other: &Score) {
        self.expected += other.expected;
        self.found += other.found;
        self.matched_markers += other.matched_markers;
        self.matched_findings += other.matched_findings;
        self.missed.extend(other.missed.iter().cloned());
        self.unexpected.extend(other.unexpected.iter().cloned());
        self.unplaced.extend(other.unplaced.iter().cloned());
    }

    /// Share of markers found (1 when there are none).
    pub fn recall(&self) -> f64 {
        if self.expected == 0 {
            1.0
        } else {
            self.matched_markers as f64 / self.expected as f64
        }
    }

    /// Share of findings that match a marker (1 when there are none).
    pub fn precision(&self) -> f64 {
        if self.found == 0 {
            1.0
        } else {
            self.matched_findings as f64 / self.found as f64
        }
    }

    /// Every marker found and every finding expected.
    pub fn perfect(&self) -> bool {
        self.missed.is_empty() && self.unexpected.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::Marker;

    /// A finding with no file (a build without debug info names its function only) is at
    /// no marked line: every path ends with the empty one, which matched any marker of its
    /// kind within the line window of line 0.
    #[test]
    fn a_finding_with_no_file_matches_no_marker() {
        let mut f = crate::Finding::runtime_wide(
            "blocking-call",
            crate::Severity::Warning,
            crate::FindingLocation {
                file: "src/svc.rs".into(),
                line: 4,
                function: "svc::handle".into(),
            },
            String::new(),
            Vec::new(),
        );
        let marker = Marker::new("blocking-call", "src/svc.rs", 3);
        assert!(marker.matches(&f));
        f.location.file.clear();
        f.location.line = 0;
        f.location.function = "svc::handle".into();
        assert!(!marker.matches(&f));
    }
}
