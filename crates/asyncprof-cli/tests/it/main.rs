//! The `asyncprof` command end to end: a real recording, then `report`, and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) fn asyncprof(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_asyncprof"))
        .args(args)
        .output()
        .expect("the asyncprof binary runs")
}

pub(crate) fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("asyncprof-cli-{name}-{}.run", std::process::id()))
}

/// One recording per process at a time.
pub(crate) static RECORDING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Record a small workload with a known busy task into `path`.
fn record(path: &Path) {
    let _one = RECORDING.lock().unwrap_or_else(|p| p.into_inner());
    let guard = asyncprof::Profiler::builder().out(path).start().unwrap();
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2);
    let rt = guard.instrument(&mut b).enable_all().build().unwrap();
    rt.block_on(async {
        let busy = tokio::spawn(async {
            for _ in 0..3 {
                let t = std::time::Instant::now();
                while t.elapsed() < std::time::Duration::from_millis(3) {}
                tokio::task::yield_now().await;
            }
        });
        busy.await.unwrap();
    });
    drop(rt);
    drop(guard);
}

#[test]
fn report_json_lists_locations_with_quantiles_and_loss() {
    let path = temp("json");
    record(&path);
    let out = asyncprof(&["report", path.to_str().unwrap(), "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tier"], "hooks");
    assert_eq!(v["flavor"], "multi-thread");
    assert_eq!(v["workers"], 2);
    assert_eq!(v["ended"], true);
    assert_eq!(v["loss"]["dropped_records"], 0);
    let locs = v["locations"].as_array().unwrap();
    let busy = locs
        .iter()
        .find(|l| l["file"].as_str().unwrap().ends_with("tests/it/main.rs"))
        .expect("the busy task's spawn location");
    assert_eq!(busy["polls"], 4);
    let p99 = busy["poll"]["p99_ns"].as_u64().unwrap();
    assert!((2_000_000..30_000_000).contains(&p99), "p99 {p99}");
    assert!(busy["scheduled"]["p50_ns"].is_u64());
    // Text output names the same location.
    let text = asyncprof(&["report", path.to_str().unwrap()]);
    assert!(text.status.success());
    assert!(String::from_utf8_lossy(&text.stdout).contains("tests/it/main.rs"));
    std::fs::remove_file(&path).ok();
}

#[test]
fn truncated_run_file_is_reported_with_a_warning() {
    let path = temp("trunc");
    record(&path);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
    let out = asyncprof(&["report", path.to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["truncated"], true);
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated at byte"));
    std::fs::remove_file(&path).ok();
}

#[test]
fn damaged_run_file_is_one_clear_error() {
    let path = temp("damaged");
    record(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let out = asyncprof(&["report", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: cannot read run file"), "{err}");
    assert!(err.contains("damaged at byte"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    std::fs::remove_file(&path).ok();
}

#[test]
fn missing_file_and_bad_flags_exit_2() {
    let out = asyncprof(&["report", "/nonexistent/asyncprof.run"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read run file /nonexistent/asyncprof.run"),
        "{err}"
    );
    let out = asyncprof(&["report", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = asyncprof(&["bench", "no-such-pipeline"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown pipeline"));
}

#[test]
fn unwritable_output_is_one_clear_error() {
    let path = temp("unwritable");
    record(&path);
    // A folder inside a regular file cannot be created, not even by root.
    let blocker = temp("unwritable-blocker");
    std::fs::write(&blocker, b"a file").unwrap();
    let target = blocker.join("dir/out.txt");
    let out = asyncprof(&[
        "report",
        path.to_str().unwrap(),
        "-o",
        target.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot create folder"), "{err}");
    assert!(err.contains(blocker.to_str().unwrap()), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    std::fs::remove_file(&blocker).ok();
    std::fs::remove_file(&path).ok();
}

mod bench;
mod died;
mod leftovers;
mod many;
mod prometheus;
mod run;
mod top;
