//! Tests only: the asyncprof layer tier beside tokio's task spans, `fmt`, `EnvFilter` and
//! console-subscriber. This crate turns on tokio's `tracing` feature, so it is built and tested
//! in a cargo invocation of its own (`.ci/test`), apart from the crates whose tests must run on
//! a tokio without it.
