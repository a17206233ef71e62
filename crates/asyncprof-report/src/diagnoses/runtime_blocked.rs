//! `runtime-blocked`: a poll that never returned.
//!
//! **Measures**: a stall still running when the run ended (the process stopped, was killed, or
//! is stuck), after holding its worker for at least a second
//! (`asyncprof_format::NEVER_RETURNED_NS`): a `futures::executor::block_on` inside the runtime,
//! a deadlock, an endless loop. A shorter one was cut by the end of the recording (a service
//! stopped in the middle of a request) and is the kind its record reads as otherwise.
//! **Why it hurts**: the worker is gone for good; on a current-thread runtime the whole runtime
//! stops, and every timer, socket and task with it.
//! **What to do**: `.await` the future instead of blocking on it; look for a lock cycle.

/// The kind's name.
pub const KIND: &str = asyncprof_format::StallKind::RuntimeBlocked.name();

/// What to do.
pub fn recommendation(primitive: Option<&str>, same_code: &[String]) -> String {
    format!(
        "This poll never returned: {} blocks its worker for good (on a current-thread \
         runtime, the whole runtime stops). Inside async code, `.await` the future instead \
         of blocking on it, and check for a deadlock.",
        super::call(primitive, same_code)
    )
}
