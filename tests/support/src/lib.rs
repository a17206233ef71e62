//! Test support shared by the test binaries that record a run (`asyncprof`'s and the
//! compatibility tests'): one test at a time, timing tests tried again when the machine kept
//! the watchdog from running, spawn locations found by a marker comment, polls of a known
//! length.

#![forbid(unsafe_code)]

mod known;
mod serial;

pub use known::{location, marked_line, spin};
pub use serial::{read_back, retry_if_disturbed, serial, Serial};
