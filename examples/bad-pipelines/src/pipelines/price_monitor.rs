//! `price-monitor`: every 100 ms, the price of each of N products at 3 local retailer APIs
//! (a semaphore per retailer, retries with backoff on failures), an alert when a price falls
//! 10% below the product's list price, and every result stored in SQLite.
//!
//! Defect: the results go to the store stage through an unbounded channel, and the store
//! (one transaction per result) is slower than the producers: the queue grows without bound,
//! holding more memory and older results every second, and what is still queued at shutdown
//! is lost.
//! Fixed: a bounded channel sized to the load, drained in batches (one transaction per
//! batch) so the store keeps up; a full queue would slow the producers instead of growing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use asyncprof::sync::mpsc;

use crate::{mix, Ctx, Outcome, RunFuture, Upstream, Variant};

const RETAILERS: u64 = 3;
const TICK: Duration = Duration::from_millis(100);
/// Time the store gets after the last tick to write what is queued.
const GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Quote {
    cents: u64,
}

#[derive(Debug)]
struct PriceResult {
    product: u64,
    retailer: u64,
    tick: u64,
    cents: u64,
    fetched: Instant,
}

/// A retailer's price API: `/price/{product}/{tick}/{attempt}`; 3% of first attempts fail.
fn serve_retailer(upstream: &Upstream, retailer: u64) -> std::io::Result<SocketAddr> {
    let router = Router::new()
        .route("/price/{product}/{tick}/{attempt}", get(price))
        .with_state(retailer);
    upstream.http(router)
}

async fn price(
    State(retailer): State<u64>,
    Path((product, tick, attempt)): Path<(u64, u64, u64)>,
) -> Result<Json<Quote>, StatusCode> {
    if attempt == 0 && mix(product * 7 + retailer, tick) % 100 < 3 {
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    Ok(Json(Quote {
        cents: list_price(product) * (85 + mix(product + retailer, tick) % 20) / 100,
    }))
}

fn list_price(product: u64) -> u64 {
    1_000 + mix(product, 11) % 50_000
}

struct Retailer {
    base: String,
    limit: asyncprof::sync::Semaphore,
}

/// One price, retried up to 3 times with backoff.
async fn fetch(
    client: &reqwest::Client,
    retailer: &Retailer,
    product: u64,
    tick: u64,
    retries: &AtomicU64,
) -> Option<u64> {
    let _permit = retailer.limit.acquire().await.ok()?;
    for attempt in 0..3u64 {
        if attempt > 0 {
            retries.fetch_add(1, Relaxed);
            tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
        }
        let url = format!("{}/price/{product}/{tick}/{attempt}", retailer.base);
        if let Ok(r) = client.get(&url).send().await {
            if let Ok(q) = r.error_for_status().map(|r| r.json::<Quote>()) {
                if let Ok(q) = q.await {
                    return Some(q.cents);
                }
            }
        }
    }
    None
}

/// Where results go: the defect and the fix differ only here.
enum Results {
    Unbounded(mpsc::UnboundedSender<PriceResult>),
    Bounded(mpsc::Sender<PriceResult>),
}

/// Where the store reads them.
enum ResultsRx {
    Unbounded(mpsc::UnboundedReceiver<PriceResult>),
    Bounded(mpsc::Receiver<PriceResult>),
}

impl ResultsRx {
    async fn recv_many(&mut self, buf: &mut Vec<PriceResult>, n: usize) -> usize {
        match self {
            ResultsRx::Unbounded(rx) => rx.recv_many(buf, n).await,
            ResultsRx::Bounded(rx) => rx.recv_many(buf, n).await,
        }
    }
}

impl Results {
    async fn send(&self, r: PriceResult) {
        let _ = match self {
            Results::Unbounded(tx) => tx.send(r).map_err(drop),
            Results::Bounded(tx) => tx.send(r).await.map_err(drop),
        };
    }
}

#[allow(clippy::too_many_arguments)]
async fn produce(
    products: u64,
    ticks: u64,
    retailers: Arc<Vec<Retailer>>,
    results: Arc<Results>,
    alerts: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    retries: Arc<AtomicU64>,
) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(32)
        .build()
        .expect("a client without TLS builds");
    let mut every = tokio::time::interval(TICK);
    for tick in 0..ticks {
        every.tick().await;
        let mut round = tokio::task::JoinSet::new();
        for product in 0..products {
            for r in 0..RETAILERS {
                let (client, retailers, results) =
                    (client.clone(), retailers.clone(), results.clone());
                let (alerts, failures, retries) =
                    (alerts.clone(), failures.clone(), retries.clone());
                round.spawn(async move {
                    let retailer = &retailers[r as usize];
                    match fetch(&client, retailer, product, tick, &retries).await {
                        Some(cents) => {
                            if cents * 10 < list_price(product) * 9 {
                                alerts.fetch_add(1, Relaxed);
                            }
                            let fetched = Instant::now();
                            let result = PriceResult {
                                product,
                                retailer: r,
                                tick,
                                cents,
                                fetched,
                            };
                            results.send(result).await;
                        }
                        None => {
                            failures.fetch_add(1, Relaxed);
                        }
                    }
                });
            }
        }
        // Ticks overlap no more than one round: wait for this one before the next.
        while round.join_next().await.is_some() {}
    }
}

