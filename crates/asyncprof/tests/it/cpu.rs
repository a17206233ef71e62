//! The whole-run CPU profile: a function known to burn CPU shows in the folded stacks.

use std::time::Duration;

use crate::support::{record_with, spin, Flavor};

#[inline(never)]
fn burn_known_function(d: Duration) {
    spin(d);
}

#[test]
fn a_cpu_profile_names_the_function_that_burned_cpu() {
    crate::support::retry_if_disturbed(|| {
        let (run, _) = record_with(
            "cpu-profile",
            Flavor::MultiThread(2),
            |b| b.cpu_profile(99),
            || async {
                tokio::spawn(async { burn_known_function(Duration::from_millis(400)) })
                    .await
                    .unwrap();
            },
        );
        let p = run.cpu_profile.expect("a CPU profile record");
        assert_eq!(p.hz, 99);
        // 400 ms at 99 Hz: about 40 samples on that thread; generous bounds.
        assert!(p.samples >= 15, "{} samples", p.samples);
        let burning: u64 = p
            .folded
            .lines()
            .filter(|l| l.contains("burn_known_function"))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
            .sum();
        assert!(
            burning >= 10,
            "{burning} samples in burn_known_function of {}",
            p.samples
        );
        // Folded lines start with the thread's name.
        assert!(p.folded.lines().all(|l| !l.starts_with(';')));
    });
}

#[test]
fn no_cpu_profile_unless_asked() {
    crate::support::retry_if_disturbed(|| {
        let (run, _) = record_with("no-cpu-profile", Flavor::CurrentThread, |b| b, || async {});
        assert!(run.cpu_profile.is_none());
    });
}

/// Levels of a binary tree of calls: each path from the root to a leaf is a stack of its own
/// (2^16 of them), so the profiler's table of 16,384 stacks overflows into its spill file.
const LEVELS: u32 = 16;

type Step = fn(u32, u64) -> u64;

/// Level `depth` of the tree: one of two functions, by the path's bit at that level.
static STEPS: [Step; 2 * LEVELS as usize] = [
    step::<0>, step::<1>, step::<2>, step::<3>, step::<4>, step::<5>, step::<6>, step::<7>,
    step::<8>, step::<9>, step::<10>, step::<11>, step::<12>, step::<13>, step::<14>, step::<15>,
    step::<16>, step::<17>, step::<18>, step::<19>, step::<20>, step::<21>, step::<22>, step::<23>,
    step::<24>, step::<25>, step::<26>, step::<27>, step::<28>, step::<29>, step::<30>, step::<31>,
];

#[inline(never)]
fn step<const I: u64>(depth: u32, path: u64) -> u64 {
    if depth == LEVELS {
        // A few microseconds of arithmetic (no clock read: a sample in the vDSO is dropped).
        let mut x = path | 1;
        for _ in 0..2_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(I));
        }
        return x;
    }
    let next = STEPS[(2 * depth + ((path >> depth) & 1) as u32) as usize];
    // Not a tail call: every level keeps its frame.
    std::hint::black_box(next(depth + 1, path)).wrapping_add(I)
}

/// pprof's spill files this process holds open (`.tmp` and six characters in the temporary
/// folder), with their sizes.
fn spill_files() -> Vec<u64> {
    let dir = std::env::temp_dir().canonicalize().unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.path()).ok()?;
            let name = target.file_name()?.to_str()?;
            (target.parent() == Some(dir.as_path()) && name.starts_with(".tmp") && name.len() == 10)
                .then(|| std::fs::metadata(fd.path()).ok().map(|m| m.len()))
                .flatten()
        })
        .collect()
}

