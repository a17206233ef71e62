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

/// Where a run file's full part goes when the next one starts: `NAME.old.run` for
/// `NAME.run`, `PATH.old` for any other name.
pub(crate) fn previous_part_path(path: &Path) -> std::path::PathBuf {
    if path.extension().is_some_and(|e| e == "run") {
        path.with_extension("old.run")
    } else {
        let mut p = path.as_os_str().to_owned();
        p.push(".old");
        p.into()
    }
}

/// Rename the full part at `path` (open as `file`) to [`previous_part_path`], open a new file
/// at `path`, and close the full part with `closing`. Only a regular file that is still the
/// one at `path` is renamed, and only over nothing or an earlier part (a file that starts as a
/// run file does); one that is gone is not missed (the new part starts at `path`). When the new
/// file cannot be made, the full part is renamed back and stays open, unclosed. Where it can,
/// the path never goes missing meanwhile ([`swap_in_new_part`]).
fn start_new_part(file: &mut File, path: &Path, closing: &[u8]) -> std::io::Result<()> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let ours = file.metadata()?;
    if !ours.is_file() {
        return Err(std::io::Error::other("the run file is not a regular file"));
    }
    let previous = previous_part_path(path);
    let mut magic = [0u8; 8];
    let earlier_part = File::open(&previous).and_then(|mut f| f.read_exact(&mut magic));
    if earlier_part.is_ok() && &magic != asyncprof_format::MAGIC {
        return Err(std::io::Error::other(format!(
            "{} exists and is not a run file",
            previous.display()
        )));
    }
    let renamed = match std::fs::symlink_metadata(path) {
        Ok(m) if (m.dev(), m.ino()) == (ours.dev(), ours.ino()) => {
            if let Some(new) = swap_in_new_part(path, &previous) {
                let _ = file.write_all(closing);
                *file = new;
                return Ok(());
            }
            std::fs::rename(path, &previous)?;
            true
        }
        Ok(_) => {
            return Err(std::io::Error::other(
                "another file is at the run file's path now",
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e),
    };
    let new = match create_run_file(path) {
        Ok(new) => new,
        Err(e) => {
            if renamed {
                let _ = std::fs::rename(&previous, path);
            }
            return Err(e);
        }
    };
    // The handle follows the renamed file: the record goes to the end of the full part.
    let _ = file.write_all(closing);
    *file = new;
    Ok(())
}

/// Start the next part so that `path` always names a run file, for a reader that follows
/// the path (`asyncprof top`, `tail -F`): the full file gets its second name `previous` (a
/// hard link, over an earlier part), the new file is made under a temporary name beside it,
/// then renamed over `path` in one step. `None`, with nothing changed, where that cannot be
/// done (a file system without hard links, a temporary name taken): the caller renames.
fn swap_in_new_part(path: &Path, previous: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name()?.to_str()?;
    let temp = path.with_file_name(format!(".{name}.{}.next", std::process::id()));
    let new = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temp)
        .ok()?;
    // The earlier part goes (the caller checked it is one); the full file takes its name.
    match std::fs::remove_file(previous) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) => {
            let _ = std::fs::remove_file(&temp);
            return None;
        }
    }
    if std::fs::hard_link(path, previous).is_err() {
        let _ = std::fs::remove_file(&temp);
        return None;
    }
    if std::fs::rename(&temp, path).is_err() {
        let _ = std::fs::remove_file(previous);
        let _ = std::fs::remove_file(&temp);
        return None;
    }
    Some(new)
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
/// link planted at the path cannot make asyncprof overwrite the file it points to.
pub(crate) fn create_run_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o666)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
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
        let mut starts_file = written.is_some();
        if let Some(part) = &batch.new_part {
            match start_new_part(&mut file, path, &part.closing) {
                Ok(()) => {
                    whole = 0;
                    stuck = false;
                    head = None;
                    starts_file = true;
                }
                Err(err) => {
                    bytes = &bytes[part.prefix_len.min(bytes.len())..];
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
        let prefix_len = match (&batch.new_part, starts_file) {
            (Some(part), true) => part.prefix_len,
            (None, true) => bytes.len(),
            _ => 0,
        };
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
                    head = Some(bytes[..prefix_len.min(bytes.len())].to_vec());
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
    use super::{previous_part_path, start_new_part};

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

        // The run file: renamed, closed with the record, a new one at its path.
        std::fs::write(&path, b"part 0").unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        start_new_part(&mut file, &path, b"|closing").unwrap();
        assert_eq!(
            std::fs::read(d.join("svc.old.run")).unwrap(),
            b"part 0|closing"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"");

        // Something that is not a run file where the part before would go: left alone.
        let old = d.join("svc.old.run");
        std::fs::write(&old, b"someone's notes").unwrap();
        let err = start_new_part(&mut file, &path, b"x").unwrap_err();
        assert!(err.to_string().contains("is not a run file"), "{err}");
        assert_eq!(std::fs::read(&old).unwrap(), b"someone's notes");
        assert!(path.exists(), "the run file stays");
        std::fs::write(&old, b"APROFRUN an earlier part").unwrap();

        // Another file now at the path (not the one being written): left alone.
        let other = d.join("other");
        std::fs::write(&other, b"mine").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert!(start_new_part(&mut file, &path, b"x").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"mine");

        // Not a regular file (here /dev/null open for reading): nothing renamed.
        let mut null = std::fs::File::open("/dev/null").unwrap();
        let err = start_new_part(&mut null, &path, b"x").unwrap_err();
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
        start_new_part(&mut file, &gone, b"x").unwrap();
        assert!(gone.exists() && !d.join("gone.old.run").exists());
        std::fs::remove_dir_all(&d).ok();
    }

    /// Rotate `path` `times` times while another thread looks at the path without pause;
    /// how often it found nothing there.
    fn rotations_seen_missing(path: &std::path::Path, times: usize) -> usize {
        use std::io::Write;
        use std::sync::atomic::Ordering::Relaxed;
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        std::fs::write(path, b"APROFRUN part 0").unwrap();
        let stop = AtomicBool::new(false);
        let missing = AtomicUsize::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Relaxed) {
                    if std::fs::metadata(path).is_err() {
                        missing.fetch_add(1, Relaxed);
                    }
                }
            });
            let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            for _ in 0..times {
                file.write_all(b"APROFRUN a part").unwrap();
                start_new_part(&mut file, path, b"|closing").unwrap();
            }
            stop.store(true, Relaxed);
        });
        missing.load(Relaxed)
    }

    #[test]
    fn a_reader_following_the_path_never_finds_it_missing_between_parts() {
        let d = dir("swap");
        let path = d.join("svc.run");
        let missing = rotations_seen_missing(&path, 300);
        assert_eq!(missing, 0, "the path was missing {missing} times");
        // The last full part is the earlier part's name, closed; the newest is at the path;
        // no temporary file is left.
        assert_eq!(
            std::fs::read(d.join("svc.old.run")).unwrap(),
            b"APROFRUN a part|closing"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        // Its temporary name taken: the full file is renamed as before (the path is missing
        // for a moment), and the file at the temporary name is left alone.
        let temp = d.join(format!(".svc.run.{}.next", std::process::id()));
        std::fs::write(&temp, b"not ours").unwrap();
        let missing = rotations_seen_missing(&path, 300);
        eprintln!("renamed without the swap: the path missing {missing} times in 300 parts");
        assert_eq!(std::fs::read(&temp).unwrap(), b"not ours");
        assert_eq!(
            std::fs::read(d.join("svc.old.run")).unwrap(),
            b"APROFRUN a part|closing"
        );
        std::fs::remove_dir_all(&d).ok();
    }
}
