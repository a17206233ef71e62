//! Stall events (`Builder::stall_events`): a subscriber the test installs as the global
//! default receives each stall as a WARN event of target `asyncprof` naming the marked line;
//! under a storm of stalls the rate limit holds and every stall not announced is counted.
//!
//! A test binary of its own: it installs the process's global subscriber.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// One event as the test's subscriber saw it.
#[derive(Debug, Default, Clone)]
struct Seen {
    target: String,
    level: String,
    kind: String,
    file: String,
    line: u64,
    function: String,
    primitive: String,
    syscall: String,
    duration_ms: f64,
    message: String,
}

impl Visit for Seen {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "line" {
            self.line = value;
        }
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "duration_ms" {
            self.duration_ms = value;
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}").trim_matches('"').to_string();
        match field.name() {
            "kind" => self.kind = text,
            "file" => self.file = text,
            "function" => self.function = text,
            "primitive" => self.primitive = text,
            "syscall" => self.syscall = text,
            "message" => self.message = text,
            _ => {}
        }
    }
}

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Seen>>>);

impl<S: tracing::Subscriber> Layer<S> for Collect {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        if meta.target() != "asyncprof" {
            return;
        }
        let mut seen = Seen {
            target: meta.target().to_string(),
            level: meta.level().to_string(),
            ..Seen::default()
        };
        event.record(&mut seen);
        self.0.lock().unwrap().push(seen);
    }
}

impl Collect {
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn marked_line(marker: &str) -> u64 {
    let text = include_str!("stall_events.rs");
    let needle = format!("// stall: {marker}");
    text.lines()
        .position(|l| l.trim_end().ends_with(&needle))
        .map(|i| i as u64 + 1)
        .unwrap_or_else(|| panic!("no line ends with {needle:?}"))
}

/// Record `work` on an instrumented runtime of two workers with stall events on; returns the
/// run file.
fn record(
    name: &str,
    threshold: Duration,
    work: impl std::future::Future<Output = ()>,
) -> asyncprof_format::RunFile {
    let path = std::env::temp_dir().join(format!(
        "asyncprof-events-{name}-{}.run",
        std::process::id()
    ));
    let guard = asyncprof::Profiler::builder()
        .out(&path)
        .stall_threshold(threshold)
        .stall_events(true)
        .start()
        .unwrap();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2);
    let rt = guard.instrument(&mut builder).enable_all().build().unwrap();
    rt.block_on(work);
    drop(rt);
    drop(guard);
    let run = asyncprof_format::read_path(&path).unwrap();
    std::fs::remove_file(&path).ok();
    run
}

fn blocking_handler() {
    std::thread::sleep(Duration::from_millis(40)); // stall: handler
}

fn short_block() {
    std::thread::sleep(Duration::from_millis(3)); // stall: storm
}

#[test]
fn a_stall_reaches_the_services_subscriber_and_a_storm_is_rate_limited() {
    let collect = Collect::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(collect.clone()))
        .unwrap();

    // One stall at a known line: its event names it.
    let run = record("one", Duration::from_millis(10), async {
        tokio::spawn(async { blocking_handler() }).await.unwrap();
    });
    let events = collect.take();
    let line = marked_line("handler");
    let at_line: Vec<&Seen> = events.iter().filter(|e| e.line == line).collect();
    assert_eq!(
        at_line.len(),
        1,
        "events {events:#?}, stalls {:#?}",
        run.stalls
    );
    let e = at_line[0];
    assert_eq!((e.target.as_str(), e.level.as_str()), ("asyncprof", "WARN"));
    assert_eq!(e.kind, "blocking-call", "{e:#?}");
    assert!(e.file.ends_with("tests/stall_events.rs"), "{e:#?}");
    assert!(e.function.contains("blocking_handler"), "{e:#?}");
    assert!(e.primitive.contains("sleep"), "{e:#?}");
    assert_eq!(e.syscall, "clock_nanosleep", "{e:#?}");
    assert!(e.duration_ms >= 30.0, "{e:#?}");
    assert!(e.message.contains(&format!(":{line} in ")), "{e:#?}");
    assert_eq!(run.snapshot.as_ref().unwrap().loss.dropped_stall_events, 0);

    // A storm: 1,000 polls of 3 ms past a 1 ms threshold, on two workers.
    let started = Instant::now();
    let run = record("storm", Duration::from_millis(1), async {
        let tasks: Vec<_> = (0..1000)
            .map(|_| tokio::spawn(async { short_block() }))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let events = collect.take();
    let finished = run.stalls.iter().filter(|s| !s.ongoing).count() as u64;
    let dropped = run.snapshot.as_ref().unwrap().loss.dropped_stall_events;
    // Most polls were recorded as stalls (a few may be missed on a busy machine).
    assert!(finished >= 500, "{finished} stalls of 1000 recorded");
    // At most the burst plus the rate over the run's length (and one for rounding).
    let limit = 60.0 + 10.0 * elapsed + 1.0;
    assert!(
        (events.len() as f64) <= limit,
        "{} events in {elapsed:.2} s, limit {limit:.0}",
        events.len()
    );
    assert!(
        events.len() >= 60,
        "the burst goes out: {} events",
        events.len()
    );
    // The run file kept every record of the storm (the aggregator sends each cycle's
    // records to the writer as one batch), and each finished stall was announced or counted
    // as dropped: nothing lost silently.
    assert_eq!(run.snapshot.as_ref().unwrap().loss.dropped_records, 0);
    assert_eq!(
        events.len() as u64 + dropped,
        finished,
        "events + dropped = stalls"
    );
    let storm = marked_line("storm");
    // Past the per-minute budget of sampled stalls, a stall has no stack and so no line;
    // every event with a line names the marked one.
    let with_line: Vec<&Seen> = events.iter().filter(|e| e.line != 0).collect();
    assert!(!with_line.is_empty(), "{events:#?}");
    assert!(with_line.iter().all(|e| e.line == storm), "{events:#?}");
    eprintln!(
        "storm: {finished} stalls in {elapsed:.2} s, {} events ({} with the line), {dropped} dropped",
        events.len(),
        with_line.len()
    );
}
