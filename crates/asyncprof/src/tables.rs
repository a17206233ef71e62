//! Fixed-size tables of live tasks and of spawn locations.
//!
//! Both are allocated once when recording starts, so the hot path never allocates and the
//! memory asyncprof keeps is bounded however many tasks a service spawns: a completed task's
//! numbers fold into its spawn location and its slot is freed. Tasks spawned while the task
//! table is full are counted in `untracked_tasks`, and still counted by their worker.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Mutex, OnceLock};

use asyncprof_format::SourceLocation;
use hdrhistogram::Histogram;

use crate::hist;

/// How many neighbouring slots a lookup tries before giving up.
const PROBE: usize = 4;

/// Per-task or per-location duration counters. The poll counters are written only by the
/// task's current poller (one thread at a time: tokio's task state transitions order them)
/// and read by the aggregator.
#[derive(Debug, Default)]
pub(crate) struct PollCounters {
    pub(crate) polls: AtomicU64,
    /// Polls of at least two clock ticks, recorded one by one.
    pub(crate) long_polls: AtomicU64,
    pub(crate) long_total_ns: AtomicU64,
    /// Short polls that were timed exactly (the sample).
    pub(crate) sampled_polls: AtomicU64,
    pub(crate) sampled_total_ns: AtomicU64,
    pub(crate) max_poll_ns: AtomicU64,
    pub(crate) sched_count: AtomicU64,
    pub(crate) sched_total_ns: AtomicU64,
    pub(crate) sched_max_ns: AtomicU64,
    /// Delays of at least two clock ticks, recorded one by one in a histogram.
    pub(crate) sched_long: AtomicU64,
    pub(crate) sched_long_total_ns: AtomicU64,
}

/// Plain copy of [`PollCounters`], for arithmetic on the cold path.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counts {
    pub(crate) polls: u64,
    pub(crate) long_polls: u64,
    pub(crate) long_total_ns: u64,
    pub(crate) sampled_polls: u64,
    pub(crate) sampled_total_ns: u64,
    pub(crate) max_poll_ns: u64,
    pub(crate) sched_count: u64,
    pub(crate) sched_total_ns: u64,
    pub(crate) sched_max_ns: u64,
    pub(crate) sched_long: u64,
    pub(crate) sched_long_total_ns: u64,
}

impl Counts {
    pub(crate) fn add(&mut self, o: &Counts) {
        self.polls += o.polls;
        self.long_polls += o.long_polls;
        self.long_total_ns += o.long_total_ns;
        self.sampled_polls += o.sampled_polls;
        self.sampled_total_ns += o.sampled_total_ns;
        self.max_poll_ns = self.max_poll_ns.max(o.max_poll_ns);
        self.sched_count += o.sched_count;
        self.sched_total_ns += o.sched_total_ns;
        self.sched_max_ns = self.sched_max_ns.max(o.sched_max_ns);
        self.sched_long += o.sched_long;
        self.sched_long_total_ns += o.sched_long_total_ns;
    }

    /// Scheduling delays too short to be recorded one by one, and their mean.
    pub(crate) fn short_sched(&self) -> (u64, u64) {
        let n = self.sched_count.saturating_sub(self.sched_long);
        let ns = self.sched_total_ns.saturating_sub(self.sched_long_total_ns);
        (n, ns.checked_div(n).unwrap_or(0))
    }

    /// Mean exact duration of the sampled short polls, if any were sampled.
    pub(crate) fn sampled_mean_ns(&self) -> Option<u64> {
        self.sampled_total_ns.checked_div(self.sampled_polls)
    }

    /// Estimated time inside polls: long polls as measured, short ones at the sampled mean.
    pub(crate) fn busy_ns(&self, fallback_mean_ns: u64) -> u64 {
        let short = self.polls.saturating_sub(self.long_polls);
        let mean = self.sampled_mean_ns().unwrap_or(fallback_mean_ns);
        self.long_total_ns
            .saturating_add(short.saturating_mul(mean))
    }
}

