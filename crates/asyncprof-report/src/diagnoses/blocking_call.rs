//! `blocking-call`: a poll slept in a system call past the threshold.
//!
//! **Measures**: a stall whose thread was asleep for most of its time (a poll's stall: its
//! `schedstat`), or in most of the watchdog's looks (a busy period's), outside a std lock: a
//! `std::thread::sleep`, synchronous file or socket I/O, a blocking HTTP or database client;
//! or one on CPU whose stacks mostly begin in the C library's wrapper of a system call (a
//! `read` copying a large file from the page cache, sampled as the call returned).
//! The primitive is the call the user's code made; the system call says which kind of wait.
//! **Why it hurts**: the worker does nothing and runs nothing else for as long as the call
//! takes; every task queued on it waits.
//! **What to do**: use the async equivalent (`tokio::time::sleep`, `tokio::net`,
//! `tokio::fs`, an async client) or move the call into `tokio::task::spawn_blocking`.

/// The kind's name.
pub const KIND: &str = asyncprof_format::StallKind::BlockingCall.name();

/// What to do.
pub fn recommendation(
    primitive: Option<&str>,
    same_code: &[String],
    syscall: Option<&str>,
    max_ms: f64,
) -> String {
    format!(
        "{} blocked the worker thread for up to {max_ms:.1} ms{}. Use the async equivalent \
         (tokio::time::sleep, tokio::net, tokio::fs, an async client) or move the call into \
         tokio::task::spawn_blocking.",
        super::call(primitive, same_code),
        syscall.map_or_else(String::new, |s| format!(" (asleep in {s})"))
    )
}
