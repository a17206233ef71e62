//! The stall watchdog: a background thread that publishes the coarse clock every tick and
//! looks at every worker. A poll that has run past the stall threshold is recorded while it
//! is still running: its thread's stack is sampled (copied from outside while the thread is
//! asleep in a system call; a signal to that thread only while it is on CPU), its kernel
//! state read, and the record handed to the aggregator, which symbolizes and writes it.
//!
//! Nothing here runs on the service's threads except the signal handler, which only copies
//! registers and stack bytes (see `asyncprof-sampler`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};
use std::sync::mpsc;
use std::time::Duration;

use asyncprof_format::SourceLocation;
use asyncprof_sampler::{Capture, Pending, SampleError, StackSampler};

use crate::clock;
use crate::hist::lock;
use crate::profiler::Shared;
use crate::recorder::Recorder;
use crate::workers::Worker;

/// The first re-sample comes this long after detection; the gap doubles up to the cap.
const FIRST_BACKOFF_NS: u64 = 1_000_000;
const MAX_BACKOFF_NS: u64 = 128_000_000;
/// How long a busy-period stall's stretch asleep is looked at four times a threshold: past
/// it, its end is known to within the back-off, small beside its length.
const STRETCH_WATCHED_NS: u64 = 1_000_000_000;
/// Stack samples kept per stall (later samples still classify, without a stack).
const MAX_SAMPLES: u32 = 64;
/// Stalls per minute that get stack samples; further stalls are recorded, and classified
/// from the thread's kernel state, without stacks. A sample costs the stalled thread tens
/// of microseconds, a fraction of a percent of a stall.
const MAX_SAMPLED_STALLS_PER_MINUTE: u32 = 600;
/// Looks in a row, one tick apart, that try again for the stack of a thread on CPU that was
/// not yet signalled (its first 0.5 ms awake); then the back-off applies.
const MAX_STACK_RETRIES: u32 = 8;
/// How long the watchdog waits for a thread to run the sampling handler.
const SAMPLE_TIMEOUT: Duration = Duration::from_millis(5);
/// An ongoing stall's record is refreshed at least this often, so the run file shows it.
const REFRESH_NS: u64 = 250_000_000;
/// How often the watchdog asks whether a thread in a long poll still holds a worker.
const CORE_CHECK_NS: u64 = 10_000_000;

/// Every worker parked at least this long (one default tick) lets the watchdog sleep until one
/// unparks: 0 made the waking workers pay for waking the watchdog on w4-sleep (workers park
/// between 1 ms timers); 250 µs spares them that.
const IDLE_AFTER_NS: u64 = 250_000;
/// The same for a quiet service, whose watchdog does not wake every tick anyway: a service
/// that parks and unparks thousands of times a second (w5, a pipeline at its real rate) woke
/// it at nearly every unpark, each wake-up costing the watchdog and the waking worker.
const QUIET_IDLE_AFTER_NS: u64 = 100_000_000;
/// The longest the idle watchdog sleeps without being woken.
const IDLE_WAKE: Duration = Duration::from_millis(100);

/// Polls a second below which the service is quiet, and above which it is busy again: a quiet
/// service's polls read the exact time (an `Instant::now()` each), so the watchdog need not
/// publish the coarse clock every tick (4,000 wake-ups a second, ~17 µs of CPU each on w5).
const QUIET_BELOW: u64 = 50_000;
const BUSY_ABOVE: u64 = 100_000;
/// The poll rate is measured over windows at least this long.
const RATE_WINDOW_NS: u64 = 20_000_000;
/// A quiet service's watchdog looks every half threshold, this far apart at most (and a tick
/// apart at least), while a poll goes on: a poll that reaches half the threshold makes it look
/// every tick again, so stalls are declared as soon. After a look that found none going on it
/// sleeps longer, twice this at most (see [`Watchdog::quiet_sleep`]).
const MAX_QUIET_TICK_NS: u64 = 5_000_000;

/// The interval between a quiet service's looks while a poll goes on (see
/// [`MAX_QUIET_TICK_NS`]), for stall threshold `threshold_ns` and clock tick `tick_ns`.
fn quiet_tick_ns(threshold_ns: u64, tick_ns: u64) -> u64 {
    (threshold_ns / 2).min(MAX_QUIET_TICK_NS).max(tick_ns)
}

/// The watchdog thread: publish the coarse clock every `tick` (or, while the service is quiet,
/// let polls read the exact time and look every half threshold or so: see
/// [`Watchdog::quiet_sleep`]), look at every worker, sleep while every worker is parked.
/// `published` is when `start` last published the clock; `running` hears once the first tick
/// ran.
pub(crate) fn run(
    recorder: &'static Recorder,
    sampler: StackSampler,
    shared: &Shared,
    tick: Duration,
    published: u64,
    running: mpsc::SyncSender<()>,
) {
    let mut dog = Watchdog::new(recorder, sampler);
    let _ = recorder.watchdog_thread.set(std::thread::current());
    let tick_ns = tick.as_nanos() as u64;
    let quiet_tick = quiet_tick_ns(dog.threshold_ns, tick_ns);
    let mut last = clock::publish();
    // A thread that first ran long after it was started (a busy machine) left the clock
    // standing still meanwhile: a gap like any other.
    count_gap(recorder, last.saturating_sub(published), tick_ns);
    let _ = running.send(());
    let mut quiet = false;
    let mut rate = (last, recorder.polls_begun());
    while !shared.stop_watchdog.load(Relaxed) {
        let sleep = if quiet && !dog.watching() {
            Duration::from_nanos(dog.quiet_sleep(quiet_tick))
        } else {
            tick
        };
        std::thread::sleep(sleep);
        let now = clock::publish();
        let slept = sleep.as_nanos() as u64;
        dog.gap_ns = gap_bound(slept);
        // Late: the coarse clock stood still meanwhile (a poll inside the gap was timed
        // short), and a stall was looked at late, or not at all. While quiet, polls are
        // timed exactly, but the looks are as late.
        count_gap(recorder, now.saturating_sub(last), slept);
        last = now;
        dog.look(now);
        // The time the look spent sampling stalls is the watchdog's own work, during which
        // polls read the exact time (see `Watchdog::sampling`).
        last = last.saturating_add(std::mem::take(&mut dog.sampling_ns));
        // Quiet after a whole window under QUIET_BELOW; busy again at the first look (5–10 ms
        // apart while quiet) that saw more than BUSY_ABOVE, so that a load that starts pays
        // for the exact clock a few milliseconds at most.
        if quiet || now.saturating_sub(rate.0) >= RATE_WINDOW_NS {
            let polls = recorder.polls_begun();
            let per_s =
                polls.saturating_sub(rate.1) * 1_000_000_000 / now.saturating_sub(rate.0).max(1);
            rate = (now, polls);
            let want = if quiet {
                per_s <= BUSY_ABOVE
            } else {
                per_s < QUIET_BELOW
            };
            if want != quiet {
                quiet = want;
                clock::set_quiet(quiet);
            }
        }
        // Every worker parked for a while: nothing to time or watch until one unparks, and
        // that worker wakes this thread (an idle service costs no wake-ups 4,000 times a
        // second).
        let idle_after = if quiet {
            QUIET_IDLE_AFTER_NS
        } else {
            IDLE_AFTER_NS
        };
        let idle_since = now.saturating_sub(idle_after);
        let registrations = recorder.registrations.load(SeqCst);
        if recorder.all_parked_since(idle_since) {
            // SeqCst: pairs with the unparking worker's SeqCst swap of its park state and
            // load of this flag (see `Recorder::unpark`), and with a new thread's count of
            // its registration (see `Recorder::register_thread`).
            recorder.watchdog_idle.store(true, SeqCst);
            if recorder.all_parked_since(idle_since)
                && recorder.registrations.load(SeqCst) == registrations
                && !shared.stop_watchdog.load(Relaxed)
            {
                std::thread::park_timeout(IDLE_WAKE);
            }
            recorder.watchdog_idle.store(false, Relaxed);
            // A worker unparked (or the wait timed out): a poll may be going on already, so
            // the next look comes at the shorter interval (see `Watchdog::quiet_sleep`).
            dog.saw_a_poll = true;
            // The rate's window goes on: time parked is time with no polls (resetting it
            // here kept a service that parks every few milliseconds busy for good).
            last = clock::publish();
            // Woken by a thread that unparked (or registered) in this wait: this thread
            // should have run at once, and ran late when the machine gave it no CPU (one core
            // busy, the other's thread in a long system call): the clock stood still and
            // nothing was looked at meanwhile, a gap like a late tick's. (A wake whose waker
            // read the clock before the look that preceded this wait belongs to an earlier
            // wait, noted late: not counted.)
            let woken = recorder.watchdog_woken_ns.swap(0, Relaxed);
            if woken >= now {
                let interval = if quiet { quiet_tick } else { tick_ns };
                count_gap(recorder, last.saturating_sub(woken), interval);
            }
        }
    }
    clock::set_quiet(false);
    dog.shutdown();
}

/// Count a clock gap when the watchdog ran `late_ns` after it should have, more than
/// [`gap_bound`] of its `interval_ns`.
fn count_gap(recorder: &Recorder, late_ns: u64, interval_ns: u64) {
    if late_ns > gap_bound(interval_ns) {
        recorder.loss.clock_gaps.fetch_add(1, Relaxed);
    }
}

/// The longest the watchdog may take from one look to the next, for looks `interval_ns`
/// apart, before it counts as late: [`clock::GAP_TICKS`] intervals.
fn gap_bound(interval_ns: u64) -> u64 {
    interval_ns.saturating_mul(clock::GAP_TICKS)
}

/// A stall as the watchdog sees it: raw stacks, not yet symbolized.
#[derive(Debug, Clone, Default)]
pub(crate) struct RawStall {
    pub(crate) id: u64,
    pub(crate) worker: u32,
    pub(crate) runtime: u64,
    pub(crate) thread_name: String,
    pub(crate) tid: i32,
    pub(crate) task_id: u64,
    pub(crate) task_location: Option<SourceLocation>,
    pub(crate) start_ns: u64,
    pub(crate) last_seen_ns: u64,
    pub(crate) detected_ns: u64,
    pub(crate) ongoing: bool,
    pub(crate) stacks: HashMap<Vec<usize>, u32>,
    pub(crate) on_cpu: u32,
    pub(crate) asleep: u32,
    /// Busy-period stalls: the longest stretch asleep with a stack taken in it (see
    /// [`Stretch`]).
    pub(crate) stretch: Stretch,
    pub(crate) syscalls: BTreeMap<u64, u32>,
    pub(crate) max_ready: u64,
    /// Share of the stall's wall time the thread spent on CPU, from its schedstat, measured
    /// from half the threshold to the end (`None` when unknown).
    pub(crate) cpu_share: Option<f64>,
    /// Looks that found the thread asleep while the machine had more runnable threads than
    /// CPUs (of the `asleep` looks whose machine state could be read: `crowd_known`).
    pub(crate) crowded: u32,
    pub(crate) crowd_known: u32,
    /// What the signal samples of a busy-period stall (the stable tier) show of its polls.
    pub(crate) polls: PollEvidence,
    /// A stack could be sought (a signal is installed): no stack then means every try failed,
    /// or the per-minute budget of sampled stalls was spent, not that signals are off.
    pub(crate) stacks_sought: bool,
    /// Stacks taken by the signal handler (the thread on CPU), of those kept in `stacks`; the
    /// others were copied from outside while it slept.
    pub(crate) signal_samples: u32,
    /// The stacks of `stacks` that the signal handler took (the thread was on CPU); the others
    /// were copied while it slept. (One stack is one or the other: a signal's starts in the
    /// handler, a copy's at a system call.)
    pub(crate) on_cpu_stacks: std::collections::HashSet<Vec<usize>>,
    /// Of the samples in `stacks`, by stack, those that found the thread inside a system call
    /// for a while ([`asyncprof_format::StackSample::in_a_call`]): copied while it slept, or
    /// taken by a signal it answered after [`asyncprof_format::IN_A_CALL_NS`] or more of CPU
    /// time ([`asyncprof_sampler::Sample::answer_cpu_ns`]); with that CPU time (see
    /// [`InCall`]).
    pub(crate) in_a_call: HashMap<Vec<usize>, InCall>,
    /// A poll's stall (not a busy period's): where its time went ([`TimeSplit`]). `None`
    /// without `schedstat` (CPU time then in 10 ms ticks) or before two reads. The looks
    /// come closest at a stall's start, so this, not their count, says where the time of a
    /// poll that slept, then computed, went.
    pub(crate) time_split: Option<TimeSplit>,
    /// The stall threshold (ns): a part of a poll's stall of the other class than its own is
    /// recorded when its time reaches it (`StallRecord::part`).
    pub(crate) threshold_ns: u64,
}

