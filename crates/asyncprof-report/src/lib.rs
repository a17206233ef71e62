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
mod findings;
mod flame;
mod folded;
mod html;
mod names;
pub mod pprof;
mod queues;
mod score;
mod summary;
mod text;
mod thresholds;

pub use findings::{diagnose, diagnose_with, stall_kind, Finding, FindingLocation, Severity};
pub use folded::folded_stalls;
pub use html::{render_html, render_index, IndexRow};
pub use names::{anonymous_kind, enclosing_fn, name_anonymous};
pub use queues::QueueEvidence;
pub use score::{markers_in, Marker, Score, LINE_WINDOW, MARK};
pub use summary::{
    Latency, LocationSummary, QueueSummary, RuntimeSummary, StageSummary, Summary, TaskStalls,
    TaskSummary, WorkerSummary, SIGNALS_OFF,
};
pub use text::render_text;
pub use thresholds::Thresholds;

/// The summary as pretty-printed JSON.
pub fn render_json(summary: &Summary) -> Vec<u8> {
    let mut out =
        serde_json::to_vec_pretty(summary).expect("a summary is plain data and always serializes");
    out.push(b'\n');
    out
}
