//! The subscriber layer: tokio's task spans as polls (with the `tokio-tracing` feature), and
//! user spans as pipeline stages (always).

use std::sync::atomic::{
    fence, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::Arc;

use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id};
use tracing_core::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::clock;
use crate::recorder::Recorder;
use crate::tables::LocKey;
use crate::Guard;

/// A `tracing_subscriber` layer that records into the running recording.
///
/// It composes with other layers on one registry (`fmt`, `EnvFilter`, console-subscriber's
/// `ConsoleLayer`). It never filters: what other layers see is unchanged.
///
/// ```
/// use tracing_subscriber::prelude::*;
///
/// # fn main() -> Result<(), asyncprof::Error> {
/// # let path = std::env::temp_dir().join(format!("asyncprof-doc-layer-{}", std::process::id()));
/// let guard = asyncprof::Profiler::builder().out(&path).start()?;
/// let subscriber = tracing_subscriber::registry().with(guard.layer());
/// tracing::subscriber::with_default(subscriber, || {
///     let _stage = tracing::info_span!("parse").entered();
/// });
/// # drop(guard);
/// # std::fs::remove_file(&path).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct TaskLayer {
    rec: &'static Recorder,
    open: Arc<OpenTaskSpans>,
}

impl Guard {
    /// The subscriber layer for this recording (the layer tier, and user spans as stages).
    pub fn layer(&self) -> TaskLayer {
        TaskLayer {
            rec: self.recorder,
            open: Arc::new(OpenTaskSpans::new()),
        }
    }
}

/// Entries of [`OpenTaskSpans`]: room for this many open task spans.
const OPEN_SPANS: usize = 1 << 14;
/// The entries one span may use: two, in one cache line.
const WAYS: usize = 2;

/// The task spans open now, span id to tokio task id (and tokio's internal spans, to
/// [`NOT_A_TASK`]), so that a poll's enter and exit and a wake do not look the span up in the
/// registry (each such lookup takes and drops a reference count on the span's shared data,
/// takes its extensions' lock and searches a map).
///
/// Fixed size: a span that finds both its entries taken is not added; a task span is then found
/// through its extension (which every task span keeps), as is one whose entry is being written
/// while it is looked up. An entry is added when the span is created and removed when it
/// closes, before its id can be reused.
///
/// Each entry is a sequence lock: a writer makes the sequence odd, writes, makes it even
/// again; a reader that sees the same even sequence before and after its reads has a
/// consistent entry, and otherwise falls back to the extensions. Readers never wait; a writer
/// (a span's creation or close) waits only for another writer of the same entry, which holds
/// it for a load and at most two stores.
///
/// Hand-written for the hot path: with the registry's own lookup the layer tier cost more than
/// twice as much per poll (`cargo bench -p asyncprof --bench poll_overhead --features
/// tokio-tracing`; the README's Overhead section has the figures).
struct OpenTaskSpans {
    groups: Box<[Ways]>,
}

/// What the table maps a span that is no task's to: tokio's task ids start at 1.
const NOT_A_TASK: u64 = 0;

/// The entries a span may use, in one cache line.
#[derive(Default)]
#[repr(align(64))]
struct Ways([OpenSpan; WAYS]);

#[derive(Default)]
struct OpenSpan {
    seq: AtomicU64,
    span: AtomicU64,
    task: AtomicU64,
}

impl std::fmt::Debug for OpenTaskSpans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenTaskSpans")
            .field("entries", &(self.groups.len() * WAYS))
            .finish()
    }
}

impl OpenSpan {
    /// Take the entry for writing; `None` when another writer has it.
    fn try_lock(&self) -> Option<u64> {
        let seq = self.seq.load(Relaxed);
        if seq & 1 == 1 {
            return None;
        }
        self.seq
            .compare_exchange(seq, seq + 1, Acquire, Relaxed)
            .ok()?;
        // Orders the odd sequence before the writes, for a reader that sees a write and then
        // reads the sequence again.
        fence(Release);
        Some(seq)
    }