/// Where a stalled poll's time went, from its thread's `schedstat` (see
/// [`RawStall::time_split`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TimeSplit {
    /// Measured: on CPU and asleep (neither on CPU nor waiting for one), ns, from the first
    /// read of the thread's times in the stall (half the threshold in, or the first look) to
    /// the last: a tick after its end, or, after a late look, the latest read in it (reads
    /// come at least every eighth of the stall's age); while it lasts, the latest read.
    pub(crate) on_cpu_ns: u64,
    pub(crate) asleep_ns: u64,
    /// The poll's time before the first read, from its start (0 when the start is not known
    /// closely: first seen after a gap in the looks): not measured, and taken to be spent as
    /// the thread was at that read, asleep (`lead_asleep`) or not.
    pub(crate) lead_ns: u64,
    pub(crate) lead_asleep: bool,
}

impl TimeSplit {
    /// On CPU and asleep with the time before the first read counted as the thread was at
    /// it: the estimate a stall's class is taken from.
    pub(crate) fn estimated(&self) -> (u64, u64) {
        if self.lead_asleep {
            (self.on_cpu_ns, self.asleep_ns + self.lead_ns)
        } else {
            (self.on_cpu_ns + self.lead_ns, self.asleep_ns)
        }
    }
}

/// What the signal samples of a busy-period stall (the stable tier; in the hooks tier, a
/// current-thread runtime's stretch between its tasks' polls, watched as one) show of its
/// polls: the signal handler asks tokio which task the thread is polling at that instant
/// (`tokio::task::try_id`, none between polls). A busy period whose samples show two polls
/// (two tasks, or a task and then the scheduler between polls) is not one poll, however long
/// tokio's busy time stood still: tokio publishes it only every 61 turns of its loop, so 61
/// polls of 1 ms in a row stand still for 61 ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum PollEvidence {
    /// No signal sample showed a task: nothing to tell (stacks copied from outside, signals
    /// off, a poll that is no task's such as a current-thread runtime's `block_on`).
    #[default]
    Unknown,
    /// One task, in samples not yet enough to confirm one poll.
    Unconfirmed,
    /// One task in [`CONFIRM_SAMPLES`] samples at least half a threshold apart from first
    /// to last, no other poll between: one poll held the worker.
    Confirmed,
    /// Another poll seen before any was confirmed: several polls, no stall. The record ends
    /// there, and the watchdog times the poll running now from the sample that saw it change.
    Several,
}

/// Stall records waiting for the aggregator, the latest state of each by id.
#[derive(Debug, Default)]
pub(crate) struct StallBoard {
    pub(crate) unsent: BTreeMap<u64, RawStall>,
    /// Busy-period stalls as they were when a longer stretch asleep took the place of their
    /// recorded one, which had ended (see [`Watchdog::keep_longest_stretch`]), in that order:
    /// each is judged before its stall's later versions.
    pub(crate) replaced: Vec<RawStall>,
}

/// Signal samples of one task, at least half a threshold apart from first to last with no
/// other poll seen between, that confirm a busy-period stall as one poll (see
/// [`PollEvidence`]). Fewer let a worker that polls a few tasks in turn pass for one held by
/// one of them now and then (in step with the watchdog's looks, which a saturated machine
/// spaces by its scheduler tick).
const CONFIRM_SAMPLES: u32 = 4;

/// Stall records waiting at most; beyond, updates are dropped and counted.
const MAX_UNSENT: usize = 4096;

/// How often a busy-period thread's exact CPU clock is read, at most, to prove it has not run
/// (see [`Watchdog::held_by_a_still_thread`]): a system call of well under a microsecond.
const STILL_READ_NS: u64 = 1_000_000;

struct Active {
    raw: RawStall,
    next_sample_ns: u64,
    backoff_ns: u64,
    samples: u32,
    last_push_ns: u64,
    /// Whether this stall's stack may be sampled (the per-minute budget).
    stacks: bool,
    /// The next look only tries the stack again (the thread was on CPU, not yet long enough
    /// to be signalled): the kernel state was counted at the look before.
    stack_retry: bool,
    /// Such tries in a row; after [`MAX_STACK_RETRIES`] the back-off applies again.
    stack_retries: u32,
    /// The thread's CPU time at the previous look (wall ns, CPU ns), to tell running from
    /// runnable-but-preempted.
    cpu_mark: Option<(u64, u64)>,
    /// The thread's times at the previous look that read them, for the time it slept since.
    sleep_mark: Option<SleepMark>,
    /// Busy-period stalls: the times read in the busy period before the stall began, when no
    /// read was taken in it. Only the stall's first read is measured from it: when that read
    /// finds the thread asleep, it slept at most what it slept since this one, which bounds
    /// when it fell asleep more closely than the stall's start can.
    earlier_mark: Option<SleepMark>,
    /// Busy-period stalls: the thread ran after this time (its exact CPU clock moved between
    /// a read then and the next; 0: not known): a stretch asleep begins no earlier.
    ran_after_ns: u64,
    /// Busy-period stalls: `sleep_mark` is the read at the declaration that proved the thread
    /// asleep all along since this time ([`Watchdog::asleep_all_along`]): a stretch that begins
    /// at the look after it counts its time asleep from then, not only from that read.
    asleep_since_ns: Option<u64>,
    /// Busy-period stalls: the stretch asleep going on (empty: none), whether this look's
    /// state read made it longer (a stack copied at this look is then the stretch's), and
    /// whether it is the one in `raw.stretch` (whose end is then not known yet).
    run: Stretch,
    in_run: bool,
    run_is_recorded: bool,
    /// The same at half the threshold, for the whole stall's CPU share at its end.
    cpu_start: Option<(u64, u64)>,
    /// A poll's stall: the first read of the thread's times in it, where its time split
    /// ([`RawStall::time_split`]) counts from.
    first_mark: Option<SleepMark>,
    /// A poll's stall: when the poll began, as closely as known (after a hand-off by
    /// `block_in_place`, when the thread took its worker back); `None` when it was first seen
    /// after a gap in the looks. The time from it to `first_mark` is the split's lead.
    lead_from_ns: Option<u64>,
    /// A poll's stall: the next look that reads the thread's times for its split.
    next_split_ns: u64,
    /// Busy-period stalls: the task the signal samples show now (0: none yet), the thread's
    /// CPU time at the first sample that showed it, when the last did, and how many did.
    poll_task: u64,
    poll_first_cpu_ns: Option<u64>,
    poll_last_ns: u64,
    poll_samples: u32,
    /// Busy-period stalls: a sample showed another poll than the one before; the poll running
    /// now began after this time. The stall ends at this look.
    poll_changed: Option<u64>,
    /// Busy-period stalls: the signal its thread has not answered yet
    /// ([`SampleError::Pending`]), as the looks since it was sent saw it.
    held: Option<Held>,
}

/// A busy-period stall's signal not answered yet: a handler runs as soon as its thread comes
/// back to its own code, so from the first look that found it unanswered (the one that sent
/// it, or the first after) to the latest, the thread stayed where it was (inside one system
/// call, or waiting for a CPU), in the poll whose task the handler then sees. The thread's
/// exact CPU time at the first (read after the send) and at the latest (read before the
/// signal was found unanswered) bounds from below how long that poll held it computing.
#[derive(Debug, Clone, Copy)]
struct Held {
    /// The signal's ([`asyncprof_sampler::StackSampler::pending`]).
    sent: std::time::Instant,
    cpu_sent_ns: u64,
    cpu_seen_ns: u64,
    seen_ns: u64,
}

/// A stretch asleep of a busy-period stall: looks in a row that each found its thread asleep
/// having slept through more than half the time since the read before. One a threshold long
/// is a blocking call, the stall's poll (`aggregator`), recorded with what the stretch's
/// looks saw, not what the polls before and after it in the busy period did.
#[derive(Debug, Clone, Default)]
pub(crate) struct Stretch {
    /// Time slept (neither on CPU nor waiting for one).
    pub(crate) slept_ns: u64,
    /// When the thread fell asleep, about (the clock's ns).
    pub(crate) from_ns: u64,
    /// When it woke, about; `None` while it sleeps.
    pub(crate) to_ns: Option<u64>,
    /// When the time slept reached the threshold: set, the stretch is a blocking call
    /// ([`Stretch::blocked`]).
    pub(crate) detected_ns: Option<u64>,
    /// Stacks copied while it slept, its looks, their system calls, and how many found the
    /// machine crowded (of those that could tell).
    pub(crate) stacks: HashMap<Vec<usize>, u32>,
    pub(crate) looks: u32,
    pub(crate) syscalls: BTreeMap<u64, u32>,
    pub(crate) crowded: u32,
    pub(crate) crowd_known: u32,
}

impl Stretch {
    /// Whether it slept a threshold: a blocking call, the busy-period stall's poll.
    pub(crate) fn blocked(&self) -> bool {
        self.detected_ns.is_some()
    }
}

impl RawStall {
    /// Whether this stall is recorded as its stretch asleep ([`RawStall::as_stretch`]): a busy
    /// period's, with a blocked stretch and no poll confirmed on CPU.
    pub(crate) fn recorded_as_stretch(&self) -> bool {
        self.task_id == 0 && self.polls != PollEvidence::Confirmed && self.stretch.blocked()
    }

    /// This busy-period stall as its blocked stretch saw it (its time, stacks, looks and
    /// system calls), not as the polls before and after it in the busy period did; `None`
    /// when no stretch is blocked, or one poll of it was confirmed on CPU.
    pub(crate) fn as_stretch(&self) -> Option<RawStall> {
        if !self.recorded_as_stretch() {
            return None;
        }
        let s = &self.stretch;
        let start_ns = self.start_ns.max(s.from_ns);
        Some(RawStall {
            stacks: s.stacks.clone(),
            // Copied while the thread slept, every one: no signal's answer among them.
            in_a_call: s
                .stacks
                .iter()
                .map(|(ips, &samples)| (ips.clone(), InCall { samples, cpu_ns: 0 }))
                .collect(),
            start_ns,
            last_seen_ns: s.to_ns.unwrap_or(self.last_seen_ns).max(start_ns),
            detected_ns: s.detected_ns.unwrap_or(self.detected_ns).max(start_ns),
            on_cpu: 0,
            asleep: s.looks,
            syscalls: s.syscalls.clone(),
            crowded: s.crowded,
            crowd_known: s.crowd_known,
            // Its share of CPU is what it slept through: the whole stall's would count the
            // polls around it.
            cpu_share: None,
            // Ended once its stretch did, whatever the busy period does after.
            ongoing: self.ongoing && s.to_ns.is_none(),
            ..self.clone()
        })
    }
}

/// A stack's samples that stayed in the call it begins in ([`RawStall::in_a_call`]).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct InCall {
    pub(crate) samples: u32,
    /// The CPU time the thread used between each of those samples' signals and its handler,
    /// summed (a copy taken while it slept adds none): how long it computed inside the call.
    /// Between stacks sampled as often, the call with more of it held the worker longer (see
    /// [`crate::symbolize`]).
    pub(crate) cpu_ns: u64,
}

/// A thread's CPU time and time waiting for a CPU, read at `at_ns` (the exact clock, when
/// they were read: a look's own time can be milliseconds earlier, after other workers' stacks).
#[derive(Debug, Clone, Copy)]
struct SleepMark {
    at_ns: u64,
    cpu_ns: u64,
    wait_ns: Option<u64>,
    /// The thread was asleep (not runnable) at the read, in which system call when known.
    asleep: bool,
    syscall: Option<u64>,
    /// The time it slept since the mark before, when there was one.
    slept_before_ns: Option<u64>,
}

impl SleepMark {
    /// A mark of `state`, just read, after `before`.
    fn read(state: &asyncprof_sampler::ThreadState, before: Option<&SleepMark>) -> SleepMark {
        let mut mark = SleepMark {
            at_ns: clock::exact_ns(),
            cpu_ns: state.cpu_ns,
            wait_ns: state.wait_ns,
            asleep: state.state != 'R',
            syscall: state.syscall,
            slept_before_ns: None,
        };
        mark.slept_before_ns = before.map(|b| b.slept_ns_until(&mark));
        mark
    }

    /// When the thread fell asleep, about, for a sleep that went on through the interval
    /// after this mark: if it was asleep at this mark, for what it slept before it (at
    /// `stall_start` when nothing was read before); else the interval's sleep before `later`.
    /// [`RawStall::as_stretch`] keeps it no earlier than the stall.
    fn fell_asleep(&self, later: &SleepMark, stall_start: u64) -> u64 {
        match (self.asleep, self.slept_before_ns) {
            (true, Some(ns)) => self.at_ns.saturating_sub(ns),
            (true, None) => stall_start,
            (false, _) => later
                .at_ns
                .saturating_sub(later.slept_before_ns.unwrap_or_default()),
        }
    }

    /// The time the thread slept (neither on CPU nor waiting for one) from this mark to
    /// `later`, when that was more than half of it and it was asleep at `later`, in the same
    /// system call as at this mark if it was asleep then too. Without `schedstat` (no wait, CPU time in
    /// 10 ms ticks) nearly the whole interval counts: asleep looks in a row then make the
    /// stretch.
    fn slept_until(&self, later: &SleepMark) -> Option<u64> {
        // Asleep at both reads in two system calls: it woke in between, and waits on
        // something else now (a lock in the poll after a blocking call's, say).
        let other_call =
            self.asleep && matches!((self.syscall, later.syscall), (Some(a), Some(b)) if a != b);
        let slept = self.slept_ns_until(later);
        (later.asleep && !other_call && slept * 2 > later.at_ns.saturating_sub(self.at_ns))
            .then_some(slept)
    }

