//! A caller's check at the moment a stack is copied ([`StackSampler::sample_in_while`]): said
//! once per sample, before the stack is unwound; a "no" discards the copy
//! ([`SampleError::Moved`]) and leaves the sampler ready for the next sample, on CPU (the
//! signal's slot freed) and asleep (a copy from outside) alike.

use std::cell::Cell;
use std::sync::atomic::{AtomicI32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asyncprof_sampler::{Capture, SampleError, StackSampler};

mod support;

/// One sampler per process at a time: the tests of this binary take turns.
static ONE_SAMPLER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Sample `tid` with the check `current` until the thread has been on CPU (or asleep) long
/// enough to be sampled: the first answer that is not [`SampleError::NotYet`].
fn sample_until_ready(
    sampler: &mut StackSampler,
    tid: i32,
    current: &dyn Fn(Option<u64>) -> bool,
) -> Result<asyncprof_sampler::Sample, SampleError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match sampler.sample_in_while(tid, None, Duration::from_millis(500), current) {
            Err(SampleError::NotYet) if Instant::now() < deadline => {
                std::thread::sleep(asyncprof_sampler::MIN_ON_CPU / 2);
            }
            other => return other,
        }
    }
}

/// A thread that runs `setup`, then sleeps in a channel's receive until the sender it
/// returns sends (or is dropped): its id, that sender and its handle, once it has slept a
/// moment.
fn sleeping_thread(
    setup: impl FnOnce() + Send + 'static,
) -> (
    i32,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let tid = Arc::new(AtomicI32::new(0));
    let (wake, woken) = std::sync::mpsc::channel::<()>();
    let sleeper = {
        let tid = tid.clone();
        std::thread::spawn(move || {
            setup();
            tid.store(asyncprof_sampler::current_tid(), SeqCst);
            let _ = woken.recv();
        })
    };
    while tid.load(SeqCst) == 0 {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(50));
    (tid.load(SeqCst), wake, sleeper)
}

#[test]
fn a_stack_the_caller_says_moved_on_is_discarded_before_it_is_unwound() {
    let _one = ONE_SAMPLER.lock().unwrap_or_else(|p| p.into_inner());
    let mut sampler = StackSampler::install(asyncprof_sampler::default_signal()).unwrap();
    // On CPU: signalled, answered, then discarded; the slot is free for the next.
    let (spinner, stop, handle) = support::spinning_thread(|| {});
    let asked = Cell::new(0);
    let no = |_: Option<u64>| {
        asked.set(asked.get() + 1);
        false
    };
    assert_eq!(
        sample_until_ready(&mut sampler, spinner, &no),
        Err(SampleError::Moved)
    );
    assert_eq!(asked.get(), 1, "asked once");
    let kept = sample_until_ready(&mut sampler, spinner, &|_| true);
    assert!(
        kept.as_ref()
            .is_ok_and(|s| s.capture == Capture::Signal && !s.late && !s.ips.is_empty()),
        "{kept:?}"
    );
    stop.store(true, SeqCst);
    handle.join().unwrap();

    // Asleep (in a channel's receive until both samples are taken): copied from outside,
    // then discarded; the next copy is kept.
    let (tid, wake, sleeper) = sleeping_thread(|| {});
    asked.set(0);
    assert_eq!(
        sample_until_ready(&mut sampler, tid, &no),
        Err(SampleError::Moved)
    );
    assert_eq!(asked.get(), 1);
    let kept = sample_until_ready(&mut sampler, tid, &|_| true);
    assert!(
        kept.as_ref()
            .is_ok_and(|s| matches!(s.capture, Capture::Frozen { .. })),
        "{kept:?}"
    );
    wake.send(()).unwrap();
    sleeper.join().unwrap();
    drop(sampler);
}

thread_local! {
    /// What the poll probe of this binary says on each thread: set on the thread sampled.
    static SAID: Cell<u64> = const { Cell::new(0) };
}

fn probe() -> u64 {
    SAID.with(Cell::get)
}

/// Known truth: the sampled thread set its own thread-local to 41, the sampler's thread left
/// its at 0. The check of a stack a signal took gets what the poll probe returned in the
/// handler, on the sampled thread (41, not what the sampler's thread would read); the check
/// of a copy from outside gets nothing, and judges by what it sees then.
#[test]
fn a_signals_stack_is_checked_with_what_its_thread_said_as_it_was_taken() {
    asyncprof_sampler::set_poll_probe(probe);
    let _one = ONE_SAMPLER.lock().unwrap_or_else(|p| p.into_inner());
    let mut sampler = StackSampler::install(asyncprof_sampler::default_signal()).unwrap();
    let (spinner, stop, handle) = support::spinning_thread(|| SAID.with(|s| s.set(41)));
    let seen = Cell::new(None);
    let check = |said: Option<u64>| {
        seen.set(Some(said));
        said == Some(41)
    };
    let kept = sample_until_ready(&mut sampler, spinner, &check);
    assert!(
        kept.as_ref()
            .is_ok_and(|s| s.capture == Capture::Signal && !s.ips.is_empty()),
        "{kept:?}"
    );
    assert_eq!(seen.get(), Some(Some(41)));
    // The same thread, a check that wants another state: the copy is discarded.
    let other = |said: Option<u64>| said == Some(42);
    assert_eq!(
        sample_until_ready(&mut sampler, spinner, &other),
        Err(SampleError::Moved)
    );
    stop.store(true, SeqCst);
    handle.join().unwrap();

    let (tid, wake, sleeper) = sleeping_thread(|| SAID.with(|s| s.set(41)));
    seen.set(None);
    let copied = sample_until_ready(&mut sampler, tid, &|said| {
        seen.set(Some(said));
        true
    });
    assert!(
        copied
            .as_ref()
            .is_ok_and(|s| matches!(s.capture, Capture::Frozen { .. })),
        "{copied:?}"
    );
    assert_eq!(
        seen.get(),
        Some(None),
        "a copy from outside has no probe's answer"
    );
    wake.send(()).unwrap();
    sleeper.join().unwrap();
    drop(sampler);
}
