//! Stall events: each stall, as it is recorded, also as a `tracing` event (target `asyncprof`,
//! level WARN) into the service's own subscriber, so that it reaches the service's logs and,
//! through `tracing-opentelemetry`, its OpenTelemetry pipeline. Off unless asked for
//! ([`crate::Builder::stall_events`], `ASYNCPROF_STALL_EVENTS=1`).
//!
//! The aggregator hands finished stalls to the `asyncprof-events` thread through a bounded
//! queue, within a rate limit; the thread emits them to the global subscriber (asyncprof's other
//! threads emit to none). Nothing runs on the service's threads, nothing waits: an event over
//! the limit, or one the queue cannot take, is dropped and counted (`dropped_stall_events`).

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::{Duration, Instant};

use asyncprof_format::{self as format, StallKind};

use crate::recorder::Recorder;

/// The events' target, for a subscriber's filter (`asyncprof=warn`).
pub(crate) const TARGET: &str = "asyncprof";

/// Events emitted at once after a quiet spell.
pub(crate) const BURST: u32 = 60;
/// Events emitted per second in a storm, on average (600 a minute, as stall samples).
pub(crate) const PER_SECOND: u32 = 10;
/// Events waiting for the emitting thread.
const QUEUE: usize = 64;
/// A stall still running is announced once when it has lasted this long (then again when it
/// ends, if it does).
const ANNOUNCE_ONGOING_NS: u64 = 1_000_000_000;
/// Ongoing stalls remembered as announced; more are announced again at their next refresh.
const MAX_ANNOUNCED: usize = 1024;

/// One stall, as the event says it.
/// What stall events and the metrics endpoint say of a stall: its kind (or `preempted`) and
/// the user's line it stopped at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Culprit {
    pub(crate) kind: &'static str,
    pub(crate) file: String,
    pub(crate) line: Option<u32>,
    pub(crate) function: String,
}

impl Culprit {
    pub(crate) fn of(s: &format::StallRecord) -> Self {
        let c = s.culprit.as_ref();
        Culprit {
            kind: StallKind::label(s),
            file: c.and_then(|c| c.file.clone()).unwrap_or_default(),
            line: c.and_then(|c| c.line),
            function: c.map(format::culprit::qualified).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct StallEvent {
    culprit: Culprit,
    primitive: String,
    syscall: String,
    duration_ns: u64,
    ongoing: bool,
    task_location: String,
    thread: String,
}

impl StallEvent {
    fn of(s: &format::StallRecord) -> Self {
        StallEvent {
            culprit: Culprit::of(s),
            primitive: s
                .primitive
                .as_ref()
                .map(|p| format::culprit::primitive_name(&p.function))
                .unwrap_or_default(),
            syscall: s.syscall.clone().unwrap_or_default(),
            duration_ns: s.duration_ns,
            ongoing: s.ongoing,
            task_location: s
                .task_location
                .as_ref()
                .map(|l| format!("{}:{}", l.file, l.line))
                .unwrap_or_default(),
            thread: s.thread_name.clone(),
        }
    }

    fn emit(&self) {
        let Culprit {
            kind,
            file,
            line,
            function,
        } = &self.culprit;
        let line = line.unwrap_or(0);
        let duration = Duration::from_nanos(self.duration_ns);
        let duration_ms = self.duration_ns as f64 / 1e6;
        let at = if file.is_empty() && function.is_empty() {
            "a poll".to_string()
        } else if file.is_empty() {
            // A build without debug info: the function, no line.
            format!("in {function}")
        } else {
            format!("{}:{} in {}", file, line, function)
        };
        tracing::warn!(
            target: TARGET,
            kind = *kind,
            file = %file,
            line = line,
            function = %function,
            primitive = %self.primitive,
            syscall = %self.syscall,
            duration = ?duration,
            duration_ms,
            ongoing = self.ongoing,
            task_location = %self.task_location,
            thread = %self.thread,
            "{} {}: {at} held its worker for {duration_ms:.1} ms{}",
            if self.ongoing { "stall (still running)" } else { "stall" },
            kind,
            if self.primitive.is_empty() {
                String::new()
            } else {
                format!(" in {}", self.primitive)
            },
        );
    }
}

/// A token bucket: [`BURST`] events at once, [`PER_SECOND`] a second after that.
#[derive(Debug)]
pub(crate) struct RateLimit {
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub(crate) fn new(now: Instant) -> Self {
        RateLimit {
            tokens: f64::from(BURST),
            last: now,
        }
    }

    /// Whether one more event may go out at `now`.
    pub(crate) fn allow(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * f64::from(PER_SECOND);
        self.tokens = (self.tokens + refill).min(f64::from(BURST));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The aggregator's side: which stalls to announce, within the limit.
#[derive(Debug)]
pub(crate) struct StallEvents {
    tx: SyncSender<StallEvent>,
    limit: RateLimit,
    announced: HashSet<u64>,
}

impl StallEvents {
    /// The aggregator's side and the receiver for [`emit_loop`].
    pub(crate) fn new() -> (Self, Receiver<StallEvent>) {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let events = StallEvents {
            tx,
            limit: RateLimit::new(Instant::now()),
            announced: HashSet::new(),
        };
        (events, rx)
    }

    /// A stall record was just handed to the writer: announce it if it ended, or if it has
    /// been running for a second and was not announced yet.
    pub(crate) fn offer(&mut self, s: &format::StallRecord, recorder: &Recorder) {
        let announce = if s.ongoing {
            s.duration_ns >= ANNOUNCE_ONGOING_NS
                && self.announced.len() < MAX_ANNOUNCED
                && self.announced.insert(s.id)
        } else {
            self.announced.remove(&s.id);
            true
        };
        if !announce {
            return;
        }
        let sent = self.limit.allow(Instant::now()) && self.tx.try_send(StallEvent::of(s)).is_ok();
        if !sent {
            recorder.loss.dropped_stall_events.fetch_add(1, Relaxed);
        }
    }
}

/// The `asyncprof-events` thread: emits each event to the global subscriber, until the
/// aggregator's side is dropped.
pub(crate) fn emit_loop(rx: Receiver<StallEvent>) {
    for event in rx {
        event.emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(t0);
        let burst = (0..1000).filter(|_| limit.allow(t0)).count();
        assert_eq!(burst, BURST as usize);
        // Two seconds later: two seconds' worth, no more.
        let t2 = t0 + Duration::from_secs(2);
        let later = (0..1000).filter(|_| limit.allow(t2)).count();
        assert_eq!(later, 2 * PER_SECOND as usize);
        // A long quiet spell refills the burst, not more.
        let t9 = t2 + Duration::from_secs(3600);
        assert_eq!(
            (0..1000).filter(|_| limit.allow(t9)).count(),
            BURST as usize
        );
    }
}
