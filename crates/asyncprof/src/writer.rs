//! The writer thread: puts encoded frames into the run file as they come, flushing each.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, SyncSender};

use crate::recorder::Recorder;

/// Encoded frames waiting for the writer; more are dropped and counted.
pub(crate) const WRITER_QUEUE: usize = 64;

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

/// Writes frames as they come, flushing each. `written` hears when the first (the preamble
/// and the header) has been tried, for `start` to return.
pub(crate) fn writer_loop(
    file: File,
    rx: mpsc::Receiver<Vec<u8>>,
    recorder: &Recorder,
    path: &Path,
    written: SyncSender<()>,
) {
    let mut out = std::io::BufWriter::new(file);
    let mut warned = false;
    let mut written = Some(written);
    for frame in rx {
        let res = std::io::Write::write_all(&mut out, &frame)
            .and_then(|()| std::io::Write::flush(&mut out));
        if let Some(w) = written.take() {
            let _ = w.send(());
        }
        if let Err(err) = res {
            recorder.loss.dropped_records.fetch_add(1, Relaxed);
            if !warned {
                warned = true;
                eprintln!(
                    "asyncprof: cannot write run file {}: {err}; the service keeps running and \
                     further records are dropped and counted",
                    path.display()
                );
            }
        }
    }
}
