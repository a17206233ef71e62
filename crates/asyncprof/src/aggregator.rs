//! The aggregator thread: hands the watchdog's stall records and a snapshot of the recorder
//! to the writer, batch by batch, on a timer (never per event).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

use asyncprof_format::{self as format, RecordKind};

use crate::hist::lock;
use crate::profiler::Shared;
use crate::recorder::Recorder;
use crate::watchdog::PollEvidence;
use crate::writer::Batch;

/// What the header says that is learnt only once tasks run: the tier (from the first task
/// event), the runtime's flavor and workers (from its first worker), what the scheduling
/// delays cover. A change is written as a new header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Facts {
    tier: format::Tier,
    flavor: format::Flavor,
    workers: u32,
    sees_wakes: bool,
}

impl Facts {
    pub(crate) fn of(recorder: &Recorder) -> Self {
        Facts {
            tier: recorder.tier(),
            flavor: recorder.flavor(),
            workers: recorder.worker_count.load(Relaxed),
            sees_wakes: recorder.sees_wakes.load(Relaxed),
        }
    }
}

/// The run file's header, with what is known now.
pub(crate) fn header(
    recorder: &Recorder,
    facts: Facts,
    start_unix_ms: u64,
    part: u32,
) -> format::Header {
    let mut h = format::Header::new(recorder.settings.program.clone());
    h.part = part;
    h.args = recorder.settings.args.clone();
    h.pid = std::process::id();
    h.start_unix_ms = start_unix_ms;
    h.tier = facts.tier;
    h.flavor = facts.flavor;
    h.workers = facts.workers;
    h.config = recorder.settings.config.clone();
    if facts.sees_wakes {
        h.config.schedule_source = format::ScheduleSource::EveryWake;
    }
    h
}

/// Where stalls and snapshots go besides the run file, when asked for: stall events, the
/// metrics endpoint.
#[derive(Debug, Default)]
pub(crate) struct Outputs {
    pub(crate) events: Option<crate::events::StallEvents>,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: Option<std::sync::Arc<crate::metrics::State>>,
}

impl Outputs {
    fn stall(&mut self, record: &format::StallRecord, recorder: &Recorder) {
        if let Some(events) = self.events.as_mut() {
            events.offer(record, recorder);
        }
        #[cfg(feature = "metrics")]
        if let Some(metrics) = self.metrics.as_ref() {
            metrics.stall(record);
        }
    }

    /// The snapshot just written, for whoever keeps the last one.
    #[cfg_attr(
        not(feature = "metrics"),
        allow(clippy::needless_pass_by_value, unused_variables)
    )]
    fn snapshot(&self, snapshot: format::Snapshot) {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = self.metrics.as_ref() {
            metrics.snapshot(snapshot);
        }
    }
}

/// When the recording started, and what its first header said.
#[derive(Debug, Clone)]
pub(crate) struct Start {
    pub(crate) started: Instant,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub(crate) unix_ms: u64,
    /// The facts the first header was written with.
    pub(crate) facts: Facts,
    /// The run file's size limit, and what `start` sent to it (the preamble and first header).
    pub(crate) file: FileLimit,
}

/// The run file's size limit ([`format::Config::max_file_bytes`]), kept where every batch after
/// the first header is made. A part of the run takes at most half the limit (plus the one
/// batch that starts it): the batch that would pass it starts a new part, which the writer
/// puts in a new file at the run file's path after renaming the full one (the part before),
/// whose own part before is then gone. The two parts on disk take at most the limit; the
/// newest holds the run from its start on, its snapshots the whole run's totals.
#[derive(Debug, Clone)]
pub(crate) struct FileLimit {
    /// A part's bytes at most; 0: no limit.
    part_max: u64,
    /// Bytes sent to the writer for the current part.
    sent: u64,
    /// The current part (0: the first).
    part: u32,
    /// The file name a full part is renamed to, and the run file's.
    previous: String,
    next: String,
}

impl FileLimit {
    /// The limit `max` (0: none) for the run file at `path`, whose first part has `sent`
    /// bytes already (the preamble and the first header).
    pub(crate) fn new(max: u64, sent: usize, path: &std::path::Path) -> Self {
        let name = |p: &std::path::Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        FileLimit {
            part_max: max / 2,
            sent: sent as u64,
            part: 0,
            previous: name(&crate::writer::previous_part_path(path)),
            next: name(path),
        }
    }

    /// Whether a batch of `len` bytes starts a new part.
    fn needs_new_part(&self, len: usize) -> bool {
        self.part_max != 0 && self.sent.saturating_add(len as u64) > self.part_max
    }

    /// A batch of `len` bytes went to the writer, in a new part or not.
    fn sent(&mut self, len: usize, new_part: bool) {
        if new_part {
            self.part += 1;
            self.sent = len as u64;
        } else {
            self.sent = self.sent.saturating_add(len as u64);
        }
    }
}

/// Keeps out the stable tier's stalls that nothing shows to be a poll.
///
/// The stable tier sees busy periods, not polls: a busy period is a stall while tokio's busy
/// time for its worker stands still ([`crate::watchdog`]). tokio publishes that time only when
/// the worker parks and every `event_interval` turns of its loop, so it stands still too while
/// the thread is in the scheduler (a zero-timeout park, waking other workers) with no poll
/// running, or waits for a CPU on a crowded machine. A busy-period stall is held back while
/// every stack it has shows the scheduler between polls
/// ([`format::culprit::in_scheduler_between_polls`]), or while it has no stack: with signals
/// on, a stack is what shows a poll; with signals off a stall has none, and a look that saw its
/// thread run or sleep sends it (class unknown: every look found it waiting for a CPU). It is
/// sent as soon as a stack shows a poll, and once sent it is sent to its end. The signal
/// samples also say which task the thread was polling ([`PollEvidence`]): a stall whose samples
/// on CPU show one task is held until they confirm one poll (four samples, half a threshold of
/// the thread's CPU time apart from first to last) and not sent if it ends before; one whose
/// samples show another poll first is several polls, never sent, unless looks in a row found
/// its thread asleep for a threshold between them. A stall is judged by its stacks when looks
/// in a row found its thread asleep for a threshold (`RawStall::stretch`: a thread asleep
/// for moments between computings, short polls waiting in turn on a lock, is not blocked),
/// and is then recorded as that stretch asleep, with its stacks and its time, not those of
/// the polls before and after it in the busy period; or when no sample showed a task; so
/// judged, a stall at least half of
/// whose samples waited for the C library's allocator lock shows no poll of its own. One that
/// ends held back, or is still held when the recording stops, is
/// counted in `stalls_without_a_poll`.
#[derive(Debug, Default)]
struct WithoutAPoll {
    /// Busy-period stalls going on, and whether each was sent.
    ongoing: std::collections::HashMap<u64, bool>,
    /// Busy-period stalls recorded as their stretch asleep, which ended while the stall goes
    /// on. The stall's later versions (one at every refresh) carry the same ended record,
    /// which is judged once: handed on and counted, or held back and counted as such. A later
    /// record of the stall (a longer stretch, or the whole once a poll of it was confirmed)
    /// replaces it in the file, and is not counted again.
    ended: std::collections::HashMap<u64, Ended>,
}

