//! Hot path: everything that runs per poll, per wake and per task start and end, in every
//! tier. The runtime hooks ([`crate::hooks`]) and the subscriber layer ([`crate::layer`]) call
//! only these functions.
//!
//! The rules (STYLE §2): read the clock, update atomics and thread-local cells, take a
//! per-task or per-worker lock for O(1) work on a rare branch; never block, format, log or
//! loop without a bound. Rare branches are `#[cold]`.
//!
//! A poll costs, on its common path: one thread-local access, two relaxed loads of the coarse
//! clock, two release stores of the worker's poll state (for the watchdog), and one plain
//! increment of the worker's own count for the task. One poll in `sample_every` per worker is
//! timed exactly ([`Recorder::start_exact_timing`]); polls of at least two clock ticks are
//! recorded one by one ([`Recorder::record_timed_poll`]).

use std::cell::Cell;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use crate::clock;
use crate::hist::{self, lock};
use crate::recorder::{Recorder, MAX_TASK_HISTS};
use crate::tables::{LocKey, LocationHists, LocationSlot, TaskHists, TaskSlot};
use crate::workers::{HeldCompletions, TaskPollCount, Worker, HELD_COMPLETIONS};

thread_local! {
    pub(crate) static THREAD: ThreadState = const { ThreadState::new() };
}

/// A thread's private view of its worker: plain cells, no atomics.
#[derive(Debug)]
pub(crate) struct ThreadState {
    /// The recording the cells below belong to.
    pub(crate) generation: Cell<u64>,
    pub(crate) worker: Cell<Option<&'static Worker>>,
    /// The worker's poll state as this thread last wrote it (see [`Worker::state`]).
    pub(crate) seq: Cell<u64>,
    /// Polls until the next exactly timed one.
    pub(crate) countdown: Cell<u32>,
    /// Exact start of a sampled poll (0: this poll is not timed exactly).
    pub(crate) exact_start_ns: Cell<u64>,
}

impl ThreadState {
    const fn new() -> Self {
        ThreadState {
            generation: Cell::new(0),
            worker: Cell::new(None),
            seq: Cell::new(0),
            countdown: Cell::new(1),
            exact_start_ns: Cell::new(0),
        }
    }
}

// The poll probe reads `THREAD` inside the sampler's signal handler: a constant-initialized
// thread-local with nothing to drop is a plain thread-local load, registering no destructor.
const _: () = assert!(!std::mem::needs_drop::<ThreadState>());

/// Which of a task's two long-value histograms a value goes to.
#[derive(Debug, Clone, Copy)]
enum LongValue {
    /// A poll of at least two clock ticks.
    Poll = 0,
    /// A scheduling delay of at least two clock ticks.
    SchedDelay = 1,
}

/// Untracked completions a worker counts on its own before adding them to their location.
const COMPLETIONS_BATCH: u64 = 1024;

impl Recorder {
    // === polls ===

    /// Hot path: a poll of task `id` begins on this thread. `sched_ns` is tokio's measured
    /// scheduling latency, when the runtime tracks it. `WAKES` is true for the layer tier,
    /// which sees wakes: every poll may then end a wake-to-poll delay.
    #[inline]
    pub(crate) fn poll_start<const WAKES: bool>(&'static self, id: u64, sched_ns: Option<u64>) {
        THREAD.with(|t| self.poll_start_fast::<WAKES>(t, id, sched_ns))
    }

    /// Hot path: the common start of a poll (a registered thread outside any poll, a busy
    /// service's clock, the task this worker's entry counts, no exact timing due: the hooks
    /// tier's polls but a few) with no call on the way and no stack frame (it saves five
    /// registers on x86-64 with rustc 1.95, the full path six and a frame); any other goes
    /// to [`Recorder::poll_start_on`], which does what this does and more. The layer tier
    /// (`WAKES`) always goes on.
    #[inline(never)]
    fn poll_start_fast<const WAKES: bool>(
        &'static self,
        t: &ThreadState,
        id: u64,
        sched_ns: Option<u64>,
    ) {
        if let (false, Some(w), Some(now)) = (WAKES, t.worker.get(), clock::published_ns()) {
            let seq = t.seq.get();
            let entry = w.poll_count(id);
            let countdown = t.countdown.get();
            // The count last: it is the one condition with an effect.
            if t.generation.get() == self.generation
                && seq & 1 == 0
                && countdown > 1
                && entry.count(id)
            {
                publish_poll_start_at(t, w, id, seq, now);
                t.countdown.set(countdown - 1);
                return;
            }
        }
        self.poll_start_on::<WAKES>(t, id, sched_ns)
    }

