use std::path::Path;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::write::RecordKind;
use crate::{
    DepthPoint, Error, Header, Result, Snapshot, FORMAT_VERSION, FRAME_HEADER_LEN, FRAME_MARKER,
    MAGIC, MAX_FRAME_LEN, PREAMBLE_LEN,
};

/// One point of a run's time series, taken from every snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SeriesPoint {
    /// Time since the run started.
    pub elapsed_ns: u64,
    /// Polls so far.
    pub polls: u64,
    /// Tasks spawned so far.
    pub tasks_spawned: u64,
    /// Tasks alive at that moment.
    pub tasks_alive: u64,
    /// Tasks completed so far.
    pub tasks_completed: u64,
}

/// Everything read from a run file.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunFile {
    /// The latest header record: the first one, written when recording started, superseded
    /// by any later one (written when the tier and the runtime became known).
    pub header: Header,
    /// The newest snapshot (cumulative, so it holds the whole run up to its moment).
    pub snapshot: Option<Snapshot>,
    /// A point of every snapshot, in order.
    pub series: Vec<SeriesPoint>,
    /// True when the file ends in the middle of a record: the process was killed or is
    /// still writing. Everything before the cut is kept.
    pub truncated: bool,
    /// True when the run's end record was written (the recorder stopped normally).
    pub ended: bool,
    /// Things a reader should know: a truncated tail, records of unknown kinds skipped.
    pub warnings: Vec<String>,
    /// Every stall, in order of id, each as of its latest record.
    pub stalls: Vec<crate::StallRecord>,
    /// Every queue's depth over the run, by queue id, joined from all snapshots. Long runs
    /// keep at most [`MAX_DEPTH_POINTS`] points per queue, evenly thinned.
    pub queue_depths: BTreeMap<u64, Vec<DepthPoint>>,
    /// The whole run's CPU profile, when one was recorded (written when recording stops).
    pub cpu_profile: Option<crate::CpuProfile>,
}

/// The most depth points the reader keeps per queue; beyond it every other point is dropped
/// and the spacing doubles.
pub const MAX_DEPTH_POINTS: usize = 4096;

/// Which depth points of one queue the reader keeps: one in `stride` of those seen.
#[derive(Debug, Default)]
struct Thinning {
    seen: usize,
    stride: usize,
}

impl Thinning {
    /// Append `new` points to a series, thinning it to stay within [`MAX_DEPTH_POINTS`].
    fn push(&mut self, series: &mut Vec<DepthPoint>, new: &[DepthPoint]) {
        self.stride = self.stride.max(1);
        for p in new {
            if self.seen.is_multiple_of(self.stride) {
                series.push(*p);
                if series.len() >= MAX_DEPTH_POINTS {
                    // Kept points sit at multiples of the stride; keep every other one.
                    let mut index = 0usize;
                    series.retain(|_| {
                        index += 1;
                        !index.is_multiple_of(2)
                    });
                    self.stride *= 2;
                }
            }
            self.seen += 1;
        }
    }
}

/// Read a run file from disk.
///
/// # Errors
///
/// [`Error::Io`] when the file cannot be read, and every error of [`read_bytes`].
pub fn read_path(path: impl AsRef<Path>) -> Result<RunFile> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_bytes(&bytes)
}