    /// When the thread woke, about, between `before` and this mark, for a sleep that went on
    /// from `before`: once it had slept what it slept in between.
    fn woke_after(&self, before: &SleepMark) -> u64 {
        before
            .at_ns
            .saturating_add(self.slept_before_ns.unwrap_or_default())
    }

    /// The thread's time on CPU and asleep from this mark to `later`; `None` without
    /// `schedstat` (no wait time: the CPU time is then in 10 ms ticks) or for no time at all.
    fn split_until(&self, later: &SleepMark) -> Option<TimeSplit> {
        self.wait_ns.and(later.wait_ns)?;
        let split = TimeSplit {
            on_cpu_ns: later.cpu_ns.saturating_sub(self.cpu_ns),
            asleep_ns: self.slept_ns_until(later),
            ..TimeSplit::default()
        };
        (split.on_cpu_ns + split.asleep_ns > 0).then_some(split)
    }

    /// The time the thread slept from this mark to `later`.
    fn slept_ns_until(&self, later: &SleepMark) -> u64 {
        let waited = match (self.wait_ns, later.wait_ns) {
            (Some(w0), Some(w)) => w.saturating_sub(w0),
            _ => 0,
        };
        later
            .at_ns
            .saturating_sub(self.at_ns)
            .saturating_sub(later.cpu_ns.saturating_sub(self.cpu_ns))
            .saturating_sub(waited)
    }
}

#[derive(Default)]
struct Track {
    seq: u64,
    /// The poll began no earlier than this (the later of its coarse start and the previous
    /// look that saw another poll). After a gap in the looks the coarse start is the stale
    /// clock's, so this may still be early: see `uncertain_start`.
    lower_ns: u64,
    /// The look that first saw the poll came after a gap in the watchdog's looks: the poll
    /// began somewhere in the gap, and its coarse start (the clock stood still) says too early.
    uncertain_start: bool,
    /// When the poll passed half the threshold, and the thread's CPU time then. A thread
    /// that is runnable but got little CPU since was preempted by other threads: that is not
    /// the poll's doing, and it is not reported as a stall.
    cpu_base: Option<(u64, u64)>,
    /// The thread's times then, for the time it slept since (see [`SleepMark`]); whether it
    /// was asleep then (not runnable: the poll blocked, whatever the thread's state when the
    /// stall is declared; a thread just woken from a long sleep is runnable and has used
    /// little CPU, yet was never preempted).
    sleep_base: Option<SleepMark>,
    /// The last times read of this slot's thread (its tid with them), from its last stall's
    /// last look or its last base: the next base read is measured from it. A base read
    /// without one, finding the thread asleep, cannot say since when: a stall whose first
    /// look came late (the watchdog short of a CPU, or the stall before ended at a look while
    /// the next poll already blocked) began its stretch at the stall's start, possibly many
    /// milliseconds before the call.
    last_mark: Option<(i32, SleepMark)>,
    /// Busy periods past half the threshold, stalled or not: the thread's exact CPU time as last read (see
    /// [`Watchdog::read_still`]), and when its state may be read again to prove it holds a
    /// standing worker ([`Watchdog::held_by_a_still_thread`]).
    still: Option<Still>,
    next_still_state_ns: u64,
    stall: Option<Active>,
    /// The thread handed its worker to another thread (`block_in_place`) at the last check.
    handed_off: bool,
    next_core_check_ns: u64,
    /// Busy periods: the poll running now began after this time (a sample saw another poll
    /// then; 0: no such sample in this busy period).
    poll_floor_ns: u64,
}

/// A thread's exact CPU time as last read (at the look `look_ns`), and since when it has had
/// that value: the thread has not run since `since_ns` (the exact clock just after the first
/// read that found it), and it ran after `ran_after_ns` (just after the read before, which
/// found another value; 0 when there was none).
#[derive(Debug, Clone, Copy)]
struct Still {
    tid: i32,
    cpu_ns: u64,
    since_ns: u64,
    ran_after_ns: u64,
    at_ns: u64,
    look_ns: u64,
    /// Read at the look `look_ns`: asleep all along since `since_ns` (see
    /// [`Watchdog::asleep_all_along`]), or not.
    asleep: Option<Option<SleepMark>>,
}

impl Still {
    /// Whether the thread has not run since before each of the changes that happened after
    /// `changed_after` ([`BusyTimes::unparked_changed_after`]; `None`: none to go by), as
    /// two reads with one value at least prove.
    fn through_changes(&self, changed_after: Option<u64>) -> bool {
        self.since_ns < self.at_ns && changed_after.is_none_or(|c| self.since_ns <= c)
    }
}

/// The watchdog's own state, on its thread.
pub(crate) struct Watchdog {
    rec: &'static Recorder,
    sampler: StackSampler,
    threshold_ns: u64,
    /// A longer time between two looks is a gap (the watchdog did not run on time).
    gap_ns: u64,
    /// The watchdog's period.
    tick_ns: u64,
    tracks: Vec<Track>,
    prev_look_ns: u64,
    next_id: u64,
    minute_start_ns: u64,
    sampled_this_minute: u32,
    /// tokio's busy time per worker of each runtime with a stable-tier worker busy now (see
    /// [`BusyTimes`]; a current-thread runtime's one worker too).
    busy_times: Vec<BusyTimes>,
    /// The hooks tier: a current-thread runtime's `block_on` thread between its tasks' polls
    /// is watched too ([`observe_between`]). Set at each look.
    between_polls: bool,
    /// Buffers `read_busy_times` reuses, so that a look allocates nothing.
    scratch: (Vec<ThreadPark>, Vec<bool>),
    /// The last look found a worker inside a poll (or a busy period, or a stretch between
    /// polls): see [`Watchdog::quiet_sleep`].
    saw_a_poll: bool,
    /// A small generator (xorshift) that spreads a busy period's samples in time, so that
    /// they do not fall in step with a worker that polls the same few tasks in turn.
    jitter: u64,
    /// The time spent sampling stalls since `run` last took it ([`Watchdog::sampling`]).
    sampling_ns: u64,
}

/// The stable tier sees when a worker is busy (unparked), not its polls: a busy, healthy worker
/// that never parks holds one busy period for seconds. tokio's stable runtime metrics publish
/// each worker's busy time at every park and every `event_interval` turns of its loop (61 by
/// default), so a worker inside one long poll is an unparked worker whose busy time stands
/// still (and so does one between polls: see `aggregator::WithoutAPoll`). A busy
/// period past the threshold is a stall only when its thread's worker stands so; the handle is
/// held only while a worker of the runtime is busy.
///
/// tokio's stable metrics do not say which thread runs which worker: the watchdog learns it from
/// park states, when exactly one worker is parked (or exactly one is not) both in tokio's
/// counts and in asyncprof's (and from the last one left). Until then a busy period is a stall only when
/// at least as many workers stand as busy periods are past the threshold (each of them is
/// one), never a guess between a standing worker and a polling one.
///
/// Read too for a current-thread runtime's one worker: in the stable tier, and in the hooks
/// tier for its `block_on` thread between its tasks' polls (see `observe_between`).
struct BusyTimes {
    runtime: u64,
    /// A current-thread runtime: its one worker is run by whichever thread calls `block_on`.
    current_thread: bool,
    /// Of a current-thread runtime: tokio's park and unpark count of its worker when it last
    /// moved, this runtime's thread's own park count then, and whether that thread has parked
    /// twice since without tokio's count moving: it drives another runtime now (a thread is
    /// counted with the first runtime it ran for), whose busy time this is not.
    park_unparks: Option<u64>,
    parks_then: u64,
    stale: bool,
    metrics: tokio::runtime::RuntimeMetrics,
    workers: Vec<BusyTime>,
    /// Which tokio worker each thread runs, as learned.
    pairs: Vec<Pair>,
    /// At the last read, asyncprof counted more live threads of the runtime than tokio has
    /// workers: a thread inside `block_in_place` handed its worker to another thread, so a
    /// worker's busy time is not its thread's alone.
    extra_threads: bool,
    /// The look of the last read (0: none yet).
    read_ns: u64,
}

#[derive(Clone, Copy)]
struct BusyTime {
    busy_ns: u64,
    parked: bool,
    /// When the watchdog first saw this value (the first read: when it began reading).
    since_ns: u64,
    /// Whether `since_ns` is when the value moved (a look saw it change), not the first read.
    moved: bool,
    /// It changed after this time: the look of the read before the one that saw it change
    /// (0 for a value seen at the first read: it may be as old as the runtime).
    changed_after_ns: u64,
}

/// A thread of a runtime as asyncprof sees it: (worker entry, tid, parked).
type ThreadPark = (u32, i32, bool);

/// asyncprof's worker entry `worker` (thread `tid`) runs tokio's worker `index`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Pair {
    worker: u32,
    tid: i32,
    index: usize,
}

impl BusyTimes {
    /// A current-thread runtime: whether its one thread still drives it (see `stale`).
    fn follow_parks(&mut self, rec: &Recorder) {
        let mut ours = rec
            .workers()
            .filter(|w| w.active.load(Relaxed) && w.runtime.load(Relaxed) == self.runtime);
        let (Some(w), None) = (ours.next(), ours.next()) else {
            return;
        };
        let parks = w.parks.load(Relaxed);
        let theirs = self.metrics.worker_park_unpark_count(0);
        if self.park_unparks != Some(theirs) {
            self.park_unparks = Some(theirs);
            self.parks_then = parks;
            self.stale = false;
        } else if parks.saturating_sub(self.parks_then) >= 2 {
            self.stale = true;
        }
    }

    fn read(&mut self, now: u64) {
        for i in 0..self.metrics.num_workers() {
            let busy_ns = self.metrics.worker_total_busy_duration(i).as_nanos() as u64;
            // Odd while parked: tokio counts each park and each unpark.
            let parked = self.metrics.worker_park_unpark_count(i) & 1 == 1;
            match self.workers.get_mut(i) {
                Some(w) if w.busy_ns == busy_ns && w.parked == parked => {}
                Some(w) => {
                    *w = BusyTime {
                        busy_ns,
                        parked,
                        since_ns: now,
                        moved: true,
                        changed_after_ns: self.read_ns,
                    }
                }
                None => self.workers.push(BusyTime {
                    busy_ns,
                    parked,
                    since_ns: now,
                    moved: false,
                    changed_after_ns: 0,
                }),
            }
        }
        self.read_ns = now;
    }

    /// The earliest time after which every worker that is unparked and does not stand (its
    /// busy time moved within `min_ns`) last changed; `None` when there is no such worker.
    /// A thread in a busy period holds no parked worker: tokio counts a park after the hook
    /// that ends asyncprof's busy period, and an unpark before the one that begins it.
    fn unparked_changed_after(&self, now: u64, min_ns: u64) -> Option<u64> {
        (0..self.workers.len())
            .filter(|&i| !self.workers[i].parked && self.stands(i, now, min_ns, 0).is_none())
            .map(|i| self.workers[i].changed_after_ns)
            .min()
    }

    /// Whether each tokio worker is parked, as published now, into `out`.
    fn parked(&self, out: &mut Vec<bool>) {
        out.clear();
        out.extend(
            (0..self.metrics.num_workers())
                .map(|i| self.metrics.worker_park_unpark_count(i) & 1 == 1),
        );
    }

    /// Learn pairs from park states: `threads` are this runtime's threads as (worker entry,
    /// tid, parked), read after [`BusyTimes::read`] and before `after`, a second read of
    /// tokio's: both must agree.
    fn learn(&mut self, threads: &[ThreadPark], after: &[bool]) {
        if threads.len() != after.len()
            || self.workers.len() != after.len()
            || self.workers.iter().zip(after).any(|(w, &p)| w.parked != p)
        {
            return;
        }
        for parked in [true, false] {
            let mut ours = threads.iter().filter(|t| t.2 == parked);
            let mut theirs = (0..after.len()).filter(|&i| after[i] == parked);
            if let ((Some(&(worker, tid, _)), None), (Some(index), None)) =
                ((ours.next(), ours.next()), (theirs.next(), theirs.next()))
            {
                self.pair(worker, tid, index);
            }
        }
        // Every pair but one known: the last thread runs the last worker.
        let mut unknown = threads.iter().filter(|t| self.index_of(t.0, t.1).is_none());
        let mut free = (0..after.len()).filter(|&i| !self.pairs.iter().any(|p| p.index == i));
        if let ((Some(&(worker, tid, _)), None), (Some(index), None)) =
            ((unknown.next(), unknown.next()), (free.next(), free.next()))
        {
            self.pair(worker, tid, index);
        }
    }

    /// Thread `tid` (worker entry `worker`) runs tokio's worker `index`: replaces what was
    /// believed of either.
    fn pair(&mut self, worker: u32, tid: i32, index: usize) {
        self.pairs
            .retain(|p| p.index != index && p.worker != worker && p.tid != tid);
        self.pairs.push(Pair { worker, tid, index });
    }

