//! Stack capture of one stuck thread, and that thread's kernel state, for the asyncprof
//! stall watchdog.
//!
//! This is the only asyncprof crate with `unsafe` code, and all of it lives in `src/signal/`.
//! It knows nothing of tokio or tasks: it names threads by their kernel thread id.
//!
//! ```
//! let tid = asyncprof_sampler::current_tid();
//! assert!(tid > 0);
//! let state = asyncprof_sampler::thread_state(tid).unwrap();
//! assert_eq!(state.state, 'R'); // this thread is running: it is reading its own state
//! ```
//!
//! # Feature flags
//!
//! None.
//!
//! # Limitations
//!
//! - Linux only: thread ids come from `gettid(2)`, states from `/proc/self/task/<tid>/`.
//! - One [`StackSampler`] per process; samples are taken one at a time.
//! - Stacks are walked with DWARF call-frame information (`_Unwind_Backtrace`): a release
//!   build needs no frame pointers, and without debug line tables the stack still names
//!   functions (from the symbol table) but not files and lines.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod signal;
mod syscalls;

pub use signal::{
    current_tid, default_signal, in_handler, process_cpu_time, release_free_memory, run_delay_ns,
    send_signal, thread_state, InstallError, SampleError, StackSampler, ThreadState, MAX_FRAMES,
};
pub use syscalls::syscall_name;
