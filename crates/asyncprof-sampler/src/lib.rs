//! Thread identity and per-thread kernel state for the asyncprof watchdog.
//!
//! This is the only asyncprof crate with `unsafe` code, and all of it lives in `src/signal/`.
//! It knows nothing of tokio or tasks: it names threads by their kernel thread id.
//!
//! ```
//! let tid = asyncprof_sampler::current_tid();
//! assert!(tid > 0);
//! ```
//!
//! # Feature flags
//!
//! None.
//!
//! # Limitations
//!
//! Linux only: thread ids come from `gettid(2)`; elsewhere [`current_tid`] returns 0.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod signal;

pub use signal::current_tid;
