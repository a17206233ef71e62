//! Everything asyncprof reads from `/proc`, parsed in one place: a thread's state, CPU time,
//! system call and signal masks (for the stall sampler), and of any process its memory,
//! threads, descriptors and listening sockets (for the CLI and the benchmarks).
//!
//! Plain file reads and text parsing: nothing here runs in a signal handler.

use std::path::Path;

/// Kernel state of one thread of this process, read from `/proc/self/task/<tid>/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ThreadState {
    /// The scheduler state letter: `R` running, `S` sleeping, `D` uninterruptible, ….
    pub state: char,
    /// CPU time used so far, in nanoseconds (from `schedstat`; from `stat`'s clock ticks,
    /// 10 ms resolution, where `schedstat` is missing).
    pub cpu_ns: u64,
    /// The system call the thread is blocked in, if any.
    pub syscall: Option<u64>,
    /// Time spent runnable, waiting for a CPU, so far, in nanoseconds (`schedstat`'s second
    /// field; `None` where `schedstat` is missing).
    pub wait_ns: Option<u64>,
}

/// The fields of a `stat` file after the command name, state first. The name is in
/// parentheses and may hold spaces and parentheses: it ends at the last ')'.
fn fields_after_name(stat: &str) -> Option<Vec<&str>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace().collect())
}

/// Process `pid`'s process group and session (`/proc/PID/stat`); `None` when it is gone.
pub fn group_and_session(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the name: state, ppid, pgrp, session.
    let f = fields_after_name(&stat)?;
    Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
}

/// Read the state of thread `tid` of this process. `None` when the thread is gone.
pub fn thread_state(tid: i32) -> Option<ThreadState> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    let fields = fields_after_name(&stat)?;
    let state = fields.first()?.chars().next()?;
    // utime and stime are fields 14 and 15 of stat; after the ')' they are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // A kernel that keeps no scheduler statistics prints `0 0 0`: no figures, not a thread
    // that never ran (this one has).
    let schedstat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .filter(|s| s.split_whitespace().next() != Some("0"));
    let field = |i: usize| {
        schedstat
            .as_deref()
            .and_then(|s| s.split_whitespace().nth(i)?.parse::<u64>().ok())
    };
    let wait_ns = field(1);
    let cpu_ns = field(0).unwrap_or_else(|| {
        (utime + stime) * 1_000_000_000 / crate::signal::clock_ticks_per_second()
    });
    let syscall = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
        .ok()
        .and_then(|s| {
            let first = s.split_whitespace().next()?;
            first.parse::<u64>().ok()
        });
    Some(ThreadState {
        state,
        cpu_ns,
        syscall,
        wait_ns,
    })
}

/// Whether the machine has more runnable threads than online CPUs right now: some thread is
/// waiting for a core. From `/proc/loadavg`'s fourth field (`runnable/total`, counted as the
/// file is read, the reading thread included). `None` where the file cannot be read.
///
/// A thread asleep on a lock whose holder was preempted waits for the holder's turn on a CPU:
/// on a crowded machine a short critical section becomes a long wait.
pub fn machine_crowded() -> Option<bool> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(crowded(&s, online_cpus()))
}

/// `/proc/loadavg`'s text says more threads are runnable than there are `cpus`.
fn crowded(loadavg: &str, cpus: u64) -> bool {
    loadavg
        .split_whitespace()
        .nth(3)
        .and_then(|f| f.split_once('/'))
        .and_then(|(running, _)| running.parse::<u64>().ok())
        .is_some_and(|running| running > cpus)
}

/// The CPUs online on the machine (the processes in `/proc/loadavg` run on all of them).
fn online_cpus() -> u64 {
    static CPUS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| {
        // SAFETY: sysconf with a valid name has no side effects.
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        n.max(1) as u64
    })
}

/// How long thread `tid` of this process has waited on a run queue (runnable, but another
/// thread had the CPU), in nanoseconds, from `schedstat`. `None` where it is not available.
pub fn run_delay_ns(tid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    s.split_whitespace().nth(1)?.parse().ok()
}