/// Record a CPU profile at 999 Hz of two workers running random paths through the tree
/// until the spill file holds more than `until_spill` bytes or `most` has passed; the run and
/// the largest spill file seen.
fn record_many_stacks(
    name: &'static str,
    max_file_bytes: u64,
    until_spill: u64,
    most: Duration,
) -> (asyncprof_format::RunFile, u64) {
    let largest = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = largest.clone();
    let (run, _) = record_with(
        name,
        Flavor::MultiThread(2),
        |b| {
            b.cpu_profile(999)
                .max_file_size(max_file_bytes)
                .flush_interval(Duration::from_millis(100))
        },
        move || async move {
            let start = std::time::Instant::now();
            let walkers: Vec<_> = (1..=2u64)
                .map(|seed| {
                    tokio::spawn(async move {
                        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                        let mut sum = 0u64;
                        while start.elapsed() < most {
                            for _ in 0..200 {
                                x ^= x << 13;
                                x ^= x >> 7;
                                x ^= x << 17;
                                sum = sum.wrapping_add(STEPS[(x & 1) as usize](1, x));
                            }
                            tokio::task::yield_now().await;
                        }
                        std::hint::black_box(sum);
                    })
                })
                .collect();
            while start.elapsed() < most {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let now = spill_files().into_iter().max().unwrap_or(0);
                seen.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
                if seen.load(std::sync::atomic::Ordering::Relaxed) > until_spill {
                    eprintln!(
                        "{name}: spill file past {until_spill} bytes after {:?}",
                        start.elapsed()
                    );
                    // Time for the recorder's next look (every 100 ms here).
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    break;
                }
            }
            // The walkers stop at `most`; this run ends sooner when asked to.
            for w in walkers {
                w.abort();
            }
        },
    );
    (run, largest.load(std::sync::atomic::Ordering::Relaxed))
}

/// Slow (pprof's timer counts CPU time in the kernel's ticks: at 999 Hz two busy threads got
/// about 310 samples a second on a kernel ticking 250 times a second, and its table holds
/// 16,384 stacks: its first spill took 18 to 19 s), so not run by `cargo test`:
/// `cargo test -p asyncprof --test it the_cpu_profile_stops -- --ignored --nocapture`.
/// `stop_cpu_profile_at_spill_limit`'s unit tests check the same rule on every run.
#[test]
#[ignore = "slow: 20 to 120 s; run by hand"]
fn the_cpu_profile_stops_when_its_spill_file_reaches_a_quarter_of_the_file_limit() {
    // pprof keeps 16,384 stacks in memory and appends what it evicts to a file in the
    // temporary folder, 256 KiB at a time, without end: a service profiled for days with
    // ever new stacks (its blocking threads come and go) fills that folder.
    let (run, largest) =
        record_many_stacks("cpu-spill-nolimit", 0, 64 << 10, Duration::from_secs(120));
    eprintln!("no limit: spill file reached {largest} bytes");
    assert!(
        largest > 64 << 10,
        "the spill file reached only {largest} bytes"
    );
    let p = run.cpu_profile.expect("a CPU profile");
    assert_eq!(p.stopped_at_ns, None);

    // A 256 KiB file limit: the spill file may take 64 KiB; pprof writes 256 KiB at a time,
    // so its first write passes it and the profile stops there, covering the run up to then.
    let (run, largest) = record_many_stacks(
        "cpu-spill-limit",
        256 << 10,
        64 << 10,
        Duration::from_secs(120),
    );
    let p = run
        .cpu_profile
        .expect("a CPU profile, up to where it stopped");
    eprintln!(
        "limit 256 KiB: spill file reached {largest} bytes, profile stopped at {:?} with {} samples",
        p.stopped_at_ns, p.samples
    );
    assert!(
        largest <= 256 << 10,
        "the spill file reached {largest} bytes"
    );
    let stopped = p.stopped_at_ns.expect("the profile says where it stopped");
    assert!(
        stopped > 0 && p.samples > 100,
        "{stopped} ns, {} samples",
        p.samples
    );
    assert!(
        p.folded.contains("step"),
        "the profile has the tree's stacks"
    );
    assert!(
        spill_files().iter().all(|&n| n == 0),
        "the full spill file is gone: {:?}",
        spill_files()
    );
}
