//! Named, instrumented drop-ins for `tokio::sync::mpsc`: the same types, methods and
//! semantics (ordering, closing, capacity, cancel safety), each constructor taking a name
//! first.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use asyncprof::sync::mpsc;
//!
//! let (tx, mut rx) = mpsc::channel::<String>("enrich-queue", 1000);
//! let (events, mut dead_letters) = mpsc::unbounded_channel::<String>("dead-letters");
//! tx.send("a line".into()).await.unwrap();
//! events.send("bad".into()).unwrap();
//! assert_eq!(rx.recv().await.as_deref(), Some("a line"));
//! assert_eq!(dead_letters.try_recv().as_deref(), Ok("bad"));
//! # }
//! ```
//!
//! Per queue, asyncprof records items sent and received, sends refused while full, how long
//! each sender waited for room and each receiver for an item, where items are sent and
//! received, and (sampled by a background thread, never per operation) the depth over time.
//! Channels created at one place with one name, such as one per connection, are reported
//! together.

use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use asyncprof_format::QueueKind;
use tokio::sync::mpsc as tm;

use self::error::{SendError, SendTimeoutError, TryRecvError, TrySendError};
use super::{blocking_wait, note_received, wait_for_room, SendWait};
use crate::queues::{self, QueueStats};

/// tokio's channel error types, unchanged.
pub mod error {
    pub use tokio::sync::mpsc::error::*;
}

/// `Clone` and `Debug` for a sender type (`inner`: tokio's, `q`: its statistics).
macro_rules! clone_and_debug {
    ($ty:ident) => {
        impl<T> Clone for $ty<T> {
            fn clone(&self) -> Self {
                $ty {
                    inner: self.inner.clone(),
                    q: self.q.clone(),
                }
            }
        }

        impl<T> std::fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("queue", &self.q)
                    .field("inner", &self.inner)
                    .finish()
            }
        }
    };
}

/// The methods both senders pass straight to tokio's, and `downgrade` to the weak sender
/// `$weak`.
macro_rules! sender_methods {
    ($weak:ident) => {
        /// Wait until the receiver is dropped or closed; like tokio's `closed`.
        pub async fn closed(&self) {
            self.inner.closed().await
        }

        /// Whether the receiver is gone or closed.
        pub fn is_closed(&self) -> bool {
            self.inner.is_closed()
        }

        /// Whether both send to the same channel.
        pub fn same_channel(&self, other: &Self) -> bool {
            self.inner.same_channel(&other.inner)
        }

        /// A sender that does not keep the channel open.
        pub fn downgrade(&self) -> $weak<T> {
            $weak {
                inner: self.inner.downgrade(),
                q: self.q.clone(),
            }
        }

        /// Senders alive.
        pub fn strong_count(&self) -> usize {
            self.inner.strong_count()
        }

        /// Weak senders alive.
        pub fn weak_count(&self) -> usize {
            self.inner.weak_count()
        }
    };
}

/// A weak sender type `$weak` that upgrades to `$strong`, like tokio's.
macro_rules! weak_sender {
    ($(#[$doc:meta])* $weak:ident => $strong:ident) => {
        $(#[$doc])*
        pub struct $weak<T> {
            inner: tm::$weak<T>,
            q: Arc<QueueStats>,
        }

        impl<T> Clone for $weak<T> {
            fn clone(&self) -> Self {
                $weak {
                    inner: self.inner.clone(),
                    q: self.q.clone(),
                }
            }
        }

        impl<T> std::fmt::Debug for $weak<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($weak))
                    .field("queue", &self.q)
                    .finish_non_exhaustive()
            }
        }

        impl<T> $weak<T> {
            /// A sender, if the channel still has one.
            pub fn upgrade(&self) -> Option<$strong<T>> {
                self.inner.upgrade().map(|inner| $strong {
                    inner,
                    q: self.q.clone(),
                })
            }

            /// Senders alive.
            pub fn strong_count(&self) -> usize {
                self.inner.strong_count()
            }

            /// Weak senders alive.
            pub fn weak_count(&self) -> usize {
                self.inner.weak_count()
            }
        }
    };
}

