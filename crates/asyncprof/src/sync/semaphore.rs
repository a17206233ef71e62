//! A named, instrumented `tokio::sync::Semaphore`.

use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use asyncprof_format::QueueKind;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, SemaphorePermit, TryAcquireError};

use super::{wait_for_room, SendWait};
use crate::queues::{self, Probe, QueueStats};

/// `tokio::sync::Semaphore` with a name: asyncprof records how long each acquire waited for
/// a permit and samples the permits held over time. Pipelines rate-limit and bound
/// concurrency with semaphores; this shows when a limit is what they wait on.
///
/// The permits are tokio's own types, so the rest of the code does not change.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
///
/// let in_flight = Arc::new(asyncprof::sync::Semaphore::new("http-in-flight", 100));
/// let permit = in_flight.clone().acquire_owned().await.unwrap();
/// tokio::spawn(async move {
///     let _permit = permit; // released when the request is done
/// })
/// .await
/// .unwrap();
/// assert_eq!(in_flight.available_permits(), 100);
/// # }
/// ```
pub struct Semaphore {
    inner: Arc<tokio::sync::Semaphore>,
    total: Arc<AtomicU64>,
    q: Arc<QueueStats>,
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semaphore")
            .field("queue", &self.q)
            .field("inner", &self.inner)
            .finish()
    }
}

impl Drop for Semaphore {
    fn drop(&mut self) {
        self.q.live.fetch_sub(1, Relaxed);
    }
}

impl Semaphore {
    /// The most permits a semaphore can hold (tokio's limit).
    pub const MAX_PERMITS: usize = tokio::sync::Semaphore::MAX_PERMITS;

    /// A semaphore named `name` with `permits` permits.
    ///
    /// # Panics
    ///
    /// When `permits` exceeds [`Self::MAX_PERMITS`], as tokio's does.
    #[track_caller]
    pub fn new(name: &str, permits: usize) -> Self {
        assert!(
            permits <= Self::MAX_PERMITS,
            "a semaphore may not have more than MAX_PERMITS permits ({})",
            Self::MAX_PERMITS
        );
        let inner = Arc::new(tokio::sync::Semaphore::new(permits));
        let total = Arc::new(AtomicU64::new(permits as u64));
        let q = queues::register(
            name,
            QueueKind::Semaphore,
            Location::caller(),
            Some(permits as u64),
            0,
            Some(Probe::Semaphore(Arc::downgrade(&inner), total.clone())),
        );
        Semaphore { inner, total, q }
    }

    fn acquired<P>(&self, r: Result<P, AcquireError>, n: u32) -> Result<P, AcquireError> {
        if r.is_ok() {
            self.q.enqueued.0.fetch_add(u64::from(n), Relaxed);
        }
        r
    }

    fn tried<P>(&self, r: Result<P, TryAcquireError>, n: u32) -> Result<P, TryAcquireError> {
        match &r {
            Ok(_) => {
                self.q.enqueued.0.fetch_add(u64::from(n), Relaxed);
            }
            Err(TryAcquireError::NoPermits) => {
                self.q.rejected.fetch_add(1, Relaxed);
            }
            Err(TryAcquireError::Closed) => {}
        }
        r
    }

    /// Wait for a permit; like tokio's `acquire`. The wait is timed.
    pub async fn acquire(&self) -> Result<SemaphorePermit<'_>, AcquireError> {
        // tokio's `acquire` first spends one unit of the task's cooperative budget; so does
        // this.
        tokio::task::consume_budget().await;
        let r = match self.inner.try_acquire() {
            Ok(p) => Ok(p),
            Err(TryAcquireError::NoPermits) => {
                let _wait = SendWait::start(&self.q);
                self.inner.acquire().await
            }
            // tokio's own call returns the error for a closed semaphore.
            Err(TryAcquireError::Closed) => self.inner.acquire().await,
        };
        self.acquired(r, 1)
    }

    /// Wait for `n` permits; like tokio's `acquire_many`.
    pub async fn acquire_many(&self, n: u32) -> Result<SemaphorePermit<'_>, AcquireError> {
        let r = wait_for_room(
            &self.q,
            || self.inner.available_permits() < n as usize,
            self.inner.acquire_many(n),
        )
        .await;
        self.acquired(r, n)
    }

    /// Take a permit if one is free now; like tokio's `try_acquire`.
    pub fn try_acquire(&self) -> Result<SemaphorePermit<'_>, TryAcquireError> {
        self.tried(self.inner.try_acquire(), 1)
    }

    /// Take `n` permits if they are free now; like tokio's `try_acquire_many`.
    pub fn try_acquire_many(&self, n: u32) -> Result<SemaphorePermit<'_>, TryAcquireError> {
        self.tried(self.inner.try_acquire_many(n), n)
    }

    /// Wait for a permit that owns a reference to the semaphore; like tokio's
    /// `acquire_owned`.
    pub async fn acquire_owned(self: Arc<Self>) -> Result<OwnedSemaphorePermit, AcquireError> {
        tokio::task::consume_budget().await;
        let r = match self.inner.clone().try_acquire_owned() {
            Ok(p) => Ok(p),
            Err(TryAcquireError::NoPermits) => {
                let _wait = SendWait::start(&self.q);
                self.inner.clone().acquire_owned().await
            }
            Err(TryAcquireError::Closed) => self.inner.clone().acquire_owned().await,
        };
        self.acquired(r, 1)
    }

    /// Wait for `n` permits that own a reference to the semaphore.
    pub async fn acquire_many_owned(
        self: Arc<Self>,
        n: u32,
    ) -> Result<OwnedSemaphorePermit, AcquireError> {
        let r = wait_for_room(
            &self.q,
            || self.inner.available_permits() < n as usize,
            self.inner.clone().acquire_many_owned(n),
        )
        .await;
        self.acquired(r, n)
    }

    /// Take an owned permit if one is free now.
    pub fn try_acquire_owned(self: Arc<Self>) -> Result<OwnedSemaphorePermit, TryAcquireError> {
        self.tried(self.inner.clone().try_acquire_owned(), 1)
    }

    /// Take `n` owned permits if they are free now.
    pub fn try_acquire_many_owned(
        self: Arc<Self>,
        n: u32,
    ) -> Result<OwnedSemaphorePermit, TryAcquireError> {
        self.tried(self.inner.clone().try_acquire_many_owned(n), n)
    }

    /// Add `n` permits.
    pub fn add_permits(&self, n: usize) {
        self.inner.add_permits(n);
        let total = self.total.fetch_add(n as u64, Relaxed) + n as u64;
        self.report_capacity(total);
    }

    /// The capacity the report shows follows the permits added and forgotten.
    fn report_capacity(&self, total: u64) {
        if let Some(c) = &self.q.capacity {
            c.store(total, Relaxed);
        }
    }

    /// Remove up to `n` free permits; returns how many were removed.
    pub fn forget_permits(&self, n: usize) -> usize {
        let removed = self.inner.forget_permits(n);
        let total = self.total.fetch_sub(removed as u64, Relaxed) - removed as u64;
        self.report_capacity(total);
        removed
    }

    /// Permits free now.
    pub fn available_permits(&self) -> usize {
        self.inner.available_permits()
    }

    /// Close the semaphore: waiting and future acquires fail.
    pub fn close(&self) {
        self.inner.close()
    }

    /// Whether the semaphore is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}
