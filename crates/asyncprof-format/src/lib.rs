//! The asyncprof run-file schema: versioned record types, a writer, and a reader that keeps
//! everything before a truncated tail.
//!
//! A run file is what an instrumented service leaves behind: a header (format version,
//! program, pid, start time, configuration, capture tier, runtime flavor, worker count)
//! followed by snapshots that a background thread appends about once a second. The header is
//! written when recording starts, so a process that dies at once still leaves a readable file;
//! the facts learnt when tasks first run (tier, flavor, workers) follow in a later header,
//! and the reader keeps the latest. A process that is killed leaves a file that is readable up
//! to its last complete record.
//!
//! ```
//! use asyncprof_format::{read_bytes, Header, RunWriter, Snapshot};
//!
//! # fn main() -> Result<(), asyncprof_format::Error> {
//! let mut bytes = Vec::new();
//! let mut writer = RunWriter::new(&mut bytes, &Header::new("demo"))?;
//! writer.write_snapshot(&Snapshot::default())?;
//! drop(writer);
//!
//! // Cut the file in the middle of its last record: the header survives, with a warning.
//! let run = read_bytes(&bytes[..bytes.len() - 3])?;
//! assert_eq!(run.header.program, "demo");
//! assert!(run.truncated);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! ```text
//! file   = magic "APROFRUN" | format version (u32 LE) | frame*
//! frame  = 0xA7 | kind (u8) | payload length (u32 LE) | payload CRC-32 (u32 LE)
//!        | CRC-32 of the 10 bytes before it (u32 LE) | payload (JSON)
//! ```
//!
//! The first frame is always the header record; a later header record supersedes it (format
//! version 2 on). Every frame carries two checksums, so a
//! flipped byte anywhere is reported as damage at a byte offset, and a frame whose declared
//! length runs past the end of the file is a truncated tail (a warning), never an allocation.
//!
//! A run whose file reaches its size limit ([`Config::max_file_bytes`]) goes on in a new file:
//! the full one ends with a [`Continued`] record (kind 6: where the run goes on) and the new one
//! starts with the magic, the version and a header whose [`Header::part`] counts up. Each part
//! reads on its own; [`join_parts`] reads the parts of one run as one. Readers that predate
//! parts skip the `Continued` record with a warning, as they skip any record kind they do not
//! know.
//!
//! # Feature flags
//!
//! None.
//!
//! # Limitations
//!
//! - A frame's payload is at most [`MAX_FRAME_LEN`] bytes; the writer refuses larger records.
//! - The reader keeps the last snapshot whole and a small time series point of every other one,
//!   so memory is bounded by the largest record, not the length of the run.
#![forbid(unsafe_code)]

pub mod culprit;
mod error;
mod hist;
mod kind;
mod read;
mod types;
mod write;

pub use error::{Error, Result};
pub use hist::Histogram;
pub use kind::{
    begins_in_a_call, call_wrapper, gives_memory_back, mostly_outside_a_runtime,
    mostly_waits_on_the_allocator, mostly_without_a_worker, never_in_a_current_thread_block_on,
    preempted, samples_at_a_short_call, samples_placing_no_line, StallKind, CROWDED_SHARE,
    IN_A_CALL_NS, NEVER_RETURNED_NS, PREEMPTED_CPU_SHARE,
};
pub use read::{
    join_parts, read_bytes, read_path, LocationPoint, Record, RunFile, RunReader, SeriesPoint,
    MAX_DEPTH_POINTS, SERIES_LOCATIONS,
};
pub use types::previous_part_path;
pub use types::{
    Config, Continued, CpuProfile, DepthPoint, Flavor, Frame, Header, LoadPoint, LocationStats,
    LossCounters, QueueKind, QueueStats, RuntimeInfo, RuntimeStats, ScheduleSource, Snapshot,
    SourceLocation, StackSample, StageStats, StallClass, StallPart, StallRecord, StallTotals,
    TaskStats, Tier, WorkerStats, DEFAULT_MAX_FILE_BYTES,
};
pub use write::{encode_frame, end_frame, preamble, RecordKind, RunWriter};

/// The format version this crate writes and the newest it reads (it reads every older one).
///
/// Version 2 writes the header at start, before the tier and the runtime are known
/// ([`Tier::Unknown`]), and appends the header again when they are; a version 1 reader would
/// take such a file for damaged, so it is told the file is newer instead.
pub const FORMAT_VERSION: u32 = 2;

/// The eight bytes every run file starts with.
pub const MAGIC: &[u8; 8] = b"APROFRUN";

/// The largest payload one frame may carry (64 MiB). A longer length field is damage.
pub const MAX_FRAME_LEN: u32 = 64 << 20;

/// The byte that opens every frame.
pub(crate) const FRAME_MARKER: u8 = 0xA7;

/// Bytes of a frame before its payload.
pub(crate) const FRAME_HEADER_LEN: usize = 14;

/// Bytes of the file preamble: magic and format version.
pub(crate) const PREAMBLE_LEN: usize = 12;