/// Create a bounded channel named `name` holding up to `buffer` items, like
/// `tokio::sync::mpsc::channel(buffer)`.
///
/// # Panics
///
/// When `buffer` is 0 or larger than tokio allows, as tokio's does.
#[track_caller]
pub fn channel<T>(name: &str, buffer: usize) -> (Sender<T>, Receiver<T>) {
    assert!(buffer > 0, "mpsc bounded channel requires buffer > 0");
    let (tx, rx) = tm::channel(buffer);
    let q = queues::register(
        name,
        QueueKind::Bounded,
        Location::caller(),
        Some(buffer as u64),
        std::mem::size_of::<T>(),
        None,
    );
    (
        Sender {
            inner: tx,
            q: q.clone(),
        },
        Receiver {
            core: RxCore::new(rx, q),
        },
    )
}

/// Create an unbounded channel named `name`, like `tokio::sync::mpsc::unbounded_channel()`.
#[track_caller]
pub fn unbounded_channel<T>(name: &str) -> (UnboundedSender<T>, UnboundedReceiver<T>) {
    let (tx, rx) = tm::unbounded_channel();
    let q = queues::register(
        name,
        QueueKind::Unbounded,
        Location::caller(),
        None,
        std::mem::size_of::<T>(),
        None,
    );
    (
        UnboundedSender {
            inner: tx,
            q: q.clone(),
        },
        UnboundedReceiver {
            core: RxCore::new(rx, q),
        },
    )
}

/// Sends to a bounded channel: `tokio::sync::mpsc::Sender` with statistics.
pub struct Sender<T> {
    inner: tm::Sender<T>,
    q: Arc<QueueStats>,
}

clone_and_debug!(Sender);

impl<T> Sender<T> {
    #[inline]
    fn producer(&self, site: &'static Location<'static>) {
        self.q.producer.get_or_init(|| site);
    }

