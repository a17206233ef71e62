//! Record a workload with the layer (or the hooks) installed and read the run file back.

use asyncprof_format::RunFile;
use tracing_subscriber::layer::SubscriberExt;

pub(crate) use asyncprof_test_support::{
    location, marked_line, read_back, retry_if_disturbed, serial, spin,
};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Tier {
    Hooks,
    Layer,
}

/// Run `f` on a runtime with `workers` workers (0: current-thread) under `tier`.
pub(crate) fn record<F, Fut>(name: &str, tier: Tier, workers: usize, f: F) -> RunFile
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    // One recording per process at a time (the test holds the lock already).
    let _one = serial();
    let path = std::env::temp_dir().join(format!(
        "asyncprof-compat-{name}-{}.run",
        std::process::id()
    ));
    let guard = asyncprof::Profiler::builder().out(&path).start().unwrap();
    let mut builder = if workers == 0 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    let dispatch = match tier {
        Tier::Hooks => {
            guard.instrument(&mut builder);
            tracing::Dispatch::none()
        }
        Tier::Layer => tracing::Dispatch::new(tracing_subscriber::registry().with(guard.layer())),
    };
    let thread_dispatch = dispatch.clone();
    builder.on_thread_start(move || {
        // Workers keep the subscriber for their whole life.
        std::mem::forget(tracing::dispatcher::set_default(&thread_dispatch));
    });
    let rt = builder.enable_all().build().unwrap();
    // A workload that fails an assertion still has its run read, for the clock gaps that
    // decide whether the attempt is tried again.
    let workload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tracing::dispatcher::with_default(&dispatch, || rt.block_on(f()))
    }));
    // Stop recording while the runtime still holds its live tasks, so that the final
    // snapshot lists them.
    drop(guard);
    drop(rt);
    read_back(&path, workload).0
}
