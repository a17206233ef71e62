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

    /// Add `value` `n` times, clamped to [`Sink::high`]; the values clamped are counted in
    /// `outliers` (as [`record`] does for one value).
    fn add_n_counted(&mut self, value: u64, n: u64, outliers: &AtomicU64) {
        let value = if value > self.high() {
            outliers.fetch_add(n, Relaxed);
            self.high()
        } else {
            value
        };
        self.add_n(value, n);
    }
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
/// a fine histogram's buckets when stored ([`Gather::finish`]), or sooner once they are many
/// (so it never holds more than about twice a fine histogram's buckets, whatever the number
/// of tasks it gathers). The stored histogram is the one recording them all into a
/// [`new_fine`] histogram gives, without that histogram's 36 KiB of counts to clear and walk
/// for every location and busy task at every snapshot. Cold path.
#[derive(Debug, Default)]
pub(crate) struct Gather {
    values: Vec<[u64; 2]>,
}

/// Past this many values a [`Gather`] puts them in their buckets (64 KiB of values).
const GATHER_COMPACT_AT: usize = 4096;

/// A fine histogram for the process, for its bucket bounds only (its counts stay empty).
fn fine_bounds() -> &'static Histogram<u64> {
    static FINE: std::sync::OnceLock<Histogram<u64>> = std::sync::OnceLock::new();
    FINE.get_or_init(new_fine)
}

impl Sink for Gather {
    fn high(&self) -> u64 {
        HIGH_NS
    }

    /// Values above [`HIGH_NS`] are stored at it. Merges and `WaitHist::add_to` clamp and count
    /// them first; a fine histogram would keep a value up to about 1.2 hours in a bucket of its
    /// own, which only the means of short polls and delays that `fill_short` adds could reach
    /// (they are under a millisecond or so).
    fn add_n(&mut self, value: u64, n: u64) {
        if n > 0 {
            self.values.push([value.min(HIGH_NS), n]);
            if self.values.len() >= GATHER_COMPACT_AT {
                self.compact();
            }
        }
    }
}

impl Gather {
    /// Add what `other` gathered.
    pub(crate) fn append(&mut self, other: &Gather) {
        self.values.extend_from_slice(&other.values);
        if self.values.len() >= GATHER_COMPACT_AT {
            self.compact();
        }
    }

    /// Put the values in their buckets, one entry per bucket, in ascending order.
    fn compact(&mut self) {
        let fine = fine_bounds();
        for v in &mut self.values {
            v[0] = fine.highest_equivalent(v[0].min(fine.high()));
        }
        self.values.sort_unstable_by_key(|v| v[0]);
        let mut kept = 0;
        for i in 0..self.values.len() {
            let [value, n] = self.values[i];
            if kept > 0 && self.values[kept - 1][0] == value {
                self.values[kept - 1][1] = self.values[kept - 1][1].saturating_add(n);
            } else {
                self.values[kept] = [value, n];
                kept += 1;
            }
        }
        self.values.truncate(kept);
    }

    /// The gathered values in a fine histogram's buckets, as
    /// [`asyncprof_format::Histogram::from_hdr`] stores a fine histogram.
    pub(crate) fn finish(mut self) -> asyncprof_format::Histogram {
        self.compact();
        let fine = fine_bounds();
        let mut h = asyncprof_format::Histogram::default();
        h.sigfig = fine.sigfig();
        h.high = fine.high();
        h.buckets = self.values;
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

    /// However many values it gathers (a location with thousands of live tasks), a gathered
    /// histogram holds at most a fine histogram's buckets plus the values since it last put
    /// them in buckets, and is stored as the fine one would be.
    #[test]
    fn a_gathered_histogram_stays_bounded() {
        let mut dense = new_fine();
        let mut gathered = Gather::default();
        let buckets = new_fine().distinct_values();
        for i in 0..200_000u64 {
            // Every bucket up to about 30 s, again and again.
            let v = ((i * 7919) % 30_000_000_000) >> (i % 20);
            dense.add_n(v, 1 + i % 3);
            gathered.add_n(v, 1 + i % 3);
            assert!(gathered.values.len() < buckets + GATHER_COMPACT_AT, "{i}");
        }
        let mut part = Gather::default();
        part.add_n(5, 2);
        dense.add_n(5, 2);
        gathered.append(&part);
        assert_eq!(
            gathered.finish(),
            asyncprof_format::Histogram::from_hdr(&dense)
        );
    }
}
