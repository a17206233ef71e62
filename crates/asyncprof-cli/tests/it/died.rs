//! A process that dies right after `start` (before any runtime, any task, any snapshot) still
//! leaves a run file that `asyncprof report` reads and that says how far the process got
//! (`examples/dies_after_start.rs`).

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{asyncprof, temp};

/// The signal `abort` raises (6 on every Linux architecture).
const SIGABRT: i32 = 6;

#[test]
fn a_process_that_panics_10_ms_after_start_leaves_a_run_file_the_report_reads() {
    let path = temp("died-early");
    // Examples are built beside the test's binaries.
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_asyncprof"));
    let program = bin.parent().unwrap().join("examples/dies_after_start");
    let child = Command::new(&program)
        .env("ASYNCPROF_OUT", &path)
        // The panic message without a backtrace: symbolizing one can take the child past the
        // first snapshot's second on a loaded machine, and the test is about dying before it.
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Aborted by its panic: no destructor ran, no end record was written.
    assert_eq!(out.status.signal(), Some(SIGABRT), "{err}");
    assert!(err.contains("fails 10 ms after start"), "{err}");

    let report = asyncprof(&["report", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&report.stdout);
    assert_eq!(
        report.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(
        text.starts_with(&format!("dies_after_start (pid {pid}): 0.0s, Unknown tier")),
        "{text}"
    );
    // How far it got: recording started, nothing ran.
    assert!(
        text.contains(
            "warning: the run file holds only its header: recording started, but the process \
             stopped (or is still running) before any task was polled and before the first \
             snapshot"
        ),
        "{text}"
    );
    assert!(text.contains("no findings (0 stalls)"), "{text}");

    let json = asyncprof(&["report", path.to_str().unwrap(), "--json"]);
    assert_eq!(json.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["program"], "dies_after_start");
    assert_eq!(v["pid"], pid);
    assert_eq!(v["tier"], "unknown");
    assert_eq!(v["flavor"], "unknown");
    assert_eq!(
        (v["ended"].as_bool(), v["truncated"].as_bool()),
        (Some(false), Some(false))
    );
    // The settings it recorded with are there.
    assert_eq!(v["config"]["stall_threshold_us"], 10_000);
    std::fs::remove_file(&path).ok();
}
