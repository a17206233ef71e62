//! A thread that computes inside one system call (a read copying a large file from the page
//! cache) runs the sampling signal's handler only as the call returns. The signal stays armed
//! ([`SampleError::Pending`]) and its stack is collected then: taken at the call's return,
//! the C library's `read` on top and the reading function under it. Meanwhile another
//! thread's signal sample waits (busy) and leaves the pending one intact; once collected,
//! both threads are sampled as usual. The read itself returns what it returns unsampled: the
//! whole file, every time. The handler of a pending signal began after milliseconds of the
//! thread's CPU time in the read, and the sample says so. A pending signal discarded before its handler ran
//! is taken for lost once, and the thread is sampled again.

use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asyncprof_sampler::{Capture, Pending, Sample, SampleError, StackSampler};

mod support;

use support::names;

/// The file's size: a read of it takes tens of milliseconds on CPU in the kernel.
const FILE_BYTES: usize = 96 << 20;

/// One sampler per process: the tests of this file take turns.
static ONE_SAMPLER: Mutex<()> = Mutex::new(());

/// A thread reading the whole file in a loop until `stop`: its tid once it runs, and how many
/// reads came back short.
fn reading_thread(
    path: std::path::PathBuf,
) -> (
    i32,
    Arc<AtomicBool>,
    Arc<AtomicU64>,
    std::thread::JoinHandle<()>,
) {
    let tid = Arc::new(AtomicI32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let short = Arc::new(AtomicU64::new(0));
    let reader = {
        let (tid, stop, short) = (tid.clone(), stop.clone(), short.clone());
        std::thread::spawn(move || {
            tid.store(asyncprof_sampler::current_tid(), SeqCst);
            let file = std::fs::File::open(&path).unwrap();
            let mut buf = vec![0u8; FILE_BYTES];
            while !stop.load(SeqCst) {
                if read_whole_file(&file, &mut buf).ok() != Some(FILE_BYTES) {
                    short.fetch_add(1, SeqCst);
                }
            }
        })
    };
    while tid.load(SeqCst) == 0 {
        std::thread::yield_now();
    }
    (tid.load(SeqCst), stop, short, reader)
}

/// One `pread` of the whole file: a signal that cut it short would show as fewer bytes or
/// an error (`read_to_end` would retry both).
#[inline(never)]
fn read_whole_file(file: &std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    std::hint::black_box(file.read_at(buf, 0))
}

/// Sample `tid` until its signal is left pending (it was inside a read when the signal came),
/// sample `other` once meanwhile (true when it was busy), then collect the pending stack.
fn one_pending_stack(sampler: &mut StackSampler, tid: i32, other: i32) -> (Sample, bool) {
    sampler.watch(other);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "no signal left pending in 60 s: {seen:?}"
        );
        match sampler.sample(tid, Duration::from_millis(2)) {
            Err(SampleError::Pending) => break,
            Err(e) => seen.push(e),
            Ok(_) => {}
        }
        std::thread::sleep(Duration::from_micros(300));
    }
    // The other thread, on CPU: its signal waits for the slot; the pending one stays. (Not
    // signalled before it stayed on CPU long enough: tried again for a moment.)
    let mut busy = sampler.sample(other, Duration::from_millis(50));
    for _ in 0..20 {
        if busy != Err(SampleError::NotYet) || !sampler.is_pending(tid) {
            break;
        }
        std::thread::sleep(asyncprof_sampler::MIN_ON_CPU);
        busy = sampler.sample(other, Duration::from_millis(50));
    }
    assert!(
        matches!(busy, Err(SampleError::Busy | SampleError::NotYet)),
        "{busy:?}"
    );
    let busy = busy == Err(SampleError::Busy);
    assert!(sampler.is_pending(tid));
    // The same thread again: no second signal while the first is on its way.
    let again = sampler.sample(tid, Duration::from_millis(1));
    match again {
        Ok(s) => return (s, busy),
        Err(SampleError::Pending) => {}
        Err(e) => panic!("{e:?}"),
    }
    // The signal sent first, queued for the thread, which does not block it: unanswered
    // until the read returns, then answered.
    let sent = sampler.pending(tid).map(|(sent, _)| sent);
    assert!(sent.is_some());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (now_sent, state) = sampler.pending(tid).unwrap();
        assert_eq!(Some(now_sent), sent);
        assert_ne!(state, Pending::HeldBack);
        if let Some((t, s)) = sampler.take_pending() {
            assert_eq!(t, tid);
            assert_eq!(sampler.pending(tid), None);
            return (s.unwrap(), busy);
        }
        assert!(Instant::now() < deadline, "the handler never ran");
        std::thread::sleep(Duration::from_micros(200));
    }
}

