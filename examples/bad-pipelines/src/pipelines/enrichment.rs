//! `enrichment`: a stream of events, each enriched by 3 local APIs in parallel (profile,
//! catalog, fraud check), with partial failures, retries with backoff, and a dead-letter
//! queue for events that still fail. Catalog entries come from a shared cache that a
//! background thread re-prices every 150 ms.
//!
//! Defect: the cache is a `std::sync::Mutex` that the re-pricing holds for its whole run
//! (about 30 ms): every event on every worker that looks up the cache meanwhile blocks its
//! worker thread on the lock.
//! Fixed: the re-pricing works on a copy and holds the lock only to swap it in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use asyncprof::sync::mpsc;

use crate::{mix, Ctx, Outcome, RunFuture, Upstream, Variant};

const ITEMS: u64 = 500;
const IN_FLIGHT: usize = 64;
const REPRICE_EVERY: Duration = Duration::from_millis(150);

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Answer {
    value: u64,
}

/// Whether `api` fails for `event` at `attempt`: 8% of first attempts, 3% of second ones;
/// the fraud check fails every attempt for one event in 97 (those end in the DLQ).
fn fails(api: u64, event: u64, attempt: u64) -> bool {
    if api == 2 && event.is_multiple_of(97) {
        return true;
    }
    let roll = mix(event * 3 + api, attempt) % 100;
    match attempt {
        0 => roll < 8,
        1 => roll < 3,
        _ => false,
    }
}

fn serve(upstream: &Upstream) -> std::io::Result<SocketAddr> {
    async fn answer(
        api: u64,
        key: u64,
        event: u64,
        attempt: u64,
    ) -> Result<Json<Answer>, StatusCode> {
        tokio::time::sleep(Duration::from_millis(1)).await;
        if fails(api, event, attempt) {
            return Err(StatusCode::INTERNAL_SERVER_ERROR);
        }
        Ok(Json(Answer {
            value: mix(key, api) % 1000,
        }))
    }
    let router = Router::new()
        .route(
            "/profile/{user}/{event}/{attempt}",
            get(|Path((k, e, a)): Path<(u64, u64, u64)>| answer(0, k, e, a)),
        )
        .route(
            "/catalog/{item}/{event}/{attempt}",
            get(|Path((k, e, a)): Path<(u64, u64, u64)>| answer(1, k, e, a)),
        )
        .route(
            "/fraud/{event}/{attempt}",
            get(|Path((e, a)): Path<(u64, u64)>| answer(2, e, e, a)),
        );
    upstream.http(router)
}

#[derive(Debug, Clone, Copy, Default)]
struct CatalogEntry {
    category: u64,
    price: u64,
}

type Cache = Arc<Mutex<HashMap<u64, CatalogEntry>>>;

/// Re-price one entry: about 60 µs of work.
fn reprice(item: u64, entry: &mut CatalogEntry) {
    let mut h = item ^ entry.price;
    for i in 0..20_000u64 {
        h = mix(h, i);
    }
    entry.price = 100 + h % 10_000;
}

/// The cache's background re-pricing, on a thread of its own.
fn repricer(cache: Cache, variant: Variant, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("catalog-repricer".into())
        .spawn(move || {
            while !stop.load(Relaxed) {
                std::thread::sleep(REPRICE_EVERY);
                match variant {
                    Variant::Bad => {
                        // The defect: the lock is held while every entry is re-priced.
                        let mut entries = cache.lock().unwrap();
                        for (item, entry) in entries.iter_mut() {
                            reprice(*item, entry);
                        }
                    }
                    Variant::Fixed => {
                        let mut copy = cache.lock().unwrap().clone();
                        for (item, entry) in copy.iter_mut() {
                            reprice(*item, entry);
                        }
                        *cache.lock().unwrap() = copy;
                    }
                }
            }
        })
        .expect("a thread can be started")
}

struct Shared {
    client: reqwest::Client,
    base: String,
    cache: Cache,
    retries: AtomicU64,
}

/// One API call, retried twice with backoff.
async fn call(shared: &Shared, path: &str) -> Option<u64> {
    for attempt in 0..3u64 {
        if attempt > 0 {
            shared.retries.fetch_add(1, Relaxed);
            tokio::time::sleep(Duration::from_millis(2 << attempt)).await;
        }
        let url = format!("{}/{path}/{attempt}", shared.base);
        if let Ok(r) = shared.client.get(&url).send().await {
            if let Ok(r) = r.error_for_status() {
                if let Ok(a) = r.json::<Answer>().await {
                    return Some(a.value);
                }
            }
        }
    }
    None
}

#[derive(Debug)]
struct Event {
    id: u64,
    user: u64,
    item: u64,
    created: Instant,
}

#[derive(Debug)]
struct Enriched {
    created: Instant,
}

