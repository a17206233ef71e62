//! Every `unsafe` block of asyncprof lives below this module.
//!
//! Invariants kept here:
//! - calls into libc are made only with arguments that libc documents as valid;
//! - nothing here allocates when called from a signal handler (no handler is installed yet).

/// The kernel thread id of the calling thread (`gettid(2)`), or 0 off Linux.
pub fn current_tid() -> i32 {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid takes no arguments, cannot fail and has no side effects.
        unsafe { libc::gettid() }
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}
