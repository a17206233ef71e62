//! The kind of one stall, read from its record alone: what `asyncprof report` names a finding
//! of stalls, and what the metrics endpoint and the stall events label a stall with, so that
//! all three say the same.
//!
//! Checked in this order: runtime-blocked, lock-contention, cpu-bound-poll, blocking-call.
//! A stall whose thread was runnable but preempted most of the time ([`preempted`]) is the
//! machine's doing, not the poll's: the report counts it apart and makes no finding of it.

use crate::{StallClass, StallRecord};

/// What held a worker past the stall threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum StallKind {
    /// A poll that never returned: the stall was still running when the run ended, and had
    /// held its worker for at least [`NEVER_RETURNED_NS`]. (A shorter one was only cut by the
    /// end of the recording, a busy service stopped in the middle of a poll: it is the kind
    /// its record reads as otherwise.)
    RuntimeBlocked,
    /// Asleep in `futex` inside a `std::sync` lock.
    LockContention,
    /// On CPU in most samples, or never found asleep and still on CPU for at least
    /// [`PREEMPTED_CPU_SHARE`] of the stall.
    CpuBoundPoll,
    /// Asleep in a system call, or stopped in a call the stack names.
    BlockingCall,
}

/// How long a poll still running at the end of a run must have held its worker to count as
/// never returning (1 s): less, and the recording's end (a service stopped while it served a
/// request) cut an ordinary stall short.
pub const NEVER_RETURNED_NS: u64 = 1_000_000_000;

/// Below this share of its wall time on CPU, a stall that did not sleep was preempted.
pub const PREEMPTED_CPU_SHARE: f64 = 0.35;

/// Whether `s`'s thread was neither asleep nor computing most of the time: runnable but
/// preempted (the machine had more runnable threads than cores).
pub fn preempted(s: &StallRecord) -> bool {
    !s.ongoing
        && s.class != StallClass::Blocking
        && s.cpu_share.is_some_and(|c| c < PREEMPTED_CPU_SHARE)
}

impl StallKind {
    /// Every kind, in the order they are checked.
    pub const ALL: [StallKind; 4] = [
        StallKind::RuntimeBlocked,
        StallKind::LockContention,
        StallKind::CpuBoundPoll,
        StallKind::BlockingCall,
    ];

    /// The kind of `s` (for a [`preempted`] stall too: the kind its record reads as).
    pub fn of(s: &StallRecord) -> StallKind {
        if s.ongoing && s.duration_ns >= NEVER_RETURNED_NS {
            StallKind::RuntimeBlocked
        } else if is_lock_wait(s) {
            StallKind::LockContention
        } else if s.class == StallClass::CpuBound
            || (s.class == StallClass::Unknown
                && s.cpu_share.is_some_and(|c| c >= PREEMPTED_CPU_SHARE))
        {
            StallKind::CpuBoundPoll
        } else if s.class == StallClass::Blocking || s.primitive.is_some() {
            StallKind::BlockingCall
        } else {
            StallKind::CpuBoundPoll
        }
    }

    /// What metrics and stall events call `s`: its kind's name, or `preempted` for a
    /// [`preempted`] stall (the machine's doing, which the report counts apart).
    pub fn label(s: &StallRecord) -> &'static str {
        if preempted(s) {
            "preempted"
        } else {
            StallKind::of(s).name()
        }
    }

    /// Its name in findings, metrics and events (`runtime-blocked`, `lock-contention`,
    /// `cpu-bound-poll`, `blocking-call`).
    pub const fn name(self) -> &'static str {
        match self {
            StallKind::RuntimeBlocked => "runtime-blocked",
            StallKind::LockContention => "lock-contention",
            StallKind::CpuBoundPoll => "cpu-bound-poll",
            StallKind::BlockingCall => "blocking-call",
        }
    }
}

/// Asleep in `futex` inside `std::sync::Mutex`, `RwLock` or `Condvar` (by name, or by std's
/// source file when the debug info gives bare names).
fn is_lock_wait(s: &StallRecord) -> bool {
    let primitive = s.primitive.as_ref().map_or("", |p| p.function.as_str());
    let file = s
        .primitive
        .as_ref()
        .and_then(|p| p.file.as_deref())
        .unwrap_or("");
    let lockish = ["Mutex", "RwLock", "Condvar"]
        .iter()
        .any(|l| primitive.contains(l))
        || (file.contains("/sync/")
            && ["mutex", "rwlock", "condvar"]
                .iter()
                .any(|l| file.contains(l)));
    s.class == StallClass::Blocking && s.syscall.as_deref() == Some("futex") && lockish
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known truth: a render on CPU cut by the end of the recording after 150 ms (a service
    /// stopped while it served a request), and a `block_on` asleep for good for 4 s.
    #[test]
    fn a_poll_cut_by_the_end_of_the_run_is_not_one_that_never_returned() {
        let mut cut = StallRecord {
            ongoing: true,
            class: StallClass::CpuBound,
            duration_ns: 150_000_000,
            ..StallRecord::default()
        };
        assert_eq!(StallKind::of(&cut), StallKind::CpuBoundPoll);
        cut.duration_ns = NEVER_RETURNED_NS - 1;
        assert_eq!(StallKind::of(&cut), StallKind::CpuBoundPoll);
        cut.duration_ns = NEVER_RETURNED_NS;
        assert_eq!(StallKind::of(&cut), StallKind::RuntimeBlocked);
        let stuck = StallRecord {
            ongoing: true,
            class: StallClass::Blocking,
            syscall: Some("futex".into()),
            duration_ns: 4_136_000_000,
            ..StallRecord::default()
        };
        assert_eq!(StallKind::of(&stuck), StallKind::RuntimeBlocked);
        assert_eq!(StallKind::label(&stuck), "runtime-blocked");
    }
}
