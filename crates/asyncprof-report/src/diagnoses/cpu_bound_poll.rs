//! `cpu-bound-poll`: a poll computed on the worker past the threshold.
//!
//! **Measures**: a stall whose thread was on CPU for most of its time (a poll's stall: its
//! `schedstat`), or in most of the watchdog's looks (a busy period's) (hashing, parsing,
//! compressing, indexing, a tight loop). A thread that was runnable but got little CPU is not
//! counted as computing. On a busy machine every look may find the thread runnable but
//! waiting for a core, leaving the stall unclassified: if it was never found asleep and still
//! used at least `PREEMPTED_CPU_SHARE` (35%) of the stall on CPU, it computed, more slowly.
//! **Why it hurts**: no other task runs on that worker meanwhile; their latency grows by the
//! length of the poll.
//! **What to do**: move the work to `tokio::task::spawn_blocking` or a rayon pool, or split it
//! and `tokio::task::yield_now().await` between chunks.

/// The kind's name.
pub const KIND: &str = asyncprof_format::StallKind::CpuBoundPoll.name();

/// What to do.
pub fn recommendation(max_ms: f64) -> String {
    format!(
        "This poll computed on the worker thread for up to {max_ms:.1} ms without yielding, \
         so no other task ran there. Move the work to tokio::task::spawn_blocking or a rayon \
         pool, or split it and call tokio::task::yield_now().await between chunks."
    )
}

/// What to add when most of the stack samples of a finding's stalls (`short` of `total`)
/// came as a short system call returned (`calls`, with their counts, most first): the poll
/// makes such calls often. A signal reaches a thread in its own code tens of microseconds
/// after it is sent, and one that enters a call before then takes it as the call returns, so
/// the samples say how often it calls, not how much of its time the calls took.
pub fn at_short_calls(calls: &[(&str, u64)], short: u64, total: u64) -> String {
    let named: Vec<String> = calls
        .iter()
        .take(3)
        .map(|(call, n)| format!("`{call}` {n}"))
        .collect();
    format!(
        " {short} of the {total} stack samples of these stalls came as a short system call \
         returned ({}): the poll makes such calls often, between steps of its work. If they are \
         file or socket I/O, tokio::fs, tokio::net or spawn_blocking takes them off the worker \
         with the rest.",
        named.join(", ")
    )
}
