//! `scraper`: fetch product pages from a local shop over HTTP, at most 100 in flight and a
//! fixed number of requests per second, and parse each page.
//!
//! The rate limit works in 40 ms windows: the dispatcher starts a window's share of requests
//! (a semaphore keeps at most 100 in flight), then waits for the next window.
//!
//! Defect: the dispatcher waits with `std::thread::sleep`, which holds its worker thread for
//! most of every window: the responses that worker should be reading wait too, so item
//! latency climbs.
//! Fixed: the same windows, waited out with tokio's timer.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::shop;
use crate::{Ctx, Outcome, RunFuture, Variant};

const IN_FLIGHT: usize = 100;

/// The rate limit works in windows: so many requests per 40 ms window.
const WINDOW: Duration = Duration::from_millis(40);

struct Shared {
    client: reqwest::Client,
    base: String,
    parsed: AtomicU64,
    wrong: AtomicU64,
    failed: AtomicU64,
    latency: asyncprof::Latency,
}

async fn fetch(shared: &Shared, id: u64, due: Instant) {
    let url = format!("{}/product/{id}", shared.base);
    let body = match shared.client.get(&url).send().await {
        Ok(r) => r.text().await,
        Err(e) => Err(e),
    };
    match body.ok().as_deref().and_then(shop::parse) {
        Some(p) if p.cents == shop::price_of(id) && p.title == format!("Product {id}") => {
            shared.parsed.fetch_add(1, Relaxed);
        }
        Some(_) => {
            shared.wrong.fetch_add(1, Relaxed);
        }
        None => {
            shared.failed.fetch_add(1, Relaxed);
        }
    }
    // From the moment the request was due to the parsed page.
    shared.latency.record_since(due);
}

/// Dispatch `pages` requests, `per_window` per window, at most 100 in flight; `wait` waits
/// out the rest of each window.
async fn dispatch<W, F>(shared: Arc<Shared>, pages: u64, per_window: u64, mut wait: W)
where
    W: FnMut(Instant) -> F,
    F: std::future::Future<Output = ()>,
{
    let in_flight = Arc::new(asyncprof::sync::Semaphore::new(
        "scraper-in-flight",
        IN_FLIGHT,
    ));
    let mut tasks = tokio::task::JoinSet::new();
    let mut id = 0;
    while id < pages {
        let window = Instant::now();
        for id in id..(id + per_window).min(pages) {
            let permit = in_flight.clone().acquire_owned().await.unwrap();
            let shared = shared.clone();
            tasks.spawn(async move {
                fetch(&shared, id, window).await;
                drop(permit);
            });
        }
        id += per_window;
        wait(window + WINDOW).await;
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

/// The defect: the dispatcher waits out each window by putting its worker thread to sleep.
async fn bad(shared: Arc<Shared>, pages: u64, per_window: u64) {
    dispatch(shared, pages, per_window, |until| {
        std::thread::sleep(until.saturating_duration_since(Instant::now())); // asyncprof-expect: blocking-call
        std::future::ready(())
    })
    .await
}

/// The fix: the same windows, waited out with tokio's timer.
async fn fixed(shared: Arc<Shared>, pages: u64, per_window: u64) {
    dispatch(shared, pages, per_window, |until| {
        tokio::time::sleep_until(until.into())
    })
    .await
}

pub(crate) fn run(variant: Variant, ctx: Arc<Ctx>) -> RunFuture {
    Box::pin(async move {
        let (pages, rate): (u64, u64) =
            ctx.load
                .pick((2_000, 2_500), (10_000, 2_500), (20_000, 2_500));
        let addr = shop::serve(&ctx.upstream, Duration::ZERO)?;
        let shared = Arc::new(Shared {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(IN_FLIGHT)
                .build()?,
            base: format!("http://{addr}"),
            parsed: AtomicU64::new(0),
            wrong: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            latency: ctx.latency.clone(),
        });
        let per_window = rate * WINDOW.as_millis() as u64 / 1000;
        match variant {
            Variant::Bad => bad(shared.clone(), pages, per_window).await,
            Variant::Fixed => fixed(shared.clone(), pages, per_window).await,
        }
        let mut out = Outcome {
            items: shared.parsed.load(Relaxed),
            errors: shared.failed.load(Relaxed) + shared.wrong.load(Relaxed),
            ..Outcome::default()
        };
        out.checks.insert("pages".into(), pages);
        out.checks
            .insert("pages_parsed".into(), shared.parsed.load(Relaxed));
        out.checks
            .insert("wrong_parses".into(), shared.wrong.load(Relaxed));
        Ok(out)
    })
}
