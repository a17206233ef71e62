//! A thread that blocks the sampling signal (as a service with a signalfd or a signal thread
//! does) is never sent it: the sample fails at once, and no signal is left queued for the
//! thread to find later.

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use asyncprof_sampler::{SampleError, StackSampler};

mod support;

/// The signals pending for thread `tid` (`SigPnd` in its status).
fn pending(tid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    let v = s.lines().find_map(|l| l.strip_prefix("SigPnd:")).unwrap();
    u64::from_str_radix(v.trim(), 16).unwrap()
}

#[test]
fn a_thread_that_blocks_the_signal_is_not_sent_it() {
    let sig = asyncprof_sampler::default_signal();
    let mut sampler = StackSampler::install(sig).unwrap();
    let (tid, stop, spinner) = support::spinning_thread(move || {
        // SAFETY: a sigset built with the libc calls, then installed as this thread's mask.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            assert_eq!(
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()),
                0
            );
        }
    });
    let mut seen = Vec::new();
    for _ in 0..40 {
        let r = sampler.sample(tid, Duration::from_millis(50));
        seen.push(r.clone().err());
        if r == Err(SampleError::Blocked) {
            break;
        }
        std::thread::sleep(asyncprof_sampler::MIN_ON_CPU / 2);
    }
    assert_eq!(seen.last(), Some(&Some(SampleError::Blocked)), "{seen:?}");
    assert!(!seen.contains(&Some(SampleError::Pending)), "{seen:?}");
    assert_eq!(pending(tid), 0, "no signal is left queued for the thread");
    stop.store(true, SeqCst);
    spinner.join().unwrap();
    drop(sampler);
}
