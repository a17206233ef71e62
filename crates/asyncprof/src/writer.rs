//! The writer thread: puts encoded frames into the run file as they come, one batch per write.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, SyncSender};

use crate::recorder::Recorder;

/// Batches of encoded frames waiting for the writer (one batch per aggregator cycle); more
/// are dropped and counted.
pub(crate) const WRITER_QUEUE: usize = 64;
/// Encoded frames for the writer, and how many records they hold (counted as dropped if
/// they cannot be written).
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) bytes: Vec<u8>,
    pub(crate) records: u64,
    /// Set when the batch starts a new part of the run (the file reached its size limit).
    pub(crate) new_part: Option<NewPart>,
    /// The final batch: written even when a new part could not be started.
    pub(crate) last: bool,
}

/// How a batch starts a new part: the full file gets `closing` (the record saying where the
/// run goes on) and is renamed to [`previous_part_path`]; a new file at the run file's path
/// gets the batch. Its first `prefix_len` bytes (the preamble and the part's header) are
/// left out when the batch goes to the old file instead.
#[derive(Debug)]
pub(crate) struct NewPart {
    pub(crate) closing: Vec<u8>,
    pub(crate) prefix_len: usize,
}

pub(crate) use asyncprof_format::previous_part_path;

/// End the full part at `path` (open as `file`) with `closing`, rename it to
/// [`previous_part_path`] and go on in a new file at `path` that starts with `prefix` (the
/// preamble and the part's header). Only a regular file that is still the one at `path` is
/// renamed, and only over nothing or an earlier part (a regular file that starts as a run
/// file); one that is gone is not missed (the new part starts at `path`).
///
/// A reader following `path` sees, in this order: the full file end with `closing` (where
/// the run goes on), then the new file at the path, already starting with its header; where
/// the file system allows ([`swap_in_new_part`]), the path never goes missing meanwhile. When
/// the new file cannot be made, the full part stays as it was (at its path, without
/// `closing`) and open.
fn start_new_part(
    file: &mut File,
    path: &Path,
    closing: &[u8],
    prefix: &[u8],
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let ours = file.metadata()?;
    if !ours.is_file() {
        return Err(std::io::Error::other("the run file is not a regular file"));
    }
    let previous = previous_part_path(path);
    if !replaceable(&previous)? {
        return Err(std::io::Error::other(format!(
            "{} exists and is not a run file",
            previous.display()
        )));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if (m.dev(), m.ino()) == (ours.dev(), ours.ino()) => {}
        Ok(_) => {
            return Err(std::io::Error::other(
                "another file is at the run file's path now",
            ))
        }
        // Removed meanwhile: the new part starts at the path, the full one is left as it is.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let new = create_with(path, prefix, create_run_file)?;
            let _ = file.write_all(closing);
            *file = new;
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    let end = ours.len();
    file.write_all(closing).inspect_err(|_| {
        let _ = file.set_len(end);
    })?;
    let new = match swap_in_new_part(path, &previous, prefix) {
        Some(new) => Ok(new),
        None => rename_then_create(path, &previous, prefix),
    };
    match new {
        Ok(new) => {
            *file = new;
            Ok(())
        }
        Err(e) => {
            let _ = file.set_len(end);
            let _ = file.seek(SeekFrom::Start(end));
            Err(e)
        }
    }
}

/// Whether `previous` may be replaced: nothing is there, or an earlier part (a regular file
/// that starts as a run file). Anything else there, or a file that cannot be read, is not.
fn replaceable(previous: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    match std::fs::symlink_metadata(previous) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
        Ok(m) if !m.is_file() => Ok(false),
        Ok(_) => {
            let mut magic = [0u8; 8];
            let read = File::open(previous).and_then(|mut f| f.read_exact(&mut magic));
            Ok(read.is_ok() && &magic == asyncprof_format::MAGIC)
        }
    }
}

/// A new file at `at` made by `create`, starting with `prefix`; removed again when `prefix`
/// cannot be written.
fn create_with(
    at: &Path,
    prefix: &[u8],
    create: impl FnOnce(&Path) -> std::io::Result<File>,
) -> std::io::Result<File> {
    let mut new = create(at)?;
    if let Err(e) = new.write_all(prefix) {
        let _ = std::fs::remove_file(at);
        return Err(e);
    }
    Ok(new)
}

