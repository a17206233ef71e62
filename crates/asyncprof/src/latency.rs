//! User-recorded latencies: a named histogram a service fills itself, for what no span or
//! queue measures (the end-to-end latency of one item, a request's total time).

use std::panic::Location;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asyncprof_format as format;

use crate::hist::lock;
use crate::queues::WaitHist;

struct Entry {
    name: String,
    location: &'static Location<'static>,
    hist: WaitHist,
}

static REGISTRY: Mutex<Vec<Arc<Entry>>> = Mutex::new(Vec::new());

/// Distinct latency histograms reported; more are recorded but not reported.
const MAX_LATENCIES: usize = 256;

/// A named latency histogram: `record` from any thread without a lock (one atomic
/// increment). It appears in the run file beside the stages, named and located where it was
/// registered. Registering the same name at the same place again returns the same histogram.
///
/// ```
/// let item_latency = asyncprof::Latency::register("item end-to-end");
/// let started = std::time::Instant::now();
/// // ... the item travels through the pipeline ...
/// item_latency.record_since(started);
/// assert_eq!(item_latency.count(), 1);
/// ```
#[derive(Clone)]
pub struct Latency {
    entry: Arc<Entry>,
}

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latency")
            .field("name", &self.entry.name)
            .field("count", &self.count())
            .finish()
    }
}

impl Latency {
    /// The histogram named `name` registered at this call's place.
    #[track_caller]
    pub fn register(name: &str) -> Latency {
        let location = Location::caller();
        let mut reg = lock(&REGISTRY);
        if let Some(e) = reg
            .iter()
            .find(|e| e.name == name && std::ptr::eq(e.location, location))
        {
            return Latency { entry: e.clone() };
        }
        let entry = Arc::new(Entry {
            name: name.to_string(),
            location,
            hist: WaitHist::new(),
        });
        if reg.len() < MAX_LATENCIES {
            reg.push(entry.clone());
        }
        Latency { entry }
    }

    /// Record one latency.
    pub fn record(&self, d: Duration) {
        self.entry
            .hist
            .record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Record the time elapsed since `start`.
    pub fn record_since(&self, start: Instant) {
        self.record(start.elapsed());
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.entry.hist.count()
    }

    /// The latency at quantile `q` (0 to 1), to 1/16 of its value; zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_nanos(self.entry.hist.quantile(q))
    }
}

/// Every registered latency as a stage.
pub(crate) fn snapshot(outliers: &std::sync::atomic::AtomicU64) -> Vec<format::StageStats> {
    lock(&REGISTRY)
        .iter()
        .map(|e| {
            let mut st = format::StageStats::default();
            st.name = e.name.clone();
            st.target = "latency".into();
            st.location = Some(format::SourceLocation::new(
                e.location.file(),
                e.location.line(),
                e.location.column(),
            ));
            st.duration_ns = e.hist.to_format(outliers);
            st.count = st.duration_ns.count();
            st
        })
        .collect()
}
