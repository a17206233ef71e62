//! The runtimes' load, sampled on the aggregator thread every stall period (100 ms): how busy
//! the workers were, how many tasks waited for one, the blocking pool's queue and threads,
//! how long the worker threads waited for a CPU, and the process's memory. Read from tokio's
//! runtime metrics and the kernel's `schedstat`; the service's threads do nothing for it.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use asyncprof_format as format;

use crate::recorder::Recorder;

/// While no poll began since the last sample (an idle service), samples are this far apart:
/// there is no load to see, and the reads cost an idle process most of its CPU.
const IDLE_PERIOD_NS: u64 = 1_000_000_000;

/// The most points held between two snapshots (a snapshot period of a minute at 10 per
/// second, for a few runtimes); past it, new points are dropped and counted.
const MAX_PENDING: usize = 4096;

/// What the previous sample read, to turn cumulative counters into rates.
#[derive(Debug, Default)]
pub(crate) struct LoadSampler {
    /// Per runtime: when it was read and its workers' summed busy time then.
    busy: HashMap<u64, (u64, Duration)>,
    /// Per worker thread: its time on CPU and waiting for one, as of the previous sample.
    sched: HashMap<i32, (u64, u64)>,
    /// The machine's busy time, this process's CPU time and its throttled time at the
    /// previous sample, and when it was taken.
    machine: Option<(u64, u64, u64, u64)>,
    /// Points not yet put in a snapshot.
    pending: Vec<format::LoadPoint>,
    /// Points dropped because the pending list was full.
    pub(crate) dropped: u64,
    /// Polls begun on every worker, and when, at the last sample.
    last: Option<(u64, u64)>,
    /// The machine's and the process's load files, kept open between samples.
    files: asyncprof_sampler::LoadFiles,
    /// The worker threads' `schedstat` files, kept open between samples.
    sched_files: asyncprof_sampler::ThreadSchedFiles,
}

impl LoadSampler {
    /// Sample every live multi-thread runtime once, at `elapsed_ns` since the run started.
    pub(crate) fn sample(&mut self, recorder: &Recorder, elapsed_ns: u64) {
        let polls = recorder.polls_begun();
        if let Some((polls0, then)) = self.last {
            if polls == polls0 && elapsed_ns.saturating_sub(then) < IDLE_PERIOD_NS {
                return;
            }
        }
        self.last = Some((polls, elapsed_ns));
        let rss = self.files.rss_bytes().unwrap_or(0);
        // What everything else on the machine took since the previous sample.
        let (mut others_cpu_ns, mut machine_ns) = (0, 0);
        if let (Some((busy, cpus)), Some(own)) = (
            self.files.machine_busy_ns(),
            asyncprof_sampler::process_cpu_time().map(|d| d.as_nanos() as u64),
        ) {
            let throttled = self.files.throttled_ns().unwrap_or(0);
            if let Some((busy0, own0, throttled0, then)) =
                self.machine.replace((busy, own, throttled, elapsed_ns))
            {
                others_cpu_ns = busy
                    .saturating_sub(busy0)
                    .saturating_sub(own.saturating_sub(own0))
                    + throttled.saturating_sub(throttled0);
                machine_ns = elapsed_ns.saturating_sub(then) * cpus;
            }
        }
        let mut seen_threads = Vec::new();
        for info in recorder.runtime_infos() {
            let Some(handle) = recorder.runtime_handle(info.id) else {
                self.busy.remove(&info.id);
                continue;
            };
            let m = handle.metrics();
            let workers = m.num_workers();
            let busy_now: Duration = (0..workers).map(|i| m.worker_total_busy_duration(i)).sum();
            let mut p = format::LoadPoint::default();
            p.elapsed_ns = elapsed_ns;
            p.runtime = info.id;
            p.workers = workers as u32;
            p.alive_tasks = m.num_alive_tasks() as u64;
            p.ready = m.global_queue_depth() as u64;
            #[cfg(tokio_unstable)]
            {
                p.ready += (0..workers)
                    .map(|i| m.worker_local_queue_depth(i) as u64)
                    .sum::<u64>();
                p.blocking_queue = m.blocking_queue_depth() as u64;
                p.blocking_threads = m.num_blocking_threads() as u64;
                p.blocking_idle = m.num_idle_blocking_threads() as u64;
            }
            p.rss_bytes = rss;
            p.others_cpu_ns = others_cpu_ns;
            p.machine_ns = machine_ns;
            let first = self.busy.insert(info.id, (elapsed_ns, busy_now));
            if let Some((then, busy_then)) = first {
                p.span_ns = elapsed_ns.saturating_sub(then) * workers as u64;
                p.busy_ns = Some(busy_now.saturating_sub(busy_then).as_nanos() as u64);
            }
            for w in recorder.workers() {
                if !w.active.load(Relaxed)
                    || w.runtime.load(Relaxed) != info.id
                    || w.runs_no_worker()
                {
                    continue;
                }
                let tid = w.tid.load(Relaxed);
                let Some((run, wait)) = self.sched_files.times(tid) else {
                    continue;
                };
                seen_threads.push(tid);
                if let Some((run0, wait0)) = self.sched.insert(tid, (run, wait)) {
                    p.cpu_run_ns += run.saturating_sub(run0);
                    p.cpu_wait_ns += wait.saturating_sub(wait0);
                }
            }
            // The first read of a runtime only sets where rates start from.
            if first.is_none() {
                continue;
            }
            if self.pending.len() < MAX_PENDING {
                self.pending.push(p);
            } else {
                self.dropped += 1;
            }
        }
        // Threads that stopped are forgotten (a new thread may reuse the id).
        self.sched.retain(|tid, _| seen_threads.contains(tid));
        self.sched_files.retain(|tid| seen_threads.contains(&tid));
    }

    /// The points sampled since the last call, for a snapshot.
    pub(crate) fn take(&mut self) -> Vec<format::LoadPoint> {
        std::mem::take(&mut self.pending)
    }
}
