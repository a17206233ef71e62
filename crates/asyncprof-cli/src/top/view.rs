//! What each view of `asyncprof top` shows, as rows of text with sort keys: stalls, spawn
//! locations, queues and workers, at one moment of the run, with rates over the interval
//! since the snapshot before it.

use std::cell::RefCell;
use std::collections::HashMap;

use asyncprof_format::{Frame, Histogram, Snapshot, StallKind, StallRecord};
use asyncprof_report::dur;

/// The views, in the order of their keys (1 to 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tab {
    Stalls,
    Tasks,
    Queues,
    Workers,
}

impl Tab {
    pub(crate) const ALL: [Tab; 4] = [Tab::Stalls, Tab::Tasks, Tab::Queues, Tab::Workers];

    pub(crate) fn title(self) -> &'static str {
        match self {
            Tab::Stalls => "Stalls",
            Tab::Tasks => "Spawn locations",
            Tab::Queues => "Queues",
            Tab::Workers => "Workers",
        }
    }

    /// The column that says where (file:line, a queue's name): the last to be narrowed.
    pub(crate) fn location_column(self) -> usize {
        match self {
            Tab::Stalls => 4,
            Tab::Tasks | Tab::Queues => 0,
            Tab::Workers => 1,
        }
    }

    /// Column headers, and the column rows are sorted by at first.
    pub(crate) fn columns(self) -> (&'static [&'static str], usize) {
        match self {
            Tab::Stalls => (
                &[
                    "AT", "LASTED", "STATE", "KIND", "CULPRIT", "FUNCTION", "CALL", "WORKER",
                ],
                0,
            ),
            Tab::Tasks => (
                &[
                    "SPAWNED AT",
                    "LIVE",
                    "POLLS/S",
                    "BUSY",
                    "POLL P50",
                    "POLL P99",
                    "SCHED P50",
                    "SCHED P99",
                    "MAX POLL",
                ],
                2,
            ),
            Tab::Queues => (
                &[
                    "QUEUE", "KIND", "DEPTH", "MAX", "CAP", "IN/S", "OUT/S", "SEND P99",
                    "RECV P99", "FULL",
                ],
                2,
            ),
            Tab::Workers => (
                &[
                    "WORKER", "THREAD", "RUNTIME", "BUSY", "PARKED", "POLLS/S", "PARKS/S",
                ],
                3,
            ),
        }
    }
}

/// A cell's sort key: numbers sort largest first, text in order.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub(crate) enum Key {
    Num(f64),
    Text(String),
}

/// One row of a view.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) cells: Vec<String>,
    pub(crate) keys: Vec<Key>,
    /// The stall's id, on the stalls view.
    pub(crate) stall: Option<u64>,
    /// The row should stand out (an ongoing stall).
    pub(crate) hot: bool,
}

impl Row {
    fn new(cells: Vec<(String, Key)>) -> Row {
        let (cells, keys) = cells.into_iter().unzip();
        Row {
            cells,
            keys,
            stall: None,
            hot: false,
        }
    }

    /// True when `filter` (lower case) is in one of the cells.
    pub(crate) fn matches(&self, filter: &str) -> bool {
        filter.is_empty() || self.cells.iter().any(|c| c.to_lowercase().contains(filter))
    }
}

/// Sort rows by `column` (numbers largest first, text in order), reversed when asked.
pub(crate) fn sort(rows: &mut [Row], column: usize, reverse: bool) {
    rows.sort_by(|a, b| {
        let order = match (a.keys.get(column), b.keys.get(column)) {
            (Some(Key::Num(x)), Some(Key::Num(y))) => y.total_cmp(x),
            (Some(Key::Text(x)), Some(Key::Text(y))) => x.cmp(y),
            _ => std::cmp::Ordering::Equal,
        };
        if reverse {
            order.reverse()
        } else {
            order
        }
    });
}

fn num(text: String, value: f64) -> (String, Key) {
    (text, Key::Num(value))
}

fn text(text: String) -> (String, Key) {
    let key = Key::Text(text.clone());
    (text, key)
}

fn ns(value: u64) -> (String, Key) {
    num(dur(value), value as f64)
}

fn percent(share: f64) -> (String, Key) {
    num(format!("{:.0}%", share * 100.0), share)
}

fn rate(value: f64) -> (String, Key) {
    let shown = if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    };
    num(shown, value)
}

/// A field's name as the run file spells it (`hooks`, `multi-thread`).
pub(crate) fn kebab(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A moment of the run and the one before it, for rates and windowed quantiles.
pub(crate) struct Moment<'a> {
    pub(crate) now: &'a Snapshot,
    pub(crate) before: Option<&'a Snapshot>,
}

