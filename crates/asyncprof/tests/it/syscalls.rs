//! issue 16: a stall's stack is taken without changing what the service sees. Each test makes
//! one blocking call that Linux never restarts after a signal handler ran (signal(7),
//! "Interruption of system calls"), from inside a task, for 200 ms under a 5 ms threshold, so
//! the watchdog samples it several times. The call must return exactly what it returns
//! unprofiled (a timeout, never `EINTR`), and the stall must be reported at its line with
//! its system call.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use asyncprof_format::{RunFile, StallClass, StallRecord};

use crate::stalls::stall_line;
use crate::support::{record_with, Flavor};

/// How long each call blocks.
const BLOCK: Duration = Duration::from_millis(200);
const BLOCK_MS: i32 = 200;

/// Run `call` in a task under a 5 ms threshold; return what it returned and the run.
fn blocked<T: Send + 'static>(name: &str, call: fn() -> T) -> (T, RunFile) {
    let mut out = None;
    let (run, _) = record_with(
        name,
        Flavor::MultiThread(2),
        |b| b.stall_threshold(Duration::from_millis(5)),
        || async {
            out = Some(tokio::spawn(async move { call() }).await.unwrap());
        },
    );
    (out.expect("the task ran"), run)
}

/// The stall at the line marked `// stall: {marker}`: blocking, in one of `syscalls`,
/// sampled at least twice, with a primitive named.
fn assert_stall<'r>(run: &'r RunFile, marker: &str, syscalls: &[&str]) -> &'r StallRecord {
    let line = stall_line(marker);
    let stall = run
        .stalls
        .iter()
        .find(|s| s.culprit.as_ref().is_some_and(|c| c.line == Some(line)))
        .unwrap_or_else(|| panic!("no stall at line {line} ({marker}): {:#?}", run.stalls));
    let culprit = stall.culprit.as_ref().unwrap();
    assert!(
        culprit
            .file
            .as_deref()
            .is_some_and(|f| f.ends_with("tests/it/syscalls.rs")),
        "{culprit}"
    );
    assert_eq!(stall.class, StallClass::Blocking, "{stall:#?}");
    let syscall = stall.syscall.as_deref().unwrap_or("");
    assert!(syscalls.contains(&syscall), "{syscall} not in {syscalls:?}");
    let samples: u32 = stall.stacks.iter().map(|s| s.count).sum();
    assert!(samples >= 2, "{samples} samples: {stall:#?}");
    assert!(stall.primitive.is_some(), "{stall:#?}");
    stall
}

fn retry(attempt: impl Fn()) {
    crate::support::retry_if_disturbed(attempt);
}

#[test]
fn issue_16_udp_recv_from_with_a_read_timeout() {
    retry(|| {
        let (r, run) = blocked("udp-recv", || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_read_timeout(Some(BLOCK)).unwrap();
            let mut buf = [0u8; 16];
            sock.recv_from(&mut buf).map_err(|e| e.kind()) // stall: udp-recv
        });
        assert_eq!(r.err(), Some(ErrorKind::WouldBlock), "a timeout, not EINTR");
        assert_stall(&run, "udp-recv", &["recvfrom"]);
    });
}

#[test]
fn issue_16_tcp_read_with_a_read_timeout() {
    retry(|| {
        let (r, run) = blocked("tcp-read", || {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let _server = listener.accept().unwrap();
            client.set_read_timeout(Some(BLOCK)).unwrap();
            let mut buf = [0u8; 16];
            client.read(&mut buf).map_err(|e| e.kind()) // stall: tcp-read
        });
        assert_eq!(r.err(), Some(ErrorKind::WouldBlock), "a timeout, not EINTR");
        assert_stall(&run, "tcp-read", &["read", "recvfrom"]);
    });
}

#[test]
fn issue_16_tcp_send_with_a_write_timeout() {
    retry(|| {
        let (r, run) = blocked("tcp-send", || {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            // The peer never reads: the send buffer fills, then a write waits for its timeout.
            let _server = listener.accept().unwrap();
            client.set_write_timeout(Some(BLOCK)).unwrap();
            let chunk = vec![7u8; 1 << 16];
            let mut sent = 0usize;
            loop {
                let r = client.write(&chunk); // stall: tcp-send
                match r {
                    Ok(n) => sent += n,
                    Err(e) => return (sent > 0, e.kind()),
                }
            }
        });
        assert_eq!(r, (true, ErrorKind::WouldBlock), "a timeout, not EINTR");
        assert_stall(&run, "tcp-send", &["write", "sendto"]);
    });
}