/// A busy-period stall's ended stretch, as [`WithoutAPoll`] judged it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ended {
    /// Its record's start and length.
    time: (u64, u64),
    /// A record of the stall was handed on (and counted).
    sent: bool,
}

impl WithoutAPoll {
    /// Whether to send this version of a stall record; counts a busy-period stall that ends
    /// unsent into `dropped`.
    fn admit(&mut self, record: &format::StallRecord, seen: Seen, dropped: &AtomicU64) -> bool {
        // Stalls of the hooks and layer tiers are polls (but for the hooks tier's stretches
        // between a current-thread runtime's task polls, task 0, judged here as busy periods).
        // A poll inside `block_in_place` gave its worker to another thread, which the
        // watchdog learns from tokio at most every 10 ms (a new blocking thread may take longer
        // to start on a busy machine): one whose stacks mostly show it there holds no worker.
        // Once one of its records is sent, it is sent to its end.
        if record.task_id != 0 {
            let no_worker = seen.multi_thread && format::mostly_without_a_worker(record);
            return self.admit_poll(record, !no_worker, dropped);
        }
        let time = (record.start_ns, record.duration_ns);
        let before = self.ended.get(&record.id).copied();
        if !record.ongoing && before.is_some_and(|b| b.time == time) {
            // Judged already.
            if !seen.going_on {
                self.ended.remove(&record.id);
            }
            return false;
        }
        let no_poll = match seen.polls {
            // Several polls, one of which slept for a threshold: looks in a row found the
            // thread asleep so long between the polls its samples showed (a poll blocked
            // after a short one, its end seen in the next): judged by its stacks, taken
            // mostly while it slept.
            PollEvidence::Several if seen.asleep => Self::no_poll_in(record, seen),
            PollEvidence::Several => true,
            PollEvidence::Confirmed => false,
            // Looks in a row found the thread asleep in a system call for a threshold: no poll
            // ran meanwhile, so it is judged as before any task was seen, by its stacks.
            PollEvidence::Unconfirmed if seen.asleep => Self::no_poll_in(record, seen),
            // On CPU, one task in samples that do not confirm one poll yet: not yet, and
            // never if it ends so (a worker polling a few tasks in turn shows the same task
            // in a sample now and then).
            PollEvidence::Unconfirmed => true,
            // Every stack copied while the thread slept, yet looks never found it asleep for a
            // threshold in a row: it slept for moments between computings (short polls
            // waiting in turn on a lock they share), not in one blocking call, whose looks
            // find it asleep a threshold in a row a few milliseconds after it slept that long.
            PollEvidence::Unknown if seen.only_copied && !seen.asleep => true,
            PollEvidence::Unknown => Self::no_poll_in(record, seen),
        };
        // Inside `block_in_place` the thread gave its worker to another thread, and may be
        // back in the blocking pool after it (without a park that ends its busy period): what
        // it waits on holds up no worker (without `tokio_unstable` asyncprof sees that only so).
        // Not for a current-thread runtime: one driven from a blocking-pool thread shows the
        // pool in its stacks.
        let no_poll = no_poll || (seen.multi_thread && format::mostly_without_a_worker(record));
        // A current-thread runtime's `block_on` returned: the thread runs its caller's code,
        // outside any runtime, its busy period never ended by a park. No worker is held.
        let no_poll = no_poll || format::mostly_outside_a_runtime(record);
        // The hooks tier's stretches between a current-thread runtime's task polls are the
        // `block_on` future's or a `LocalSet`'s: one whose whole stacks never show the thread
        // inside a current-thread `block_on` shows no poll of those. One without stacks, or
        // with a stack cut short, is judged as a busy period is.
        let no_poll = no_poll || (seen.hooks && format::never_in_a_current_thread_block_on(record));
        let admitted = self.ongoing.remove(&record.id).unwrap_or(false) || !no_poll;
        if self.ongoing.len() >= MAX_TRACKED {
            // Only stalls whose last version was lost (the watchdog's board was full) stay
            // here past their end: start over, counting those held as not recorded.
            self.stop(dropped);
        }
        // A record of it in the file already (its ended stretch): not held back.
        let sent_before = before.is_some_and(|b| b.sent);
        if record.ongoing {
            self.ongoing.insert(record.id, admitted);
        } else if !admitted && !sent_before {
            dropped.fetch_add(1, Relaxed);
        }
        if admitted && before.is_some_and(|b| !b.sent) {
            // Its ended stretch was held back and counted so: it is recorded after all.
            dropped.fetch_sub(1, Relaxed);
        }
        if !seen.going_on {
            self.ended.remove(&record.id);
        } else if !record.ongoing {
            if self.ended.len() >= MAX_TRACKED {
                // Only stalls whose last version was lost (the watchdog's board was full) stay
                // here past their end.
                self.ended.clear();
            }
            let sent = admitted || sent_before;
            self.ended.insert(record.id, Ended { time, sent });
        } else if let Some(e) = self.ended.get_mut(&record.id) {
            e.sent |= admitted;
        }
        admitted
    }

    /// Whether busy-period stall `id` has a record in the file and counted already (its ended
    /// stretch, while the stall goes on): a later record of it replaces that one, and is not
    /// counted again. Asked before [`WithoutAPoll::admit`] judges the later one.
    fn counted(&self, id: u64) -> bool {
        self.ended.get(&id).is_some_and(|e| e.sent)
    }

    /// A task's poll stall: `keep` this version unless it is held back; one of its versions
    /// sent, every later one is sent too. One that ends never sent is counted in `dropped`.
    fn admit_poll(
        &mut self,
        record: &format::StallRecord,
        keep: bool,
        dropped: &AtomicU64,
    ) -> bool {
        let admitted = self.ongoing.remove(&record.id).unwrap_or(false) || keep;
        if record.ongoing {
            if self.ongoing.len() >= MAX_TRACKED {
                self.stop(dropped);
            }
            self.ongoing.insert(record.id, admitted);
        } else if !admitted {
            dropped.fetch_add(1, Relaxed);
        }
        admitted
    }

    /// Whether nothing in a busy-period stall's stacks (or, without one, its class) shows a
    /// poll. Without a stack its class counts only with signals off (all such a stall can
    /// have): when every try failed (a thread that kept going to sleep for a moment is never
    /// signalled), or the per-minute budget of sampled stalls was spent (a saturated worker's
    /// busy periods, refuted one after another, can spend it), a look that found the thread
    /// running does not show a poll.
    ///
    /// Nor does one at least half of whose samples waited for the C library's allocator lock
    /// ([`format::mostly_waits_on_the_allocator`]): the stable tier cannot tell one poll held
    /// there from short polls waiting on it in turn, and records neither.
    fn no_poll_in(record: &format::StallRecord, seen: Seen) -> bool {
        if record.stacks.is_empty() {
            seen.stacks_sought || record.class == format::StallClass::Unknown
        } else {
            format::mostly_waits_on_the_allocator(record)
                || record
                    .stacks
                    .iter()
                    .all(|s| format::culprit::in_scheduler_between_polls(&s.frames))
        }
    }