    /// The full start of a poll: registers the thread on its first event, leaves a poll inside
    /// a poll alone, hands a count entry over, ends a task's wait to be polled, starts an exact
    /// timing when one is due.
    #[cold]
    #[inline(never)]
    fn poll_start_on<const WAKES: bool>(
        &'static self,
        t: &ThreadState,
        id: u64,
        mut sched_ns: Option<u64>,
    ) {
        let Some(w) = self.thread_worker(t) else {
            return;
        };
        let now = match publish_poll_start(t, w, id) {
            Some(now) => now,
            // Task hooks: the poll this thread is inside never ended as far as asyncprof saw.
            None if !WAKES && !in_another_runtime(w) => self.poll_never_ended(t, w, id),
            None => return,
        };
        let entry = w.poll_count(id);
        if !entry.count(id) && self.first_poll_here(w, entry, id, now, sched_ns) {
            // Its first poll's delay is recorded (tokio's): not again below.
            sched_ns = None;
        }
        if WAKES {
            self.end_ready_wait(w, id, now);
        }
        let countdown = t.countdown.get();
        if countdown <= 1 {
            t.countdown.set(self.sample_every);
            self.start_exact_timing(t, w, id, sched_ns);
        } else {
            t.countdown.set(countdown - 1);
        }
    }

    /// Task `id`'s poll begins on worker `w` while the poll this thread began before is, as
    /// far as asyncprof saw, still running: its end was never reported. tokio keeps one
    /// callback per hook, so an after-poll hook set on the builder after asyncprof's replaces
    /// it (a second runtime's poll inside `block_in_place` nests, and does not come here). The
    /// poll before is counted as never ended and this one is published as a poll of its own
    /// (the watchdog sees a new poll), so that each is watched to the next one's start (or the
    /// park) instead of every poll of a busy period adding up to one. Cold: never, with
    /// asyncprof's hooks as installed. Returns the coarse start.
    #[cold]
    #[inline(never)]
    fn poll_never_ended(&self, t: &ThreadState, w: &Worker, id: u64) -> u64 {
        lost_poll_end(t, w);
        let now = clock::coarse_ns();
        // Published as if the poll before had ended (its state one on): odd still, and
        // another poll's.
        publish_poll_start_at(t, w, id, t.seq.get() + 1, now);
        now
    }

    /// Per park: a worker parks only between its polls, so a poll still open on this thread
    /// never ended as far as asyncprof saw (its after-poll hook was replaced): it ends here,
    /// and is counted. (The stable tier's busy period ended just before, at `busy_end`.)
    #[inline]
    pub(crate) fn parked_with(&'static self, t: &ThreadState, w: &'static Worker) {
        if t.seq.get() & 1 == 1 && !in_another_runtime(w) && publish_poll_end(t, w) {
            lost_poll_end(t, w);
        }
    }

    /// Hot path: the poll begun by [`Recorder::poll_start`] on this thread ends.
    #[inline]
    pub(crate) fn poll_end(&'static self) {
        THREAD.with(|t| self.poll_end_fast(t))
    }

    /// Hot path: the common end of a poll (shorter than two ticks, not timed exactly, on a
    /// busy service's clock) with no call on the way; any other goes to
    /// [`Recorder::poll_end_on`].
    #[inline(never)]
    fn poll_end_fast(&'static self, t: &ThreadState) {
        if let (Some(w), Some(now)) = (t.worker.get(), clock::published_ns()) {
            let seq = t.seq.get();
            if t.generation.get() == self.generation
                && seq & 1 == 1
                && t.exact_start_ns.get() == 0
                && now.saturating_sub(w.poll_start_ns.load(Relaxed)) < self.long_threshold_ns
            {
                publish_poll_end_at(t, w, seq);
                return;
            }
        }
        self.poll_end_on(t)
    }

