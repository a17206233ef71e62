//! The hooks tier: asyncprof's callbacks on a `tokio::runtime::Builder`.
//!
//! tokio keeps one callback per hook, so installing asyncprof's replaces any set before.
//! A service that needs its own hooks passes them in [`Hooks`]; asyncprof calls them
//! after its own bookkeeping (before-poll: before it, so the user's callback is not timed as
//! part of the poll).

use std::fmt;
#[cfg(tokio_unstable)]
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::runtime::Builder;

use crate::recorder::Recorder;
use crate::Guard;

type ThreadFn = Arc<dyn Fn() + Send + Sync>;
#[cfg(tokio_unstable)]
type TaskFn = Arc<dyn Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync>;

/// Your own runtime hooks, kept beside asyncprof's.
///
/// ```
/// # fn main() -> Result<(), asyncprof::Error> {
/// # let dir = std::env::temp_dir().join(format!("asyncprof-doc-hooks-{}", std::process::id()));
/// let guard = asyncprof::Profiler::builder().out(&dir).start()?;
/// let mut builder = tokio::runtime::Builder::new_current_thread();
/// guard.instrument_with(
///     &mut builder,
///     asyncprof::Hooks::new().on_thread_park(|| { /* your park hook */ }),
/// );
/// # drop(guard);
/// # std::fs::remove_file(&dir).ok();
/// # Ok(())
/// # }
/// ```
#[derive(Default, Clone)]
pub struct Hooks {
    thread_start: Option<ThreadFn>,
    thread_stop: Option<ThreadFn>,
    thread_park: Option<ThreadFn>,
    thread_unpark: Option<ThreadFn>,
    #[cfg(tokio_unstable)]
    task_spawn: Option<TaskFn>,
    #[cfg(tokio_unstable)]
    task_terminate: Option<TaskFn>,
    #[cfg(tokio_unstable)]
    before_poll: Option<TaskFn>,
    #[cfg(tokio_unstable)]
    after_poll: Option<TaskFn>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("thread_start", &self.thread_start.is_some())
            .field("thread_stop", &self.thread_stop.is_some())
            .field("thread_park", &self.thread_park.is_some())
            .field("thread_unpark", &self.thread_unpark.is_some())
            .finish_non_exhaustive()
    }
}

macro_rules! thread_hook {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub fn $name(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
            self.$name = Some(Arc::new(f));
            self
        }
    };
}

