//! Following a run file while another process writes it: new bytes are read as they appear,
//! a file cut in the middle of a record waits for the rest, a file truncated or replaced
//! under the viewer is read again from its start, and damage stops reading with what came
//! before kept. The service is never told: the viewer only reads the file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use asyncprof_format::{Header, Record, RunReader, Snapshot, StallRecord};

/// The most snapshots kept for stepping through time; beyond it every other one is dropped
/// and the spacing doubles, so a long run keeps an even sample of its whole length.
pub(crate) const MAX_KEPT_SNAPSHOTS: usize = 240;

/// The most bytes read from the file in one poll, so that opening a large finished file
/// keeps the screen (and `q`) responsive.
const MAX_READ_PER_POLL: usize = 8 << 20;

/// The snapshots of a run: an evenly thinned sample for stepping through time, and the two
/// newest, whose difference gives live rates.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    /// Thinned: one in `stride` of the snapshots seen, oldest first.
    pub(crate) kept: Vec<Arc<Snapshot>>,
    stride: usize,
    seen: usize,
    /// The newest snapshot and the one before it.
    pub(crate) latest: Option<Arc<Snapshot>>,
    pub(crate) previous: Option<Arc<Snapshot>>,
}

impl Timeline {
    fn push(&mut self, snapshot: &Snapshot) {
        let mut snapshot = snapshot.clone();
        // Depth points are joined by the reader; the viewer shows depths from the queues.
        for q in &mut snapshot.queues {
            q.points = Vec::new();
        }
        let snapshot = Arc::new(snapshot);
        self.stride = self.stride.max(1);
        if self.seen.is_multiple_of(self.stride) {
            self.kept.push(snapshot.clone());
            if self.kept.len() >= MAX_KEPT_SNAPSHOTS {
                let mut index = 0usize;
                self.kept.retain(|_| {
                    index += 1;
                    !index.is_multiple_of(2)
                });
                self.stride *= 2;
            }
        }
        self.seen += 1;
        self.previous = self.latest.replace(snapshot);
    }
}

/// What the viewer knows of the process that writes the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writer {
    /// The process of the header's pid has the file open: it is recording.
    Recording,
    /// The run's end record was read: recording stopped normally.
    Ended,
    /// No process has the file open and the run did not end: the process was killed or
    /// crashed (or the file was copied from elsewhere).
    Gone,
    /// Not known yet (no header read), or the process cannot be inspected (another user's).
    Unknown,
}

/// A run file being followed.
pub(crate) struct Follower {
    path: PathBuf,
    file: Option<File>,
    /// (device, inode) of the open file, to notice a new file at the same path.
    identity: (u64, u64),
    reader: RunReader,
    /// Bytes read from the file so far.
    read: u64,
    pub(crate) timeline: Timeline,
    /// Every stall so far by id, each as of its latest record.
    pub(crate) stalls: BTreeMap<u64, StallRecord>,
    /// Stall ids whose records changed since the caller last took them.
    changed: Vec<u64>,
    /// Why reading stopped: damage, or a file that cannot be read.
    pub(crate) problem: Option<String>,
    /// Times the file was found truncated or replaced and read again from its start.
    pub(crate) restarts: u32,
    /// Parts of the run followed into after the first (`ASYNCPROF_MAX_FILE_MB`: a file
    /// that ends with a `Continued` record goes on in a new file at its path).
    pub(crate) parts: u32,
    /// The open file's `Continued` record, when it ended with one: the run goes on at the
    /// path, in part `next_part`.
    continued: Option<asyncprof_format::Continued>,
    /// Since when nothing is at the path (between a part's rename and the next file).
    missing_since: Option<Instant>,
    writer: Writer,
    last_writer_check: Option<Instant>,
    /// When the file last grew (or was opened).
    last_growth: Instant,
    /// How long a file without a complete header may stay as it is before the viewer says
    /// nothing is writing it.
    header_wait: Duration,
}

/// How long a file without a complete header may stay unchanged: a recording writes its
/// header as it starts, so a file still without one this long after is not being written.
const HEADER_WAIT: Duration = Duration::from_secs(5);

