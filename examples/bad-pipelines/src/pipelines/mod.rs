//! The bundled pipelines, one module each.

use std::time::Duration;

use crate::{Flavor, Pipeline};

mod enrichment;
mod enrichment_fraud;
mod log_aggregator;
mod log_aggregator_backpressure;
mod log_aggregator_saturated;
mod logs;
mod market_data;
mod news_aggregator;
mod price_monitor;
mod price_monitor_store;
mod scraper;
mod scraper_blocking_client;
mod scraper_retry;
mod shop;

pub(crate) const ALL: &[Pipeline] = &[
    Pipeline {
        name: "scraper",
        about: "fetch product pages from a local shop over HTTP, rate-limited, and parse them",
        defect: "the rate limiter waits with std::thread::sleep on the runtime",
        source: "examples/bad-pipelines/src/pipelines/scraper.rs",
        flavor: Flavor::MultiThread,
        blocking_threads: 0,
        budget: Duration::from_secs(10),
        run: scraper::run,
    },
    Pipeline {
        name: "scraper-blocking-client",
        about: "fetch product pages from a slow local shop and parse them",
        defect: "a blocking HTTP client (ureq) called inside async tasks",
        source: "examples/bad-pipelines/src/pipelines/scraper_blocking_client.rs",
        flavor: Flavor::MultiThread,
        blocking_threads: 0,
        budget: Duration::from_secs(10),
        run: scraper_blocking_client::run,
    },
    Pipeline {
        name: "log-aggregator",
        about:
            "UDP log lines from 500 services -> parse -> enrich over HTTP -> batches into SQLite",
        defect: "the SQLite batch insert runs on the runtime",
        source: "examples/bad-pipelines/src/pipelines/log_aggregator.rs",
        flavor: Flavor::MultiThread,
        blocking_threads: 0,
        budget: Duration::from_secs(10),
        run: log_aggregator::run,
    },
    Pipeline {
        name: "log-aggregator-backpressure",
        about: "UDP log lines -> parse -> per-line lookup over HTTP -> batches into SQLite",
        defect: "the enrichment stage is slower than ingest: its bounded queue sits full",
        source: "examples/bad-pipelines/src/pipelines/log_aggregator_backpressure.rs",
        flavor: Flavor::MultiThread,
        blocking_threads: 0,
        budget: Duration::from_secs(10),
        run: log_aggregator_backpressure::run,
    },
    Pipeline {
        name: "price-monitor",
        about:
            "prices of 100 products at 3 retailer APIs every 100 ms, alerts, results into SQLite",
        defect: "an unbounded channel to a store slower than the producers grows without bound",
        source: "examples/bad-pipelines/src/pipelines/price_monitor.rs",
        flavor: Flavor::MultiThread,
        blocking_threads: 0,
        budget: Duration::from_secs(10),
        run: price_monitor::run,
    },
    Pipeline {
        name: "news-aggregator",
        about: "headlines from 3 local APIs, concurrently -> merge -> de-duplicate",
        defect: "futures::executor::block_on inside a task on a current-thread runtime",
        source: "examples/bad-pipelines/src/pipelines/news_aggregator.rs",
        flavor: Flavor::CurrentThread,
        blocking_threads: 0,
        budget: Duration::from_secs(4),
        run: news_aggregator::run,
    },
    Pipeline {
        name: "enrichment",
        about: "events enriched by 3 local APIs in parallel, retries with backoff, a DLQ",
        defect: "a std::sync::Mutex around a shared cache held while re-pricing it",
        source: "examples/bad-pipelines/src/pipelines/enrichment.rs",
        flavor: Flavor::MultiThread,
        blocking_threads: 0,
        budget: Duration::from_secs(10),
        run: enrichment::run,
    },
    Pipeline {
        name: "market-data",
        about: "ticks from 10 WebSocket exchanges -> normalize -> rolling volatility -> publish",
        defect: "the CPU-heavy volatility computation runs inside the async task",
        source: "examples/bad-pipelines/src/pipelines/market_data.rs",
        flavor: Flavor::MultiThread,
        blocking_threads: 0,
        budget: Duration::from_secs(10),
        run: market_data::run,
    },
    Pipeline {
        name: "log-aggregator-saturated",
        about: "UDP log lines from 500 services -> a task per line: parse, redact, count",
        defect: "the redaction rules are rebuilt for every line: short polls, saturated workers",
        source: "examples/bad-pipelines/src/pipelines/log_aggregator_saturated.rs",
        flavor: Flavor::MultiThread,
        blocking_threads: 0,
        budget: Duration::from_secs(10),
        run: log_aggregator_saturated::run,
    },
    Pipeline {
        name: "enrichment-fraud",
        about: "payment events -> 16 consumers -> a 10 ms fraud-scoring API -> accept or reject",
        defect:
            "a blocking fraud check through spawn_blocking, faster than 4 blocking threads absorb",
        source: "examples/bad-pipelines/src/pipelines/enrichment_fraud.rs",
        flavor: Flavor::MultiThread,
        blocking_threads: enrichment_fraud::BLOCKING_THREADS,
        budget: Duration::from_secs(10),
        run: enrichment_fraud::run,
    },
    Pipeline {
        name: "scraper-retry",
        about: "product pages from a local shop at 200/s; failures retried by a task of their own",
        defect: "the retry task retries a 404 forever: one more task piles up per missing page",
        source: "examples/bad-pipelines/src/pipelines/scraper_retry.rs",
        flavor: Flavor::MultiThread,
        blocking_threads: 0,
        budget: Duration::from_secs(10),
        run: scraper_retry::run,
    },
    Pipeline {
        name: "price-monitor-store",
        about:
            "prices of 100 products every 100 ms -> a task each: fetch, store to a 30 ms service",
        defect: "the store stage awaits one 30 ms call per price: most of each item's time",
        source: "examples/bad-pipelines/src/pipelines/price_monitor_store.rs",
        flavor: Flavor::MultiThread,
        blocking_threads: 0,
        budget: Duration::from_secs(10),
        run: price_monitor_store::run,
    },
];

/// The source text of a pipeline's module, for its markers.
pub(crate) fn source_of(name: &str) -> &'static str {
    match name {
        "scraper" => include_str!("scraper.rs"),
        "scraper-blocking-client" => include_str!("scraper_blocking_client.rs"),
        "log-aggregator" => include_str!("log_aggregator.rs"),
        "log-aggregator-backpressure" => include_str!("log_aggregator_backpressure.rs"),
        "price-monitor" => include_str!("price_monitor.rs"),
        "news-aggregator" => include_str!("news_aggregator.rs"),
        "enrichment" => include_str!("enrichment.rs"),
        "market-data" => include_str!("market_data.rs"),
        "log-aggregator-saturated" => include_str!("log_aggregator_saturated.rs"),
        "enrichment-fraud" => include_str!("enrichment_fraud.rs"),
        "scraper-retry" => include_str!("scraper_retry.rs"),
        "price-monitor-store" => include_str!("price_monitor_store.rs"),
        _ => "",
    }
}