    /// The full end of a poll: a long one or one timed exactly is recorded.
    #[cold]
    #[inline(never)]
    fn poll_end_on(&'static self, t: &ThreadState) {
        let Some(w) = t.worker.get() else { return };
        if t.generation.get() != self.generation || !publish_poll_end(t, w) {
            return;
        }
        // The start this thread published (`publish_poll_start`): only it writes it.
        let coarse = clock::coarse_ns().saturating_sub(w.poll_start_ns.load(Relaxed));
        // A short poll not sampled is not timed: no call into the cold recording for it.
        if coarse >= self.long_threshold_ns || t.exact_start_ns.get() != 0 {
            self.record_timed_poll(t, w, coarse);
        }
    }

    /// Hot path (stable tier, at every unpark): the calling worker is busy from now on. The
    /// watchdog sees a busy period as it sees a poll (with no task).
    #[inline]
    pub(crate) fn busy_start(&'static self) {
        THREAD.with(|t| {
            if let Some(w) = self.thread_worker(t) {
                publish_poll_start(t, w, 0);
            }
        })
    }

    /// Hot path (stable tier, at every park): the calling worker's busy period ends.
    #[inline]
    pub(crate) fn busy_end(&'static self) {
        THREAD.with(|t| {
            if let Some(w) = self.thread_worker(t) {
                publish_poll_end(t, w);
            }
        })
    }