    /// The tokio worker thread `tid` (asyncprof's worker entry `worker`) runs, once believed.
    fn index_of(&self, worker: u32, tid: i32) -> Option<usize> {
        self.pairs
            .iter()
            .find(|p| p.worker == worker && p.tid == tid)
            .map(|p| p.index)
    }

    /// Whether tokio's worker `index` is unparked with a busy time unmoved for `min_ns`, and
    /// then the earliest a poll holding it can have begun, when known (the look before the
    /// value last moved).
    fn stands(&self, index: usize, now: u64, min_ns: u64, tick_ns: u64) -> Option<Option<u64>> {
        let w = self.workers.get(index)?;
        (!w.parked && now.saturating_sub(w.since_ns) >= min_ns)
            .then(|| w.moved.then(|| w.since_ns.saturating_sub(tick_ns)))
    }

    /// The standing workers (see [`BusyTimes::stands`]) and the earliest of their begin times.
    fn standing(&self, now: u64, min_ns: u64, tick_ns: u64) -> (usize, Option<u64>) {
        let mut n = 0;
        let mut began: Option<u64> = None;
        for i in 0..self.workers.len() {
            if let Some(b) = self.stands(i, now, min_ns, tick_ns) {
                n += 1;
                if let Some(b) = b {
                    began = Some(began.map_or(b, |e| e.min(b)));
                }
            }
        }
        (n, began)
    }
}

impl Watchdog {
    pub(crate) fn new(rec: &'static Recorder, sampler: StackSampler) -> Self {
        Watchdog {
            rec,
            sampler,
            threshold_ns: rec.settings.config.stall_threshold_us.saturating_mul(1000),
            gap_ns: gap_bound(rec.settings.config.clock_tick_ns),
            tick_ns: rec.settings.config.clock_tick_ns,
            tracks: Vec::new(),
            prev_look_ns: 0,
            next_id: 1,
            minute_start_ns: 0,
            sampled_this_minute: 0,
            busy_times: Vec::new(),
            between_polls: false,
            scratch: Default::default(),
            saw_a_poll: false,
            jitter: clock::exact_ns() | 1,
            sampling_ns: 0,
        }
    }

    /// Read tokio's busy times and park states of every runtime whose workers
    /// asyncprof sees in busy periods (the stable tier: a busy period has no task), from the
    /// first such period until the runtime's last thread stops, and learn which thread runs
    /// which worker. An idle runtime costs nothing here: the watchdog sleeps with its workers.
    fn read_busy_times(&mut self, now: u64) {
        let rec = self.rec;
        self.busy_times.retain(|b| rec.runtime_live(b.runtime));
        // Only the stable tier has busy periods, and the hooks tier a current-thread runtime's
        // time between its tasks' polls (a look of the hooks tier otherwise does no more).
        self.between_polls = rec.tier() == asyncprof_format::Tier::Hooks;
        if rec.tier() != asyncprof_format::Tier::Stable && !self.between_polls {
            return;
        }
        for w in rec.workers() {
            // In the hooks tier a current-thread runtime's busy times are read from its thread's
            // registration on, so that its parks are followed (`BusyTimes::follow_parks`)
            // before any stretch between its polls is long.
            let current =
                self.between_polls && w.current_thread.load(Relaxed) && w.active.load(Relaxed);
            if current || matches!(self.observe_any(w), Some((_, _, 0))) {
                let r = w.runtime.load(Relaxed);
                if !self.busy_times.iter().any(|b| b.runtime == r) {
                    if let Some((handle, current_thread)) = rec.busy_time_handle(r) {
                        self.busy_times.push(BusyTimes {
                            runtime: r,
                            current_thread,
                            park_unparks: None,
                            parks_then: 0,
                            stale: false,
                            metrics: handle.metrics(),
                            workers: Vec::new(),
                            pairs: Vec::new(),
                            extra_threads: false,
                            read_ns: 0,
                        });
                    }
                }
            }
        }
        let (mut threads, mut after) = std::mem::take(&mut self.scratch);
        for b in &mut self.busy_times {
            b.read(now);
            let ours = |w: &&Worker| w.active.load(Relaxed) && w.runtime.load(Relaxed) == b.runtime;
            // Every worker has parked (tokio's count) and as many threads as workers parked
            // since they registered: a thread presumed a worker as it started that has not
            // parked runs none. (Only a worker's thread parks; a thread inside
            // `block_in_place` keeps its count, so tokio's counts are asked too.)
            let workers = b.metrics.num_workers();
            let proven = rec
                .workers()
                .filter(ours)
                .filter(|w| w.parked_since_registration())
                .count();
            if proven >= workers && (0..workers).all(|i| b.metrics.worker_park_count(i) > 0) {
                for w in rec.workers().filter(ours) {
                    let registered = w.registered_ns.load(Relaxed);
                    if w.unproven() && registered != 0 {
                        w.ruled_out.store(registered, Relaxed);
                    }
                }
            }
            threads.clear();
            threads.extend(
                rec.workers()
                    .filter(ours)
                    .filter(|w| !w.runs_no_worker())
                    .map(|w| {
                        let parked = w.park_since_ns.load(Relaxed) != 0;
                        (w.index, w.tid.load(Relaxed), parked)
                    }),
            );
            b.parked(&mut after);
            b.extra_threads = threads.len() > after.len();
            // The hooks tier's watch between a current-thread runtime's polls only: the stable
            // tier judges such a runtime's busy periods as it did.
            if b.current_thread && self.between_polls {
                b.follow_parks(rec);
            }
            b.learn(&threads, &after);
        }
        self.scratch = (threads, after);
    }

    /// tokio's busy times of runtime `r`, when they tell its threads apart: not those of a
    /// current-thread runtime whose `block_on` more than one thread has called (one whose
    /// `block_on` returned keeps a busy period no park ends, while the one worker's busy time
    /// is the other's): its busy periods are then judged without them, as before they were kept.
    fn busy_times_of(&self, r: u64) -> Option<&BusyTimes> {
        self.busy_times
            .iter()
            .find(|b| b.runtime == r && !(b.current_thread && (b.extra_threads || b.stale)))
    }

    /// Whether the busy period of worker entry `w` (of runtime `r`), past the threshold, holds
    /// its worker in one poll, and then the earliest that poll can have begun when known.
    /// `Some(None)` also when tokio's metrics cannot tell (no handle; or threads that took
    /// turns driving one current-thread runtime).
    fn busy_stall(&self, w: &Worker, now: u64) -> Option<Option<u64>> {
        let r = w.runtime.load(Relaxed);
        let Some(b) = self.busy_times_of(r) else {
            return Some(None);
        };
        if let Some(index) = b.index_of(w.index, w.tid.load(Relaxed)) {
            return b.stands(index, now, self.threshold_ns, self.tick_ns);
        }
        // Which worker this thread runs is not known: a stall only if every busy period past
        // the threshold that is no stall yet has a standing worker of its own.
        let (standing, began) = b.standing(now, self.threshold_ns, self.tick_ns);
        let (declared, waiting) = self.busy_periods(r, now);
        (standing >= declared + waiting.max(1)).then_some(began)
    }

    /// Read busy period `i`'s thread's exact CPU clock (thread `tid`), at most every
    /// [`STILL_READ_NS`] unless `now_too`: a system call of well under a microsecond, no file.
    /// Two reads with one value prove the thread has not run between them.
    fn read_still(&mut self, i: usize, tid: i32, now: u64, now_too: bool) {
        let track = &mut self.tracks[i];
        let last = track.still.filter(|s| s.tid == tid);
        if last.is_some_and(|s| s.look_ns == now || (!now_too && now < s.look_ns + STILL_READ_NS)) {
            return;
        }
        let Some(cpu_ns) = asyncprof_sampler::thread_cpu_ns(tid) else {
            track.still = None;
            return;
        };
        let at_ns = clock::exact_ns();
        let mut still = match last {
            // A thread that ever ran has CPU time: zero is a clock that does not count.
            Some(s) if s.cpu_ns == cpu_ns && cpu_ns != 0 => s,
            _ => Still {
                tid,
                cpu_ns,
                since_ns: at_ns,
                ran_after_ns: last.map_or(0, |s| s.at_ns),
                at_ns,
                look_ns: now,
                asleep: None,
            },
        };
        still.at_ns = at_ns;
        still.look_ns = now;
        still.asleep = None;
        track.still = Some(still);
    }

    /// Whether busy period `i`'s thread (`tid`), its clock read at this look, has not run
    /// since an earlier read and is asleep now: then asleep all along since that read (it can
    /// fall asleep again only by running; its clock is read again after its state, to be sure
    /// it did not run between), its times as a [`SleepMark`] that says so. Runnable, it waits
    /// for a CPU (an overloaded machine): not blocked. Read once a look.
    fn asleep_all_along(&mut self, i: usize, tid: i32, now: u64) -> Option<SleepMark> {
        let track = &mut self.tracks[i];
        let mut still = track
            .still
            .filter(|s| s.tid == tid && s.look_ns == now && s.since_ns < s.at_ns)?;
        if let Some(known) = still.asleep {
            return known;
        }
        let mark = asyncprof_sampler::thread_state(tid)
            .filter(|st| st.state != 'R')
            .filter(|_| asyncprof_sampler::thread_cpu_ns(tid) == Some(still.cpu_ns))
            .map(|st| {
                let mut mark = SleepMark::read(&st, None);
                mark.slept_before_ns = Some(mark.at_ns.saturating_sub(still.since_ns));
                mark
            });
        still.asleep = Some(mark);
        track.still = Some(still);
        mark
    }

    /// A busy period past the threshold that [`Watchdog::busy_stall`] does not take for a
    /// stall because which thread runs which worker is not known and fewer workers stand than
    /// busy periods wait (another worker's busy time moves more often than a threshold: it
    /// polls short polls, and tokio moves it every 61 of them): a stall all the same when its
    /// thread has not run at all since before every worker that does not stand last changed
    /// (its busy time moved, or it parked or unparked), and is asleep now. Only the thread
    /// that holds a worker moves its busy time or parks it, so this one holds none of those
    /// but one that stands, while it does not run: a poll blocked it. (Not while the runtime
    /// has more threads than workers: under `block_in_place` another thread moves a worker.)
    /// Its state is read only once its clock proves that, at most four times a threshold.
    fn held_by_a_still_thread(&mut self, i: usize, w: &Worker, now: u64) -> Option<Option<u64>> {
        let r = w.runtime.load(Relaxed);
        let tid = w.tid.load(Relaxed);
        let b = self.busy_times_of(r)?;
        if b.extra_threads || b.index_of(w.index, tid).is_some() {
            return None;
        }
        let (standing, began) = b.standing(now, self.threshold_ns, self.tick_ns);
        let changed_after = b.unparked_changed_after(now, self.threshold_ns);
        // A standing worker no declared stall holds.
        let (declared, _) = self.busy_periods(r, now);
        let still = self.tracks[i]
            .still
            .filter(|s| s.tid == tid && s.look_ns == now)?;
        // Still for half a threshold: a thread that waits a moment (a lock) now and then is
        // not worth a read of its state.
        if standing <= declared
            || !still.through_changes(changed_after)
            || still.at_ns.saturating_sub(still.since_ns) < self.threshold_ns / 2
            || now < self.tracks[i].next_still_state_ns
        {
            return None;
        }
        self.tracks[i].next_still_state_ns = now.saturating_add(self.threshold_ns / 4);
        self.asleep_all_along(i, tid, now).map(|_| began)
    }

    /// A worker in a poll ([`observe`]) or, in the hooks tier, a current-thread runtime's
    /// `block_on` thread between its tasks' polls ([`observe_between`]).
    fn observe_any(&self, w: &Worker) -> Option<(u64, u64, u64)> {
        if w.runs_no_worker() {
            return None;
        }
        observe(w).or_else(|| self.between_polls.then(|| observe_between(w)).flatten())
    }

    /// Busy periods of runtime `r` past the threshold: (declared stalls, not yet declared).
    fn busy_periods(&self, r: u64, now: u64) -> (usize, usize) {
        let (mut declared, mut waiting) = (0, 0);
        for (t, w) in self.tracks.iter().zip(self.rec.workers()) {
            if let Some(a) = &t.stall {
                declared += usize::from(a.raw.task_id == 0 && a.raw.runtime == r);
            } else if w.runtime.load(Relaxed) == r
                && matches!(self.observe_any(w), Some((seq, _, 0)) if seq == t.seq)
                && now.saturating_sub(t.lower_ns) >= self.threshold_ns
            {
                waiting += 1;
            }
        }
        (declared, waiting)
    }

