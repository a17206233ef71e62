//! Each pipeline does its job: the fixed twins run (without a profiler) and their own
//! counts are checked against what was sent. One at a time: they share two cores, and the
//! UDP pipelines must not lose datagrams to a neighbour's load.

use std::sync::Mutex;

use asyncprof_pipelines::{find, Load, Outcome, Variant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn run(name: &str, variant: Variant, load: Load) -> Outcome {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let p = find(name).unwrap_or_else(|| panic!("no pipeline {name}"));
    asyncprof_pipelines::run_with(p, variant, load, None).unwrap()
}

fn check(o: &Outcome, key: &str) -> u64 {
    *o.checks
        .get(key)
        .unwrap_or_else(|| panic!("no check {key:?} in {o:#?}"))
}

#[test]
fn every_pipeline_marks_its_defect_with_a_known_kind() {
    let kinds = asyncprof_report::diagnoses::KINDS;
    assert_eq!(asyncprof_pipelines::pipelines().len(), 12);
    for p in asyncprof_pipelines::pipelines() {
        let expected = asyncprof_pipelines::expected(p);
        assert_eq!(expected.len(), 1, "{}: {expected:?}", p.name);
        assert!(kinds.contains(&expected[0].kind.as_str()), "{expected:?}");
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(p.source),
        )
        .unwrap();
        let line = text.lines().nth(expected[0].line as usize - 1).unwrap();
        assert!(line.contains("asyncprof-expect"), "{}: {line}", p.name);
    }
}

#[test]
fn scraper_parses_ten_thousand_pages() {
    let o = run("scraper", Variant::Fixed, Load::Default);
    assert_eq!(check(&o, "pages"), 10_000);
    assert_eq!(check(&o, "pages_parsed"), 10_000);
    assert_eq!(check(&o, "wrong_parses"), 0);
    assert_eq!(o.items, 10_000);
}

#[test]
fn scraper_blocking_client_parses_every_page() {
    let o = run("scraper-blocking-client", Variant::Fixed, Load::Quick);
    assert_eq!(check(&o, "pages_parsed"), check(&o, "pages"));
}

#[test]
fn log_aggregator_stores_every_record_sent() {
    let o = run("log-aggregator", Variant::Fixed, Load::Quick);
    assert_eq!(check(&o, "rows_stored"), check(&o, "lines_sent"), "{o:#?}");
}

#[test]
fn log_aggregator_backpressure_fixed_keeps_up_and_stores_everything() {
    let o = run("log-aggregator-backpressure", Variant::Fixed, Load::Quick);
    assert_eq!(check(&o, "rows_stored"), check(&o, "lines_sent"), "{o:#?}");
}

#[test]
fn market_data_dead_letters_hold_exactly_the_malformed_ticks() {
    let o = run("market-data", Variant::Fixed, Load::Quick);
    assert!(check(&o, "malformed_sent") > 10, "{o:#?}");
    assert_eq!(check(&o, "dead_letters"), check(&o, "malformed_sent"));
    assert_eq!(
        check(&o, "ticks_normalized") + check(&o, "dead_letters"),
        check(&o, "ticks_sent")
    );
    // Every exchange drops its connection once; the client resumes each feed.
    assert_eq!(check(&o, "reconnects"), 10);
    assert!(check(&o, "volatilities_published") > 0);
}

#[test]
fn enrichment_sends_exactly_the_always_failing_events_to_the_dlq() {
    let o = run("enrichment", Variant::Fixed, Load::Quick);
    assert_eq!(
        check(&o, "dead_letters"),
        check(&o, "expected_dead_letters")
    );
    assert_eq!(check(&o, "dead_letters_as_expected"), 1);
    assert_eq!(
        check(&o, "enriched") + check(&o, "dead_letters"),
        check(&o, "events")
    );
    assert!(check(&o, "retries") > 0, "failures were retried");
}

#[test]
fn news_aggregator_deduplicates_to_the_stories_served() {
    let o = run("news-aggregator", Variant::Fixed, Load::Quick);
    assert!(check(&o, "headlines_fetched") > check(&o, "unique_headlines"));
    assert_eq!(check(&o, "unique_headlines"), check(&o, "expected_unique"));
}

#[test]
fn price_monitor_fixed_stores_every_price() {
    let o = run("price-monitor", Variant::Fixed, Load::Quick);
    assert_eq!(check(&o, "prices_stored"), check(&o, "prices_expected"));
    assert!(check(&o, "alerts") > 0);
}

#[test]
fn log_aggregator_saturated_fixed_handles_every_line() {
    let o = run("log-aggregator-saturated", Variant::Fixed, Load::Quick);
    assert_eq!(check(&o, "lines_sent"), 6_000);
    assert_eq!(o.items, check(&o, "lines_received"));
    assert_eq!(o.items, 6_000);
    // 500 services by 4 levels at most.
    assert!((1..=2_000).contains(&check(&o, "keys")));
}

#[test]
fn enrichment_fraud_fixed_scores_every_event() {
    let o = run("enrichment-fraud", Variant::Fixed, Load::Quick);
    assert_eq!(o.items, check(&o, "events"));
    assert_eq!(o.errors, 0);
    assert!(check(&o, "rejected") > 0 && check(&o, "accepted") > check(&o, "rejected"));
}

#[test]
fn scraper_retry_fixed_parses_the_live_pages_and_gives_up_on_the_missing_ones() {
    let o = run("scraper-retry", Variant::Fixed, Load::Quick);
    // One product in five is discontinued (404): not retried, given up on.
    assert_eq!(check(&o, "pages_parsed"), 240);
    assert_eq!(o.errors, 60);
    assert_eq!(check(&o, "retries"), 0);
}

#[test]
fn price_monitor_store_fixed_stores_every_price() {
    let o = run("price-monitor-store", Variant::Fixed, Load::Quick);
    assert_eq!(check(&o, "stored"), check(&o, "prices"));
    assert_eq!(o.errors, 0);
}
