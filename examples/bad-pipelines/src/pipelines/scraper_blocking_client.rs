//! `scraper-blocking-client`: fetch product pages from a slow local shop (20 ms a page), at
//! most 100 in flight, and parse each page.
//!
//! Defect: a blocking HTTP client (`ureq`) called inside async tasks: each request holds its
//! worker thread for the whole round trip, so two workers fetch two pages at a time however
//! many tasks are in flight.
//! Fixed: an async client (`reqwest`), so 100 requests are in flight on two threads.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::shop;
use crate::{Ctx, Outcome, RunFuture, Variant};

const IN_FLIGHT: usize = 100;

struct Shared {
    base: String,
    agent: ureq::Agent,
    client: reqwest::Client,
    parsed: AtomicU64,
    failed: AtomicU64,
    latency: asyncprof::Latency,
}

fn check(shared: &Shared, id: u64, body: Option<String>) {
    match body.as_deref().and_then(shop::parse) {
        Some(p) if p.cents == shop::price_of(id) => shared.parsed.fetch_add(1, Relaxed),
        _ => shared.failed.fetch_add(1, Relaxed),
    };
}

/// The defect: `ureq` blocks the worker thread for the whole request.
async fn fetch_bad(shared: &Shared, id: u64) {
    let url = format!("{}/product/{id}", shared.base);
    let response = shared.agent.get(&url).call(); // asyncprof-expect: blocking-call
    let body = response
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok());
    check(shared, id, body);
}

/// The fix: `reqwest` awaits the response.
async fn fetch_fixed(shared: &Shared, id: u64) {
    let url = format!("{}/product/{id}", shared.base);
    let body = match shared.client.get(&url).send().await {
        Ok(r) => r.text().await.ok(),
        Err(_) => None,
    };
    check(shared, id, body);
}

pub(crate) fn run(variant: Variant, ctx: Arc<Ctx>) -> RunFuture {
    Box::pin(async move {
        let pages = ctx.load.pick(60, 300, 600);
        let addr = shop::serve(&ctx.upstream, Duration::from_millis(20))?;
        let shared = Arc::new(Shared {
            base: format!("http://{addr}"),
            agent: ureq::Agent::new_with_defaults(),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(IN_FLIGHT)
                .build()?,
            parsed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            latency: ctx.latency.clone(),
        });
        let in_flight = Arc::new(asyncprof::sync::Semaphore::new(
            "blocking-client-in-flight",
            IN_FLIGHT,
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for id in 0..pages {
            let permit = in_flight.clone().acquire_owned().await.unwrap();
            let shared = shared.clone();
            let queued = Instant::now();
            tasks.spawn(async move {
                match variant {
                    Variant::Bad => fetch_bad(&shared, id).await,
                    Variant::Fixed => fetch_fixed(&shared, id).await,
                }
                shared.latency.record_since(queued);
                drop(permit);
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        let mut out = Outcome {
            items: shared.parsed.load(Relaxed),
            errors: shared.failed.load(Relaxed),
            ..Outcome::default()
        };
        out.checks.insert("pages".into(), pages);
        out.checks
            .insert("pages_parsed".into(), shared.parsed.load(Relaxed));
        Ok(out)
    })
}