impl PollCounters {
    pub(crate) fn load(&self) -> Counts {
        Counts {
            polls: self.polls.load(Relaxed),
            long_polls: self.long_polls.load(Relaxed),
            long_total_ns: self.long_total_ns.load(Relaxed),
            sampled_polls: self.sampled_polls.load(Relaxed),
            sampled_total_ns: self.sampled_total_ns.load(Relaxed),
            max_poll_ns: self.max_poll_ns.load(Relaxed),
            sched_count: self.sched_count.load(Relaxed),
            sched_total_ns: self.sched_total_ns.load(Relaxed),
            sched_max_ns: self.sched_max_ns.load(Relaxed),
            sched_long: self.sched_long.load(Relaxed),
            sched_long_total_ns: self.sched_long_total_ns.load(Relaxed),
        }
    }

    /// Hot path (per task end): add a task's counts into a location's (several tasks may
    /// fold at once: atomic adds). Only what there is to add: most tasks have no long poll,
    /// no exactly timed one, and each atomic add holds the location's line exclusively while
    /// the other workers end tasks of the same location too.
    pub(crate) fn fold(&self, c: &Counts) {
        let add = |to: &AtomicU64, v: u64| {
            if v != 0 {
                to.fetch_add(v, Relaxed);
            }
        };
        let max = |to: &AtomicU64, v: u64| {
            if v > to.load(Relaxed) {
                to.fetch_max(v, Relaxed);
            }
        };
        add(&self.polls, c.polls);
        add(&self.long_polls, c.long_polls);
        add(&self.long_total_ns, c.long_total_ns);
        add(&self.sampled_polls, c.sampled_polls);
        add(&self.sampled_total_ns, c.sampled_total_ns);
        max(&self.max_poll_ns, c.max_poll_ns);
        add(&self.sched_count, c.sched_count);
        add(&self.sched_total_ns, c.sched_total_ns);
        max(&self.sched_max_ns, c.sched_max_ns);
        add(&self.sched_long, c.sched_long);
        add(&self.sched_long_total_ns, c.sched_long_total_ns);
    }

    fn reset(&self) {
        for a in [
            &self.polls,
            &self.long_polls,
            &self.long_total_ns,
            &self.sampled_polls,
            &self.sampled_total_ns,
            &self.max_poll_ns,
            &self.sched_count,
            &self.sched_total_ns,
            &self.sched_max_ns,
            &self.sched_long,
            &self.sched_long_total_ns,
        ] {
            a.store(0, Relaxed);
        }
    }

    /// Hot path (rare branch): a long or sampled poll, by its single writer.
    pub(crate) fn add_poll(&self, ns: u64, long: bool) {
        if long {
            self.long_polls.fetch_add(1, Relaxed);
            self.long_total_ns.fetch_add(ns, Relaxed);
        } else {
            self.sampled_polls.fetch_add(1, Relaxed);
            self.sampled_total_ns.fetch_add(ns, Relaxed);
        }
        self.max_poll_ns.fetch_max(ns, Relaxed);
    }

    /// Hot path (rare branch): one scheduling delay.
    pub(crate) fn add_sched(&self, ns: u64, long: bool) {
        self.sched_count.fetch_add(1, Relaxed);
        self.sched_total_ns.fetch_add(ns, Relaxed);
        self.sched_max_ns.fetch_max(ns, Relaxed);
        if long {
            self.sched_long.fetch_add(1, Relaxed);
            self.sched_long_total_ns.fetch_add(ns, Relaxed);
        }
    }
}

/// Histograms of one task, allocated on its first long poll or measured scheduling delay.
#[derive(Debug)]
pub(crate) struct TaskHists {
    pub(crate) poll: Histogram<u32>,
    pub(crate) sched: Histogram<u32>,
}

