//! Reading another thread's stack without interrupting it: its stack memory from
//! `/proc/self/mem`, which stops at the first unmapped page instead of faulting (its user
//! registers come from [`crate::procfs::locate`]), and its exact CPU time.

use std::sync::atomic::{AtomicI32, Ordering::*};

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
    fn cpu_time_grows_while_computing_and_sleeps_are_counted() {
        let me = crate::current_tid();
        let (a, v) = (
            cpu_ns(me).unwrap(),
            crate::procfs::status(me).unwrap().voluntary_switches,
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = cpu_ns(me).unwrap();
        assert!(b - a < 10_000_000, "slept, yet on CPU for {} ns", b - a);
        assert!(crate::procfs::status(me).unwrap().voluntary_switches > v);
        // Computing: the clock grows by 10 ms of CPU (on a busy machine the thread may get
        // only part of each wall-clock millisecond, so the bound is on wall time, generous).
        let t = std::time::Instant::now();
        let mut c = b;
        while c - b < 10_000_000 && t.elapsed() < std::time::Duration::from_secs(10) {
            c = cpu_ns(me).unwrap();
        }
        assert!(
            c - b >= 10_000_000,
            "computed {:?}, on CPU for {} ns",
            t.elapsed(),
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
            if let crate::procfs::Where::Frozen { nr: Some(nr), .. } = crate::procfs::locate(tid) {
                seen = Some(nr);
                break;
            }
            std::thread::yield_now();
        }
        t.join().unwrap();
        assert_eq!(seen, Some(libc::SYS_clock_nanosleep as u64));
    }
}
