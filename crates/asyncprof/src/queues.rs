//! Queue statistics: the registry of named channels, semaphores and gauges, the lock-free
//! counters and wait histograms their operations update, and the background sampling of
//! their depth.
//!
//! Hot path (one channel operation): one relaxed `fetch_add` per send and per receive. Only
//! an operation that has to wait (a full queue, an empty one) reads the clock, twice, and
//! records into an atomic histogram. Depth is never recorded per operation: the aggregator
//! thread computes it from the counters ten times a second.

use std::panic::Location;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use asyncprof_format as format;

use crate::hist::{self, lock};

/// Distinct queues (name and creation place) reported. Further ones work but are counted
/// in `untracked_queues` instead.
pub(crate) const MAX_QUEUES: usize = 1024;

/// Depth samples a queue buffers between two snapshots; more are dropped and counted.
const MAX_BUFFERED_POINTS: usize = 1024;

/// Log-linear buckets: values below 8 ns exactly, then 8 sub-buckets per power of two
/// (12.5% resolution) up to 2^64 ns.
const BUCKETS: usize = 8 + 61 * 8;

/// A histogram of nanosecond durations that any thread records into without a lock.
///
/// Hand-written rather than hdrhistogram's: recording there takes `&mut`, so every sender and
/// receiver of a queue would take turns on one lock; here a record is one relaxed `fetch_add`.
/// It is converted to an hdrhistogram ([`WaitHist::add_to`]) on the cold path.
pub(crate) struct WaitHist {
    buckets: Box<[AtomicU64]>,
}

impl std::fmt::Debug for WaitHist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitHist").finish_non_exhaustive()
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < 8 {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros() as usize; // 3..=63
    let sub = ((ns >> (exp - 3)) & 7) as usize;
    8 + (exp - 3) * 8 + sub
}

/// The middle of a bucket's range.
fn bucket_value(index: usize) -> u64 {
    if index < 8 {
        return index as u64;
    }
    let exp = (index - 8) / 8 + 3;
    let sub = ((index - 8) % 8) as u64;
    let low = (8 + sub) << (exp - 3);
    let width = 1u64 << (exp - 3);
    low.saturating_add(width / 2)
}

impl WaitHist {
    pub(crate) fn new() -> Self {
        WaitHist {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Count one wait of `ns`.
    pub(crate) fn record(&self, ns: u64) {
        self.buckets[bucket_of(ns)].fetch_add(1, Relaxed);
    }

    /// Values recorded.
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// The value at quantile `q`, to the resolution of a bucket; 0 when empty.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_value(i);
            }
        }
        bucket_value(BUCKETS - 1)
    }

    pub(crate) fn to_format(&self, outliers: &AtomicU64) -> format::Histogram {
        let mut h = hist::Gather::default();
        self.add_to(&mut h, outliers);
        h.finish()
    }

    /// Add every value recorded here to `h` (at its bucket's middle), clamping what `h`
    /// cannot hold and counting it in `outliers`.
    pub(crate) fn add_to(&self, h: &mut impl hist::Sink, outliers: &AtomicU64) {
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Relaxed);
            if n > 0 {
                h.add_n_counted(bucket_value(i), n, outliers);
            }
        }
    }
}

/// A counter on its own cache line, so producers and consumers do not share one.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded(pub(crate) AtomicU64);

/// What the background thread reads to find a queue's depth when counters cannot tell.
pub(crate) enum Probe {
    /// A gauge's closure; gone when the gauge handle is dropped.
    Gauge(Weak<dyn Fn() -> usize + Send + Sync>),
    /// A semaphore and its total permits: permits held = total - available.
    Semaphore(Weak<tokio::sync::Semaphore>, Arc<AtomicU64>),
}

#[derive(Default)]
struct Sampling {
    probes: Vec<Probe>,
    samples: u64,
    full_samples: u64,
    max_depth: u64,
    depth: u64,
    points: Vec<format::DepthPoint>,
    gauge_panicked: bool,
}

/// The statistics of one named queue (all instances created at one place with one name).
pub(crate) struct QueueStats {
    pub(crate) id: u64,
    name: String,
    kind: format::QueueKind,
    location: &'static Location<'static>,
    /// Capacity of one instance (total permits for a semaphore); `None` when unbounded.
    pub(crate) capacity: Option<AtomicU64>,
    item_bytes: u64,
    pub(crate) enqueued: Padded,
    pub(crate) dequeued: Padded,
    /// Items still queued when their receiver was dropped.
    pub(crate) discarded: AtomicU64,
    pub(crate) rejected: AtomicU64,
    instances: AtomicU64,
    pub(crate) live: AtomicU64,
    pub(crate) senders_waiting: AtomicU64,
    pub(crate) send_wait: WaitHist,
    pub(crate) recv_wait: WaitHist,
    pub(crate) consumer_blocked_ns: AtomicU64,
    /// Id + 1 of the queue the consumers last waited to send on (0: none).
    pub(crate) downstream: AtomicU64,
    pub(crate) producer: OnceLock<&'static Location<'static>>,
    pub(crate) consumer: OnceLock<&'static Location<'static>>,
    sampling: Mutex<Sampling>,
}