/// Thread `tid` of this process's time on a CPU and time runnable but waiting for one, in
/// nanoseconds since it started (the first two fields of its `schedstat`). `None` where it is
/// not available.
pub fn sched_times(tid: i32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let mut f = s.split_whitespace().map(str::parse::<u64>);
    Some((f.next()?.ok()?, f.next()?.ok()?))
}

/// Nanoseconds per clock tick of `/proc/stat` and `/proc/self/stat`.
fn tick_ns() -> u64 {
    static TICK: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICK.get_or_init(|| {
        // SAFETY: sysconf with a valid name has no side effects.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        1_000_000_000 / u64::try_from(hz).ok().filter(|h| *h > 0).unwrap_or(100)
    })
}

/// A small file of `/proc` or `/sys` read again and again, kept open: each read starts at
/// offset 0 (`pread`), where the kernel writes the file's text afresh, into a buffer kept for
/// the next read. Opening is most of what reading such a file costs (a path walk,
/// allocations, and a security module's hooks where the host has them): the aggregator's
/// opens of its load files every 100 ms were a third of its CPU time on a pipeline at its real
/// rate. A file that does not exist or may not be read is not tried again; one that fails
/// otherwise (no descriptor left in the process, say) is tried at the next read. The
/// descriptor is closed on `exec` (std opens files close-on-exec).
#[derive(Debug)]
struct KeptFile {
    path: &'static str,
    file: Option<std::fs::File>,
    /// Opening failed for good.
    missing: bool,
    buf: Vec<u8>,
}

impl KeptFile {
    const fn new(path: &'static str) -> Self {
        KeptFile {
            path,
            file: None,
            missing: false,
            buf: Vec::new(),
        }
    }

    /// The file's whole text now; `None` when it cannot be opened or read.
    fn read(&mut self) -> Option<&str> {
        use std::os::unix::fs::FileExt;
        if self.file.is_none() {
            if self.missing {
                return None;
            }
            match std::fs::File::open(self.path) {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    use std::io::ErrorKind::{NotFound, PermissionDenied};
                    self.missing = matches!(e.kind(), NotFound | PermissionDenied);
                    return None;
                }
            }
        }
        let file = self.file.as_ref()?;
        let mut len = 0;
        loop {
            if self.buf.len() - len < 1024 {
                self.buf.resize((self.buf.len() * 2).max(4096), 0);
            }
            match file.read_at(&mut self.buf[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if let Some(f) = self.file.take() {
                        let _ = discard(f, &e);
                    }
                    return None;
                }
            }
        }
        std::str::from_utf8(&self.buf[..len]).ok()
    }
}

/// The machine's and this process's load files, read by one thread again and again (the
/// aggregator's load sample, every 100 ms): `/proc/stat`, `/proc/self/statm` and the cgroup's
/// `cpu.stat`, each opened once and kept open (three descriptors at most, for the life of the
/// reader), each read from its start with `pread`: opening is most of what reading such a file
/// costs.
#[derive(Debug)]
pub struct LoadFiles {
    stat: KeptFile,
    statm: KeptFile,
    cpu_stat: KeptFile,
}

impl Default for LoadFiles {
    fn default() -> Self {
        LoadFiles {
            stat: KeptFile::new("/proc/stat"),
            statm: KeptFile::new("/proc/self/statm"),
            cpu_stat: KeptFile::new("/sys/fs/cgroup/cpu.stat"),
        }
    }
}

impl LoadFiles {
    /// CPU time the whole machine spent busy (user, nice, system, interrupts, and time the
    /// hypervisor stole), and the CPUs online, from `/proc/stat`; nanoseconds at clock-tick
    /// resolution. `None` where it is not available.
    pub fn machine_busy_ns(&mut self) -> Option<(u64, u64)> {
        let busy = parse_machine_busy(self.stat.read()?)?;
        Some((busy * tick_ns(), online_cpus()))
    }

