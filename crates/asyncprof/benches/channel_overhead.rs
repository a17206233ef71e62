//! What `asyncprof::sync::mpsc` adds to tokio's channel, per send+recv pair.
//!
//! Two workloads, each on tokio's channel and on asyncprof's, alternating round by round;
//! prints the median nanoseconds per pair and the difference:
//!
//! - `same task`: one task sends then receives, N times, on a current-thread runtime (no
//!   waits: the bare cost of the operations);
//! - `two tasks`: a producer and a consumer on a 2-worker runtime through a queue of 1,024
//!   (waits for room and for items included).
//!
//! ```text
//! cargo bench -p asyncprof --bench channel_overhead
//! cargo bench -p asyncprof --bench channel_overhead -- --items 1000 --rounds 1   # smoke
//! ```

use std::time::{Duration, Instant};

/// What asyncprof's mpsc channel adds to tokio's, per send+recv pair.
#[derive(clap::Parser)]
#[command(name = "channel_overhead")]
struct Args {
    /// Send+recv pairs per run.
    #[arg(long, default_value_t = 2_000_000)]
    items: u64,
    /// Rounds: each channel runs once per round, which one first alternating.
    #[arg(long, default_value_t = 9)]
    rounds: usize,
}

/// One workload written once for both channel implementations.
macro_rules! workloads {
    ($same:ident, $two:ident, $make:expr) => {
        fn $same(items: u64) -> Duration {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (tx, mut rx) = $make(64);
                let start = Instant::now();
                let mut sum = 0u64;
                for i in 0..items {
                    tx.send(i).await.unwrap();
                    sum = sum.wrapping_add(rx.recv().await.unwrap());
                }
                std::hint::black_box(sum);
                start.elapsed()
            })
        }

        fn $two(items: u64) -> Duration {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .unwrap();
            rt.block_on(async move {
                let (tx, mut rx) = $make(1024);
                let start = Instant::now();
                let producer = tokio::spawn(async move {
                    for i in 0..items {
                        tx.send(i).await.unwrap();
                    }
                });
                let consumer = tokio::spawn(async move {
                    let mut sum = 0u64;
                    while let Some(v) = rx.recv().await {
                        sum = sum.wrapping_add(v);
                    }
                    sum
                });
                producer.await.unwrap();
                std::hint::black_box(consumer.await.unwrap());
                start.elapsed()
            })
        }
    };
}

workloads!(
    tokio_same,
    tokio_two,
    |n| tokio::sync::mpsc::channel::<u64>(n)
);
workloads!(
    ours_same,
    ours_two,
    |n| asyncprof::sync::mpsc::channel::<u64>("bench", n)
);

fn main() {
    let args: Args = asyncprof_bench_support::args();
    println!(
        "send+recv pairs: {} per round, {} rounds, alternating tokio / asyncprof",
        args.items, args.rounds
    );
    type Run = fn(u64) -> Duration;
    let workloads: [(&str, Run, Run); 2] = [
        ("same task", tokio_same, ours_same),
        ("two tasks", tokio_two, ours_two),
    ];
    for (name, tokio_run, ours_run) in workloads {
        let (mut t, mut o, mut diff) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..args.rounds.max(1) {
            // Alternate which goes first, so warm-up and drift hit both alike.
            let (a, b) = if round % 2 == 0 {
                let a = tokio_run(args.items);
                (a, ours_run(args.items))
            } else {
                let b = ours_run(args.items);
                (tokio_run(args.items), b)
            };
            let per = |d: Duration| d.as_nanos() as f64 / args.items as f64;
            t.push(per(a));
            o.push(per(b));
            diff.push(per(b) - per(a));
        }
        let median = |v: &[f64]| {
            asyncprof_bench_support::median(v.iter().copied()).expect("one value a round")
        };
        let (mt, mo, md) = (median(&t), median(&o), median(&diff));
        let (lo, hi) =
            asyncprof_bench_support::range(diff.iter().copied()).expect("one value a round");
        println!(
            "{name:<10} tokio {mt:7.1} ns/pair   asyncprof {mo:7.1} ns/pair   added {md:+6.1} ns/pair \
             (median of per-round differences; range {lo:+.1} to {hi:+.1})"
        );
    }
}
