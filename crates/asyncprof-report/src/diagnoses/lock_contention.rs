//! `lock-contention`: a poll waited on a `std::sync` lock held elsewhere.
//!
//! **Measures**: a stall whose thread slept in `futex` inside `std::sync::Mutex`, `RwLock` or
//! `Condvar` (by name, or by std's source file when the debug info gives bare names).
//! **Why it hurts**: the worker thread sleeps until another thread lets go; with the lock held
//! across slow work, every worker that touches it queues behind it.
//! **What to do**: never hold a lock across slow work (copy, compute, swap), shorten the
//! critical section, shard the data, or use `tokio::sync::Mutex` across an `.await`.

use asyncprof_format::{StallClass, StallRecord};

/// The kind's name.
pub const KIND: &str = "lock-contention";

/// Whether `s` is of this kind.
pub fn applies(s: &StallRecord) -> bool {
    let primitive = s.primitive.as_ref().map_or("", |p| p.function.as_str());
    let file = s
        .primitive
        .as_ref()
        .and_then(|p| p.file.as_deref())
        .unwrap_or("");
    let lockish = ["Mutex", "RwLock", "Condvar"]
        .iter()
        .any(|l| primitive.contains(l))
        || (file.contains("/sync/")
            && ["mutex", "rwlock", "condvar"]
                .iter()
                .any(|l| file.contains(l)));
    s.class == StallClass::Blocking && s.syscall.as_deref() == Some("futex") && lockish
}

/// What to do.
pub fn recommendation(primitive: Option<&str>, max_ms: f64) -> String {
    format!(
        "{} waited up to {max_ms:.1} ms for a std lock held elsewhere, holding the worker \
         thread. Do not hold the lock across slow work: shorten the critical section, shard \
         the data, or use tokio::sync::Mutex when it must be held across an .await.",
        super::call(primitive)
    )
}
