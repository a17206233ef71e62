//! Tests only: the asyncprof layer tier beside tokio's task spans, `fmt`, `EnvFilter` and
//! console-subscriber. This crate turns on tokio's `tracing` feature, so it lives apart from
//! the crates whose benchmarks must run on a tokio without it.
