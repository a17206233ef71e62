//! The whole-run CPU profile: pprof's timer-signal sampler (SIGPROF) across every thread,
//! folded into stacks when recording stops. Switched on by `ASYNCPROF_CPU_HZ` (or
//! [`crate::Builder::cpu_profile`]); `asyncprof bench` and `asyncprof run` set 99 Hz.

use asyncprof_format as format;

/// Stacks kept in the run file; the least sampled beyond it are dropped and counted.
const MAX_STACKS: usize = 20_000;
/// Bytes of folded text kept in the run file.
const MAX_FOLDED: usize = 8 << 20;

/// A CPU profile being recorded.
pub(crate) struct CpuProfiler {
    #[cfg(feature = "cpu-profile")]
    guard: pprof::ProfilerGuard<'static>,
    hz: u32,
    /// pprof's spill file (stacks its in-memory table evicts go there, without end), when it
    /// was found.
    spill: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for CpuProfiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuProfiler").field("hz", &self.hz).finish()
    }
}

impl CpuProfiler {
    /// Start sampling at `hz`; `None` (with one line on stderr) when it cannot start, for
    /// example because the program runs its own pprof profiler.
    pub(crate) fn start(hz: u32) -> Option<CpuProfiler> {
        #[cfg(feature = "cpu-profile")]
        {
            let (built, spill) = removing_new_spill_file_at_exit(|| {
                pprof::ProfilerGuardBuilder::default()
                    .frequency(hz as i32)
                    // Unwinding through these from a signal handler can deadlock.
                    .blocklist(&["libc", "libgcc", "pthread", "vdso"])
                    .build()
            });
            match built {
                // pprof opens a profile's spill file when the one before stops: a second
                // profile in one process writes to the file found at the first one's stop.
                Ok(guard) => Some(CpuProfiler {
                    guard,
                    hz,
                    spill: spill.or_else(|| LAST_SPILL.lock().ok()?.clone()),
                }),
                Err(pprof::Error::Running) => {
                    eprintln!(
                        "asyncprof: no CPU profile: the program runs pprof itself (one SIGPROF \
                         profiler per process); stall stacks are not affected"
                    );
                    None
                }
                Err(err) => {
                    eprintln!("asyncprof: no CPU profile: {err}");
                    None
                }
            }
        }
        #[cfg(not(feature = "cpu-profile"))]
        {
            eprintln!(
                "asyncprof: no CPU profile at {hz} Hz: built without the cpu-profile feature"
            );
            None
        }
    }

    /// The same profiler, its spill file taken to be `path` (for tests of the limit).
    #[cfg(test)]
    pub(crate) fn with_spill(mut self, path: std::path::PathBuf) -> Self {
        self.spill = Some(path);
        self
    }

    /// The bytes in pprof's spill file now (0 when it was not found). It only grows: pprof
    /// evicts a stack from its table of 16,384 to make room for a new one, and the same
    /// stack can come back and be evicted again (every thread has its own stacks, so a
    /// service whose blocking threads come and go brings new ones for good).
    pub(crate) fn spill_bytes(&self) -> u64 {
        self.spill
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    }

    /// Stop sampling and fold the stacks.
    pub(crate) fn finish(self) -> Option<format::CpuProfile> {
        #[cfg(feature = "cpu-profile")]
        {
            let report = self.guard.report().build();
            // Stopping closes (and removes) the spill file; pprof opens the next one at once.
            removing_new_spill_file_at_exit(|| drop(self.guard));
            let report = report.ok()?;
            let mut stacks: Vec<(String, u64)> = report
                .data
                .iter()
                .filter(|(_, &n)| n > 0)
                .map(|(frames, &n)| {
                    let mut parts = vec![frames.thread_name.replace([';', ' '], "_")];
                    for inlined in frames.frames.iter().rev() {
                        for sym in inlined.iter().rev() {
                            parts.push(sym.name().replace(';', ":"));
                        }
                    }
                    (parts.join(";"), n as u64)
                })
                .collect();
            stacks.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut profile = format::CpuProfile::default();
            profile.hz = self.hz;
            profile.samples = stacks.iter().map(|s| s.1).sum();
            let total = stacks.len();
            stacks.truncate(MAX_STACKS);
            let mut kept = 0;
            for (stack, n) in stacks {
                if profile.folded.len() + stack.len() > MAX_FOLDED {
                    break;
                }
                kept += 1;
                profile.folded.push_str(&stack);
                profile.folded.push(' ');
                profile.folded.push_str(&n.to_string());
                profile.folded.push('\n');
            }
            profile.dropped_stacks = (total - kept) as u64;
            Some(profile)
        }
        #[cfg(not(feature = "cpu-profile"))]
        {
            None
        }
    }
}

/// The temporary files this process holds open that have the shape of pprof's sample spill
/// file (`.tmp` and six characters in the temporary folder), by descriptor; none when there
/// are more than [`MAX_FDS_SCANNED`] descriptors.
///
/// pprof spills samples to a named temporary file held by its static profiler, which is never
/// dropped, and stopping a profile opens the next profile's file at once: without
/// [`removing_new_spill_file_at_exit`] every profiled process would leave an empty file behind.
#[cfg(feature = "cpu-profile")]
fn spill_files() -> Vec<(std::ffi::OsString, std::path::PathBuf)> {
    let Ok(dir) = std::env::temp_dir().canonicalize() else {
        return Vec::new();
    };
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let fds: Vec<_> = fds.flatten().take(MAX_FDS_SCANNED + 1).collect();
    if fds.len() > MAX_FDS_SCANNED {
        return Vec::new();
    }
    fds.into_iter()
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.path()).ok()?;
            let name = target.file_name()?.to_str()?;
            (target.parent() == Some(dir.as_path()) && name.starts_with(".tmp") && name.len() == 10)
                .then(|| (fd.file_name(), target))
        })
        .collect()
}

/// Descriptors looked at for the spill file: a service with more open (thousands of
/// connections) keeps the empty file rather than pay for reading every link.
#[cfg(feature = "cpu-profile")]
const MAX_FDS_SCANNED: usize = 4096;

/// Run `f` (a start or a stop of pprof's profiler), and remove when the process exits normally
/// the spill file pprof opened meanwhile: the one new descriptor of that shape, whose path is
/// returned. Two or more new ones (the service opened a temporary file at the same moment) are
/// all left alone.
#[cfg(feature = "cpu-profile")]
fn removing_new_spill_file_at_exit<T>(f: impl FnOnce() -> T) -> (T, Option<std::path::PathBuf>) {
    let before = spill_files();
    let out = f();
    let new: Vec<_> = spill_files()
        .into_iter()
        .filter(|fd| !before.contains(fd))
        .collect();
    if let [(_, path)] = new.as_slice() {
        asyncprof_sampler::remove_at_exit(path);
        if let Ok(mut last) = LAST_SPILL.lock() {
            *last = Some(path.clone());
        }
        return (out, Some(path.clone()));
    }
    (out, None)
}

/// The spill file pprof opened last (at a start, or at a stop for the next profile).
#[cfg(feature = "cpu-profile")]
static LAST_SPILL: std::sync::Mutex<Option<std::path::PathBuf>> = std::sync::Mutex::new(None);