#[test]
fn a_thread_computing_inside_a_read_is_sampled_as_the_read_returns() {
    let _one = ONE_SAMPLER.lock().unwrap_or_else(|p| p.into_inner());
    let path = std::env::temp_dir().join(format!("asyncprof-in-kernel-{}", std::process::id()));
    std::fs::write(&path, vec![7u8; FILE_BYTES]).unwrap();
    let mut sampler = StackSampler::install(asyncprof_sampler::default_signal()).unwrap();
    let (tid, stop, short, reader) = reading_thread(path.clone());
    let (spinner_tid, spinner_stop, spinner) = support::spinning_thread(|| {});
    // A pending signal's handler runs at the thread's next return to its own code: inside
    // the read's caller when the read was what it computed in (nearly always: the thread
    // spends its time there), elsewhere when it was only waiting for a core. Take a few.
    let (mut at_read, mut busy) = (0, 0);
    for _ in 0..5 {
        let (sample, was_busy) = one_pending_stack(&mut sampler, tid, spinner_tid);
        busy += u32::from(was_busy);
        assert_eq!(sample.capture, Capture::Signal);
        assert!(sample.late);
        // Unanswered for the first sample's 2 ms, on CPU in the read (not waiting for a core:
        // two cores, the spinner on one): at least a millisecond of CPU before its handler.
        assert!(sample.answer_cpu_ns >= 1_000_000, "{sample:?}");
        assert!(!sampler.is_pending(tid));
        let names = names(&sample.ips);
        if names.first().is_some_and(|n| n.contains("read"))
            && names.iter().any(|n| n.contains("read_whole_file"))
        {
            at_read += 1;
        }
    }
    assert!(at_read >= 3, "{at_read} of 5 stacks began in the read");
    assert!(
        busy >= 1,
        "the other thread was never signalled while one was pending"
    );
    // Both threads are sampled as usual afterwards: the slot is free.
    let mut spun = sampler.sample(spinner_tid, Duration::from_millis(500));
    for _ in 0..2000 {
        if spun != Err(SampleError::NotYet) {
            break;
        }
        std::thread::sleep(asyncprof_sampler::MIN_ON_CPU / 2);
        spun = sampler.sample(spinner_tid, Duration::from_millis(500));
    }
    assert!(spun.as_ref().is_ok_and(|s| !s.late), "{spun:?}");
    // Answered within its 500 ms, after some CPU time of its own.
    assert!(
        spun.as_ref()
            .is_ok_and(|s| s.answer_cpu_ns > 0 && s.answer_cpu_ns < 500_000_000),
        "{spun:?}"
    );
    stop.store(true, SeqCst);
    spinner_stop.store(true, SeqCst);
    reader.join().unwrap();
    spinner.join().unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(short.load(SeqCst), 0, "every pread returned the whole file");
    drop(sampler);
}

/// Known truth: a signal left pending for a thread inside a long read, then discarded before
/// its handler ran (setting the signal's action to "ignore" drops a pending one, as another
/// handler taking it would leave it): neither queued nor on its way, with the thread on CPU.
/// It is held back, found so after one wait for a delivery that never comes (the first look)
/// and at once after that (before, every look waited); the next sample gives it up and
/// signals again, and with the handler back the thread is sampled.
#[test]
fn a_discarded_pending_signal_is_lost_after_one_wait() {
    let _one = ONE_SAMPLER.lock().unwrap_or_else(|p| p.into_inner());
    let path =
        std::env::temp_dir().join(format!("asyncprof-in-kernel-lost-{}", std::process::id()));
    std::fs::write(&path, vec![7u8; FILE_BYTES]).unwrap();
    let sig = asyncprof_sampler::default_signal();
    let mut sampler = StackSampler::install(sig).unwrap();
    let (tid, stop, short, reader) = reading_thread(path.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while sampler.sample(tid, Duration::from_millis(2)) != Err(SampleError::Pending) {
        assert!(Instant::now() < deadline, "no signal left pending in 60 s");
        std::thread::sleep(Duration::from_micros(300));
    }
    // SAFETY: an all-zero sigaction is valid; SIG_IGN as its handler; `ours` receives the
    // sampler's action, put back below.
    let mut ignore: libc::sigaction = unsafe { std::mem::zeroed() };
    ignore.sa_sigaction = libc::SIG_IGN;
    let mut ours: libc::sigaction = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::sigaction(sig, &ignore, &mut ours) }, 0);
    let first = Instant::now();
    let (_, state) = sampler.pending(tid).unwrap();
    let first = first.elapsed();
    assert_eq!(state, Pending::HeldBack);
    let again = Instant::now();
    let (_, state) = sampler.pending(tid).unwrap();
    let again = again.elapsed();
    assert_eq!(state, Pending::HeldBack);
    assert!(
        first >= Duration::from_millis(2) && again < Duration::from_millis(2),
        "first look {first:?}, the next {again:?}"
    );
    // SAFETY: the action the sampler installed, read above.
    assert_eq!(
        unsafe { libc::sigaction(sig, &ours, std::ptr::null_mut()) },
        0
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match sampler.sample(tid, Duration::from_millis(2)) {
            Ok(_) => break,
            Err(SampleError::Pending) => {
                if let Some((t, s)) = sampler.take_pending() {
                    assert_eq!(t, tid);
                    assert!(s.is_ok(), "{s:?}");
                    break;
                }
            }
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "never sampled again");
        std::thread::sleep(Duration::from_micros(300));
    }
    stop.store(true, SeqCst);
    reader.join().unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(short.load(SeqCst), 0, "every pread returned the whole file");
}