impl std::fmt::Debug for QueueStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueStats")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl QueueStats {
    /// Count one item in.
    #[inline]
    pub(crate) fn sent(&self) {
        self.enqueued.0.fetch_add(1, Relaxed);
    }

    /// Count `n` items out.
    #[inline]
    pub(crate) fn received(&self, n: u64) {
        self.dequeued.0.fetch_add(n, Relaxed);
    }

    /// Items queued now, from the counters.
    fn counted_depth(&self) -> u64 {
        let deq = self.dequeued.0.load(Relaxed) + self.discarded.load(Relaxed);
        self.enqueued.0.load(Relaxed).saturating_sub(deq)
    }
}

#[derive(Default)]
struct Registry {
    queues: Vec<Arc<QueueStats>>,
    next_id: u64,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    queues: Vec::new(),
    next_id: 0,
});
static UNTRACKED: AtomicU64 = AtomicU64::new(0);
static DROPPED_POINTS: AtomicU64 = AtomicU64::new(0);

/// The statistics for a queue named `name` created at `location`: the existing entry for
/// that name and place, or a new one. Called once per queue instance (cold).
pub(crate) fn register(
    name: &str,
    kind: format::QueueKind,
    location: &'static Location<'static>,
    capacity: Option<u64>,
    item_bytes: usize,
    probe: Option<Probe>,
) -> Arc<QueueStats> {
    let mut reg = lock(&REGISTRY);
    let found = reg
        .queues
        .iter()
        .find(|q| q.kind == kind && std::ptr::eq(q.location, location) && q.name == name)
        .cloned();
    let stats = match found {
        Some(q) => q,
        None => {
            if reg.queues.len() >= MAX_QUEUES {
                prune(&mut reg);
            }
            let id = reg.next_id;
            reg.next_id += 1;
            let q = Arc::new(QueueStats {
                id,
                name: name.to_string(),
                kind,
                location,
                capacity: capacity.map(AtomicU64::new),
                item_bytes: item_bytes as u64,
                enqueued: Padded::default(),
                dequeued: Padded::default(),
                discarded: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                instances: AtomicU64::new(0),
                live: AtomicU64::new(0),
                senders_waiting: AtomicU64::new(0),
                send_wait: WaitHist::new(),
                recv_wait: WaitHist::new(),
                consumer_blocked_ns: AtomicU64::new(0),
                downstream: AtomicU64::new(0),
                producer: OnceLock::new(),
                consumer: OnceLock::new(),
                sampling: Mutex::new(Sampling::default()),
            });
            if reg.queues.len() < MAX_QUEUES {
                reg.queues.push(q.clone());
            } else {
                UNTRACKED.fetch_add(1, Relaxed);
            }
            q
        }
    };
    stats.instances.fetch_add(1, Relaxed);
    stats.live.fetch_add(1, Relaxed);
    if let Some(p) = probe {
        lock(&stats.sampling).probes.push(p);
    }
    stats
}

/// Drop the queues no instance of which is alive.
fn prune(reg: &mut Registry) {
    reg.queues.retain(|q| q.live.load(Relaxed) > 0);
}

/// A recording starts: forget queues that died before it, so it reports only its own.
pub(crate) fn start_recording() {
    let mut reg = lock(&REGISTRY);
    prune(&mut reg);
    for q in &reg.queues {
        let mut s = lock(&q.sampling);
        s.points.clear();
    }
}

/// The queue with this id, for linking a consumer to the queue it waits on (slow path).
pub(crate) fn by_address(addr: usize, id: u64) -> Option<Arc<QueueStats>> {
    lock(&REGISTRY)
        .queues
        .iter()
        .find(|q| Arc::as_ptr(q) as usize == addr && q.id == id)
        .cloned()
}

