//! `market-data`: ticks from 10 local WebSocket exchanges → normalize → rolling volatility
//! per symbol over a window → publish downstream. Connections drop now and then: the client
//! reconnects with exponential backoff and resumes where it stopped. Malformed ticks go to a
//! dead-letter queue.
//!
//! Defect: the volatility (a bootstrap estimate over the window, 20 to 40 ms of CPU) is
//! computed inside the async task: each computation holds a worker thread, and the ticks of
//! every exchange handled there wait.
//! Fixed: the computation runs in `spawn_blocking`, and the ticks keep flowing meanwhile.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

use asyncprof::sync::mpsc;

use crate::{mix, Ctx, Outcome, RunFuture, Variant};

const EXCHANGES: u64 = 10;
const SYMBOLS: u64 = 20;
const WINDOW: usize = 1000;
const EVERY: u64 = 200;
const RESAMPLES: usize = 4000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tick {
    seq: u64,
    symbol: String,
    price: f64,
}

/// Whether exchange `ex` sends tick `seq` malformed (one in 100).
fn malformed(ex: u64, seq: u64) -> bool {
    mix(ex, seq).is_multiple_of(100)
}

fn tick_text(ex: u64, seq: u64) -> String {
    if malformed(ex, seq) {
        return format!("{{\"seq\":{seq},\"symbol\":\"SYM\",\"price\":\"n/a\"}}");
    }
    let symbol = (ex + seq) % SYMBOLS;
    let drift = (mix(ex * 1000 + symbol, seq) % 2001) as f64 / 1000.0 - 1.0;
    let t = Tick {
        seq,
        symbol: format!("SYM{symbol}"),
        price: 100.0 + symbol as f64 + drift,
    };
    serde_json::to_string(&t).expect("a tick serializes")
}

// The handshake callback's error type is tungstenite's own HTTP response.
#[allow(clippy::result_large_err)]
/// An exchange: sends ticks `from..total` of its feed, 5 every 10 ms, and drops the
/// connection once, after a seeded number of ticks.
async fn exchange(listener: tokio::net::TcpListener, ex: u64, total: u64) {
    let mut dropped = false;
    while let Ok((stream, _)) = listener.accept().await {
        let mut from = 0u64;
        let ws = tokio_tungstenite::accept_hdr_async(
            stream,
            |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                from = req
                    .uri()
                    .query()
                    .and_then(|q| q.strip_prefix("from="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                Ok(resp)
            },
        )
        .await;
        let Ok(mut ws) = ws else { continue };
        let drop_at = if dropped {
            u64::MAX
        } else {
            total / 3 + mix(ex, 9) % (total / 3)
        };
        let mut every = tokio::time::interval(Duration::from_millis(10));
        let mut seq = from;
        while seq < total {
            every.tick().await;
            for _ in 0..5 {
                if seq >= total {
                    break;
                }
                if seq == drop_at && !dropped {
                    dropped = true;
                    break;
                }
                if ws.send(Message::text(tick_text(ex, seq))).await.is_err() {
                    break;
                }
                seq += 1;
            }
            if seq == drop_at && dropped {
                break;
            }
        }
        if seq >= total {
            let _ = ws.close(None).await;
        }
    }
}

/// The bootstrap standard deviation of log returns over `window`: `RESAMPLES` resamples,
/// drawn with an inline xorshift generator.
fn volatility(window: &[f64], seed: u64) -> f64 {
    let returns: Vec<f64> = window.windows(2).map(|w| (w[1] / w[0]).ln()).collect();
    let n = returns.len() as u64;
    let mut x = seed | 1;
    let mut total = 0.0;
    for _ in 0..RESAMPLES {
        let (mut sum, mut sq) = (0.0, 0.0);
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 7; // asyncprof-expect: cpu-bound-poll
            x ^= x << 17;
            let r = returns[(x % n) as usize];
            sum += r;
            sq += r * r;
        }
        let mean = sum / n as f64;
        total += (sq / n as f64 - mean * mean).max(0.0).sqrt();
    }
    total / RESAMPLES as f64
}