    /// Send `value`, waiting for room; like tokio's `send`. A wait is timed from the moment
    /// the queue is found full.
    #[track_caller]
    pub fn send(&self, value: T) -> impl Future<Output = Result<(), SendError<T>>> + '_ {
        self.producer(Location::caller());
        async move {
            // tokio's `send` first spends one unit of the task's cooperative budget (and
            // yields when it is spent); so does this.
            tokio::task::consume_budget().await;
            // Room now (the common case): tokio's own fast path, without a second future.
            let value = match self.inner.try_send(value) {
                Ok(()) => {
                    self.q.sent();
                    return Ok(());
                }
                Err(TrySendError::Closed(v)) => return Err(SendError(v)),
                Err(TrySendError::Full(v)) => v,
            };
            let r = {
                let _wait = SendWait::start(&self.q);
                self.inner.send(value).await
            };
            if r.is_ok() {
                self.q.sent();
            }
            r
        }
    }

    /// Send `value` if there is room now; like tokio's `try_send`. A refusal because the
    /// queue is full is counted.
    #[track_caller]
    pub fn try_send(&self, message: T) -> Result<(), TrySendError<T>> {
        self.producer(Location::caller());
        let r = self.inner.try_send(message);
        match &r {
            Ok(()) => self.q.sent(),
            Err(TrySendError::Full(_)) => {
                self.q.rejected.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Closed(_)) => {}
        }
        r
    }

    /// Send `value`, waiting at most `timeout` for room; like tokio's `send_timeout`.
    #[track_caller]
    pub fn send_timeout(
        &self,
        value: T,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), SendTimeoutError<T>>> + '_ {
        self.producer(Location::caller());
        async move {
            let r = wait_for_room(
                &self.q,
                || self.inner.capacity() == 0,
                self.inner.send_timeout(value, timeout),
            )
            .await;
            match &r {
                Ok(()) => self.q.sent(),
                Err(SendTimeoutError::Timeout(_)) => {
                    self.q.rejected.fetch_add(1, Relaxed);
                }
                Err(SendTimeoutError::Closed(_)) => {}
            }
            r
        }
    }

    /// Send from outside the runtime, blocking the thread while the queue is full; like
    /// tokio's `blocking_send` (and like it, panics inside an async context).
    #[track_caller]
    pub fn blocking_send(&self, value: T) -> Result<(), SendError<T>> {
        self.producer(Location::caller());
        let r = match self.inner.try_send(value) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(v)) => Err(SendError(v)),
            Err(TrySendError::Full(v)) => blocking_wait(&self.q, || self.inner.blocking_send(v)),
        };
        if r.is_ok() {
            self.q.sent();
        }
        r
    }

    /// Wait for room for one item and hold it; like tokio's `reserve`.
    #[track_caller]
    pub fn reserve(&self) -> impl Future<Output = Result<Permit<'_, T>, SendError<()>>> + '_ {
        self.producer(Location::caller());
        async move {
            tokio::task::consume_budget().await;
            let p = match self.inner.try_reserve() {
                Ok(p) => p,
                Err(TrySendError::Closed(())) => return Err(SendError(())),
                Err(TrySendError::Full(())) => {
                    let _wait = SendWait::start(&self.q);
                    self.inner.reserve().await?
                }
            };
            Ok(Permit {
                inner: p,
                q: &self.q,
            })
        }
    }

    /// Wait for room for `n` items and hold it; like tokio's `reserve_many`.
    #[track_caller]
    pub fn reserve_many(
        &self,
        n: usize,
    ) -> impl Future<Output = Result<PermitIterator<'_, T>, SendError<()>>> + '_ {
        self.producer(Location::caller());
        async move {
            let p = wait_for_room(
                &self.q,
                || self.inner.capacity() < n,
                self.inner.reserve_many(n),
            )
            .await?;
            Ok(PermitIterator {
                inner: p,
                q: &self.q,
            })
        }
    }

    /// Wait for room for one item, holding it with an owned sender; like tokio's
    /// `reserve_owned`.
    #[track_caller]
    pub fn reserve_owned(self) -> impl Future<Output = Result<OwnedPermit<T>, SendError<()>>> {
        self.producer(Location::caller());
        async move {
            let room = self.inner.downgrade();
            let full = move || room.upgrade().is_some_and(|s| s.capacity() == 0);
            let q = self.q;
            let p = wait_for_room(&q, full, self.inner.reserve_owned()).await?;
            Ok(OwnedPermit { inner: p, q })
        }
    }

    /// Hold room for one item if there is some now; like tokio's `try_reserve`.
    #[track_caller]
    pub fn try_reserve(&self) -> Result<Permit<'_, T>, TrySendError<()>> {
        self.producer(Location::caller());
        match self.inner.try_reserve() {
            Ok(p) => Ok(Permit {
                inner: p,
                q: &self.q,
            }),
            Err(e) => Err(self.refused(e)),
        }
    }

    /// Hold room for `n` items if there is that much now; like tokio's `try_reserve_many`.
    #[track_caller]
    pub fn try_reserve_many(&self, n: usize) -> Result<PermitIterator<'_, T>, TrySendError<()>> {
        self.producer(Location::caller());
        match self.inner.try_reserve_many(n) {
            Ok(p) => Ok(PermitIterator {
                inner: p,
                q: &self.q,
            }),
            Err(e) => Err(self.refused(e)),
        }
    }

    /// Hold room for one item with an owned sender if there is some now; like tokio's
    /// `try_reserve_owned`. On failure the sender comes back in the error.
    #[track_caller]
    pub fn try_reserve_owned(self) -> Result<OwnedPermit<T>, TrySendError<Self>> {
        self.producer(Location::caller());
        let q = self.q;
        match self.inner.try_reserve_owned() {
            Ok(p) => Ok(OwnedPermit { inner: p, q }),
            Err(TrySendError::Full(inner)) => {
                q.rejected.fetch_add(1, Relaxed);
                Err(TrySendError::Full(Sender { inner, q }))
            }
            Err(TrySendError::Closed(inner)) => Err(TrySendError::Closed(Sender { inner, q })),
        }
    }

    fn refused<E>(&self, e: TrySendError<E>) -> TrySendError<E> {
        if matches!(e, TrySendError::Full(_)) {
            self.q.rejected.fetch_add(1, Relaxed);
        }
        e
    }

    /// Room left now.
    pub fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    /// The capacity the channel was created with.
    pub fn max_capacity(&self) -> usize {
        self.inner.max_capacity()
    }

    sender_methods!(WeakSender);
}