impl Moment<'_> {
    /// Seconds between the two snapshots (the whole run when there is no earlier one).
    fn seconds(&self) -> f64 {
        let before = self.before.map_or(0, |b| b.elapsed_ns);
        (self.now.elapsed_ns.saturating_sub(before) as f64 / 1e9).max(1e-3)
    }

    /// The entry of the earlier snapshot's `list` that is `same` as one of now's.
    fn earlier<T>(
        &self,
        list: impl Fn(&Snapshot) -> &[T],
        same: impl Fn(&T) -> bool,
    ) -> Option<&T> {
        self.before.and_then(|b| list(b).iter().find(|o| same(o)))
    }

    fn per_second(&self, now: u64, before: Option<u64>) -> f64 {
        now.saturating_sub(before.unwrap_or(0)) as f64 / self.seconds()
    }
}

/// p50 and p99 of the values recorded since `before` (all of them without it).
fn window_quantiles(now: &Histogram, before: Option<&Histogram>) -> (u64, u64) {
    let window = before.map_or_else(|| now.clone(), |b| now.since(b));
    if window.count() == 0 {
        return (0, 0);
    }
    let h = window.to_hdr();
    (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
}

/// A source path as shown: relative to the current directory when it is under it.
pub(crate) fn path(file: &str) -> &str {
    static CWD: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let cwd = CWD.get_or_init(|| {
        std::env::current_dir()
            .map(|d| format!("{}/", d.display()))
            .unwrap_or_default()
    });
    match file.strip_prefix(cwd.as_str()) {
        Some(rest) if !cwd.is_empty() => rest,
        _ => file,
    }
}

/// A function's name as shown: its last two path segments, the compiler's names of the
/// closures and async blocks inside it said once (`scraper::bad (closure)`).
pub(crate) fn function_name(name: &str) -> String {
    let mut name = name;
    let mut anonymous = false;
    while let Some((outer, last)) = name.rsplit_once("::") {
        if !last.starts_with('{') {
            break;
        }
        name = outer;
        anonymous = true;
    }
    let short = match name.rmatch_indices("::").nth(1) {
        Some((at, _)) if !name[..at].contains('<') => &name[at + 2..],
        _ => name,
    };
    if anonymous {
        format!("{short} (closure)")
    } else {
        short.to_string()
    }
}

/// A frame's function as shown: an anonymous body (`{closure#0}`, `{async_fn#0}`) named
/// after the `fn` whose body holds its line when the source can be read (as reports name
/// them), else [`function_name`]'s short name. Names are remembered per frame (up to 4096).
pub(crate) fn frame_function(frame: &Frame) -> String {
    thread_local! {
        static NAMES: RefCell<HashMap<Frame, String>> = RefCell::new(HashMap::new());
    }
    NAMES.with_borrow_mut(|names| {
        if let Some(name) = names.get(frame) {
            return name.clone();
        }
        let named = match (&frame.file, frame.line) {
            (Some(file), Some(line)) => asyncprof_report::anonymous_name(
                &frame.function,
                file,
                line,
                &crate::report::source,
            ),
            _ => None,
        };
        let name = named.unwrap_or_else(|| function_name(&frame.function));
        if names.len() < 4096 {
            names.insert(frame.clone(), name.clone());
        }
        name
    })
}

/// `file:line` of a stall's culprit, or what is known instead.
pub(crate) fn culprit(s: &StallRecord) -> String {
    match &s.culprit {
        Some(f) => match (&f.file, f.line) {
            (Some(file), Some(line)) => format!("{}:{line}", path(file)),
            (Some(file), None) => path(file).to_string(),
            _ => "(no line)".into(),
        },
        None => match &s.task_location {
            Some(l) => format!("(task spawned at {}:{})", path(&l.file), l.line),
            None => "(no stack)".into(),
        },
    }
}

/// What a stall is: its finding kind once it returned; while it lasts, where the thread is.
pub(crate) fn stall_kind(s: &StallRecord) -> String {
    if s.ongoing {
        match (&s.class, &s.syscall) {
            (asyncprof_format::StallClass::Blocking, Some(call)) => format!("stuck in {call}"),
            (asyncprof_format::StallClass::CpuBound, _) => "stuck on CPU".into(),
            _ => "stuck".into(),
        }
    } else {
        StallKind::label(s).to_string()
    }
}

/// The stalls that had begun by `upto_ns` (every one without it), as rows.
pub(crate) fn stall_rows<'a>(
    stalls: impl Iterator<Item = &'a StallRecord>,
    upto_ns: Option<u64>,
) -> Vec<Row> {
    stalls
        .filter(|s| upto_ns.is_none_or(|t| s.start_ns <= t))
        .map(|s| {
            let function = s.culprit.as_ref().map_or(String::new(), frame_function);
            let call = match (&s.primitive, &s.syscall) {
                (Some(p), Some(call)) => format!("{} ({call})", p.function),
                (Some(p), None) => p.function.clone(),
                (None, Some(call)) => format!("({call})"),
                (None, None) => String::new(),
            };
            let mut row = Row::new(vec![
                num(
                    format!("{:.3}s", s.start_ns as f64 / 1e9),
                    s.start_ns as f64,
                ),
                ns(s.duration_ns),
                text(if s.ongoing { "running" } else { "returned" }.into()),
                text(stall_kind(s)),
                text(culprit(s)),
                text(function),
                text(call),
                text(format!("{} {}", s.thread_name, s.tid)),
            ]);
            row.stall = Some(s.id);
            row.hot = s.ongoing;
            row
        })
        .collect()
}