    /// End the busy-period stalls whose worker went back to polling: a known worker that no
    /// longer stands, or, where the pairs are not known, every such stall of a runtime with
    /// fewer standing workers than stalls (those still standing are declared again) but one
    /// whose thread has not run since before what made fewer stand (asleep in a call
    /// throughout: ending it cut one blocking call into two records, its first part and,
    /// declared again, the whole; see [`Watchdog::idle_through_change`]).
    fn end_resumed_busy_stalls(&mut self, now: u64) {
        let mut ended = Vec::new();
        for (i, (t, w)) in self.tracks.iter().zip(self.rec.workers()).enumerate() {
            let Some(a) = t.stall.as_ref().filter(|a| a.raw.task_id == 0) else {
                continue;
            };
            let Some(b) = self.busy_times_of(a.raw.runtime) else {
                continue;
            };
            match b.index_of(w.index, a.raw.tid) {
                Some(index) => {
                    if b.stands(index, now, self.threshold_ns, self.tick_ns)
                        .is_none()
                    {
                        ended.push((i, None));
                    }
                }
                None => {
                    let (standing, _) = b.standing(now, self.threshold_ns, self.tick_ns);
                    if standing < self.busy_periods(a.raw.runtime, now).0 {
                        ended.push((i, Some((a.raw.runtime, a.raw.tid))));
                    }
                }
            }
        }
        ended.retain(|&(i, unpaired)| {
            unpaired.is_none_or(|(r, tid)| !self.idle_through_change(i, r, tid, now))
        });
        for (i, _) in ended {
            self.end_stall(i, now);
            // One declared again (its thread still in the same call, as far as can be told)
            // begins here, not where this one began: the two records do not overlap.
            self.tracks[i].poll_floor_ns = self.tracks[i].poll_floor_ns.max(now);
        }
    }

    /// Whether the thread of stall `a` (on worker slot `i`) has not run at all since before
    /// every unparked worker that does not stand last changed (its exact CPU clock, read now,
    /// unmoved since then): then it is not the worker that went back to polling. A worker's
    /// busy time is moved by the thread that holds it, its own while the runtime has no more
    /// threads than workers (none inside `block_in_place`), and a thread in a busy period holds
    /// no parked worker (see [`BusyTimes::unparked_changed_after`]).
    fn idle_through_change(&mut self, i: usize, r: u64, tid: i32, now: u64) -> bool {
        let Some(b) = self.busy_times_of(r) else {
            return false;
        };
        if b.extra_threads {
            return false;
        }
        let changed_after = b.unparked_changed_after(now, self.threshold_ns);
        self.read_still(i, tid, now, true);
        self.tracks[i]
            .still
            .is_some_and(|s| s.tid == tid && s.through_changes(changed_after))
    }

    /// Whether a poll has run past half the threshold, or a stall is on: the watchdog then
    /// looks every tick, quiet service or not.
    fn watching(&self) -> bool {
        self.tracks
            .iter()
            .any(|t| t.stall.is_some() || t.cpu_base.is_some())
    }

    /// How long a quiet service's watchdog, watching no poll past half the threshold, sleeps
    /// after a look, for looks `quiet_tick` ([`quiet_tick_ns`]) apart while polls go on: a
    /// poll is first looked at past half the threshold, where its thread's CPU clock and sleep
    /// are first read to judge it by, before it is a half threshold plus `quiet_tick` old (on
    /// time; a late look is as late either way), and its stall is declared at the threshold,
    /// the look every tick from half of it.
    ///
    /// After a look that found every worker parked or between polls, the next poll begins
    /// after it: sleeping up to half a threshold plus `quiet_tick` keeps that bound (the next
    /// look finds such a poll either past half the threshold, or young, to be looked at again
    /// `quiet_tick` later). Where a poll was going on, or a worker just woke the watchdog from
    /// its idle wait, it may be young: `quiet_tick`. A service whose workers are mostly parked
    /// (a pipeline at its real rate) wakes the watchdog about half as often, for the same
    /// stalls, declared as soon. Only the hooks tier's polls of multi-thread runtimes: a busy
    /// period or a stretch between polls has no start of its own (it is timed from the look
    /// before the one that first saw it, or from tokio's busy times, read at each look).
    pub(crate) fn quiet_sleep(&self, quiet_tick: u64) -> u64 {
        let polls_only =
            self.rec.tier() == asyncprof_format::Tier::Hooks && self.busy_times.is_empty();
        if polls_only && !self.saw_a_poll {
            (self.threshold_ns / 2 + quiet_tick)
                .min(2 * MAX_QUIET_TICK_NS)
                .max(quiet_tick)
        } else {
            quiet_tick
        }
    }

    /// Look at every worker once. `now` is the time just published.
    pub(crate) fn look(&mut self, now: u64) {
        let rec = self.rec;
        self.saw_a_poll = false;
        self.read_busy_times(now);
        self.end_resumed_busy_stalls(now);
        for w in rec.workers() {
            let i = w.index as usize;
            if self.tracks.len() <= i {
                self.tracks.resize_with(i + 1, Track::default);
            }
            let observed = self.observe_any(w);
            self.saw_a_poll |= observed.is_some();
            let track = &mut self.tracks[i];
            let Some((seq, start, task)) = observed else {
                // Between polls: nothing to watch on this worker until the next.
                track.cpu_base = None;
                self.end_stall(i, now);
                continue;
            };
            if track.seq != seq {
                self.end_stall(i, now);
                let track = &mut self.tracks[i];
                track.seq = seq;
                track.lower_ns = start.max(self.prev_look_ns);
                if seq & 1 == 0 {
                    // A stretch between polls (no start of its own) began after its thread
                    // registered too (a thread that registered during a quiet watchdog's
                    // longer sleep: after the look before).
                    track.lower_ns = track.lower_ns.max(w.registered_ns.load(Relaxed));
                }
                track.uncertain_start = now.saturating_sub(self.prev_look_ns) > self.gap_ns;
                track.cpu_base = None;
                track.sleep_base = None;
                track.handed_off = false;
                track.next_core_check_ns = 0;
                track.poll_floor_ns = 0;
            }
            let track = &mut self.tracks[i];
            if now.saturating_sub(track.lower_ns) >= self.threshold_ns / 2
                && self.handed_off(i, w, now)
            {
                // The poll goes on without a worker: whatever it blocks, it is not the
                // runtime. A stall recorded before the hand-off ends here.
                self.end_stall(i, now);
                continue;
            }
            let running = now.saturating_sub(self.tracks[i].lower_ns);
            // A busy period (the stable tier; the hooks tier's stretch between a current-thread
            // runtime's polls) holds its worker in one poll only while tokio's
            // busy time for that worker stands still: `None` while it moves.
            // Its thread's exact CPU clock, in a stall too: whether it has not run since
            // before a change is asked of a declared stall as well (`idle_through_change`).
            if task == 0 && running >= self.threshold_ns / 2 {
                self.read_still(i, w.tid.load(Relaxed), now, false);
            }
            // A hooks-tier stretch between polls (`observe_between`, an even `seq`): no start
            // of its own, it began after the look before the one that first saw it. It is a
            // stall only by tokio's busy time, read for this runtime and this thread: without
            // it, nothing tells a `block_on` future that yields from one that holds the worker.
            let between = seq & 1 == 0;
            let start = if between {
                self.tracks[i].lower_ns
            } else {
                start
            };
            let busy = if between
                && self
                    .busy_times_of(w.runtime.load(Relaxed))
                    .and_then(|b| b.index_of(w.index, w.tid.load(Relaxed)))
                    .is_none()
            {
                None
            } else if task == 0 && running >= self.threshold_ns {
                match self.busy_stall(w, now) {
                    None if self.tracks[i].stall.is_none() => {
                        self.held_by_a_still_thread(i, w, now)
                    }
                    busy => busy,
                }
            } else {
                Some(None)
            };
            let track = &mut self.tracks[i];
            if track.stall.is_none() && running >= self.threshold_ns / 2 {
                let tid = w.tid.load(Relaxed);
                match track.cpu_base {
                    None => {
                        // A thread on CPU is signalled for its stack only once it stayed
                        // awake for a while: start counting now, so that a stall on CPU can
                        // be sampled as soon as it is declared.
                        self.sampler.watch(tid);
                        let st = asyncprof_sampler::thread_state(tid);
                        let last = track.last_mark.filter(|(t, _)| *t == tid);
                        track.sleep_base = st
                            .as_ref()
                            .map(|st| SleepMark::read(st, last.as_ref().map(|(_, m)| m)));
                        if let Some(base) = track.sleep_base {
                            track.last_mark = Some((tid, base));
                        }
                        track.cpu_base = st.map(|st| (now, st.cpu_ns)).or(Some((now, u64::MAX)));
                    }
                    // A poll first seen after a gap in the watchdog's looks began at an
                    // unknown time in the gap: the coarse clock that timed its start stood
                    // still with the watchdog, so it looks as old as the gap. It is a stall only
                    // once the watchdog itself has watched it for half the threshold.
                    Some((since, cpu0))
                        if running >= self.threshold_ns
                            && busy.is_some()
                            && (!track.uncertain_start
                                || now.saturating_sub(since) >= self.threshold_ns / 2) =>
                    {
                        let preempted = cpu0 != u64::MAX
                            && !track.sleep_base.is_some_and(|m| m.asleep)
                            && asyncprof_sampler::thread_state(tid).is_some_and(|st| {
                                let on_cpu = st.cpu_ns.saturating_sub(cpu0);
                                st.state == 'R' && on_cpu * 4 < now.saturating_sub(since)
                            });
                        if !preempted {
                            let mark = (cpu0 != u64::MAX).then_some((since, cpu0));
                            let start = busy
                                .flatten()
                                .map_or(start, |b| b.max(start))
                                .max(self.tracks[i].poll_floor_ns);
                            let mut active = self.begin(w, task, start, now);
                            active.cpu_mark = mark;
                            // Only a mark taken in this stall: one from before it began (a
                            // busy period whose busy time moved for a while) would count
                            // what the thread did before as this stall's.
                            let base = self.tracks[i].sleep_base;
                            active.sleep_mark = base.filter(|m| m.at_ns >= start);
                            active.earlier_mark = base.filter(|m| m.at_ns < start);
                            // Its exact CPU clock, read now: asleep all along since it last
                            // ran, the stretch asleep counts from then; and it fell asleep
                            // after the read before the clock stood still.
                            if task == 0 {
                                self.read_still(i, tid, now, true);
                                active.ran_after_ns = self.tracks[i]
                                    .still
                                    .filter(|s| s.tid == tid)
                                    .map_or(0, |s| s.ran_after_ns);
                                // Unless the read taken in the stall before shows it asleep
                                // through most of the time from that read to the clock's
                                // standing still as well, but for a moment awake (a pipe
                                // write that copies a chunk each time the reader drains one):
                                // its time asleep then counts from that read (its start
                                // stays after the moment awake).
                                if let Some(mark) = self.asleep_all_along(i, tid, now) {
                                    let proved = mark.slept_before_ns.unwrap_or_default();
                                    let since = mark.at_ns.saturating_sub(proved);
                                    let before_proof = active
                                        .sleep_mark
                                        .filter(|b| b.wait_ns.is_some() && mark.wait_ns.is_some())
                                        .filter(|b| b.at_ns < since)
                                        .and_then(|b| Some((b, b.slept_until(&mark)?)))
                                        .map(|(b, ns)| {
                                            (ns.saturating_sub(proved), since - b.at_ns)
                                        });
                                    if before_proof.is_none_or(|(slept, of)| slept * 2 <= of) {
                                        active.sleep_mark = Some(mark);
                                        active.asleep_since_ns =
                                            self.tracks[i].still.map(|s| s.since_ns);
                                    }
                                }
                            }
                            active.cpu_start = mark;
                            if task != 0 {
                                active.first_mark = active.sleep_mark;
                                let t = &self.tracks[i];
                                active.lead_from_ns =
                                    (!t.uncertain_start).then_some(start.max(t.lower_ns));
                            }
                            self.tracks[i].stall = Some(active);
                        }
                    }
                    Some(_) => {}
                }
            }
            let track = &mut self.tracks[i];
            if let Some(mut active) = track.stall.take() {
                active.raw.last_seen_ns = now;
                if now >= active.next_sample_ns {
                    self.sampling(|dog| dog.sample(&mut active, now, w, seq));
                }
                // After the sample: a read it took schedules the next one.
                if active.raw.task_id != 0 && now >= active.next_split_ns {
                    self.read_split(&mut active, now, w, seq);
                }
                if let Some(floor) = active.poll_changed {
                    // Several polls in this busy period: the record ends here (kept only if
                    // one poll of it was confirmed), and the poll running now is timed from
                    // the sample that saw it change, as a poll of its own.
                    let last = active.sleep_mark.map(|m| (active.raw.tid, m));
                    self.finish(active, now);
                    let track = &mut self.tracks[i];
                    track.last_mark = last.or(track.last_mark);
                    track.poll_floor_ns = floor;
                    track.lower_ns = track.lower_ns.max(floor);
                    track.cpu_base = None;
                    track.sleep_base = None;
                    continue;
                }
                if now.saturating_sub(active.last_push_ns) >= REFRESH_NS {
                    self.push(&mut active, now);
                }
                self.tracks[i].stall = Some(active);
            }
        }
        self.prev_look_ns = now;
    }

