//! The Prometheus/OpenMetrics endpoint (the `metrics` feature): the recording as metrics, served
//! on asyncprof's own thread (`asyncprof-metrics`), never on the service's runtime.
//!
//! The aggregator hands each snapshot (about once a second) and each finished stall to
//! [`State`]; a scrape encodes what it holds with `prometheus-client`. A scrape costs the
//! service's threads nothing: they never see the endpoint.
//!
//! Labels are bounded: the [`TOP`] spawn locations by busy time, stall culprits by stall time
//! and queues by items are labelled one by one, the rest are summed under `other`. Stall
//! culprits are remembered up to [`MAX_CULPRITS`] distinct ones; later new ones go straight to
//! `other`. So the endpoint's memory is the last snapshot plus a bounded table.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use asyncprof_format as format;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::events::Culprit;
use crate::hist::lock;

/// Spawn locations, stall culprits and queues labelled one by one; the rest are `other`.
pub(crate) const TOP: usize = 20;
/// Distinct stall culprits remembered; later new ones are counted under `other`.
pub(crate) const MAX_CULPRITS: usize = 1000;
/// The label value of everything past the top ones.
const OTHER: &str = "other";
/// Histogram bucket bounds, in seconds: 10 µs to 10 s.
const BOUNDS: [f64; 13] = [
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0, 10.0,
];
/// The longest a scrape may take to send its request or read its answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest request head read.
const MAX_REQUEST: usize = 8192;

