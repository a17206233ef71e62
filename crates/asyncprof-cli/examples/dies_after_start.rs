//! A program that dies 10 ms after asyncprof starts recording, before it builds a runtime or
//! polls a task. Its panic aborts the process, as in a build with `panic = "abort"`: no
//! destructor runs, so the recording's guard never writes its final records. The run file must
//! still be readable: `asyncprof report` is tested against what this program leaves.

use std::time::Duration;

fn main() {
    // What `panic = "abort"` does: the usual message, then abort, without unwinding.
    let message = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        message(info);
        std::process::abort();
    }));
    let _guard = asyncprof::Profiler::builder()
        .from_env()
        .expect("the ASYNCPROF_* variables are valid")
        .start()
        .expect("recording starts");
    std::thread::sleep(Duration::from_millis(10));
    panic!("the service fails 10 ms after start, before its runtime is built");
}
