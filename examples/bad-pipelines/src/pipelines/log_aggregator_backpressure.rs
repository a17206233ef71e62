//! `log-aggregator-backpressure`: UDP log lines → parse → enrich each line from a local
//! lookup API (2 ms a call, one call per line) → batches into SQLite off the runtime.
//!
//! Defect: the enrichment stage handles one line at a time, so it manages about 500 lines a
//! second while 2,000 arrive: its bounded queue sits full, the ingest task waits to send, and
//! the socket drops datagrams meanwhile.
//! Fixed: the enrichment stage fans out with bounded concurrency (64 lookups in flight),
//! sized to the load.

use std::sync::Arc;
use std::time::Duration;

use asyncprof::sync::mpsc;

use super::log_aggregator::{start, write_batch, Started};
use super::logs::{self, Enriched, Record};
use crate::{Ctx, RunFuture, Variant};

const LOOKUP_LATENCY: Duration = Duration::from_millis(2);
const IN_FLIGHT: usize = 64;

async fn lookup(
    client: &reqwest::Client,
    base: &str,
    record: Record,
    out: &mpsc::Sender<Enriched>,
) -> anyhow::Result<()> {
    let meta = logs::fetch_meta(client, base, record.service).await?;
    let _ = out.send(Enriched { record, meta }).await;
    Ok(())
}

/// The defect: one lookup at a time.
async fn enrich_serial(
    mut input: mpsc::Receiver<Record>,
    out: mpsc::Sender<Enriched>,
    base: String,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    while let Some(record) = input.recv().await {
        lookup(&client, &base, record, &out).await?;
    }
    Ok(())
}

/// The fix: up to 64 lookups in flight.
async fn enrich_fan_out(
    mut input: mpsc::Receiver<Record>,
    out: mpsc::Sender<Enriched>,
    base: String,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(IN_FLIGHT)
        .build()?;
    let limit = Arc::new(asyncprof::sync::Semaphore::new(
        "enrich-in-flight",
        IN_FLIGHT,
    ));
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(record) = input.recv().await {
        let permit = limit.clone().acquire_owned().await?;
        let (client, base, out) = (client.clone(), base.clone(), out.clone());
        tasks.spawn(async move {
            let r = lookup(&client, &base, record, &out).await;
            drop(permit);
            r
        });
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

async fn store(
    mut input: mpsc::Receiver<Enriched>,
    mut conn: rusqlite::Connection,
    latency: asyncprof::Latency,
) -> anyhow::Result<rusqlite::Connection> {
    let mut batch = Vec::new();
    while input.recv_many(&mut batch, 1000).await > 0 {
        let full = std::mem::take(&mut batch);
        let (c, full) = tokio::task::spawn_blocking(move || {
            write_batch(&mut conn, &full).map(|()| (conn, full))
        })
        .await??;
        conn = c;
        for e in &full {
            latency.record_since(e.record.received);
        }
    }
    Ok(conn)
}

pub(crate) fn run(variant: Variant, ctx: Arc<Ctx>) -> RunFuture {
    Box::pin(async move {
        let load = ctx
            .load
            .pick((2_000, 2_000), (8_000, 2_000), (16_000, 2_000));
        let (parsed_tx, parsed_rx) = mpsc::channel("enrich-queue", 256); // asyncprof-expect: queue-backpressure
        let (enriched_tx, enriched_rx) = mpsc::channel("store-queue", 4096);
        let Started { base, conn, ingest } = start(&ctx, load, LOOKUP_LATENCY, parsed_tx).await?;
        let enrich = match variant {
            Variant::Bad => tokio::spawn(enrich_serial(parsed_rx, enriched_tx, base)),
            Variant::Fixed => tokio::spawn(enrich_fan_out(parsed_rx, enriched_tx, base)),
        };
        let writer = tokio::spawn(store(enriched_rx, conn, ctx.latency.clone()));
        ingest.finish(enrich, writer).await
    })
}
