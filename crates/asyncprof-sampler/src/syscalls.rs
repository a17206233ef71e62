//! Names of the system calls a stalled thread is typically blocked in.

/// The name of system call `nr` on this architecture, for the calls a stall classification
/// cares about; `None` for the others. The numbers are libc's `SYS_*` for the target.
pub fn syscall_name(nr: u64) -> Option<&'static str> {
    let Ok(nr) = libc::c_long::try_from(nr) else {
        return None;
    };
    let name = match nr {
        libc::SYS_read => "read",
        libc::SYS_write => "write",
        libc::SYS_close => "close",
        libc::SYS_pread64 => "pread64",
        libc::SYS_pwrite64 => "pwrite64",
        libc::SYS_readv => "readv",
        libc::SYS_writev => "writev",
        libc::SYS_pselect6 => "pselect6",
        libc::SYS_ppoll => "ppoll",
        libc::SYS_sched_yield => "sched_yield",
        libc::SYS_nanosleep => "nanosleep",
        libc::SYS_clock_nanosleep => "clock_nanosleep",
        libc::SYS_connect => "connect",
        libc::SYS_accept => "accept",
        libc::SYS_accept4 => "accept4",
        libc::SYS_sendto => "sendto",
        libc::SYS_recvfrom => "recvfrom",
        libc::SYS_sendmsg => "sendmsg",
        libc::SYS_recvmsg => "recvmsg",
        libc::SYS_recvmmsg => "recvmmsg",
        libc::SYS_sendmmsg => "sendmmsg",
        libc::SYS_wait4 => "wait4",
        libc::SYS_fsync => "fsync",
        libc::SYS_fdatasync => "fdatasync",
        libc::SYS_futex => "futex",
        libc::SYS_futex_waitv => "futex_waitv",
        libc::SYS_openat => "openat",
        libc::SYS_epoll_pwait => "epoll_pwait",
        libc::SYS_epoll_pwait2 => "epoll_pwait2",
        // File locks, file I/O and copies that wait on a disk or another process.
        libc::SYS_flock => "flock",
        libc::SYS_fcntl => "fcntl",
        libc::SYS_preadv => "preadv",
        libc::SYS_pwritev => "pwritev",
        libc::SYS_sendfile => "sendfile",
        libc::SYS_splice => "splice",
        libc::SYS_copy_file_range => "copy_file_range",
        libc::SYS_msync => "msync",
        libc::SYS_sync => "sync",
        libc::SYS_syncfs => "syncfs",
        libc::SYS_fallocate => "fallocate",
        libc::SYS_ftruncate => "ftruncate",
        libc::SYS_getdents64 => "getdents64",
        libc::SYS_statx => "statx",
        libc::SYS_newfstatat => "newfstatat",
        libc::SYS_getrandom => "getrandom",
        // Waits on a child, a queue or a signal.
        libc::SYS_waitid => "waitid",
        libc::SYS_io_getevents => "io_getevents",
        libc::SYS_io_uring_enter => "io_uring_enter",
        libc::SYS_semtimedop => "semtimedop",
        libc::SYS_msgrcv => "msgrcv",
        libc::SYS_msgsnd => "msgsnd",
        libc::SYS_mq_timedreceive => "mq_timedreceive",
        libc::SYS_rt_sigtimedwait => "rt_sigtimedwait",
        // Calls that newer architectures (aarch64) have only in their `p`/`at` forms.
        #[cfg(target_arch = "x86_64")]
        libc::SYS_poll => "poll",
        #[cfg(target_arch = "x86_64")]
        libc::SYS_select => "select",
        #[cfg(target_arch = "x86_64")]
        libc::SYS_pause => "pause",
        #[cfg(target_arch = "x86_64")]
        libc::SYS_epoll_wait => "epoll_wait",
        _ => return None,
    };
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::syscall_name;

    #[test]
    fn names_follow_the_targets_numbers() {
        assert_eq!(syscall_name(libc::SYS_read as u64), Some("read"));
        assert_eq!(syscall_name(libc::SYS_futex as u64), Some("futex"));
        assert_eq!(
            syscall_name(libc::SYS_clock_nanosleep as u64),
            Some("clock_nanosleep")
        );
        #[cfg(target_arch = "x86_64")]
        {
            // The x86_64 numbers the kernel's `/proc/<pid>/syscall` shows.
            assert_eq!(syscall_name(7), Some("poll"));
            assert_eq!(syscall_name(202), Some("futex"));
            assert_eq!(syscall_name(232), Some("epoll_wait"));
        }
        assert_eq!(syscall_name(libc::SYS_flock as u64), Some("flock"));
        #[cfg(target_arch = "x86_64")]
        assert_eq!(syscall_name(73), Some("flock"));
        assert_eq!(syscall_name(u64::MAX), None);
        assert_eq!(syscall_name(libc::SYS_getpid as u64), None);
    }
}