#[cfg(tokio_unstable)]
macro_rules! task_hook {
    ($(#[$doc:meta])* $method:ident => $field:ident) => {
        $(#[$doc])*
        pub fn $method(
            mut self,
            f: impl Fn(&tokio::runtime::TaskMeta<'_>) + Send + Sync + 'static,
        ) -> Self {
            self.$field = Some(Arc::new(f));
            self
        }
    };
}

impl Hooks {
    /// No hooks of your own.
    pub fn new() -> Self {
        Hooks::default()
    }

    thread_hook!(
        /// Your `on_thread_start`.
        thread_start
    );
    thread_hook!(
        /// Your `on_thread_stop`.
        thread_stop
    );
    thread_hook!(
        /// Your `on_thread_park`.
        thread_park
    );
    thread_hook!(
        /// Your `on_thread_unpark`.
        thread_unpark
    );

    /// Your `on_thread_start` (alias of [`Hooks::thread_start`]).
    pub fn on_thread_start(self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.thread_start(f)
    }

    /// Your `on_thread_park` (alias of [`Hooks::thread_park`]).
    pub fn on_thread_park(self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.thread_park(f)
    }

    #[cfg(tokio_unstable)]
    task_hook!(
        /// Your `on_task_spawn`.
        on_task_spawn => task_spawn
    );
    #[cfg(tokio_unstable)]
    task_hook!(
        /// Your `on_task_terminate`.
        on_task_terminate => task_terminate
    );
    #[cfg(tokio_unstable)]
    task_hook!(
        /// Your `on_before_task_poll`.
        on_before_task_poll => before_poll
    );
    #[cfg(tokio_unstable)]
    task_hook!(
        /// Your `on_after_task_poll`.
        on_after_task_poll => after_poll
    );
}

/// Hot path: tokio's wake-to-poll delay of this poll, when the runtime measures it (the
/// `schedule-latency` feature); `None` otherwise, at no cost.
#[cfg(tokio_unstable)]
#[inline(always)]
#[allow(unused_variables)]
fn schedule_latency(meta: &tokio::runtime::TaskMeta<'_>) -> Option<u64> {
    #[cfg(feature = "schedule-latency")]
    {
        meta.schedule_latency().map(|d| d.as_nanos() as u64)
    }
    #[cfg(not(feature = "schedule-latency"))]
    {
        None
    }
}

/// Hot path: tokio's task id as a number: the same number tokio prints and puts in its task spans.
/// `Id` hashes exactly its `u64`, so a hasher that keeps the written value recovers it.
#[inline(always)]
pub(crate) fn task_id(id: tokio::task::Id) -> u64 {
    hashed_u64(&id)
}

/// The `u64` a tokio id (a task's, a runtime's) hashes as: the number its `Display` prints,
/// with no formatting.
#[inline(always)]
pub(crate) fn hashed_u64<T: std::hash::Hash>(id: &T) -> u64 {
    use std::hash::Hasher;
    struct Keep(u64);
    impl Hasher for Keep {
        #[inline(always)]
        fn finish(&self) -> u64 {
            self.0
        }
        #[inline(always)]
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.0 = (self.0 << 8) | u64::from(b);
            }
        }
        #[inline(always)]
        fn write_u64(&mut self, v: u64) {
            self.0 = v;
        }
    }
    let mut h = Keep(0);
    id.hash(&mut h);
    h.0
}

impl Guard {
    /// Install asyncprof's runtime hooks on `builder` (the hooks tier).
    ///
    /// Built with `--cfg tokio_unstable` this times every poll of every task; without it,
    /// only worker busy and parked periods are recorded (the stable tier). Hooks set on the
    /// builder before are replaced: pass yours through [`Guard::instrument_with`].
    ///
    /// ```
    /// # fn main() -> Result<(), asyncprof::Error> {
    /// # let path = std::env::temp_dir().join(format!("asyncprof-doc-instr-{}", std::process::id()));
    /// let guard = asyncprof::Profiler::builder().out(&path).start()?;
    /// let mut builder = tokio::runtime::Builder::new_multi_thread();
    /// guard.instrument(&mut builder).worker_threads(2);
    /// let rt = builder.build().unwrap();
    /// rt.block_on(async { tokio::spawn(async {}).await.unwrap() });
    /// # drop(rt);
    /// # drop(guard);
    /// # std::fs::remove_file(&path).ok();
    /// # Ok(())
    /// # }
    /// ```
    pub fn instrument<'b>(&self, builder: &'b mut Builder) -> &'b mut Builder {
        self.instrument_with(builder, Hooks::new())
    }

    /// Like [`Guard::instrument`], keeping your own hooks: asyncprof calls them from its own.
    pub fn instrument_with<'b>(&self, builder: &'b mut Builder, user: Hooks) -> &'b mut Builder {
        if !cfg!(tokio_unstable) {
            warn_stable_tier();
        }
        install(self.recorder, builder, user, cfg!(tokio_unstable))
    }

    /// Install only the hooks of the stable tier (park and unpark), as a build without
    /// `--cfg tokio_unstable` gets from [`Guard::instrument`]. asyncprof then sees when each
    /// worker is busy and when it parks, not its polls: a stall is a worker busy past the
    /// threshold without parking, which a long poll and a run of short ones both look like;
    /// its stack tells them apart.
    pub fn instrument_stable<'b>(&self, builder: &'b mut Builder, user: Hooks) -> &'b mut Builder {
        install(self.recorder, builder, user, false)
    }
}

/// Say once per process, on stderr, that a build without `--cfg tokio_unstable` records in
/// the stable tier, what that loses and how to get the hooks tier.
fn warn_stable_tier() {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        eprintln!(
            "asyncprof: built without `--cfg tokio_unstable`, so tokio's task hooks are not \
             available: recording in the stable tier (workers' busy and parked time, stalls with \
             their stacks; no per-task polls, spawn locations or scheduling delays). For the \
             hooks tier, build with RUSTFLAGS=\"--cfg tokio_unstable\" (or `rustflags` in \
             .cargo/config.toml)."
        );
    }
}

