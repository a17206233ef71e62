//! The layer tier against known truth, and against the hooks tier.

use std::time::Duration;

use crate::support::{location, marked_line, record, spin, Tier};

async fn yields(n: usize) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

fn poll_counts(tier: Tier, workers: usize) -> (u64, u64) {
    let line = marked_line(file!(), "counts");
    let run = record("counts", tier, workers, || async {
        let handles: Vec<_> = (0..20)
            // spawn: counts
            .map(|i| tokio::spawn(yields(10 + i)))
            .collect();
        for h in handles {
            h.await.unwrap();
        }
    });
    let loc = location(&run, file!(), line);
    assert_eq!(loc.tasks_completed, 20);
    (loc.polls, loc.poll_ns.count())
}

#[test]
fn hooks_and_layer_count_the_same_polls() {
    crate::support::retry_if_disturbed(|| {
        // 20 tasks yielding 10..29 times: 20 * 11 + (0 + 1 + ... + 19) = 410 polls.
        for workers in [0, 2] {
            let hooks = poll_counts(Tier::Hooks, workers);
            let layer = poll_counts(Tier::Layer, workers);
            assert_eq!(hooks, (410, 410), "hooks tier, {workers} workers");
            assert_eq!(layer, (410, 410), "layer tier, {workers} workers");
        }
    });
}

#[test]
fn layer_times_busy_polls_and_names_tasks() {
    crate::support::retry_if_disturbed(|| {
        let line = marked_line(file!(), "busy");
        let run = record("busy", Tier::Layer, 0, || async {
            tokio::task::Builder::new()
                .name("busy <worker>")
                // spawn: busy
                .spawn(async {
                    for i in 0..5 {
                        spin(Duration::from_millis(2));
                        if i < 4 {
                            tokio::task::yield_now().await;
                        }
                    }
                    // Stay alive so the final snapshot lists the task by name.
                    std::future::pending::<()>().await
                })
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        assert_eq!(run.header.tier, asyncprof_format::Tier::Layer);
        let loc = location(&run, file!(), line);
        assert_eq!(loc.polls, 5);
        assert_eq!(loc.poll_ns.count(), 5);
        let p50 = loc.poll_ns.quantile(0.5) as f64 / 1e6;
        assert!((1.5..2.5).contains(&p50), "p50 {p50} ms");
        let snap = run.snapshot.unwrap();
        let task = snap
            .tasks
            .iter()
            .find(|t| t.name.as_deref() == Some("busy <worker>"))
            .expect("the named task is listed");
        assert_eq!(task.polls, 5);
    });
}

#[test]
fn layer_measures_every_wake_to_poll_delay() {
    crate::support::retry_if_disturbed(|| {
        let line = marked_line(file!(), "waiter");
        let run = record("wake", Tier::Layer, 0, || async {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
            // spawn: waiter
            let waiter = tokio::spawn(async move {
                ready_tx.send(()).unwrap();
                rx.await.unwrap();
            });
            ready_rx.await.unwrap();
            tokio::spawn(async move {
                // Wake the waiter, then hold the only worker for 20 ms.
                tx.send(()).unwrap();
                spin(Duration::from_millis(20));
            })
            .await
            .unwrap();
            waiter.await.unwrap();
        });
        assert_eq!(
            run.header.config.schedule_source,
            asyncprof_format::ScheduleSource::EveryWake
        );
        let loc = location(&run, file!(), line);
        let max = loc.scheduled_ns.max() as f64 / 1e6;
        assert!((15.0..100.0).contains(&max), "wake-to-poll delay {max} ms");
        // Spawn, then the wake: two delays measured.
        assert!(loc.scheduled_ns.count() >= 2, "{:?}", loc.scheduled_ns);
    });
}

#[test]
fn user_spans_become_stages() {
    crate::support::retry_if_disturbed(|| {
        use tracing::Instrument;
        let run = record("stages", Tier::Layer, 0, || async {
            for _ in 0..10 {
                async { tokio::time::sleep(Duration::from_millis(3)).await }
                    .instrument(tracing::info_span!("fetch_page"))
                    .await;
            }
        });
        let snap = run.snapshot.unwrap();
        let stage = snap
            .stages
            .iter()
            .find(|s| s.name == "fetch_page")
            .expect("a fetch_page stage");
        assert_eq!(stage.count, 10);
        let p50 = stage.duration_ns.quantile(0.5) as f64 / 1e6;
        assert!((2.5..50.0).contains(&p50), "stage p50 {p50} ms");
    });
}