    /// Take the entry for writing, waiting for another writer to finish.
    fn lock(&self) -> u64 {
        let mut spins = 0u32;
        loop {
            if let Some(seq) = self.try_lock() {
                return seq;
            }
            spins += 1;
            if spins.is_multiple_of(64) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    fn unlock(&self, seq: u64) {
        self.seq.store(seq + 2, Release);
    }
}

impl OpenTaskSpans {
    fn new() -> Self {
        OpenTaskSpans {
            groups: (0..OPEN_SPANS / WAYS).map(|_| Ways::default()).collect(),
        }
    }

    /// The entries span `span` may use.
    #[inline(always)]
    fn ways(&self, span: u64) -> &[OpenSpan] {
        let bits = (OPEN_SPANS / WAYS).trailing_zeros();
        let h = span.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits);
        &self.groups[h as usize].0
    }

    /// Add open task span `span` of task `task`; false when its entries are all taken.
    fn insert(&self, span: u64, task: u64) -> bool {
        if span == 0 {
            return false;
        }
        for e in self.ways(span) {
            if e.span.load(Relaxed) != 0 {
                continue;
            }
            let Some(seq) = e.try_lock() else { continue };
            let free = e.span.load(Relaxed) == 0;
            if free {
                e.span.store(span, Relaxed);
                e.task.store(task, Relaxed);
            }
            e.unlock(seq);
            if free {
                return true;
            }
        }
        false
    }

    /// Hot path: the task of open task span `span`, when the table holds it.
    #[inline]
    fn find(&self, span: u64) -> Option<u64> {
        for e in self.ways(span) {
            let seq = e.seq.load(Acquire);
            if e.span.load(Relaxed) != span {
                continue;
            }
            let task = e.task.load(Relaxed);
            fence(Acquire);
            return (seq & 1 == 0 && e.seq.load(Relaxed) == seq).then_some(task);
        }
        None
    }

    /// Remove span `span` (it closed); its task when the table held it.
    fn remove(&self, span: u64) -> Option<u64> {
        if span == 0 {
            return None;
        }
        for e in self.ways(span) {
            if e.span.load(Relaxed) != span {
                continue;
            }
            let seq = e.lock();
            let task = (e.span.load(Relaxed) == span).then(|| e.task.load(Relaxed));
            if task.is_some() {
                e.span.store(0, Relaxed);
            }
            e.unlock(seq);
            return task;
        }
        None
    }
}

/// What asyncprof keeps in a tokio task span's extensions.
struct TaskSpan {
    id: u64,
}

/// What asyncprof keeps in a user span's extensions.
struct StageSpan {
    created_ns: u64,
    entered_ns: AtomicU64,
    busy_ns: AtomicU64,
}

#[derive(Default)]
struct SpawnFields {
    id: u64,
    name: Option<String>,
    file: Option<&'static str>,
    line: u32,
    col: u32,
}

impl Visit for SpawnFields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "task.id" => self.id = value,
            "loc.line" => self.line = value as u32,
            "loc.col" => self.col = value as u32,
            _ => {}
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_u64(field, value.max(0) as u64)
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "loc.file" => self.file = Some(intern_file(value)),
            "task.name" => self.name = Some(value.to_string()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "task.name" {
            self.name = Some(format!("{value:?}"));
        }
    }
}

#[derive(Default)]
struct WakeFields {
    op_wakes: bool,
    span_id: u64,
}

impl Visit for WakeFields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "task.id" {
            self.span_id = value;
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "op" {
            self.op_wakes = value == "waker.wake" || value == "waker.wake_by_ref";
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "op" {
            let s = format!("{value:?}");
            self.op_wakes = s.contains("waker.wake");
        }
    }
}

fn is_task_span(meta: &tracing_core::Metadata<'_>) -> bool {
    meta.name() == "runtime.spawn" && meta.target() == "tokio::task"
}

/// Spans of tokio's own internals and of asyncprof are not stages.
fn is_internal(target: &str) -> bool {
    // By crate, not by prefix: `tokio_postgres` or `asyncprof_pipelines` spans are a
    // program's stages.
    let of = |krate: &str| {
        target
            .strip_prefix(krate)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    };
    of("tokio") || of("asyncprof") || target.starts_with("runtime.") || of("runtime")
}

