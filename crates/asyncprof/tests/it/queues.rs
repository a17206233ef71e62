//! Queue diagnoses against known truth: pipelines whose slow stage, rates and queue lines are
//! known. Each queue's creation line ends with a `// queue: NAME` marker.

use std::time::Duration;

use asyncprof::sync::mpsc;
use asyncprof_format::{QueueKind, QueueStats, RunFile};
use asyncprof_report::Finding;

use crate::support::{record, Flavor};

/// The 1-based line of this file that ends with `// queue: {marker}`.
fn queue_line(marker: &str) -> u32 {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/queues.rs"),
    )
    .unwrap();
    let needle = format!("// queue: {marker}");
    text.lines()
        .position(|l| l.trim_end().ends_with(&needle))
        .map(|i| i as u32 + 1)
        .unwrap_or_else(|| panic!("no line ends with {needle:?}"))
}

fn queue<'a>(run: &'a RunFile, name: &str) -> &'a QueueStats {
    let snap = run.snapshot.as_ref().unwrap();
    snap.queues
        .iter()
        .find(|q| q.name == name)
        .unwrap_or_else(|| panic!("no queue {name:?} in the run"))
}

fn queue_findings(run: &RunFile) -> Vec<Finding> {
    asyncprof_report::diagnose(run)
        .into_iter()
        .filter(|f| f.kind.starts_with("queue-"))
        .collect()
}

/// source -> `ingest` -> forward -> `slow-stage` -> work -> `results` -> sink. The source sends
/// one item a millisecond; the work stage takes `work` per item.
async fn three_stages(prefix: &str, items: u64, work: Duration) {
    let (ingest_tx, mut ingest_rx) = mpsc::channel::<u64>(&format!("{prefix}-ingest"), 64); // queue: ingest
    let (slow_tx, mut slow_rx) = mpsc::channel::<u64>(&format!("{prefix}-slow-stage"), 16); // queue: slow-stage
    let (out_tx, mut out_rx) = mpsc::channel::<u64>(&format!("{prefix}-results"), 64); // queue: results
    let source = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        for i in 0..items {
            tick.tick().await;
            ingest_tx.send(i).await.unwrap();
        }
    });
    let forward = tokio::spawn(async move {
        while let Some(i) = ingest_rx.recv().await {
            slow_tx.send(i).await.unwrap();
        }
    });
    let worker = tokio::spawn(async move {
        while let Some(i) = slow_rx.recv().await {
            if !work.is_zero() {
                tokio::time::sleep(work).await;
            }
            out_tx.send(i * 2).await.unwrap();
        }
    });
    let mut n = 0;
    while out_rx.recv().await.is_some() {
        n += 1;
    }
    assert_eq!(n, items);
    for t in [source, forward, worker] {
        t.await.unwrap();
    }
}

#[test]
fn a_consumer_half_as_fast_as_its_producer_is_named_and_the_other_queues_are_not() {
    crate::support::retry_if_disturbed(|| {
        let (run, _) = record("q-backpressure", Flavor::MultiThread(2), || {
            three_stages("bp", 1200, Duration::from_millis(2))
        });
        let findings = queue_findings(&run);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.kind, "queue-backpressure");
        assert!(f.location.file.ends_with("tests/it/queues.rs"), "{f:#?}");
        assert_eq!(f.location.line, queue_line("slow-stage"), "{f:#?}");
        let q = f.queue.as_ref().unwrap();
        assert_eq!(q.name, "bp-slow-stage");
        assert!(q.full_share >= 0.5, "{q:#?}");
        assert!(f.count > 100, "senders waited on most items: {f:#?}");
        // The consuming stage is the worker's receive line.
        let consumer = q.consumer.as_deref().unwrap();
        assert!(consumer.contains("tests/it/queues.rs"), "{consumer}");
        // `ingest` filled too, because its consumer waited on the slow stage: named, not blamed.
        assert_eq!(q.upstream.len(), 1, "{q:#?}");
        assert!(q.upstream[0].starts_with("bp-ingest"), "{q:#?}");
        let ingest = queue(&run, "bp-ingest");
        assert_eq!(ingest.location.line, queue_line("ingest"));
        assert!(ingest.consumer_blocked_ns > 0, "{ingest:#?}");
        let results = queue(&run, "bp-results");
        assert_eq!(results.full_samples, 0, "{results:#?}");
        assert_eq!(results.enqueued, 1200);
        assert_eq!(results.dequeued, 1200);
        // Depth over time was sampled and joined by the reader.
        let slow = queue(&run, "bp-slow-stage");
        let points = &run.queue_depths[&slow.id];
        assert!(points.len() >= 10, "{} points", points.len());
        assert!(points.iter().any(|p| p.depth >= 16), "{points:?}");
        assert_eq!(slow.max_depth, 16);
    });
}

