//! `slow-stage`: one stage (a user span) takes most of an item's end-to-end time, awaiting
//! rather than computing: it waits on something slow (a remote service, a store, a lock).
//!
//! **Measures**: the stages, user spans recorded through asyncprof's subscriber layer (each
//! span's life, creation to close, and the time it was entered, that is polled), against the
//! end-to-end latency of an item: an [`asyncprof::Latency`] when the program records one, else
//! the stage with the longest mean. A stage is slow when, over at least `stage_min_count`
//! (20) closed spans, its mean is at least `slow_stage_share` (50%) of the end-to-end mean and
//! at least `slow_stage_min_ms` (10 ms; some stage always takes most of a fast item's time),
//! it ran for at least half as many items, and it was polled less than 20% of its life: the
//! rest it spent awaiting. A stage that computed or blocked in its polls is left to the stall
//! findings, which name the line.
//! **Why it hurts**: every item waits for it; the end-to-end latency is mostly that stage's,
//! and making anything else faster changes little.
//! **What to do**: the awaits inside the span are where the time went: batch the calls it
//! makes (one round trip for many items), run them concurrently with bounded concurrency,
//! cache the answers, or take the stage off the item's path (hand the item to a background
//! writer through a bounded channel). Which `.await` inside the span took the time is not
//! shown: spans inside it, as stages of their own, split it further.
//!
//! [`asyncprof::Latency`]: https://docs.rs/asyncprof

use asyncprof_format::{RunFile, StageStats};

use crate::findings::FindingLocation;
use crate::{Finding, Severity, Thresholds};

/// The kind's name.
pub const KIND: &str = "slow-stage";

/// The target of the stages that are `asyncprof::Latency` histograms.
const LATENCY_TARGET: &str = "latency";

/// A stage polled at most this share of its life was awaiting.
const AWAITING_BUSY_SHARE: f64 = 0.2;

/// The mean span life of `s`, from its histogram.
fn mean_ns(s: &StageStats) -> f64 {
    if s.duration_ns.count() == 0 {
        return 0.0;
    }
    s.duration_ns.to_hdr().mean()
}

