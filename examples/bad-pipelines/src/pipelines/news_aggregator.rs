//! `news-aggregator`: every 50 ms, headlines from 3 local news APIs fetched concurrently →
//! merged → de-duplicated (the same story arrives from several sources, written with
//! different case and punctuation). Runs on a current-thread runtime.
//!
//! Defect: one source is fetched with `futures::executor::block_on` inside a task. The HTTP
//! request needs the runtime's I/O driver, which runs on the very thread now blocked waiting
//! for it: the runtime stops for good, and the run is stopped at its time budget.
//! Fixed: `.await`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::{mix, Ctx, Outcome, RunFuture, Upstream, Variant};

const SOURCES: u64 = 3;
const PER_SOURCE: u64 = 40;
const ROUND: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Headline {
    title: String,
    source: String,
}

/// The story ids source `source` lists in round `round`: overlapping windows, so most
/// stories come from two or three sources and recur across rounds.
fn stories(source: u64, round: u64) -> impl Iterator<Item = u64> {
    let start = round * 25 + source * 10;
    start..start + PER_SOURCE
}

/// The story's title as source `source` writes it.
fn title(story: u64, source: u64) -> String {
    let base = format!("Story {story}: markets {} today", mix(story, 1) % 1000);
    match source {
        0 => base,
        1 => base.to_uppercase(),
        _ => format!("{}!", base.replace(':', " -")),
    }
}

fn serve(upstream: &Upstream, source: u64) -> std::io::Result<SocketAddr> {
    let router = Router::new()
        .route("/headlines/{round}", get(headlines))
        .with_state(source);
    upstream.http(router)
}

async fn headlines(State(source): State<u64>, Path(round): Path<u64>) -> Json<Vec<Headline>> {
    Json(
        stories(source, round)
            .map(|s| Headline {
                title: title(s, source),
                source: format!("source-{source}"),
            })
            .collect(),
    )
}

/// The de-duplication key: letters and digits only, lower case.
fn normalize(title: &str) -> String {
    title
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Stories in `rounds` rounds, counted from the sources' data rather than from titles.
fn expected_unique(rounds: u64) -> u64 {
    (0..rounds)
        .flat_map(|r| (0..SOURCES).flat_map(move |s| stories(s, r)))
        .collect::<HashSet<_>>()
        .len() as u64
}

async fn fetch(client: &reqwest::Client, base: &str, round: u64) -> Vec<Headline> {
    match client.get(format!("{base}/headlines/{round}")).send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

pub(crate) fn run(variant: Variant, ctx: Arc<Ctx>) -> RunFuture {
    Box::pin(async move {
        let rounds = ctx.load.pick(10, 30, 60);
        let mut bases = Vec::new();
        for s in 0..SOURCES {
            bases.push(format!("http://{}", serve(&ctx.upstream, s)?));
        }
        let client = reqwest::Client::new();
        let mut seen = HashSet::new();
        let mut fetched = 0u64;
        let mut every = tokio::time::interval(ROUND);
        for round in 0..rounds {
            every.tick().await;
            let started = Instant::now();
            let (a, b) = tokio::join!(
                fetch(&client, &bases[0], round),
                fetch(&client, &bases[1], round)
            );
            let c = match variant {
                Variant::Bad => futures_executor::block_on(fetch(&client, &bases[2], round)), // asyncprof-expect: runtime-blocked
                Variant::Fixed => fetch(&client, &bases[2], round).await,
            };
            for h in a.into_iter().chain(b).chain(c) {
                fetched += 1;
                seen.insert(normalize(&h.title));
            }
            ctx.latency.record_since(started);
        }
        let mut out = Outcome {
            items: rounds,
            ..Outcome::default()
        };
        out.checks.insert("headlines_fetched".into(), fetched);
        out.checks
            .insert("unique_headlines".into(), seen.len() as u64);
        out.checks
            .insert("expected_unique".into(), expected_unique(rounds));
        Ok(out)
    })
}