    /// Hot path: this thread's worker entry, registering the thread on its first event.
    #[inline(always)]
    pub(crate) fn thread_worker(&'static self, t: &ThreadState) -> Option<&'static Worker> {
        match t.worker.get() {
            Some(w) if t.generation.get() == self.generation => Some(w),
            _ => self.register_thread(t),
        }
    }

    /// Hot path (one poll in `sample_every`): time this poll exactly, and record tokio's
    /// scheduling latency when it measured one.
    #[cold]
    #[inline(never)]
    fn start_exact_timing(&self, t: &ThreadState, w: &Worker, id: u64, sched_ns: Option<u64>) {
        t.exact_start_ns.set(clock::exact_ns().max(1));
        if let Some(ns) = sched_ns {
            self.record_sched_delay(w, self.tasks.find(id), ns);
        }
    }

    /// Hot path (rare: a task this worker has not polled lately): take over the task's count
    /// entry (handing the previous task's count to that task's slot), and end the task's wait
    /// to be polled if it was just spawned. When tokio timed this poll's wait (`tokio_ns`: the
    /// `schedule-latency` feature), the first poll's delay recorded is tokio's, not ours as
    /// well; true when it was.
    #[cold]
    #[inline(never)]
    fn first_poll_here(
        &self,
        w: &Worker,
        entry: &TaskPollCount,
        id: u64,
        now: u64,
        tokio_ns: Option<u64>,
    ) -> bool {
        // The entry's count is full (the same task) or another task's: hand it to its slot.
        let (old, polls) = entry.take_over(id);
        if old != 0 && polls != 0 {
            if let Some(s) = self.tasks.find(old) {
                s.counts.polls.fetch_add(polls, Relaxed);
            }
        }
        match tokio_ns {
            Some(ns) => {
                let Some(s) = self.tasks.find(id) else {
                    return false;
                };
                let first = s.ready_since_ns.swap(0, Relaxed) != 0;
                if first {
                    self.record_sched_delay(w, Some(s), ns);
                }
                first
            }
            None => {
                self.end_ready_wait(w, id, now);
                false
            }
        }
    }

    /// Hot path: task `id`'s poll begins at `now`; if the task was waiting to be polled
    /// (spawned, or woken in the layer tier), that wait ends and is recorded as a scheduling
    /// delay.
    #[inline]
    fn end_ready_wait(&self, w: &Worker, id: u64, now: u64) {
        let Some(s) = self.tasks.find(id) else { return };
        if s.ready_since_ns.load(Relaxed) != 0 {
            let since = s.ready_since_ns.swap(0, Relaxed);
            if since != 0 {
                self.record_sched_delay(w, Some(s), now.saturating_sub(since));
            }
        }
    }

    /// Hot path (rare: a measured scheduling delay): into the worker's histogram and the
    /// task's counters; a long one one by one.
    fn record_sched_delay(&self, w: &Worker, slot: Option<&TaskSlot>, ns: u64) {
        let outliers = &self.loss.histogram_outliers;
        hist::record(&mut lock(&w.hists).sched, ns, outliers);
        let Some(s) = slot else { return };
        let long = ns >= self.long_threshold_ns;
        s.counts.add_sched(ns, long);
        if long {
            self.record_long(s, ns, LongValue::SchedDelay);
        }
    }

    /// Hot path (rare: a long poll or delay of the task in `s`). The task's first of each kind
    /// waits in its slot ([`TaskSlot::first_long`]); a second one moves both into the task's
    /// own histograms when it has or can get them, else into its location's (which its own
    /// fold into at the end anyway).
    fn record_long(&self, s: &TaskSlot, ns: u64, which: LongValue) {
        let k = which as usize;
        if s.first_long[k]
            .compare_exchange(0, ns.max(1), Relaxed, Relaxed)
            .is_ok()
        {
            return;
        }
        let outliers = &self.loss.histogram_outliers;
        let first = s.first_long[k].swap(0, Relaxed);
        let mut g = self.task_hists(s);
        if let Some(h) = g.as_mut() {
            let h = match which {
                LongValue::Poll => &mut h.poll,
                LongValue::SchedDelay => &mut h.sched,
            };
            for v in [first, ns].into_iter().filter(|v| *v != 0) {
                hist::record(h, v, outliers);
            }
            return;
        }
        drop(g);
        let loc = self.locations.get(s.location.load(Relaxed));
        let kept = self.with_location_hists(loc, |lh| {
            let h = match which {
                LongValue::Poll => &mut lh.poll,
                LongValue::SchedDelay => &mut lh.sched,
            };
            for v in [first, ns].into_iter().filter(|v| *v != 0) {
                hist::record(h, v, outliers);
            }
        });
        if !kept {
            let n = [first, ns].iter().filter(|v| **v != 0).count() as u64;
            self.loss.dropped_long_values.fetch_add(n, Relaxed);
        }
    }

    /// Hot path (rare: a location's long values): run `f` on location `loc`'s histograms,
    /// giving it spare ones if it has none yet. False when it had none and none were spare.
    fn with_location_hists(&self, loc: &LocationSlot, f: impl FnOnce(&mut LocationHists)) -> bool {
        let mut g = lock(&loc.hists);
        if g.is_none() {
            *g = self.spares.location_hists.take();
        }
        match g.as_mut() {
            Some(h) => {
                f(h);
                true
            }
            None => false,
        }
    }

    /// Hot path (rare: once per task at most): the task's histograms, spare ones on first use
    /// while fewer than [`MAX_TASK_HISTS`] exist and one is spare.
    fn task_hists<'s>(&self, s: &'s TaskSlot) -> std::sync::MutexGuard<'s, Option<Box<TaskHists>>> {
        let mut g = lock(&s.hists);
        if g.is_none() {
            if self.task_counters.hists.fetch_add(1, Relaxed) < MAX_TASK_HISTS {
                *g = self.spares.task_hists.take();
            }
            if g.is_none() {
                self.task_counters.hists.fetch_sub(1, Relaxed);
            }
        }
        g
    }

    /// Hot path (rare: a long poll, or one timed exactly): record its duration in the
    /// worker's histograms and the task's counters.
    #[cold]
    #[inline(never)]
    fn record_timed_poll(&self, t: &ThreadState, w: &Worker, coarse: u64) {
        // Called for a long or sampled poll only (`poll_end_on`).
        let Some((ns, long)) = self.timed(coarse, t.exact_start_ns.replace(0)) else {
            return;
        };
        let outliers = &self.loss.histogram_outliers;
        {
            let mut h = lock(&w.hists);
            if long {
                hist::record(&mut h.long, ns, outliers);
            } else {
                hist::record(&mut h.sampled, ns, outliers);
            }
        }
        w.counts.add_poll(ns, long);
        if let Some(s) = self.tasks.find(w.task_id.load(Relaxed)) {
            self.add_task_poll(s, ns, long);
        }
    }

    // === wakes ===

    /// Hot path (layer tier, per wake): task `id` was woken; its next poll measures the delay
    /// from now.
    #[inline]
    pub(crate) fn task_woken(&self, id: u64) {
        if let Some(slot) = self.tasks.find(id) {
            // Only the first wake counts: waking a task that is already scheduled does not
            // reset its delay.
            let _ =
                slot.ready_since_ns
                    .compare_exchange(0, self.task_time().max(1), Relaxed, Relaxed);
        }
    }

    // === task start and end ===

    /// Hot path (per task spawned): a task was spawned at `loc`. It is ready to run from now,
    /// so that its first poll measures the spawn-to-first-poll delay.
    pub(crate) fn task_spawned(&self, id: u64, loc: LocKey<'static>, name: Option<&str>) {
        self.task_counters.spawned.0.fetch_add(1, Relaxed);
        let (li, known) = self.locations.intern(loc);
        if !known {
            self.loss.untracked_locations.fetch_add(1, Relaxed);
        }
        self.locations.spawned(li).fetch_add(1, Relaxed);
        let Some(slot) = self.tasks.claim(id) else {
            self.loss.untracked_tasks.fetch_add(1, Relaxed);
            return;
        };
        slot.location.store(li, Relaxed);
        let now = self.task_time();
        slot.spawned_ns.store(now, Relaxed);
        slot.ready_since_ns.store(now.max(1), Relaxed);
        if let Some(name) = name.filter(|n| !n.is_empty()) {
            // Layer tier only, at the task span's creation (once per span).
            self.tasks.set_name(slot, name);
        }
    }

    /// Hot path (per task end): task `id` completed (or was cancelled): fold its numbers into
    /// its location.
    ///
    /// A task that is not in the table was either spawned while the table was full (it is
    /// counted at its location when `loc` names one that has such tasks alive) or never seen
    /// spawning at all (tokio runs its workers as blocking tasks that report only their end):
    /// those are ignored.
    pub(crate) fn task_terminated(&self, id: u64, loc: Option<LocKey<'static>>) {
        let Some(index) = self.tasks.index(id) else {
            if let Some(l) = loc {
                self.untracked_task_terminated(l);
            }
            return;
        };
        self.task_counters.completed.0.fetch_add(1, Relaxed);
        let slot = self.tasks.slot(index);
        self.last_poll_so_far(slot, id);
        let loc = self.locations.get(slot.location.load(Relaxed));
        let mut counts = slot.counts.load();
        counts.polls = self.task_polls(slot, id);
        loc.folded.fold(&counts);
        loc.tasks_completed.fetch_add(1, Relaxed);
        // Only a task that had a long poll or delay has histograms of its own, and while none
        // has, none is looked for (the count is raised, under the slot's lock, before a task
        // takes some). A task's last after-poll hook can run after its end, as tokio releases
        // the task before calling it: histograms taken then stay with the slot and go to its
        // next task, with or without this check.
        let hists = if self.task_counters.hists.load(Relaxed) != 0 {
            lock(&slot.hists).take()
        } else {
            None
        };
        if let Some(mut h) = hists {
            self.task_counters.hists.fetch_sub(1, Relaxed);
            let kept = self.with_location_hists(loc, |lh| {
                hist::merge(&mut lh.poll, &h.poll);
                hist::merge(&mut lh.sched, &h.sched);
            });
            if !kept {
                let n = h.poll.len() + h.sched.len();
                self.loss.dropped_long_values.fetch_add(n, Relaxed);
            }
            // Emptied for the next task that needs histograms (a reset walks the counts, as
            // the merge above did).
            h.poll.reset();
            h.sched.reset();
            self.spares.task_hists.give_back(h);
        }
        for (k, first) in slot.first_long.iter().enumerate() {
            let v = first.load(Relaxed);
            if v != 0 && !loc.record_single_long(k, v, &self.spares.single_long) {
                self.loss.dropped_long_values.fetch_add(1, Relaxed);
            }
        }
        self.tasks.release(index);
    }

    /// Per task end: tokio ends a task inside its last poll (the future returned `Ready`, or
    /// its cancellation ran there), before that poll's after-poll hook, and the task's slot is
    /// free by the time the hook runs. When this thread is in that poll, the poll's time so far
    /// is the task's, timed as its end would time it (exactly when it is sampled, by the
    /// coarse clock when long); the poll's end still records it for the worker. Without
    /// this, a task's last poll was missing from its location: a task of one long poll
    /// showed none.
    #[inline]
    fn last_poll_so_far(&self, slot: &TaskSlot, id: u64) {
        THREAD.with(|t| {
            let Some(w) = t.worker.get() else { return };
            if t.generation.get() != self.generation
                || t.seq.get() & 1 == 0
                || w.task_id.load(Relaxed) != id
            {
                return;
            }
            let coarse = clock::coarse_ns().saturating_sub(w.poll_start_ns.load(Relaxed));
            // A short poll not sampled: counted (its task's count), timed at the mean.
            if let Some((ns, long)) = self.timed(coarse, t.exact_start_ns.get()) {
                self.add_task_poll(slot, ns, long);
            }
        })
    }

    /// A poll's length so far and whether it is long, from its coarse length and its exact
    /// start (0: not sampled); `None` for a short poll not sampled, which is not timed.
    fn timed(&self, coarse: u64, exact_start: u64) -> Option<(u64, bool)> {
        if coarse < self.long_threshold_ns && exact_start == 0 {
            return None;
        }
        let ns = if exact_start != 0 {
            clock::exact_ns().saturating_sub(exact_start)
        } else {
            coarse
        };
        Some((
            ns,
            coarse >= self.long_threshold_ns || ns >= self.long_threshold_ns,
        ))
    }

    /// A timed poll of the task in `s`: into its counters, a long one one by one.
    fn add_task_poll(&self, s: &TaskSlot, ns: u64, long: bool) {
        s.counts.add_poll(ns, long);
        if long {
            self.record_long(s, ns, LongValue::Poll);
        }
    }

    /// Hot path (per task end of an untracked task): count the completion at location `li`.
    /// On a worker, counted in the worker's own entry for the location; added to the location
    /// when another location takes the entry over, the count is large, or the thread stops.
    /// A task not in the table ended: one spawned while the table was full, or a
    /// `spawn_blocking` job (tokio calls the terminate hook for those, never the spawn
    /// hook): a location where no task was spawned. Runs on a blocking thread for the latter.
    fn untracked_task_terminated(&self, l: LocKey<'static>) {
        match self.locations.find(l) {
            Some(li) if self.locations.spawned(li).load(Relaxed) > 0 => {
                self.untracked_task_completed(li);
            }
            _ => {
                let (li, _) = self.locations.intern(l);
                if li != 0 {
                    self.locations
                        .get(li)
                        .blocking_completed
                        .fetch_add(1, Relaxed);
                }
            }
        }
    }

    fn untracked_task_completed(&self, li: u32) {
        let worker = THREAD.with(|t| {
            t.worker
                .get()
                .filter(|_| t.generation.get() == self.generation)
        });
        let Some(w) = worker else {
            self.add_untracked_completions(li, 1);
            return;
        };
        let held = &w.held_completions[li as usize % HELD_COMPLETIONS];
        let count = held.count.load(Relaxed);
        if held.location.load(Relaxed) == li && count < COMPLETIONS_BATCH {
            held.count.store(count + 1, Relaxed);
        } else {
            self.release_held_completions(held);
            held.location.store(li, Relaxed);
            held.count.store(1, Relaxed);
        }
    }

    /// Hot path (rare: a held count handed on): add a worker's held untracked completions to
    /// their location. Called by the worker's
    /// own thread (the only one that writes them): the count is taken out before it is added,
    /// so a snapshot in between misses it for a moment rather than counting it twice.
    pub(crate) fn release_held_completions(&self, held: &HeldCompletions) {
        let n = held.count.load(Relaxed);
        if n == 0 {
            return;
        }
        held.count.store(0, Relaxed);
        self.add_untracked_completions(held.location.load(Relaxed), n);
    }

    /// Hot path (rare): `n` untracked tasks spawned at location `li` completed. A location
    /// never counts more
    /// completions than spawns: tasks that end without having been seen spawning are not its.
    fn add_untracked_completions(&self, li: u32, n: u64) {
        if li == 0 {
            return;
        }
        let spawned = self.locations.spawned(li).load(Relaxed);
        let counter = &self.locations.get(li).tasks_completed;
        if let Ok(done) = counter.fetch_update(Relaxed, Relaxed, |d| {
            (d < spawned).then(|| d.saturating_add(n).min(spawned))
        }) {
            let added = done.saturating_add(n).min(spawned) - done;
            self.task_counters.completed.0.fetch_add(added, Relaxed);
        }
    }

    /// Hot path (layer tier, per task end): task `id`'s span closed. tracing enters a task's
    /// span once more to drop its future, after its last poll; that enter was counted as a
    /// poll, so take it back.
    pub(crate) fn task_closed_by_layer(&'static self, id: u64) {
        if let Some(w) = THREAD.with(|t| self.thread_worker(t)) {
            w.non_poll_enters.fetch_add(1, Relaxed);
            // The drop's enter was counted on this thread, in its entry for the task.
            let entry = w.poll_count(id);
            if !entry.uncount(id) {
                if let Some(slot) = self.tasks.find(id) {
                    let _ = slot
                        .counts
                        .polls
                        .fetch_update(Relaxed, Relaxed, |p| p.checked_sub(1));
                }
            }
        }
        self.task_terminated(id, None);
    }
}