/// One exchange's feed, reconnecting with exponential backoff, resuming at the next tick.
async fn feed(
    addr: SocketAddr,
    total: u64,
    ticks: mpsc::Sender<(Tick, Instant)>,
    dlq: mpsc::UnboundedSender<String>,
    reconnects: Arc<AtomicU64>,
) {
    let mut next = 0u64;
    let mut backoff = Duration::from_millis(10);
    while next < total {
        let url = format!("ws://{addr}/feed?from={next}");
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
            continue;
        };
        backoff = Duration::from_millis(10);
        while let Some(Ok(msg)) = ws.next().await {
            let Message::Text(text) = msg else { continue };
            next += 1;
            match serde_json::from_str::<Tick>(&text) {
                Ok(t) if t.price.is_finite() && t.price > 0.0 => {
                    if ticks.send((t, Instant::now())).await.is_err() {
                        return;
                    }
                }
                _ => {
                    let _ = dlq.send(text.to_string());
                }
            }
        }
        if next < total {
            reconnects.fetch_add(1, Relaxed);
            tokio::time::sleep(backoff).await;
        }
    }
}

pub(crate) fn run(variant: Variant, ctx: Arc<Ctx>) -> RunFuture {
    Box::pin(async move {
        let per_exchange = ctx.load.pick(500, 1_500, 3_000);
        let mut addrs = Vec::new();
        for ex in 0..EXCHANGES {
            let listener = ctx.upstream.listen()?;
            addrs.push(listener.local_addr()?);
            ctx.upstream.spawn(exchange(listener, ex, per_exchange));
        }
        let (tick_tx, mut tick_rx) = mpsc::channel::<(Tick, Instant)>("ticks", 4096);
        let (dlq_tx, mut dlq_rx) = mpsc::unbounded_channel::<String>("market-dlq");
        let (pub_tx, mut pub_rx) = mpsc::channel::<(String, f64)>("volatility", 1024);
        let reconnects = Arc::new(AtomicU64::new(0));
        let mut feeds = Vec::new();
        for &addr in &addrs {
            feeds.push(tokio::spawn(feed(
                addr,
                per_exchange,
                tick_tx.clone(),
                dlq_tx.clone(),
                reconnects.clone(),
            )));
        }
        drop((tick_tx, dlq_tx));
        let latency = ctx.latency.clone();
        let compute = tokio::spawn(async move {
            let mut windows: HashMap<String, (Vec<f64>, u64)> = HashMap::new();
            let mut computing = tokio::task::JoinSet::new();
            let mut normalized = 0u64;
            while let Some((tick, received)) = tick_rx.recv().await {
                normalized += 1;
                let (window, seen) = windows.entry(tick.symbol.clone()).or_default();
                window.push(tick.price);
                if window.len() > WINDOW {
                    window.remove(0);
                }
                *seen += 1;
                if *seen % EVERY == 0 {
                    let (seed, symbol) = (*seen, tick.symbol.clone());
                    match variant {
                        Variant::Bad => {
                            let vol = volatility(window, seed);
                            if pub_tx.send((symbol, vol)).await.is_err() {
                                break;
                            }
                        }
                        Variant::Fixed => {
                            // Off the runtime, and without holding up the ticks behind it.
                            let (w, out) = (window.clone(), pub_tx.clone());
                            computing.spawn(async move {
                                let vol = tokio::task::spawn_blocking(move || volatility(&w, seed))
                                    .await
                                    .unwrap_or(f64::NAN);
                                let _ = out.send((symbol, vol)).await;
                            });
                        }
                    }
                }
                latency.record_since(received);
            }
            while computing.join_next().await.is_some() {}
            anyhow::Ok(normalized)
        });
        let publish = tokio::spawn(async move {
            let mut n = 0u64;
            while let Some((_symbol, vol)) = pub_rx.recv().await {
                if vol.is_finite() {
                    n += 1;
                }
            }
            n
        });
        let dead = tokio::spawn(async move {
            let mut n = 0u64;
            while dlq_rx.recv().await.is_some() {
                n += 1;
            }
            n
        });
        for f in feeds {
            f.await?;
        }
        let normalized = compute.await??;
        let published = publish.await?;
        let dead = dead.await?;
        let malformed_sent = (0..EXCHANGES)
            .map(|ex| (0..per_exchange).filter(|&s| malformed(ex, s)).count() as u64)
            .sum::<u64>();
        let mut out = Outcome {
            items: normalized,
            dead_letters: dead,
            ..Outcome::default()
        };
        out.checks
            .insert("ticks_sent".into(), per_exchange * EXCHANGES);
        out.checks.insert("ticks_normalized".into(), normalized);
        out.checks.insert("malformed_sent".into(), malformed_sent);
        out.checks.insert("dead_letters".into(), dead);
        out.checks
            .insert("volatilities_published".into(), published);
        out.checks
            .insert("reconnects".into(), reconnects.load(Relaxed));
        Ok(out)
    })
}