pub(crate) fn install<'b>(
    rec: &'static Recorder,
    b: &'b mut Builder,
    user: Hooks,
    task_hooks: bool,
) -> &'b mut Builder {
    let Hooks {
        thread_start,
        thread_stop,
        thread_park,
        thread_unpark,
        #[cfg(tokio_unstable)]
        task_spawn,
        #[cfg(tokio_unstable)]
        task_terminate,
        #[cfg(tokio_unstable)]
        before_poll,
        #[cfg(tokio_unstable)]
        after_poll,
    } = user;
    // Once per thread: the thread registers at its first event instead, as a thread that
    // started before recording did; in the stable tier, a multi-thread runtime's workers
    // register as they start (see `Recorder::thread_start`).
    b.on_thread_start(move || {
        if let Some(f) = &thread_start {
            f();
        }
        if !task_hooks {
            rec.thread_start();
        }
    });
    // Once per thread: free its worker entry.
    b.on_thread_stop(move || {
        rec.thread_stop();
        if let Some(f) = &thread_stop {
            f();
        }
    });
    // Hot path (per park): see `Recorder::park` and, in the stable tier, `Recorder::busy_end`.
    b.on_thread_park(move || {
        if !task_hooks {
            rec.busy_end();
        }
        rec.park();
        if let Some(f) = &thread_park {
            f();
        }
    });
    // Hot path (per unpark): see `Recorder::unpark` and `Recorder::busy_start`.
    b.on_thread_unpark(move || {
        rec.unpark();
        if !task_hooks {
            rec.busy_start();
        }
        if let Some(f) = &thread_unpark {
            f();
        }
    });
    if !task_hooks {
        rec.note_tier(asyncprof_format::Tier::Stable);
        return b;
    }
    #[cfg(tokio_unstable)]
    {
        rec.hooks_installed.store(true, Relaxed);
        rec.note_tier(asyncprof_format::Tier::Hooks);
        // Hot path (per task spawned): see `Recorder::task_spawned`.
        b.on_task_spawn(move |meta| {
            let loc = meta.spawned_at();
            rec.task_spawned(
                task_id(meta.id()),
                crate::tables::LocKey {
                    file: loc.file(),
                    line: loc.line(),
                    col: loc.column(),
                },
                None,
            );
            if let Some(f) = &task_spawn {
                f(meta);
            }
        });
        // Hot path (per task end): see `Recorder::task_terminated`.
        b.on_task_terminate(move |meta| {
            let loc = meta.spawned_at();
            rec.task_terminated(
                task_id(meta.id()),
                Some(crate::tables::LocKey {
                    file: loc.file(),
                    line: loc.line(),
                    col: loc.column(),
                }),
            );
            if let Some(f) = &task_terminate {
                f(meta);
            }
        });
        // With the `schedule-latency` feature, tokio times every wake to its poll (an
        // `Instant::now()` at each wake and poll, tokio's cost) and hands the delay to the
        // poll hook; asyncprof records it on the polls it times exactly.
        #[cfg(feature = "schedule-latency")]
        {
            b.track_task_schedule_latency();
            rec.sees_wakes
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        // Hot path (per poll): see `Recorder::poll_start`. The user's hook runs first, so that
        // it is not timed as part of the poll.
        match before_poll {
            Some(f) => b.on_before_task_poll(move |meta| {
                f(meta);
                rec.poll_start::<false>(task_id(meta.id()), schedule_latency(meta));
            }),
            None => b.on_before_task_poll(move |meta| {
                rec.poll_start::<false>(task_id(meta.id()), schedule_latency(meta))
            }),
        };
        // Hot path (per poll): see `Recorder::poll_end`; the user's hook runs after it.
        match after_poll {
            Some(f) => b.on_after_task_poll(move |meta| {
                rec.poll_end();
                f(meta);
            }),
            None => b.on_after_task_poll(move |_| rec.poll_end()),
        };
    }
    b
}

#[cfg(all(test, tokio_unstable))]
mod tests {
    #[test]
    fn task_id_matches_tokio_display() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let handle = tokio::spawn(async {});
            let id = handle.id();
            assert_eq!(super::task_id(id).to_string(), id.to_string());
            handle.await.unwrap();
        });
    }
}