/// One live task. Its id is kept apart, in [`TaskTable`]'s id array.
#[derive(Debug, Default)]
// Tasks polled at once by different workers do not share a cache line.
#[repr(align(64))]
pub(crate) struct TaskSlot {
    /// Index into the location table.
    pub(crate) location: AtomicU32,
    pub(crate) spawned_ns: AtomicU64,
    /// When the task became ready to run and has not been polled since (0: not waiting).
    pub(crate) ready_since_ns: AtomicU64,
    pub(crate) counts: PollCounters,
    /// The task's first long poll and first long scheduling delay (ns; 0: none) while they
    /// are in no histogram yet: most tasks have at most one of each, and keeping it here
    /// spares them allocating, filling and merging two histograms.
    pub(crate) first_long: [AtomicU64; 2],
    pub(crate) hists: Mutex<Option<Box<TaskHists>>>,
    pub(crate) name: Mutex<Option<Box<str>>>,
}

/// The live-task table: open addressing over tokio's task ids.
///
/// The ids sit in an array of their own, eight to a cache line, so that a lookup's probe
/// of [`PROBE`] neighbours reads one or two cache lines instead of one per slot: a task
/// that is not tracked (spawned while the table was full) is looked up at each of its first
/// polls and at its end, and finding it absent then costs one cache miss, not four.
///
/// Hand-written rather than a concurrent map: a lookup is a few relaxed loads with no lock
/// and no allocation, which the hot path needs at every task's start and end.
#[derive(Debug)]
pub(crate) struct TaskTable {
    /// tokio's task id per slot; 0 when the slot is free.
    ids: Box<[AtomicU64]>,
    slots: Box<[TaskSlot]>,
    mask: usize,
    /// Whether any task was given a name (the layer tier): only then does freeing a slot
    /// take its name's lock.
    named: std::sync::atomic::AtomicBool,
}

impl TaskTable {
    /// A table of at least `capacity` slots (rounded up to a power of two).
    pub(crate) fn new(capacity: usize) -> Self {
        let cap = capacity.clamp(PROBE, 1 << 24).next_power_of_two();
        TaskTable {
            ids: (0..cap).map(|_| AtomicU64::new(0)).collect(),
            slots: (0..cap).map(|_| TaskSlot::default()).collect(),
            mask: cap - 1,
            named: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Bytes the table holds (ids and slots).
    pub(crate) fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.ids) + std::mem::size_of_val(&*self.slots)
    }

