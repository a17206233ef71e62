//! A thread that computes inside one system call (a read copying a large file from the page
//! cache) runs the sampling signal's handler only as the call returns. The signal stays armed
//! ([`SampleError::Pending`]) and its stack is collected then: taken at the call's return,
//! with the reading function under it. The read itself returns what it returns unsampled:
//! the whole file, every time.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use asyncprof_sampler::{Capture, SampleError, StackSampler};

/// The file's size: a read of it takes tens of milliseconds on CPU in the kernel.
const FILE_BYTES: usize = 96 << 20;

/// The function names of a sample's frames.
fn names(ips: &[usize]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let at = if i == 0 { *ip } else { ip - 1 };
        backtrace::resolve(at as *mut std::ffi::c_void, |s| {
            out.push(s.name().map(|n| format!("{n:#}")).unwrap_or_default());
        });
    }
    out
}

#[inline(never)]
fn read_whole_file(path: &std::path::Path, buf: &mut Vec<u8>) -> usize {
    buf.clear();
    let n = std::fs::File::open(path).unwrap().read_to_end(buf).unwrap();
    std::hint::black_box(n)
}

#[test]
fn a_thread_computing_inside_a_read_is_sampled_as_the_read_returns() {
    let path = std::env::temp_dir().join(format!("asyncprof-in-kernel-{}", std::process::id()));
    std::fs::write(&path, vec![7u8; FILE_BYTES]).unwrap();
    let mut sampler = StackSampler::install(asyncprof_sampler::default_signal()).unwrap();
    let tid = Arc::new(AtomicI32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, short) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reader = {
        let (tid, stop, reads, short, path) = (
            tid.clone(),
            stop.clone(),
            reads.clone(),
            short.clone(),
            path.clone(),
        );
        std::thread::spawn(move || {
            tid.store(asyncprof_sampler::current_tid(), SeqCst);
            let mut buf = Vec::with_capacity(FILE_BYTES + 1);
            while !stop.load(SeqCst) {
                if read_whole_file(&path, &mut buf) != FILE_BYTES {
                    short.fetch_add(1, SeqCst);
                }
                reads.fetch_add(1, SeqCst);
            }
        })
    };
    while tid.load(SeqCst) == 0 {
        std::thread::yield_now();
    }
    let tid = tid.load(SeqCst);
    // Sample until a signal is left pending: the thread was inside a read when it came.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let mut pending = false;
    while Instant::now() < deadline && !pending {
        let r = sampler.sample(tid, Duration::from_millis(2));
        pending = r == Err(SampleError::Pending);
        if let Err(e) = r {
            seen.push(e);
        }
        std::thread::sleep(Duration::from_micros(300));
    }
    assert!(pending, "no signal left pending in 60 s: {seen:?}");
    assert!(sampler.is_pending(tid));
    // Another sample of the same thread sends no second signal while the first is on its way.
    let again = sampler.sample(tid, Duration::from_millis(1));
    assert!(
        matches!(again, Err(SampleError::Pending) | Ok(_)),
        "{again:?}"
    );
    let mut taken = again.ok().map(|s| (tid, Ok(s)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while taken.is_none() && Instant::now() < deadline {
        taken = sampler.take_pending();
        std::thread::sleep(Duration::from_micros(200));
    }
    let (t, sample) = taken.expect("the handler ran once the read returned");
    assert_eq!(t, tid);
    let sample = sample.unwrap();
    assert_eq!(sample.capture, Capture::Signal);
    assert!(!sampler.is_pending(tid));
    let names = names(&sample.ips);
    assert!(
        names.iter().any(|n| n.contains("read_whole_file")),
        "{names:#?}"
    );
    // After it, the thread is sampled again as any other.
    let mut next = Err(SampleError::NotYet);
    for _ in 0..2000 {
        next = sampler.sample(tid, Duration::from_millis(200));
        match next {
            Err(SampleError::Pending) => {
                // Inside a read again: wait for its end.
                for _ in 0..1000 {
                    if let Some((_, s)) = sampler.take_pending() {
                        next = s;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                break;
            }
            Err(SampleError::NotYet | SampleError::Inconsistent) => {
                std::thread::sleep(Duration::from_micros(300))
            }
            _ => break,
        }
    }
    assert!(next.is_ok(), "{next:?}");
    stop.store(true, SeqCst);
    reader.join().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(reads.load(SeqCst) >= 1);
    assert_eq!(short.load(SeqCst), 0, "every read returned the whole file");
    drop(sampler);
}
