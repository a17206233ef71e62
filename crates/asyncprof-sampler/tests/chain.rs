//! A service that uses asyncprof's signal for itself keeps working: its handler, installed
//! before the sampler, still gets every signal the sampler did not send and is back in place
//! when the sampler is dropped; a handler installed after the sampler (replacing it) makes
//! samples fail cleanly, at once and with no signal sent, and stays installed when the
//! sampler is dropped.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use asyncprof_sampler::{SampleError, StackSampler};

mod support;

static SERVICE_CALLS: AtomicU64 = AtomicU64::new(0);

extern "C" fn service_handler(_sig: libc::c_int) {
    SERVICE_CALLS.fetch_add(1, SeqCst);
}

static LATER_CALLS: AtomicU64 = AtomicU64::new(0);

extern "C" fn later_service_handler(_sig: libc::c_int) {
    LATER_CALLS.fetch_add(1, SeqCst);
}

/// Install the service's own handler for `sig`, as a service would.
fn install_service_handler(sig: i32) {
    install_handler(sig, service_handler);
}

/// Install `f` as the handler of `sig`.
fn install_handler(sig: i32, f: extern "C" fn(libc::c_int)) {
    // SAFETY: an all-zero sigaction is valid (no handler, empty mask, no flags).
    let mut a: libc::sigaction = unsafe { std::mem::zeroed() };
    a.sa_sigaction = f as *const () as usize;
    a.sa_flags = libc::SA_RESTART;
    // SAFETY: sa_mask is a valid sigset_t owned by `a`.
    unsafe { libc::sigemptyset(&mut a.sa_mask) };
    // SAFETY: valid pointers; `service_handler` has the plain (non-SA_SIGINFO) signature.
    let rc = unsafe { libc::sigaction(sig, &a, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "sigaction");
}

/// The handler installed for `sig` now.
fn current_handler(sig: i32) -> usize {
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `old`.
    let rc = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "sigaction");
    old.sa_sigaction
}

/// Send `sig` to the calling thread; its handler has run when this returns.
fn raise(sig: i32) {
    // SAFETY: raise with a valid signal number whose disposition is a handler.
    assert_eq!(unsafe { libc::raise(sig) }, 0);
}

/// A sample of `tid`, waiting out [`SampleError::NotYet`] (a thread is signalled only after
/// it stayed on CPU for `MIN_ON_CPU`).
fn sample(
    sampler: &mut StackSampler,
    tid: i32,
    timeout: Duration,
) -> Result<asyncprof_sampler::Sample, SampleError> {
    loop {
        match sampler.sample(tid, timeout) {
            Err(SampleError::NotYet) => std::thread::sleep(asyncprof_sampler::MIN_ON_CPU / 4),
            r => return r,
        }
    }
}

#[test]
fn a_service_handler_is_chained_restored_and_survives_being_replaced() {
    let sig = asyncprof_sampler::default_signal();
    let (tid, stop, spinner) = support::spinning_thread(|| {});
    let service = service_handler as *const () as usize;

    // The service's handler first, then asyncprof's.
    install_service_handler(sig);
    let mut sampler = StackSampler::install(sig).unwrap();
    assert_ne!(
        current_handler(sig),
        service,
        "the sampler's handler is in place"
    );
    for _ in 0..50 {
        let stack = sample(&mut sampler, tid, Duration::from_secs(2)).unwrap();
        assert!(!stack.ips.is_empty());
    }
    assert_eq!(
        SERVICE_CALLS.load(SeqCst),
        0,
        "the sampler's own signals are not passed on"
    );
    raise(sig);
    assert_eq!(
        SERVICE_CALLS.load(SeqCst),
        1,
        "a signal the service sent itself reaches its handler through the sampler's"
    );
    drop(sampler);
    assert_eq!(
        current_handler(sig),
        service,
        "the service's handler is restored"
    );
    raise(sig);
    assert_eq!(SERVICE_CALLS.load(SeqCst), 2);

    // The service replaces the sampler's handler after it was installed.
    let mut sampler = StackSampler::install(sig).unwrap();
    install_handler(sig, later_service_handler);
    let later = later_service_handler as *const () as usize;
    let started = std::time::Instant::now();
    let r = sample(&mut sampler, tid, Duration::from_millis(200));
    assert_eq!(
        r,
        Err(SampleError::NoSignal),
        "a sample whose handler was replaced fails"
    );
    assert!(started.elapsed() < Duration::from_millis(100), "at once");
    assert_eq!(
        (SERVICE_CALLS.load(SeqCst), LATER_CALLS.load(SeqCst)),
        (2, 0),
        "and sends no signal"
    );
    drop(sampler);
    assert_eq!(
        current_handler(sig),
        later,
        "the handler the service installed last stays"
    );
    install_service_handler(sig);

    // Installed again, the sampler works again.
    let mut sampler = StackSampler::install(sig).unwrap();
    assert!(!sample(&mut sampler, tid, Duration::from_secs(2))
        .unwrap()
        .ips
        .is_empty());
    drop(sampler);
    stop.store(true, SeqCst);
    spinner.join().unwrap();
    raise(sig);
    assert_eq!(SERVICE_CALLS.load(SeqCst), 3);
}
