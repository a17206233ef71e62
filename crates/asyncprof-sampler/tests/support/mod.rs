//! What the sampler's integration tests share.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::SeqCst};
use std::sync::Arc;

/// The function names of a sample's frames (the return addresses looked up one byte back).
// Not every test binary that shares this module uses every helper.
#[allow(dead_code)]
pub(crate) fn names(ips: &[usize]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let at = if i == 0 { *ip } else { ip - 1 };
        backtrace::resolve(at as *mut std::ffi::c_void, |s| {
            out.push(s.name().map(|n| format!("{n:#}")).unwrap_or_default());
        });
    }
    out
}

/// A thread that runs `setup`, then spins on CPU until told to stop: its kernel thread id,
/// the stop flag and its handle.
#[allow(dead_code)]
pub(crate) fn spinning_thread(
    setup: impl FnOnce() + Send + 'static,
) -> (i32, Arc<AtomicBool>, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let tid = Arc::new(AtomicI32::new(0));
    let handle = {
        let (stop, tid) = (stop.clone(), tid.clone());
        std::thread::spawn(move || {
            setup();
            tid.store(asyncprof_sampler::current_tid(), SeqCst);
            let mut x = 0u64;
            while !stop.load(SeqCst) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        })
    };
    while tid.load(SeqCst) == 0 {
        std::thread::yield_now();
    }
    (tid.load(SeqCst), stop, handle)
}
