//! `asyncprof-overhead`: the driver, and the worker for the configurations that run on a tokio
//! without its `tracing` feature.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let worker = match args.first().map(String::as_str) {
        Some("--worker") => asyncprof_overhead::worker_main(&args),
        Some("--soak") => asyncprof_overhead::soak::service_main(&args),
        Some("--stall-service") => asyncprof_overhead::stall_memory::service_main(&args),
        _ => return asyncprof_overhead::driver::main(),
    };
    match worker {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("asyncprof-overhead worker: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