#[test]
fn balanced_rates_give_no_queue_finding() {
    crate::support::retry_if_disturbed(|| {
        let (run, _) = record("q-balanced", Flavor::MultiThread(2), || {
            three_stages("bal", 1200, Duration::ZERO)
        });
        let findings = queue_findings(&run);
        assert!(findings.is_empty(), "{findings:#?}");
        let slow = queue(&run, "bal-slow-stage");
        assert_eq!(slow.enqueued, 1200);
        assert!(slow.samples >= 5, "{slow:#?}");
        // Receivers waited for items: the queues sat mostly empty.
        assert!(slow.recv_wait_ns.count() > 100, "{slow:#?}");
    });
}

/// source -> `flat-out` -> stage -> `flat-out-results` -> sink, the source sending as fast as it
/// can for `run_for`; the stage takes `work` per item (none: a few instructions). Returns the
/// items that went through.
async fn flat_out(prefix: &str, run_for: Duration, work: Duration) -> u64 {
    let (tx, mut rx) = mpsc::channel::<u64>(&format!("{prefix}-flat-out"), 256); // queue: flat-out
    let (out_tx, mut out_rx) = mpsc::channel::<u64>(&format!("{prefix}-flat-out-results"), 256);
    let source = tokio::spawn(async move {
        let start = std::time::Instant::now();
        let mut i = 0u64;
        while start.elapsed() < run_for {
            for _ in 0..64 {
                tx.send(i).await.unwrap();
                i += 1;
            }
        }
        i
    });
    let stage = tokio::spawn(async move {
        while let Some(i) = rx.recv().await {
            if !work.is_zero() {
                tokio::time::sleep(work).await;
            }
            out_tx.send(i.wrapping_mul(31) ^ 7).await.unwrap();
        }
    });
    let mut n = 0;
    while out_rx.recv().await.is_some() {
        n += 1;
    }
    assert_eq!(n, source.await.unwrap());
    stage.await.unwrap();
    n
}

#[test]
fn a_source_sending_flat_out_into_a_fast_stage_gives_no_queue_finding() {
    // A pipeline that runs as fast as it can fills the queue before its slowest stage, however
    // fast that stage is: its senders wait microseconds for room. That is the pace of a healthy
    // batch pipeline, not a stage that cannot keep up.
    crate::support::retry_if_disturbed(|| {
        let (run, _) = record("q-flat-out", Flavor::MultiThread(2), || async {
            flat_out("fast", Duration::from_millis(900), Duration::ZERO).await;
        });
        let q = queue(&run, "fast-flat-out");
        assert!(q.samples >= 5, "{q:#?}");
        let h = q.send_wait_ns.to_hdr();
        eprintln!(
            "{} items; full {} of {} samples; senders waited {} times, mean {:.1} µs",
            q.enqueued,
            q.full_samples,
            q.samples,
            h.len(),
            h.mean() / 1e3
        );
        // The queue did fill and its senders waited: the case the diagnosis must tell apart.
        assert!(h.len() > 100, "{q:#?}");
        let findings = queue_findings(&run);
        assert!(findings.is_empty(), "{findings:#?}");
    });
}

#[test]
fn a_source_sending_flat_out_into_a_slow_stage_is_named() {
    // The same pipeline with a stage that takes a millisecond an item: named.
    crate::support::retry_if_disturbed(|| {
        let (run, _) = record("q-flat-out-slow", Flavor::MultiThread(2), || async {
            flat_out("slow", Duration::from_millis(900), Duration::from_millis(1)).await;
        });
        let findings = queue_findings(&run);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].kind, "queue-backpressure", "{findings:#?}");
        assert_eq!(findings[0].location.line, queue_line("flat-out"));
        assert_eq!(
            findings[0].queue.as_ref().unwrap().name,
            "slow-flat-out",
            "{findings:#?}"
        );
    });
}

#[test]
fn an_unbounded_queue_fed_faster_than_drained_grows() {
    crate::support::retry_if_disturbed(|| {
        let (run, _) = record("q-growth", Flavor::MultiThread(2), || async {
            let (tx, mut rx) = mpsc::unbounded_channel::<[u64; 4]>("growth-backlog"); // queue: backlog
            let producer = tokio::spawn(async move {
                // 2,000 items a second for 1.5 s.
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                for i in 0..150u64 {
                    tick.tick().await;
                    for j in 0..20 {
                        tx.send([i, j, 0, 0]).unwrap();
                    }
                }
            });
            // 1,000 items a second: half of what arrives.
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut got = 0u64;
            while got < 1500 {
                tick.tick().await;
                for _ in 0..10 {
                    if rx.recv().await.is_some() {
                        got += 1;
                    }
                }
            }
            producer.await.unwrap();
        });
        let findings = queue_findings(&run);
        assert_eq!(findings.len(), 1, "{findings:#?}");
        let f = &findings[0];
        assert_eq!(f.kind, "queue-growth");
        assert_eq!(f.location.line, queue_line("backlog"));
        let q = f.queue.as_ref().unwrap();
        assert_eq!(q.kind, QueueKind::Unbounded);
        // About 1,000 items a second of growth; generous bounds for a loaded machine.
        assert!(
            (400.0..2500.0).contains(&q.growth_per_s),
            "growth {} items/s",
            q.growth_per_s
        );
        eprintln!("measured growth: {} items/s", q.growth_per_s);
        assert!(q.projected_bytes_1h > 1_000_000, "{q:#?}");
        assert!(f.recommendation.contains("bounded channel"), "{f:#?}");
    });
}

