//! `price-monitor-store`: every 100 ms, the price of each of 100 products at a local retailer
//! API; each price is handled by a task of its own (span `fetch`), then written to a remote
//! price-history service (span `store`) whose every call takes about 30 ms, one round trip
//! whatever it carries. The spans go to asyncprof's subscriber layer as stages, and each
//! item's end-to-end latency to an `asyncprof::Latency`.
//!
//! Defect: the store stage awaits one call per price: each item waits 30 ms on the service,
//! nearly all of its time, although nothing computes or blocks (no stall anywhere).
//! Fixed: the store stage hands the price to a background writer through a bounded channel;
//! the writer sends what arrived as one batch per call.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::{mix, Ctx, Outcome, RunFuture, Upstream, Variant};

const PRODUCTS: u64 = 100;
const TICK: Duration = Duration::from_millis(100);
/// The price-history service's time per call.
const STORE_LATENCY: Duration = Duration::from_millis(30);

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Price {
    product: u64,
    cents: u64,
}

fn serve(upstream: &Upstream) -> std::io::Result<(SocketAddr, SocketAddr)> {
    async fn quote(Path(product): Path<u64>) -> Json<u64> {
        Json(100 + mix(product, 3) % 10_000)
    }
    async fn record(Json(prices): Json<Vec<Price>>) -> Json<usize> {
        tokio::time::sleep(STORE_LATENCY).await;
        Json(prices.len())
    }
    let api = upstream.http(Router::new().route("/quote/{product}", get(quote)))?;
    let store = upstream.http(Router::new().route("/prices", post(record)))?;
    Ok((api, store))
}

struct Shared {
    client: reqwest::Client,
    api: String,
    store: String,
    stored: AtomicU64,
    failed: AtomicU64,
    latency: asyncprof::Latency,
}

impl Shared {
    async fn fetch(&self, product: u64) -> Option<Price> {
        let resp = self
            .client
            .get(format!("{}/quote/{product}", self.api))
            .send()
            .await
            .ok()?;
        let cents = resp.json::<u64>().await.ok()?;
        Some(Price { product, cents })
    }

    /// One call to the price-history service; the prices it stored.
    async fn write(&self, prices: &[Price]) -> u64 {
        let sent = self
            .client
            .post(format!("{}/prices", self.store))
            .json(prices)
            .send()
            .await;
        match sent {
            Ok(resp) => resp.json::<u64>().await.unwrap_or(0),
            Err(_) => 0,
        }
    }
}

/// The fix's background writer: whatever arrived since its last call, in one call.
async fn writer(shared: Arc<Shared>, mut rx: tokio::sync::mpsc::Receiver<Price>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 1024).await > 0 {
        let stored = shared.write(&batch).await;
        shared.stored.fetch_add(stored, Relaxed);
        batch.clear();
    }
}

async fn item(
    variant: Variant,
    shared: Arc<Shared>,
    product: u64,
    due: Instant,
    tx: tokio::sync::mpsc::Sender<Price>,
) {
    let Some(price) = shared
        .fetch(product)
        .instrument(tracing::info_span!("fetch"))
        .await
    else {
        shared.failed.fetch_add(1, Relaxed);
        return;
    };
    match variant {
        Variant::Bad => {
            let store = async { shared.write(&[price]).await };
            let stored = store.instrument(tracing::info_span!("store")).await; // asyncprof-expect: slow-stage
            shared.stored.fetch_add(stored, Relaxed);
        }
        Variant::Fixed => {
            let handed = async { tx.send(price).await.is_ok() };
            if !handed.instrument(tracing::info_span!("store")).await {
                shared.failed.fetch_add(1, Relaxed);
            }
        }
    }
    shared.latency.record_since(due);
}

pub(crate) fn run(variant: Variant, ctx: Arc<Ctx>) -> RunFuture {
    Box::pin(async move {
        let ticks: u32 = ctx.load.pick(10, 20, 40);
        let (api, store) = serve(&ctx.upstream)?;
        let shared = Arc::new(Shared {
            client: reqwest::Client::new(),
            api: format!("http://{api}"),
            store: format!("http://{store}"),
            stored: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            latency: ctx.latency.clone(),
        });
        let (tx, rx) = tokio::sync::mpsc::channel(4096);
        let writer = tokio::spawn(writer(shared.clone(), rx));
        let mut items = tokio::task::JoinSet::new();
        let start = Instant::now();
        for tick in 0..ticks {
            let due = start + TICK * tick;
            tokio::time::sleep_until(due.into()).await;
            for product in 0..PRODUCTS {
                items.spawn(item(variant, shared.clone(), product, due, tx.clone()));
            }
            while items.try_join_next().is_some() {}
        }
        while items.join_next().await.is_some() {}
        drop(tx);
        writer.await?;
        let prices = u64::from(ticks) * PRODUCTS;
        let mut out = Outcome {
            items: shared.stored.load(Relaxed),
            errors: shared.failed.load(Relaxed),
            ..Outcome::default()
        };
        out.checks.insert("prices".into(), prices);
        out.checks
            .insert("stored".into(), shared.stored.load(Relaxed));
        Ok(out)
    })
}
