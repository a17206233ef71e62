//! What a snapshot costs the aggregator thread on a service with many spawn locations and
//! many live tasks: 64 spawn locations, `--tasks` tasks at each (2,048 by default), every task
//! waking every 50–99 ms for a short poll, on a 2-worker runtime, for `--secs` seconds under
//! asyncprof with its default snapshot interval (1 s). Prints, per round, the CPU time of
//! asyncprof's aggregator thread (snapshots every second and the load sample every 100 ms)
//! and of its watchdog, per second of the run, and the median over the rounds.
//!
//! ```text
//! cargo bench -p asyncprof --bench snapshot_cost                          # 3 rounds of 10 s
//! cargo bench -p asyncprof --bench snapshot_cost -- --secs 1 --rounds 1   # smoke
//! ```

use std::time::Duration;

/// What a snapshot costs the aggregator thread on a service with many spawn locations.
#[derive(clap::Parser)]
#[command(name = "snapshot_cost")]
struct Args {
    /// Tasks alive at each of the 64 spawn locations.
    #[arg(long, default_value_t = 32)]
    tasks: u64,
    /// Seconds each round records.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    secs: u64,
    /// Rounds, each a recording of its own.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// A task of the service: wakes every 50–99 ms (by `n`) for a short poll.
async fn work(n: u64) {
    loop {
        tokio::time::sleep(Duration::from_millis(50 + n % 50)).await;
        std::hint::black_box((0..200u64).sum::<u64>());
    }
}

/// One task at each of the 64 spawn locations, the `i`-th of each: every line below is a
/// spawn location of its own (tokio names a spawn by its call site), so they are written out.
fn spawn_at_every_location(tasks: &mut Vec<tokio::task::JoinHandle<()>>, i: u64) {
    tasks.push(tokio::spawn(work(i * 64)));
    tasks.push(tokio::spawn(work(i * 64 + 1)));
    tasks.push(tokio::spawn(work(i * 64 + 2)));
    tasks.push(tokio::spawn(work(i * 64 + 3)));
    tasks.push(tokio::spawn(work(i * 64 + 4)));
    tasks.push(tokio::spawn(work(i * 64 + 5)));
    tasks.push(tokio::spawn(work(i * 64 + 6)));
    tasks.push(tokio::spawn(work(i * 64 + 7)));
    tasks.push(tokio::spawn(work(i * 64 + 8)));
    tasks.push(tokio::spawn(work(i * 64 + 9)));
    tasks.push(tokio::spawn(work(i * 64 + 10)));
    tasks.push(tokio::spawn(work(i * 64 + 11)));
    tasks.push(tokio::spawn(work(i * 64 + 12)));
    tasks.push(tokio::spawn(work(i * 64 + 13)));
    tasks.push(tokio::spawn(work(i * 64 + 14)));
    tasks.push(tokio::spawn(work(i * 64 + 15)));
    tasks.push(tokio::spawn(work(i * 64 + 16)));
    tasks.push(tokio::spawn(work(i * 64 + 17)));
    tasks.push(tokio::spawn(work(i * 64 + 18)));
    tasks.push(tokio::spawn(work(i * 64 + 19)));
    tasks.push(tokio::spawn(work(i * 64 + 20)));
    tasks.push(tokio::spawn(work(i * 64 + 21)));
    tasks.push(tokio::spawn(work(i * 64 + 22)));
    tasks.push(tokio::spawn(work(i * 64 + 23)));
    tasks.push(tokio::spawn(work(i * 64 + 24)));
    tasks.push(tokio::spawn(work(i * 64 + 25)));
    tasks.push(tokio::spawn(work(i * 64 + 26)));
    tasks.push(tokio::spawn(work(i * 64 + 27)));
    tasks.push(tokio::spawn(work(i * 64 + 28)));
    tasks.push(tokio::spawn(work(i * 64 + 29)));
    tasks.push(tokio::spawn(work(i * 64 + 30)));
    tasks.push(tokio::spawn(work(i * 64 + 31)));
    tasks.push(tokio::spawn(work(i * 64 + 32)));
    tasks.push(tokio::spawn(work(i * 64 + 33)));
    tasks.push(tokio::spawn(work(i * 64 + 34)));
    tasks.push(tokio::spawn(work(i * 64 + 35)));
    tasks.push(tokio::spawn(work(i * 64 + 36)));
    tasks.push(tokio::spawn(work(i * 64 + 37)));
    tasks.push(tokio::spawn(work(i * 64 + 38)));
    tasks.push(tokio::spawn(work(i * 64 + 39)));
    tasks.push(tokio::spawn(work(i * 64 + 40)));
    tasks.push(tokio::spawn(work(i * 64 + 41)));
    tasks.push(tokio::spawn(work(i * 64 + 42)));
    tasks.push(tokio::spawn(work(i * 64 + 43)));
    tasks.push(tokio::spawn(work(i * 64 + 44)));
    tasks.push(tokio::spawn(work(i * 64 + 45)));
    tasks.push(tokio::spawn(work(i * 64 + 46)));
    tasks.push(tokio::spawn(work(i * 64 + 47)));
    tasks.push(tokio::spawn(work(i * 64 + 48)));
    tasks.push(tokio::spawn(work(i * 64 + 49)));
    tasks.push(tokio::spawn(work(i * 64 + 50)));
    tasks.push(tokio::spawn(work(i * 64 + 51)));
    tasks.push(tokio::spawn(work(i * 64 + 52)));
    tasks.push(tokio::spawn(work(i * 64 + 53)));
    tasks.push(tokio::spawn(work(i * 64 + 54)));
    tasks.push(tokio::spawn(work(i * 64 + 55)));
    tasks.push(tokio::spawn(work(i * 64 + 56)));
    tasks.push(tokio::spawn(work(i * 64 + 57)));
    tasks.push(tokio::spawn(work(i * 64 + 58)));
    tasks.push(tokio::spawn(work(i * 64 + 59)));
    tasks.push(tokio::spawn(work(i * 64 + 60)));
    tasks.push(tokio::spawn(work(i * 64 + 61)));
    tasks.push(tokio::spawn(work(i * 64 + 62)));
    tasks.push(tokio::spawn(work(i * 64 + 63)));
}

/// CPU nanoseconds so far of this process's threads named `name`.
fn thread_cpu_ns(name: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .filter_map(|t| {
            let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            s.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// One recording: the aggregator's and the watchdog's CPU, milliseconds per second of it.
fn round(args: &Args) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let out = std::env::temp_dir().join(format!(
        "asyncprof-snapshot-cost-{}.run",
        std::process::id()
    ));
    let guard = asyncprof::Profiler::builder().out(&out).start()?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2);
    let rt = guard.instrument(&mut builder).enable_all().build()?;
    let secs = args.secs;
    let per_location = args.tasks;
    let (aggregator, watchdog) = rt.block_on(async move {
        let mut tasks = Vec::new();
        for i in 0..per_location {
            spawn_at_every_location(&mut tasks, i);
        }
        // From the first snapshot with every task alive.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (a0, w0) = (
            thread_cpu_ns("asyncprof-aggre"),
            thread_cpu_ns("asyncprof-watch"),
        );
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let (a1, w1) = (
            thread_cpu_ns("asyncprof-aggre"),
            thread_cpu_ns("asyncprof-watch"),
        );
        for t in &tasks {
            t.abort();
        }
        (a1.saturating_sub(a0), w1.saturating_sub(w0))
    });
    drop(rt);
    drop(guard);
    std::fs::remove_file(&out).ok();
    let per_s = |ns: u64| ns as f64 / 1e6 / secs as f64;
    Ok((per_s(aggregator), per_s(watchdog)))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Args = asyncprof_bench_support::args();
    let (mut aggregator, mut watchdog) = (Vec::new(), Vec::new());
    println!(
        "64 spawn locations x {} tasks, {} s per round: CPU ms per second of the run",
        args.tasks, args.secs
    );
    for r in 1..=args.rounds {
        let (a, w) = round(&args)?;
        println!("  round {r}: aggregator {a:.3} ms/s, watchdog {w:.3} ms/s");
        aggregator.push(a);
        watchdog.push(w);
    }
    let median = |v: &[f64]| asyncprof_bench_support::median(v.iter().copied());
    let (Some(a), Some((lo, hi)), Some(w)) = (
        median(&aggregator),
        asyncprof_bench_support::range(aggregator.iter().copied()),
        median(&watchdog),
    ) else {
        return Err("no round ran (--rounds 0)".into());
    };
    println!("median: aggregator {a:.3} ms/s ({lo:.3}-{hi:.3}), watchdog {w:.3} ms/s");
    Ok(())
}