/// Enrich one event; `Err` carries it to the dead-letter queue.
async fn enrich(shared: &Shared, e: &Event) -> Result<Enriched, ()> {
    let cached = shared.cache.lock().unwrap().get(&e.item).copied(); // asyncprof-expect: lock-contention
    let (profile_path, fraud_path) = (
        format!("profile/{}/{}", e.user, e.id),
        format!("fraud/{}", e.id),
    );
    let (profile, catalog, fraud) = tokio::join!(
        call(shared, &profile_path),
        async {
            match cached {
                Some(c) => Some(c.category),
                None => {
                    let path = format!("catalog/{}/{}", e.item, e.id);
                    let v = call(shared, &path).await?;
                    let entry = CatalogEntry {
                        category: v,
                        price: 100 + v,
                    };
                    shared.cache.lock().unwrap().insert(e.item, entry);
                    Some(v)
                }
            }
        },
        call(shared, &fraud_path),
    );
    match (profile, catalog, fraud) {
        (Some(_), Some(_), Some(_)) => Ok(Enriched { created: e.created }),
        _ => Err(()),
    }
}

pub(crate) fn run(variant: Variant, ctx: Arc<Ctx>) -> RunFuture {
    Box::pin(async move {
        let (events, rate) = ctx
            .load
            .pick((1_000, 1_000u64), (3_000, 1_000), (6_000, 1_000));
        let addr = serve(&ctx.upstream)?;
        let shared = Arc::new(Shared {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(IN_FLIGHT * 3)
                .build()?,
            base: format!("http://{addr}"),
            // The catalog is loaded at start, as a warm cache.
            cache: Arc::new(Mutex::new(
                (0..ITEMS)
                    .map(|i| {
                        let entry = CatalogEntry {
                            category: mix(i, 1) % 1000,
                            price: 100 + mix(i, 4) % 10_000,
                        };
                        (i, entry)
                    })
                    .collect(),
            )),
            retries: AtomicU64::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let repricing = repricer(shared.cache.clone(), variant, stop.clone());

        let (event_tx, mut event_rx) = mpsc::channel::<Event>("events", 1024);
        let (out_tx, mut out_rx) = mpsc::channel::<Enriched>("enriched", 1024);
        let (dlq_tx, mut dlq_rx) = mpsc::unbounded_channel::<u64>("enrichment-dlq");
        let source = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let per_tick = rate / 100;
            let mut id = 0;
            while id < events {
                tick.tick().await;
                for _ in 0..per_tick.min(events - id) {
                    let e = Event {
                        id,
                        user: mix(id, 1) % 5_000,
                        item: mix(id, 2) % ITEMS,
                        created: Instant::now(),
                    };
                    if event_tx.send(e).await.is_err() {
                        return;
                    }
                    id += 1;
                }
            }
        });
        let workers = tokio::spawn({
            let shared = shared.clone();
            async move {
                let limit = Arc::new(asyncprof::sync::Semaphore::new(
                    "enrich-in-flight",
                    IN_FLIGHT,
                ));
                let mut tasks = tokio::task::JoinSet::new();
                while let Some(e) = event_rx.recv().await {
                    let permit = limit.clone().acquire_owned().await.expect("never closed");
                    let (shared, out, dlq) = (shared.clone(), out_tx.clone(), dlq_tx.clone());
                    tasks.spawn(async move {
                        match enrich(&shared, &e).await {
                            Ok(done) => {
                                let _ = out.send(done).await;
                            }
                            Err(()) => {
                                let _ = dlq.send(e.id);
                            }
                        }
                        drop(permit);
                    });
                    while tasks.try_join_next().is_some() {}
                }
                while tasks.join_next().await.is_some() {}
            }
        });
        let dead = tokio::spawn(async move {
            let mut ids = Vec::new();
            while let Some(id) = dlq_rx.recv().await {
                ids.push(id);
            }
            ids
        });
        let mut enriched = 0u64;
        while let Some(done) = out_rx.recv().await {
            enriched += 1;
            ctx.latency.record_since(done.created);
        }
        source.await?;
        workers.await?;
        let dead = dead.await?;
        stop.store(true, Relaxed);
        tokio::task::spawn_blocking(move || repricing.join())
            .await?
            .ok();
        let expected_dead = (0..events).filter(|id| id % 97 == 0).count() as u64;
        let mut out = Outcome {
            items: enriched,
            dead_letters: dead.len() as u64,
            ..Outcome::default()
        };
        out.checks.insert("events".into(), events);
        out.checks.insert("enriched".into(), enriched);
        out.checks.insert("dead_letters".into(), dead.len() as u64);
        out.checks
            .insert("expected_dead_letters".into(), expected_dead);
        out.checks.insert(
            "dead_letters_as_expected".into(),
            u64::from(dead.iter().all(|id| id % 97 == 0)),
        );
        out.checks
            .insert("retries".into(), shared.retries.load(Relaxed));
        Ok(out)
    })
}
