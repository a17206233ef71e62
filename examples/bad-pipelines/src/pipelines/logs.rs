//! What the two log aggregators share: the UDP load generator (500 simulated services), the
//! line format and its parser, the service-metadata API, and the SQLite store.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::{mix, Rng, Upstream};

/// Simulated services sending logs.
pub(crate) const SERVICES: u64 = 500;

const LEVELS: [&str; 4] = ["INFO", "WARN", "ERROR", "DEBUG"];
const WORDS: [&str; 16] = [
    "request", "served", "user", "cache", "miss", "timeout", "retry", "payment", "order",
    "shipped", "latency", "upstream", "token", "refresh", "session", "expired",
];

/// Send `lines` log lines at `per_second` to `to` from a thread of its own (outside the
/// profiled runtime), then stop. Returns the thread, which yields the count sent.
pub(crate) fn generate(
    to: SocketAddr,
    lines: u64,
    per_second: u64,
) -> std::io::Result<std::thread::JoinHandle<u64>> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    std::thread::Builder::new()
        .name("log-generator".into())
        .spawn(move || {
            let mut rng = Rng::new(42);
            let start = Instant::now();
            // Send in 1 ms slices.
            let per_slice = (per_second / 1000).max(1);
            let mut sent = 0;
            let mut slice = 0u32;
            while sent < lines {
                for _ in 0..per_slice.min(lines - sent) {
                    let service = rng.below(SERVICES);
                    let level = LEVELS[rng.below(4) as usize];
                    let mut message = String::new();
                    for _ in 0..40 {
                        message.push_str(WORDS[rng.below(16) as usize]);
                        message.push(' ');
                    }
                    let line = format!("svc-{service:03} {level} {sent} {}", message.trim_end());
                    if socket.send_to(line.as_bytes(), to).is_ok() {
                        sent += 1;
                    }
                }
                slice += 1;
                let due = start + Duration::from_millis(u64::from(slice));
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            sent
        })
}

/// One parsed log line.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) service: u64,
    pub(crate) level: String,
    pub(crate) seq: u64,
    pub(crate) message: String,
    pub(crate) received: Instant,
}

/// Parse `svc-NNN LEVEL SEQ message...`.
pub(crate) fn parse(line: &str, received: Instant) -> Option<Record> {
    let mut parts = line.splitn(4, ' ');
    let service = parts.next()?.strip_prefix("svc-")?.parse().ok()?;
    let level = parts.next()?.to_string();
    let seq = parts.next()?.parse().ok()?;
    let message = parts.next()?.to_string();
    Some(Record {
        service,
        level,
        seq,
        message,
        received,
    })
}

/// What the metadata API knows about a service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) team: String,
    pub(crate) tier: u8,
}

/// A record with its service's metadata.
#[derive(Debug, Clone)]
pub(crate) struct Enriched {
    pub(crate) record: Record,
    pub(crate) meta: Meta,
}

/// Serve `/service/{id}` (team and tier), each answer after `latency`.
pub(crate) fn serve_meta(upstream: &Upstream, latency: Duration) -> std::io::Result<SocketAddr> {
    let router = Router::new()
        .route("/service/{id}", get(meta))
        .with_state(latency);
    upstream.http(router)
}

async fn meta(State(latency): State<Duration>, UrlPath(id): UrlPath<u64>) -> Json<Meta> {
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    Json(Meta {
        team: format!("team-{}", mix(id, 3) % 20),
        tier: (mix(id, 5) % 3) as u8,
    })
}

/// Fetch a service's metadata.
pub(crate) async fn fetch_meta(
    client: &reqwest::Client,
    base: &str,
    service: u64,
) -> anyhow::Result<Meta> {
    Ok(client
        .get(format!("{base}/service/{service}"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Open the log store off the runtime: creating the file, its table and index is file I/O
/// that may wait on a busy disk, so it runs on the blocking pool in every variant.
pub(crate) async fn open_store_blocking(dir: &Path) -> anyhow::Result<rusqlite::Connection> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || open_store(&dir)).await?
}

/// Open the log store: a table and a full-text index of messages.
pub(crate) fn open_store(dir: &Path) -> anyhow::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(dir.join("logs.sqlite"))?;
    conn.execute_batch(
        "PRAGMA journal_mode = MEMORY;
         PRAGMA synchronous = OFF;
         CREATE TABLE IF NOT EXISTS logs (
             seq INTEGER PRIMARY KEY, service INTEGER, team TEXT, tier INTEGER,
             level TEXT, message TEXT);
         CREATE INDEX IF NOT EXISTS logs_service ON logs (service, level);
         CREATE VIRTUAL TABLE IF NOT EXISTS logs_fts USING fts5 (message);",
    )?;
    Ok(conn)
}

/// Rows in the store.
pub(crate) fn stored(conn: &rusqlite::Connection) -> anyhow::Result<u64> {
    Ok(conn.query_row("SELECT COUNT(*) FROM logs", [], |r| r.get::<_, i64>(0))? as u64)
}