impl Culprit {
    /// The row of the stalls of `kind` past the top culprits.
    fn other(kind: &'static str) -> Self {
        Culprit {
            kind,
            file: OTHER.into(),
            line: None,
            function: OTHER.into(),
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    stalls: u64,
    ns: u64,
}

/// What a scrape reads: the last snapshot and the stalls so far.
#[derive(Debug, Default)]
pub(crate) struct State {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    snapshot: Option<format::Snapshot>,
    stalls: HashMap<Culprit, Tally>,
    /// Stalls running now, by id: how long so far.
    ongoing: BTreeMap<u64, u64>,
    /// The spawn locations, queues and culprits given series of their own so far (see
    /// [`top_and_other`]).
    chosen: Chosen,
}

#[derive(Debug, Default)]
struct Chosen {
    locations: Vec<Labels>,
    queues: Vec<Labels>,
    culprits: Vec<Culprit>,
}

impl State {
    /// A new snapshot replaces the last one.
    pub(crate) fn snapshot(&self, snapshot: format::Snapshot) {
        lock(&self.inner).snapshot = Some(snapshot);
    }

    /// A stall record was written: a finished stall is counted under its culprit; one still
    /// running is shown as running.
    pub(crate) fn stall(&self, s: &format::StallRecord) {
        let mut inner = lock(&self.inner);
        if s.ongoing {
            if inner.ongoing.len() < MAX_CULPRITS || inner.ongoing.contains_key(&s.id) {
                inner.ongoing.insert(s.id, s.duration_ns);
            }
            return;
        }
        inner.ongoing.remove(&s.id);
        let mut key = Culprit::of(s);
        if inner.stalls.len() >= MAX_CULPRITS && !inner.stalls.contains_key(&key) {
            key = Culprit::other(key.kind);
        }
        let t = inner.stalls.entry(key).or_default();
        t.stalls += 1;
        t.ns = t.ns.saturating_add(s.duration_ns);
    }
}

/// A histogram in the endpoint's buckets: counts per bound (the last is +Inf) and the sum.
#[derive(Debug, Clone, Default)]
struct Buckets {
    counts: [u64; BOUNDS.len() + 1],
    sum: f64,
}

impl Buckets {
    fn add(&mut self, h: &format::Histogram) {
        for &[value, count] in &h.buckets {
            let secs = value as f64 / 1e9;
            let i = BOUNDS
                .iter()
                .position(|&b| secs <= b)
                .unwrap_or(BOUNDS.len());
            self.counts[i] = self.counts[i].saturating_add(count);
            self.sum += secs * count as f64;
        }
    }

    fn encode(&self, encoder: &mut MetricEncoder<'_>) -> std::fmt::Result {
        let buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(self.counts)
            .collect();
        let count = self.counts.iter().fold(0u64, |a, c| a.saturating_add(*c));
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum, count, &buckets, None,
        )
    }
}

/// One row each under `key` for the items `chosen` holds, the rest summed by `fold` into rows
/// under `other_key` (the label values of [`OTHER`]). `chosen` is filled up to [`TOP`] with
/// the heaviest items by `weight` not in it yet, and never loses one: an item that moved from
/// its own series into `other` would make `other`'s counters go down, which Prometheus reads
/// as a reset (a false spike in `rate()`). So the labelled ones are the heaviest of the first
/// scrapes that had [`TOP`] of them; later ones are counted under `other`.
fn top_and_other<T, K: Ord + Clone, A: Default>(
    items: impl IntoIterator<Item = T>,
    weight: impl Fn(&T) -> u64,
    key: impl Fn(&T) -> K,
    other_key: impl Fn(&T) -> K,
    chosen: &mut Vec<K>,
    mut fold: impl FnMut(&mut A, &T),
) -> Vec<(K, A)> {
    let mut order: Vec<T> = items.into_iter().collect();
    order.sort_by_key(|t| std::cmp::Reverse(weight(t)));
    for t in &order {
        if chosen.len() >= TOP {
            break;
        }
        let k = key(t);
        if !chosen.contains(&k) {
            chosen.push(k);
        }
    }
    // Items that share a label (two spawns on one line, two queues of one name) share its
    // row: a label set twice in one scrape is an error to Prometheus.
    let mut own: BTreeMap<K, A> = BTreeMap::new();
    let mut other: BTreeMap<K, A> = BTreeMap::new();
    for t in &order {
        let k = key(t);
        if chosen.contains(&k) {
            fold(own.entry(k).or_default(), t);
        } else {
            fold(other.entry(other_key(t)).or_default(), t);
        }
    }
    own.into_iter().chain(other).collect()
}

fn label(l: &format::SourceLocation) -> String {
    format!("{}:{}", l.file, l.line)
}

/// One metric family: its descriptor, then one series per label set (none: the metric
/// alone).
fn family(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    series: impl IntoIterator<Item = (Labels, Value)>,
) -> std::fmt::Result {
    let mut series = series.into_iter().peekable();
    if series.peek().is_none() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, unit, kind)?;
    for (labels, value) in series {
        if labels.is_empty() {
            value.encode(&mut metric)?;
        } else {
            value.encode(&mut metric.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

enum Value {
    Counter(f64),
    Gauge(f64),
    Histogram(Buckets),
}

impl Value {
    fn encode(&self, m: &mut MetricEncoder<'_>) -> std::fmt::Result {
        match self {
            Value::Counter(v) => {
                m.encode_counter::<prometheus_client::encoding::NoLabelSet, _, f64>(v, None)
            }
            Value::Gauge(v) => m.encode_gauge(v),
            Value::Histogram(b) => b.encode(m),
        }
    }
}

/// A spawn location's numbers (or the sum of those past the top ones).
#[derive(Debug, Default)]
struct LocationSums {
    polls: u64,
    busy_ns: u64,
    poll: Buckets,
    sched: Buckets,
}

/// A queue's numbers (or the sum of those past the top ones).
#[derive(Debug, Default)]
struct QueueSums {
    depth: u64,
    send: Buckets,
    recv: Buckets,
}

/// The collector a scrape encodes.
#[derive(Debug)]
struct Metrics(Arc<State>);

type Labels = Vec<(&'static str, String)>;

impl Collector for Metrics {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let mut guard = lock(&self.0.inner);
        let inner = &mut *guard;
        self.encode_stalls(
            &inner.stalls,
            &inner.ongoing,
            &mut inner.chosen.culprits,
            &mut e,
        )?;
        let Some(snap) = inner.snapshot.as_ref() else {
            return Ok(());
        };
        let chosen = &mut inner.chosen;
        // Spawn locations: polls, poll time and scheduling delay.
        let locations = top_and_other(
            &snap.locations,
            |l| l.busy_ns,
            |l| vec![("location", label(&l.location))],
            |_| vec![("location", OTHER.to_string())],
            &mut chosen.locations,
            |a: &mut LocationSums, l| {
                a.polls = a.polls.saturating_add(l.polls);
                a.busy_ns = a.busy_ns.saturating_add(l.busy_ns);
                a.poll.add(&l.poll_ns);
                a.sched.add(&l.scheduled_ns);
            },
        );
        family(
            &mut e,
            "asyncprof_polls",
            "Polls of the tasks spawned at each location",
            None,
            MetricType::Counter,
            locations
                .iter()
                .map(|(l, a)| (l.clone(), Value::Counter(a.polls as f64))),
        )?;
        family(
            &mut e,
            "asyncprof_poll_busy",
            "Time spent inside polls of the tasks spawned at each location",
            Some(&Unit::Seconds),
            MetricType::Counter,
            locations
                .iter()
                .map(|(l, a)| (l.clone(), Value::Counter(a.busy_ns as f64 / 1e9))),
        )?;
        family(
            &mut e,
            "asyncprof_poll_duration",
            "Poll durations by spawn location (the polls timed exactly, one in sample_every, \
             and every long poll)",
            Some(&Unit::Seconds),
            MetricType::Histogram,
            locations
                .iter()
                .map(|(l, a)| (l.clone(), Value::Histogram(a.poll.clone()))),
        )?;
        family(
            &mut e,
            "asyncprof_schedule_delay",
            "Scheduling delays by spawn location: from a task's wake (or its spawn) to its poll",
            Some(&Unit::Seconds),
            MetricType::Histogram,
            locations
                .iter()
                .map(|(l, a)| (l.clone(), Value::Histogram(a.sched.clone()))),
        )?;
        // Workers.
        family(
            &mut e,
            "asyncprof_worker_busy",
            "Time each worker thread spent polling tasks",
            Some(&Unit::Seconds),
            MetricType::Counter,
            snap.workers.iter().map(|w| {
                (
                    vec![
                        ("runtime", w.runtime.to_string()),
                        ("worker", w.index.to_string()),
                    ],
                    Value::Counter(w.busy_ns as f64 / 1e9),
                )
            }),
        )?;
        // Queues.
        let queues = top_and_other(
            &snap.queues,
            |q| q.enqueued,
            |q| vec![("queue", q.name.clone())],
            |_| vec![("queue", OTHER.to_string())],
            &mut chosen.queues,
            |a: &mut QueueSums, q| {
                a.depth = a.depth.saturating_add(q.depth);
                a.send.add(&q.send_wait_ns);
                a.recv.add(&q.recv_wait_ns);
            },
        );
        family(
            &mut e,
            "asyncprof_queue_depth",
            "Items in each instrumented queue at the last snapshot",
            None,
            MetricType::Gauge,
            queues
                .iter()
                .map(|(l, a)| (l.clone(), Value::Gauge(a.depth as f64))),
        )?;
        family(
            &mut e,
            "asyncprof_queue_send_wait",
            "Time senders waited for room in each instrumented queue",
            Some(&Unit::Seconds),
            MetricType::Histogram,
            queues
                .iter()
                .map(|(l, a)| (l.clone(), Value::Histogram(a.send.clone()))),
        )?;
        family(
            &mut e,
            "asyncprof_queue_recv_wait",
            "Time receivers waited for an item in each instrumented queue",
            Some(&Unit::Seconds),
            MetricType::Histogram,
            queues
                .iter()
                .map(|(l, a)| (l.clone(), Value::Histogram(a.recv.clone()))),
        )?;
        // What the recording lost.
        let l = &snap.loss;
        let lost = [
            ("dropped_records", l.dropped_records),
            ("histogram_outliers", l.histogram_outliers),
            ("untracked_tasks", l.untracked_tasks),
            ("untracked_locations", l.untracked_locations),
            ("missed_samples", l.missed_samples),
            ("skipped_samples", l.skipped_samples),
            ("sampler_busy", l.sampler_busy),
            ("clock_gaps", l.clock_gaps),
            ("untracked_queues", l.untracked_queues),
            ("dropped_depth_points", l.dropped_depth_points),
            ("dropped_long_values", l.dropped_long_values),
            ("dropped_stall_events", l.dropped_stall_events),
            ("stalls_without_a_poll", l.stalls_without_a_poll),
            ("unwritten_at_file_limit", l.unwritten_at_file_limit),
            ("untracked_threads", l.untracked_threads),
            ("polls_never_ended", l.polls_never_ended),
        ];
        family(
            &mut e,
            "asyncprof_lost",
            "What the recording lost, by loss counter (see the report's loss counters)",
            None,
            MetricType::Counter,
            lost.iter().map(|(name, v)| {
                (
                    vec![("counter", name.to_string())],
                    Value::Counter(*v as f64),
                )
            }),
        )
    }
}

impl Metrics {
    fn encode_stalls(
        &self,
        stalls: &HashMap<Culprit, Tally>,
        ongoing: &BTreeMap<u64, u64>,
        chosen: &mut Vec<Culprit>,
        e: &mut DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        // The rest are summed by kind.
        let rows = top_and_other(
            stalls,
            |(_, t)| t.ns,
            |(k, _)| (*k).clone(),
            |(k, _)| Culprit::other(k.kind),
            chosen,
            |a: &mut Tally, (_, t)| {
                a.stalls += t.stalls;
                a.ns = a.ns.saturating_add(t.ns);
            },
        );
        let labels = |k: &Culprit| -> Labels {
            vec![
                ("kind", k.kind.to_string()),
                ("file", k.file.clone()),
                ("line", k.line.map_or_else(String::new, |l| l.to_string())),
                ("function", k.function.clone()),
            ]
        };
        family(
            e,
            "asyncprof_stalls",
            "Polls that held their worker past the stall threshold, by kind and culprit line",
            None,
            MetricType::Counter,
            rows.iter()
                .map(|(k, t)| (labels(k), Value::Counter(t.stalls as f64))),
        )?;
        family(
            e,
            "asyncprof_stall",
            "Time those polls held their worker, by kind and culprit line",
            Some(&Unit::Seconds),
            MetricType::Counter,
            rows.iter()
                .map(|(k, t)| (labels(k), Value::Counter(t.ns as f64 / 1e9))),
        )?;
        let longest = ongoing.values().copied().max().unwrap_or(0);
        family(
            e,
            "asyncprof_stalls_running",
            "Stalls running now (a poll that has not returned yet)",
            None,
            MetricType::Gauge,
            [(
                Vec::<(&str, String)>::new(),
                Value::Gauge(ongoing.len() as f64),
            )],
        )?;
        family(
            e,
            "asyncprof_stall_running_longest",
            "How long the longest stall running now has held its worker so far",
            Some(&Unit::Seconds),
            MetricType::Gauge,
            [(
                Vec::<(&str, String)>::new(),
                Value::Gauge(longest as f64 / 1e9),
            )],
        )
    }
}

/// The endpoint: its thread, its address, and how to stop it.
#[derive(Debug)]
pub(crate) struct Endpoint {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Endpoint {
    /// Bind `addr` and serve `state` on a thread of its own.
    pub(crate) fn start(addr: SocketAddr, state: Arc<State>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Metrics(state)));
        let thread = std::thread::Builder::new()
            .name("asyncprof-metrics".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    // asyncprof never profiles itself.
                    let _quiet = tracing::subscriber::set_default(
                        tracing::subscriber::NoSubscriber::default(),
                    );
                    serve(&listener, &registry, &stop)
                }
            })?;
        Ok(Endpoint {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        // Wake the blocked accept; a scrape in progress ends within its timeouts.
        if TcpStream::connect_timeout(&self.addr, IO_TIMEOUT).is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

fn serve(listener: &TcpListener, registry: &Registry, stop: &AtomicBool) {
    for conn in listener.incoming() {
        if stop.load(Relaxed) {
            return;
        }
        // A failed accept (the peer went away, out of descriptors) loses one scrape.
        if let Ok(conn) = conn {
            let _ = answer(conn, registry);
        }
    }
}

/// One request, one answer, then the connection closes.
fn answer(mut conn: TcpStream, registry: &Registry) -> std::io::Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = conn.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, kind, body) = match (method, path) {
        ("GET", "/metrics") => {
            let mut body = String::new();
            // Prometheus asks for OpenMetrics; other readers (curl, promtool) get Prometheus'
            // classic text format.
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let openmetrics = head
                .lines()
                .any(|l| l.starts_with("accept:") && l.contains("application/openmetrics-text"));
            match prometheus_client::encoding::text::encode(&mut body, registry) {
                Ok(()) if openmetrics => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    body,
                ),
                Ok(()) => (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    classic_text(&body),
                ),
                Err(_) => (
                    "500 Internal Server Error",
                    "text/plain; charset=utf-8",
                    "asyncprof: the metrics could not be encoded\n".to_string(),
                ),
            }
        }
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "asyncprof serves its metrics at /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "asyncprof's metrics endpoint answers GET /metrics\n".to_string(),
        ),
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

/// OpenMetrics text as Prometheus' classic text format (0.0.4): a counter family's HELP and
/// TYPE name its `_total` samples, and there are no UNIT lines and no EOF marker.
fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{tag}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stall(id: u64, line: u32, ms: u64, ongoing: bool) -> format::StallRecord {
        let mut s = format::StallRecord::default();
        s.id = id;
        s.duration_ns = ms * 1_000_000;
        s.ongoing = ongoing;
        s.class = format::StallClass::Blocking;
        s.culprit = Some(format::Frame::new(
            "svc::handler",
            Some("src/handler.rs".into()),
            Some(line),
        ));
        s
    }

    fn scrape(state: &Arc<State>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Metrics(state.clone())));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn finished_stalls_are_counted_by_culprit_and_running_ones_shown_as_running() {
        let state = Arc::new(State::default());
        state.stall(&stall(1, 42, 30, true));
        let text = scrape(&state);
        assert!(text.contains("asyncprof_stalls_running 1.0\n"), "{text}");
        assert!(!text.contains("asyncprof_stalls_total"), "{text}");
        state.stall(&stall(1, 42, 50, false));
        state.stall(&stall(2, 42, 20, false));
        let text = scrape(&state);
        assert!(text.contains("asyncprof_stalls_running 0.0\n"), "{text}");
        assert!(
            text.contains(
                "asyncprof_stalls_total{kind=\"blocking-call\",file=\"src/handler.rs\",line=\"42\",function=\"svc::handler\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("asyncprof_stall_seconds_total{kind=\"blocking-call\",file=\"src/handler.rs\",line=\"42\",function=\"svc::handler\"} 0.07"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_classic_text_names_counter_samples_in_help_and_type() {
        let state = Arc::new(State::default());
        state.stall(&stall(1, 42, 30, false));
        let text = classic_text(&scrape(&state));
        assert!(
            text.contains("# HELP asyncprof_stalls_total Polls"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE asyncprof_stalls_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE asyncprof_stall_seconds_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE asyncprof_stalls_running gauge\n"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }

    #[test]
    fn culprits_past_the_top_are_summed_under_other() {
        let state = Arc::new(State::default());
        // TOP + 5 lines, line n stalling n times: the 5 with fewest stall seconds are "other".
        for line in 1..=(TOP as u32 + 5) {
            for i in 0..line {
                state.stall(&stall(
                    u64::from(line) * 1000 + u64::from(i),
                    line,
                    20,
                    false,
                ));
            }
        }
        let text = scrape(&state);
        let series = text
            .lines()
            .filter(|l| l.starts_with("asyncprof_stalls_total{"))
            .count();
        assert_eq!(series, TOP + 1, "{text}");
        // Lines 1..=5: 15 stalls in all.
        assert!(
            text.contains("asyncprof_stalls_total{kind=\"blocking-call\",file=\"other\",line=\"\",function=\"other\"} 15"),
            "{text}"
        );
        assert!(!text.contains("line=\"5\""), "{text}");
        assert!(text.contains("line=\"6\""), "{text}");
    }

    #[test]
    fn other_never_goes_down_when_ranks_change_between_scrapes() {
        // `other` is a counter: a culprit that rose into the top after it was summed there
        // must not take its stalls out of it (Prometheus would read a reset).
        let other = |text: &str| -> u64 {
            let line = text
                .lines()
                .find(|l| l.starts_with("asyncprof_stalls_total{") && l.contains("file=\"other\""))
                .unwrap_or_else(|| panic!("no other row in {text}"));
            line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64
        };
        let state = Arc::new(State::default());
        // Line 1: 10 stalls of 1 ms, the lightest by stall seconds; lines 2..=TOP+1: one of
        // 20 ms each.
        for i in 0..10 {
            state.stall(&stall(i, 1, 1, false));
        }
        for line in 2..=(TOP as u32 + 1) {
            state.stall(&stall(u64::from(line) * 100, line, 20, false));
        }
        let first = other(&scrape(&state));
        assert_eq!(first, 10);
        // Line 1 becomes the heaviest.
        for i in 0..10 {
            state.stall(&stall(10_000 + i, 1, 100, false));
        }
        let second = other(&scrape(&state));
        assert!(second >= first, "other went from {first} to {second}");
        assert_eq!(second, 20, "line 1 stays under other");
    }

    #[test]
    fn items_that_share_a_label_share_its_series() {
        // Two queues of one name (made at two places): one series, their depths added.
        let mut snap = format::Snapshot::default();
        for depth in [3, 4] {
            let mut q = format::QueueStats::default();
            q.name = "jobs".into();
            q.depth = depth;
            q.enqueued = 10;
            snap.queues.push(q);
        }
        let state = Arc::new(State::default());
        state.snapshot(snap);
        let text = scrape(&state);
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("asyncprof_queue_depth{"))
            .collect();
        assert_eq!(
            rows,
            ["asyncprof_queue_depth{queue=\"jobs\"} 7.0"],
            "{text}"
        );
    }

    #[test]
    fn culprits_beyond_the_table_go_to_other_and_memory_stays_bounded() {
        let state = Arc::new(State::default());
        for line in 0..(MAX_CULPRITS as u32 + 500) {
            state.stall(&stall(u64::from(line), line, 20, false));
        }
        assert_eq!(lock(&state.inner).stalls.len(), MAX_CULPRITS + 1);
    }

    #[test]
    fn histogram_buckets_follow_the_values() {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_max(60_000_000_000, 2).unwrap();
        h.record_n(3_000, 4).unwrap(); // 3 µs: first bucket
        h.record_n(20_000_000, 1).unwrap(); // 20 ms: the 25 ms bucket
        let mut b = Buckets::default();
        b.add(&format::Histogram::from_hdr(&h));
        assert_eq!(b.counts[0], 4);
        let i = BOUNDS.iter().position(|&x| x == 0.025).unwrap();
        assert_eq!(b.counts[i], 1);
        assert_eq!(b.counts.iter().sum::<u64>(), 5);
    }
}
