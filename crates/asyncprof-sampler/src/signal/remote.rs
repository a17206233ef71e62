//! Reading another thread's stack without interrupting it: its user registers from
//! `/proc/self/task/<tid>/syscall` while it is off CPU, and its stack memory from
//! `/proc/self/mem`, which stops at the first unmapped page instead of faulting.

use std::sync::atomic::{AtomicI32, Ordering::*};

/// Where a thread is, as `/proc/self/task/<tid>/syscall` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Where {
    /// Off CPU with its user registers saved: asleep in system call `nr` (`None`: not in a
    /// system call, e.g. preempted in user code). Its stack cannot change until it runs.
    Frozen {
        nr: Option<u64>,
        sp: u64,
        pc: u64,
        /// The whole line, to check nothing changed while the stack was copied.
        line: String,
    },
    /// On CPU now (the kernel cannot read its registers).
    Running,
    /// The file cannot be read (the thread exited, or the kernel does not offer it).
    Unknown,
}

/// Read where thread `tid` of this process is.
pub(crate) fn locate(tid: i32) -> Where {
    let Ok(line) = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) else {
        return Where::Unknown;
    };
    parse(line)
}

fn parse(line: String) -> Where {
    let mut fields = line.split_whitespace();
    let Some(first) = fields.next() else {
        return Where::Unknown;
    };
    if first == "running" {
        return Where::Running;
    }
    let nr = match first.parse::<i64>() {
        Ok(n) if n >= 0 => Some(n as u64),
        Ok(_) => None,
        Err(_) => return Where::Unknown,
    };
    // In a system call: the number, six arguments, then sp and pc; else "-1 sp pc".
    let rest: Vec<&str> = fields.collect();
    let (sp, pc) = match rest.as_slice() {
        [.., sp, pc] => (hex(sp), hex(pc)),
        _ => return Where::Unknown,
    };
    match (sp, pc) {
        (Some(sp), Some(pc)) if sp != 0 && pc != 0 => Where::Frozen { nr, sp, pc, line },
        _ => Where::Unknown,
    }
}

fn hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

/// How many times thread `tid` was put on a CPU (the third field of its `schedstat`), to
/// check it did not run while its stack was copied. `None` where `schedstat` is missing.
pub(crate) fn run_count(tid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    s.split_whitespace().nth(2)?.parse().ok()
}

/// Thread `tid`'s CPU time so far, in nanoseconds, exact (its CPU-time clock, which the
/// kernel brings up to date when read, unlike `schedstat`). `None` when the thread is gone.
pub(crate) fn cpu_ns(tid: i32) -> Option<u64> {
    // The kernel's per-thread CPU clock id: MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED), the
    // value glibc's pthread_getcpuclockid builds.
    let clock = ((!tid) << 3) | 6;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; an unknown clock fails with EINVAL.
    if unsafe { libc::clock_gettime(clock as libc::clockid_t, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// What `/proc/self/task/<tid>/status` says of a thread's sleeps and signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status {
    /// How many times it gave up its CPU to sleep (`voluntary_ctxt_switches`): a blocking
    /// system call that waits adds one.
    pub(crate) voluntary_switches: u64,
    /// Signals it blocks (`SigBlk`), bit `n - 1` for signal `n`.
    pub(crate) blocked: u64,
    /// Signals pending for it or for the whole process (`SigPnd` | `ShdPnd`).
    pub(crate) pending: u64,
}

impl Status {
    /// Whether signal `signal` would wait rather than run a handler now: the thread blocks
    /// it, or one is already pending.
    pub(crate) fn holds(&self, signal: i32) -> bool {
        let bit = 1u64
            .checked_shl(signal.saturating_sub(1) as u32)
            .unwrap_or(0);
        (self.blocked | self.pending) & bit != 0
    }
}

/// Read thread `tid`'s [`Status`]. `None` when it cannot be read.
pub(crate) fn status(tid: i32) -> Option<Status> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    parse_status(&s)
}

fn parse_status(s: &str) -> Option<Status> {
    let field = |name: &str| s.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let mask = |name: &str| field(name).and_then(|v| u64::from_str_radix(v, 16).ok());
    Some(Status {
        voluntary_switches: field("voluntary_ctxt_switches:")?.parse().ok()?,
        blocked: mask("SigBlk:")?,
        pending: mask("SigPnd:").unwrap_or(0) | mask("ShdPnd:").unwrap_or(0),
    })
}

/// Bytes of a page (the tests map and unmap pages).
#[cfg(test)]
const PAGE: usize = 4096;

/// `/proc/self/mem`, opened once for the life of the process (see [`open_memory`]).
static MEMORY: AtomicI32 = AtomicI32::new(-1);

/// Open `/proc/self/mem` for [`copy_own_memory`], once per process (later calls return the
/// same answer). It stays open for the life of the process: a signal handler may read it at
/// any time while a sampler exists. Returns false when it cannot be opened.
pub(crate) fn open_memory() -> bool {
    if MEMORY.load(Acquire) >= 0 {
        return true;
    }
    let path = c"/proc/self/mem";
    // SAFETY: a NUL-terminated path and plain flags.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    if MEMORY.compare_exchange(-1, fd, AcqRel, Acquire).is_err() {
        // Another thread opened it first.
        // SAFETY: `fd` is ours and used nowhere else.
        unsafe { libc::close(fd) };
    }
    true
}