/// The next part the plain way: the full file renamed to `previous`, a new one made at
/// `path` (nothing is at `path` for a moment). The rename is undone when the new file cannot
/// be made.
fn rename_then_create(path: &Path, previous: &Path, prefix: &[u8]) -> std::io::Result<File> {
    std::fs::rename(path, previous)?;
    create_with(path, prefix, create_run_file).inspect_err(|_| {
        // Undone only over nothing: a file another process made at the path meanwhile (and
        // locked: the error) stays, and the full part stays at `previous`.
        if std::fs::symlink_metadata(path).is_err() {
            let _ = std::fs::rename(previous, path);
        }
    })
}

/// The next part so that `path` always names a run file that starts with its header, for a
/// reader that follows the path (`asyncprof top`, `tail -F`): the new file is made and given
/// `prefix` under a hidden name beside it, the full file gets a second, hidden name, which
/// is renamed over `previous`, then the new file is renamed over `path`; each rename one step.
/// `None` where that cannot be done (a file system without hard links, say), with the full
/// file still at `path` and nothing else changed (except, should the last rename fail, the
/// earlier part, which the caller's rename replaces anyway).
fn swap_in_new_part(path: &Path, previous: &Path, prefix: &[u8]) -> Option<File> {
    let name = path.file_name()?.to_str()?;
    let hidden = |what: &str| path.with_file_name(format!(".{name}.{}.{what}", std::process::id()));
    let (next, full) = (hidden("next"), hidden("full"));
    // Left by a process that stopped in the middle of this (this pid's earlier holder, or
    // one that is gone): each is redundant (the full file is still at `path` or already at
    // `previous`; a new part that was never renamed holds only its header). Removed when
    // empty or a run file: never anyone else's.
    for stale in [next.clone(), full.clone()]
        .into_iter()
        .chain(hidden_left_by_gone_processes(path, name))
    {
        let empty = std::fs::symlink_metadata(&stale).is_ok_and(|m| m.is_file() && m.len() == 0);
        if empty || replaceable(&stale).unwrap_or(false) {
            let _ = std::fs::remove_file(&stale);
        }
    }
    // Locked as the first part was ([`create_run_file`]), before it takes the path.
    let new = create_with(&next, prefix, |at| {
        locked(run_file_options().create_new(true).open(at)?)
    })
    .ok()?;
    let undo = |names: &[&Path]| {
        for n in names {
            let _ = std::fs::remove_file(n);
        }
        None
    };
    if std::fs::hard_link(path, &full).is_err() {
        return undo(&[&next]);
    }
    if std::fs::rename(&full, previous).is_err() {
        return undo(&[&full, &next]);
    }
    if std::fs::rename(&next, path).is_err() {
        // `previous` and `path` both name the full file: the extra name goes (a rename of
        // one name of a file over another of the same file does nothing).
        return undo(&[previous, &next]);
    }
    Some(new)
}

/// The hidden names beside `path` (named `name`) that [`swap_in_new_part`] gives a new part
/// and a full one, of processes no longer running (none where `/proc` cannot tell).
fn hidden_left_by_gone_processes(path: &Path, name: &str) -> Vec<std::path::PathBuf> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let (Ok(entries), true) = (std::fs::read_dir(dir), Path::new("/proc/self").exists()) else {
        return Vec::new();
    };
    let prefix = format!(".{name}.");
    let ours = std::process::id();
    entries
        .flatten()
        .filter_map(|e| {
            let file = e.file_name();
            let rest = file.to_str()?.strip_prefix(&prefix)?;
            let (pid, what) = rest.split_once('.')?;
            let pid: u32 = pid.parse().ok()?;
            let gone = pid != ours && !Path::new(&format!("/proc/{pid}")).exists();
            (matches!(what, "next" | "full") && gone).then(|| e.path())
        })
        .collect()
}

/// Bytes waiting for the writer at most; a batch that would pass it is dropped and counted.
pub(crate) const MAX_BACKLOG_BYTES: usize = 16 << 20;

/// The bytes waiting for the writer: reserved by the aggregator before it sends a batch,
/// released by the writer once written, so a disk that stalls holds at most
/// [`MAX_BACKLOG_BYTES`] of the service's memory.
#[derive(Debug, Default)]
pub(crate) struct Backlog(std::sync::atomic::AtomicUsize);

impl Backlog {
    /// Reserve `n` bytes; false (nothing reserved) when that would pass the limit.
    pub(crate) fn reserve(&self, n: usize) -> bool {
        self.0
            .fetch_update(Relaxed, Relaxed, |b| {
                (b.saturating_add(n) <= MAX_BACKLOG_BYTES).then_some(b + n)
            })
            .is_ok()
    }