weak_sender!(
    /// A sender that does not keep the channel open; like tokio's `WeakSender`.
    WeakSender => Sender
);

/// Room for one item, held; like tokio's `Permit`.
pub struct Permit<'a, T> {
    inner: tm::Permit<'a, T>,
    q: &'a QueueStats,
}

impl<T> std::fmt::Debug for Permit<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("queue", &self.q)
            .finish_non_exhaustive()
    }
}

impl<T> Permit<'_, T> {
    /// Send `value` into the held room.
    pub fn send(self, value: T) {
        self.inner.send(value);
        self.q.sent();
    }
}

/// Room for one item, held with an owned sender; like tokio's `OwnedPermit`.
pub struct OwnedPermit<T> {
    inner: tm::OwnedPermit<T>,
    q: Arc<QueueStats>,
}

impl<T> std::fmt::Debug for OwnedPermit<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("queue", &self.q)
            .finish_non_exhaustive()
    }
}

impl<T> OwnedPermit<T> {
    /// Send `value` into the held room; returns the sender.
    pub fn send(self, value: T) -> Sender<T> {
        let inner = self.inner.send(value);
        self.q.sent();
        Sender { inner, q: self.q }
    }

    /// Give the room back without sending; returns the sender.
    pub fn release(self) -> Sender<T> {
        Sender {
            inner: self.inner.release(),
            q: self.q,
        }
    }

    /// Whether this permit and `other` belong to the same channel.
    pub fn same_channel(&self, other: &Self) -> bool {
        self.inner.same_channel(&other.inner)
    }

    /// Whether this permit belongs to the channel `sender` sends to.
    pub fn same_channel_as_sender(&self, sender: &Sender<T>) -> bool {
        self.inner.same_channel_as_sender(&sender.inner)
    }
}

/// Room for several items, held; like tokio's `PermitIterator`.
pub struct PermitIterator<'a, T> {
    inner: tm::PermitIterator<'a, T>,
    q: &'a QueueStats,
}

impl<T> std::fmt::Debug for PermitIterator<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PermitIterator")
            .field("queue", &self.q)
            .field("len", &self.inner.len())
            .finish()
    }
}

impl<'a, T> Iterator for PermitIterator<'a, T> {
    type Item = Permit<'a, T>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|inner| Permit { inner, q: self.q })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<T> ExactSizeIterator for PermitIterator<'_, T> {}

/// Sends to an unbounded channel: `tokio::sync::mpsc::UnboundedSender` with statistics.
pub struct UnboundedSender<T> {
    inner: tm::UnboundedSender<T>,
    q: Arc<QueueStats>,
}

clone_and_debug!(UnboundedSender);

impl<T> UnboundedSender<T> {
    /// Send `message` without waiting; like tokio's `send`.
    #[track_caller]
    pub fn send(&self, message: T) -> Result<(), SendError<T>> {
        self.q.producer.get_or_init(Location::caller);
        let r = self.inner.send(message);
        if r.is_ok() {
            self.q.sent();
        }
        r
    }

    sender_methods!(WeakUnboundedSender);
}

weak_sender!(
    /// An unbounded sender that does not keep the channel open; like tokio's
    /// `WeakUnboundedSender`.
    WeakUnboundedSender => UnboundedSender
);

/// What the receiver core needs from tokio's two receivers.
trait RawReceiver {
    type Item;
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::Item>>;
    fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        buffer: &mut Vec<Self::Item>,
        limit: usize,
    ) -> Poll<usize>;
    fn is_empty(&self) -> bool;
    fn len(&self) -> usize;
}

macro_rules! raw_receiver {
    ($ty:ident) => {
        impl<T> RawReceiver for tm::$ty<T> {
            type Item = T;
            fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
                tm::$ty::poll_recv(self, cx)
            }
            fn poll_recv_many(
                &mut self,
                cx: &mut Context<'_>,
                buffer: &mut Vec<T>,
                limit: usize,
            ) -> Poll<usize> {
                tm::$ty::poll_recv_many(self, cx, buffer, limit)
            }
            fn is_empty(&self) -> bool {
                tm::$ty::is_empty(self)
            }
            fn len(&self) -> usize {
                tm::$ty::len(self)
            }
        }
    };
}
raw_receiver!(Receiver);
raw_receiver!(UnboundedReceiver);

