//! `lock-contention`: a poll waited on a `std::sync` or `parking_lot` lock held elsewhere.
//!
//! **Measures**: a stall whose thread slept in `futex` inside `std::sync::Mutex`, `RwLock` or
//! `Condvar`, or `parking_lot`'s (by name, or by the source file when the debug info gives
//! bare names).
//! **Why it hurts**: the worker thread sleeps until another thread lets go; with the lock held
//! across slow work, every worker that touches it queues behind it.
//! **What to do**: never hold a lock across slow work (copy, compute, swap), shorten the
//! critical section, shard the data, or use `tokio::sync::Mutex` across an `.await`; for a
//! `Condvar` wait (another thread's notification), `tokio::sync::Notify` or a channel.

/// The kind's name.
pub const KIND: &str = asyncprof_format::StallKind::LockContention.name();

/// What to do. A `Condvar` wait waits for another thread's notification, not for a lock.
pub fn recommendation(primitive: Option<&str>, same_code: &[String], max_ms: f64) -> String {
    // By its public name, or std's own (`std::sync::poison::condvar::wait`, in older runs).
    if primitive.is_some_and(|p| p.to_ascii_lowercase().contains("condvar")) {
        return format!(
            "{} waited up to {max_ms:.1} ms for another thread's notification, holding the \
             worker thread. Wait for it without blocking the worker: tokio::sync::Notify, a \
             tokio channel or oneshot the other thread sends on, or move the wait into \
             tokio::task::spawn_blocking.",
            super::call(primitive, same_code)
        );
    }
    format!(
        "{} waited up to {max_ms:.1} ms for a lock held elsewhere, holding the worker \
         thread. Do not hold the lock across slow work: shorten the critical section, shard \
         the data, or use tokio::sync::Mutex when it must be held across an .await.",
        super::call(primitive, same_code)
    )
}

#[cfg(test)]
mod tests {
    /// A `Condvar` wait is told to wait asynchronously, a lock's to shorten what holds it.
    #[test]
    fn a_condvar_wait_is_not_told_about_critical_sections() {
        let condvar = super::recommendation(Some("std::sync::Condvar::wait"), &[], 31.8);
        assert!(
            condvar.contains("notification") && condvar.contains("Notify"),
            "{condvar}"
        );
        assert!(!condvar.contains("critical section"), "{condvar}");
        let older = super::recommendation(Some("std::sync::poison::condvar::wait"), &[], 31.8);
        assert!(older.contains("notification"), "{older}");
        let mutex = super::recommendation(Some("std::sync::Mutex::lock"), &[], 31.8);
        assert!(mutex.contains("critical section"), "{mutex}");
    }
}