    /// Bytes that can still be reserved.
    pub(crate) fn room(&self) -> usize {
        MAX_BACKLOG_BYTES.saturating_sub(self.0.load(Relaxed))
    }

    /// Count `n` bytes sent whatever the limit (the file's first bytes, the run's end).
    pub(crate) fn add(&self, n: usize) {
        self.0.fetch_add(n, Relaxed);
    }

    /// Give back `n` reserved bytes.
    pub(crate) fn release(&self, n: usize) {
        self.0.fetch_sub(n, Relaxed);
    }
}

/// Create (or truncate) the run file with the user's umask, never through a symbolic link: a
/// link planted at the path cannot make asyncprof overwrite the file it points to. The file
/// is locked (`flock`) for as long as this process writes it: a run file another process
/// records to (a child that inherited `ASYNCPROF_OUT`, a second copy of the service) is
/// left as it is, with an error of kind [`std::io::ErrorKind::ResourceBusy`].
pub(crate) fn create_run_file(path: &Path) -> std::io::Result<File> {
    // Not truncated at the open: only once the lock says no one else writes it.
    let file = run_file_options().create(true).truncate(false).open(path)?;
    // A device or a pipe (`/dev/null`, a FIFO) is neither locked nor cut: several processes
    // may write to one, and it has no length to cut.
    if !file.metadata()?.is_file() {
        return Ok(file);
    }
    let file = locked(file)?;
    file.set_len(0)?;
    Ok(file)
}

/// `file`, locked (`flock`) for as long as this process holds it open; an error of kind
/// [`std::io::ErrorKind::ResourceBusy`] when another open file (another process) holds the
/// lock. A file system without locks (some network ones) gives the file unlocked.
fn locked(file: File) -> std::io::Result<File> {
    match asyncprof_sampler::try_lock_exclusive(&file) {
        Ok(false) => Err(std::io::Error::new(
            std::io::ErrorKind::ResourceBusy,
            "another process records to this run file",
        )),
        _ => Ok(file),
    }
}

/// How asyncprof opens the run files it writes: for writing, with the user's umask, never
/// through a symbolic link.
fn run_file_options() -> std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options
        .write(true)
        .mode(0o666)
        .custom_flags(libc::O_NOFOLLOW);
    options
}