fn open_store(dir: &std::path::Path) -> anyhow::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(dir.join("prices.sqlite"))?;
    conn.execute_batch(
        "PRAGMA journal_mode = DELETE;
         PRAGMA synchronous = FULL;
         CREATE TABLE IF NOT EXISTS prices (
             product INTEGER, retailer INTEGER, tick INTEGER, cents INTEGER,
             PRIMARY KEY (product, retailer, tick));",
    )?;
    Ok(conn)
}

fn insert(conn: &mut rusqlite::Connection, rows: &[PriceResult]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut stmt =
            tx.prepare_cached("INSERT OR REPLACE INTO prices VALUES (?1, ?2, ?3, ?4)")?;
        for r in rows {
            stmt.execute((r.product, r.retailer, r.tick, r.cents))?;
        }
    }
    tx.commit()
}

/// Write results until the producers are done and `GRACE` has passed; what is left is lost.
async fn store(
    mut rx: ResultsRx,
    batch: usize,
    mut conn: rusqlite::Connection,
    producers_done: tokio::sync::watch::Receiver<bool>,
    latency: asyncprof::Latency,
) -> anyhow::Result<(u64, rusqlite::Connection)> {
    let mut stored = 0;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if deadline.is_none() && *producers_done.borrow() {
            deadline = Some(tokio::time::Instant::now() + GRACE);
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return Ok((stored, conn));
        }
        let mut rows = Vec::with_capacity(batch);
        let got = tokio::time::timeout(TICK, rx.recv_many(&mut rows, batch)).await;
        match got {
            Ok(0) => return Ok((stored, conn)),
            Ok(_) => {
                let (c, rows) = tokio::task::spawn_blocking(move || {
                    insert(&mut conn, &rows).map(|()| (conn, rows))
                })
                .await??;
                conn = c;
                stored += rows.len() as u64;
                for r in &rows {
                    latency.record_since(r.fetched);
                }
            }
            Err(_) => {}
        }
    }
}

pub(crate) fn run(variant: Variant, ctx: Arc<Ctx>) -> RunFuture {
    Box::pin(async move {
        let (products, ticks) = ctx.load.pick((100, 10), (100, 30), (100, 60));
        let mut retailers = Vec::new();
        for r in 0..RETAILERS {
            let addr = serve_retailer(&ctx.upstream, r)?;
            retailers.push(Retailer {
                base: format!("http://{addr}"),
                limit: asyncprof::sync::Semaphore::new(&format!("retailer-{r}"), 16),
            });
        }
        let retailers = Arc::new(retailers);
        // Opening the store creates its table and syncs it to disk (synchronous = FULL): file
        // I/O that may wait tens of ms on a busy disk, so it runs off the runtime in both
        // variants, as the batch inserts do.
        let dir = ctx.dir.clone();
        let conn = tokio::task::spawn_blocking(move || open_store(&dir)).await??;
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let (alerts, failures, retries) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        // The defect is the unbounded channel and the store's one-result transactions; the
        // fix, a bounded channel sized to two rounds of results, drained in batches.
        let (results, rx, batch) = match variant {
            Variant::Bad => {
                let (tx, rx) = mpsc::unbounded_channel("price-results"); // asyncprof-expect: queue-growth
                (Results::Unbounded(tx), ResultsRx::Unbounded(rx), 1)
            }
            Variant::Fixed => {
                let capacity = (products * RETAILERS * 2) as usize;
                let (tx, rx) = mpsc::channel("price-results", capacity);
                (Results::Bounded(tx), ResultsRx::Bounded(rx), 500)
            }
        };
        let storing = tokio::spawn(store(rx, batch, conn, done_rx, ctx.latency.clone()));
        let results = Arc::new(results);
        produce(
            products,
            ticks,
            retailers,
            results.clone(),
            alerts.clone(),
            failures.clone(),
            retries.clone(),
        )
        .await;
        drop(results);
        let _ = done_tx.send(true);
        let (stored, conn) = storing.await??;
        let rows = tokio::task::spawn_blocking(move || {
            conn.query_row("SELECT COUNT(*) FROM prices", [], |r| r.get::<_, i64>(0))
        })
        .await?? as u64;
        let expected = products * RETAILERS * ticks;
        let mut out = Outcome {
            items: stored,
            errors: failures.load(Relaxed) + expected.saturating_sub(stored),
            ..Outcome::default()
        };
        out.checks.insert("prices_expected".into(), expected);
        out.checks.insert("prices_stored".into(), rows);
        out.checks.insert("alerts".into(), alerts.load(Relaxed));
        out.checks.insert("retries".into(), retries.load(Relaxed));
        out.checks.insert("failures".into(), failures.load(Relaxed));
        Ok(out)
    })
}
