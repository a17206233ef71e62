//! `lock-contention`: a poll waited on a `std::sync` lock held elsewhere.
//!
//! **Measures**: a stall whose thread slept in `futex` inside `std::sync::Mutex`, `RwLock` or
//! `Condvar` (by name, or by std's source file when the debug info gives bare names).
//! **Why it hurts**: the worker thread sleeps until another thread lets go; with the lock held
//! across slow work, every worker that touches it queues behind it.
//! **What to do**: never hold a lock across slow work (copy, compute, swap), shorten the
//! critical section, shard the data, or use `tokio::sync::Mutex` across an `.await`.

/// The kind's name.
pub const KIND: &str = asyncprof_format::StallKind::LockContention.name();

/// What to do.
pub fn recommendation(primitive: Option<&str>, same_code: &[String], max_ms: f64) -> String {
    format!(
        "{} waited up to {max_ms:.1} ms for a std lock held elsewhere, holding the worker \
         thread. Do not hold the lock across slow work: shorten the critical section, shard \
         the data, or use tokio::sync::Mutex when it must be held across an .await.",
        super::call(primitive, same_code)
    )
}
