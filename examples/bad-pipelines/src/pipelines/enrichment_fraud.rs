//! `enrichment-fraud`: a stream of payment events, each checked by a local fraud-scoring API
//! (about 10 ms an answer) before it is accepted; 16 consumer tasks take events from the
//! stream. The runtime's blocking pool has 4 threads (`max_blocking_threads(4)`), as a
//! service sized for a few blocking file operations would.
//!
//! Defect: the fraud check is a blocking HTTP client (ureq) called through `spawn_blocking`,
//! at a rate the 4 blocking threads cannot absorb (about 600 events a second against 400
//! checks a second): the jobs queue for a thread, and each consumer waits with its job.
//! Fixed: the same check with an async client (reqwest), awaited on the runtime: no blocking
//! pool, concurrency bounded by the consumers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::routing::get;
use axum::Router;

use crate::{mix, Ctx, Outcome, RunFuture, Upstream, Variant};

/// Consumer tasks taking events from the stream.
const CONSUMERS: usize = 16;
/// The fraud API's answer time.
const CHECK_LATENCY: Duration = Duration::from_millis(10);
/// Blocking threads of the runtime (its builder's `max_blocking_threads`).
pub(crate) const BLOCKING_THREADS: usize = 4;

fn serve(upstream: &Upstream) -> std::io::Result<SocketAddr> {
    async fn score(Path(event): Path<u64>) -> String {
        tokio::time::sleep(CHECK_LATENCY).await;
        (mix(event, 11) % 100).to_string()
    }
    upstream.http(Router::new().route("/score/{event}", get(score)))
}

struct Shared {
    base: String,
    accepted: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    latency: asyncprof::Latency,
}

impl Shared {
    fn record(&self, score: Option<u64>, due: Instant) {
        match score {
            Some(s) if s < 95 => self.accepted.fetch_add(1, Relaxed),
            Some(_) => self.rejected.fetch_add(1, Relaxed),
            None => self.failed.fetch_add(1, Relaxed),
        };
        self.latency.record_since(due);
    }
}

/// The blocking check: one HTTP request with a blocking client.
fn check_blocking(agent: &ureq::Agent, base: &str, event: u64) -> Option<u64> {
    let mut resp = agent.get(format!("{base}/score/{event}")).call().ok()?;
    resp.body_mut().read_to_string().ok()?.trim().parse().ok()
}

/// The async check.
async fn check_async(client: &reqwest::Client, base: &str, event: u64) -> Option<u64> {
    let resp = client
        .get(format!("{base}/score/{event}"))
        .send()
        .await
        .ok()?;
    resp.text().await.ok()?.trim().parse().ok()
}

async fn consume(
    variant: Variant,
    shared: Arc<Shared>,
    events: Arc<tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<(u64, Instant)>>>,
) {
    let agent = ureq::Agent::new_with_defaults();
    let client = reqwest::Client::new();
    loop {
        let Some((event, due)) = events.lock().await.recv().await else {
            return;
        };
        let score = match variant {
            Variant::Bad => {
                let (agent, base) = (agent.clone(), shared.base.clone());
                tokio::task::spawn_blocking(move || check_blocking(&agent, &base, event)) // asyncprof-expect: blocking-pool-saturated
                    .await
                    .ok()
                    .flatten()
            }
            Variant::Fixed => check_async(&client, &shared.base, event).await,
        };
        shared.record(score, due);
    }
}

pub(crate) fn run(variant: Variant, ctx: Arc<Ctx>) -> RunFuture {
    Box::pin(async move {
        let (events, per_second): (u64, u64) =
            ctx.load.pick((600, 600), (1_000, 600), (2_000, 600));
        let addr = serve(&ctx.upstream)?;
        let shared = Arc::new(Shared {
            base: format!("http://{addr}"),
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            latency: ctx.latency.clone(),
        });
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let consumers: Vec<_> = (0..CONSUMERS)
            .map(|_| tokio::spawn(consume(variant, shared.clone(), rx.clone())))
            .collect();
        // Events arrive at a steady rate, in 10 ms slices.
        let start = Instant::now();
        let per_slice = per_second / 100;
        let mut sent = 0;
        let mut slice = 0u32;
        while sent < events {
            let due = start + Duration::from_millis(10 * u64::from(slice));
            tokio::time::sleep_until(due.into()).await;
            for _ in 0..per_slice.min(events - sent) {
                let _ = tx.send((sent, due));
                sent += 1;
            }
            slice += 1;
        }
        drop(tx);
        for c in consumers {
            c.await?;
        }
        let mut out = Outcome {
            items: shared.accepted.load(Relaxed) + shared.rejected.load(Relaxed),
            errors: shared.failed.load(Relaxed),
            ..Outcome::default()
        };
        out.checks.insert("events".into(), events);
        out.checks
            .insert("accepted".into(), shared.accepted.load(Relaxed));
        out.checks
            .insert("rejected".into(), shared.rejected.load(Relaxed));
        Ok(out)
    })
}
