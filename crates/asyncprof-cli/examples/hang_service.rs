//! A service that hangs for good: a task's poll sleeps on its worker thread and never
//! returns, on a current-thread runtime, so nothing else ever runs. `asyncprof run --timeout`
//! is tested against it: the program is stopped, and the report still shows the poll that hung
//! it, with its stack. The sleep is in a function of its own, kept out of line, so that a copy
//! with its debug info stripped still shows it in its stacks by name.

use std::time::Duration;

#[inline(never)]
fn wait_for_the_ledger() {
    loop {
        std::thread::sleep(Duration::from_secs(3600)); // asyncprof-expect: runtime-blocked
    }
}

#[asyncprof::main(flavor = "current_thread")]
async fn main() {
    tokio::spawn(async { wait_for_the_ledger() }).await.unwrap();
}