    /// Whether worker slot `i`'s thread, in a poll past half the threshold, has handed its
    /// worker to another thread: tokio's `block_in_place` (nested or not) does that, and the
    /// poll then blocks its own thread only. Asked at most every [`CORE_CHECK_NS`]; when the
    /// thread takes a worker back, the rest of its poll is timed from then.
    fn handed_off(&mut self, i: usize, w: &Worker, now: u64) -> bool {
        let track = &mut self.tracks[i];
        if now < track.next_core_check_ns {
            return track.handed_off;
        }
        track.next_core_check_ns = now.saturating_add(CORE_CHECK_NS);
        let off = self.rec.holds_core(w) == Some(false);
        if track.handed_off && !off {
            track.lower_ns = now;
            track.uncertain_start = false;
            track.cpu_base = None;
            track.sleep_base = None;
        }
        track.handed_off = off;
        off
    }

    fn begin(&mut self, w: &Worker, task: u64, start: u64, now: u64) -> Active {
        let id = self.next_id;
        self.next_id += 1;
        if now.saturating_sub(self.minute_start_ns) >= 60_000_000_000 {
            self.minute_start_ns = now;
            self.sampled_this_minute = 0;
        }
        let sampled = self.sampled_this_minute < MAX_SAMPLED_STALLS_PER_MINUTE;
        if sampled {
            self.sampled_this_minute += 1;
        } else {
            self.rec.loss.skipped_samples.fetch_add(1, Relaxed);
        }
        let task_location = self.rec.tasks.find(task).and_then(|s| {
            self.rec
                .locations
                .get(s.location.load(Relaxed))
                .info
                .get()
                .map(|k| k.source())
        });
        Active {
            raw: RawStall {
                id,
                worker: w.index,
                runtime: w.runtime.load(Relaxed),
                thread_name: lock(&w.name).clone(),
                tid: w.tid.load(Relaxed),
                task_id: task,
                task_location,
                threshold_ns: self.threshold_ns,
                start_ns: start,
                last_seen_ns: now,
                detected_ns: now,
                ongoing: true,
                stacks_sought: self.sampler.signal() != 0,
                ..RawStall::default()
            },
            next_sample_ns: now,
            // A busy period's samples come closer at first: the sooner two of them show
            // two polls, the sooner a busy worker is known not to be stuck.
            backoff_ns: if task == 0 {
                self.tick_ns.clamp(1, FIRST_BACKOFF_NS)
            } else {
                FIRST_BACKOFF_NS
            },
            samples: 0,
            last_push_ns: 0,
            stacks: sampled,
            stack_retry: false,
            stack_retries: 0,
            cpu_mark: None,
            sleep_mark: None,
            earlier_mark: None,
            ran_after_ns: 0,
            asleep_since_ns: None,
            run: Stretch::default(),
            in_run: false,
            run_is_recorded: false,
            cpu_start: None,
            first_mark: None,
            lead_from_ns: None,
            next_split_ns: 0,
            poll_task: 0,
            poll_first_cpu_ns: None,
            poll_last_ns: 0,
            poll_samples: 0,
            poll_changed: None,
            held: None,
        }
    }

    /// A busy-period stall's signal sample at `now` found the thread polling `task` (0: none,
    /// between polls), having used `cpu_ns` of CPU so far: follow which polls the stall's
    /// samples show ([`PollEvidence`]). One task's samples are far apart in the thread's CPU
    /// time, not in wall time: a thread that waited for a CPU between two samples was still
    /// in the poll it was in, whether or not that poll is long. An unknown CPU time (the
    /// thread's `/proc` entry unreadable) confirms nothing.
    fn follow_polls(&self, a: &mut Active, now: u64, task: u64, cpu_ns: Option<u64>) {
        if a.poll_task != 0 && task == a.poll_task {
            a.poll_last_ns = now;
            a.poll_samples += 1;
            let cpu_span = cpu_ns
                .zip(a.poll_first_cpu_ns)
                .map(|(c, f)| c.saturating_sub(f));
            if a.raw.polls == PollEvidence::Unconfirmed
                && a.poll_samples >= CONFIRM_SAMPLES
                && cpu_span.is_some_and(|ns| ns >= self.threshold_ns / 2)
            {
                a.raw.polls = PollEvidence::Confirmed;
            }
        } else if a.poll_task == 0 {
            // No task seen yet: between polls (or in a poll that is no task's) says nothing
            // until a task shows.
            if task != 0 {
                a.poll_task = task;
                a.poll_first_cpu_ns = cpu_ns;
                a.poll_last_ns = now;
                a.poll_samples = 1;
                if a.raw.polls == PollEvidence::Unknown {
                    a.raw.polls = PollEvidence::Unconfirmed;
                }
            }
        } else {
            // Another task, or none (the scheduler between polls): the poll seen last ended
            // after its last sample; the one running now began after it (or after this
            // sample, when none runs).
            if a.raw.polls != PollEvidence::Confirmed {
                a.raw.polls = PollEvidence::Several;
            }
            a.poll_changed = Some(if task == 0 { now } else { a.poll_last_ns });
        }
    }

    /// A busy-period stall's late signal sample (taken at `now`) found the thread polling
    /// `task`: it was in that poll from the look that sent the signal on, through the looks
    /// that found it unanswered (`held`). That proves one poll as [`CONFIRM_SAMPLES`] samples
    /// do, when the thread computed for half a threshold meanwhile (a thread waiting for a CPU
    /// holds its poll too, but the machine, not the poll, made that wait).
    fn follow_held(&self, a: &mut Active, now: u64, task: u64, held: Held) {
        // `follow_polls` compares CPU times its other samples read from `schedstat`, which
        // lags the exact clock by up to a tick: an exact time is given it only where that
        // can understate a span, not overstate one.
        let (at, cpu) = match (task, a.poll_task) {
            // Between polls when the handler ran, some time after the latest look.
            (0, _) => (now, None),
            // The task's first sample: seen from the send on.
            (_, 0) => (held.seen_ns, Some(held.cpu_sent_ns)),
            _ => (held.seen_ns, None),
        };
        self.follow_polls(a, at, task, cpu);
        if task != 0
            && a.poll_task == task
            && a.raw.polls == PollEvidence::Unconfirmed
            && held.cpu_seen_ns.saturating_sub(held.cpu_sent_ns) >= self.threshold_ns / 2
        {
            a.raw.polls = PollEvidence::Confirmed;
        }
    }

    /// A busy-period stall's signal not answered in time, at a look (before its sample, which
    /// may take the answer, and after a sample that sent one): a signal still unanswered
    /// proves the thread stayed where it was since it was sent ([`Held`]).
    fn follow_pending(&self, active: &mut Active, now: u64) {
        let tid = active.raw.tid;
        if !self.sampler.is_pending(tid) {
            active.held = None;
            return;
        }
        // The exact clock, read before the signal is found unanswered.
        let cpu = asyncprof_sampler::thread_cpu_ns(tid);
        let pending = self.sampler.pending(tid);
        let ours = |h: &Held| pending.is_some_and(|(sent, _)| sent == h.sent);
        active.held = match (pending, cpu) {
            (Some((sent, Pending::Unanswered)), Some(cpu)) => Some(match active.held {
                Some(h) if ours(&h) => Held {
                    cpu_seen_ns: cpu,
                    seen_ns: now,
                    ..h
                },
                // Sent at this look (the clock read after the send) or before it, when no
                // look has followed it yet: from now on.
                _ => Held {
                    sent,
                    cpu_sent_ns: cpu,
                    cpu_seen_ns: cpu,
                    seen_ns: now,
                },
            }),
            // Its proof is in what the looks before saw.
            (Some((_, Pending::Answered)), _) => active.held.filter(ours),
            // Blocked by the thread, lost, or the thread gone: no proof of anything.
            _ => None,
        };
    }

    /// Take one sample of a stalled worker: its kernel state, then its stack.
    /// `seq` is the stalled poll's state: a stack taken after the poll ended (the worker
    /// moved on while the signal was on its way) is not kept.
    fn sample(&mut self, active: &mut Active, now: u64, w: &Worker, seq: u64) {
        let tid = active.raw.tid;
        // Set again below when this look reads the thread's state.
        active.in_run = false;
        let retry = std::mem::take(&mut active.stack_retry);
        let state = (!retry)
            .then(|| asyncprof_sampler::thread_state(tid))
            .flatten();
        // Acquire: pairs with the worker's release store when the poll ends. A state read
        // after the poll ended describes the worker's next doings, not the stall.
        // An even `seq` is a hooks-tier stretch between polls (`observe_between`).
        let same_poll = || {
            if seq & 1 == 1 {
                w.state.load(Acquire) == seq
            } else {
                observe_between(w).is_some_and(|(s, _, _)| s == seq)
            }
        };
        if let Some(state) = state.filter(|_| same_poll()) {
            // A runnable thread that got less than half the CPU since the last look was
            // mostly waiting for a core (another thread ran): not evidence of computing.
            let preempted = active.cpu_mark.is_some_and(|(since, cpu0)| {
                state.cpu_ns.saturating_sub(cpu0) * 2 < now.saturating_sub(since)
            });
            // Asleep, maybe on a lock: was the machine short of cores meanwhile (the lock's
            // holder waiting for one)?
            let crowded = (state.state != 'R')
                .then(asyncprof_sampler::machine_crowded)
                .flatten();
            // The stretch asleep (busy-period stalls): see `follow_stretch`.
            let before = active.sleep_mark.as_ref();
            let mark = SleepMark::read(&state, before.or(active.earlier_mark.as_ref()));
            if active.raw.task_id == 0 {
                self.follow_stretch(active, &mark, crowded);
            }
            active.sleep_mark = Some(mark);
            if active.raw.task_id != 0 {
                self.note_split(active, mark, now);
            }
            active.cpu_mark = Some((now, state.cpu_ns));
            if state.state == 'R' {
                if !preempted {
                    active.raw.on_cpu += 1;
                }
            } else {
                active.raw.asleep += 1;
                if let Some(nr) = state.syscall {
                    *active.raw.syscalls.entry(nr).or_default() += 1;
                }
                if let Some(crowded) = crowded {
                    active.raw.crowd_known += 1;
                    active.raw.crowded += u32::from(crowded);
                }
            }
        }
        let ready = self.rec.tasks.ready_count();
        active.raw.max_ready = active.raw.max_ready.max(ready);
        if active.raw.task_id == 0 {
            self.follow_pending(active, now);
        }
        if active.stacks && active.samples < MAX_SAMPLES {
            let stack = w.stack_lo.load(Relaxed)..w.stack_hi.load(Relaxed);
            // Checked the moment the stack is copied, not after it is unwound: an unwind can
            // take milliseconds (the first of a run reads the binary's unwind tables), and a
            // short stall's poll ended meanwhile lost a stack taken in it.
            // A signal's stack by the poll its thread was in as the handler took it (the
            // thread's own record of its state: this thread may see the answer milliseconds
            // later when it waited for a CPU, the poll ended since); a copy from outside by
            // the worker's state while the thread is proven asleep in it (see the sampler).
            let current = |at_handler: Option<u64>| match at_handler {
                Some(state) if seq & 1 == 1 => state == seq,
                _ => same_poll(),
            };
            // The clock reads the exact time meanwhile (see `Watchdog::sampling`).
            let result = self
                .sampler
                .sample_in_while(tid, Some(stack), SAMPLE_TIMEOUT, &current);
            // A signal sent by this sample (one this look followed already is left alone; a
            // new one the sample sent after giving up a dead one is not that one).
            if active.raw.task_id == 0
                && matches!(result, Err(SampleError::Pending))
                && active.held.is_none_or(|h| {
                    h.seen_ns != now
                        || self
                            .sampler
                            .pending_sent(tid)
                            .is_some_and(|sent| sent != h.sent)
                })
            {
                self.follow_pending(active, now);
            }
            match result {
                // A late stack is of the moment the thread came back from the system call it
                // was in when this stall sent the signal, before its poll could end: the
                // stall's, though the poll may have ended since.
                Ok(sample) if sample.late => {
                    let held = active.held.take();
                    self.take_late_stack(active, sample, held, now);
                    if active.poll_changed.is_some() {
                        // Another poll's stack, not this stall's: the stall ends.
                        return;
                    }
                }
                Ok(sample) => {
                    active.samples += 1;
                    if active.raw.task_id == 0 && sample.capture == Capture::Signal {
                        // The thread's CPU time at this look (read above), or just after the
                        // sample on a look that only retried the stack, while the poll still
                        // runs (the stack was unwound since it was copied: a CPU time read
                        // after the poll ended would overstate its span; unknown confirms
                        // nothing).
                        let cpu_ns = match active.cpu_mark {
                            Some((at, cpu)) if at == now => Some(cpu),
                            _ if same_poll() => {
                                asyncprof_sampler::thread_state(tid).map(|s| s.cpu_ns)
                            }
                            _ => None,
                        };
                        self.follow_polls(active, now, sample.task, cpu_ns);
                        if active.poll_changed.is_some() {
                            // Another poll's stack, not this stall's: the stall ends.
                            return;
                        }
                    }
                    // Copied while the thread slept in the stretch: the blocked poll's stack (a
                    // signal's means it woke since the state was read).
                    if active.in_run && matches!(sample.capture, Capture::Frozen { .. }) {
                        *active.run.stacks.entry(sample.ips.clone()).or_default() += 1;
                        self.keep_longest_stretch(active);
                    }
                    Self::keep_stack(active, sample);
                }
                Err(SampleError::Busy) => {
                    self.rec.loss.sampler_busy.fetch_add(1, Relaxed);
                }
                // Signals are off and the thread is on CPU: no sample, by the user's choice.
                Err(SampleError::NoSignal) => {
                    self.rec.loss.skipped_samples.fetch_add(1, Relaxed);
                }
                // On CPU, but not yet long enough to be signalled safely: try again at the
                // next tick, not after the back-off (a short stall on CPU may end first).
                Err(SampleError::NotYet) if active.stack_retries < MAX_STACK_RETRIES => {
                    active.stack_retries += 1;
                    active.next_sample_ns = now.saturating_add(self.tick_ns);
                    active.stack_retry = true;
                    return;
                }
                Err(SampleError::NotYet) => active.stack_retries = 0,
                // The thread computes inside a system call: its handler runs as the call
                // returns, and a later look or the stall's end takes that stack (a busy
                // period's, with what the looks meanwhile saw: `Held`).
                Err(SampleError::Pending) => {}
                Err(_) => {
                    self.rec.loss.missed_samples.fetch_add(1, Relaxed);
                }
            }
        }
        let max_backoff = self.max_backoff(active);
        // A cap that applies from this look on (a stretch asleep begun) spaces the next look
        // already.
        active.backoff_ns = active.backoff_ns.min(max_backoff);
        let gap = if active.raw.task_id == 0 {
            // Between half and one and a half times the back-off.
            self.jitter ^= self.jitter << 13;
            self.jitter ^= self.jitter >> 7;
            self.jitter ^= self.jitter << 17;
            active.backoff_ns / 2 + self.jitter % active.backoff_ns.max(1)
        } else {
            active.backoff_ns
        };
        active.next_sample_ns = now.saturating_add(gap);
        active.backoff_ns = (active.backoff_ns * 2).min(max_backoff);
        self.push(active, now);
    }

