use std::path::Path;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::write::RecordKind;
use crate::{
    DepthPoint, Error, Header, Result, Snapshot, FORMAT_VERSION, FRAME_HEADER_LEN, FRAME_MARKER,
    MAGIC, MAX_FRAME_LEN, PREAMBLE_LEN,
};

/// One point of a run's time series, taken from every snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The spawn locations with the most live tasks at that moment (at most
    /// [`SERIES_LOCATIONS`]), with their tasks spawned and completed so far.
    pub locations: Vec<LocationPoint>,
}

/// Spawn locations kept per series point: the ones with the most live tasks.
pub const SERIES_LOCATIONS: usize = 8;

/// One spawn location's tasks at one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LocationPoint {
    /// The spawn location.
    pub location: crate::SourceLocation,
    /// Tasks spawned there so far.
    pub spawned: u64,
    /// Of them, completed so far.
    pub completed: u64,
}

impl LocationPoint {
    /// Tasks spawned there and alive at that moment.
    pub fn alive(&self) -> u64 {
        self.spawned.saturating_sub(self.completed)
    }
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
    /// Set when this file is a part of the run that ended at the file's size limit: where the
    /// run goes on ([`RunFile::header`]'s `part` says which part this one is).
    pub continued: Option<crate::Continued>,
    /// Things a reader should know: a truncated tail, records of unknown kinds skipped.
    pub warnings: Vec<String>,
    /// Every stall, in order of id, each as of its latest record.
    pub stalls: Vec<crate::StallRecord>,
    /// Every queue's depth over the run, by queue id, joined from all snapshots. Long runs
    /// keep at most [`MAX_DEPTH_POINTS`] points per queue, evenly thinned.
    pub queue_depths: BTreeMap<u64, Vec<DepthPoint>>,
    /// The whole run's CPU profile, when one was recorded: written when recording stops, or,
    /// stopped at its spill limit, once folded and again at the end (the last one read wins).
    pub cpu_profile: Option<crate::CpuProfile>,
    /// The runtimes' load over the run, joined from all snapshots, in order. Long runs keep
    /// at most [`MAX_DEPTH_POINTS`] points, evenly thinned.
    pub load: Vec<crate::LoadPoint>,
}

impl RunFile {
    /// Whether `other` is a part of the same run (the same program, process and start): the
    /// files a run goes on in past its size limit ([`crate::Header::part`]).
    pub fn same_run(&self, other: &RunFile) -> bool {
        self.header.same_run(&other.header)
    }
}

/// The parts of one run ([`RunFile::same_run`]), in any order, as one run: the newest part's
/// header and snapshot (snapshots are cumulative), every part's stalls (a stall in two parts
/// as of its later record), series, load and queue depths in order, and a warning naming the
/// parts joined and any missing between them. `None` when `parts` is empty.
pub fn join_parts(mut parts: Vec<RunFile>) -> Option<RunFile> {
    parts.sort_by_key(|p| p.header.part);
    let mut parts = parts.into_iter();
    let mut run = parts.next()?;
    let first = run.header.part;
    let mut numbers = vec![first];
    let mut stalls: BTreeMap<u64, crate::StallRecord> = std::mem::take(&mut run.stalls)
        .into_iter()
        .map(|s| (s.id, s))
        .collect();
    for part in parts {
        numbers.push(part.header.part);
        stalls.extend(part.stalls.into_iter().map(|s| (s.id, s)));
        let last = run.series.last().map_or(0, |p| p.elapsed_ns);
        run.series
            .extend(part.series.into_iter().filter(|p| p.elapsed_ns > last));
        let last = run.load.last().map_or(0, |p| p.elapsed_ns);
        run.load
            .extend(part.load.into_iter().filter(|p| p.elapsed_ns > last));
        for (id, points) in part.queue_depths {
            let mine = run.queue_depths.entry(id).or_default();
            let last = mine.last().map_or(0, |p| p.elapsed_ns);
            mine.extend(points.into_iter().filter(|p| p.elapsed_ns > last));
        }
        run.warnings.extend(part.warnings);
        run.header = crate::Header {
            part: first,
            ..part.header
        };
        run.snapshot = part.snapshot.or(run.snapshot);
        run.cpu_profile = part.cpu_profile.or(run.cpu_profile);
        run.truncated = part.truncated;
        run.ended = part.ended;
        run.continued = part.continued;
    }
    run.stalls = stalls.into_values().collect();
    // Each part was thinned to the reader's cap on its own: the joined series are too.
    for points in run.queue_depths.values_mut() {
        thin_to_cap(points);
    }
    thin_to_cap(&mut run.load);
    if numbers.len() > 1 {
        let list: Vec<String> = numbers.iter().map(u32::to_string).collect();
        let missing = numbers.windows(2).any(|w| w[1] > w[0] + 1);
        run.warnings.push(format!(
            "parts {} of one run read as one{}",
            list.join(", "),
            if missing {
                "; parts between them are missing, and their stalls with them"
            } else {
                ""
            }
        ));
    }
    Some(run)
}

