//! A signal of the sampler's number that the service sends itself is the service's: it
//! reaches the service's handler even when it lands on a thread the sampler is sampling right
//! then, and no sample takes it for its own.

use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use asyncprof_sampler::{SampleError, StackSampler};

mod support;

static SERVICE_CALLS: AtomicU64 = AtomicU64::new(0);

extern "C" fn service_handler(_sig: libc::c_int) {
    SERVICE_CALLS.fetch_add(1, SeqCst);
}

#[test]
fn the_services_own_signals_all_reach_its_handler_while_the_thread_is_sampled() {
    let sig = asyncprof_sampler::default_signal();
    // SAFETY: an all-zero sigaction is valid (no handler, empty mask, no flags).
    let mut a: libc::sigaction = unsafe { std::mem::zeroed() };
    a.sa_sigaction = service_handler as *const () as usize;
    a.sa_flags = libc::SA_RESTART;
    // SAFETY: valid pointers; the handler has the plain (non-SA_SIGINFO) signature.
    assert_eq!(unsafe { libc::sigaction(sig, &a, std::ptr::null_mut()) }, 0);
    let mut sampler = StackSampler::install(sig).unwrap();

    // The sampled thread: on CPU all along.
    let (tid, stop, spinner) = support::spinning_thread(|| {});
    let target = spinner.as_pthread_t();

    // The service signals that thread itself (a real-time signal: none is merged with
    // another) while the sampler samples it.
    const SENT: u64 = 3000;
    let sender = std::thread::spawn(move || {
        for _ in 0..SENT {
            // SAFETY: the spinner is alive until `stop`, after this thread is joined.
            assert_eq!(unsafe { libc::pthread_kill(target, sig) }, 0);
            std::thread::sleep(Duration::from_micros(50));
        }
    });
    let mut samples = 0;
    while !sender.is_finished() {
        match sampler.sample(tid, Duration::from_secs(2)) {
            Ok(s) => {
                assert!(!s.ips.is_empty());
                samples += 1;
            }
            Err(SampleError::NotYet | SampleError::Blocked) => {}
            Err(e) => panic!("sample: {e:?}"),
        }
    }
    sender.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while SERVICE_CALLS.load(SeqCst) < SENT && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, SeqCst);
    spinner.join().unwrap();
    drop(sampler);
    assert!(samples > 100, "{samples} samples");
    assert_eq!(
        SERVICE_CALLS.load(SeqCst),
        SENT,
        "every signal the service sent reached its handler ({samples} samples meanwhile)"
    );
}
