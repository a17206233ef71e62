//! The subscriber layer: tokio's task spans as polls (with the `tokio-tracing` feature), and
//! user spans as pipeline stages (always).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tracing_core::field::{Field, Visit};
use tracing_core::span::{Attributes, Id};
use tracing_core::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::clock;
use crate::recorder::{source, Recorder};
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
}

impl Guard {
    /// The subscriber layer for this recording (the layer tier, and user spans as stages).
    pub fn layer(&self) -> TaskLayer {
        TaskLayer { rec: self.recorder }
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
    file: Option<String>,
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
            "loc.file" => self.file = Some(value.to_string()),
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
    target.starts_with("tokio") || target.starts_with("runtime") || target.starts_with("asyncprof")
}

impl<S> tracing_subscriber::Layer<S> for TaskLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        let Some(span) = ctx.span(id) else { return };
        if is_task_span(meta) {
            if self.rec.hooks_installed.load(Relaxed) {
                return;
            }
            let mut f = SpawnFields::default();
            attrs.record(&mut f);
            if f.id == 0 {
                return;
            }
            self.rec.note_source(source::LAYER);
            self.rec.schedule_source.store(1, Relaxed);
            // The file string is copied: the layer does not get tokio's `&'static Location`.
            let file = f.file.unwrap_or_default();
            self.rec.task_spawned(
                f.id,
                LocKey {
                    file: leak_file(&file),
                    line: f.line,
                    col: f.col,
                },
                f.name.as_deref(),
            );
            span.extensions_mut().insert(TaskSpan { id: f.id });
        } else if !is_internal(meta.target()) {
            span.extensions_mut().insert(StageSpan {
                created_ns: clock::exact_ns(),
                entered_ns: AtomicU64::new(0),
                busy_ns: AtomicU64::new(0),
            });
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let ext = span.extensions();
        if let Some(t) = ext.get::<TaskSpan>() {
            self.rec.poll_start::<true>(t.id, None);
        } else if let Some(s) = ext.get::<StageSpan>() {
            s.entered_ns.store(clock::exact_ns(), Relaxed);
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
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

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != "tokio::task::waker" {
            return;
        }
        let mut f = WakeFields::default();
        event.record(&mut f);
        if !f.op_wakes || f.span_id == 0 {
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

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
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
/// there are `spawn` call sites, a few hundred at most, and each is copied once.
fn leak_file(file: &str) -> &'static str {
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
