//! Names of the system calls a stalled thread is typically blocked in.

/// The name of system call `nr` on this architecture, for the calls a stall classification
/// cares about; `None` for the others.
pub fn syscall_name(nr: u64) -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    let name = match nr {
        0 => "read",
        1 => "write",
        7 => "poll",
        17 => "pread64",
        18 => "pwrite64",
        19 => "readv",
        20 => "writev",
        23 => "select",
        24 => "sched_yield",
        34 => "pause",
        35 => "nanosleep",
        42 => "connect",
        43 => "accept",
        44 => "sendto",
        45 => "recvfrom",
        46 => "sendmsg",
        47 => "recvmsg",
        61 => "wait4",
        74 => "fsync",
        75 => "fdatasync",
        202 => "futex",
        230 => "clock_nanosleep",
        232 => "epoll_wait",
        257 => "openat",
        270 => "pselect6",
        271 => "ppoll",
        281 => "epoll_pwait",
        288 => "accept4",
        299 => "recvmmsg",
        307 => "sendmmsg",
        441 => "epoll_pwait2",
        449 => "futex_waitv",
        _ => return None,
    };
    #[cfg(target_arch = "aarch64")]
    let name = match nr {
        22 => "epoll_pwait",
        57 => "close",
        63 => "read",
        64 => "write",
        65 => "readv",
        66 => "writev",
        67 => "pread64",
        68 => "pwrite64",
        72 => "pselect6",
        73 => "ppoll",
        82 => "fsync",
        83 => "fdatasync",
        98 => "futex",
        101 => "nanosleep",
        115 => "clock_nanosleep",
        124 => "sched_yield",
        202 => "accept",
        203 => "connect",
        206 => "sendto",
        207 => "recvfrom",
        211 => "sendmsg",
        212 => "recvmsg",
        242 => "accept4",
        260 => "wait4",
        _ => return None,
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let name = {
        let _ = nr;
        return None;
    };
    Some(name)
}
