//! A small instrumented service: many short yields and one task with slow polls.
//!
//! ```text
//! ASYNCPROF_OUT=demo.run cargo run --release -p asyncprof --example demo
//! cargo run --release -p asyncprof-cli -- report demo.run
//! ```

use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let guard = asyncprof::init()?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(2);
    let rt = guard.instrument(&mut builder).enable_all().build()?;
    rt.block_on(async {
        let slow = tokio::spawn(async {
            for _ in 0..20 {
                // A CPU-heavy poll of 3 ms.
                let t = Instant::now();
                while t.elapsed() < Duration::from_millis(3) {
                    std::hint::spin_loop();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let yields: Vec<_> = (0..200)
            .map(|_| {
                tokio::spawn(async {
                    for _ in 0..5_000 {
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for h in yields {
            h.await.unwrap();
        }
        slow.await.unwrap();
    });
    drop(rt);
    drop(guard);
    Ok(())
}