    /// Time this process's cgroup was throttled by its CPU quota (cgroup v2 `cpu.stat`),
    /// nanoseconds. `None` outside a cgroup v2 with a quota's statistics.
    pub fn throttled_ns(&mut self) -> Option<u64> {
        parse_throttled(self.cpu_stat.read()?)
    }

    /// This process's resident memory in bytes (`/proc/self/statm`). `None` where it is not
    /// available.
    pub fn rss_bytes(&mut self) -> Option<u64> {
        let pages: u64 = self.statm.read()?.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Some(pages * u64::try_from(page).ok().filter(|p| *p > 0)?)
    }
}

/// Let go of a kept file whose read failed with `e`. A descriptor the kernel no longer knows
/// (`EBADF`: something in the process closed it, and nothing has taken its number since) is
/// not closed again: its number may be another file's by the time it would be. (A number
/// closed behind the reader's back and taken again is beyond what the reader can tell.)
/// Returns the number left alone, if any.
fn discard(f: std::fs::File, e: &std::io::Error) -> Option<i32> {
    use std::os::fd::IntoRawFd;
    if e.raw_os_error() == Some(libc::EBADF) {
        Some(f.into_raw_fd())
    } else {
        drop(f);
        None
    }
}

/// The most threads whose `schedstat` a [`ThreadSchedFiles`] keeps open; the times of
/// threads past it are read by opening their file each time.
pub const MAX_KEPT_THREADS: usize = 16;

/// The `schedstat` files of a few threads of this process (a runtime's workers), read by one
/// thread again and again (the aggregator's load sample, every 100 ms) and kept open between
/// reads, as [`LoadFiles`] keeps its own: opening the file was half of the load sample's CPU
/// time on a pipeline at its real rate. At most [`MAX_KEPT_THREADS`] descriptors, each closed
/// when its thread is gone (its file then fails with `ESRCH`, whatever thread took its id
/// since) or when [`ThreadSchedFiles::retain`] drops it.
#[derive(Debug, Default)]
pub struct ThreadSchedFiles {
    files: std::collections::HashMap<i32, std::fs::File>,
}

impl ThreadSchedFiles {
    /// Thread `tid`'s time on a CPU and time waiting for one, as [`sched_times`] reads them.
    pub fn times(&mut self, tid: i32) -> Option<(u64, u64)> {
        use std::os::unix::fs::FileExt;
        if !self.files.contains_key(&tid) {
            if self.files.len() >= MAX_KEPT_THREADS {
                return sched_times(tid);
            }
            let f = std::fs::File::open(format!("/proc/self/task/{tid}/schedstat")).ok()?;
            self.files.insert(tid, f);
        }
        let file = self.files.get(&tid)?;
        // Three numbers of at most 20 digits: one read holds the whole text.
        let mut buf = [0u8; 128];
        let read = loop {
            match file.read_at(&mut buf, 0) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                r => break r,
            }
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                if let Some(f) = self.files.remove(&tid) {
                    let _ = discard(f, &e);
                }
                // A thread gone, or a new one with its id: this read opens the file afresh,
                // the next keeps it.
                return sched_times(tid);
            }
        };
        let mut f = std::str::from_utf8(&buf[..n])
            .ok()?
            .split_whitespace()
            .map(str::parse::<u64>);
        Some((f.next()?.ok()?, f.next()?.ok()?))
    }

    /// Close the files of the threads `keep` says no.
    pub fn retain(&mut self, mut keep: impl FnMut(i32) -> bool) {
        self.files.retain(|tid, _| keep(*tid));
    }

    /// How many files are open now.
    pub fn kept(&self) -> usize {
        self.files.len()
    }
}

/// The busy ticks of `/proc/stat`'s first line: every field but idle and iowait (guest time
/// is already counted in user).
fn parse_machine_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal
    Some(
        f.get(..8)?
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 4)
            .map(|(_, v)| v)
            .sum(),
    )
}

