//! `runtime-blocked`: a poll that never returned.
//!
//! **Measures**: a stall still running when the run ended (the process stopped, was killed, or
//! is stuck), after holding its worker for at least a second
//! (`asyncprof_format::NEVER_RETURNED_NS`): a `futures::executor::block_on` inside the runtime,
//! a deadlock, an endless loop. A shorter one was cut by the end of the recording (a service
//! stopped in the middle of a request) and is the kind its record reads as otherwise.
//! **Why it hurts**: the worker is gone for good; on a current-thread runtime the whole runtime
//! stops, and every timer, socket and task with it.
//! **What to do**: `.await` the future instead of blocking on it; for a lock, look for a lock
//! cycle (two locks taken in opposite orders) and take locks in one order.

/// The kind's name.
pub const KIND: &str = asyncprof_format::StallKind::RuntimeBlocked.name();

/// What to do: for a one-time initialisation (`Once`, `OnceLock`, `LazyLock`), it never
/// finished; for a lock, its holder never let go (a deadlock); for a `Condvar`, the
/// notification never came; for anything else (`block_on`, a channel's `recv`), `.await` it.
pub fn recommendation(primitive: Option<&str>, same_code: &[String]) -> String {
    let call = super::call(primitive, same_code);
    let p = primitive.unwrap_or("").to_ascii_lowercase();
    if ["once", "lazylock", "lazy_static", "lazy::"]
        .iter()
        .any(|l| p.contains(l))
    {
        return format!(
            "This poll never returned: {call} waited for good for a one-time initialisation \
             that never finished, holding its worker (on a current-thread runtime, the whole \
             runtime stops): the initialiser is stuck, or it waits (directly or through a lock \
             or a channel) for something that needs this value, itself included. Make the \
             initialiser independent of what waits on it, or initialise the value before the \
             runtime starts."
        );
    }
    if p.contains("condvar") {
        return format!(
            "This poll never returned: {call} waited for good for a notification that never \
             came, holding its worker (on a current-thread runtime, the whole runtime stops). \
             Check that the other side still notifies, and wait with tokio::sync::Notify or a \
             channel instead, with a timeout."
        );
    }
    if ["mutex", "rwlock", "lock_api", "parking_lot"]
        .iter()
        .any(|l| p.contains(l))
    {
        return format!(
            "This poll never returned: {call} waited for good for a lock whose holder never \
             let go, holding its worker (on a current-thread runtime, the whole runtime \
             stops): a deadlock, such as two locks taken in opposite orders, or a guard kept \
             alive across a wait for this lock. Take locks in one order everywhere, hold none \
             across a call that waits, and use tokio::sync::Mutex where a guard must live \
             across an .await."
        );
    }
    format!(
        "This poll never returned: {call} blocks its worker for good (on a current-thread \
         runtime, the whole runtime stops). Inside async code, `.await` the future instead \
         of blocking on it, and check for a deadlock."
    )
}

#[cfg(test)]
mod tests {
    /// Known truth: two tasks locking two std mutexes in opposite orders, each stuck for
    /// good; a `block_on` that never returns; a `Condvar` never notified.
    #[test]
    fn a_lock_that_never_comes_is_a_deadlock_and_a_block_on_is_awaited() {
        let lock = super::recommendation(Some("std::sync::Mutex::lock"), &[]);
        assert!(
            lock.contains("deadlock") && lock.contains("one order"),
            "{lock}"
        );
        assert!(!lock.contains("`.await` the future"), "{lock}");
        let pl = super::recommendation(Some("lock_api::mutex::Mutex::lock"), &[]);
        assert!(pl.contains("one order"), "{pl}");
        let block_on = super::recommendation(Some("futures::executor::block_on"), &[]);
        assert!(block_on.contains("`.await` the future"), "{block_on}");
        let condvar = super::recommendation(Some("std::sync::Condvar::wait"), &[]);
        assert!(condvar.contains("notification"), "{condvar}");
        for once in [
            "std::sync::poison::once::Once::call_once",
            "std::sync::once_lock::OnceLock<T>::get_or_init",
            "std::sync::lazy_lock::LazyLock<T,F>::force",
        ] {
            let advice = super::recommendation(Some(once), &[]);
            assert!(
                advice.contains("one-time initialisation"),
                "{once}: {advice}"
            );
        }
    }
}
