//! `asyncprof-overhead-traced`: the worker for the configurations that need tokio's `tracing`
//! feature (asyncprof's layer tier, console-subscriber). The driver, `asyncprof-overhead`,
//! runs it; run by hand it takes `--worker CONFIG WORKLOAD SIZE`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match asyncprof_overhead::worker_main(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("asyncprof-overhead-traced: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
