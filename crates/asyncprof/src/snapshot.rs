//! Building a [`format::Snapshot`] from the recorder's state. Cold path: runs on the
//! aggregator thread, about once a second.

use std::collections::HashMap;
use std::sync::atomic::Ordering::{Acquire, Relaxed};

use asyncprof_format as format;

use crate::clock;
use crate::hist::{self, lock, Gather, Sink};
use crate::recorder::{Recorder, SNAPSHOT_TASKS};
use crate::tables::Counts;
use crate::tables::TaskSlot;

/// Per-location numbers of the live tasks, gathered in one scan of the task table.
#[derive(Default)]
struct LiveLocation {
    counts: Counts,
    alive: u64,
    poll: Gather,
    sched: Gather,
}

struct LiveTask {
    id: u64,
    location: u32,
    name: Option<String>,
    counts: Counts,
    /// Its time inside polls, short ones at the sampled mean.
    busy_ns: u64,
    age_ns: u64,
    /// Its index in the task table, to read its histograms if it is among the busiest.
    slot: usize,
}

impl Recorder {
    /// Add live task `slot`'s long polls and delays (its histograms and the values still
    /// waiting in the slot) to `poll` and `sched`.
    fn add_task_hists(&self, slot: &TaskSlot, poll: &mut Gather, sched: &mut Gather) {
        if let Some(h) = lock(&slot.hists).as_ref() {
            hist::merge(poll, &h.poll);
            hist::merge(sched, &h.sched);
        }
        for (h, first) in [(poll, &slot.first_long[0]), (sched, &slot.first_long[1])] {
            let v = first.load(Relaxed);
            if v != 0 {
                h.add_n_counted(v, 1, &self.loss.histogram_outliers);
            }
        }
    }

