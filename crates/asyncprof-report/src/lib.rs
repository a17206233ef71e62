//! Diagnosis and rendering of asyncprof run files: bytes in, bytes out.
//!
//! ```
//! use asyncprof_format::{Header, RunWriter, Snapshot};
//!
//! let mut bytes = Vec::new();
//! let mut w = RunWriter::new(&mut bytes, &Header::new("svc")).unwrap();
//! w.write_snapshot(&Snapshot::default()).unwrap();
//! let run = asyncprof_format::read_bytes(&bytes).unwrap();
//! let summary = asyncprof_report::Summary::of(&run);
//! let json = asyncprof_report::render_json(&summary);
//! assert!(std::str::from_utf8(&json).unwrap().contains("\"program\": \"svc\""));
//! ```
//!
//! # Feature flags
//!
//! None.
//!
//! # Limitations
//!
//! Summaries are computed from the last snapshot in the file: a truncated file is summarized
//! up to its last complete snapshot.
#![forbid(unsafe_code)]

pub mod charts;
pub mod diagnoses;
mod diff;
mod findings;
mod flame;
mod folded;
mod html;
mod merge;
mod names;
pub mod pprof;
mod queues;
mod score;
mod summary;
mod text;
mod thresholds;

pub use diff::{
    Change, Diff, DiffThresholds, FindingChange, LocationChange, DEFAULT_P99_FLOOR_MS,
    DEFAULT_STALL_FLOOR_MS, MIN_VALUES,
};
pub use findings::{
    diagnose, diagnose_with, shown_stack, stall_kind, Finding, FindingLocation, Severity,
};
pub use folded::{folded_stalls, folded_stalls_of};
pub use html::{render_html, render_index, render_merged_html, IndexRow};
pub use merge::{Instance, InstanceSummary, Merged, MergedFinding};
pub use names::{
    anonymous_kind, anonymous_name, enclosing_fn, name_anonymous, name_merged_primitives,
};
pub use queues::QueueEvidence;
pub use score::{markers_in, Marker, Score, LINE_WINDOW, MARK};
pub use summary::loss_counters;
pub use summary::{
    Latency, LoadSummary, LocationSummary, QueueSummary, RuntimeSummary, StageSummary, Summary,
    TaskStalls, TaskSummary, WorkerSummary, SIGNALS_OFF,
};
pub use text::{dur, render_diff_text, render_merged_text, render_text};
pub use thresholds::Thresholds;

/// The summary as pretty-printed JSON.
pub fn render_json(summary: &Summary) -> Vec<u8> {
    json(summary)
}

/// Several runs merged ([`Merged`]) as pretty-printed JSON: what `asyncprof report A.run
/// B.run --json` prints.
pub fn render_merged_json(merged: &Merged) -> Vec<u8> {
    json(merged)
}

/// Two runs compared ([`Diff`]) as pretty-printed JSON: what `asyncprof diff --json` prints.
pub fn render_diff_json(diff: &Diff) -> Vec<u8> {
    json(diff)
}

/// `value` as pretty-printed JSON and a newline.
fn json(value: &impl serde::Serialize) -> Vec<u8> {
    let mut out =
        serde_json::to_vec_pretty(value).expect("a report is plain data and always serializes");
    out.push(b'\n');
    out
}