    /// Hot path: the index of live task `id`'s slot, if it is tracked.
    #[inline]
    pub(crate) fn index(&self, id: u64) -> Option<usize> {
        if id == 0 {
            // 0 marks a free slot, never a task.
            return None;
        }
        let mut i = id as usize & self.mask;
        for _ in 0..PROBE {
            if self.ids[i].load(Relaxed) == id {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Hot path: the slot of live task `id`, if it is tracked.
    #[inline]
    pub(crate) fn find(&self, id: u64) -> Option<&TaskSlot> {
        self.index(id).map(|i| &self.slots[i])
    }

    /// Hot path (per task spawned): claim a slot for a new task; `None` when its
    /// neighbourhood is full.
    pub(crate) fn claim(&self, id: u64) -> Option<&TaskSlot> {
        if id == 0 {
            return None;
        }
        let mut i = id as usize & self.mask;
        for _ in 0..PROBE {
            // A plain load first: a failed compare-exchange still takes the cache line from
            // the worker that last wrote it. Acquire: see the reset that the slot's previous
            // task published when it freed it.
            if self.ids[i].load(Relaxed) == 0
                && self.ids[i]
                    .compare_exchange(0, id, Acquire, Relaxed)
                    .is_ok()
            {
                return Some(&self.slots[i]);
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Live tasks that are ready to run and not yet polled (spawned, or woken in the layer
    /// tier). Cold path: scans the table.
    pub(crate) fn ready_count(&self) -> u64 {
        self.iter()
            .filter(|(_, _, s)| s.ready_since_ns.load(Relaxed) != 0)
            .count() as u64
    }

    /// Hot path (per task end): free slot `i` (from [`TaskTable::index`]) after its task's
    /// numbers were folded away.
    pub(crate) fn release(&self, i: usize) {
        let slot = &self.slots[i];
        slot.counts.reset();
        for p in &slot.first_long {
            p.store(0, Relaxed);
        }
        slot.ready_since_ns.store(0, Relaxed);
        // A name is set at the task's spawn, which happens before its end (tokio's task
        // state orders them), so this sees the flag a named task set.
        if self.named.load(Relaxed) {
            *hist::lock(&slot.name) = None;
        }
        // Release: the next claimer sees the reset above.
        self.ids[i].store(0, Release);
    }

    /// Name the task in `slot` (the layer tier, at its span's creation).
    pub(crate) fn set_name(&self, slot: &TaskSlot, name: &str) {
        self.named.store(true, Relaxed);
        *hist::lock(&slot.name) = Some(name.into());
    }

    /// Task id in slot `index` now (0: free).
    pub(crate) fn id_at(&self, index: usize) -> u64 {
        self.ids[index].load(Acquire)
    }

    /// The slots in use, with their index and task id, for the aggregator's scan.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, u64, &TaskSlot)> {
        self.slots
            .iter()
            .enumerate()
            .map(|(i, s)| (i, self.id_at(i), s))
            .filter(|(_, id, _)| *id != 0)
    }

    /// Slot `index`.
    pub(crate) fn slot(&self, index: usize) -> &TaskSlot {
        &self.slots[index]
    }
}

/// Numbers of all tasks spawned at one location: completed tasks fold in here.
#[derive(Debug, Default)]
pub(crate) struct LocationSlot {
    /// Hash of the location; 0 when free.
    key: AtomicU64,
    /// Where the location is, set once when it is interned (no allocation: the file name is
    /// the `'static` string tokio or the layer gave).
    pub(crate) info: OnceLock<LocKey<'static>>,
    /// (Tasks spawned here are counted in [`LocationTable::spawned`], apart from what the
    /// workers write.)
    pub(crate) tasks_completed: AtomicU64,
    /// `spawn_blocking` jobs started here that finished: tasks that ended with no spawn seen
    /// (tokio calls no spawn hook for blocking tasks, only the terminate hook).
    pub(crate) blocking_completed: AtomicU64,
    /// Counts of completed tasks.
    pub(crate) folded: PollCounters,
    /// Long polls and scheduling delays of completed tasks, and of live tasks that had no
    /// histogram of their own.
    pub(crate) hists: Mutex<Option<Box<LocationHists>>>,
    /// The single long poll ([0]) or delay ([1]) of completed tasks that had no histogram
    /// of their own: recorded without a lock by the worker the task ended on.
    single_long: OnceLock<Box<[crate::queues::WaitHist; 2]>>,
}

impl LocationSlot {
    /// Hot path (rare: a completed task's single long value; `which`: 0 poll, 1 delay).
    /// The location's pair of histograms comes from `spares` the first time; false when it
    /// had none and none was spare.
    pub(crate) fn record_single_long(
        &self,
        which: usize,
        ns: u64,
        spares: &crate::spares::Spares<[crate::queues::WaitHist; 2]>,
    ) -> bool {
        let h = match self.single_long.get() {
            Some(h) => h,
            None => {
                let Some(spare) = spares.take() else {
                    return false;
                };
                // Another thread may set it first: then its pair is used, and this one freed.
                let _ = self.single_long.set(spare);
                match self.single_long.get() {
                    Some(h) => h,
                    None => return false,
                }
            }
        };
        h[which & 1].record(ns);
        true
    }

    /// The single long values recorded so far, if any.
    pub(crate) fn single_long(&self) -> Option<&[crate::queues::WaitHist; 2]> {
        self.single_long.get().map(|b| &**b)
    }
}

/// Histograms of one location.
#[derive(Debug)]
pub(crate) struct LocationHists {
    pub(crate) poll: Histogram<u64>,
    pub(crate) sched: Histogram<u64>,
}

/// A spawn location as the hot path sees it: a cheap identity plus how to name it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LocKey<'a> {
    pub(crate) file: &'a str,
    pub(crate) line: u32,
    pub(crate) col: u32,
}

impl LocKey<'_> {
    /// The location as the run file names it. Cold path (it copies the file name).
    pub(crate) fn source(&self) -> SourceLocation {
        SourceLocation::new(self.file, self.line, self.col)
    }

    /// Identity of a location: the file string's address and length (call sites in one crate
    /// share the string) with line and column. Two keys for one place are merged by the report.
    fn hash(&self) -> u64 {
        let mut h = (self.file.as_ptr() as u64) ^ ((self.file.len() as u64) << 48);
        h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(self.line);
        h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(self.col);
        h = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h | 1
    }
}

/// The spawn-location table. Slot 0 stands for "other": locations beyond the capacity.
#[derive(Debug)]
pub(crate) struct LocationTable {
    slots: Box<[LocationSlot]>,
    /// Tasks spawned per location, apart from the slots: the spawning thread writes these
    /// while workers write the slots' completion counts and read their keys; on one cache
    /// line they would bounce between them at every spawn.
    spawned: Box<[AtomicU64]>,
    /// The indices of the interned slots, in the order they were interned (0 where an index
    /// is being written), and how many: a snapshot reads these slots, not the whole table.
    used: Box<[AtomicU32]>,
    used_len: AtomicUsize,
    mask: usize,
}

impl LocationTable {
    pub(crate) fn new(capacity: usize) -> Self {
        let cap = capacity.clamp(16, 1 << 20).next_power_of_two();
        let slots: Box<[LocationSlot]> = (0..cap).map(|_| LocationSlot::default()).collect();
        slots[0].key.store(u64::MAX, Relaxed);
        let _ = slots[0].info.set(LocKey {
            file: "<other locations>",
            line: 0,
            col: 0,
        });
        LocationTable {
            slots,
            spawned: (0..cap).map(|_| AtomicU64::new(0)).collect(),
            used: (0..cap).map(|_| AtomicU32::new(0)).collect(),
            used_len: AtomicUsize::new(0),
            mask: cap - 1,
        }
    }

    /// Hot path (per task spawned): the index of `loc`, interning it on first sight; 0
    /// ("other") when the table is full. Interning allocates nothing.
    pub(crate) fn intern(&self, loc: LocKey<'static>) -> (u32, bool) {
        let key = loc.hash();
        let mut i = (key as usize) & self.mask;
        for _ in 0..self.slots.len().min(64) {
            if i != 0 {
                let slot = &self.slots[i];
                let cur = slot.key.load(Acquire);
                if cur == key {
                    return (i as u32, true);
                }
                if cur == 0 {
                    match slot.key.compare_exchange(0, key, AcqRel, Acquire) {
                        Ok(_) => {
                            let _ = slot.info.set(loc);
                            // Once per location (this thread took the slot): the slot's
                            // index for the snapshot, after its location (Release).
                            let n = self.used_len.fetch_add(1, Relaxed);
                            if let Some(u) = self.used.get(n) {
                                u.store(i as u32, Release);
                            }
                            return (i as u32, true);
                        }
                        Err(other) if other == key => return (i as u32, true),
                        Err(_) => {}
                    }
                }
            }
            i = (i + 1) & self.mask;
        }
        (0, false)
    }

    /// Hot path (per untracked task's end): the index of `loc` if it was interned, without
    /// interning it.
    pub(crate) fn find(&self, loc: LocKey<'_>) -> Option<u32> {
        let key = loc.hash();
        let mut i = (key as usize) & self.mask;
        for _ in 0..self.slots.len().min(64) {
            if i != 0 {
                match self.slots[i].key.load(Acquire) {
                    0 => return None,
                    k if k == key => return Some(i as u32),
                    _ => {}
                }
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Bytes the table holds (slots, spawn counts and the list of interned slots).
    pub(crate) fn bytes(&self) -> usize {
        std::mem::size_of_val(&*self.slots)
            + std::mem::size_of_val(&*self.spawned)
            + std::mem::size_of_val(&*self.used)
    }

    /// Cold path (a snapshot): the indices of the slots that hold a location, "other" (0)
    /// first, then in ascending order. A location being interned right now may be left
    /// out until the next call.
    pub(crate) fn used(&self) -> Vec<u32> {
        let len = self.used_len.load(Relaxed).min(self.used.len());
        let mut used: Vec<u32> = std::iter::once(0)
            .chain(
                self.used[..len]
                    .iter()
                    .map(|u| u.load(Acquire))
                    .filter(|&i| i != 0),
            )
            .collect();
        used.sort_unstable();
        used
    }

    /// Tasks spawned at location `index` so far.
    pub(crate) fn spawned(&self, index: u32) -> &AtomicU64 {
        &self.spawned[index as usize & self.mask]
    }

    pub(crate) fn get(&self, index: u32) -> &LocationSlot {
        &self.slots[index as usize & self.mask]
    }

    pub(crate) fn slots(&self) -> &[LocationSlot] {
        &self.slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_table_claims_finds_and_frees_slots_by_id() {
        let t = TaskTable::new(16);
        assert_eq!(t.capacity(), 16);
        // Ids 1, 17, 33, 49 share a home slot; the probe takes the next three.
        for id in [1, 17, 33, 49] {
            t.claim(id).expect("a slot in the neighbourhood");
        }
        assert!(t.claim(65).is_none(), "the neighbourhood of slot 1 is full");
        assert!(t.find(65).is_none());
        assert!(t.find(0).is_none() && t.claim(0).is_none());
        t.find(33).unwrap().spawned_ns.store(7, Relaxed);
        let seen: Vec<u64> = t.iter().map(|(_, id, _)| id).collect();
        assert_eq!(seen, [1, 17, 33, 49]);

        t.release(t.index(17).unwrap());
        assert!(t.find(17).is_none());
        assert_eq!(t.find(33).unwrap().spawned_ns.load(Relaxed), 7);
        let s = t.claim(65).expect("the freed slot is claimed again");
        assert_eq!(s.counts.load().polls, 0);
        assert_eq!(t.iter().count(), 4);
        let (index, _, _) = t.iter().find(|(_, id, _)| *id == 65).unwrap();
        assert_eq!(t.id_at(index), 65);
    }

    #[test]
    fn location_spawn_counts_sit_beside_their_slots() {
        let l = LocationTable::new(16);
        let key = LocKey {
            file: "src/main.rs",
            line: 3,
            col: 5,
        };
        let (i, known) = l.intern(key);
        assert!(known && i != 0);
        assert_eq!(l.find(key), Some(i));
        l.spawned(i).fetch_add(2, Relaxed);
        assert_eq!(l.spawned(i).load(Relaxed), 2);
        assert_eq!(l.spawned(0).load(Relaxed), 0, "other locations untouched");
        assert_eq!(l.get(i).info.get().unwrap().source().line, 3);
    }

    /// A snapshot reads the interned slots only: every one of them, each once, "other"
    /// first, then in the table's order; a full table's extra locations go to "other".
    #[test]
    fn the_interned_slots_are_listed_for_the_snapshot() {
        let l = LocationTable::new(16);
        assert_eq!(l.used(), [0]);
        let file: &'static str = "src/lib.rs";
        let mut interned = Vec::new();
        for line in 1..=20 {
            let key = LocKey { file, line, col: 1 };
            let (i, known) = l.intern(key);
            // Again: the same slot, not listed twice.
            assert_eq!(l.intern(key), (i, known));
            if known {
                interned.push(i);
            }
        }
        // 15 slots besides "other".
        assert_eq!(interned.len(), 15);
        interned.push(0);
        interned.sort_unstable();
        assert_eq!(l.used(), interned);
        let every: Vec<u32> = (0..16).filter(|&i| l.get(i).info.get().is_some()).collect();
        assert_eq!(l.used(), every);
    }
}