/// The throttled time of a cgroup v2 `cpu.stat`, nanoseconds.
fn parse_throttled(cpu_stat: &str) -> Option<u64> {
    cpu_stat
        .lines()
        .find_map(|l| l.strip_prefix("throttled_usec "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|us| us * 1000)
}

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
    parse_syscall_line(line)
}

pub(crate) fn parse_syscall_line(line: String) -> Where {
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
    /// On a CPU or waiting for one (`State: R`).
    pub(crate) runnable: bool,
}

impl Status {
    /// Whether signal `signal` would wait rather than run a handler now: the thread blocks
    /// it, or one is already pending.
    pub(crate) fn holds(&self, signal: i32) -> bool {
        let bit = signal_bit(signal);
        (self.blocked | self.pending) & bit != 0
    }

    /// Whether signal `signal` is queued (for the thread, or for the process): with the
    /// thread not blocking it, its handler runs as soon as the thread comes back to its own
    /// code.
    pub(crate) fn queued(&self, signal: i32) -> bool {
        self.pending & signal_bit(signal) != 0
    }

    /// Whether it blocks signal `signal` (a handler of it running blocks it, too).
    pub(crate) fn blocks(&self, signal: i32) -> bool {
        self.blocked & signal_bit(signal) != 0
    }
}

/// Signal `signal`'s bit in a `/proc` signal mask (bit `n - 1` for signal `n`; 0 for none).
fn signal_bit(signal: i32) -> u64 {
    1u64.checked_shl(signal.saturating_sub(1) as u32)
        .unwrap_or(0)
}

/// Read thread `tid`'s [`Status`]. `None` when it cannot be read.
pub(crate) fn status(tid: i32) -> Option<Status> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    parse_status(&s)
}

pub(crate) fn parse_status(s: &str) -> Option<Status> {
    let field = |name: &str| s.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let mask = |name: &str| field(name).and_then(|v| u64::from_str_radix(v, 16).ok());
    Some(Status {
        voluntary_switches: field("voluntary_ctxt_switches:")?.parse().ok()?,
        blocked: mask("SigBlk:")?,
        pending: mask("SigPnd:").unwrap_or(0) | mask("ShdPnd:").unwrap_or(0),
        runnable: field("State:").is_some_and(|v| v.starts_with('R')),
    })
}

/// A `kB` field (`VmRSS:`, `VmHWM:`, `RssAnon:`, …) of process `pid`'s `status`, in KiB.
/// `None` when the process is gone or the field is missing.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&status, field)
}

/// A `kB` field of this process's `status`, in KiB.
pub fn own_status_kib(field: &str) -> Option<u64> {
    status_kib(std::process::id(), field)
}

/// A `kB` line of a `status` text.
fn kib_field(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// Whether process `pid` exists (a zombie still does).
pub fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// How many threads process `pid` has (0 when it is gone).
pub fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

/// How many file descriptors process `pid` has open (0 when it is gone or not readable).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The running kernel's release (`uname -r`), if known.
pub fn kernel_release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether process `pid` has a TCP socket in the LISTEN state: one of its descriptors is a
/// socket whose inode `/proc/<pid>/net/tcp` or `tcp6` lists as listening (state 0A).
pub fn listens_on_tcp(pid: u32) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let inodes: std::collections::HashSet<u64> = fds
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect();
    ["tcp", "tcp6"].iter().any(|t| {
        std::fs::read_to_string(format!("/proc/{pid}/net/{t}"))
            .is_ok_and(|table| listening_inodes(&table).any(|i| inodes.contains(&i)))
    })
}