/// Read a run file from its bytes.
///
/// A file that ends in the middle of a record is read up to that record and marked
/// [`RunFile::truncated`]. Damage anywhere else is an error naming its byte offset.
///
/// # Errors
///
/// [`Error::NotARunFile`], [`Error::TruncatedHeader`], [`Error::UnsupportedVersion`],
/// [`Error::Corrupt`] or [`Error::Decode`].
pub fn read_bytes(bytes: &[u8]) -> Result<RunFile> {
    let len = bytes.len() as u64;
    let magic_present = bytes.len().min(MAGIC.len());
    if bytes[..magic_present] != MAGIC[..magic_present] {
        return Err(Error::NotARunFile);
    }
    if bytes.len() < PREAMBLE_LEN {
        return Err(Error::TruncatedHeader { len });
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version == 0 {
        return Err(Error::Corrupt {
            offset: 8,
            expected: "a format version of at least 1".into(),
        });
    }
    if version > FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }

    let mut frames = Frames {
        bytes,
        pos: PREAMBLE_LEN,
    };
    let header = match frames.next_frame()? {
        Next::Frame {
            offset,
            kind: Some(RecordKind::Header),
            payload,
        } => decode::<Header>(offset, RecordKind::Header, payload)?,
        Next::Frame { offset, .. } => {
            return Err(Error::Corrupt {
                offset: offset as u64,
                expected: "the header record as the first frame".into(),
            })
        }
        Next::End | Next::Truncated { .. } => return Err(Error::TruncatedHeader { len }),
    };

    let mut run = RunFile {
        header,
        snapshot: None,
        series: Vec::new(),
        truncated: false,
        ended: false,
        warnings: Vec::new(),
        stalls: Vec::new(),
        queue_depths: BTreeMap::new(),
        cpu_profile: None,
    };
    let mut thinning: BTreeMap<u64, Thinning> = BTreeMap::new();
    let mut stalls = std::collections::BTreeMap::new();
    loop {
        match frames.next_frame()? {
            Next::End => break,
            Next::Truncated { offset, missing } => {
                run.truncated = true;
                run.warnings.push(format!(
                    "run file is truncated at byte {offset}: its last record is missing {missing} bytes \
                     (the process was killed or is still running); everything before it is kept"
                ));
                break;
            }
            Next::Frame {
                offset,
                kind,
                payload,
            } => match kind {
                Some(RecordKind::Snapshot) => {
                    let mut snap = decode::<Snapshot>(offset, RecordKind::Snapshot, payload)?;
                    for q in &mut snap.queues {
                        let points = std::mem::take(&mut q.points);
                        thinning
                            .entry(q.id)
                            .or_default()
                            .push(run.queue_depths.entry(q.id).or_default(), &points);
                    }
                    run.series.push(SeriesPoint {
                        elapsed_ns: snap.elapsed_ns,
                        polls: snap.runtime.polls,
                        tasks_spawned: snap.runtime.tasks_spawned,
                        tasks_alive: snap.runtime.tasks_alive,
                        tasks_completed: snap.runtime.tasks_completed,
                    });
                    run.snapshot = Some(snap);
                }
                Some(RecordKind::End) => run.ended = true,
                Some(RecordKind::CpuProfile) => {
                    run.cpu_profile = Some(decode::<crate::CpuProfile>(
                        offset,
                        RecordKind::CpuProfile,
                        payload,
                    )?);
                }
                Some(RecordKind::Stall) => {
                    let stall = decode::<crate::StallRecord>(offset, RecordKind::Stall, payload)?;
                    stalls.insert(stall.id, stall);
                }
                // The facts learnt after the start (tier, flavor, workers): the latest wins.
                Some(RecordKind::Header) => {
                    run.header = decode::<Header>(offset, RecordKind::Header, payload)?;
                }
                None => run.warnings.push(format!(
                    "skipped a record of unknown kind {} at byte {offset}",
                    bytes[offset + 1]
                )),
            },
        }
    }
    run.stalls = stalls.into_values().collect();
    Ok(run)
}

fn decode<'a, T: Deserialize<'a>>(offset: usize, kind: RecordKind, payload: &'a [u8]) -> Result<T> {
    serde_json::from_slice(payload).map_err(|source| Error::Decode {
        offset: offset as u64,
        kind: kind.name(),
        source,
    })
}

struct Frames<'a> {
    bytes: &'a [u8],
    pos: usize,
}

enum Next<'a> {
    Frame {
        offset: usize,
        kind: Option<RecordKind>,
        payload: &'a [u8],
    },
    Truncated {
        offset: usize,
        missing: u64,
    },
    End,
}

impl<'a> Frames<'a> {
    fn next_frame(&mut self) -> Result<Next<'a>> {
        let offset = self.pos;
        let rest = &self.bytes[offset..];
        if rest.is_empty() {
            return Ok(Next::End);
        }
        let corrupt = |at: usize, expected: &str| Error::Corrupt {
            offset: at as u64,
            expected: expected.to_string(),
        };
        if rest[0] != FRAME_MARKER {
            return Err(corrupt(offset, "a frame marker (0xa7)"));
        }
        if rest.len() < FRAME_HEADER_LEN {
            return Ok(Next::Truncated {
                offset,
                missing: (FRAME_HEADER_LEN - rest.len()) as u64,
            });
        }
        let word = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
        if crc32fast::hash(&rest[..10]) != word(10) {
            return Err(corrupt(offset, "a frame header matching its checksum"));
        }
        let len = word(2);
        if len > MAX_FRAME_LEN {
            return Err(corrupt(
                offset + 2,
                &format!("a frame length of at most {MAX_FRAME_LEN} bytes, found {len}"),
            ));
        }
        let len = len as usize;
        let body = &rest[FRAME_HEADER_LEN..];
        if body.len() < len {
            return Ok(Next::Truncated {
                offset,
                missing: (len - body.len()) as u64,
            });
        }
        let payload = &body[..len];
        if crc32fast::hash(payload) != word(6) {
            return Err(corrupt(
                offset + FRAME_HEADER_LEN,
                "a record payload matching its checksum",
            ));
        }
        self.pos = offset + FRAME_HEADER_LEN + len;
        Ok(Next::Frame {
            offset,
            kind: RecordKind::from_code(rest[1]),
            payload,
        })
    }
}