    /// The longest gap between two looks at a stall.
    fn max_backoff(&self, active: &Active) -> u64 {
        if active.raw.task_id == 0 {
            // Until one task's poll is confirmed, or looks in a row found the thread asleep
            // for a threshold (or the stall ends), a busy period is sampled at least four
            // times a threshold: a blocking call is seen asleep a few milliseconds after it
            // has slept a threshold, not at a look over a hundred milliseconds later. So it
            // is while a stretch asleep goes on, for its first second: the look after the
            // call's end, a few milliseconds later, sees the thread awake, where one much
            // later could find it asleep again in another poll (on a lock, say) and take an
            // interval mostly spent in the call for more of it.
            // (A stretch counts only with a stack copied in it: not once none can be taken.)
            let stacks_left = active.stacks && active.samples < MAX_SAMPLES;
            if active.raw.polls == PollEvidence::Unconfirmed
                || (active.raw.polls != PollEvidence::Confirmed
                    && !active.raw.stretch.blocked()
                    && stacks_left)
                || (active.run_is_recorded && active.run.slept_ns < STRETCH_WATCHED_NS)
            {
                (self.threshold_ns / 4).max(self.tick_ns)
            } else {
                MAX_BACKOFF_NS
            }
        } else {
            MAX_BACKOFF_NS
        }
    }

    /// Busy-period stalls, at a look that read the thread's state (`mark`; whether the machine
    /// was `crowded`, read when the thread was asleep): the stretch asleep goes on, begins or
    /// ends. Looks in a row that found the
    /// thread asleep, each after it slept through more than half the time since the read
    /// before (in the same system call as at the read before when asleep then too), make one
    /// stretch: a blocking call's. A thread that sleeps for moments between
    /// computings (short polls waiting in turn on a lock) makes none as long. (A runnable
    /// thread's current wait for a CPU is not in its schedstat yet: only one asleep now is
    /// measured.)
    fn follow_stretch(&self, active: &mut Active, mark: &SleepMark, crowded: Option<bool>) {
        let before = active.sleep_mark;
        // Only at the look right after the declaration is `before` the read that proved it.
        let proved_since = active.asleep_since_ns.take();
        match before.and_then(|b| b.slept_until(mark)) {
            Some(ns) => {
                if active.run.looks == 0 {
                    // Its time slept counts from this interval only: asleep at the read
                    // before too, the thread may have woken and run in between.
                    let start = active.raw.start_ns;
                    active.run.from_ns = before
                        .map_or(start, |b| b.fell_asleep(mark, start))
                        .max(active.ran_after_ns);
                    // Asleep all along before the read that begins it (the declaration's):
                    // that time counts. (No earlier than the stall: one declared again while
                    // the thread still sleeps has the time before in the record before.)
                    if let (Some(t), Some(b)) = (proved_since, before) {
                        let from = t.max(active.raw.start_ns);
                        active.run.slept_ns = b.at_ns.saturating_sub(from);
                    }
                }
                let run = &mut active.run;
                run.slept_ns = run.slept_ns.saturating_add(ns);
                run.looks += 1;
                if let Some(nr) = mark.syscall {
                    *run.syscalls.entry(nr).or_default() += 1;
                }
                if let Some(crowded) = crowded {
                    run.crowd_known += 1;
                    run.crowded += u32::from(crowded);
                }
                if run.detected_ns.is_none() && run.slept_ns >= self.threshold_ns {
                    run.detected_ns = Some(mark.at_ns);
                }
                active.in_run = true;
                self.keep_longest_stretch(active);
            }
            None => {
                if std::mem::take(&mut active.run_is_recorded) {
                    // The recorded stretch ends: the thread woke about when it had slept
                    // what it slept since the read before.
                    let woke = before.map_or(mark.at_ns, |b| mark.woke_after(&b));
                    active.raw.stretch.to_ns = Some(woke.min(mark.at_ns));
                }
                active.run = Stretch::default();
            }
        }
    }

    /// The stall's record is handed over for the last time at `now` while its recorded
    /// stretch goes on: the thread woke about when it had slept what it slept since the last
    /// read (a stall that ended has run other polls since). At the recording's end
    /// (`stopping`), a poll still asleep in it leaves it open: the call has not returned.
    fn close_stretch(active: &mut Active, now: u64, stopping: bool) {
        if !active.run_is_recorded {
            return;
        }
        if let (Some(before), Some(st)) = (
            active.sleep_mark,
            asyncprof_sampler::thread_state(active.raw.tid),
        ) {
            let end = SleepMark::read(&st, Some(&before));
            if stopping && before.slept_until(&end).is_some() {
                return;
            }
            active.run_is_recorded = false;
            let woke = end.woke_after(&before);
            active.raw.stretch.to_ns = Some(woke.min(now.max(before.at_ns)));
        }
    }

    /// The stretch going on becomes the stall's when it has a stack and is the longest yet. A
    /// recorded stretch that ended is handed to the aggregator as it was before the new one
    /// takes its place: the aggregator takes the board's latest version every stall period, and
    /// may have taken none since it ended (a blocking call at the end of a `block_on`, then the
    /// caller's own longer sleep, in one busy period: the call's record would be lost, and the
    /// sleep's take its place in the file).
    /// Only a stall recorded as its stretch (see [`RawStall::as_stretch`]) is: otherwise the
    /// record is the whole stall's, whichever stretch it carries. The version handed over is
    /// the newest, so an older one the board holds is dropped.
    fn keep_longest_stretch(&self, active: &mut Active) {
        if !active.run.stacks.is_empty() && active.run.slept_ns >= active.raw.stretch.slept_ns {
            if active.raw.stretch.to_ns.is_some() && active.raw.recorded_as_stretch() {
                let mut board = lock(&self.rec.stalls);
                board.unsent.remove(&active.raw.id);
                if board.unsent.len() + board.replaced.len() >= MAX_UNSENT {
                    self.rec.loss.dropped_records.fetch_add(1, Relaxed);
                } else {
                    board.replaced.push(active.raw.clone());
                }
            }
            active.raw.stretch.clone_from(&active.run);
            active.run_is_recorded = true;
        }
    }

    fn push(&self, active: &mut Active, now: u64) {
        active.last_push_ns = now;
        let mut board = lock(&self.rec.stalls);
        if board.unsent.len() >= MAX_UNSENT && !board.unsent.contains_key(&active.raw.id) {
            self.rec.loss.dropped_records.fetch_add(1, Relaxed);
            return;
        }
        board.unsent.insert(active.raw.id, active.raw.clone());
    }

    /// End worker slot `i`'s stall, if one is on, keeping its last read of the thread.
    fn end_stall(&mut self, i: usize, now: u64) {
        let track = &mut self.tracks[i];
        if let Some(active) = track.stall.take() {
            if let Some(m) = active.sleep_mark {
                track.last_mark = Some((active.raw.tid, m));
            }
            self.finish(active, now);
        }
    }

    /// Run `work`, a stall's sample or the late stack taken at its end, as the watchdog's own
    /// slow work. It can keep this thread for milliseconds (a signal's answer waited for; an
    /// unwind, and the first of a run reads the binary's unwind tables: over 10 ms in a debug
    /// build), and the coarse clock it publishes would stand still meanwhile: polls that
    /// begin then would be timed from the stale clock (a task spawned before a stall and first
    /// polled during its first sample had its delay measured short by that long). So polls
    /// read the exact time while it runs, and its time, by the wall clock, is added to
    /// `sampling_ns`, not counted as the watchdog running late (a watchdog kept off its CPU
    /// during it is not told apart).
    fn sampling<T>(&mut self, work: impl FnOnce(&mut Self) -> T) -> T {
        let published = clock::published_ns().is_some();
        if published {
            clock::set_quiet(true);
        }
        let began = clock::exact_ns();
        let out = work(self);
        self.sampling_ns += clock::exact_ns().saturating_sub(began);
        if published {
            clock::set_quiet(false);
        }
        out
    }

    fn finish(&mut self, mut active: Active, now: u64) {
        active.raw.ongoing = false;
        active.raw.last_seen_ns = now;
        self.take_pending_stack(&mut active, now);
        Self::close_stretch(&mut active, now, false);
        // The poll just ended: the CPU the thread used since half the threshold says whether
        // it computed or waited for a core (an overloaded machine preempting it).
        let end = asyncprof_sampler::thread_state(active.raw.tid);
        if let (Some((since, cpu0)), Some(st)) = (active.cpu_start, &end) {
            let wall = now.saturating_sub(since).max(1);
            active.raw.cpu_share = Some(st.cpu_ns.saturating_sub(cpu0) as f64 / wall as f64);
        }
        // A poll's time split to its end, read a tick after it (else it stands at the latest
        // read in it, at most an eighth of its age old): after a late look the read would
        // count what the thread did since the poll ended (parked, or the next polls).
        if let Some(st) = end.filter(|_| active.raw.task_id != 0) {
            let end = SleepMark::read(&st, None);
            if end.at_ns.saturating_sub(self.prev_look_ns) <= self.gap_ns {
                active.raw.time_split = Self::time_split(&active, &end).or(active.raw.time_split);
            }
        }
        self.push(&mut active, now);
    }

    /// A stall's signal that its thread had not answered when the stall ended (it computed
    /// inside a system call, a large read from the page cache, which a signal does not
    /// interrupt): the handler ran as the call returned, inside the stalled poll, before the
    /// poll could end, and its stack is the stall's ([`Watchdog::take_late_stack`]).
    fn take_pending_stack(&mut self, active: &mut Active, now: u64) {
        let Some(sent) = self.sampler.pending_sent(active.raw.tid) else {
            return;
        };
        let held = active.held.take().filter(|h| h.sent == sent);
        // Its unwinding can take milliseconds: the watchdog's own slow work, during which the
        // clock reads the exact time (see `Watchdog::sampling`).
        self.sampling(|dog| {
            let sample = match dog.sampler.take_pending() {
                Some((_, Ok(sample))) => sample,
                Some(_) => {
                    dog.rec.loss.missed_samples.fetch_add(1, Relaxed);
                    return;
                }
                None => {
                    dog.sampler.cancel_pending();
                    dog.rec.loss.missed_samples.fetch_add(1, Relaxed);
                    return;
                }
            };
            dog.take_late_stack(active, sample, held, now);
        });
    }

    /// A late stack ([`Sample::late`]), taken at `now`: kept when the handler saw the
    /// stall's task; for a busy period, when the looks that found its signal unanswered
    /// (`held`) and the task it saw make it this stall's poll ([`Watchdog::follow_held`]).
    /// The samples budget limits the stacks kept, not what a late sample proves.
    fn take_late_stack(
        &mut self,
        active: &mut Active,
        sample: asyncprof_sampler::Sample,
        held: Option<Held>,
        now: u64,
    ) {
        let ours = match (active.raw.task_id, held) {
            (0, Some(held)) => {
                self.follow_held(active, now, sample.task, held);
                sample.task != 0 && active.poll_changed.is_none()
            }
            // A busy period's polls are told apart by when each sample saw which task: a late
            // stack is of an earlier moment than its look, known only from the looks that
            // found its signal unanswered.
            (0, None) => false,
            (task, _) => sample.task == task,
        };
        if !ours {
            self.rec.loss.missed_samples.fetch_add(1, Relaxed);
        } else if active.samples >= MAX_SAMPLES {
            self.rec.loss.skipped_samples.fetch_add(1, Relaxed);
        } else {
            active.samples += 1;
            Self::keep_stack(active, sample);
        }
    }