/// Take one depth sample of every queue. Aggregator thread, ten times a second.
pub(crate) fn sample(elapsed_ns: u64) {
    let queues = lock(&REGISTRY).queues.clone();
    for q in queues {
        let mut s = lock(&q.sampling);
        let waiting = q.senders_waiting.load(Relaxed);
        let probed = matches!(
            q.kind,
            format::QueueKind::Gauge | format::QueueKind::Semaphore
        );
        let depth = if !probed {
            if q.live.load(Relaxed) == 0 {
                // Every instance is gone: nothing to sample.
                continue;
            }
            q.counted_depth()
        } else {
            let mut depth = 0u64;
            let mut panicked = false;
            s.probes.retain(|probe| match probe {
                Probe::Gauge(f) => match f.upgrade() {
                    Some(f) => {
                        // A gauge that panics is dropped, never the aggregator.
                        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f())) {
                            Ok(n) => {
                                depth += n as u64;
                                true
                            }
                            Err(_) => {
                                panicked = true;
                                false
                            }
                        }
                    }
                    None => false,
                },
                Probe::Semaphore(sem, total) => match sem.upgrade() {
                    Some(sem) => {
                        let total = total.load(Relaxed);
                        depth += total.saturating_sub(sem.available_permits() as u64);
                        true
                    }
                    None => false,
                },
            });
            if panicked && !s.gauge_panicked {
                s.gauge_panicked = true;
                eprintln!(
                    "asyncprof: the length closure of gauge {:?} panicked; it is no longer sampled",
                    q.name
                );
            }
            if s.probes.is_empty() {
                continue;
            }
            depth
        };
        let live = q.live.load(Relaxed).max(1);
        let full = match (&q.capacity, q.kind) {
            (_, format::QueueKind::Semaphore) => waiting > 0,
            (Some(c), _) => waiting > 0 || depth >= c.load(Relaxed).saturating_mul(live),
            (None, _) => false,
        };
        s.samples += 1;
        s.full_samples += u64::from(full);
        s.max_depth = s.max_depth.max(depth);
        s.depth = depth;
        if s.points.len() < MAX_BUFFERED_POINTS {
            s.points.push({
                let mut p = format::DepthPoint::default();
                p.elapsed_ns = elapsed_ns;
                p.depth = depth;
                p.waiting = waiting;
                p
            });
        } else {
            DROPPED_POINTS.fetch_add(1, Relaxed);
        }
    }
}

fn source(l: &Location<'_>) -> format::SourceLocation {
    format::SourceLocation::new(l.file(), l.line(), l.column())
}

/// Every queue's statistics, handing over the depth points taken since the last call.
pub(crate) fn snapshot(outliers: &AtomicU64) -> Vec<format::QueueStats> {
    let queues = lock(&REGISTRY).queues.clone();
    let mut out = Vec::with_capacity(queues.len());
    for q in queues {
        let mut s = lock(&q.sampling);
        let mut qs = format::QueueStats::default();
        qs.id = q.id;
        qs.name = q.name.clone();
        qs.kind = q.kind;
        qs.location = source(q.location);
        qs.capacity = q.capacity.as_ref().map(|c| c.load(Relaxed));
        qs.item_bytes = q.item_bytes;
        qs.instances = q.instances.load(Relaxed);
        qs.live_instances = q.live.load(Relaxed);
        qs.enqueued = q.enqueued.0.load(Relaxed);
        qs.dequeued = q.dequeued.0.load(Relaxed);
        qs.rejected = q.rejected.load(Relaxed);
        qs.depth = s.depth;
        qs.samples = s.samples;
        qs.full_samples = s.full_samples;
        qs.send_wait_ns = q.send_wait.to_format(outliers);
        qs.recv_wait_ns = q.recv_wait.to_format(outliers);
        // A sender that had to wait saw the queue at its capacity.
        qs.max_depth = match (&qs.capacity, qs.send_wait_ns.count()) {
            (Some(c), n) if n > 0 && q.kind != format::QueueKind::Semaphore => s.max_depth.max(*c),
            _ => s.max_depth,
        };
        qs.consumer_blocked_ns = q.consumer_blocked_ns.load(Relaxed);
        qs.downstream = q.downstream.load(Relaxed).checked_sub(1);
        qs.producer = q.producer.get().map(|l| source(l));
        qs.consumer = q.consumer.get().map(|l| source(l));
        qs.points = std::mem::take(&mut s.points);
        out.push(qs);
    }
    out
}

/// Queues created while the registry was full.
pub(crate) fn untracked() -> u64 {
    UNTRACKED.load(Relaxed)
}

/// Depth samples dropped.
pub(crate) fn dropped_points() -> u64 {
    DROPPED_POINTS.load(Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order_within_an_eighth() {
        let mut last = 0;
        for ns in (0..20_000u64).chain([1 << 40, (1 << 40) + 12345, u64::MAX]) {
            let b = bucket_of(ns);
            assert!(b < BUCKETS, "{ns} -> {b}");
            assert!(b >= last, "buckets must not go backwards at {ns}");
            last = b;
            let mid = bucket_value(b);
            let err = mid.abs_diff(ns) as f64 / ns.max(1) as f64;
            assert!(
                err <= 0.0625 + 1e-9,
                "{ns}: bucket middle {mid} is {err} away"
            );
        }
    }
}
