//! A gauge: the depth of any queue asyncprof does not wrap, sampled in the background.

use std::panic::Location;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use asyncprof_format::QueueKind;

use crate::queues::{self, Probe, QueueStats};

/// Reports the length of any other queue (flume, crossbeam, a `VecDeque` behind a lock, a
/// database connection pool) under a name. asyncprof's background thread calls the closure
/// ten times a second, never the service's threads; it must be quick and must not block.
/// A closure that panics is no longer called, and asyncprof says so once on stderr.
///
/// The gauge is sampled until the handle is dropped.
///
/// ```
/// use std::collections::VecDeque;
/// use std::sync::{Arc, Mutex};
///
/// let backlog = Arc::new(Mutex::new(VecDeque::<String>::new()));
/// let _gauge = asyncprof::Gauge::register("retry-backlog", Some(10_000), {
///     let backlog = backlog.clone();
///     move || backlog.lock().unwrap().len()
/// });
/// ```
pub struct Gauge {
    _len: Arc<dyn Fn() -> usize + Send + Sync>,
    q: Arc<QueueStats>,
}

impl std::fmt::Debug for Gauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gauge")
            .field("queue", &self.q)
            .finish_non_exhaustive()
    }
}

impl Gauge {
    /// Register a queue named `name`, of `capacity` items if it is bounded, whose current
    /// length `len` returns.
    #[track_caller]
    pub fn register(
        name: &str,
        capacity: Option<usize>,
        len: impl Fn() -> usize + Send + Sync + 'static,
    ) -> Gauge {
        let len: Arc<dyn Fn() -> usize + Send + Sync> = Arc::new(len);
        let q = queues::register(
            name,
            QueueKind::Gauge,
            Location::caller(),
            capacity.map(|c| c as u64),
            0,
            Some(Probe::Gauge(Arc::downgrade(&len))),
        );
        Gauge { _len: len, q }
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        self.q.live.fetch_sub(1, Relaxed);
    }
}