    /// A stack sample into the stall's record (a signal's, taken on CPU, also among its
    /// stacks on CPU); the caller counts it against the samples budget.
    fn keep_stack(active: &mut Active, sample: asyncprof_sampler::Sample) {
        if sample.capture == Capture::Signal {
            active.raw.signal_samples += 1;
            active.raw.on_cpu_stacks.insert(sample.ips.clone());
        }
        if sample.capture != Capture::Signal
            || sample.answer_cpu_ns >= asyncprof_format::IN_A_CALL_NS
        {
            let in_call = active.raw.in_a_call.entry(sample.ips.clone()).or_default();
            in_call.samples += 1;
            if sample.capture == Capture::Signal {
                in_call.cpu_ns += sample.answer_cpu_ns;
            }
        }
        *active.raw.stacks.entry(sample.ips).or_default() += 1;
    }

    /// A poll's time split from its start to `end`: measured from the first read of the
    /// thread's times in the stall (half the threshold in), and the time before it counted as
    /// the thread was at that read, asleep or not (a blocking call that began the poll is
    /// asleep there; a computation, on CPU).
    fn time_split(active: &Active, end: &SleepMark) -> Option<TimeSplit> {
        let first = active.first_mark?;
        let mut split = first.split_until(end)?;
        split.lead_ns = active
            .lead_from_ns
            .map_or(0, |from| first.at_ns.saturating_sub(from));
        split.lead_asleep = first.asleep;
        Some(split)
    }

    /// A poll's stall: read its thread's times for its split at this look (`seq`: the poll's
    /// state), when no sample's read came recently enough ([`Watchdog::note_split`]).
    fn read_split(&self, active: &mut Active, now: u64, w: &Worker, seq: u64) {
        // Not read (the thread gone, the poll over): tried again four ticks later.
        active.next_split_ns = now.saturating_add(4 * self.tick_ns);
        let Some(st) = asyncprof_sampler::thread_state(active.raw.tid) else {
            return;
        };
        // Read after the poll ended, it would describe what the worker did next.
        if self.observe_any(w).map(|o| o.0) != Some(seq) {
            return;
        }
        self.note_split(active, SleepMark::read(&st, None), now);
    }

    /// A poll's stall: its split to `mark` (a read of its thread's times at this look, by a
    /// sample or by [`Watchdog::read_split`]), and the next read due an eighth of the stall's
    /// age later (four ticks at least), so that the last read before its end is never far
    /// from it.
    fn note_split(&self, active: &mut Active, mark: SleepMark, now: u64) {
        active.first_mark.get_or_insert(mark);
        active.raw.time_split = Self::time_split(active, &mark);
        let age = now.saturating_sub(active.raw.start_ns);
        active.next_split_ns = now.saturating_add((age / 8).max(4 * self.tick_ns));
    }

    /// Recording stops: hand over every stall still running, marked as ongoing.
    pub(crate) fn shutdown(&mut self) {
        let now = clock::exact_ns();
        let tracks = std::mem::take(&mut self.tracks);
        let workers: Vec<&Worker> = self.rec.workers().collect();
        for (i, mut t) in tracks.into_iter().enumerate() {
            let Some(mut active) = t.stall.take() else {
                continue;
            };
            let same_poll = workers
                .get(i)
                .and_then(|w| self.observe_any(w))
                .is_some_and(|(seq, _, _)| seq == t.seq);
            if same_poll {
                active.raw.last_seen_ns = now;
                Self::close_stretch(&mut active, now, true);
                self.push(&mut active, now);
            } else {
                self.finish(active, now);
            }
        }
    }
}

/// The hooks tier on a current-thread runtime's `block_on` thread, between its tasks' polls
/// and not parked: the thread may be polling the future given to `block_on`, or a
/// `LocalSet`'s tasks, which tokio's task hooks do not time. Watched as the stable tier
/// watches a busy period (task 0, judged by tokio's busy time and the stacks): (an identity
/// that changes at every poll and every park, always even, so never a poll's state; no
/// start; task 0).
fn observe_between(w: &Worker) -> Option<(u64, u64, u64)> {
    if !w.current_thread.load(Relaxed) || !w.active.load(Acquire) {
        return None;
    }
    let s1 = w.state.load(Acquire);
    if s1 & 1 == 1 || w.park_since_ns.load(Acquire) != 0 {
        return None;
    }
    let parks = w.parks.load(Relaxed);
    let s2 = w.state.load(Acquire);
    (s1 == s2 && w.park_since_ns.load(Acquire) == 0).then_some((s1 ^ (parks << 40), 0, 0))
}

/// A consistent view of a worker inside a poll: (state, coarse start, task id).
fn observe(w: &Worker) -> Option<(u64, u64, u64)> {
    if !w.active.load(Acquire) {
        return None;
    }
    // Acquire: pairs with the worker's release store of its state, so the start and task
    // read after it belong to this poll; a second read checks the poll did not change.
    let s1 = w.state.load(Acquire);
    if s1 & 1 == 0 {
        return None;
    }
    let start = w.poll_start_ns.load(Relaxed);
    let task = w.task_id.load(Relaxed);
    let s2 = w.state.load(Acquire);
    (s1 == s2).then_some((s1, start, task))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::{Relaxed, Release};
    use std::sync::mpsc;

    use super::Watchdog;
    use crate::recorder::{Recorder, Settings};
    use crate::workers::Worker;

    const MS: u64 = 1_000_000;
    const TICK: u64 = 250_000;
    /// Where the test's clock starts (any time after the recorder's zero).
    const T0: u64 = 1_000 * MS;

    /// A recorder with a 10 ms threshold, and worker 0 played by a thread that sleeps on a
    /// channel (kernel state `S`, so no look mistakes it for a preempted thread). Dropping the
    /// sender ends that thread.
    fn setup() -> (&'static Recorder, &'static Worker, mpsc::Sender<()>) {
        let mut config = asyncprof_format::Config::default();
        config.stall_threshold_us = 10_000;
        let rec: &'static Recorder = Box::leak(Box::new(Recorder::new(Settings {
            config,
            program: "watchdog-test".into(),
            args: Vec::new(),
        })));
        let (tid_tx, tid_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            tid_tx.send(asyncprof_sampler::current_tid()).unwrap();
            let _ = stop_rx.recv();
        });
        let tid = tid_rx.recv().unwrap();
        // Until it is asleep in recv, the thread is runnable and a look could take it for
        // preempted.
        while asyncprof_sampler::thread_state(tid).is_some_and(|st| st.state == 'R') {
            std::thread::yield_now();
        }
        let w = rec.claim_worker_for_test(0, tid);
        (rec, w, stop_tx)
    }

    /// Worker `w` begins poll number `n` of task 7 at coarse time `start`.
    fn begin_poll(w: &Worker, n: u64, start: u64) {
        w.poll_start_ns.store(start, Relaxed);
        w.task_id.store(7, Relaxed);
        w.state.store(2 * n + 1, Release);
    }

    fn stalls(rec: &Recorder) -> usize {
        crate::hist::lock(&rec.stalls).unsent.len()
    }

    /// Look every tick after `from` until a stall is recorded or `until`; the last look's time.
    fn look_until_a_stall(dog: &mut Watchdog, rec: &Recorder, from: u64, until: u64) -> u64 {
        let mut now = from;
        while stalls(rec) == 0 && now < until {
            now += TICK;
            dog.look(now);
        }
        now
    }

    #[test]
    fn a_poll_past_the_threshold_is_a_stall_within_a_tick() {
        let (rec, w, _stop) = setup();
        let mut dog = Watchdog::new(rec, asyncprof_sampler::StackSampler::without_signal());
        dog.look(T0 - TICK);
        begin_poll(w, 1, T0);
        let now = look_until_a_stall(&mut dog, rec, T0, T0 + 20 * MS);
        assert_eq!(stalls(rec), 1);
        assert!(
            now <= T0 + 10 * MS + TICK,
            "declared at {} µs",
            (now - T0) / 1000
        );
    }

    #[test]
    fn a_poll_seen_before_the_watchdog_went_away_is_a_stall_at_its_return() {
        let (rec, w, _stop) = setup();
        let mut dog = Watchdog::new(rec, asyncprof_sampler::StackSampler::without_signal());
        dog.look(T0 - TICK);
        begin_poll(w, 1, T0);
        dog.look(T0);
        dog.look(T0 + 3 * MS);
        // Away for 20 ms: the poll's start was timed while the clock ran, so it is 23 ms old.
        dog.look(T0 + 23 * MS);
        dog.look(T0 + 23 * MS + TICK);
        assert_eq!(
            stalls(rec),
            1,
            "declared the tick after the watchdog came back"
        );
    }

    #[test]
    fn a_poll_begun_while_the_watchdog_was_away_needs_half_a_threshold_of_watching() {
        let (rec, w, _stop) = setup();
        let mut dog = Watchdog::new(rec, asyncprof_sampler::StackSampler::without_signal());
        dog.look(T0);
        // The watchdog is away for 30 ms. The coarse clock it publishes stood still, so a poll
        // that began during the gap carries the time of the last look, and looks 30 ms old.
        begin_poll(w, 1, T0);
        dog.look(T0 + 30 * MS);
        dog.look(T0 + 30 * MS + TICK);
        dog.look(T0 + 32 * MS);
        assert_eq!(stalls(rec), 0, "a poll seen for 2 ms is not a stall");
        // It ends: it never was a stall.
        w.state.store(4, Release);
        dog.look(T0 + 33 * MS);
        assert_eq!(stalls(rec), 0);
        // The same gap, and a poll that goes on: a stall once watched for half the threshold.
        begin_poll(w, 2, T0 + 33 * MS);
        dog.look(T0 + 70 * MS);
        let now = look_until_a_stall(&mut dog, rec, T0 + 70 * MS, T0 + 90 * MS);
        assert_eq!(stalls(rec), 1);
        let seen = now - (T0 + 70 * MS);
        assert!(
            (5 * MS..=5 * MS + TICK).contains(&seen),
            "declared after {} µs of watching",
            seen / 1000
        );
    }

    /// Wait up to 5 s for `done`.
    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "waited 5 s for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn a_blocking_thread_taken_for_a_worker_as_it_started_is_none_once_every_worker_parked() {
        let rec: &'static Recorder = Box::leak(Box::new(Recorder::new(Settings {
            config: asyncprof_format::Config::default(),
            program: "watchdog-test".into(),
            args: Vec::new(),
        })));
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2).enable_all();
        crate::hooks::install(rec, &mut b, crate::Hooks::new(), false);
        let rt = b.build().unwrap();
        let parked = |w: &Worker| w.active.load(Relaxed) && w.park_since_ns.load(Relaxed) != 0;
        wait_for("both workers parked", || {
            rec.workers().filter(|w| parked(w)).count() == 2
        });
        // What tokio's blocking pool leaves open for a moment: a blocking thread that
        // counted among the runtime's first threads to start, taken for a worker (the count
        // starts over here, so the next thread to start is counted first).
        *crate::hist::lock(&rec.thread_starts) = Default::default();
        let (tid_tx, tid_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let blocking = rt.spawn_blocking(move || {
            tid_tx.send(asyncprof_sampler::current_tid()).unwrap();
            let _ = done_rx.recv();
        });
        let tid = tid_rx.recv().unwrap();
        let entry = rec
            .workers()
            .find(|w| w.active.load(Relaxed) && w.tid.load(Relaxed) == tid)
            .expect("the blocking thread registered");
        assert!(entry.presumed.load(Relaxed) && crate::poll::in_poll(entry));
        wait_for("both workers parked again", || {
            rec.workers().filter(|w| parked(w)).count() == 2
        });
        let now = crate::clock::publish();
        assert!(!rec.all_parked_since(now), "taken for a busy worker");
        let mut dog = Watchdog::new(rec, asyncprof_sampler::StackSampler::without_signal());
        dog.look(now);
        // Both workers parked once: each has a thread that proved it runs it, so the
        // blocking thread runs none. Its busy period is no stall, it does not keep the
        // watchdog awake while the workers are parked, and reports leave it out.
        assert!(entry.runs_no_worker());
        assert!(dog.observe_any(entry).is_none());
        wait_for("the watchdog free to sleep", || {
            rec.all_parked_since(crate::clock::publish())
        });
        let snap = rec.snapshot(0, false);
        assert!(
            snap.workers.iter().all(|ws| ws.tid != tid),
            "{:?}",
            snap.workers
        );
        assert_eq!(snap.workers.len(), 2);
        // A worker's own thread is never ruled out.
        for w in rec.workers().filter(|w| w.tid.load(Relaxed) != tid) {
            assert!(!w.runs_no_worker());
        }
        drop(done_tx);
        rt.block_on(blocking).unwrap();
    }
}