/// Spawn locations, with polls per second and windowed quantiles.
pub(crate) fn task_rows(m: &Moment<'_>) -> Vec<Row> {
    m.now
        .locations
        .iter()
        // Where no task was spawned or polled, only `spawn_blocking` jobs (and tokio's own
        // worker threads) ended: nothing to show here.
        .filter(|l| l.tasks_spawned > 0 || l.polls > 0)
        .map(|l| {
            let before = m.earlier(|b| &b.locations, |o| o.location == l.location);
            let (poll50, poll99) = window_quantiles(&l.poll_ns, before.map(|b| &b.poll_ns));
            let (sched50, sched99) =
                window_quantiles(&l.scheduled_ns, before.map(|b| &b.scheduled_ns));
            let busy = l.busy_ns.saturating_sub(before.map_or(0, |b| b.busy_ns)) as f64
                / 1e9
                / m.seconds();
            Row::new(vec![
                text(format!("{}:{}", path(&l.location.file), l.location.line)),
                num(
                    l.tasks_spawned
                        .saturating_sub(l.tasks_completed)
                        .to_string(),
                    l.tasks_spawned.saturating_sub(l.tasks_completed) as f64,
                ),
                rate(m.per_second(l.polls, before.map(|b| b.polls))),
                percent(busy),
                ns(poll50),
                ns(poll99),
                ns(sched50),
                ns(sched99),
                ns(l.max_poll_ns),
            ])
        })
        .collect()
}

/// Queues: depth now, rates and windowed waits.
pub(crate) fn queue_rows(m: &Moment<'_>) -> Vec<Row> {
    m.now
        .queues
        .iter()
        .map(|q| {
            let before = m.earlier(|b| &b.queues, |o| o.id == q.id);
            let (_, send99) = window_quantiles(&q.send_wait_ns, before.map(|b| &b.send_wait_ns));
            let (_, recv99) = window_quantiles(&q.recv_wait_ns, before.map(|b| &b.recv_wait_ns));
            let samples = q.samples.saturating_sub(before.map_or(0, |b| b.samples));
            let full = q
                .full_samples
                .saturating_sub(before.map_or(0, |b| b.full_samples));
            let kind = kebab(&q.kind);
            Row::new(vec![
                text(q.name.clone()),
                text(kind),
                num(q.depth.to_string(), q.depth as f64),
                num(q.max_depth.to_string(), q.max_depth as f64),
                num(
                    q.capacity.map_or("-".into(), |c| c.to_string()),
                    q.capacity.map_or(f64::INFINITY, |c| c as f64),
                ),
                rate(m.per_second(q.enqueued, before.map(|b| b.enqueued))),
                rate(m.per_second(q.dequeued, before.map(|b| b.dequeued))),
                ns(send99),
                ns(recv99),
                percent(if samples == 0 {
                    0.0
                } else {
                    full as f64 / samples as f64
                }),
            ])
        })
        .collect()
}

