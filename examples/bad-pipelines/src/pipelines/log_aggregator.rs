//! `log-aggregator`: UDP log lines from 500 simulated services → parse → enrich from a local
//! metadata HTTP API (cached per service) → batch-write every 1,000 records or 1 s into SQLite
//! (with a full-text index of messages). Shutdown flushes the last batch.
//!
//! Defect: the batch insert runs on the runtime: each batch holds a worker thread for as
//! long as SQLite takes to index it, and everything else on that worker waits.
//! Fixed: the batch insert runs in `spawn_blocking`, the connection moving in and out.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asyncprof::sync::mpsc;

use super::logs::{self, Enriched, Record};
use crate::{Ctx, Outcome, RunFuture, Variant};

const BATCH: usize = 1000;
const BATCH_EVERY: Duration = Duration::from_secs(1);

/// Insert one batch in one transaction. Indexing the messages for full-text search takes
/// SQLite about 15 ms per 1,000 lines, most of it at the commit.
pub(crate) fn write_batch(
    conn: &mut rusqlite::Connection,
    batch: &[Enriched],
) -> rusqlite::Result<()> {
    const ROW: &str = "INSERT INTO logs (seq, service, team, tier, level, message) \
                       VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
    const TEXT: &str = "INSERT INTO logs_fts (rowid, message) VALUES (?1, ?2)";
    let tx = conn.transaction()?;
    {
        let mut row = tx.prepare_cached(ROW)?;
        let mut text = tx.prepare_cached(TEXT)?;
        for e in batch {
            let (r, m) = (&e.record, &e.meta);
            row.execute((r.seq, r.service, &m.team, m.tier, &r.level, &r.message))?;
            text.execute((r.seq, &r.message))?;
        }
    }
    tx.commit() // asyncprof-expect: cpu-bound-poll
}

/// Receive datagrams until `lines` arrived, or the generator is done and the socket is quiet.
async fn ingest(
    socket: tokio::net::UdpSocket,
    lines: u64,
    generator_done: Arc<AtomicBool>,
    out: mpsc::Sender<Record>,
    received: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 2048];
    while received.load(Relaxed) < lines {
        match tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => {
                received.fetch_add(1, Relaxed);
                let Ok(line) = std::str::from_utf8(&buf[..n]) else {
                    continue;
                };
                if let Some(r) = logs::parse(line, Instant::now()) {
                    if out.send(r).await.is_err() {
                        return;
                    }
                }
            }
            Ok(Err(_)) => {}
            Err(_) if generator_done.load(Relaxed) => return,
            Err(_) => {}
        }
    }
}

/// What both log aggregators start with: the metadata API (`meta_latency` a call), the
/// store, and the UDP source whose ingest task parses into `parsed`.
pub(crate) struct Started {
    /// The metadata API's base URL.
    pub(crate) base: String,
    pub(crate) conn: rusqlite::Connection,
    pub(crate) ingest: Ingest,
}

