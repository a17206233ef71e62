//! Histogram helpers: bounded histograms that never allocate when recording, and clamping
//! that is counted.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};

use hdrhistogram::{Counter, Histogram};

/// The largest duration a histogram tracks: one hour, in nanoseconds. Longer values are
/// clamped to it and counted in `histogram_outliers`.
pub(crate) const HIGH_NS: u64 = 3_600_000_000_000;

/// A runtime-wide or per-location histogram: 2 significant digits (1% resolution).
pub(crate) fn new_fine() -> Histogram<u64> {
    Histogram::new_with_max(HIGH_NS, 2).expect("constant bounds 1..=1h with sigfig 2 are valid")
}

/// A per-task histogram: 1 significant digit (about 6% resolution), 32-bit counts, a
/// twentieth of the memory of a fine one.
pub(crate) fn new_coarse() -> Histogram<u32> {
    Histogram::new_with_max(HIGH_NS, 1).expect("constant bounds 1..=1h with sigfig 1 are valid")
}

/// Record `value`, clamping it to the histogram's bound and counting the clamp.
pub(crate) fn record<T: Counter>(h: &mut Histogram<T>, value: u64, outliers: &AtomicU64) {
    let value = if value > h.high() {
        outliers.fetch_add(1, Relaxed);
        h.high()
    } else {
        value
    };
    h.saturating_record(value);
}

/// Add every recorded value of `src` into `dst` (any counter type, any precision).
pub(crate) fn merge<B: Counter>(dst: &mut Histogram<u64>, src: &Histogram<B>) {
    for v in src.iter_recorded() {
        let count = v.count_at_value().as_u64();
        dst.saturating_record_n(v.value_iterated_to().min(dst.high()), count);
    }
}

/// Lock a mutex, taking the data even if a panicking thread poisoned it: statistics stay
/// usable after a panic in a profiled task.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
