//! Files removed when the process exits normally (`exit(3)`, a return from `main`), for files
//! a library opened on the process's behalf and never closes (pprof's sample spill file, held
//! by a static).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

/// The most files kept for removal; a further one is not kept (and stays on disk).
const MAX_FILES: usize = 16;

/// The files to remove, each with its device and inode when it was handed over.
static FILES: Mutex<Vec<(PathBuf, u64, u64)>> = Mutex::new(Vec::new());
/// Functions to call at exit, before the files are removed.
static CALLS: Mutex<Vec<fn()>> = Mutex::new(Vec::new());
static REGISTER: Once = Once::new();

/// Register the exit handler once; false when it cannot be.
fn register() -> bool {
    static REGISTERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    REGISTER.call_once(|| {
        // SAFETY: atexit only stores the pointer; `run` is an `extern "C" fn()` with no
        // arguments that cannot unwind (the calls run under `catch_unwind`; `try_lock`,
        // `symlink_metadata` and `remove_file` return their errors).
        let ok = unsafe { libc::atexit(run) } == 0;
        REGISTERED.store(ok, std::sync::atomic::Ordering::Relaxed);
    });
    REGISTERED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Call `f` when the process exits normally (`exit(3)`, `std::process::exit`, a return from
/// `main`), before the files handed to [`remove_at_exit`] are removed; once however often it
/// is handed over. Not when the process is killed by a signal or aborts. `f` runs on the
/// exiting thread while the process's other threads still run; a panic in it is caught.
/// False when the exit handler could not be registered.
pub fn call_at_exit(f: fn()) -> bool {
    if !register() {
        return false;
    }
    let mut calls = CALLS.lock().unwrap_or_else(|p| p.into_inner());
    if !calls.contains(&f) {
        calls.push(f);
    }
    true
}

/// Remove `path` when the process exits normally, if it is then still the file it is now
/// (the same device and inode: a file put in its place since is left alone). Not when the
/// process is killed by a signal. Files handed over earlier that are gone (or replaced) by now
/// are forgotten. False when it will not be removed: it does not exist now, at most
/// 16 are kept, or the exit handler could not be registered.
pub fn remove_at_exit(path: &Path) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !register() {
        return false;
    }
    let mut files = FILES.lock().unwrap_or_else(|p| p.into_inner());
    files.retain(|(p, dev, ino)| same_file(p, *dev, *ino));
    if files.len() >= MAX_FILES {
        return false;
    }
    files.push((path.to_path_buf(), meta.dev(), meta.ino()));
    true
}

/// Whether `path` is the file with this device and inode.
fn same_file(path: &Path, dev: u64, ino: u64) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// The exit handler: the calls, then the files. It never waits for a list: when another
/// thread holds one at exit (in [`call_at_exit`] or [`remove_at_exit`] right now), that list
/// is passed over.
extern "C" fn run() {
    let calls = CALLS.try_lock().map(|c| c.clone()).unwrap_or_default();
    for f in calls {
        let _ = std::panic::catch_unwind(f);
    }
    if let Ok(files) = FILES.try_lock() {
        for (path, dev, ino) in files.iter() {
            if same_file(path, *dev, *ino) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}
