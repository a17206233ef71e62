//! Signal-safety stress: three threads allocate, free, panic and catch, and unwind deep
//! stacks while the sampler captures them thousands of times. No deadlock, no crash, and no
//! allocation inside the handler (a counting allocator checks).
//!
//! `ASYNCPROF_STRESS_SAMPLES` sets the number of samples (default 2000; fewer under
//! valgrind).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asyncprof_sampler::{Capture, SampleError, StackSampler};

static ALLOCS_IN_HANDLER: AtomicU64 = AtomicU64::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

struct Counting;

// SAFETY: forwards every call to the system allocator unchanged; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        if asyncprof_sampler::in_handler() {
            ALLOCS_IN_HANDLER.fetch_add(1, Relaxed);
        }
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if asyncprof_sampler::in_handler() {
            ALLOCS_IN_HANDLER.fetch_add(1, Relaxed);
        }
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn recurse_and_panic(depth: u32) -> u32 {
    if depth == 0 {
        panic!("deep unwind");
    }
    // Keep the frame: the addition after the call prevents a tail call.
    recurse_and_panic(depth - 1) + std::hint::black_box(1)
}

#[test]
fn sampling_busy_threads_never_deadlocks_or_allocates() {
    let samples: usize = std::env::var("ASYNCPROF_STRESS_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    // Abort rather than hang if anything deadlocks.
    let done = Arc::new(AtomicBool::new(false));
    {
        let done = done.clone();
        std::thread::spawn(move || {
            let limit = Instant::now() + Duration::from_secs(300);
            while !done.load(Relaxed) {
                if Instant::now() > limit {
                    eprintln!("stress test did not finish in 300 s: deadlock");
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    }
    std::panic::set_hook(Box::new(|_| {}));
    let mut sampler = StackSampler::install(asyncprof_sampler::default_signal()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let tids = Arc::new(Mutex::new(Vec::new()));
    let work = Arc::new(AtomicU64::new(0));
    let panics = Arc::new(AtomicU64::new(0));
    // Three threads on two cores: each stays on CPU long enough (more than half the time,
    // between rare sleeps) to be signalled.
    let n_threads = 3;
    let threads: Vec<_> = (0..n_threads)
        .map(|k| {
            let (stop, tids, work, panics) =
                (stop.clone(), tids.clone(), work.clone(), panics.clone());
            std::thread::spawn(move || {
                let me = (
                    asyncprof_sampler::current_tid(),
                    asyncprof_sampler::current_stack(),
                );
                tids.lock().unwrap().push(me);
                let mut i = 0u64;
                while !stop.load(Relaxed) {
                    i += 1;
                    let v: Vec<u8> = vec![k as u8; (i % 4096) as usize + 1];
                    let s = format!("{}{}", v.len(), i);
                    std::hint::black_box((&v, &s));
                    drop((v, s));
                    if i.is_multiple_of(64) {
                        let r = std::panic::catch_unwind(|| recurse_and_panic(40));
                        assert!(r.is_err());
                        panics.fetch_add(1, Relaxed);
                    }
                    // Sleeps now and then: those samples are copied from outside; the runs
                    // of CPU between them are long enough to be signalled.
                    if i.is_multiple_of(8192) {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    work.fetch_add(1, Relaxed);
                }
            })
        })
        .collect();
    while tids.lock().unwrap().len() < n_threads {
        std::thread::yield_now();
    }
    let tids = tids.lock().unwrap().clone();
    let (mut ok, mut timeouts, mut frames) = (0u64, 0u64, 0u64);
    let (mut signalled, mut frozen, mut moved) = (0u64, 0u64, 0u64);
    for n in 0..samples {
        // Every other sample knows the thread's stack (the handler copies it with a plain
        // copy), the others do not (it reads /proc/self/mem).
        let (tid, stack) = tids[n % tids.len()].clone();
        let stack = stack.filter(|_| n % 2 == 0);
        let mut r = sampler.sample_in(tid, stack.clone(), Duration::from_millis(100));
        for _ in 0..200 {
            if r != Err(SampleError::NotYet) {
                break;
            }
            std::thread::sleep(asyncprof_sampler::MIN_ON_CPU / 2);
            r = sampler.sample_in(tid, stack.clone(), Duration::from_millis(100));
        }
        match r {
            Ok(sample) => {
                ok += 1;
                frames += sample.ips.len() as u64;
                match sample.capture {
                    Capture::Signal => signalled += 1,
                    _ => frozen += 1,
                }
            }
            // Not answered in time (a thread waiting for a core on a busy machine): its
            // signal is given up, so that the next thread's can be sent.
            Err(SampleError::Pending) => {
                timeouts += 1;
                sampler.cancel_pending();
            }
            // A handler of a given-up signal still copying (its thread lost its core
            // mid-copy): the slot is freed at a later sample.
            Err(SampleError::Busy) => moved += 1,
            // A thread copied from outside that ran meanwhile (its 50 µs sleeps end), or one
            // on CPU not yet long enough to be signalled.
            Err(SampleError::Inconsistent | SampleError::NotYet) => moved += 1,
            Err(e) => panic!("sample {n}: {e:?}"),
        }
    }
    stop.store(true, Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    done.store(true, Relaxed);
    let _ = std::panic::take_hook();
    eprintln!(
        "{ok} samples ({signalled} by signal, {frozen} copied from outside; {timeouts} timed \
         out, {moved} not taken: the thread ran while copied, or not yet on CPU long enough), {:.1} frames each; {} work items, {} \
         panics caught, {} allocations",
        frames as f64 / ok.max(1) as f64,
        work.load(Relaxed),
        panics.load(Relaxed),
        ALLOCS.load(Relaxed)
    );
    assert_eq!(ALLOCS_IN_HANDLER.load(Relaxed), 0, "the handler allocated");
    assert!(ok as usize >= samples / 2, "{ok} of {samples} samples");
    assert!(
        signalled as usize >= samples / 4,
        "the handler ran: {signalled} times"
    );
    assert!(
        frames / ok.max(1) >= 3,
        "stacks are walked, not just the handler"
    );
    assert!(panics.load(Relaxed) > 0 && work.load(Relaxed) > 0);
    drop(sampler);
}