    /// The recording stops (or the tracking starts over): the stalls still held back are
    /// counted.
    fn stop(&mut self, dropped: &AtomicU64) {
        let held = self.ongoing.values().filter(|&&sent| !sent).count();
        dropped.fetch_add(held as u64, Relaxed);
        self.ongoing.clear();
    }
}

/// What the watchdog saw of a busy-period stall besides what its record says.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    /// The hooks tier: a stall of task 0 is a stretch between a current-thread runtime's task
    /// polls.
    hooks: bool,
    polls: PollEvidence,
    /// Looks in a row found its thread asleep for a threshold (`RawStall::stretch`), not for
    /// moments between computings.
    asleep: bool,
    /// A stack could be sought (see `RawStall::stacks_sought`).
    stacks_sought: bool,
    /// Every stack was copied from outside while the thread slept (no signal sample).
    only_copied: bool,
    /// The stall goes on (its record may be a part of it that ended: its stretch asleep).
    going_on: bool,
    /// Its runtime is a multi-thread runtime.
    multi_thread: bool,
}

/// Stalls [`WithoutAPoll`] keeps track of at most. Going on at once are no more than one per
/// worker thread.
const MAX_TRACKED: usize = 4096;

/// The CPU profile's sampler spills what its table evicts to a file in the temporary folder,
/// which only grows: past a quarter of the run's file limit (`ASYNCPROF_MAX_FILE_MB`; none
/// without one) the profile stops, marked as covering the run up to `elapsed_ns`, and its file
/// goes. Folding it (pprof symbolizes every stack) runs on a thread of its own, so that stall
/// records and snapshots do not wait meanwhile; the returned thread gives the profile's record,
/// which the aggregator writes once folded and again at the run's end (made here, for the
/// run's end only, when no thread could be started).
fn stop_cpu_profile_at_spill_limit(
    recorder: &Recorder,
    shared: &Shared,
    elapsed_ns: u64,
) -> Option<std::thread::JoinHandle<Option<Vec<u8>>>> {
    let max = recorder.settings.config.max_file_bytes / 4;
    if max == 0 {
        return None;
    }
    let profiler = {
        let mut cpu = lock(&shared.cpu);
        match cpu.as_ref().map(crate::cpu::CpuProfiler::spill_bytes) {
            Some(spill) if spill > max => cpu.take()?,
            _ => return None,
        }
    };
    eprintln!(
        "asyncprof: the CPU profile stopped {:.1} s into the run: its sample file (pprof's, in \
         the temporary folder) passed {} KiB, a quarter of the run's file limit \
         (ASYNCPROF_MAX_FILE_MB); the profile covers the run up to now",
        elapsed_ns as f64 / 1e9,
        max >> 10
    );
    let fold = move |profiler: crate::cpu::CpuProfiler| {
        let mut profile = profiler.finish()?;
        profile.stopped_at_ns = Some(elapsed_ns);
        format::encode_frame(RecordKind::CpuProfile, &profile).ok()
    };
    // The profiler goes to the thread through a slot it takes it from: a thread that cannot
    // start leaves it here, to fold now.
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(profiler)));
    let theirs = slot.clone();
    let started = crate::profiler::spawn_thread("asyncprof-cpu", move || {
        let profiler = lock(&theirs).take()?;
        fold(profiler)
    });
    match started {
        Ok(thread) => Some(thread),
        Err(_) => {
            if let Some(frame) = lock(&slot).take().and_then(fold) {
                *lock(&shared.cpu_frame) = Some(frame);
            }
            None
        }
    }
}

/// Backlog room left beside a stopped CPU profile's record before it goes out during the run,
/// for the batches that follow while the writer takes it.
const CPU_PROFILE_ROOM_MARGIN: usize = 64 << 10;

/// How often the aggregator hands new stall records to the writer.
const STALL_PERIOD: Duration = Duration::from_millis(100);