#[test]
fn issue_16_libc_poll() {
    retry(|| {
        let (r, run) = blocked("poll", || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut fds = [libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&sock),
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 1, BLOCK_MS) }; // stall: poll
            (rc, std::io::Error::last_os_error().raw_os_error())
        });
        assert_eq!(r.0, 0, "poll timed out, not interrupted (errno {:?})", r.1);
        assert_stall(&run, "poll", &["poll", "ppoll"]);
    });
}

#[test]
fn issue_16_libc_ppoll() {
    retry(|| {
        let (r, run) = blocked("ppoll", || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut fds = [libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&sock),
                events: libc::POLLIN,
                revents: 0,
            }];
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: BLOCK.as_nanos() as _,
            };
            let (fds, mask) = (fds.as_mut_ptr(), std::ptr::null());
            // SAFETY: one valid pollfd, a valid timespec, no signal mask.
            let rc = unsafe { libc::ppoll(fds, 1, &ts, mask) }; // stall: ppoll
            (rc, std::io::Error::last_os_error().raw_os_error())
        });
        assert_eq!(r.0, 0, "ppoll timed out, not interrupted (errno {:?})", r.1);
        assert_stall(&run, "ppoll", &["ppoll"]);
    });
}

#[test]
fn issue_16_libc_select() {
    retry(|| {
        let (r, run) = blocked("select", || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
            // SAFETY: an all-zero fd_set is empty; FD_SET with an fd below FD_SETSIZE.
            let mut set: libc::fd_set = unsafe { std::mem::zeroed() };
            unsafe { libc::FD_SET(fd, &mut set) };
            let mut tv = libc::timeval {
                tv_sec: 0,
                tv_usec: BLOCK.as_micros() as _,
            };
            let (rd, none) = (&mut set as *mut libc::fd_set, std::ptr::null_mut());
            // SAFETY: valid fd_set and timeval pointers.
            let rc = unsafe { libc::select(fd + 1, rd, none, none, &mut tv) }; // stall: select
            (rc, std::io::Error::last_os_error().raw_os_error())
        });
        assert_eq!(
            r.0, 0,
            "select timed out, not interrupted (errno {:?})",
            r.1
        );
        assert_stall(&run, "select", &["select", "pselect6"]);
    });
}

#[test]
fn issue_16_epoll_wait() {
    retry(|| {
        let (r, run) = blocked("epoll", || {
            // SAFETY: plain system calls on a new epoll fd that this closure owns and closes.
            unsafe {
                let ep = libc::epoll_create1(0);
                assert!(ep >= 0);
                let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
                let rc = libc::epoll_wait(ep, events.as_mut_ptr(), 4, BLOCK_MS); // stall: epoll
                let errno = std::io::Error::last_os_error().raw_os_error();
                libc::close(ep);
                (rc, errno)
            }
        });
        assert_eq!(
            r.0, 0,
            "epoll_wait timed out, not interrupted (errno {:?})",
            r.1
        );
        assert_stall(
            &run,
            "epoll",
            &["epoll_wait", "epoll_pwait", "epoll_pwait2"],
        );
    });
}

#[test]
fn issue_16_libc_nanosleep() {
    retry(|| {
        let (r, run) = blocked("nanosleep", || {
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: BLOCK.as_nanos() as _,
            };
            let mut rem = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: valid timespec pointers.
            let rc = unsafe { libc::nanosleep(&ts, &mut rem) }; // stall: nanosleep
            (rc, std::io::Error::last_os_error().raw_os_error())
        });
        assert_eq!(
            r.0, 0,
            "nanosleep slept through, not interrupted (errno {:?})",
            r.1
        );
        assert_stall(&run, "nanosleep", &["nanosleep", "clock_nanosleep"]);
    });
}

#[test]
fn issue_16_libc_clock_nanosleep() {
    retry(|| {
        let (rc, run) = blocked("clock-nanosleep", || {
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: BLOCK.as_nanos() as _,
            };
            let (clock, rem) = (libc::CLOCK_MONOTONIC, std::ptr::null_mut());
            // SAFETY: a valid timespec; no remainder wanted.
            unsafe { libc::clock_nanosleep(clock, 0, &ts, rem) } // stall: clock-nanosleep
        });
        // clock_nanosleep returns the error number itself: 4 would be EINTR.
        assert_eq!(rc, 0, "clock_nanosleep slept through, not interrupted");
        assert_stall(&run, "clock-nanosleep", &["clock_nanosleep"]);
    });
}
