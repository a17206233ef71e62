//! `scraper-retry`: fetch product pages from a local shop at a fixed rate and parse them; a
//! failed fetch is retried in the background by a task of its own, with backoff, so that the
//! crawl never waits for it. One product in five is discontinued: its page answers
//! 404 Not Found, for good.
//!
//! Defect: the retry task retries every error, forever: a discontinued product's task never
//! ends, and one more piles up for each of them (a task leak: its future, its URL and its
//! timer stay alive until the process stops).
//! Fixed: the retry task retries only server errors, at most three times, then records the
//! page as failed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::get;
use axum::Router;

use crate::{Ctx, Outcome, RunFuture, Upstream, Variant};

/// One product in this many is discontinued (404).
const DISCONTINUED_EVERY: u64 = 5;
/// The first retry's wait; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_millis(800);
/// The fixed twin's retries per page.
const MAX_RETRIES: u32 = 3;

fn serve(upstream: &Upstream) -> std::io::Result<SocketAddr> {
    async fn page(Path(id): Path<u64>) -> Result<Html<String>, StatusCode> {
        if id.is_multiple_of(DISCONTINUED_EVERY) {
            return Err(StatusCode::NOT_FOUND);
        }
        Ok(Html(format!(
            "<html><head><title>Product {id}</title></head><body><h1>Product {id}</h1></body></html>"
        )))
    }
    upstream.http(Router::new().route("/product/{id}", get(page)))
}

struct Shared {
    client: reqwest::Client,
    base: String,
    parsed: AtomicU64,
    gave_up: AtomicU64,
    retries: AtomicU64,
    latency: asyncprof::Latency,
}

/// Why a fetch failed.
enum Failure {
    /// The shop answered this status.
    Status(StatusCode),
    /// No answer (connection refused or reset).
    Transport,
}

async fn fetch(shared: &Shared, id: u64) -> Result<String, Failure> {
    let url = format!("{}/product/{id}", shared.base);
    let resp = shared
        .client
        .get(&url)
        .send()
        .await
        .map_err(|_| Failure::Transport)?;
    if !resp.status().is_success() {
        return Err(Failure::Status(resp.status()));
    }
    resp.text().await.map_err(|_| Failure::Transport)
}

fn parsed(shared: &Shared, id: u64, body: &str) {
    if body.contains(&format!("<title>Product {id}</title>")) {
        shared.parsed.fetch_add(1, Relaxed);
    }
}

/// The defect: every error is retried, with no end.
async fn retry_forever(shared: Arc<Shared>, id: u64) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        tokio::time::sleep(backoff).await;
        shared.retries.fetch_add(1, Relaxed);
        if let Ok(body) = fetch(&shared, id).await {
            parsed(&shared, id, &body);
            return;
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The fix: only server errors and lost connections are retried, at most three times.
async fn retry_bounded(shared: Arc<Shared>, id: u64, first: Failure) {
    let mut backoff = FIRST_BACKOFF;
    let mut failure = first;
    for _ in 0..MAX_RETRIES {
        if matches!(failure, Failure::Status(s) if s.is_client_error()) {
            break;
        }
        tokio::time::sleep(backoff).await;
        shared.retries.fetch_add(1, Relaxed);
        match fetch(&shared, id).await {
            Ok(body) => {
                parsed(&shared, id, &body);
                return;
            }
            Err(f) => failure = f,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    shared.gave_up.fetch_add(1, Relaxed);
}

/// Fetch `pages` pages at `per_second`, each on a task of its own; a failed one is handed to a
/// retry task spawned for it.
async fn crawl(variant: Variant, shared: Arc<Shared>, pages: u64, per_second: u64) {
    let start = Instant::now();
    let mut fetches = tokio::task::JoinSet::new();
    for id in 0..pages {
        let due = start + Duration::from_secs_f64(id as f64 / per_second as f64);
        tokio::time::sleep_until(due.into()).await;
        let shared = shared.clone();
        fetches.spawn(async move {
            match fetch(&shared, id).await {
                Ok(body) => parsed(&shared, id, &body),
                Err(failure) => match variant {
                    Variant::Bad => {
                        tokio::spawn(retry_forever(shared.clone(), id)); // asyncprof-expect: task-leak
                    }
                    Variant::Fixed => {
                        tokio::spawn(retry_bounded(shared.clone(), id, failure));
                    }
                },
            }
            shared.latency.record_since(due);
        });
        while fetches.try_join_next().is_some() {}
    }
    while fetches.join_next().await.is_some() {}
}

pub(crate) fn run(variant: Variant, ctx: Arc<Ctx>) -> RunFuture {
    Box::pin(async move {
        let (pages, rate): (u64, u64) = ctx.load.pick((300, 200), (700, 200), (1_400, 200));
        let addr = serve(&ctx.upstream)?;
        let shared = Arc::new(Shared {
            client: reqwest::Client::new(),
            base: format!("http://{addr}"),
            parsed: AtomicU64::new(0),
            gave_up: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            latency: ctx.latency.clone(),
        });
        crawl(variant, shared.clone(), pages, rate).await;
        // The fixed twin's last retries end within their backoff (0.7 s at most).
        if variant == Variant::Fixed {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut out = Outcome {
            items: shared.parsed.load(Relaxed),
            errors: shared.gave_up.load(Relaxed),
            ..Outcome::default()
        };
        out.checks.insert("pages".into(), pages);
        out.checks
            .insert("pages_parsed".into(), shared.parsed.load(Relaxed));
        out.checks
            .insert("retries".into(), shared.retries.load(Relaxed));
        Ok(out)
    })
}
