//! What the sampler's integration tests share.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::SeqCst};
use std::sync::Arc;

/// A thread that runs `setup`, then spins on CPU until told to stop: its kernel thread id,
/// the stop flag and its handle.
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