/// The running ingest task, and what it counts.
pub(crate) struct Ingest {
    lines: u64,
    received: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// Start the metadata API, open the store, start the generator (`lines` at `per_second`)
/// and the ingest task that parses what arrives into `parsed`.
pub(crate) async fn start(
    ctx: &Ctx,
    (lines, per_second): (u64, u64),
    meta_latency: Duration,
    parsed: mpsc::Sender<Record>,
) -> anyhow::Result<Started> {
    let base = format!("http://{}", logs::serve_meta(&ctx.upstream, meta_latency)?);
    let conn = logs::open_store_blocking(&ctx.dir).await?;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let generator = logs::generate(socket.local_addr()?, lines, per_second)?;
    let generator_done = Arc::new(AtomicBool::new(false));
    let flag = generator_done.clone();
    tokio::task::spawn_blocking(move || {
        let _ = generator.join();
        flag.store(true, Relaxed);
    });
    let received = Arc::new(AtomicU64::new(0));
    let task = tokio::spawn(ingest(
        socket,
        lines,
        generator_done,
        parsed,
        received.clone(),
    ));
    Ok(Started {
        base,
        conn,
        ingest: Ingest {
            lines,
            received,
            task,
        },
    })
}

impl Ingest {
    /// Wait for the ingest task, then the enrichment and writer tasks; what the run did.
    pub(crate) async fn finish(
        self,
        enrich: tokio::task::JoinHandle<anyhow::Result<()>>,
        writer: tokio::task::JoinHandle<anyhow::Result<rusqlite::Connection>>,
    ) -> anyhow::Result<Outcome> {
        self.task.await?;
        enrich.await??;
        let conn = writer.await??;
        outcome(conn, self.lines, self.received.load(Relaxed)).await
    }
}

async fn enrich(
    mut input: mpsc::Receiver<Record>,
    out: mpsc::Sender<Enriched>,
    base: String,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let mut cache = std::collections::HashMap::new();
    while let Some(record) = input.recv().await {
        let meta = match cache.get(&record.service) {
            Some(m) => Clone::clone(m),
            None => {
                let m = logs::fetch_meta(&client, &base, record.service).await?;
                cache.insert(record.service, m.clone());
                m
            }
        };
        if out.send(Enriched { record, meta }).await.is_err() {
            break;
        }
    }
    Ok(())
}

async fn write(
    variant: Variant,
    mut input: mpsc::Receiver<Enriched>,
    mut conn: rusqlite::Connection,
    latency: asyncprof::Latency,
) -> anyhow::Result<rusqlite::Connection> {
    let mut batch = Vec::with_capacity(BATCH);
    let mut deadline = tokio::time::Instant::now() + BATCH_EVERY;
    loop {
        let next = tokio::time::timeout_at(deadline, input.recv()).await;
        let (closed, timed_out) = (matches!(next, Ok(None)), next.is_err());
        if let Ok(Some(e)) = next {
            batch.push(e);
        }
        let due = batch.len() >= BATCH || timed_out || closed;
        if due && !batch.is_empty() {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            let done = match variant {
                Variant::Bad => {
                    write_batch(&mut conn, &full)?;
                    full
                }
                Variant::Fixed => {
                    let (c, full) = tokio::task::spawn_blocking(move || {
                        let r = write_batch(&mut conn, &full);
                        r.map(|()| (conn, full))
                    })
                    .await??;
                    conn = c;
                    full
                }
            };
            for e in &done {
                latency.record_since(e.record.received);
            }
        }
        if due {
            deadline = tokio::time::Instant::now() + BATCH_EVERY;
        }
        if closed {
            return Ok(conn);
        }
    }
}

pub(crate) fn run(variant: Variant, ctx: Arc<Ctx>) -> RunFuture {
    Box::pin(async move {
        // The quick load sends at half the rate: on two busy cores a UDP socket's buffer
        // (about 20 ms of datagrams at 10,000/s) can overflow even in the fixed twin.
        let load = ctx
            .load
            .pick((5_000, 5_000), (30_000, 10_000), (60_000, 10_000));
        let (parsed_tx, parsed_rx) = mpsc::channel("log-parsed", 4096);
        let (enriched_tx, enriched_rx) = mpsc::channel("log-enriched", 4096);
        let Started { base, conn, ingest } = start(&ctx, load, Duration::ZERO, parsed_tx).await?;
        let enrich = tokio::spawn(enrich(parsed_rx, enriched_tx, base));
        let writer = tokio::spawn(write(variant, enriched_rx, conn, ctx.latency.clone()));
        ingest.finish(enrich, writer).await
    })
}

/// What a log aggregator did: lines sent, received, and rows the store holds at the end.
async fn outcome(conn: rusqlite::Connection, lines: u64, received: u64) -> anyhow::Result<Outcome> {
    let rows = tokio::task::spawn_blocking(move || logs::stored(&conn)).await??;
    let mut out = Outcome {
        items: rows,
        errors: lines.saturating_sub(rows),
        ..Outcome::default()
    };
    out.checks.insert("lines_sent".into(), lines);
    out.checks.insert("lines_received".into(), received);
    out.checks.insert("rows_stored".into(), rows);
    Ok(out)
}
