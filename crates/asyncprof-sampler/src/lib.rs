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
//! - A thread off CPU (asleep in a system call) is never signalled: its stack is copied from
//!   outside, which needs `/proc/self/task/<tid>/syscall` and `/proc/self/mem` (both in every
//!   mainstream Linux kernel; where `/proc` is not mounted, stalls have no stacks, counted as
//!   failed samples). One descriptor of `/proc/self/mem` stays open for the life of the
//!   process.
//! - Stacks are walked with DWARF call-frame information (`.eh_frame`, by `framehop`) on the
//!   watchdog's thread: a release build needs no frame pointers, and without debug line
//!   tables the stack still names functions (from the symbol table) but not files and lines.
//! - Each sample copies at most [`STACK_BYTES`] of stack; frames beyond are cut off.
//! - x86_64 is the tested architecture. On aarch64 a thread asleep in a system call is
//!   unwound without its link register, which `/proc` does not give: its stack may stop at
//!   the first frame.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

pub mod files;
pub mod procfs;
mod signal;
mod syscalls;
mod unwind;

pub use procfs::{
    machine_crowded, run_delay_ns, sched_times, thread_state, LoadFiles, ThreadSchedFiles,
    ThreadState, MAX_KEPT_THREADS,
};
pub use signal::exit::{call_at_exit, remove_at_exit};
pub use signal::{
    block_all_signals_in_this_thread, current_stack, current_tid, default_signal,
    end_with_this_thread, in_handler, interrupted_syscalls, process_cpu_time, release_free_memory,
    send_signal, set_poll_probe, set_task_probe, thread_cpu_ns, try_lock_exclusive,
    wait_for_signal, Capture, InstallError, Pending, Sample, SampleError, StackSampler, MAX_FRAMES,
    MIN_ON_CPU, STACK_BYTES,
};
pub use syscalls::syscall_name;
