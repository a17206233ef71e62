use serde::{Deserialize, Serialize};

/// A latency histogram as stored in a run file: the sparse buckets of an HdrHistogram.
///
/// Each bucket is `[value, count]`, where `value` is the highest value equivalent to the
/// bucket (HdrHistogram's "value iterated to"). Values are nanoseconds unless the field that
/// holds the histogram says otherwise.
///
/// ```
/// use asyncprof_format::Histogram;
///
/// let mut h = hdrhistogram::Histogram::<u64>::new_with_max(60_000_000_000, 2).unwrap();
/// h.record_n(2_000_000, 5).unwrap();
/// let stored = Histogram::from_hdr(&h);
/// assert_eq!(stored.count(), 5);
/// let back = stored.to_hdr();
/// assert_eq!(back.len(), 5);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Histogram {
    /// Significant decimal digits the histogram resolves (asyncprof writes 1 or 2; readers
    /// use at most 3, so that a damaged file cannot make them allocate tens of megabytes).
    pub sigfig: u8,
    /// The largest value it tracks; larger values were clamped to it when recorded.
    pub high: u64,
    /// `[value, count]` pairs in ascending value order, empty buckets left out.
    pub buckets: Vec<[u64; 2]>,
}

/// The largest value a stored histogram may declare (about 292 years of nanoseconds).
const HIGH_LIMIT: u64 = u64::MAX / 2;

/// The most values a rebuilt histogram holds.
const COUNT_LIMIT: u64 = u64::MAX / 4;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            sigfig: 2,
            high: 3_600_000_000_000,
            buckets: Vec::new(),
        }
    }
}

impl Histogram {
    /// Store an HdrHistogram's recorded buckets.
    pub fn from_hdr(h: &hdrhistogram::Histogram<u64>) -> Self {
        Histogram {
            sigfig: h.sigfig(),
            high: h.high(),
            buckets: h
                .iter_recorded()
                .map(|v| [v.value_iterated_to(), v.count_at_value()])
                .collect(),
        }
    }

    /// Rebuild an HdrHistogram. Damaged fields degrade instead of failing: an out-of-range
    /// precision or bound is replaced by a valid one and values above the bound are clamped.
    pub fn to_hdr(&self) -> hdrhistogram::Histogram<u64> {
        let sigfig = self.sigfig.clamp(1, 3);
        let high = self.high.clamp(2, HIGH_LIMIT);
        let mut h = hdrhistogram::Histogram::<u64>::new_with_max(high, sigfig)
            .or_else(|_| hdrhistogram::Histogram::<u64>::new_with_max(HIGH_LIMIT, 2))
            .expect("a histogram with sigfig 2 and a bound of u64::MAX / 2 is always valid");
        // A damaged file may claim counts whose sum overflows: the total is capped, so that
        // HdrHistogram's own sums never do.
        let mut total = 0u64;
        for &[value, count] in &self.buckets {
            let count = count.min(COUNT_LIMIT - total);
            total += count;
            h.saturating_record_n(value.min(h.high()), count);
        }
        h
    }

    /// Total number of recorded values.
    pub fn count(&self) -> u64 {
        self.buckets
            .iter()
            .fold(0u64, |acc, [_, c]| acc.saturating_add(*c))
    }

    /// The value at `quantile` (0.0 to 1.0), or 0 for an empty histogram.
    pub fn quantile(&self, quantile: f64) -> u64 {
        if self.buckets.is_empty() {
            return 0;
        }
        self.to_hdr().value_at_quantile(quantile.clamp(0.0, 1.0))
    }

    /// The values recorded since `earlier`, an earlier state of the same cumulative histogram
    /// (a snapshot's, say, minus the previous snapshot's): each bucket's count less
    /// `earlier`'s. When the two do not share their layout (precision or bound), there is no
    /// difference to take and the whole of `self` is returned.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        if (self.sigfig, self.high) != (earlier.sigfig, earlier.high) {
            return self.clone();
        }
        let mut old = earlier.buckets.iter().peekable();
        let buckets = self
            .buckets
            .iter()
            .filter_map(|&[value, count]| {
                while old.next_if(|[v, _]| *v < value).is_some() {}
                let before = old.next_if(|[v, _]| *v == value).map_or(0, |[_, c]| *c);
                let count = count.saturating_sub(before);
                (count > 0).then_some([value, count])
            })
            .collect();
        Histogram {
            sigfig: self.sigfig,
            high: self.high,
            buckets,
        }
    }

    /// The largest recorded value (the top of its bucket), or 0 for an empty histogram.
    pub fn max(&self) -> u64 {
        self.buckets.last().map_or(0, |[v, _]| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_fields_degrade() {
        let h = Histogram {
            sigfig: 200,
            high: 0,
            buckets: vec![[u64::MAX, 3], [10, 1]],
        };
        let hdr = h.to_hdr();
        assert_eq!(hdr.len(), 4);
    }

    #[test]
    fn since_an_earlier_state_keeps_only_the_new_values() {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_max(3_600_000_000_000, 2).unwrap();
        h.record_n(1_000, 1_000).unwrap();
        h.record_n(5_000_000, 2).unwrap();
        let earlier = Histogram::from_hdr(&h);
        h.record_n(1_000, 10).unwrap();
        h.record_n(80_000_000, 3).unwrap();
        let later = Histogram::from_hdr(&h);
        let window = later.since(&earlier);
        assert_eq!(window.count(), 13);
        // 10 short values and 3 long ones: the window's p99 is the long one, where the
        // cumulative histogram's is not.
        assert!(window.quantile(0.99) >= 80_000_000, "{window:?}");
        assert!(later.quantile(0.99) < 80_000_000);
        assert_eq!(later.since(&later).count(), 0);
        assert_eq!(later.since(&Histogram::default()), later);
        // Another layout: no difference to take.
        let other = Histogram {
            sigfig: 1,
            ..Histogram::default()
        };
        assert_eq!(later.since(&other), later);
    }

    #[test]
    fn quantiles_of_empty_are_zero() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.99), 0);
        assert_eq!(h.max(), 0);
        assert_eq!(h.count(), 0);
    }
}