#[test]
fn a_burst_that_drains_gives_no_queue_finding() {
    crate::support::retry_if_disturbed(|| {
        let (run, _) = record("q-burst", Flavor::MultiThread(2), || async {
            let (tx, mut rx) = mpsc::unbounded_channel::<u64>("burst-unbounded");
            let (btx, mut brx) = mpsc::channel::<u64>("burst-bounded", 256);
            // 5,000 items at once, then quiet.
            for i in 0..5000 {
                tx.send(i).unwrap();
            }
            let drain = tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                let mut n = 0;
                while n < 5000 {
                    tick.tick().await;
                    for _ in 0..500 {
                        rx.recv().await.unwrap();
                        n += 1;
                    }
                }
            });
            let bounded = tokio::spawn(async move {
                // A short burst into the bounded queue: full for about 100 ms, then drained.
                for i in 0..1000 {
                    btx.send(i).await.unwrap();
                }
            });
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let mut n = 0;
            while n < 1000 {
                tick.tick().await;
                for _ in 0..10 {
                    brx.recv().await.unwrap();
                    n += 1;
                }
            }
            drain.await.unwrap();
            bounded.await.unwrap();
            // Stay quiet long enough for the queues to be sampled empty.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        });
        assert_eq!(queue_findings(&run).len(), 0, "{:#?}", queue_findings(&run));
        let q = queue(&run, "burst-unbounded");
        assert_eq!(q.depth, 0);
        assert_eq!(q.dequeued, 5000);
    });
}

#[test]
fn semaphore_waits_are_recorded_and_never_diagnosed() {
    crate::support::retry_if_disturbed(|| {
        let (run, _) = record("q-semaphore", Flavor::MultiThread(2), || async {
            let limit = std::sync::Arc::new(asyncprof::sync::Semaphore::new("one-at-a-time", 1)); // queue: semaphore
            let mut tasks = Vec::new();
            for _ in 0..4 {
                let limit = limit.clone();
                tasks.push(tokio::spawn(async move {
                    for _ in 0..10 {
                        let _permit = limit.acquire().await.unwrap();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            assert_eq!(limit.available_permits(), 1);
            // The reported capacity follows permits added later.
            limit.add_permits(2);
        });
        let q = queue(&run, "one-at-a-time");
        assert_eq!(q.kind, QueueKind::Semaphore);
        assert_eq!(q.location.line, queue_line("semaphore"));
        assert_eq!(q.enqueued, 40, "permits acquired");
        assert_eq!(q.capacity, Some(3), "1 permit, 2 added at the end");
        assert_eq!(q.max_depth, 1, "{q:#?}");
        // Three of four tasks wait at any time: most acquires waited about 60 ms.
        let waits = q.send_wait_ns.count();
        assert!(waits >= 25, "{q:#?}");
        assert!(q.send_wait_ns.quantile(0.5) >= 20_000_000, "{q:#?}");
        assert!(q.full_samples * 2 >= q.samples, "{q:#?}");
        let findings = queue_findings(&run);
        assert!(findings.is_empty(), "{findings:#?}");
    });
}

#[test]
fn gauges_are_diagnosed_like_queues_and_a_panicking_one_is_dropped() {
    crate::support::retry_if_disturbed(|| {
        use std::collections::VecDeque;
        use std::sync::{Arc, Mutex};
        let (run, _) = record("q-gauge", Flavor::MultiThread(2), || async {
            let backlog = Arc::new(Mutex::new(VecDeque::new()));
            let len = {
                let backlog = backlog.clone();
                move || backlog.lock().unwrap().len()
            };
            let _growing = asyncprof::Gauge::register("retry-backlog", None, len); // queue: gauge-growth
            let pool = Arc::new(Mutex::new(0usize));
            let waiting = {
                let pool = pool.clone();
                move || *pool.lock().unwrap()
            };
            let _pool = asyncprof::Gauge::register("connection-pool-waiters", Some(8), waiting); // queue: gauge-full
            let _broken =
                asyncprof::Gauge::register("broken", None, || panic!("gauge closure bug"));
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            for i in 0..150u64 {
                tick.tick().await;
                backlog.lock().unwrap().extend(i * 20..i * 20 + 20);
                *pool.lock().unwrap() = 8;
            }
        });
        let mut findings = queue_findings(&run);
        findings.sort_by_key(|f| f.location.line);
        assert_eq!(findings.len(), 2, "{findings:#?}");
        assert_eq!(findings[0].kind, "queue-growth", "{findings:#?}");
        assert_eq!(findings[0].queue.as_ref().unwrap().name, "retry-backlog");
        assert_eq!(findings[1].kind, "queue-backpressure", "{findings:#?}");
        assert_eq!(
            findings[1].queue.as_ref().unwrap().name,
            "connection-pool-waiters"
        );
        assert_eq!(findings[0].location.line, queue_line("gauge-growth"));
        assert_eq!(findings[1].location.line, queue_line("gauge-full"));
        let broken = queue(&run, "broken");
        assert_eq!(broken.samples, 0, "{broken:#?}");
    });
}
