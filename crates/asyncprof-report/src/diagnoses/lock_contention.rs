//! `lock-contention`: a poll waited on a `std::sync` or `parking_lot` lock held elsewhere.
//!
//! **Measures**: a stall whose thread slept in `futex` inside `std::sync::Mutex`, `RwLock` or
//! `Condvar`, or `parking_lot`'s (by name, or by the source file when the debug info gives
//! bare names), or in a lock's acquisition inside a library's call (dashmap's shard locks,
//! any lock built on `lock_api`).
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
    // dashmap's guards hold their shard's lock until they are dropped.
    if primitive.is_some_and(|p| p.starts_with("dashmap::")) {
        return format!(
            "{} waited up to {max_ms:.1} ms for a shard of the map locked elsewhere, holding \
             the worker thread. A dashmap guard (Ref, RefMut, an Entry, an iterator's item) \
             holds its shard's lock until it is dropped, and other keys share the shard: \
             clone or copy what you need and drop the guard before slow work or an .await.",
            super::call(primitive, same_code)
        );
    }
    // A lock inside a library's call (its name is not a lock's): held by another call of
    // it, not by the caller's code.
    if primitive.is_some_and(|p| !names_a_lock(p)) {
        return format!(
            "{} waited up to {max_ms:.1} ms for a lock inside it, held by another thread in \
             the same library (another call, or work it runs under the lock), holding the \
             worker thread. Use the library's async API if it has one, keep slow work out of \
             what runs under that lock, or move the call into tokio::task::spawn_blocking.",
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

/// Whether a call's path names a lock: a type segment that is one (`Mutex`, `RwLock`,
/// `ReentrantMutex`, `SpinLock`; in a bare name's file-derived path, `mutex`, `rwlock`), or a
/// lock's method (`lock`, `read`, `write`, `try_lock`, `lock_exclusive`, `lock_shared`, …).
/// Not `block_on`, `blocking` or `clock`, which only contain the word.
fn names_a_lock(path: &str) -> bool {
    let path = asyncprof_format::culprit::without_type_arguments(path);
    let segments: Vec<&str> = path
        .split("::")
        .map(|s| s.trim_start_matches('<').trim_end_matches('>'))
        .collect();
    let method = segments.last().copied().unwrap_or("");
    segments.iter().any(|s| {
        let s = s.to_ascii_lowercase();
        s.ends_with("mutex") || s.ends_with("rwlock") || s.ends_with("spinlock") || s == "lock"
    }) || ["read", "write", "try_lock", "try_read", "try_write"].contains(&method)
        || method.starts_with("lock")
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
        let lock_api = super::recommendation(Some("lock_api::mutex::Mutex::lock"), &[], 31.8);
        assert!(lock_api.contains("critical section"), "{lock_api}");
        let dashmap = super::recommendation(Some("dashmap::entry"), &[], 44.5);
        assert!(dashmap.contains("drop the guard"), "{dashmap}");
        for call in [
            "moka::get_with",
            "futures::executor::block_on",
            "reqwest::blocking::Client::get",
            "quanta::clock::now",
        ] {
            let inside = super::recommendation(Some(call), &[], 25.3);
            assert!(
                inside.contains("lock inside it") && !inside.contains("critical section"),
                "{inside}"
            );
        }
        for call in [
            "parking_lot::Mutex::lock",
            "std::sync::RwLock::write",
            "spin::mutex::lock",
            "lock_api::rwlock::RwLock::read",
            "async_lock::Mutex::lock_blocking",
            "app::SpinLock::acquire",
        ] {
            let lock = super::recommendation(Some(call), &[], 25.3);
            assert!(lock.contains("critical section"), "{call}: {lock}");
        }
    }
}