impl<S> tracing_subscriber::Layer<S> for TaskLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    /// Hot path (per span created): a task span starts its task (see
    /// `Recorder::task_spawned`); a user span becomes a stage. The one allocation a span may
    /// cost happens here.
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        let task = is_task_span(meta);
        // tokio's resource and operation spans (entered on every poll of a timer, a lock, a
        // channel operation), and its task spans when the hooks time the polls: nothing to
        // do, and found in the table, no lookup either.
        if (!task && is_internal(meta.target())) || (task && self.rec.hooks_installed.load(Relaxed))
        {
            self.open.insert(id.into_u64(), NOT_A_TASK);
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        if task {
            let mut f = SpawnFields::default();
            attrs.record(&mut f);
            if f.id == 0 {
                return;
            }
            self.rec.note_tier(asyncprof_format::Tier::Layer);
            self.rec.sees_wakes.store(true, Relaxed);
            // The layer does not get tokio's `&'static Location`: the file name is interned.
            self.rec.task_spawned(
                f.id,
                LocKey {
                    file: f.file.unwrap_or_default(),
                    line: f.line,
                    col: f.col,
                },
                f.name.as_deref(),
            );
            // The extension stays the truth; the table spares the per-poll lookups of it
            // (a lookup that races with a write to its entry falls back to it).
            span.extensions_mut().insert(TaskSpan { id: f.id });
            self.open.insert(id.into_u64(), f.id);
        } else {
            span.extensions_mut().insert(StageSpan {
                created_ns: clock::exact_ns(),
                entered_ns: AtomicU64::new(0),
                busy_ns: AtomicU64::new(0),
            });
        }
    }

    /// Hot path (per span enter): a task span's enter is a poll's start (see
    /// `Recorder::poll_start`); a stage's, the start of its busy time. Open task spans are
    /// found in a fixed table without touching the registry.
    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(task) = self.open.find(id.into_u64()) {
            if task != NOT_A_TASK {
                self.rec.poll_start::<true>(task, None);
            }
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let ext = span.extensions();
        if let Some(t) = ext.get::<TaskSpan>() {
            self.rec.poll_start::<true>(t.id, None);
        } else if let Some(s) = ext.get::<StageSpan>() {
            s.entered_ns.store(clock::exact_ns(), Relaxed);
        }
    }

    /// Hot path (per span exit): a task span's exit ends its poll (see
    /// `Recorder::poll_end`); a stage's adds to its busy time.
    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(task) = self.open.find(id.into_u64()) {
            if task != NOT_A_TASK {
                self.rec.poll_end();
            }
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let ext = span.extensions();
        if ext.get::<TaskSpan>().is_some() {
            self.rec.poll_end();
        } else if let Some(s) = ext.get::<StageSpan>() {
            let entered = s.entered_ns.swap(0, Relaxed);
            if entered != 0 {
                s.busy_ns
                    .fetch_add(clock::exact_ns().saturating_sub(entered), Relaxed);
            }
        }
    }

    /// Hot path (per event): tokio's waker events wake a task (see `Recorder::task_woken`);
    /// every other event is left at the first comparison of its target.
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != "tokio::task::waker" {
            return;
        }
        let mut f = WakeFields::default();
        event.record(&mut f);
        if !f.op_wakes || f.span_id == 0 {
            return;
        }
        if let Some(task) = self.open.find(f.span_id) {
            if task != NOT_A_TASK {
                self.rec.task_woken(task);
            }
            return;
        }
        let Some(span) = ctx.span(&Id::from_u64(f.span_id)) else {
            return;
        };
        let id = span.extensions().get::<TaskSpan>().map(|t| t.id);
        if let Some(id) = id {
            self.rec.task_woken(id);
        }
    }

    /// Hot path (per span closed): a task span's close ends its task (see
    /// `Recorder::task_closed_by_layer`); a stage's records its latency.
    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(task) = self.open.remove(id.into_u64()) {
            if task != NOT_A_TASK {
                self.rec.task_closed_by_layer(task);
            }
            return;
        }
        let Some(span) = ctx.span(&id) else { return };
        let ext = span.extensions();
        if let Some(t) = ext.get::<TaskSpan>() {
            self.rec.task_closed_by_layer(t.id);
        } else if let Some(s) = ext.get::<StageSpan>() {
            let duration = clock::exact_ns().saturating_sub(s.created_ns);
            self.rec
                .stages
                .record(span.metadata(), duration, s.busy_ns.load(Relaxed));
        }
    }
}

/// Spawn-location file names are interned for the life of the process: there are as many as
/// there are `spawn` call sites, a few hundred at most, and each is copied once. Each thread
/// remembers the last names it interned, so a spawn usually takes no lock.
fn intern_file(file: &str) -> &'static str {
    use std::cell::Cell;
    const RECENT: usize = 4;
    thread_local! {
        static RECENT_FILES: [Cell<&'static str>; RECENT] = const { [const { Cell::new("") }; RECENT] };
    }
    let recent = RECENT_FILES.try_with(|r| {
        r.iter()
            .map(Cell::get)
            .find(|f| !f.is_empty() && *f == file)
    });
    if let Ok(Some(f)) = recent {
        return f;
    }
    let interned = intern_file_locked(file);
    let _ = RECENT_FILES.try_with(|r| {
        // Newest first.
        for i in (1..RECENT).rev() {
            r[i].set(r[i - 1].get());
        }
        r[0].set(interned);
    });
    interned
}

