//! What asyncprof's benchmarks share: their flags, parsed with clap ([`args`]), and the
//! medians, quantiles and ranges they report ([`median`], [`quantile`], [`range`]).
//!
//! ```
//! #[derive(clap::Parser)]
//! #[command(name = "poll_overhead")]
//! struct Args {
//!     /// Rounds, each configuration once per round.
//!     #[arg(long, default_value_t = 7)]
//!     rounds: usize,
//! }
//!
//! let args: Args = asyncprof_bench_support::args_from(["bench", "--bench", "--rounds", "3"]);
//! assert_eq!(args.rounds, 3);
//! assert_eq!(asyncprof_bench_support::median([3.0, 1.0, 2.0, 10.0]), Some(2.5));
//! ```

#![forbid(unsafe_code)]

use std::ffi::OsString;

/// The flag `cargo bench` passes to a benchmark built with `harness = false`.
const CARGO_BENCH_FLAG: &str = "--bench";

/// This benchmark's flags, parsed from the command line into `A`: see [`args_from`].
///
/// Bad flags print clap's usage and exit with status 2; `--help` prints the flags. A build
/// with debug assertions (CI's smoke runs build the benches with the tests) says that its
/// figures are not measurements.
pub fn args<A: clap::Parser>() -> A {
    let args = args_from(std::env::args_os());
    if cfg!(debug_assertions) {
        eprintln!(
            "note: an unoptimized build (a smoke run): its figures are not measurements; \
             measure with `cargo bench`"
        );
    }
    args
}

/// Flags parsed into `A` from `argv` (the program's name first). The `--bench` that
/// `cargo bench` passes is dropped, so that a benchmark declares only its own flags; usage
/// and errors name the benchmark by its command name (`#[command(name = "...")]`), not by the
/// hashed file name cargo gives it.
pub fn args_from<A, I, T>(argv: I) -> A
where
    A: clap::Parser,
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let name = OsString::from(A::command().get_name());
    let flags = argv
        .into_iter()
        .skip(1)
        .map(Into::into)
        .filter(|a| a != CARGO_BENCH_FLAG);
    A::parse_from(std::iter::once(name).chain(flags))
}

/// The `q` quantile (0 to 1) of `values`: the value at rank `q × (n − 1)` among the sorted
/// values, interpolated linearly between the two nearest ranks; `None` when there are no
/// values.
pub fn quantile(values: impl IntoIterator<Item = f64>, q: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let rank = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    if lo == hi {
        return Some(v[lo]);
    }
    Some(v[lo] + (v[hi] - v[lo]) * (rank - lo as f64))
}

/// The median of `values` (the mean of the two middle values when there is an even number of
/// them); `None` when there are none.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    quantile(values, 0.5)
}

/// The smallest and the largest of `values`; `None` when there are none.
pub fn range(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values.into_iter().fold(None, |acc, x| match acc {
        None => Some((x, x)),
        Some((lo, hi)) => Some((lo.min(x), hi.max(x))),
    })
}

/// A distribution-free confidence interval for the median of `values`: the narrowest pair of
/// order statistics `(x(k), x(n+1-k))` whose coverage is at least `level` (for a median of
/// independent runs, coverage `1 − 2·P(Binomial(n, ½) < k)`), with that coverage. With too few
/// values for `level`, the widest pair (the smallest and the largest) and its lower coverage:
/// five values cover 93.75%, six 96.9%. `None` when there are no values.
pub fn median_ci(values: impl IntoIterator<Item = f64>, level: f64) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.into_iter().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let total = 2f64.powi(n as i32);
    // (x(1), x(n)): 1 − 2·P(X = 0).
    let mut best = (v[0], v[n - 1], 1.0 - 2.0 / total);
    let (mut cum, mut coef) = (0.0, 1.0); // P(X <= k - 1), C(n, k - 1)
    for k in 1..=n.div_ceil(2) {
        cum += coef / total;
        coef = coef * (n - (k - 1)) as f64 / k as f64;
        let cover = 1.0 - 2.0 * cum;
        if cover < level {
            break;
        }
        best = (v[k - 1], v[n - k], cover);
    }
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    #[command(name = "poll_overhead")]
    struct Args {
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        #[arg(long, default_value_t = 1000)]
        tasks: u64,
    }

    #[test]
    fn flags_parse_with_or_without_the_flag_cargo_bench_passes() {
        let a: Args = args_from(["poll_overhead", "--tasks", "20", "--bench", "--rounds", "1"]);
        assert_eq!((a.rounds, a.tasks), (1, 20));
        let a: Args = args_from(["poll_overhead"]);
        assert_eq!((a.rounds, a.tasks), (7, 1000));
    }

    #[test]
    fn unknown_flags_and_bad_numbers_are_errors() {
        use clap::Parser;
        assert!(Args::try_parse_from(["b", "--items", "3"]).is_err());
        assert!(Args::try_parse_from(["b", "--rounds", "three"]).is_err());
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median([5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median([7.0]), Some(7.0));
        assert_eq!(median([]), None);
    }

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let v: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!(quantile(v.iter().copied(), 0.99), Some(99.0));
        assert_eq!(quantile([0.0, 10.0], 0.25), Some(2.5));
        assert_eq!(quantile([1.0, 2.0], 0.0), Some(1.0));
        assert_eq!(quantile([1.0, 2.0], 1.0), Some(2.0));
    }

    #[test]
    fn median_intervals_have_the_binomial_coverage() {
        // Five values cannot reach 95%: the smallest and largest, covering 1 − 2/32.
        let (lo, hi, c) = median_ci([3.0, 1.0, 5.0, 2.0, 4.0], 0.95).unwrap();
        assert_eq!((lo, hi), (1.0, 5.0));
        assert!((c - 0.9375).abs() < 1e-12);
        // Nine: (x(2), x(8)) covers 1 − 2·(1 + 9)/512 = 96.1%; (x(3), x(7)) only 82%.
        let v: Vec<f64> = (1..=9).map(f64::from).collect();
        let (lo, hi, c) = median_ci(v.iter().copied(), 0.95).unwrap();
        assert_eq!((lo, hi), (2.0, 8.0));
        assert!((c - (1.0 - 20.0 / 512.0)).abs() < 1e-12);
        // At a lower level, narrower.
        let (lo, hi, _) = median_ci(v.iter().copied(), 0.8).unwrap();
        assert_eq!((lo, hi), (3.0, 7.0));
        assert_eq!(median_ci([], 0.95), None);
        assert_eq!(median_ci([2.0], 0.95), Some((2.0, 2.0, 0.0)));
    }

    #[test]
    fn range_is_smallest_and_largest() {
        assert_eq!(range([2.0, -1.0, 5.0]), Some((-1.0, 5.0)));
        assert_eq!(range([]), None);
    }
}