/// Drop every other point of `points` until at most [`MAX_DEPTH_POINTS`] are left.
fn thin_to_cap<T>(points: &mut Vec<T>) {
    while points.len() > MAX_DEPTH_POINTS {
        drop_every_other(points);
    }
}

/// Keep the first, third, fifth... of `points`.
fn drop_every_other<T>(points: &mut Vec<T>) {
    let mut index = 0usize;
    points.retain(|_| {
        index += 1;
        !index.is_multiple_of(2)
    });
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
    fn push<T: Copy>(&mut self, series: &mut Vec<T>, new: &[T]) {
        self.stride = self.stride.max(1);
        for p in new {
            if self.seen.is_multiple_of(self.stride) {
                series.push(*p);
                if series.len() >= MAX_DEPTH_POINTS {
                    // Kept points sit at multiples of the stride; keep every other one.
                    drop_every_other(series);
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
    let mut reader = RunReader::new();
    reader.push(bytes, |_| {})?;
    reader.finish()
}

/// One record of a run file, as [`RunReader::push`] hands it over before folding it in.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Record {
    /// A header: the first record, or a later one that supersedes it.
    Header(Header),
    /// A snapshot, with its queue depth points still in it.
    Snapshot(Box<Snapshot>),
    /// A stall, new or updating an earlier record of the same id.
    Stall(Box<crate::StallRecord>),
    /// The whole run's CPU profile.
    CpuProfile(Box<crate::CpuProfile>),
    /// The run ended normally.
    End,
    /// This part of the run ended at the file's size limit; the run goes on in another file.
    Continued(crate::Continued),
    /// A record of a kind this reader does not know (a newer writer): skipped.
    Unknown {
        /// Its kind byte.
        code: u8,
        /// Where its frame starts.
        offset: u64,
    },
}

/// Reads a run file while it grows: hand it the bytes appended since the last call.
///
/// [`read_bytes`] is one [`RunReader::push`] of the whole file; a viewer that follows a
/// running service's file pushes each new piece as it appears. A record cut at the end of
/// the bytes pushed so far waits for the rest; damage is an error, and the reader keeps
/// what it read before it.
///
/// ```
/// use asyncprof_format::{Header, RunReader, RunWriter, Snapshot};
///
/// # fn main() -> Result<(), asyncprof_format::Error> {
/// let mut bytes = Vec::new();
/// let mut writer = RunWriter::new(&mut bytes, &Header::new("svc"))?;
/// writer.write_snapshot(&Snapshot::default())?;
/// drop(writer);
///
/// let mut reader = RunReader::new();
/// let mut records = 0;
/// for piece in bytes.chunks(7) {
///     reader.push(piece, |_| records += 1)?;
/// }
/// assert_eq!(records, 2); // the header and the snapshot
/// assert_eq!(reader.header().map(|h| h.program.as_str()), Some("svc"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default)]
pub struct RunReader {
    /// Bytes of a record not yet complete (and, at the start, of the preamble).
    pending: Vec<u8>,
    /// The file offset of `pending[0]`.
    offset: u64,
    /// The run so far, once its header is read (its `stalls` stay empty until `finish`).
    run: Option<RunFile>,
    stalls: BTreeMap<u64, crate::StallRecord>,
    thinning: BTreeMap<u64, Thinning>,
    load_thinning: Thinning,
    /// The error that stopped reading: every later push returns it again.
    failed: Option<String>,
}

impl RunReader {
    /// A reader at the start of a file.
    pub fn new() -> Self {
        RunReader::default()
    }

    /// Decode the records completed by `bytes` (the next bytes of the file), call `seen` with
    /// each before folding it into the run, and keep an incomplete last record for the next
    /// push.
    ///
    /// # Errors
    ///
    /// [`Error::NotARunFile`], [`Error::UnsupportedVersion`], [`Error::Corrupt`] or
    /// [`Error::Decode`]; after an error the reader stays stopped at the damage (later pushes
    /// fail with [`Error::Corrupt`] at the same place), and what it read before stays.
    pub fn push(&mut self, bytes: &[u8], mut seen: impl FnMut(&Record)) -> Result<()> {
        if let Some(failed) = &self.failed {
            return Err(Error::Corrupt {
                offset: self.offset,
                expected: format!("nothing more after the damage already found ({failed})"),
            });
        }
        // Decode straight from `bytes` when nothing waits before them (one push of a whole
        // file copies nothing but its cut tail).
        let result = if self.pending.is_empty() {
            let (used, result) = self.decode(bytes, &mut seen);
            self.pending.extend_from_slice(&bytes[used..]);
            result
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(bytes);
            let (used, result) = self.decode(&pending, &mut seen);
            pending.drain(..used);
            self.pending = pending;
            result
        };
        if let Err(e) = &result {
            self.failed = Some(e.to_string());
        }
        result
    }

    /// Decode and fold in, one by one, the complete records at the start of `bytes` (the
    /// file from [`RunReader::complete_bytes`] on): the bytes used, and the error that
    /// stopped it.
    fn decode(&mut self, bytes: &[u8], seen: &mut impl FnMut(&Record)) -> (usize, Result<()>) {
        let base = self.offset;
        let mut pos = 0usize;
        if base == 0 {
            if let Err(e) = check_preamble(bytes) {
                return (0, Err(e));
            }
            if bytes.len() < PREAMBLE_LEN {
                return (0, Ok(()));
            }
            pos = PREAMBLE_LEN;
        }
        let mut frames = Frames { bytes, pos };
        let result = loop {
            let (offset, code, payload) = match frames.next_frame(base) {
                Ok(Next::Frame {
                    offset,
                    code,
                    payload,
                }) => (base + offset as u64, code, payload),
                Ok(Next::End) => break Ok(()),
                Err(e) => break Err(e),
            };
            let record = match RecordKind::from_code(code) {
                Some(RecordKind::Header) => {
                    decode(offset, RecordKind::Header, payload).map(Record::Header)
                }
                _ if self.run.is_none() => Err(Error::Corrupt {
                    offset,
                    expected: "the header record as the first frame".into(),
                }),
                Some(RecordKind::Snapshot) => decode(offset, RecordKind::Snapshot, payload)
                    .map(|s| Record::Snapshot(Box::new(s))),
                Some(RecordKind::Stall) => {
                    decode(offset, RecordKind::Stall, payload).map(|s| Record::Stall(Box::new(s)))
                }
                Some(RecordKind::CpuProfile) => decode(offset, RecordKind::CpuProfile, payload)
                    .map(|p| Record::CpuProfile(Box::new(p))),
                Some(RecordKind::End) => Ok(Record::End),
                Some(RecordKind::Continued) => {
                    decode(offset, RecordKind::Continued, payload).map(Record::Continued)
                }
                None => Ok(Record::Unknown { code, offset }),
            };
            match record {
                Ok(record) => {
                    pos = frames.pos;
                    self.offset = base + pos as u64;
                    seen(&record);
                    self.apply(record);
                }
                Err(e) => break Err(e),
            }
        };
        self.offset = base + pos as u64;
        (pos, result)
    }

    /// Fold one record into the run.
    fn apply(&mut self, record: Record) {
        let Some(run) = self.run.as_mut() else {
            if let Record::Header(header) = record {
                self.run = Some(RunFile {
                    header,
                    snapshot: None,
                    series: Vec::new(),
                    truncated: false,
                    ended: false,
                    continued: None,
                    warnings: Vec::new(),
                    stalls: Vec::new(),
                    queue_depths: BTreeMap::new(),
                    cpu_profile: None,
                    load: Vec::new(),
                });
            }
            return;
        };
        match record {
            Record::Header(header) => run.header = header,
            Record::Snapshot(mut snap) => {
                for q in &mut snap.queues {
                    let points = std::mem::take(&mut q.points);
                    self.thinning
                        .entry(q.id)
                        .or_default()
                        .push(run.queue_depths.entry(q.id).or_default(), &points);
                }
                let load = std::mem::take(&mut snap.load);
                self.load_thinning.push(&mut run.load, &load);
                let mut locations: Vec<LocationPoint> = snap
                    .locations
                    .iter()
                    .filter(|l| l.tasks_spawned > l.tasks_completed)
                    .map(|l| LocationPoint {
                        location: l.location.clone(),
                        spawned: l.tasks_spawned,
                        completed: l.tasks_completed,
                    })
                    .collect();
                locations.sort_by_key(|l| std::cmp::Reverse(l.alive()));
                locations.truncate(SERIES_LOCATIONS);
                run.series.push(SeriesPoint {
                    elapsed_ns: snap.elapsed_ns,
                    polls: snap.runtime.polls,
                    tasks_spawned: snap.runtime.tasks_spawned,
                    tasks_alive: snap.runtime.tasks_alive,
                    tasks_completed: snap.runtime.tasks_completed,
                    locations,
                });
                run.snapshot = Some(*snap);
            }
            Record::Stall(stall) => {
                self.stalls.insert(stall.id, *stall);
            }
            Record::CpuProfile(profile) => run.cpu_profile = Some(*profile),
            Record::End => run.ended = true,
            Record::Continued(c) => run.continued = Some(c),
            Record::Unknown { code, offset } => run.warnings.push(format!(
                "skipped a record of unknown kind {code} at byte {offset}"
            )),
        }
    }

    /// The latest header, once the first is read.
    pub fn header(&self) -> Option<&Header> {
        self.run.as_ref().map(|r| &r.header)
    }

    /// The run as read so far: `None` before its header is complete. Its
    /// [`RunFile::stalls`] is empty here: see [`RunReader::stalls`].
    pub fn run(&self) -> Option<&RunFile> {
        self.run.as_ref()
    }

    /// Every stall so far, in order of id, each as of its latest record.
    pub fn stalls(&self) -> impl Iterator<Item = &crate::StallRecord> {
        self.stalls.values()
    }

    /// Bytes read so far, up to the last complete record.
    pub fn complete_bytes(&self) -> u64 {
        self.offset
    }

    /// Bytes of an incomplete last record (or preamble) waiting for the rest.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Bytes still missing from the incomplete last record, as far as its frame says
    /// (at least the rest of its frame header when that is cut too); 0 when none.
    fn missing(&self) -> u64 {
        let rest = &self.pending;
        if rest.is_empty() {
            return 0;
        }
        if rest.len() < FRAME_HEADER_LEN {
            return (FRAME_HEADER_LEN - rest.len()) as u64;
        }
        let len = u32::from_le_bytes([rest[2], rest[3], rest[4], rest[5]]) as usize;
        (len + FRAME_HEADER_LEN).saturating_sub(rest.len()) as u64
    }

    /// The run as read, at the end of the file: a record cut at the end makes it
    /// [`RunFile::truncated`], with a warning.
    ///
    /// # Errors
    ///
    /// [`Error::TruncatedHeader`] when the header never completed, or the error that stopped
    /// an earlier push.
    pub fn finish(self) -> Result<RunFile> {
        let len = self.offset + self.pending.len() as u64;
        let missing = self.missing();
        let Some(mut run) = self.run else {
            return Err(Error::TruncatedHeader { len });
        };
        if !self.pending.is_empty() {
            run.truncated = true;
            run.warnings.push(format!(
                "run file is truncated at byte {}: its last record is missing {missing} bytes \
                 (the process was killed or is still running); everything before it is kept",
                self.offset
            ));
        }
        run.stalls = self.stalls.into_values().collect();
        Ok(run)
    }
}

/// Check the magic and version at the start of a file, as far as `bytes` reach.
fn check_preamble(bytes: &[u8]) -> Result<()> {
    let magic_present = bytes.len().min(MAGIC.len());
    if bytes[..magic_present] != MAGIC[..magic_present] {
        return Err(Error::NotARunFile);
    }
    if bytes.len() < PREAMBLE_LEN {
        return Ok(());
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
    Ok(())
}

fn decode<'a, T: Deserialize<'a>>(offset: u64, kind: RecordKind, payload: &'a [u8]) -> Result<T> {
    serde_json::from_slice(payload).map_err(|source| Error::Decode {
        offset,
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
        code: u8,
        payload: &'a [u8],
    },
    /// The bytes end here, at a frame boundary or inside a frame.
    End,
}

impl<'a> Frames<'a> {
    /// The next complete frame at `pos`, or where the bytes end. `base` is the file offset
    /// of `bytes[0]`, for errors.
    fn next_frame(&mut self, base: u64) -> Result<Next<'a>> {
        let offset = self.pos;
        let rest = &self.bytes[offset..];
        if rest.is_empty() {
            return Ok(Next::End);
        }
        let corrupt = |at: usize, expected: &str| Error::Corrupt {
            offset: base + at as u64,
            expected: expected.to_string(),
        };
        if rest[0] != FRAME_MARKER {
            return Err(corrupt(offset, "a frame marker (0xa7)"));
        }
        if rest.len() < FRAME_HEADER_LEN {
            return Ok(Next::End);
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
            return Ok(Next::End);
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
            code: rest[1],
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn joined_series_are_thinned_to_the_cap() {
        let cap = super::MAX_DEPTH_POINTS;
        // Two parts' worth, each at the cap: every other point goes, in order.
        let mut points: Vec<usize> = (0..2 * cap).collect();
        super::thin_to_cap(&mut points);
        assert_eq!(points.len(), cap);
        assert_eq!(&points[..3], &[0, 2, 4]);
        let mut few: Vec<usize> = (0..10).collect();
        super::thin_to_cap(&mut few);
        assert_eq!(few.len(), 10, "under the cap: untouched");
    }
}