fn intern_file_locked(file: &str) -> &'static str {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static FILES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut files = crate::hist::lock(&FILES);
    let set = files.get_or_insert_with(HashSet::new);
    if let Some(f) = set.get(file) {
        return f;
    }
    if set.len() >= 4096 {
        return "<other files>";
    }
    let leaked: &'static str = Box::leak(file.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Span ids that share one set of entries, `n` of them.
    fn colliding(table: &OpenTaskSpans, n: usize) -> Vec<u64> {
        let first = table.ways(1).as_ptr();
        (1..)
            .filter(|&s| std::ptr::eq(table.ways(s).as_ptr(), first))
            .take(n)
            .collect()
    }

    #[test]
    fn only_tokio_and_asyncprof_spans_are_internal_not_crates_named_like_them() {
        for t in [
            "tokio",
            "tokio::task",
            "runtime::resource",
            "runtime.spawn",
            "asyncprof",
        ] {
            assert!(is_internal(t), "{t}");
        }
        for t in [
            "asyncprof_pipelines::store",
            "tokio_postgres::query",
            "runtimes",
            "app",
        ] {
            assert!(!is_internal(t), "{t}");
        }
    }

    #[test]
    fn file_names_are_interned_once() {
        let a = intern_file(&String::from("src/interned_a.rs"));
        let b = intern_file(&String::from("src/interned_b.rs"));
        assert_eq!((a, b), ("src/interned_a.rs", "src/interned_b.rs"));
        // The same name, from another string, from this thread's recent names and from another
        // thread (the shared set): the same interned copy.
        assert!(std::ptr::eq(
            a,
            intern_file(&String::from("src/interned_a.rs"))
        ));
        let other = std::thread::spawn(|| {
            intern_file(&String::from("src/interned_a.rs")) as *const str as *const u8 as usize
        })
        .join()
        .unwrap();
        assert_eq!(other, a.as_ptr() as usize);
    }

    #[test]
    fn open_spans_are_found_until_they_close() {
        let t = OpenTaskSpans::new();
        assert!(t.insert(7, 70));
        assert!(t.insert(8, 80));
        assert_eq!(t.find(7), Some(70));
        assert_eq!(t.find(8), Some(80));
        assert_eq!(t.find(9), None);
        assert_eq!(t.remove(7), Some(70));
        assert_eq!(t.find(7), None);
        assert_eq!(t.remove(7), None);
        assert_eq!(t.find(8), Some(80));
        assert!(!t.insert(0, 1), "span id 0 is the empty entry");
    }

    #[test]
    fn a_span_whose_entries_are_taken_is_not_added_and_its_neighbours_stay() {
        let t = OpenTaskSpans::new();
        let ids = colliding(&t, WAYS + 1);
        for &s in &ids[..WAYS] {
            assert!(t.insert(s, s * 10));
        }
        assert!(!t.insert(ids[WAYS], 1), "all its entries are taken");
        assert_eq!(t.find(ids[WAYS]), None);
        for &s in &ids[..WAYS] {
            assert_eq!(t.find(s), Some(s * 10));
        }
        // A closed span frees its entry for the next one.
        assert_eq!(t.remove(ids[1]), Some(ids[1] * 10));
        assert!(t.insert(ids[WAYS], ids[WAYS] * 10));
        assert_eq!(t.find(ids[WAYS]), Some(ids[WAYS] * 10));
    }

    /// One thread keeps closing a span and opening another in the same entry while this one
    /// looks both up: a lookup finds a span's own task or nothing, never the other's.
    #[test]
    fn a_lookup_racing_with_a_close_and_an_open_never_returns_another_spans_task() {
        let t = Arc::new(OpenTaskSpans::new());
        let ids = colliding(&t, 2);
        let (a, b) = (ids[0], ids[1]);
        assert!(t.insert(a, a * 10));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swaps = Arc::new(AtomicU64::new(0));
        let writer = {
            let (t, stop, swaps) = (t.clone(), stop.clone(), swaps.clone());
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    for (from, to) in [(a, b), (b, a)] {
                        t.remove(from);
                        t.insert(to, to * 10);
                    }
                    // Every 16th swap holds a span in place for a moment: swapping without
                    // pause, on a busy machine, every lookup can land on a swap and find
                    // nothing, which tests nothing.
                    if swaps.fetch_add(1, Relaxed) % 16 == 0 {
                        for _ in 0..500 {
                            std::hint::spin_loop();
                        }
                    }
                }
            })
        };
        let (mut found, mut looks) = (0u64, 0u64);
        // Look while the writer runs, at least 1,000,000 of its swaps.
        while swaps.load(Relaxed) < 1_000_000 || looks < 1_000_000 {
            let s = if looks.is_multiple_of(2) { a } else { b };
            if let Some(task) = t.find(s) {
                assert_eq!(task, s * 10, "span {s} found with the other span's task");
                found += 1;
            }
            looks += 1;
        }
        stop.store(true, Relaxed);
        writer.join().unwrap();
        assert!(found > 0, "{looks} lookups found nothing");
    }
}