/// The aggregator thread's loop: until the guard stops it, wakes every stall period (or when
/// a snapshot is asked for) and sends what is due to the writer.
pub(crate) fn aggregator_loop(
    recorder: &'static Recorder,
    shared: &Shared,
    tx: SyncSender<Batch>,
    interval: Duration,
    start: Start,
    mut outputs: Outputs,
) {
    let Start {
        started,
        unix_ms: start_unix_ms,
        facts: mut written,
        file: mut limit,
    } = start;
    let mut symbolizer = crate::symbolize::Symbolizer::default();
    let mut without_a_poll = WithoutAPoll::default();
    let mut load = crate::load::LoadSampler::default();
    let mut next_snapshot = Instant::now() + interval;
    // The whole run's stalls, for every snapshot: a part of the run holds only its own.
    let mut stall_totals = format::StallTotals::default();
    // The CPU profile being folded after it stopped at its spill file's limit, then its
    // record. The record goes to the writer once as soon as the writer has room for it (a
    // process killed later keeps it), and again at the run's end whatever happened to the
    // first (a writer that could not start a new part, or a full disk, drops batches; the
    // part it went to may be gone by then): the reader keeps the last.
    let mut folding = None;
    let mut cpu_profile: Option<Vec<u8>> = None;
    let mut cpu_profile_sent = false;
    loop {
        let (stopping, asked) = {
            let woken = lock(&shared.wake);
            let (mut woken, _) = shared
                .cond
                .wait_timeout_while(woken, STALL_PERIOD.min(interval), |w| !*w)
                .unwrap_or_else(|p| p.into_inner());
            let asked = std::mem::replace(&mut *woken, false);
            (shared.stop.load(Relaxed), asked)
        };
        let now = Instant::now();
        symbolizer.release_if_idle();
        recorder.spares.refill();
        crate::queues::sample(started.elapsed().as_nanos() as u64);
        load.sample(recorder, started.elapsed().as_nanos() as u64);
        // The start's header said the tier and the runtime were not known. Once tasks run
        // (the first poll), the header goes out again with them, and with it a first
        // snapshot, so that a process killed early still leaves them in its file.
        let facts = Facts::of(recorder);
        let learnt = facts != written;
        let snapshot_due = stopping || asked || learnt || now >= next_snapshot;
        let (replaced, unsent) = {
            let mut board = lock(&recorder.stalls);
            (
                std::mem::take(&mut board.replaced),
                std::mem::take(&mut board.unsent),
            )
        };
        if unsent.is_empty() && replaced.is_empty() && !snapshot_due {
            continue;
        }
        let mut frames = Vec::new();
        let header_frame = learnt
            .then(|| {
                let h = header(recorder, facts, start_unix_ms, limit.part);
                format::encode_frame(RecordKind::Header, &h).ok()
            })
            .flatten();
        if learnt && header_frame.is_none() {
            // It cannot be encoded (it never grows): not tried again.
            written = facts;
        }
        let header_first = header_frame.is_some();
        frames.extend(header_frame);
        // Every new address of these stalls' stacks in one lookup.
        symbolizer.look_up_stalls(replaced.iter().chain(unsent.values()));
        // A stall's replaced versions before its latest, as they came.
        for raw in replaced.iter().chain(unsent.values()) {
            let whole_going_on = raw.ongoing;
            // A busy-period stall whose thread slept a threshold in looks in a row (a thread
            // waiting in turn on a lock whose holder lost its CPU sleeps for a few of the
            // kernel's time slices), with no poll of it confirmed on CPU, is that stretch.
            let stretch = raw.as_stretch();
            let raw = stretch.as_ref().unwrap_or(raw);
            let record = symbolizer.record(raw, recorder.run_start_ns);
            let seen = Seen {
                hooks: recorder.tier() == format::Tier::Hooks,
                multi_thread: recorder.is_multi_thread(raw.runtime),
                polls: raw.polls,
                asleep: raw.stretch.blocked(),
                stacks_sought: raw.stacks_sought,
                only_copied: !raw.stacks.is_empty() && raw.signal_samples == 0,
                going_on: whole_going_on,
            };
            // A stall counted already (by its ended stretch) gets a later record in the file,
            // not another count in the totals, the metrics or the events.
            let counted = without_a_poll.counted(record.id);
            if !without_a_poll.admit(&record, seen, &recorder.loss.stalls_without_a_poll) {
                continue;
            }
            if !record.ongoing && !counted {
                stall_totals.add(record.duration_ns);
            }
            if let Ok(f) = format::encode_frame(RecordKind::Stall, &record) {
                frames.push(f);
            }
            if !counted {
                outputs.stall(&record, recorder);
            }
        }
        if stopping {
            without_a_poll.stop(&recorder.loss.stalls_without_a_poll);
        }
        if snapshot_due {
            next_snapshot = now + interval;
            let elapsed = started.elapsed().as_nanos() as u64;
            if !stopping && folding.is_none() {
                folding = stop_cpu_profile_at_spill_limit(recorder, shared, elapsed);
            }
            let mut snapshot = recorder.snapshot(elapsed, stopping);
            snapshot.runtime.stalls = Some(stall_totals);
            snapshot.load = load.take();
            snapshot.loss.dropped_depth_points += load.dropped;
            if let Ok(f) = format::encode_frame(RecordKind::Snapshot, &snapshot) {
                frames.push(f);
            }
            outputs.snapshot(snapshot);
        }
        let folded = folding
            .as_ref()
            .is_some_and(std::thread::JoinHandle::is_finished);
        if stopping || folded {
            if let Some(Ok(Some(f))) = folding.take().map(std::thread::JoinHandle::join) {
                cpu_profile = Some(f);
            }
        }
        let mut cpu_in_batch = false;
        if stopping {
            // The stopped profile, or the whole run's (the guard leaves that in `cpu_frame`).
            if let Some(f) = cpu_profile
                .take()
                .or_else(|| lock(&shared.cpu_frame).take())
            {
                frames.push(f);
            }
            frames.push(format::end_frame());
        } else if let Some(f) = cpu_profile.as_ref().filter(|_| !cpu_profile_sent) {
            // Not at the price of the cycle's other records: only when the writer has room.
            let len: usize = frames.iter().map(Vec::len).sum::<usize>() + f.len();
            if shared.writer_backlog.room() >= len + CPU_PROFILE_ROOM_MARGIN {
                frames.push(f.clone());
                cpu_in_batch = true;
            }
        }
        // The cycle's frames go to the writer as one batch: a storm of stalls fills one
        // message, not the writer's queue.
        let mut records = frames.len() as u64;
        // The run file's size limit: this batch starts a new part, in a new file, after the
        // preamble and the part's header (which takes the place of the batch's own header, if
        // it has one: the same facts), and the full part ends with a record saying where the
        // run goes on. The writer leaves the prefix out if the new file cannot be made.
        let frames_len: usize = frames.iter().map(Vec::len).sum();
        let new_part = limit.needs_new_part(frames_len).then(|| {
            let next_part = limit.part + 1;
            let h = format::encode_frame(
                RecordKind::Header,
                &header(recorder, facts, start_unix_ms, next_part),
            );
            let mut prefix = format::preamble().to_vec();
            if let Ok(h) = h {
                prefix.extend_from_slice(&h);
                if header_first {
                    frames.remove(0);
                } else {
                    records += 1;
                }
            }
            let continued = format::Continued::new(
                limit.previous.clone(),
                limit.next.clone(),
                next_part,
                started.elapsed().as_nanos() as u64,
            );
            let closing =
                format::encode_frame(RecordKind::Continued, &continued).unwrap_or_default();
            (prefix, closing)
        });
        let (prefix, rotate) = match new_part {
            Some((prefix, closing)) => {
                let prefix_len = prefix.len();
                let part = crate::writer::NewPart {
                    closing,
                    prefix_len,
                };
                (prefix, Some(part))
            }
            None => (Vec::new(), None),
        };
        let bytes = [prefix, frames.concat()].concat();
        let len = bytes.len();
        let starts_part = rotate.is_some();
        let batch = Batch {
            bytes,
            records,
            new_part: rotate,
            last: stopping,
        };
        if stopping {
            // The last records wait for the writer: losing them would lose the run's end.
            shared.writer_backlog.add(len);
            let _ = tx.send(batch);
            return;
        }
        let sent = shared.writer_backlog.reserve(len)
            && match tx.try_send(batch) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    shared.writer_backlog.release(len);
                    false
                }
            };
        if sent {
            limit.sent(len, starts_part);
            cpu_profile_sent |= cpu_in_batch;
            // A header dropped (the writer fell behind) is sent again next time.
            if header_first {
                written = facts;
            }
        } else {
            recorder.loss.dropped_records.fetch_add(records, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use format::{Frame, StackSample, StallClass, StallRecord};

    /// pprof's profiler is one per process: the tests that start it take turns.
    #[cfg(feature = "cpu-profile")]
    static PPROF: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// A recorder whose run file limit is `max_file_bytes`.
    #[cfg(feature = "cpu-profile")]
    fn limited_recorder(max_file_bytes: u64) -> &'static Recorder {
        let mut config = format::Config::default();
        config.max_file_bytes = max_file_bytes;
        Box::leak(Box::new(Recorder::new(crate::recorder::Settings {
            config,
            program: "spill-test".into(),
            args: Vec::new(),
        })))
    }

    /// What the guard shares, with a CPU profile running whose spill file is `spill`.
    #[cfg(feature = "cpu-profile")]
    fn profiling(spill: &std::path::Path) -> Shared {
        Shared {
            stop: Default::default(),
            stop_watchdog: Default::default(),
            wake: Default::default(),
            cond: Default::default(),
            cpu_frame: Default::default(),
            cpu: std::sync::Mutex::new(Some(
                crate::cpu::CpuProfiler::start(99)
                    .expect("pprof starts")
                    .with_spill(spill.to_path_buf()),
            )),
            writer_backlog: Default::default(),
        }
    }

    /// `frames` read as a run file's records.
    fn read_frames(frames: &[u8]) -> format::RunFile {
        let mut bytes = format::preamble().to_vec();
        bytes.extend(format::encode_frame(RecordKind::Header, &format::Header::new("t")).unwrap());
        bytes.extend_from_slice(frames);
        format::read_bytes(&bytes).unwrap()
    }

    #[cfg(feature = "cpu-profile")]
    #[test]
    fn the_cpu_profile_stops_once_its_spill_file_passes_a_quarter_of_the_file_limit() {
        let _turn = lock(&PPROF);
        let spill = std::env::temp_dir().join(format!("asyncprof-spill-{}", std::process::id()));
        std::fs::write(&spill, vec![0u8; 64 << 10]).unwrap();
        let recorder = limited_recorder;
        let shared = profiling(&spill);
        // A 256 KiB limit lets the spill file take 64 KiB: at it, the profile goes on; with
        // no limit, so does it at any size.
        let limited = recorder(256 << 10);
        assert!(stop_cpu_profile_at_spill_limit(limited, &shared, 1_000).is_none());
        assert!(lock(&shared.cpu).is_some() && lock(&shared.cpu_frame).is_none());
        std::fs::write(&spill, vec![0u8; (64 << 10) + 1]).unwrap();
        assert!(stop_cpu_profile_at_spill_limit(recorder(0), &shared, 2_000).is_none());
        assert!(lock(&shared.cpu).is_some() && lock(&shared.cpu_frame).is_none());
        // Past it: stopped, folded on a thread of its own, marked with where it stopped.
        let folding = stop_cpu_profile_at_spill_limit(limited, &shared, 3_000)
            .expect("the profile is being folded");
        assert!(lock(&shared.cpu).is_none(), "the profile stopped");
        let frame = folding.join().unwrap().expect("its record");
        let profile = read_frames(&frame)
            .cpu_profile
            .expect("a CPU profile record");
        assert_eq!((profile.hz, profile.stopped_at_ns), (99, Some(3_000)));
        std::fs::remove_file(&spill).ok();
    }

    /// The profile stopped at its spill limit goes to the run file as soon as it is folded, not
    /// at the run's end: a process killed later keeps it. Once while the run goes on; again
    /// at the run's end, so that the newest part has it whatever happened to the first.
    #[cfg(feature = "cpu-profile")]
    #[test]
    fn a_cpu_profile_stopped_at_its_spill_limit_is_written_at_once() {
        let _turn = lock(&PPROF);
        let spill = std::env::temp_dir().join(format!("asyncprof-spill2-{}", std::process::id()));
        std::fs::write(&spill, vec![0u8; (64 << 10) + 1]).unwrap();
        let recorder = limited_recorder(256 << 10);
        let shared = std::sync::Arc::new(profiling(&spill));
        /// Stops the aggregator however the test ends.
        struct Stop(std::sync::Arc<Shared>);
        impl Drop for Stop {
            fn drop(&mut self) {
                self.0.stop.store(true, Relaxed);
                *lock(&self.0.wake) = true;
                self.0.cond.notify_all();
            }
        }
        let stop = Stop(shared.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel(1024);
        let aggregator = std::thread::spawn({
            let shared = shared.clone();
            move || {
                let start = Start {
                    started: Instant::now(),
                    unix_ms: 0,
                    facts: Facts::of(recorder),
                    file: FileLimit::new(256 << 10, 0, std::path::Path::new("t.run")),
                };
                // Snapshots every 10 ms fill a part (128 KiB) in seconds.
                let interval = Duration::from_millis(10);
                aggregator_loop(recorder, &shared, tx, interval, start, Outputs::default())
            }
        });
        // Each part's records, without the preamble and header that start a new part.
        let take = |batch: crate::writer::Batch, parts: &mut Vec<Vec<u8>>| {
            let skip = batch.new_part.as_ref().map_or(0, |p| p.prefix_len);
            if skip > 0 {
                parts.push(Vec::new());
            }
            parts
                .last_mut()
                .unwrap()
                .extend_from_slice(&batch.bytes[skip..]);
            batch.last
        };
        let mut parts = vec![Vec::new()];
        let deadline = Instant::now() + Duration::from_secs(20);
        let next = || rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        let (profile, written_in) = loop {
            let batch = next().expect("the stopped profile, while the run goes on");
            assert!(!take(batch, &mut parts));
            if let Some(p) = read_frames(parts.last().unwrap()).cpu_profile {
                break (p, parts.len());
            }
        };
        assert!(profile.stopped_at_ns.is_some(), "marked as stopped");
        // The run goes on to a new part, and further: the profile is not sent again meanwhile.
        while parts.len() <= written_in + 1 {
            let batch = next().expect("new parts, the run going on");
            assert!(!take(batch, &mut parts));
        }
        let frame = format::encode_frame(RecordKind::CpuProfile, &profile).unwrap();
        let copies = |bytes: &[u8]| bytes.windows(frame.len()).filter(|w| *w == frame).count();
        assert_eq!(parts.iter().map(|p| copies(p)).sum::<usize>(), 1);
        drop(stop);
        while !take(next().expect("the run's end"), &mut parts) {}
        aggregator.join().unwrap();
        let newest = read_frames(parts.last().unwrap());
        assert!(newest.ended, "the run's end came");
        assert_eq!(
            newest.cpu_profile,
            Some(profile),
            "the newest part has it too"
        );
        std::fs::remove_file(&spill).ok();
    }

    const WORKER: &str =
        "/c/registry/src/index.crates.io-1/tokio-1.54.1/src/runtime/scheduler/multi_thread/worker.rs";

    /// A stack of a worker thread: in the scheduler's zero-timeout park, or running a task.
    fn stack(in_poll: bool) -> StackSample {
        let mut s = StackSample::default();
        s.count = 1;
        let inner = if in_poll { "run_task" } else { "park_yield" };
        s.frames = vec![
            Frame::new(inner, Some(WORKER.to_string()), Some(1)),
            Frame::new("run", Some(WORKER.to_string()), Some(2)),
        ];
        s
    }

    /// What the watchdog saw: its samples' polls, and whether looks found the thread asleep for
    /// a threshold (no stack sought: as with signals off).
    fn seen(polls: PollEvidence, asleep: bool) -> Seen {
        Seen {
            polls,
            asleep,
            stacks_sought: false,
            only_copied: false,
            going_on: false,
            multi_thread: true,
            hooks: false,
        }
    }

    fn stall(id: u64, task_id: u64, ongoing: bool, stacks: &[bool]) -> StallRecord {
        let mut r = StallRecord::default();
        r.id = id;
        r.task_id = task_id;
        r.ongoing = ongoing;
        r.stacks = stacks.iter().map(|&p| stack(p)).collect();
        r
    }

    /// Known truth: a task's poll on a multi-thread runtime sorting inside `block_in_place`
    /// (its worker handed to another thread, which the watchdog learned only after the stall
    /// began) holds no worker: not sent, counted. A task's poll elsewhere is sent; one whose
    /// first version was sent stays sent to its end, whatever its later stacks show; on a
    /// current-thread runtime the check does not apply.
    #[test]
    fn a_task_s_poll_inside_block_in_place_holds_no_worker() {
        let file = format!(
            "{}/src/runtime/scheduler/multi_thread/worker.rs",
            WORKER.split("/src/runtime").next().unwrap()
        );
        let in_bip = |id: u64, ongoing: bool| {
            let mut r = stall(id, 7, ongoing, &[true]);
            r.stacks[0]
                .frames
                .insert(0, Frame::new("block_in_place", Some(file.clone()), Some(3)));
            r.stacks[0].count = 3;
            r
        };
        let task = |multi_thread| Seen {
            hooks: true,
            multi_thread,
            ..seen(PollEvidence::Unknown, false)
        };
        let dropped = AtomicU64::new(0);
        let mut gate = WithoutAPoll::default();
        assert!(!gate.admit(&in_bip(1, true), task(true), &dropped));
        assert!(!gate.admit(&in_bip(1, false), task(true), &dropped));
        assert_eq!(dropped.load(Relaxed), 1, "counted once, at its end");
        assert!(gate.admit(&stall(2, 7, false, &[true]), task(true), &dropped));
        // Sent before its stacks showed `block_in_place`: sent to its end.
        assert!(gate.admit(&stall(3, 7, true, &[true]), task(true), &dropped));
        let mut later = in_bip(3, true);
        later.stacks.push(stack(true));
        later.stacks[0].count = 5;
        assert!(gate.admit(&later, task(true), &dropped));
        later.ongoing = false;
        assert!(gate.admit(&later, task(true), &dropped));
        assert!(gate.admit(&in_bip(4, false), task(false), &dropped));
        assert_eq!(dropped.load(Relaxed), 1);
        assert!(gate.ongoing.is_empty(), "nothing left tracked");
    }

    /// Known truth: the hooks tier's stretch between a current-thread runtime's task polls,
    /// blocked inside its `block_on` future (the current-thread scheduler on the stack), and
    /// one whose thread waits in another runtime's `block_on` (no such frame).
    #[test]
    fn hooks_tier_stretches_between_polls_need_a_current_thread_block_on_in_their_stacks() {
        let frame = |f: &str, file: &str| format::Frame::new(f, Some(file.to_string()), Some(1));
        let tokio = "/c/registry/src/i/tokio-1.54.1/src/runtime";
        let blocked = |id, inner: format::Frame| {
            let mut r = StallRecord::default();
            r.id = id;
            let mut sample = format::StackSample::default();
            sample.count = 3;
            sample.frames = vec![
                format::Frame::new("futex_wait", None, None),
                frame("app::main::{{closure}}", "/app/src/main.rs"),
                inner,
                frame("app::main", "/app/src/main.rs"),
                frame(
                    "std::rt::lang_start_internal",
                    "/rustc/1/library/std/src/rt.rs",
                ),
            ];
            r.stacks = vec![sample];
            r
        };
        let inside = blocked(
            1,
            frame(
                "tokio::runtime::scheduler::current_thread::CoreGuard::block_on",
                &format!("{tokio}/scheduler/current_thread/mod.rs"),
            ),
        );
        let elsewhere = blocked(
            2,
            frame(
                "tokio::runtime::park::CachedParkThread::block_on",
                &format!("{tokio}/park.rs"),
            ),
        );
        let hooks = Seen {
            hooks: true,
            ..seen(PollEvidence::Unknown, true)
        };
        let dropped = AtomicU64::new(0);
        let mut gate = WithoutAPoll::default();
        assert!(gate.admit(&inside, hooks, &dropped));
        assert!(!gate.admit(&elsewhere, hooks, &dropped));
        assert_eq!(dropped.load(Relaxed), 1);
        // A stack cut short (no thread start) cannot tell: judged as a busy period is.
        let mut cut = elsewhere.clone();
        cut.id = 4;
        cut.stacks[0].frames.pop();
        assert!(gate.admit(&cut, hooks, &dropped));
        // The stable tier's busy period is judged as before.
        let mut elsewhere = elsewhere;
        elsewhere.id = 3;
        assert!(gate.admit(&elsewhere, seen(PollEvidence::Unknown, true), &dropped));
    }

    #[test]
    fn the_file_limit_starts_a_new_part_at_half_the_limit() {
        let path = std::path::Path::new("/tmp/svc.run");
        let none = super::FileLimit::new(0, 100, path);
        assert!(!none.needs_new_part(usize::MAX >> 1), "0: no limit");
        let mut limit = super::FileLimit::new(2000, 100, path);
        assert_eq!(
            (limit.previous.as_str(), limit.next.as_str()),
            ("svc.old.run", "svc.run")
        );
        assert!(!limit.needs_new_part(900), "up to half the limit exactly");
        limit.sent(900, false);
        assert!(limit.needs_new_part(1));
        limit.sent(300, true);
        assert_eq!(
            (limit.part, limit.sent),
            (1, 300),
            "the new part holds its first batch"
        );
        assert!(!limit.needs_new_part(700));
        assert!(limit.needs_new_part(701));
    }

    #[test]
    fn busy_period_stalls_without_a_poll_in_their_stacks_are_held_back_and_counted() {
        let dropped = AtomicU64::new(0);
        let mut gate = WithoutAPoll::default();
        // Every stack in the scheduler: held back while it lasts, counted once when it ends.
        assert!(!gate.admit(
            &stall(1, 0, true, &[false]),
            seen(PollEvidence::Unknown, false),
            &dropped
        ));
        assert!(!gate.admit(
            &stall(1, 0, true, &[false, false]),
            seen(PollEvidence::Unknown, false),
            &dropped
        ));
        assert_eq!(dropped.load(Relaxed), 0);
        assert!(!gate.admit(
            &stall(1, 0, false, &[false, false]),
            seen(PollEvidence::Unknown, false),
            &dropped
        ));
        assert_eq!(dropped.load(Relaxed), 1);

        // A poll in any of its stacks: sent, and sent to its end whatever later stacks show.
        assert!(gate.admit(
            &stall(2, 0, true, &[true]),
            seen(PollEvidence::Unknown, false),
            &dropped
        ));
        assert!(gate.admit(
            &stall(2, 0, true, &[false, false]),
            seen(PollEvidence::Unknown, false),
            &dropped
        ));
        assert!(gate.admit(
            &stall(2, 0, false, &[false, false]),
            seen(PollEvidence::Unknown, false),
            &dropped
        ));
        // Held back first, then a stack in a poll: sent from then on.
        assert!(!gate.admit(
            &stall(3, 0, true, &[false]),
            seen(PollEvidence::Unknown, false),
            &dropped
        ));
        assert!(gate.admit(
            &stall(3, 0, false, &[false, true]),
            seen(PollEvidence::Unknown, false),
            &dropped
        ));
        // A stall of a task (hooks and layer tiers) is a poll: always sent.
        assert!(gate.admit(
            &stall(5, 7, false, &[false]),
            seen(PollEvidence::Unknown, false),
            &dropped
        ));
        assert_eq!(dropped.load(Relaxed), 1);
        assert!(gate.ongoing.is_empty());
    }

    #[test]
    fn busy_period_stalls_inside_block_in_place_are_held_back() {
        let dropped = AtomicU64::new(0);
        let mut gate = WithoutAPoll::default();
        // A thread asleep a threshold in a poll's call, seen in looks in a row: sent...
        let asleep = seen(PollEvidence::Unknown, true);
        assert!(gate.admit(&stall(1, 0, false, &[true]), asleep, &dropped));
        // ...but not when the call is inside `block_in_place` (its worker went to another
        // thread), in at least half of its samples; nor when a poll was confirmed there.
        let in_place = |id: u64, inside: u32, outside: u32| {
            let mut r = stall(id, 0, false, &[true, true]);
            r.stacks[0].frames.insert(
                0,
                Frame::new(
                    "tokio::task::blocking::block_in_place",
                    Some("/c/registry/src/i/tokio-1.54.1/src/task/blocking.rs".into()),
                    Some(1),
                ),
            );
            r.stacks[0].count = inside;
            r.stacks[1].count = outside;
            r
        };
        assert!(!gate.admit(&in_place(2, 3, 3), asleep, &dropped));
        let confirmed = seen(PollEvidence::Confirmed, false);
        assert!(!gate.admit(&in_place(3, 1, 0), confirmed, &dropped));
        assert_eq!(dropped.load(Relaxed), 2);
        // Back in the blocking pool after it (no worker's loop in the stack): the same.
        let mut pool = stall(6, 0, false, &[true]);
        pool.stacks[0].frames = vec![Frame::new(
            "tokio::runtime::blocking::pool::Inner::run",
            Some("/c/registry/src/i/tokio-1.54.1/src/runtime/blocking/pool.rs".into()),
            Some(757),
        )];
        assert!(!gate.admit(&pool, asleep, &dropped));
        assert_eq!(dropped.load(Relaxed), 3);
        // Not for a current-thread runtime, which may be driven from a blocking-pool thread.
        let current = Seen {
            multi_thread: false,
            ..asleep
        };
        pool.id = 8;
        assert!(gate.admit(&pool, current, &dropped));
        // Mostly outside it: judged as before.
        assert!(gate.admit(&in_place(4, 1, 3), asleep, &dropped));
        // A task's stall too (the hooks tier asks tokio about the hand-off, but at most every
        // 10 ms, and a new thread to take the worker may start later on a busy machine).
        let mut task = in_place(5, 1, 0);
        task.task_id = 7;
        assert!(!gate.admit(&task, asleep, &dropped));
        assert_eq!(dropped.load(Relaxed), 4);
    }

    #[test]
    fn busy_period_stalls_without_a_stack_need_a_look_that_saw_their_thread() {
        let dropped = AtomicU64::new(0);
        let mut gate = WithoutAPoll::default();
        // No stack, and every look found the thread waiting for a CPU: held, then counted.
        assert!(!gate.admit(
            &stall(1, 0, true, &[]),
            seen(PollEvidence::Unknown, false),
            &dropped
        ));
        assert!(!gate.admit(
            &stall(1, 0, false, &[]),
            seen(PollEvidence::Unknown, false),
            &dropped
        ));
        assert_eq!(dropped.load(Relaxed), 1);
        // No stack, but seen on CPU or asleep (signals off, or no sample taken): sent.
        for (id, class) in [(2, StallClass::CpuBound), (3, StallClass::Blocking)] {
            let mut r = stall(id, 0, false, &[]);
            r.class = class;
            assert!(gate.admit(&r, seen(PollEvidence::Unknown, false), &dropped));
        }
        // Unknown at first, then seen running: sent from then on.
        assert!(!gate.admit(
            &stall(4, 0, true, &[]),
            seen(PollEvidence::Unknown, false),
            &dropped
        ));
        let mut r = stall(4, 0, true, &[]);
        r.class = StallClass::CpuBound;
        assert!(gate.admit(&r, seen(PollEvidence::Unknown, false), &dropped));
        // No stack although signals are on (every try failed, or the budget was spent): its
        // class does not send it.
        let mut r = stall(7, 0, false, &[]);
        r.class = StallClass::CpuBound;
        let sought = Seen {
            stacks_sought: true,
            ..seen(PollEvidence::Unknown, false)
        };
        assert!(!gate.admit(&r, sought, &dropped));
        assert_eq!(dropped.load(Relaxed), 2);
        // Still held when the recording stops: counted then.
        assert!(!gate.admit(
            &stall(5, 0, true, &[]),
            seen(PollEvidence::Unknown, false),
            &dropped
        ));
        gate.stop(&dropped);
        assert_eq!(dropped.load(Relaxed), 3);
        assert!(gate.ongoing.is_empty());
        // A task's stall without a stack is a poll all the same.
        assert!(gate.admit(
            &stall(6, 7, false, &[]),
            seen(PollEvidence::Unknown, false),
            &dropped
        ));
    }

    #[test]
    fn busy_period_stalls_are_judged_by_the_tasks_their_samples_show() {
        use PollEvidence::{Confirmed, Several, Unconfirmed};
        let dropped = AtomicU64::new(0);
        let mut gate = WithoutAPoll::default();
        // Samples of two polls before one was confirmed: never sent, counted at its end,
        // although its stacks are in a poll.
        assert!(!gate.admit(
            &stall(1, 0, true, &[true]),
            seen(Unconfirmed, false),
            &dropped
        ));
        assert!(!gate.admit(&stall(1, 0, false, &[true]), seen(Several, false), &dropped));
        assert_eq!(dropped.load(Relaxed), 1);
        // One task, then confirmed: held, then sent, and sent to its end.
        assert!(!gate.admit(
            &stall(2, 0, true, &[true]),
            seen(Unconfirmed, false),
            &dropped
        ));
        assert!(gate.admit(
            &stall(2, 0, true, &[true, true]),
            seen(Confirmed, false),
            &dropped
        ));
        assert!(gate.admit(
            &stall(2, 0, false, &[true, true]),
            seen(Confirmed, false),
            &dropped
        ));
        // One task on CPU, ended before its samples were half a threshold apart: not sent.
        assert!(!gate.admit(
            &stall(3, 0, true, &[true]),
            seen(Unconfirmed, false),
            &dropped
        ));
        assert!(!gate.admit(
            &stall(3, 0, false, &[true]),
            seen(Unconfirmed, false),
            &dropped
        ));
        assert_eq!(dropped.load(Relaxed), 2);
        // The same with looks that found the thread asleep for a threshold: its stacks decide.
        assert!(gate.admit(
            &stall(4, 0, false, &[true]),
            seen(Unconfirmed, true),
            &dropped
        ));
        assert!(!gate.admit(
            &stall(7, 0, false, &[false]),
            seen(Unconfirmed, true),
            &dropped
        ));
        assert_eq!(dropped.load(Relaxed), 3);
        // Samples of another poll before and after a stretch asleep a threshold long (a short
        // poll, the blocked one, the next): judged by its stacks, the stretch's; without the
        // stretch, several polls, held.
        assert!(gate.admit(&stall(40, 0, false, &[true]), seen(Several, true), &dropped));
        assert!(!gate.admit(
            &stall(41, 0, false, &[false]),
            seen(Several, true),
            &dropped
        ));
        assert!(!gate.admit(
            &stall(42, 0, false, &[true]),
            seen(Several, false),
            &dropped
        ));
        assert_eq!(dropped.load(Relaxed), 5);
        // Asleep at a look, judged by its stacks: half or more of its samples waiting for the
        // C library's allocator lock (in `realloc`, `free`: held for a moment) show no poll of
        // its own; fewer, or a lock of the user's (`std::sync::Mutex`), or a stack running in
        // `free` with no wait, do. With no task in any sample (stacks copied from outside the
        // sleeping thread), the same.
        let lock = "std::sys::sync::mutex::futex::Mutex::lock_contended";
        let waits_in = |id, waits: &[(&str, u32)]| {
            let mut r = stall(id, 0, false, &[]);
            for &(function, count) in waits {
                let mut frames = match function {
                    "" => Vec::new(),
                    "free running" => vec![Frame::new("__libc_free", None, None)],
                    f => vec![
                        Frame::new("__lll_lock_wait_private", None, None),
                        Frame::new("0x7ff48f483565", None, None),
                        Frame::new(f, None, None),
                    ],
                };
                frames.append(&mut stack(true).frames);
                let mut st = stack(true);
                st.frames = frames;
                st.count = count;
                r.stacks.push(st);
            }
            r
        };
        for evidence in [seen(Unconfirmed, true), seen(PollEvidence::Unknown, true)] {
            let held = [
                vec![("realloc", 1)],
                vec![("__libc_free", 1), ("", 1)],
                vec![("realloc", 2), ("", 1), ("__libc_free", 1)],
            ];
            for (i, waits) in held.iter().enumerate() {
                assert!(!gate.admit(&waits_in(10 + i as u64, waits), evidence, &dropped));
            }
            let sent = [
                vec![("realloc", 1), ("", 2)],
                vec![(lock, 1)],
                vec![("free running", 1)],
            ];
            for (i, waits) in sent.iter().enumerate() {
                assert!(gate.admit(&waits_in(20 + i as u64, waits), evidence, &dropped));
            }
        }
        assert_eq!(dropped.load(Relaxed), 11);
        // No task in any sample, every stack copied while the thread slept on a lock of the
        // program's own, but looks never found it asleep a threshold in a row: moments of
        // sleep, held back. So found, it is a blocked call, judged by its stacks and sent.
        let copied = Seen {
            only_copied: true,
            ..seen(PollEvidence::Unknown, false)
        };
        assert!(!gate.admit(&waits_in(30, &[(lock, 1)]), copied, &dropped));
        let blocked = Seen {
            asleep: true,
            ..copied
        };
        assert!(gate.admit(&waits_in(31, &[(lock, 1)]), blocked, &dropped));
        assert_eq!(dropped.load(Relaxed), 12);
        // Sent before a task showed (its stacks showed a poll), then several: sent to its end.
        assert!(gate.admit(
            &stall(5, 0, true, &[true]),
            seen(PollEvidence::Unknown, false),
            &dropped
        ));
        assert!(gate.admit(&stall(5, 0, false, &[true]), seen(Several, false), &dropped));
        // A task's stall (hooks and layer tiers) is a poll, whatever the samples say.
        assert!(gate.admit(&stall(6, 7, false, &[true]), seen(Several, false), &dropped));
        assert_eq!(dropped.load(Relaxed), 12);
        assert!(gate.ongoing.is_empty());
    }

    /// A stall recorded as its stretch asleep, which ended while the busy period's stall goes
    /// on: the watchdog hands the stall on at every refresh (250 ms), and each version carries
    /// the same ended record. It was handed on, counted in the run's stall totals, the metrics
    /// and the tracing events, every time.
    #[test]
    fn a_stretch_that_ended_while_its_stall_goes_on_is_handed_on_once() {
        use PollEvidence::{Confirmed, Unconfirmed};
        let dropped = AtomicU64::new(0);
        let mut gate = WithoutAPoll::default();
        let going = |polls| Seen {
            going_on: true,
            ..seen(polls, true)
        };
        let ended = |id, start_ms: u64, ms: u64, in_poll: bool| {
            let mut r = stall(id, 0, false, &[in_poll]);
            r.start_ns = start_ms * 1_000_000;
            r.duration_ns = ms * 1_000_000;
            r
        };
        let part = ended(1, 100, 80, true);
        assert!(!gate.counted(1));
        assert!(gate.admit(&part, going(Unconfirmed), &dropped));
        assert!(
            !gate.admit(&part, going(Unconfirmed), &dropped),
            "a refresh"
        );
        assert!(!gate.admit(&part, going(Unconfirmed), &dropped), "another");
        // A longer stretch later in the stall replaces it in the file; counted already.
        assert!(gate.counted(1));
        let longer = ended(1, 300, 120, true);
        assert!(gate.admit(&longer, going(Unconfirmed), &dropped));
        assert!(!gate.admit(&longer, going(Unconfirmed), &dropped));
        // The stall's last version, the whole once a poll was confirmed: handed on (the file
        // keeps it), still counted already, and forgotten.
        let whole = ended(1, 90, 400, true);
        assert!(gate.counted(1));
        assert!(gate.admit(&whole, seen(Confirmed, true), &dropped));
        assert!(gate.ended.is_empty());
        assert_eq!(dropped.load(Relaxed), 0);
        // One held back (no poll in its stacks) is counted so once...
        let held = ended(2, 100, 80, false);
        assert!(!gate.admit(&held, going(Unconfirmed), &dropped));
        assert!(!gate.admit(&held, going(Unconfirmed), &dropped));
        assert_eq!(dropped.load(Relaxed), 1);
        assert!(!gate.counted(2));
        // ...and not at all once a later record of the stall is handed on.
        let confirmed = ended(2, 90, 300, true);
        assert!(gate.admit(&confirmed, seen(Confirmed, true), &dropped));
        assert_eq!(dropped.load(Relaxed), 0);
        assert!(gate.ended.is_empty());
        // One whose later record would be held back keeps the one in the file: not counted as
        // held back.
        let kept = ended(3, 100, 80, true);
        assert!(gate.admit(&kept, going(Unconfirmed), &dropped));
        let later = ended(3, 100, 300, false);
        assert!(!gate.admit(&later, seen(Unconfirmed, true), &dropped));
        assert_eq!(dropped.load(Relaxed), 0);
        assert!(gate.ended.is_empty());
        // A stall of the hooks tier is a poll: each version goes on as before.
        let poll = stall(4, 7, false, &[true]);
        assert!(gate.admit(&poll, going(Unconfirmed), &dropped));
        assert!(gate.admit(&poll, going(Unconfirmed), &dropped));
        assert!(!gate.counted(4));
    }

    #[test]
    fn stalls_whose_end_never_came_are_not_kept_for_ever() {
        let dropped = AtomicU64::new(0);
        let mut gate = WithoutAPoll::default();
        // Ongoing versions only, their last ones lost: half sent, half held back.
        for id in 0..(2 * MAX_TRACKED as u64) {
            gate.admit(
                &stall(id, 0, true, &[id % 2 == 0]),
                seen(PollEvidence::Unknown, false),
                &dropped,
            );
            assert!(gate.ongoing.len() <= MAX_TRACKED);
        }
        // Every stall held back when the tracking started over was counted.
        assert_eq!(dropped.load(Relaxed), (MAX_TRACKED / 2) as u64);
    }
}
