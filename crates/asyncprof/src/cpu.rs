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
            let built = removing_new_spill_file_at_exit(|| {
                pprof::ProfilerGuardBuilder::default()
                    .frequency(hz as i32)
                    // Unwinding through these from a signal handler can deadlock.
                    .blocklist(&["libc", "libgcc", "pthread", "vdso"])
                    .build()
            });
            match built {
                Ok(guard) => Some(CpuProfiler { guard, hz }),
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

    /// Stop sampling and fold the stacks.
    pub(crate) fn finish(self) -> Option<format::CpuProfile> {
        #[cfg(feature = "cpu-profile")]
        {
            let report = self.guard.report().build();
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
/// the spill file pprof opened meanwhile: the one new descriptor of that shape. Two or more
/// new ones (the service opened a temporary file at the same moment) are all left alone.
#[cfg(feature = "cpu-profile")]
fn removing_new_spill_file_at_exit<T>(f: impl FnOnce() -> T) -> T {
    let before = spill_files();
    let out = f();
    let new: Vec<_> = spill_files()
        .into_iter()
        .filter(|fd| !before.contains(fd))
        .collect();
    if let [(_, path)] = new.as_slice() {
        asyncprof_sampler::remove_at_exit(path);
    }
    out
}
