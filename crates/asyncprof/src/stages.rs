//! User spans as pipeline stages: one latency histogram per span callsite.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use asyncprof_format as format;
use hdrhistogram::Histogram;

use crate::hist::{self, lock};

/// Distinct span callsites tracked; spans of further callsites are not recorded.
const MAX_STAGES: usize = 1024;

#[derive(Debug)]
struct Stage {
    name: &'static str,
    target: &'static str,
    location: Option<format::SourceLocation>,
    count: u64,
    busy_ns: u64,
    duration: Histogram<u64>,
}

/// Stage statistics keyed by the span's callsite.
#[derive(Debug, Default)]
pub(crate) struct StageTable {
    stages: Mutex<HashMap<usize, Stage>>,
    pub(crate) outliers: AtomicU64,
    pub(crate) untracked: AtomicU64,
}

impl StageTable {
    /// A span of `meta` closed after `duration_ns`, `busy_ns` of it entered. Once per span.
    pub(crate) fn record(
        &self,
        meta: &'static tracing_core::Metadata<'static>,
        duration_ns: u64,
        busy_ns: u64,
    ) {
        let key = meta as *const _ as usize;
        let mut stages = lock(&self.stages);
        let len = stages.len();
        let stage = match stages.get_mut(&key) {
            Some(s) => s,
            None if len >= MAX_STAGES => {
                self.untracked.fetch_add(1, Relaxed);
                return;
            }
            None => stages.entry(key).or_insert_with(|| Stage {
                name: meta.name(),
                target: meta.target(),
                location: meta
                    .file()
                    .map(|f| format::SourceLocation::new(f, meta.line().unwrap_or(0), 0)),
                count: 0,
                busy_ns: 0,
                duration: hist::new_fine(),
            }),
        };
        stage.count += 1;
        stage.busy_ns += busy_ns;
        hist::record(&mut stage.duration, duration_ns, &self.outliers);
    }

    pub(crate) fn snapshot(&self) -> Vec<format::StageStats> {
        let stages = lock(&self.stages);
        let mut out: Vec<format::StageStats> = stages
            .values()
            .map(|s| {
                let mut st = format::StageStats::default();
                st.name = s.name.to_string();
                st.target = s.target.to_string();
                st.location = s.location.clone();
                st.count = s.count;
                st.busy_ns = s.busy_ns;
                st.duration_ns = format::Histogram::from_hdr(&s.duration);
                st
            })
            .collect();
        out.sort_by(|a, b| (&a.target, &a.name).cmp(&(&b.target, &b.name)));
        out
    }
}