    /// The state of the recording now, cumulative since it started.
    pub(crate) fn snapshot(&self, elapsed_ns: u64, is_final: bool) -> format::Snapshot {
        let now = clock::exact_ns();
        let mut snap = format::Snapshot::default();
        snap.elapsed_ns = elapsed_ns;
        snap.is_final = is_final;
        snap.runtimes = self.runtime_infos();

        // Workers, and the runtime-wide histograms from them.
        let mut long = hist::new_fine();
        let mut sampled = hist::new_fine();
        let mut sched = hist::new_fine();
        let (mut polls, mut long_polls, mut sampled_polls, mut sampled_ns) = (0u64, 0, 0, 0);
        for w in self.workers() {
            if w.registered_ns.load(Relaxed) == 0 || w.runs_no_worker() {
                continue;
            }
            // Acquire: pairs with the worker's release store, so the counters read below are
            // at least as new as the state.
            let state = w.state.load(Acquire);
            // The stable tier sees busy periods, not polls.
            let wpolls = if self.tier() == format::Tier::Stable {
                0
            } else {
                state
                    .div_ceil(2)
                    .saturating_sub(w.non_poll_enters.load(Relaxed))
            };
            polls += wpolls;
            let c = w.counts.load();
            long_polls += c.long_polls;
            sampled_polls += c.sampled_polls;
            sampled_ns += c.sampled_total_ns;
            {
                let h = lock(&w.hists);
                hist::merge(&mut long, &h.long);
                hist::merge(&mut sampled, &h.sampled);
                hist::merge(&mut sched, &h.sched);
            }
            let registered = w.registered_ns.load(Relaxed);
            let stopped = w.stopped_ns.load(Relaxed);
            let end = if stopped > registered { stopped } else { now };
            let park_since = w.park_since_ns.load(Relaxed);
            let parked = w.parked_ns.load(Relaxed)
                + if park_since != 0 {
                    now.saturating_sub(park_since)
                } else {
                    0
                };
            let mut ws = format::WorkerStats::default();
            ws.index = w.index;
            ws.runtime = w.runtime.load(Relaxed);
            ws.thread_name = lock(&w.name).clone();
            ws.tid = w.tid.load(Relaxed);
            ws.polls = wpolls;
            ws.busy_ns = end.saturating_sub(registered).saturating_sub(parked);
            ws.parked_ns = parked;
            ws.parks = w.parks.load(Relaxed);
            snap.workers.push(ws);
        }
        // Short polls: the exactly timed sample stands for all of them.
        let short = polls.saturating_sub(long_polls);
        let mut poll_hist = long;
        if sampled_polls > 0 {
            let factor = short as f64 / sampled_polls as f64;
            for v in sampled.iter_recorded() {
                let n = (v.count_at_value() as f64 * factor).round() as u64;
                poll_hist.saturating_record_n(v.value_iterated_to(), n);
            }
        }
        let mean_short_ns = sampled_ns.checked_div(sampled_polls).unwrap_or(0);

        // Live tasks, by location.
        let mut live: HashMap<u32, LiveLocation> = HashMap::new();
        let mut tasks: Vec<LiveTask> = Vec::new();
        for (index, id, slot) in self.tasks.iter() {
            let mut counts = slot.counts.load();
            counts.polls = self.task_polls(slot, id);
            let location = slot.location.load(Relaxed);
            let entry = live.entry(location).or_default();
            entry.counts.add(&counts);
            entry.alive += 1;
            // Into the location's histograms directly: one pair per location, however many
            // tasks are alive.
            self.add_task_hists(slot, &mut entry.poll, &mut entry.sched);
            tasks.push(LiveTask {
                id,
                location,
                name: lock(&slot.name).as_deref().map(str::to_string),
                counts,
                busy_ns: 0,
                age_ns: now.saturating_sub(slot.spawned_ns.load(Relaxed)),
                slot: index,
            });
        }

        // Locations: folded (completed) tasks plus live ones.
        // Untracked completions the workers still hold count at their locations.
        let held_completions = self.held_completions();
        // What of them the locations counted (never past their spawns): the runtime's too.
        let mut held_counted = 0u64;
        for index in self.locations.used() {
            let loc = self.locations.get(index);
            let Some(info) = loc.info.get().map(|k| k.source()) else {
                continue;
            };
            let index = index as usize;
            let spawned = self.locations.spawned(index as u32).load(Relaxed);
            let blocking = loc.blocking_completed.load(Relaxed);
            if spawned == 0 && blocking == 0 {
                continue;
            }
            let mut counts = loc.folded.load();
            let mut poll = Gather::default();
            let mut sched = Gather::default();
            if let Some(h) = lock(&loc.hists).as_ref() {
                hist::merge(&mut poll, &h.poll);
                hist::merge(&mut sched, &h.sched);
            }
            if let Some([p, s]) = loc.single_long() {
                p.add_to(&mut poll, &self.loss.histogram_outliers);
                s.add_to(&mut sched, &self.loss.histogram_outliers);
            }
            if let Some(l) = live.get(&(index as u32)) {
                counts.add(&l.counts);
                poll.append(&l.poll);
                sched.append(&l.sched);
            }
            fill_short(&mut poll, &mut sched, &counts, mean_short_ns);
            let mut ls = format::LocationStats::default();
            ls.location = info.clone();
            ls.tasks_spawned = spawned;
            ls.blocking_tasks = blocking;
            let held: u64 = held_completions
                .iter()
                .filter(|&&(li, _)| li as usize == index)
                .map(|&(_, n)| n)
                .sum();
            let stored = loc.tasks_completed.load(Relaxed);
            ls.tasks_completed = with_held(stored, held, spawned);
            held_counted += ls.tasks_completed - stored;
            ls.polls = counts.polls;
            ls.busy_ns = counts.busy_ns(mean_short_ns);
            ls.max_poll_ns = counts.max_poll_ns;
            ls.poll_ns = poll.finish();
            ls.scheduled_ns = sched.finish();
            snap.locations.push(ls);
        }

        // The busiest live tasks, busiest first (in the table's order among equals): the
        // rest are only picked out from, not sorted.
        for t in &mut tasks {
            t.busy_ns = t.counts.busy_ns(mean_short_ns);
        }
        let busiest = |t: &LiveTask| (std::cmp::Reverse(t.busy_ns), t.slot);
        if tasks.len() > SNAPSHOT_TASKS {
            tasks.select_nth_unstable_by_key(SNAPSHOT_TASKS, busiest);
            tasks.truncate(SNAPSHOT_TASKS);
        }
        tasks.sort_unstable_by_key(busiest);
        for t in tasks {
            let (mut poll, mut sched) = (Gather::default(), Gather::default());
            let slot = self.tasks.slot(t.slot);
            // The task may have ended since the scan: then its histograms are gone with it.
            if self.tasks.id_at(t.slot) == t.id {
                self.add_task_hists(slot, &mut poll, &mut sched);
            }
            fill_short(&mut poll, &mut sched, &t.counts, mean_short_ns);
            let busy = t.busy_ns;
            let mut ts = format::TaskStats::default();
            ts.id = t.id;
            ts.name = t.name;
            ts.location = self
                .locations
                .get(t.location)
                .info
                .get()
                .map(|k| k.source())
                .unwrap_or_default();
            ts.polls = t.counts.polls;
            ts.busy_ns = busy;
            ts.idle_ns = t.age_ns.saturating_sub(busy);
            ts.max_poll_ns = t.counts.max_poll_ns;
            ts.poll_ns = poll.finish();
            ts.scheduled_ns = sched.finish();
            snap.tasks.push(ts);
        }

        let r = &mut snap.runtime;
        r.polls = polls;
        r.tasks_spawned = self.task_counters.spawned.0.load(Relaxed);
        r.tasks_completed = with_held(
            self.task_counters.completed.0.load(Relaxed),
            held_counted,
            r.tasks_spawned,
        );
        r.tasks_alive = r.tasks_spawned.saturating_sub(r.tasks_completed);
        r.poll_ns = format::Histogram::from_hdr(&poll_hist);
        r.scheduled_ns = format::Histogram::from_hdr(&sched);

        snap.stages = self.stages.snapshot();
        snap.stages
            .extend(crate::latency::snapshot(&self.loss.histogram_outliers));
        snap.queues = crate::queues::snapshot(&self.loss.histogram_outliers);
        let l = &mut snap.loss;
        l.histogram_outliers = self.loss.histogram_outliers.load(Relaxed);
        l.untracked_tasks = self.loss.untracked_tasks.load(Relaxed);
        l.untracked_locations = self.loss.untracked_locations.load(Relaxed);
        l.dropped_records = self.loss.dropped_records.load(Relaxed);
        l.clock_gaps = self.loss.clock_gaps.load(Relaxed);
        l.missed_samples = self.loss.missed_samples.load(Relaxed);
        l.skipped_samples = self.loss.skipped_samples.load(Relaxed);
        l.sampler_busy = self.loss.sampler_busy.load(Relaxed);
        l.dropped_long_values = self.loss.dropped_long_values.load(Relaxed);
        l.dropped_stall_events = self.loss.dropped_stall_events.load(Relaxed);
        l.stalls_without_a_poll = self.loss.stalls_without_a_poll.load(Relaxed);
        l.unwritten_at_file_limit = self.loss.unwritten_at_file_limit.load(Relaxed);
        l.untracked_threads = self.loss.untracked_threads.load(Relaxed);
        l.polls_never_ended = self.workers().map(|w| w.never_ended.load(Relaxed)).sum();
        l.untracked_queues = crate::queues::untracked();
        l.dropped_depth_points = crate::queues::dropped_points();
        snap
    }
}