impl Follower {
    /// Open `path` for following.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened.
    pub(crate) fn open(path: &Path) -> Result<Follower> {
        let (file, identity) = open(path)?;
        Ok(Follower {
            path: path.to_path_buf(),
            file: Some(file),
            identity,
            reader: RunReader::new(),
            read: 0,
            timeline: Timeline::default(),
            stalls: BTreeMap::new(),
            changed: Vec::new(),
            problem: None,
            restarts: 0,
            parts: 0,
            continued: None,
            missing_since: None,
            writer: Writer::Unknown,
            last_writer_check: None,
            last_growth: Instant::now(),
            header_wait: HEADER_WAIT,
        })
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The latest header, once read.
    pub(crate) fn header(&self) -> Option<&Header> {
        self.reader.header()
    }

    /// Bytes read up to the last complete record, and bytes of an incomplete one after it.
    pub(crate) fn bytes(&self) -> (u64, usize) {
        (self.reader.complete_bytes(), self.reader.pending_bytes())
    }

    /// What is known of the process writing the file.
    pub(crate) fn writer(&self) -> Writer {
        self.writer
    }

    /// True when the run will not grow any more: it ended, its process is gone, or the file
    /// is damaged.
    pub(crate) fn finished(&self) -> bool {
        matches!(self.writer, Writer::Ended | Writer::Gone) || self.problem.is_some()
    }

    /// Stall ids whose records arrived or changed since the last call.
    pub(crate) fn take_changed(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.changed)
    }

    /// Read what was appended since the last poll. True when anything new was read (or the
    /// writer's state changed).
    pub(crate) fn poll(&mut self) -> bool {
        let before = (
            self.read,
            self.writer,
            self.problem.is_some(),
            self.restarts,
        );
        if self.problem.is_none() {
            if let Err(e) = self.read_more() {
                self.problem = Some(format!("{e:#}"));
            }
        }
        self.check_writer();
        before
            != (
                self.read,
                self.writer,
                self.problem.is_some(),
                self.restarts,
            )
    }