/// The poll open on this thread never ended as far as asyncprof saw: counted, and an exact
/// timing begun in it is not the next poll's.
fn lost_poll_end(t: &ThreadState, w: &Worker) {
    w.never_ended.fetch_add(1, Relaxed);
    t.exact_start_ns.set(0);
}

/// Whether this thread, inside a poll of worker `w`'s runtime, now runs another runtime: a
/// `block_in_place` in that poll that drives an instrumented runtime, whose polls and parks
/// nest inside the open poll (its end comes later) rather than follow a poll whose end was
/// lost. Cold: asked only of a thread found inside a poll.
fn in_another_runtime(w: &Worker) -> bool {
    let mine = w.runtime.load(Relaxed);
    // A current-thread runtime's thread cannot `block_in_place` (tokio panics): one that
    // drives another runtime after the first does so in turn, not nested.
    mine != 0
        && !w.current_thread.load(Relaxed)
        && tokio::runtime::Handle::try_current()
            .is_ok_and(|h| crate::workers::runtime_id(h.id()) != mine)
}

/// Hot path: publish to the watchdog that a poll (or, in the stable tier, a busy period) of
/// task `id` begins on worker `w`. Returns the coarse start, or `None` when the worker is
/// already inside one (a poll inside a poll, as a nested `block_on` makes: the outer one
/// keeps the worker).
#[inline(always)]
fn publish_poll_start(t: &ThreadState, w: &Worker, id: u64) -> Option<u64> {
    let seq = t.seq.get();
    if seq & 1 == 1 {
        return None;
    }
    let now = clock::coarse_ns();
    publish_poll_start_at(t, w, id, seq, now);
    Some(now)
}

