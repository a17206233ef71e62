//! A service that hangs for good: a task's poll sleeps on its worker thread and never
//! returns, on a current-thread runtime, so nothing else ever runs. `asyncprof run --timeout`
//! is tested against it: the program is stopped, and the report still shows the poll that hung
//! it, with its stack.

use std::time::Duration;

#[asyncprof::main(flavor = "current_thread")]
async fn main() {
    tokio::spawn(async {
        loop {
            std::thread::sleep(Duration::from_secs(3600)); // asyncprof-expect: runtime-blocked
        }
    })
    .await
    .unwrap();
}