/// Workers: share of the interval busy in polls and parked.
pub(crate) fn worker_rows(m: &Moment<'_>) -> Vec<Row> {
    m.now
        .workers
        .iter()
        .map(|w| {
            let before = m.earlier(|b| &b.workers, |o| o.index == w.index);
            let span = m.seconds() * 1e9;
            let busy = w.busy_ns.saturating_sub(before.map_or(0, |b| b.busy_ns)) as f64 / span;
            let parked = w
                .parked_ns
                .saturating_sub(before.map_or(0, |b| b.parked_ns)) as f64
                / span;
            let runtime = m
                .now
                .runtimes
                .iter()
                .find(|r| r.id == w.runtime)
                .map_or_else(|| "-".to_string(), |r| r.label());
            Row::new(vec![
                num(w.index.to_string(), -f64::from(w.index)),
                text(format!("{} {}", w.thread_name, w.tid)),
                text(runtime),
                percent(busy.min(1.0)),
                percent(parked.min(1.0)),
                rate(m.per_second(w.polls, before.map(|b| b.polls))),
                rate(m.per_second(w.parks, before.map(|b| b.parks))),
            ])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use asyncprof_format::{Frame, LocationStats, SourceLocation, StallClass};

    fn location(line: u32, polls: u64, busy_ms: u64) -> LocationStats {
        let mut l = LocationStats::default();
        l.location = SourceLocation::new("src/main.rs", line, 5);
        l.polls = polls;
        l.busy_ns = busy_ms * 1_000_000;
        l
    }

    #[test]
    fn rates_are_over_the_interval_and_sorting_orders_them() {
        let mut before = Snapshot::default();
        before.elapsed_ns = 1_000_000_000;
        before.locations = vec![location(10, 1_000, 100), location(20, 50, 0)];
        let mut now = Snapshot::default();
        now.elapsed_ns = 3_000_000_000;
        now.locations = vec![location(10, 1_200, 300), location(20, 850, 1_000)];
        let m = Moment {
            now: &now,
            before: Some(&before),
        };
        let mut rows = task_rows(&m);
        // Polls per second over the 2 s between the snapshots: 100 and 400.
        assert_eq!(rows[0].cells[2], "100");
        assert_eq!(rows[1].cells[2], "400");
        assert_eq!(rows[0].cells[3], "10%");
        assert_eq!(rows[1].cells[3], "50%");
        let (_, default) = Tab::Tasks.columns();
        sort(&mut rows, default, false);
        assert_eq!(rows[0].cells[0], "src/main.rs:20");
        sort(&mut rows, default, true);
        assert_eq!(rows[0].cells[0], "src/main.rs:10");
        sort(&mut rows, 0, false);
        assert_eq!(rows[0].cells[0], "src/main.rs:10");
        assert!(rows[1].matches("main.rs:20"));
        assert!(!rows[1].matches("lib.rs"));
    }

    #[test]
    fn function_names_keep_their_last_segments_and_say_closure_once() {
        assert_eq!(
            function_name("asyncprof_pipelines::pipelines::scraper::bad::{{closure}}::{{closure}}"),
            "scraper::bad (closure)"
        );
        assert_eq!(
            function_name("app::db::query::{async_fn#0}"),
            "db::query (closure)"
        );
        assert_eq!(function_name("main"), "main");
        assert_eq!(function_name("a::b"), "a::b");
        assert_eq!(
            function_name("<core::pin::Pin<P> as core::future::Future>::poll"),
            "<core::pin::Pin<P> as core::future::Future>::poll"
        );
    }

    #[test]
    fn stalls_show_their_line_and_what_they_were_doing() {
        let mut s = StallRecord::default();
        s.id = 4;
        s.start_ns = 2_500_000_000;
        s.duration_ns = 45_000_000;
        s.class = StallClass::Blocking;
        s.syscall = Some("nanosleep".into());
        s.primitive = Some(Frame::new("std::thread::sleep", None, None));
        s.culprit = Some(Frame::new(
            "scraper::fetch",
            Some("src/scraper.rs".into()),
            Some(88),
        ));
        let done = s.clone();
        let mut running = s;
        running.id = 5;
        running.ongoing = true;
        running.start_ns = 4_000_000_000;
        let all = [done, running];
        let rows = stall_rows(all.iter(), None);
        assert_eq!(rows[0].cells[1], "45.0ms");
        assert_eq!(rows[0].cells[3], "blocking-call");
        assert_eq!(rows[0].cells[4], "src/scraper.rs:88");
        assert_eq!(rows[0].cells[6], "std::thread::sleep (nanosleep)");
        assert_eq!(rows[1].cells[3], "stuck in nanosleep");
        assert!(rows[1].hot && !rows[0].hot);
        assert_eq!(rows[0].cells[5], "scraper::fetch");
        // A bare anonymous name, at a line of this file: named after its fn.
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/src/top/view.rs");
        let here = Frame::new("{closure#0}", Some(file.into()), Some(line!()));
        assert_eq!(
            frame_function(&here),
            "stalls_show_their_line_and_what_they_were_doing (closure)"
        );
        // Stepping back in time: only the stalls that had begun.
        assert_eq!(stall_rows(all.iter(), Some(3_000_000_000)).len(), 1);
    }
}
