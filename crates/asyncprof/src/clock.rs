//! The coarse clock: a nanosecond timestamp that the watchdog thread publishes every tick, so
//! that timing a poll costs two relaxed loads instead of two `Instant::now()` calls.
//!
//! Two `Instant::now()` reads per poll halve the throughput of a yield-heavy workload; the
//! coarse clock's loads are a few cycles. Its resolution is the tick period (250 µs by
//! default): polls shorter than two ticks are timed exactly on a sample (one in
//! `sample_every`) instead.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

/// More than this many of the watchdog's intervals from one look to the next (a tick, or a
/// quiet service's sleep), or from a thread's wake to the watchdog's run after its idle wait
/// (a tick, or a quiet service's look interval), are a gap (`watchdog::count_gap`): it did not
/// run on time, the clock, which it publishes, stood still meanwhile (while the service is
/// busy), and nothing was looked at.
pub(crate) const GAP_TICKS: u64 = 4;

static EPOCH: OnceLock<Instant> = OnceLock::new();
static COARSE_NS: AtomicU64 = AtomicU64::new(0);

/// The instant all asyncprof timestamps count from.
pub(crate) fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Exact nanoseconds since [`epoch`]. Cold path only.
pub(crate) fn exact_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Stands in for the coarse clock while the service is quiet: [`coarse_ns`] then reads the
/// exact time, and the watchdog need not wake every tick to publish it.
const EXACT: u64 = u64::MAX;

/// Hot path: the last published coarse timestamp (ns since [`epoch`]); the exact time while
/// the service is quiet (see [`set_quiet`]).
#[inline(always)]
pub(crate) fn coarse_ns() -> u64 {
    published_ns().unwrap_or_else(exact_ns)
}

/// Hot path: the published coarse timestamp, or `None` while the service is quiet (when
/// [`coarse_ns`] reads the exact time instead).
#[inline(always)]
pub(crate) fn published_ns() -> Option<u64> {
    let ns = COARSE_NS.load(Relaxed);
    (ns != EXACT).then_some(ns)
}

/// The watchdog's switch between a busy service's clock (published every tick, two loads per
/// poll) and a quiet one's (every read an exact `Instant::now()`: at a few thousand polls a
/// second, cheaper than thousands of watchdog wake-ups a second).
pub(crate) fn set_quiet(quiet: bool) {
    if quiet {
        COARSE_NS.store(EXACT, Relaxed);
    } else {
        // A worker's `publish` meanwhile keeps it monotonic (`fetch_max`).
        let now = exact_ns();
        let _ = COARSE_NS.compare_exchange(EXACT, now, Relaxed, Relaxed);
    }
}

/// Publish the current time. Called by the watchdog every tick and by a worker when it
/// unparks, so the first poll after an idle period does not start from a stale time.
/// `fetch_max` keeps the clock monotonic when two threads publish at once.
pub(crate) fn publish() -> u64 {
    let now = exact_ns();
    COARSE_NS.fetch_max(now, Relaxed);
    now
}