/// One finding per stage that dominates the end-to-end time.
pub(crate) fn findings(run: &RunFile, t: &Thresholds) -> Vec<Finding> {
    let Some(snap) = &run.snapshot else {
        return Vec::new();
    };
    let enough = |s: &&StageStats| s.count >= t.stage_min_count;
    let latencies: Vec<&StageStats> = snap
        .stages
        .iter()
        .filter(|s| s.target == LATENCY_TARGET)
        .filter(enough)
        .collect();
    let spans: Vec<&StageStats> = snap
        .stages
        .iter()
        .filter(|s| s.target != LATENCY_TARGET)
        .filter(enough)
        .collect();
    let pool = if latencies.is_empty() {
        &spans
    } else {
        &latencies
    };
    let Some(end_to_end) = pool
        .iter()
        .max_by(|a, b| mean_ns(a).total_cmp(&mean_ns(b)))
        .copied()
    else {
        return Vec::new();
    };
    let whole = mean_ns(end_to_end);
    if whole <= 0.0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for s in spans {
        if std::ptr::eq(s, end_to_end) {
            continue;
        }
        let mean = mean_ns(s);
        let share = mean / whole;
        let lived: f64 = mean * s.count as f64;
        let polled = if lived > 0.0 {
            s.busy_ns as f64 / lived
        } else {
            1.0
        };
        if share < t.slow_stage_share
            || mean < t.slow_stage_min_ms * 1e6
            || (s.count as f64) < 0.5 * end_to_end.count as f64
            || polled >= AWAITING_BUSY_SHARE
        {
            continue;
        }
        let Some(loc) = &s.location else { continue };
        let evidence = vec![
            format!(
                "stage {:?}: {} spans, {:.1} ms on average (p99 {:.1} ms)",
                s.name,
                s.count,
                mean / 1e6,
                s.duration_ns.quantile(0.99) as f64 / 1e6
            ),
            format!(
                "{:.0}% of the end-to-end time of an item ({:?}: {:.1} ms on average over {} items)",
                share.min(1.0) * 100.0,
                end_to_end.name,
                whole / 1e6,
                end_to_end.count
            ),
            format!(
                "polled {:.1}% of its life: the rest it awaited",
                polled * 100.0
            ),
        ];
        let recommendation = format!(
            "Stage {:?} takes {:.0}% of each item's time and spends it awaiting, not computing: \
             the awaits inside it wait on something slow. Batch the calls it makes (one round \
             trip for many items), run them concurrently with bounded concurrency, cache the \
             answers, or take the stage off the item's path (a background writer fed through a \
             bounded channel). Spans inside it, as stages of their own, show which await.",
            s.name,
            share.min(1.0) * 100.0
        );
        let mut f = Finding::runtime_wide(
            KIND,
            Severity::Warning,
            FindingLocation::at(loc),
            recommendation,
            evidence,
        );
        f.count = s.count;
        f.total_ms = (lived / 1e4).round() / 100.0;
        out.push(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use asyncprof_format::{
        read_bytes, Header, Histogram, RunWriter, Snapshot, SourceLocation, StageStats,
    };

    use crate::{Finding, Thresholds};

    /// A stage of `count` spans of `ms` each, polled `busy_share` of their life.
    fn stage(
        name: &str,
        target: &str,
        line: u32,
        count: u64,
        ms: u64,
        busy_share: f64,
    ) -> StageStats {
        let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        h.record_n(ms * 1_000_000, count).unwrap();
        let mut s = StageStats::default();
        s.name = name.into();
        s.target = target.into();
        s.location = Some(SourceLocation::new("src/store.rs", line, 0));
        s.count = count;
        s.busy_ns = (busy_share * (ms * 1_000_000 * count) as f64) as u64;
        s.duration_ns = Histogram::from_hdr(&h);
        s
    }

    fn findings(stages: Vec<StageStats>) -> Vec<Finding> {
        let mut bytes = Vec::new();
        let mut w = RunWriter::new(&mut bytes, &Header::new("svc")).unwrap();
        let mut s = Snapshot::default();
        s.stages = stages;
        w.write_snapshot(&s).unwrap();
        w.write_end().unwrap();
        super::findings(&read_bytes(&bytes).unwrap(), &Thresholds::default())
    }

    #[test]
    fn a_stage_awaiting_most_of_the_item_time_is_slow_at_its_span() {
        let f = findings(vec![
            stage("item latency", "latency", 10, 100, 40, 0.0),
            stage("fetch", "svc", 20, 100, 5, 0.05),
            stage("store", "svc", 30, 100, 20, 0.01),
        ]);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, super::KIND);
        assert_eq!(f[0].location.line, 30);
        assert!(
            f[0].evidence[1].starts_with("50% of the end-to-end"),
            "{:?}",
            f[0].evidence
        );
    }

    #[test]
    fn just_below_half_or_a_stage_that_computes_is_not_slow() {
        assert!(findings(vec![
            stage("item latency", "latency", 10, 100, 40, 0.0),
            stage("store", "svc", 30, 100, 19, 0.01),
        ])
        .is_empty());
        // Polled past a fifth of its life: it computed or blocked, which the stalls name.
        assert!(findings(vec![
            stage("item latency", "latency", 10, 100, 40, 0.0),
            stage("store", "svc", 30, 100, 30, 0.21),
        ])
        .is_empty());
        assert_eq!(
            findings(vec![
                stage("item latency", "latency", 10, 100, 40, 0.0),
                stage("store", "svc", 30, 100, 30, 0.19),
            ])
            .len(),
            1
        );
        // Most of a fast item's time, under 10 ms: 9 ms of 12 is not slow, 11 ms is.
        assert!(findings(vec![
            stage("item latency", "latency", 10, 100, 12, 0.0),
            stage("fetch", "svc", 30, 100, 9, 0.01),
        ])
        .is_empty());
        assert_eq!(
            findings(vec![
                stage("item latency", "latency", 10, 100, 12, 0.0),
                stage("fetch", "svc", 30, 100, 11, 0.01),
            ])
            .len(),
            1
        );
        // Too few spans to say.
        assert!(findings(vec![
            stage("item latency", "latency", 10, 19, 40, 0.0),
            stage("store", "svc", 30, 19, 30, 0.01),
        ])
        .is_empty());
    }

    #[test]
    fn without_a_latency_the_longest_stage_is_the_whole() {
        let f = findings(vec![
            stage("request", "svc", 5, 50, 100, 0.02),
            stage("db", "svc", 30, 50, 80, 0.01),
        ]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].location.line, 30);
    }
}
