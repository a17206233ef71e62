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
pub(crate) fn merge<S: Sink, B: Counter>(dst: &mut S, src: &Histogram<B>) {
    for v in src.iter_recorded() {
        let count = v.count_at_value().as_u64();
        dst.add_n(v.value_iterated_to().min(dst.high()), count);
    }
}

/// Where a snapshot's values go: a fine histogram, or a [`Gather`] that becomes one.
pub(crate) trait Sink {
    /// The largest value it holds.
    fn high(&self) -> u64;
    /// Add `value` `n` times, as [`Histogram::saturating_record_n`] does.
    fn add_n(&mut self, value: u64, n: u64);
}

impl Sink for Histogram<u64> {
    fn high(&self) -> u64 {
        Histogram::high(self)
    }

    fn add_n(&mut self, value: u64, n: u64) {
        self.saturating_record_n(value, n);
    }
}

/// A fine histogram gathered for a snapshot (a location's or a busy task's, from the
/// histograms and values that make it up): the values and their counts as they come, put in
/// a fine histogram's buckets only by [`Gather::finish`]. The stored histogram is the one
/// recording them all into a [`new_fine`] histogram gives, without that histogram's 35 KiB
/// of counts to clear and walk for every location and busy task at every snapshot. Cold path.
#[derive(Debug, Default)]
pub(crate) struct Gather {
    values: Vec<[u64; 2]>,
}

impl Sink for Gather {
    fn high(&self) -> u64 {
        HIGH_NS
    }

    /// Values above [`HIGH_NS`] are stored at it (every caller clamps and counts them first).
    fn add_n(&mut self, value: u64, n: u64) {
        if n > 0 {
            self.values.push([value.min(HIGH_NS), n]);
        }
    }
}

impl Gather {
    /// Add what `other` gathered.
    pub(crate) fn append(&mut self, other: &Gather) {
        self.values.extend_from_slice(&other.values);
    }

    /// The gathered values in a fine histogram's buckets, as
    /// [`asyncprof_format::Histogram::from_hdr`] stores a fine histogram.
    pub(crate) fn finish(mut self) -> asyncprof_format::Histogram {
        // One fine histogram for the process, for its bucket bounds only.
        static FINE: std::sync::OnceLock<Histogram<u64>> = std::sync::OnceLock::new();
        let fine = FINE.get_or_init(new_fine);
        for v in &mut self.values {
            v[0] = fine.highest_equivalent(v[0].min(fine.high()));
        }
        self.values.sort_unstable_by_key(|v| v[0]);
        let mut buckets: Vec<[u64; 2]> = Vec::with_capacity(self.values.len());
        for [value, n] in self.values {
            match buckets.last_mut() {
                Some(last) if last[0] == value => last[1] = last[1].saturating_add(n),
                _ => buckets.push([value, n]),
            }
        }
        let mut h = asyncprof_format::Histogram::default();
        h.sigfig = fine.sigfig();
        h.high = fine.high();
        h.buckets = buckets;
        h
    }
}

/// Lock a mutex, taking the data even if a panicking thread poisoned it: statistics stay
/// usable after a panic in a profiled task.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gathered histogram is stored exactly as the fine histogram recording the same
    /// values, from the same sources, would be: the same buckets, the same counts.
    #[test]
    fn a_gathered_histogram_is_stored_as_the_fine_one_would_be() {
        assert_eq!(new_fine().high(), HIGH_NS);
        // A small deterministic generator: values over every order of magnitude up to and
        // past the bound, some repeated.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20 {
            let mut dense = new_fine();
            let mut gathered = Gather::default();
            // A coarse source (a task's) and a fine one (a location's).
            let mut coarse = new_coarse();
            let mut fine_src = new_fine();
            for _ in 0..(round * 37 + 1) {
                let v = next() >> (next() % 64);
                let n = next() % 5;
                dense.add_n(v.min(HIGH_NS), n);
                gathered.add_n(v.min(HIGH_NS), n);
                coarse.saturating_record_n(v.min(HIGH_NS), (n as u32).max(1));
                fine_src.saturating_record_n((v >> 3).min(HIGH_NS), n.max(1));
            }
            merge(&mut dense, &coarse);
            merge(&mut gathered, &coarse);
            merge(&mut dense, &fine_src);
            let mut part = Gather::default();
            merge(&mut part, &fine_src);
            gathered.append(&part);
            // Zero and the bound itself.
            dense.add_n(0, 3);
            gathered.add_n(0, 3);
            dense.add_n(HIGH_NS, 2);
            gathered.add_n(HIGH_NS, 2);
            let stored = asyncprof_format::Histogram::from_hdr(&dense);
            assert_eq!(gathered.finish(), stored, "round {round}");
        }
        assert_eq!(
            Gather::default().finish(),
            asyncprof_format::Histogram::from_hdr(&new_fine())
        );
    }
}