/// Short polls and delays were counted, not recorded one by one: add them at their mean, so
/// a histogram's count equals the number of polls.
fn fill_short<S: Sink>(poll: &mut S, sched: &mut S, c: &Counts, mean_ns: u64) {
    let short = c.polls.saturating_sub(c.long_polls);
    if short > 0 {
        poll.add_n(c.sampled_mean_ns().unwrap_or(mean_ns), short);
    }
    let (n, mean) = c.short_sched();
    if n > 0 {
        sched.add_n(mean, n);
    }
}

/// A completion count with the completions workers still hold added, never past the spawns.
fn with_held(stored: u64, held: u64, spawned: u64) -> u64 {
    stored.saturating_add(held.min(spawned.saturating_sub(stored)))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use crate::recorder::{Recorder, Settings, SNAPSHOT_TASKS};
    use crate::tables::LocKey;

    /// The snapshot's live tasks are the busiest, busiest first, and among tasks equally
    /// busy, the table's first: what sorting them all gave, without sorting them all.
    #[test]
    fn a_snapshot_lists_the_busiest_tasks_first_and_equals_in_table_order() {
        let rec: &'static Recorder = Box::leak(Box::new(Recorder::new(Settings {
            config: asyncprof_format::Config::default(),
            program: "snapshot-test".into(),
            args: Vec::new(),
        })));
        let here = LocKey {
            file: "src/snapshot_test.rs",
            line: 7,
            col: 9,
        };
        // 250 tasks over 50 levels of busy time: five tasks at each, the cut among equals.
        for id in 1..=250u64 {
            rec.task_spawned(id, here, None);
            let slot = rec.tasks.find(id).unwrap();
            slot.counts.long_polls.store(1, Relaxed);
            slot.counts
                .long_total_ns
                .store((id * 7 % 50) * 1_000_000, Relaxed);
        }
        let mut expected: Vec<(u64, u64)> = rec
            .tasks
            .iter()
            .map(|(_, id, slot)| (id, slot.counts.long_total_ns.load(Relaxed)))
            .collect();
        // A stable sort keeps the table's order among equals.
        expected.sort_by_key(|&(_, busy)| std::cmp::Reverse(busy));
        expected.truncate(SNAPSHOT_TASKS);
        let snap = rec.snapshot(0, false);
        let got: Vec<(u64, u64)> = snap.tasks.iter().map(|t| (t.id, t.busy_ns)).collect();
        assert_eq!(got, expected);
        assert_eq!(
            snap.locations.iter().map(|l| l.tasks_spawned).sum::<u64>(),
            250
        );
    }
}
