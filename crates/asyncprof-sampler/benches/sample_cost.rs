//! What one stall stack costs, and how often the residual race hits.
//!
//! `cargo bench -p asyncprof-sampler --bench sample_cost -- [--samples N] [--race-secs S]`
//!
//! - blocked: a thread asleep in `recv_from` (its stack is copied from outside, no signal);
//! - on CPU: a spinning thread (signalled; its handler copies registers and stack);
//! - race: a thread that alternates 20 µs of CPU with a 1 ms `poll` (never restarted after a
//!   handler), sampled as fast as the sampler can: how many of its polls returned `EINTR`
//!   (a signal that reached it after it entered the call), per signal sent.
//!
//! Prints the median and p99 wall time of one sample (the watchdog's cost, including the
//! unwind) and the frames per stack.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use asyncprof_bench_support::quantile;
use asyncprof_sampler::{Capture, SampleError, StackSampler};

/// What one stall stack costs, and how often the residual race hits.
#[derive(clap::Parser)]
#[command(name = "sample_cost")]
struct Args {
    /// Samples of each thread, blocked and on CPU.
    #[arg(long, default_value_t = 2000)]
    samples: u64,
    /// Seconds of each residual-race run.
    #[arg(long, default_value_t = 3)]
    race_secs: u64,
}

fn measure(
    sampler: &mut StackSampler,
    (tid, stack): (i32, Option<Range<u64>>),
    n: u64,
    want: fn(&Capture) -> bool,
) -> String {
    let (mut us, mut frames, mut failed) = (Vec::new(), 0usize, 0u64);
    let (mut handler_us, mut bytes) = (Vec::new(), 0usize);
    sampler.watch(tid);
    for _ in 0..n {
        let t = Instant::now();
        let mut r = sampler.sample_in(tid, stack.clone(), Duration::from_millis(50));
        while r == Err(SampleError::NotYet) {
            std::thread::sleep(asyncprof_sampler::MIN_ON_CPU);
            r = sampler.sample_in(tid, stack.clone(), Duration::from_millis(50));
        }
        let dt = t.elapsed().as_secs_f64() * 1e6;
        match r {
            Ok(s) if want(&s.capture) => {
                us.push(dt);
                frames += s.ips.len();
                bytes += s.stack_bytes;
                handler_us.push(s.handler_ns as f64 / 1e3);
            }
            _ => failed += 1,
        }
    }
    if us.is_empty() {
        return format!("no sample of {n} ({failed} failed)");
    }
    let ok = us.len();
    let q = |v: &[f64], q: f64| quantile(v.iter().copied(), q).expect("one value a sample");
    format!(
        "median {:.1} µs, p99 {:.1} µs, {:.1} frames and {:.0} KiB each; on the sampled \
         thread median {:.1} µs, p99 {:.1} µs ({ok} samples, {failed} failed or other)",
        q(&us, 0.5),
        q(&us, 0.99),
        frames as f64 / ok as f64,
        bytes as f64 / ok as f64 / 1024.0,
        q(&handler_us, 0.5),
        q(&handler_us, 0.99),
    )
}

/// A thread running `f` (which stores its tid first), its tid and its stack.
type Started = ((i32, Option<Range<u64>>), std::thread::JoinHandle<()>);

fn thread_tid(f: impl FnOnce(&AtomicI32) + Send + 'static) -> Started {
    let tid = Arc::new(AtomicI32::new(0));
    let stack = Arc::new(Mutex::new(None));
    let t = {
        let (tid, stack) = (tid.clone(), stack.clone());
        std::thread::spawn(move || {
            *stack.lock().unwrap() = Some(asyncprof_sampler::current_stack());
            f(&tid)
        })
    };
    while tid.load(SeqCst) == 0 {
        std::thread::yield_now();
    }
    let stack = stack.lock().unwrap().clone().flatten();
    ((tid.load(SeqCst), stack), t)
}

fn main() {
    let args: Args = asyncprof_bench_support::args();
    let (n, race_secs) = (args.samples, args.race_secs);
    let mut sampler = StackSampler::install(asyncprof_sampler::default_signal()).unwrap();

    // Blocked in recv_from until the end.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let (tid, blocked) = thread_tid(move |tid| {
        tid.store(asyncprof_sampler::current_tid(), SeqCst);
        let mut buf = [0u8; 8];
        let _ = sock.recv_from(&mut buf);
    });
    std::thread::sleep(Duration::from_millis(50));
    let line = measure(&mut sampler, tid, n, |c| {
        matches!(c, Capture::Frozen { .. })
    });
    println!("blocked in recv_from (copied from outside): {line}");
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"end", addr)
        .unwrap();
    blocked.join().unwrap();

    // On CPU.
    let stop = Arc::new(AtomicBool::new(false));
    let (tid, spinner) = {
        let stop = stop.clone();
        thread_tid(move |tid| {
            tid.store(asyncprof_sampler::current_tid(), SeqCst);
            let mut x = 0u64;
            while !stop.load(SeqCst) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        })
    };
    let line = measure(&mut sampler, tid, n, |c| matches!(c, Capture::Signal));
    println!("on CPU (signalled, handler copies the stack): {line}");
    stop.store(true, SeqCst);
    spinner.join().unwrap();

    // The residual race, with short and long bursts of CPU between the polls.
    for burst_us in [20u64, 2000] {
        race(&mut sampler, burst_us, race_secs);
    }
}

fn race(sampler: &mut StackSampler, burst_us: u64, secs: u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let (polls, eintr) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let ((tid, stack), racer) = {
        let (stop, polls, eintr) = (stop.clone(), polls.clone(), eintr.clone());
        thread_tid(move |tid| {
            tid.store(asyncprof_sampler::current_tid(), SeqCst);
            while !stop.load(SeqCst) {
                let t = Instant::now();
                while t.elapsed() < Duration::from_micros(burst_us) {}
                // SAFETY: no descriptors: poll only waits for its timeout.
                let rc = unsafe { libc::poll(std::ptr::null_mut(), 0, 1) };
                polls.fetch_add(1, SeqCst);
                if rc < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    eintr.fetch_add(1, SeqCst);
                }
            }
        })
    };
    let before = asyncprof_sampler::interrupted_syscalls();
    let (mut signals, mut frozen, mut not_yet, mut other) = (0u64, 0u64, 0u64, 0u64);
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        match sampler.sample_in(tid, stack.clone(), Duration::from_millis(50)) {
            Ok(s) if s.capture == Capture::Signal => signals += 1,
            Ok(_) => frozen += 1,
            Err(SampleError::NotYet) => not_yet += 1,
            Err(_) => other += 1,
        }
    }
    stop.store(true, SeqCst);
    racer.join().unwrap();
    let e = eintr.load(SeqCst);
    println!(
        "race, {burst_us} µs of CPU then a 1 ms poll: {} polls; {signals} signals, {frozen} \
         copied from outside, {not_yet} on CPU not long enough, {other} failed; {e} polls \
         returned EINTR ({:.4} per signal); the handler counted {}",
        polls.load(SeqCst),
        e as f64 / signals.max(1) as f64,
        asyncprof_sampler::interrupted_syscalls() - before
    );
}