    fn read_more(&mut self) -> Result<()> {
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => {
                self.missing_since = None;
                meta
            }
            // Nothing at the path: a run going on in a new part is between the rename of the
            // full file and the creation of the next (or the file was removed while its
            // process still writes it). The open file is still read; a path empty for long
            // with nothing more to read is a problem.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.file.is_some() => {
                let since = *self.missing_since.get_or_insert_with(Instant::now);
                self.read_open_file()?;
                if since.elapsed() >= self.header_wait
                    && self.last_growth.elapsed() >= self.header_wait
                {
                    anyhow::bail!(
                        "run file {} is gone (removed or renamed) and nothing has been \
                         written to it for {} s",
                        self.path.display(),
                        self.header_wait.as_secs()
                    );
                }
                return Ok(());
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read run file {}", self.path.display()))
            }
        };
        let replaced = (meta.dev(), meta.ino()) != self.identity;
        if replaced {
            // What the old file got before it was replaced (its last records, and a
            // `Continued` record when the run goes on in the new one).
            while self.read_open_file()? {}
            match self.continued.clone() {
                Some(c) => {
                    if !self.next_part(&c)? {
                        // The new file has no header yet: looked at again at the next poll.
                        return Ok(());
                    }
                }
                // A new run at the same path: read it from the start.
                None => self.restart()?,
            }
        } else if meta.len() < self.read {
            // The file was cut: read it again from the start.
            self.restart()?;
        }
        self.read_open_file()?;
        Ok(())
    }

    /// Read what was appended to the open file since the last read, up to
    /// [`MAX_READ_PER_POLL`]. True when anything was read.
    fn read_open_file(&mut self) -> Result<bool> {
        let Some(file) = self.file.as_mut() else {
            return Ok(false);
        };
        let mut buf = Vec::new();
        file.seek(SeekFrom::Start(self.read))
            .and_then(|_| file.take(MAX_READ_PER_POLL as u64).read_to_end(&mut buf))
            .with_context(|| format!("cannot read run file {}", self.path.display()))?;
        if buf.is_empty() {
            return Ok(false);
        }
        self.last_growth = Instant::now();
        self.read += buf.len() as u64;
        let mut reader = std::mem::take(&mut self.reader);
        let pushed = reader.push(&buf, |record| self.take_in(record));
        self.reader = reader;
        pushed.with_context(|| format!("cannot read run file {}", self.path.display()))?;
        Ok(true)
    }

    /// One record read: into the stalls, the timeline, or what is known of the run's end.
    fn take_in(&mut self, record: &Record) {
        match record {
            Record::Snapshot(s) => self.timeline.push(s),
            Record::Stall(s) => {
                self.changed.push(s.id);
                self.stalls.insert(s.id, (**s).clone());
            }
            Record::End => self.writer = Writer::Ended,
            Record::Continued(c) => self.continued = Some(c.clone()),
            _ => {}
        }
    }

    /// The file read so far ended with `c` (a `Continued` record) and a new file is at the
    /// path: the run's next part, whose stalls and snapshots join those read so far. A file
    /// of another run there is read from its start instead; when parts went by between two
    /// looks, the one in between (now at `c.previous`) is read first, if it is still there.
    /// False, with nothing changed, while the new file has no header yet.
    fn next_part(&mut self, c: &asyncprof_format::Continued) -> Result<bool> {
        let (mut file, identity) = open(&self.path)?;
        let Some(header) = first_header(&mut file, &self.path)? else {
            return Ok(false);
        };
        if !self.reader.header().is_some_and(|h| h.same_run(&header)) {
            self.restart()?;
            return Ok(true);
        }
        let mut parts = 1;
        if header.part > c.next_part {
            let between = self.path.with_file_name(&c.previous);
            if let Ok((mut f, _)) = open(&between) {
                if first_header(&mut f, &between)?
                    .is_some_and(|h| h.same_run(&header) && h.part == c.next_part)
                {
                    let mut all = Vec::new();
                    f.seek(SeekFrom::Start(0))
                        .and_then(|_| f.read_to_end(&mut all))
                        .with_context(|| format!("cannot read run file {}", between.display()))?;
                    RunReader::new()
                        .push(&all, |record| self.take_in(record))
                        .with_context(|| format!("cannot read run file {}", between.display()))?;
                    parts += 1;
                }
            }
        }
        file.seek(SeekFrom::Start(0))
            .with_context(|| format!("cannot read run file {}", self.path.display()))?;
        self.file = Some(file);
        self.identity = identity;
        self.reader = RunReader::new();
        self.read = 0;
        self.continued = None;
        self.writer = Writer::Unknown;
        self.last_writer_check = None;
        self.parts += parts;
        Ok(true)
    }

    fn restart(&mut self) -> Result<()> {
        let (file, identity) = open(&self.path)?;
        self.file = Some(file);
        self.identity = identity;
        self.reader = RunReader::new();
        self.read = 0;
        self.timeline = Timeline::default();
        self.stalls.clear();
        self.changed.clear();
        self.writer = Writer::Unknown;
        self.continued = None;
        self.restarts += 1;
        Ok(())
    }

    /// Whether the open file holds bytes not read yet.
    fn unread(&self) -> bool {
        self.file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .is_some_and(|m| m.len() > self.read)
    }

    /// Look (at most once a second) whether the header's process still has the file open.
    fn check_writer(&mut self) {
        if self.writer == Writer::Ended {
            return;
        }
        if self
            .last_writer_check
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last_writer_check = Some(Instant::now());
        let Some(pid) = self.reader.header().map(|h| h.pid) else {
            if self.problem.is_none() && self.last_growth.elapsed() >= self.header_wait {
                self.problem = Some(format!(
                    "run file {} holds no complete header ({} bytes) and has not grown for \
                     {} s: its process stopped as recording started, or nothing writes it",
                    self.path.display(),
                    self.read,
                    self.header_wait.as_secs()
                ));
            }
            return;
        };
        // A file that says the run goes on, or that is no longer the one at its path (the
        // process may have moved on to a new part), is not a gone process: the next read
        // follows the path.
        let moved_on = self.continued.is_some()
            || std::fs::metadata(&self.path).map_or(true, |m| (m.dev(), m.ino()) != self.identity);
        self.writer = match holds_file(pid, self.identity) {
            Some(true) => Writer::Recording,
            Some(false) if moved_on => Writer::Unknown,
            // Gone, but what it wrote is not all read yet (a poll reads at most
            // MAX_READ_PER_POLL): the run is finished only once it is.
            Some(false) if self.unread() => Writer::Unknown,
            Some(false) => Writer::Gone,
            None => Writer::Unknown,
        };
    }
}

