//! Stacks of threads asleep in a system call are copied from outside and unwound to the
//! thread's start: the user's frames (named functions that must appear) are in them, for a
//! sleep through std (whose frames use frame pointers) and for direct system calls.

use std::sync::atomic::{AtomicI32, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use asyncprof_sampler::{Capture, SampleError, StackSampler};

#[inline(never)]
fn frozen_outer_sleep(d: Duration) {
    frozen_inner_sleep(d);
    std::hint::black_box(());
}

#[inline(never)]
fn frozen_inner_sleep(d: Duration) {
    std::thread::sleep(d);
    std::hint::black_box(());
}

/// Calls its tail-called sleeper, then does more: its frame stays on the stack.
#[inline(never)]
fn frozen_outer_tail(d: Duration) {
    frozen_tail_sleep(d);
    std::hint::black_box(());
}

/// Ends in the sleep: the call compiles to a jump (a tail call), so this function's frame is
/// gone while std's sleep runs, and the slot above std's frame holds a return address into
/// the caller, after a call to this function, not to std's sleep.
#[inline(never)]
fn frozen_tail_sleep(d: Duration) {
    std::thread::sleep(d)
}

#[inline(never)]
fn frozen_outer_poll(ms: i32) {
    // SAFETY: no descriptors: poll only waits for its timeout.
    unsafe { libc::poll(std::ptr::null_mut(), 0, ms) };
    std::hint::black_box(());
}

mod support;

use support::names;

/// Sample a thread running `f` while it sleeps; returns the frame names of a frozen sample.
fn frozen_stack(f: fn()) -> Vec<String> {
    let tid = Arc::new(AtomicI32::new(0));
    let t = {
        let tid = tid.clone();
        std::thread::spawn(move || {
            tid.store(asyncprof_sampler::current_tid(), SeqCst);
            f();
        })
    };
    while tid.load(SeqCst) == 0 {
        std::thread::yield_now();
    }
    let mut sampler = StackSampler::without_signal();
    let mut got = None;
    for _ in 0..2000 {
        match sampler.sample(tid.load(SeqCst), Duration::from_millis(50)) {
            // Copied inside its system call: the sample to look at.
            Ok(s) if matches!(s.capture, Capture::Frozen { syscall: Some(_) }) => {
                got = Some(s.ips);
                break;
            }
            // Not yet in it (the thread had not reached its sleep): again.
            Ok(_) => std::thread::sleep(Duration::from_millis(1)),
            Err(SampleError::NoSignal | SampleError::Inconsistent) => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    t.join().unwrap();
    names(&got.expect("a frozen sample"))
}

#[test]
fn a_sleep_through_std_unwinds_to_the_callers() {
    let names = frozen_stack(|| frozen_outer_sleep(Duration::from_millis(300)));
    let at = |f: &str| names.iter().position(|n| n.contains(f));
    assert!(
        at("clock_nanosleep").is_some() || at("nanosleep").is_some(),
        "{names:#?}"
    );
    assert!(at("frozen_inner_sleep").is_some(), "{names:#?}");
    assert!(
        at("frozen_outer_sleep") > at("frozen_inner_sleep"),
        "{names:#?}"
    );
    // The thread's start: the walk reached the end of the stack.
    assert!(
        names
            .iter()
            .any(|n| n.contains("start_thread") || n.contains("clone")),
        "{names:#?}"
    );
}

/// Known truth: `frozen_tail_sleep` jumps to std's sleep (its frame is not on the stack:
/// checked, or this test would show nothing), so the walk must find std's frame pointer
/// through a call to the function that jumped, and go on to `frozen_outer_tail`. (Before, it
/// took a slot further up, after an indirect call, and the caller's frames were missing.)
#[test]
fn a_sleep_reached_through_a_tail_call_unwinds_to_the_caller() {
    let names = frozen_stack(|| frozen_outer_tail(Duration::from_millis(300)));
    let at = |f: &str| names.iter().position(|n| n.contains(f));
    assert!(at("nanosleep").is_some(), "{names:#?}");
    assert!(
        at("frozen_tail_sleep").is_none(),
        "not a tail call: {names:#?}"
    );
    assert!(
        at("frozen_outer_tail") > at("nanosleep"),
        "the caller, outward of the sleep: {names:#?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.contains("start_thread") || n.contains("clone")),
        "{names:#?}"
    );
}

#[test]
fn a_direct_poll_unwinds_to_the_caller() {
    let names = frozen_stack(|| frozen_outer_poll(300));
    assert!(names.iter().any(|n| n.contains("poll")), "{names:#?}");
    assert!(
        names.iter().any(|n| n.contains("frozen_outer_poll")),
        "{names:#?}"
    );
}

#[inline(never)]
fn frozen_outer_park() {
    std::thread::park_timeout(Duration::from_millis(300));
    std::hint::black_box(());
}

#[test]
fn a_park_unwinds_to_the_caller() {
    let names = frozen_stack(frozen_outer_park);
    assert!(names.iter().any(|n| n.contains("futex")), "{names:#?}");
    assert!(
        names.iter().any(|n| n.contains("frozen_outer_park")),
        "{names:#?}"
    );
}