/// Writes batches of frames as they come. `written` hears when the first (the preamble and
/// the header) has been tried, for `start` to return.
///
/// A batch the disk takes only in part (it filled up) is cut off again, back to the whole
/// batches before it: once the disk has room again, the next batch follows a whole frame,
/// and the file reads to its end instead of stopping at a torn frame in its middle.
pub(crate) fn writer_loop(
    mut file: File,
    rx: mpsc::Receiver<Batch>,
    recorder: &Recorder,
    backlog: &Backlog,
    path: &Path,
    written: SyncSender<()>,
) {
    let mut warned = false;
    let mut written = Some(written);
    // The bytes of the whole batches in the file.
    let mut whole = 0u64;
    // A new part could not be started: only the final batch is written, to the old file.
    let mut stuck = false;
    // What the file must start with and does not yet (the preamble and header, when the write
    // that carried them failed): it goes before the next batch.
    let mut head: Option<Vec<u8>> = None;
    for batch in rx {
        let mut bytes = &batch.bytes[..];
        // The first batch is the file's start (the preamble and the first header).
        let starts_file = written.is_some();
        if let Some(part) = &batch.new_part {
            // The new part's start (the preamble and its header) goes into its file before the
            // file is at the path; the rest of the batch follows here.
            let (prefix, rest) = bytes.split_at(part.prefix_len.min(bytes.len()));
            bytes = rest;
            match start_new_part(&mut file, path, &part.closing, prefix) {
                Ok(()) => {
                    whole = prefix.len() as u64;
                    stuck = false;
                    head = None;
                }
                Err(err) => {
                    if !stuck {
                        eprintln!(
                            "asyncprof: the run file {} reached its size limit and cannot go on \
                             in a new file: {err}; stalls and snapshots from now on are counted, \
                             not written (ASYNCPROF_MAX_FILE_MB sets the limit)",
                            path.display()
                        );
                    }
                    stuck = true;
                }
            }
        }
        if stuck && !batch.last {
            backlog.release(batch.bytes.len());
            recorder
                .loss
                .unwritten_at_file_limit
                .fetch_add(batch.records, Relaxed);
            continue;
        }
        let with_head;
        if let Some(h) = &head {
            with_head = [h.as_slice(), bytes].concat();
            bytes = &with_head;
        }
        let res = file.write_all(bytes);
        backlog.release(batch.bytes.len());
        if let Some(w) = written.take() {
            let _ = w.send(());
        }
        match res {
            Ok(()) => {
                whole += bytes.len() as u64;
                head = None;
            }
            Err(err) => {
                // Best effort (not a regular file, or the disk refuses even this): the next
                // batch is written from the end of the last whole one all the same, after the
                // file's start if this batch carried it.
                let _ = file.set_len(whole);
                let _ = file.seek(SeekFrom::Start(whole));
                if head.is_none() && starts_file {
                    // The batch is the file's start, whole.
                    head = Some(bytes.to_vec());
                }
                recorder
                    .loss
                    .dropped_records
                    .fetch_add(batch.records, Relaxed);
                if !warned {
                    warned = true;
                    eprintln!(
                        "asyncprof: cannot write run file {}: {err}; the service keeps running, \
                         and the records the disk refuses are dropped and counted",
                        path.display()
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{create_run_file, previous_part_path, start_new_part};
    use std::io::Write;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("asyncprof-parts-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_new_part_renames_only_the_run_file_it_wrote() {
        let d = dir("rename");
        let path = d.join("svc.run");
        assert_eq!(previous_part_path(&path), d.join("svc.old.run"));
        assert_eq!(previous_part_path(&d.join("svc")), d.join("svc.old"));

        // The run file: renamed, closed with the record, a new one at its path, with its
        // start already in it.
        std::fs::write(&path, b"part 0").unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        start_new_part(&mut file, &path, b"|closing", b"APROFRUN part 1").unwrap();
        assert_eq!(
            std::fs::read(d.join("svc.old.run")).unwrap(),
            b"part 0|closing"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"APROFRUN part 1");

        // Something that is not a run file where the part before would go (a note, a file
        // too short to tell): left alone, the run file as it was.
        let old = d.join("svc.old.run");
        for theirs in [&b"someone's notes"[..], b"APR"] {
            std::fs::write(&old, theirs).unwrap();
            let err = start_new_part(&mut file, &path, b"x", b"y").unwrap_err();
            assert!(err.to_string().contains("is not a run file"), "{err}");
            assert_eq!(std::fs::read(&old).unwrap(), theirs);
            assert_eq!(std::fs::read(&path).unwrap(), b"APROFRUN part 1");
        }
        std::fs::write(&old, b"APROFRUN an earlier part").unwrap();

        // Another file now at the path (not the one being written): left alone.
        let other = d.join("other");
        std::fs::write(&other, b"mine").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert!(start_new_part(&mut file, &path, b"x", b"y").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"mine");

        // Not a regular file (here /dev/null open for reading): nothing renamed.
        let mut null = std::fs::File::open("/dev/null").unwrap();
        let err = start_new_part(&mut null, &path, b"x", b"y").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"mine");

        // The run file removed meanwhile: the new part starts at the path all the same.
        let gone = d.join("gone.run");
        std::fs::write(&gone, b"").unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&gone)
            .unwrap();
        std::fs::remove_file(&gone).unwrap();
        start_new_part(&mut file, &gone, b"x", b"APROFRUN").unwrap();
        assert!(gone.exists() && !d.join("gone.old.run").exists());
        assert_eq!(std::fs::read(&gone).unwrap(), b"APROFRUN");
        std::fs::remove_dir_all(&d).ok();
    }

    /// What a reader that follows the path saw while it was rotated.
    #[derive(Debug, Default, PartialEq)]
    struct Seen {
        /// Looks that found nothing at the path.
        missing: usize,
        /// New files at the path whose full predecessor did not yet end with its closing
        /// record.
        unclosed: usize,
        /// New files at the path seen without their start.
        headless: usize,
    }

    /// Rotate `path` `times` times while another thread follows the path without pause, as
    /// `asyncprof top` does: it holds the file it found open and, at a new one, reads the old
    /// one to its end and the new one's start.
    fn rotations_seen(path: &std::path::Path, times: usize) -> Seen {
        use std::io::{Read, Write};
        use std::os::unix::fs::MetadataExt;
        use std::sync::atomic::AtomicBool;
        use std::sync::atomic::Ordering::Relaxed;
        const START: &[u8] = b"APROFRUN next";
        std::fs::write(path, START).unwrap();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut seen = Seen::default();
                let mut held: Option<(u64, std::fs::File)> = None;
                while !stop.load(Relaxed) {
                    let Ok(mut f) = std::fs::File::open(path) else {
                        seen.missing += 1;
                        continue;
                    };
                    let ino = f.metadata().unwrap().ino();
                    match &mut held {
                        Some((i, _)) if *i == ino => continue,
                        Some((_, old)) => {
                            let mut all = Vec::new();
                            old.read_to_end(&mut all).unwrap();
                            seen.unclosed += usize::from(!all.ends_with(b"|closing"));
                            let mut start = [0u8; START.len()];
                            seen.headless += usize::from(f.read_exact(&mut start).is_err());
                        }
                        None => {}
                    }
                    held = Some((ino, f));
                }
                seen
            });
            let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            for _ in 0..times {
                file.write_all(b"APROFRUN a part").unwrap();
                start_new_part(&mut file, path, b"|closing", START).unwrap();
            }
            stop.store(true, Relaxed);
            reader.join().unwrap()
        })
    }

    #[test]
    fn every_part_is_locked_while_written() {
        // Another process opening the path after a part switch must find it locked, as it
        // finds the first part (an open file description of its own, as here, is refused the
        // same way).
        let d = dir("locked-parts");
        let path = d.join("svc.run");
        let mut file = create_run_file(&path).unwrap();
        file.write_all(b"APROFRUN first").unwrap();
        let locked = |p: &std::path::Path| {
            let other = std::fs::File::open(p).unwrap();
            !asyncprof_sampler::try_lock_exclusive(&other).unwrap()
        };
        assert!(locked(&path), "the first part");
        start_new_part(&mut file, &path, b"|closing", b"APROFRUN next").unwrap();
        assert!(locked(&path), "the second part");
        assert!(matches!(
            create_run_file(&path),
            Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy
        ));
        drop(file);
        assert!(!locked(&path), "the lock goes with the file");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_reader_following_the_path_always_finds_a_started_file_and_the_full_one_closed() {
        let d = dir("swap");
        let path = d.join("svc.run");
        let seen = rotations_seen(&path, 300);
        assert_eq!(seen, Seen::default(), "{seen:?}");
        // The last full part is the earlier part's name, closed; the newest is at the path;
        // no temporary file is left.
        assert_eq!(
            std::fs::read(d.join("svc.old.run")).unwrap(),
            b"APROFRUN nextAPROFRUN a part|closing"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"APROFRUN next");
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        // Its temporary name taken by someone else's file: the full file is renamed as
        // before (the path is missing for a moment, the new file empty for a moment), and the
        // file at the temporary name is left alone.
        let temp = d.join(format!(".svc.run.{}.next", std::process::id()));
        std::fs::write(&temp, b"not ours").unwrap();
        let seen = rotations_seen(&path, 300);
        eprintln!("renamed without the swap, 300 parts: {seen:?}");
        assert_eq!(seen.unclosed, 0, "{seen:?}");
        assert_eq!(std::fs::read(&temp).unwrap(), b"not ours");
        assert_eq!(
            std::fs::read(d.join("svc.old.run")).unwrap(),
            b"APROFRUN nextAPROFRUN a part|closing"
        );
        // One of its own left by a process of this pid that stopped midway: removed, and
        // the swap goes on.
        std::fs::write(&temp, b"").unwrap();
        assert_eq!(rotations_seen(&path, 50), Seen::default());
        assert!(!temp.exists());
        // Left by processes that are gone (children that exited: their pids are free), a new
        // part and a full one: removed at the next part. The same names of a live process (a
        // child still running), or a gone process's file that is no run file, stay.
        let exited = || {
            let mut child = std::process::Command::new("true").spawn().unwrap();
            child.wait().unwrap();
            child.id()
        };
        let (gone, gone_too) = (exited(), exited());
        let mut running = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let left = |pid: u32, what: &str, bytes: &[u8]| {
            let p = d.join(format!(".svc.run.{pid}.{what}"));
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let gone_next = left(gone, "next", b"APROFRUN next");
        let gone_full = left(gone, "full", b"");
        let live_next = left(running.id(), "next", b"APROFRUN next");
        let not_ours = left(gone_too, "full", b"not ours");
        let seen = rotations_seen(&path, 1);
        let _ = running.kill();
        let _ = running.wait();
        assert_eq!(seen, Seen::default());
        assert!(!gone_next.exists() && !gone_full.exists());
        assert!(live_next.exists() && not_ours.exists());
        std::fs::remove_dir_all(&d).ok();
    }
}