/// Hot path: [`publish_poll_start`] once its state `seq` (even) and time `now` are known.
#[inline(always)]
fn publish_poll_start_at(t: &ThreadState, w: &Worker, id: u64, seq: u64, now: u64) {
    w.poll_start_ns.store(now, Relaxed);
    w.task_id.store(id, Relaxed);
    t.seq.set(seq + 1);
    // Release: a watchdog that reads this odd state also sees the start and task above.
    w.state.store(seq + 1, Release);
}

/// Hot path: publish that the poll or busy period [`publish_poll_start`] began has ended.
/// False when none was open.
#[inline(always)]
fn publish_poll_end(t: &ThreadState, w: &Worker) -> bool {
    let seq = t.seq.get();
    if seq & 1 == 0 {
        return false;
    }
    publish_poll_end_at(t, w, seq);
    true
}

/// Hot path: [`publish_poll_end`] once its state `seq` (odd) is known.
#[inline(always)]
fn publish_poll_end_at(t: &ThreadState, w: &Worker, seq: u64) {
    t.seq.set(seq + 1);
    // Release: pairs with the watchdog's acquire load, like `publish_poll_start`.
    w.state.store(seq + 1, Release);
}

/// The stack sampler's poll probe, run inside its signal handler on a worker thread: this
/// thread's worker state as it last wrote it (odd: inside that poll or busy period). A
/// constant-initialized thread-local of plain cells with nothing to drop: reading it
/// allocates nothing, takes no lock and cannot panic.
pub(crate) fn thread_poll_state() -> u64 {
    THREAD.try_with(|t| t.seq.get()).unwrap_or(0)
}