/// The first header in `file` (read from its start, at most 1 MiB), or `None` when none is
/// complete yet.
fn first_header(file: &mut File, path: &Path) -> Result<Option<Header>> {
    let mut buf = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.take(1 << 20).read_to_end(&mut buf))
        .with_context(|| format!("cannot read run file {}", path.display()))?;
    let mut header = None;
    RunReader::new()
        .push(&buf, |record| {
            if let Record::Header(h) = record {
                header.get_or_insert_with(|| h.clone());
            }
        })
        .with_context(|| format!("cannot read run file {}", path.display()))?;
    Ok(header)
}

fn open(path: &Path) -> Result<(File, (u64, u64))> {
    let file =
        File::open(path).with_context(|| format!("cannot read run file {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read run file {}", path.display()))?;
    if !meta.is_file() {
        anyhow::bail!("{} is not a file", path.display());
    }
    Ok((file, (meta.dev(), meta.ino())))
}

/// Whether process `pid` has the file `(device, inode)` open: `None` when its open files
/// cannot be listed (another user's process).
fn holds_file(pid: u32, identity: (u64, u64)) -> Option<bool> {
    let dir = PathBuf::from(format!("/proc/{pid}/fd"));
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(false),
        Err(_) => return None,
    };
    Some(
        entries
            .flatten()
            .any(|fd| std::fs::metadata(fd.path()).is_ok_and(|m| (m.dev(), m.ino()) == identity)),
    )
}

/// The run files process `pid` has open (files that start with the run-file magic).
pub(crate) fn run_files_of(pid: u32) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        if !target.is_absolute() || found.contains(&target) {
            continue;
        }
        if std::fs::metadata(&target).is_ok_and(|m| m.is_file()) && is_run_file(&target) {
            found.push(target);
        }
    }
    Ok(found)
}

fn is_run_file(path: &Path) -> bool {
    let mut magic = [0u8; 8];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == asyncprof_format::MAGIC)
}