/// The receiving side's bookkeeping, shared by both receivers.
struct RxCore<R: RawReceiver> {
    inner: R,
    q: Arc<QueueStats>,
    /// Since when this receiver has found the queue empty.
    waiting_since: Option<Instant>,
}

impl<R: RawReceiver> RxCore<R> {
    fn new(inner: R, q: Arc<QueueStats>) -> Self {
        RxCore {
            inner,
            q,
            waiting_since: None,
        }
    }

    #[inline]
    fn consumer(&self, site: &'static Location<'static>) {
        self.q.consumer.get_or_init(|| site);
    }

    #[inline]
    fn got(&mut self, n: u64) {
        self.q.received(n);
        self.end_wait();
        note_received(&self.q);
    }

    #[inline]
    fn not_ready(&mut self) {
        // An empty queue is a wait; a `Pending` with items queued is tokio's cooperative
        // budget asking the task to yield.
        if self.waiting_since.is_none() && self.inner.is_empty() {
            self.waiting_since = Some(Instant::now());
        }
    }

    #[inline]
    fn end_wait(&mut self) {
        if let Some(t) = self.waiting_since.take() {
            let ns = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.q.recv_wait.record(ns);
        }
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<R::Item>> {
        let p = self.inner.poll_recv(cx);
        match &p {
            Poll::Ready(Some(_)) => self.got(1),
            Poll::Ready(None) => self.end_wait(),
            Poll::Pending => self.not_ready(),
        }
        p
    }

    fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        buffer: &mut Vec<R::Item>,
        limit: usize,
    ) -> Poll<usize> {
        let p = self.inner.poll_recv_many(cx, buffer, limit);
        match p {
            Poll::Ready(0) => self.end_wait(),
            Poll::Ready(n) => self.got(n as u64),
            Poll::Pending => self.not_ready(),
        }
        p
    }

    fn try_got<T, E>(&mut self, r: Result<T, E>) -> Result<T, E> {
        if r.is_ok() {
            self.got(1);
        }
        r
    }
}

impl<R: RawReceiver> Drop for RxCore<R> {
    fn drop(&mut self) {
        self.end_wait();
        // Items never received are dropped with the channel: they leave the queue too.
        self.q.discarded.fetch_add(self.inner.len() as u64, Relaxed);
        self.q.live.fetch_sub(1, Relaxed);
    }
}

/// A `recv()` in progress; a cancelled one ends its wait.
struct Recv<'a, R: RawReceiver> {
    core: &'a mut RxCore<R>,
}

impl<R: RawReceiver> Future for Recv<'_, R> {
    type Output = Option<R::Item>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.get_mut().core.poll_recv(cx)
    }
}

impl<R: RawReceiver> Drop for Recv<'_, R> {
    fn drop(&mut self) {
        self.core.end_wait();
    }
}

/// A `recv_many()` in progress; a cancelled one ends its wait.
struct RecvMany<'a, R: RawReceiver> {
    core: &'a mut RxCore<R>,
    buffer: &'a mut Vec<R::Item>,
    limit: usize,
}

impl<R: RawReceiver> Future for RecvMany<'_, R> {
    type Output = usize;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        let this = self.get_mut();
        this.core.poll_recv_many(cx, this.buffer, this.limit)
    }
}

impl<R: RawReceiver> Drop for RecvMany<'_, R> {
    fn drop(&mut self) {
        self.core.end_wait();
    }
}