/// Whether worker `w` is inside a poll now (its state is odd); for the watchdog's idle check.
/// Acquire: pairs with the release stores above.
#[inline]
pub(crate) fn in_poll(w: &Worker) -> bool {
    w.state.load(Acquire) & 1 == 1
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::LongValue;
    use crate::hist::lock;
    use crate::recorder::{Recorder, Settings};
    use crate::tables::LocKey;

    fn recorder() -> &'static Recorder {
        Box::leak(Box::new(Recorder::new(Settings {
            config: asyncprof_format::Config::default(),
            program: "poll-test".into(),
            args: Vec::new(),
        })))
    }

    const HERE: LocKey<'static> = LocKey {
        file: "src/poll_test.rs",
        line: 3,
        col: 5,
    };

    #[test]
    fn long_values_without_spare_histograms_are_counted_not_allocated() {
        let rec = recorder();
        let dropped = || rec.loss.dropped_long_values.load(Relaxed);
        // Every spare taken: the hot path has nothing to put a task's or a location's long
        // values in, and must not allocate.
        while rec.spares.task_hists.take().is_some() {}
        while rec.spares.location_hists.take().is_some() {}
        rec.task_spawned(7, HERE, None);
        let slot = rec.tasks.find(7).unwrap();
        rec.record_long(slot, 5_000_000, LongValue::Poll);
        assert_eq!(dropped(), 0, "a task's first long poll waits in its slot");
        rec.record_long(slot, 6_000_000, LongValue::Poll);
        assert_eq!(dropped(), 2, "both values counted as dropped");
        assert!(lock(&slot.hists).is_none());

        // The aggregator's refill: the task gets histograms again.
        rec.spares.refill();
        rec.record_long(slot, 7_000_000, LongValue::Poll);
        rec.record_long(slot, 8_000_000, LongValue::SchedDelay);
        rec.record_long(slot, 9_000_000, LongValue::Poll);
        assert_eq!(dropped(), 2);
        let hists = lock(&slot.hists);
        let h = hists.as_ref().expect("spare task histograms");
        assert_eq!((h.poll.len(), h.sched.len()), (2, 0));
        drop(hists);

        // At its end the task's histograms go to its location's (spare too), and its box
        // back to the spares, emptied.
        let spare_before = rec.spares.task_hists.len();
        rec.task_terminated(7, Some(HERE));
        assert_eq!(rec.spares.task_hists.len(), spare_before + 1);
        let li = rec.locations.find(HERE).unwrap();
        let loc = lock(&rec.locations.get(li).hists);
        assert_eq!(loc.as_ref().map(|h| h.poll.len()), Some(2));
        assert_eq!(dropped(), 2);
    }
}