/// Copy this process's memory from `addr` into `buf`, as far as it is mapped: returns the
/// number of bytes copied (0 when nothing could be read). It reads `/proc/self/mem`, which
/// stops at the first unmapped page instead of faulting, with one `pread` (async-signal-safe,
/// and allowed by every seccomp policy that lets a program read files).
pub(crate) fn copy_own_memory(addr: u64, buf: &mut [u8]) -> usize {
    let fd = MEMORY.load(Acquire);
    if fd < 0 || buf.is_empty() {
        return 0;
    }
    // SAFETY: `buf` is valid for `buf.len()` bytes of writes; pread writes no more.
    let rc = unsafe {
        libc::pread(
            fd,
            buf.as_mut_ptr().cast::<libc::c_void>(),
            buf.len(),
            addr as libc::off_t,
        )
    };
    if rc < 0 {
        0
    } else {
        (rc as usize).min(buf.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One page followed by a hole; returns the page's address.
    fn unmapped_after() -> u64 {
        // SAFETY: a fresh anonymous mapping of two pages whose second page is then unmapped;
        // the first is never unmapped (the test process ends soon).
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                2 * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            assert_eq!(libc::munmap(p.cast::<u8>().add(PAGE).cast(), PAGE), 0);
            p as u64
        }
    }

    #[test]
    fn a_status_file_parses_and_says_which_signals_would_wait() {
        let text = "Name:\tw\nSigQ:\t0/1\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\n\
                    SigBlk:\t0000000800000000\nSigIgn:\t0\nvoluntary_ctxt_switches:\t7\n";
        let st = parse_status(text).unwrap();
        assert_eq!(st.voluntary_switches, 7);
        // Bit 35 is signal 36 (SIGRTMIN+2 with glibc): blocked.
        assert!(st.holds(36));
        assert!(!st.holds(39));
        let me = status(crate::current_tid()).unwrap();
        assert!(!me.holds(libc::SIGRTMIN() + 5));
    }

    #[test]
    fn lines_of_the_syscall_file_parse() {
        assert_eq!(parse("running\n".into()), Where::Running);
        let l = "7 0x7f 0x1 0x3e8 0x0 0x0 0x0 0x7ffd1000 0x7f0000123456\n".to_string();
        assert_eq!(
            parse(l.clone()),
            Where::Frozen {
                nr: Some(7),
                sp: 0x7ffd1000,
                pc: 0x7f0000123456,
                line: l
            }
        );
        let l = "-1 0x7ffd2000 0x5555aaaa\n".to_string();
        assert!(matches!(
            parse(l),
            Where::Frozen {
                nr: None,
                sp: 0x7ffd2000,
                pc: 0x5555aaaa,
                ..
            }
        ));
        assert_eq!(parse("".into()), Where::Unknown);
        assert_eq!(parse("0 0x0 0x0".into()), Where::Unknown);
    }

    #[test]
    fn cpu_time_grows_while_computing_and_sleeps_are_counted() {
        let me = crate::current_tid();
        let (a, v) = (cpu_ns(me).unwrap(), status(me).unwrap().voluntary_switches);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = cpu_ns(me).unwrap();
        assert!(b - a < 10_000_000, "slept, yet on CPU for {} ns", b - a);
        assert!(status(me).unwrap().voluntary_switches > v);
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(20) {}
        let c = cpu_ns(me).unwrap();
        assert!(
            c - b >= 10_000_000,
            "computed 20 ms, on CPU for {} ns",
            c - b
        );
    }

    #[test]
    fn a_copy_stops_where_the_mapping_ends() {
        assert!(open_memory());
        let data = vec![7u8; 3 * PAGE];
        let mut buf = vec![0u8; 2 * PAGE];
        let n = copy_own_memory(data.as_ptr() as u64 + 100, &mut buf);
        assert_eq!(n, 2 * PAGE);
        assert!(buf.iter().all(|b| *b == 7));
        // A read that runs past the end of every mapping stops there: nothing is mapped
        // after the unmapped page that follows this region.
        let region = unmapped_after();
        let n = copy_own_memory(region + PAGE as u64 - 16, &mut buf);
        assert_eq!(n, 16);
        // Address 4096 is never mapped: nothing copied, no fault.
        assert_eq!(copy_own_memory(PAGE as u64, &mut buf), 0);
    }

    #[test]
    fn a_sleeping_thread_is_frozen_in_its_system_call() {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            tx.send(crate::current_tid()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
        });
        let tid = rx.recv().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut seen = None;
        while std::time::Instant::now() < deadline {
            if let Where::Frozen { nr: Some(nr), .. } = locate(tid) {
                seen = Some(nr);
                break;
            }
            std::thread::yield_now();
        }
        t.join().unwrap();
        assert_eq!(seen, Some(libc::SYS_clock_nanosleep as u64));
    }
}