/// The methods both receivers share, with tokio's names and semantics.
macro_rules! receiver_methods {
    () => {
        /// Receive the next item, waiting for one; `None` once every sender is gone and the
        /// queue is empty. Cancel safe, like tokio's. A wait is timed while the queue is
        /// empty.
        #[track_caller]
        pub fn recv(&mut self) -> impl Future<Output = Option<T>> + '_ {
            self.core.consumer(Location::caller());
            Recv {
                core: &mut self.core,
            }
        }

        /// Receive up to `limit` items into `buffer`, waiting for at least one; 0 once the
        /// channel is closed and empty (or `limit` is 0). Like tokio's `recv_many`.
        #[track_caller]
        pub fn recv_many<'a>(
            &'a mut self,
            buffer: &'a mut Vec<T>,
            limit: usize,
        ) -> impl Future<Output = usize> + 'a {
            self.core.consumer(Location::caller());
            RecvMany {
                core: &mut self.core,
                buffer,
                limit,
            }
        }

        /// Receive an item if one is queued now; like tokio's `try_recv`.
        #[track_caller]
        pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
            self.core.consumer(Location::caller());
            let r = self.core.inner.try_recv();
            self.core.try_got(r)
        }

        /// Receive from outside the runtime, blocking the thread while the queue is empty;
        /// like tokio's `blocking_recv` (and like it, panics inside an async context).
        #[track_caller]
        pub fn blocking_recv(&mut self) -> Option<T> {
            self.core.consumer(Location::caller());
            match self.core.inner.try_recv() {
                Ok(v) => {
                    self.core.got(1);
                    return Some(v);
                }
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            let start = Instant::now();
            let v = self.core.inner.blocking_recv();
            let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.core.q.recv_wait.record(ns);
            if v.is_some() {
                self.core.got(1);
            }
            v
        }

        /// [`Self::recv_many`] from outside the runtime, blocking the thread.
        #[track_caller]
        pub fn blocking_recv_many(&mut self, buffer: &mut Vec<T>, limit: usize) -> usize {
            self.core.consumer(Location::caller());
            let n = self.core.inner.blocking_recv_many(buffer, limit);
            if n > 0 {
                self.core.got(n as u64);
            }
            n
        }

        /// Close the channel: sends fail from now on; queued items can still be received.
        pub fn close(&mut self) {
            self.core.inner.close()
        }

        /// Whether the channel is closed (by `close` or because every sender is gone).
        pub fn is_closed(&self) -> bool {
            self.core.inner.is_closed()
        }

        /// Whether no item is queued.
        pub fn is_empty(&self) -> bool {
            self.core.inner.is_empty()
        }

        /// Items queued.
        pub fn len(&self) -> usize {
            self.core.inner.len()
        }

        /// Poll for the next item, for hand-written futures and streams; like tokio's
        /// `poll_recv`.
        #[track_caller]
        pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.core.consumer(Location::caller());
            self.core.poll_recv(cx)
        }

        /// Poll for up to `limit` items; like tokio's `poll_recv_many`.
        #[track_caller]
        pub fn poll_recv_many(
            &mut self,
            cx: &mut Context<'_>,
            buffer: &mut Vec<T>,
            limit: usize,
        ) -> Poll<usize> {
            self.core.consumer(Location::caller());
            self.core.poll_recv_many(cx, buffer, limit)
        }

        /// Senders alive.
        pub fn sender_strong_count(&self) -> usize {
            self.core.inner.sender_strong_count()
        }

        /// Weak senders alive.
        pub fn sender_weak_count(&self) -> usize {
            self.core.inner.sender_weak_count()
        }
    };
}

/// Receives from a bounded channel: `tokio::sync::mpsc::Receiver` with statistics.
pub struct Receiver<T> {
    core: RxCore<tm::Receiver<T>>,
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("queue", &self.core.q)
            .field("inner", &self.core.inner)
            .finish()
    }
}

impl<T> Receiver<T> {
    receiver_methods!();

    /// Room left now.
    pub fn capacity(&self) -> usize {
        self.core.inner.capacity()
    }

    /// The capacity the channel was created with.
    pub fn max_capacity(&self) -> usize {
        self.core.inner.max_capacity()
    }
}

/// Receives from an unbounded channel: `tokio::sync::mpsc::UnboundedReceiver` with
/// statistics.
pub struct UnboundedReceiver<T> {
    core: RxCore<tm::UnboundedReceiver<T>>,
}

impl<T> std::fmt::Debug for UnboundedReceiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnboundedReceiver")
            .field("queue", &self.core.q)
            .field("inner", &self.core.inner)
            .finish()
    }
}

impl<T> UnboundedReceiver<T> {
    receiver_methods!();
}