/// The inodes of the listening sockets in a `/proc/net/tcp` table.
fn listening_inodes(table: &str) -> impl Iterator<Item = u64> + '_ {
    table.lines().skip(1).filter_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(3) == Some(&"0A")).then(|| f.get(9)?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machines_busy_time_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 2 30 5000 40 6 7 8 0 0\ncpu0 50 1 15 2500 20 3 3 4 0 0\n";
        assert_eq!(
            super::parse_machine_busy(stat),
            Some(100 + 2 + 30 + 6 + 7 + 8)
        );
        assert_eq!(super::parse_machine_busy("intr 1 2 3\n"), None);
        assert!(LoadFiles::default()
            .machine_busy_ns()
            .is_some_and(|(_, cpus)| cpus >= 1));
        let cpu_stat = "usage_usec 900\nnr_throttled 2\nthrottled_usec 1500\n";
        assert_eq!(super::parse_throttled(cpu_stat), Some(1_500_000));
    }

    /// The load files stay open: each read gives the file's text as it is now, read from its
    /// start (and a file that does not exist gives nothing, again).
    #[test]
    fn a_kept_file_reads_the_text_as_it_is_now() {
        let mut files = LoadFiles::default();
        let before = files.rss_bytes().unwrap();
        // 64 MiB touched: resident now.
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        let after = files.rss_bytes().unwrap();
        assert!(after >= before + (48 << 20), "{before} -> {after}");
        drop(big);
        // A file larger than the first buffer comes whole, and a shorter text after it has
        // nothing of the longer one's end.
        let path = std::env::temp_dir().join(format!("asyncprof-kept-{}", std::process::id()));
        let long: String = (0..3000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &long).unwrap();
        let mut kept = KeptFile::new(Box::leak(path.to_str().unwrap().to_string().into()));
        assert_eq!(kept.read(), Some(long.as_str()));
        std::fs::write(&path, "short\n").unwrap();
        assert_eq!(kept.read(), Some("short\n"));
        std::fs::remove_file(&path).unwrap();
        let mut missing = KeptFile::new("/proc/self/no-such-file");
        assert!(missing.read().is_none());
        assert!(missing.missing);
        assert!(missing.read().is_none());
    }

    /// A kept `schedstat` file reads its thread's times as they are now; the file of a thread
    /// that ended is closed at the next read, and threads past the limit are read without
    /// keeping their file.
    #[test]
    fn kept_schedstat_files_follow_their_threads() {
        use std::sync::mpsc;
        let mut files = super::ThreadSchedFiles::default();
        // Threads that wait until told to end, each sending its id first.
        let (tids_tx, tids) = mpsc::channel();
        let mut ends = Vec::new();
        let mut threads = Vec::new();
        for i in 0..=super::MAX_KEPT_THREADS {
            let tids_tx = tids_tx.clone();
            let (end_tx, end) = mpsc::channel::<()>();
            ends.push(end_tx);
            threads.push(std::thread::spawn(move || {
                let tid = crate::current_tid();
                if i == 0 {
                    // 20 ms of this thread's own CPU, then its id.
                    let start = crate::thread_cpu_ns(tid).unwrap();
                    while crate::thread_cpu_ns(tid).unwrap() - start < 20_000_000 {}
                }
                tids_tx.send((i, tid)).unwrap();
                let _ = end.recv();
            }));
        }
        let mut tids: Vec<(usize, i32)> = tids.iter().take(threads.len()).collect();
        tids.sort_unstable();
        let tids: Vec<i32> = tids.into_iter().map(|(_, tid)| tid).collect();
        let spinner = tids[0];
        for &tid in &tids {
            assert!(files.times(tid).is_some(), "thread {tid}");
        }
        assert_eq!(files.kept(), super::MAX_KEPT_THREADS);
        // The spinner's time, kept or not, is at least what it spun.
        let (run, _) = files.times(spinner).unwrap();
        assert!(run >= 20_000_000, "{run} ns");
        assert!(super::sched_times(spinner).is_some_and(|(r, _)| r >= run));
        // Every thread ends: every file read fails and is closed.
        drop(ends);
        for t in threads {
            t.join().unwrap();
        }
        // Unless a thread's task is still there as its read comes (its exit not complete
        // though joined), or a new thread of this process (another test's) has its id: then
        // it is read. Only a file read so can still be kept.
        let mut read_again = 0;
        for &tid in &tids {
            let there = std::path::Path::new(&format!("/proc/self/task/{tid}")).exists();
            let read = files.times(tid).is_some();
            assert!(!read || there, "thread {tid}");
            read_again += usize::from(read);
        }
        let kept = files.kept();
        assert!(kept <= read_again, "{kept} kept, {read_again} read again");
        // A thread of this process read again is kept again; `retain` closes it.
        let me = crate::current_tid();
        assert!(files.times(me).is_some());
        assert_eq!(files.kept(), kept + 1);
        files.retain(|tid| tid != me);
        assert_eq!(files.kept(), kept);
    }

    /// A kept file whose descriptor something else closed is not closed again: its number
    /// may be another file's by then.
    #[test]
    fn a_descriptor_closed_elsewhere_is_not_closed_again() {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        let raw = f.as_raw_fd();
        let ebadf = std::io::Error::from_raw_os_error(libc::EBADF);
        assert_eq!(super::discard(f, &ebadf), Some(raw));
        // SAFETY: `raw` is an open descriptor of this test's own, closed here once.
        unsafe {
            assert_ne!(
                libc::fcntl(raw, libc::F_GETFD),
                -1,
                "descriptor {raw} closed"
            );
            libc::close(raw);
        }
    }

    /// The process's CPU clock (the load sample's own CPU time) counts every thread's time.
    #[test]
    fn the_process_cpu_time_counts_every_thread() {
        let cpu_ns = || crate::process_cpu_time().unwrap().as_nanos() as u64;
        let before = cpu_ns();
        std::thread::spawn(|| {
            // 50 ms of this thread's own CPU, however busy the machine.
            let tid = crate::current_tid();
            let start = crate::thread_cpu_ns(tid).unwrap();
            while crate::thread_cpu_ns(tid).unwrap() - start < 50_000_000 {}
        })
        .join()
        .unwrap();
        let used = cpu_ns() - before;
        assert!(used >= 50_000_000, "{used} ns");
    }

    #[test]
    fn a_thread_that_waits_for_a_cpu_has_its_wait_counted_apart_from_its_cpu_time() {
        use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
        use std::sync::Arc;
        /// Stops the spinning threads however the test ends.
        struct Stop(Arc<AtomicBool>);
        impl Drop for Stop {
            fn drop(&mut self) {
                self.0.store(true, Relaxed);
            }
        }
        // The first CPU this thread may run on; the measured thread and another spinning one
        // both pinned to it: each waits for it about half the time, however many CPUs the
        // machine has.
        let cpu = unsafe {
            // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity writes at most its
            // size into it.
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(
                libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set),
                0
            );
            (0..libc::CPU_SETSIZE as usize)
                .find(|&c| libc::CPU_ISSET(c, &set))
                .unwrap()
        };
        let stop = Stop(Arc::new(AtomicBool::new(false)));
        let spinner = |tid: Option<std::sync::mpsc::Sender<i32>>| {
            let stop = Arc::clone(&stop.0);
            std::thread::spawn(move || {
                unsafe {
                    // SAFETY: a set with one CPU, of its own size, for the calling thread.
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    assert_eq!(
                        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
                        0
                    );
                }
                if let Some(tx) = tid {
                    tx.send(crate::current_tid()).unwrap();
                }
                while !stop.load(Relaxed) {
                    std::hint::spin_loop();
                }
            })
        };
        let other = spinner(None);
        let (tx, rx) = std::sync::mpsc::channel();
        let measured = spinner(Some(tx));
        let tid = rx.recv().unwrap();
        let t0 = std::time::Instant::now();
        let before = thread_state(tid).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(400));
        let after = thread_state(tid).unwrap();
        let wall = t0.elapsed().as_nanos() as u64;
        drop(stop);
        other.join().unwrap();
        measured.join().unwrap();
        let cpu = after.cpu_ns - before.cpu_ns;
        let wait = after.wait_ns.unwrap() - before.wait_ns.unwrap();
        assert!(wait * 5 >= wall, "waited {wait} ns of {wall}");
        assert!(cpu * 5 >= wall, "ran {cpu} ns of {wall}");
        // Counted late, not early: a wait in progress at the first read, counted whole at the
        // second, or CPU time a tick behind at the first, makes at most one time slice more.
        assert!(cpu + wait <= wall + 20_000_000, "{cpu} + {wait} > {wall}");
    }

    #[test]
    fn loadavg_says_when_runnable_threads_outnumber_the_cpus() {
        assert!(crowded("1.93 1.41 0.90 5/312 40211\n", 2));
        assert!(!crowded("1.93 1.41 0.90 2/312 40211\n", 2));
        assert!(!crowded("0.01 0.02 0.00 1/98 7\n", 4));
        assert!(!crowded("garbage", 2));
        assert!(machine_crowded().is_some());
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
        // Queued for the thread (SigPnd bit 38: signal 39) or the process (ShdPnd bit 37:
        // signal 38), blocked or not; blocked (SigBlk bits 35 and 37), queued or not.
        let text = "State:\tR (running)\nSigPnd:\t0000004000000000\nShdPnd:\t0000002000000000\n\
                    SigBlk:\t0000002800000000\nvoluntary_ctxt_switches:\t1\n";
        let st = parse_status(text).unwrap();
        assert!(st.runnable);
        assert!(st.queued(39) && !st.blocks(39));
        assert!(st.queued(38) && st.blocks(38));
        assert!(!st.queued(36) && st.blocks(36));
        assert!(!st.queued(40) && !st.blocks(40));
        assert!(!me.queued(libc::SIGRTMIN() + 5));
        let asleep = parse_status(&text.replace("R (running)", "S (sleeping)")).unwrap();
        assert!(!asleep.runnable);
    }

    #[test]
    fn lines_of_the_syscall_file_parse() {
        assert_eq!(parse_syscall_line("running\n".into()), Where::Running);
        let l = "7 0x7f 0x1 0x3e8 0x0 0x0 0x0 0x7ffd1000 0x7f0000123456\n".to_string();
        assert_eq!(
            parse_syscall_line(l.clone()),
            Where::Frozen {
                nr: Some(7),
                sp: 0x7ffd1000,
                pc: 0x7f0000123456,
                line: l
            }
        );
        let l = "-1 0x7ffd2000 0x5555aaaa\n".to_string();
        assert!(matches!(
            parse_syscall_line(l),
            Where::Frozen {
                nr: None,
                sp: 0x7ffd2000,
                pc: 0x5555aaaa,
                ..
            }
        ));
        assert_eq!(parse_syscall_line("".into()), Where::Unknown);
        assert_eq!(parse_syscall_line("0 0x0 0x0".into()), Where::Unknown);
    }

    #[test]
    fn listening_sockets_are_read_from_the_tcp_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:18EB 0100007F:D1C2 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
";
        assert_eq!(listening_inodes(table).collect::<Vec<_>>(), [4242]);
    }

    #[test]
    fn kib_fields_and_counts_of_this_process() {
        let me = std::process::id();
        let rss = status_kib(me, "VmRSS:").unwrap();
        assert!(rss > 100, "{rss} KiB");
        assert!(own_status_kib("VmHWM:").unwrap() >= rss / 2);
        assert_eq!(kib_field("VmRSS:\t  1234 kB\n", "VmRSS:"), Some(1234));
        assert_eq!(kib_field("VmRSS:\t  1234 kB\n", "VmHWM:"), None);
        assert!(exists(me) && thread_count(me) >= 1 && fd_count(me) >= 3);
        assert!(!kernel_release().unwrap().is_empty());
    }
}