/// The processes named `name` (their command name, or their executable's file name).
pub(crate) fn pids_named(name: &str) -> Vec<u32> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = procs
        .flatten()
        .filter_map(|p| p.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            comm.trim_end() == name
                || exe
                    .as_deref()
                    .and_then(Path::file_name)
                    .is_some_and(|f| f == name)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The run file of a running process, by pid or by name.
///
/// # Errors
///
/// When no such process has a run file open, or several do (by name), saying which.
pub(crate) fn find_run_file(pid: Option<u32>, name: Option<&str>) -> Result<PathBuf> {
    let pids = match (pid, name) {
        (Some(pid), _) => vec![pid],
        (None, Some(name)) => {
            let pids = pids_named(name);
            if pids.is_empty() {
                anyhow::bail!("no running process is named {name:?}");
            }
            pids
        }
        (None, None) => anyhow::bail!("give a run file, --pid PID or --name NAME"),
    };
    let mut found = Vec::new();
    for &pid in &pids {
        match run_files_of(pid) {
            Ok(files) => found.extend(files.into_iter().map(|f| (pid, f))),
            Err(e) if pids.len() == 1 => {
                let context = match e.kind() {
                    std::io::ErrorKind::NotFound => format!("no process has pid {pid}"),
                    _ => format!(
                        "cannot list the open files of process {pid} (is it another user's?)"
                    ),
                };
                return Err(e).context(context);
            }
            Err(_) => {}
        }
    }
    match found.len() {
        1 => Ok(found.remove(0).1),
        0 => anyhow::bail!(
            "{} no asyncprof run file open: is it instrumented with asyncprof \
             (asyncprof::init or asyncprof::main) and recording?",
            match (pid, name) {
                (Some(pid), _) => format!("process {pid} has"),
                (_, Some(name)) => format!(
                    "no process named {name:?} (pids {}) has",
                    pids.iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                _ => unreachable!("a pid or a name was given"),
            }
        ),
        _ => anyhow::bail!(
            "several run files are open: {}; pick one with --pid or give its path",
            found
                .iter()
                .map(|(pid, f)| format!("{} (pid {pid})", f.display()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use asyncprof_format::RunWriter;
    use std::io::Write;

    fn temp(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("asyncprof-top-{name}-{}.run", std::process::id()))
    }

    fn stall(id: u64, ongoing: bool) -> StallRecord {
        let mut s = StallRecord::default();
        s.id = id;
        s.ongoing = ongoing;
        s
    }

    #[test]
    fn follows_a_growing_file_cut_mid_record_then_a_replaced_one() {
        let path = temp("grow");
        let mut header = Header::new("svc");
        header.pid = std::process::id();
        let w = RunWriter::new(std::fs::File::create(&path).unwrap(), &header).unwrap();
        let mut f = Follower::open(&path).unwrap();
        assert!(f.poll());
        assert_eq!(f.header().unwrap().program, "svc");
        // This process holds the file open: it is the writer.
        assert_eq!(f.writer(), Writer::Recording);

        // A stall record written in two pieces: nothing until the second arrives.
        let frame =
            asyncprof_format::encode_frame(asyncprof_format::RecordKind::Stall, &stall(1, true))
                .unwrap();
        let mut file = w.into_inner();
        file.write_all(&frame[..20]).unwrap();
        f.poll();
        assert!(f.stalls.is_empty());
        assert_eq!(f.bytes().1, 20);
        file.write_all(&frame[20..]).unwrap();
        f.poll();
        assert!(f.stalls[&1].ongoing);
        assert_eq!(f.take_changed(), vec![1]);
        let mut w = RunWriter::new(Vec::new(), &header).unwrap();
        w.write_stall(&stall(1, false)).unwrap();
        w.write_snapshot(&Snapshot::default()).unwrap();
        let bytes = w.into_inner();
        let skip = asyncprof_format::preamble().len()
            + asyncprof_format::encode_frame(asyncprof_format::RecordKind::Header, &header)
                .unwrap()
                .len();
        file.write_all(&bytes[skip..]).unwrap();
        f.poll();
        assert!(!f.stalls[&1].ongoing, "the later record wins");
        assert_eq!(f.timeline.kept.len(), 1);
        drop(file);

        // A new run at the same path: read from its start.
        std::fs::remove_file(&path).unwrap();
        let header2 = Header::new("svc2");
        let mut w2 = RunWriter::new(std::fs::File::create(&path).unwrap(), &header2).unwrap();
        w2.write_end().unwrap();
        assert!(f.poll());
        assert_eq!(f.restarts, 1);
        assert_eq!(f.header().unwrap().program, "svc2");
        assert!(f.stalls.is_empty());
        assert_eq!(f.writer(), Writer::Ended);
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn follows_a_run_into_its_next_part_keeping_every_stall() {
        // The run file reaches its size limit (ASYNCPROF_MAX_FILE_MB): the writer renames it
        // to NAME.old.run, creates a new file at the path, ends the old one with a
        // `Continued` record and goes on in the new one, starting with the header again.
        let path = temp("parts");
        let old = path.with_extension("old.run");
        let mut header = Header::new("svc");
        header.pid = std::process::id();
        let mut w = RunWriter::new(std::fs::File::create(&path).unwrap(), &header).unwrap();
        w.write_stall(&stall(1, false)).unwrap();
        let mut f = Follower::open(&path).unwrap();
        assert!(f.poll());
        assert_eq!(f.stalls.len(), 1);
        // Written before the rename, not yet read by the viewer.
        w.write_stall(&stall(2, false)).unwrap();
        std::fs::rename(&path, &old).unwrap();
        // Between the rename and the new file: nothing at the path for a moment.
        f.poll();
        assert!(f.problem.is_none(), "{:?}", f.problem);
        assert!(!f.finished());
        let mut part = header.clone();
        part.part = 1;
        let mut w2 = RunWriter::new(std::fs::File::create(&path).unwrap(), &part).unwrap();
        let continued = asyncprof_format::encode_frame(
            asyncprof_format::RecordKind::Continued,
            &asyncprof_format::Continued::new(
                old.display().to_string(),
                path.display().to_string(),
                1,
                1_000,
            ),
        )
        .unwrap();
        w.into_inner().write_all(&continued).unwrap();
        w2.write_stall(&stall(3, false)).unwrap();
        f.poll();
        assert!(f.problem.is_none(), "{:?}", f.problem);
        assert_eq!(
            f.stalls.keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 3],
            "the old part's last stall, then the new part's"
        );
        assert_eq!((f.restarts, f.parts), (0, 1));
        assert_eq!(f.header().unwrap().part, 1);
        assert_eq!(f.writer(), Writer::Recording);
        let mut changed = f.take_changed();
        changed.sort_unstable();
        assert_eq!(changed, vec![1, 2, 3]);
        std::fs::remove_file(&path).ok();
        std::fs::remove_file(&old).ok();
    }

    #[test]
    fn parts_that_went_by_between_two_looks_are_read_and_another_run_starts_over() {
        use asyncprof_format::{encode_frame, Continued, RecordKind};
        let path = temp("skipped");
        let old = path.with_extension("old.run");
        let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_string();
        let continued = |next_part| {
            encode_frame(
                RecordKind::Continued,
                &Continued::new(name(&old), name(&path), next_part, 1_000),
            )
            .unwrap()
        };
        let mut header = Header::new("svc");
        header.pid = std::process::id();
        let part = |n: u32| {
            let mut h = header.clone();
            h.part = n;
            h
        };
        let mut w0 = RunWriter::new(std::fs::File::create(&path).unwrap(), &header).unwrap();
        w0.write_stall(&stall(1, false)).unwrap();
        let mut f = Follower::open(&path).unwrap();
        f.poll();
        // Two new parts before the viewer looks again: part 1 is at NAME.old.run by then
        // (part 0, still open here, was removed), part 2 at the path.
        w0.into_inner().write_all(&continued(1)).unwrap();
        std::fs::rename(&path, &old).unwrap();
        let mut w1 = RunWriter::new(std::fs::File::create(&path).unwrap(), &part(1)).unwrap();
        w1.write_stall(&stall(2, false)).unwrap();
        w1.into_inner().write_all(&continued(2)).unwrap();
        std::fs::rename(&path, &old).unwrap();
        let mut w2 = RunWriter::new(std::fs::File::create(&path).unwrap(), &part(2)).unwrap();
        w2.write_stall(&stall(3, false)).unwrap();
        f.poll();
        assert!(f.problem.is_none(), "{:?}", f.problem);
        assert_eq!(f.stalls.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!((f.restarts, f.parts), (0, 2));

        // The run goes on, but another run's file is at the path: read from its start.
        w2.into_inner().write_all(&continued(3)).unwrap();
        f.poll();
        std::fs::rename(&path, &old).unwrap();
        let mut other = Header::new("svc");
        other.pid = std::process::id();
        other.start_unix_ms = header.start_unix_ms + 1;
        let mut w = RunWriter::new(std::fs::File::create(&path).unwrap(), &other).unwrap();
        w.write_stall(&stall(9, false)).unwrap();
        f.poll();
        assert_eq!(f.stalls.keys().copied().collect::<Vec<_>>(), vec![9]);
        assert_eq!((f.restarts, f.parts), (1, 2));
        std::fs::remove_file(&path).ok();
        std::fs::remove_file(&old).ok();
    }

    #[test]
    fn a_run_whose_process_is_gone_and_a_damaged_file() {
        let path = temp("gone");
        let mut header = Header::new("svc");
        // No process has this file open: pid 0 is not a process with a /proc/0/fd.
        header.pid = u32::MAX;
        let mut bytes = Vec::new();
        let mut w = RunWriter::new(&mut bytes, &header).unwrap();
        w.write_snapshot(&Snapshot::default()).unwrap();
        w.write_snapshot(&Snapshot::default()).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let mut f = Follower::open(&path).unwrap();
        f.poll();
        assert_eq!(f.writer(), Writer::Gone);
        assert!(f.finished());
        assert_eq!(f.timeline.kept.len(), 2);

        // Damage in the second snapshot: the first stays, with a clear problem.
        let mut damaged = bytes.clone();
        let at = damaged.len() - 3;
        damaged[at] ^= 0x10;
        let damaged_path = temp("damaged");
        std::fs::write(&damaged_path, &damaged).unwrap();
        let mut f = Follower::open(&damaged_path).unwrap();
        f.poll();
        let problem = f.problem.clone().unwrap();
        assert!(problem.contains("damaged at byte"), "{problem}");
        assert_eq!(f.timeline.kept.len(), 1);
        std::fs::remove_file(&path).ok();
        std::fs::remove_file(&damaged_path).ok();
    }

    #[test]
    fn a_finished_run_larger_than_one_read_is_read_to_its_end() {
        // A run whose process is gone, more than one poll's read long: its end is read before
        // the run counts as finished (a stall near its end was printed "never returned", and
        // the run "gone without ending").
        let path = temp("long-gone");
        let mut header = Header::new("svc");
        header.pid = u32::MAX;
        let mut w = RunWriter::new(Vec::new(), &header).unwrap();
        w.write_stall(&stall(1, true)).unwrap();
        let one = asyncprof_format::encode_frame(
            asyncprof_format::RecordKind::Snapshot,
            &Snapshot::default(),
        )
        .unwrap()
        .len();
        let snapshots = (MAX_READ_PER_POLL + (1 << 20)) / one + 1;
        for _ in 0..snapshots {
            w.write_snapshot(&Snapshot::default()).unwrap();
        }
        w.write_stall(&stall(1, false)).unwrap();
        w.write_end().unwrap();
        let bytes = w.into_inner();
        std::fs::write(&path, &bytes).unwrap();
        let mut f = Follower::open(&path).unwrap();
        let mut polls = 0;
        while !f.finished() && polls < 100 {
            f.poll();
            polls += 1;
        }
        std::fs::remove_file(&path).ok();
        assert!(polls > 1, "{polls} polls");
        assert_eq!(f.bytes(), (bytes.len() as u64, 0), "read to the end");
        assert_eq!(f.writer(), Writer::Ended);
        assert!(!f.stalls[&1].ongoing, "the stall's last record is read");
    }

    #[test]
    fn a_file_that_never_gets_its_header_is_a_problem_once_it_stops_growing() {
        let path = temp("headerless");
        // The preamble and half a header frame, as a process killed while starting leaves.
        let mut bytes = Vec::new();
        RunWriter::new(&mut bytes, &Header::new("svc")).unwrap();
        std::fs::write(&path, &bytes[..20]).unwrap();
        let mut f = Follower::open(&path).unwrap();
        f.header_wait = Duration::from_millis(50);
        f.poll();
        assert!(f.problem.is_none() && !f.finished(), "too early to tell");
        std::thread::sleep(Duration::from_millis(60));
        f.last_writer_check = None;
        f.poll();
        let problem = f
            .problem
            .clone()
            .expect("a problem once it stopped growing");
        assert!(
            problem.contains("holds no complete header (20 bytes)"),
            "{problem}"
        );
        assert!(f.finished());
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn the_timeline_keeps_an_even_bounded_sample_and_the_two_newest() {
        let mut t = Timeline::default();
        for i in 0..1000u64 {
            let mut s = Snapshot::default();
            s.elapsed_ns = i;
            t.push(&s);
        }
        assert!(t.kept.len() < MAX_KEPT_SNAPSHOTS);
        assert!(t.kept.len() >= MAX_KEPT_SNAPSHOTS / 2);
        assert_eq!(t.kept[0].elapsed_ns, 0);
        let gaps: Vec<u64> = t
            .kept
            .windows(2)
            .map(|w| w[1].elapsed_ns - w[0].elapsed_ns)
            .collect();
        assert!(gaps.iter().all(|g| *g == gaps[0]), "{gaps:?}");
        assert_eq!(t.latest.as_ref().unwrap().elapsed_ns, 999);
        assert_eq!(t.previous.as_ref().unwrap().elapsed_ns, 998);
    }

    #[test]
    fn finds_the_run_file_this_process_holds() {
        let path = temp("mine");
        let _w = RunWriter::new(std::fs::File::create(&path).unwrap(), &Header::new("me")).unwrap();
        let files = run_files_of(std::process::id()).unwrap();
        assert!(
            files.iter().any(|f| f.ends_with(path.file_name().unwrap())),
            "{files:?}"
        );
        let found = find_run_file(Some(std::process::id()), None);
        // Other tests of this process may hold run files too; then the error names them.
        match found {
            Ok(f) => assert!(f.ends_with(path.file_name().unwrap())),
            Err(e) => assert!(e.to_string().contains("several run files"), "{e}"),
        }
        let err = find_run_file(Some(u32::MAX), None).unwrap_err();
        assert!(format!("{err:#}").contains("no process has pid"), "{err:#}");
        let err = find_run_file(None, Some("no-such-program-anywhere")).unwrap_err();
        assert!(
            err.to_string().contains("no running process is named"),
            "{err}"
        );
        std::fs::remove_file(&path).ok();
    }
}
