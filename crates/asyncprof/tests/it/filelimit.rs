//! The run file's size limit (`Builder::max_file_size`, `ASYNCPROF_MAX_FILE_MB`): a service
//! that stalls again and again fills its run file up to the limit and no further. The file
//! keeps the run's beginning (its first stalls, with their stacks), counts what it did not
//! write, and still ends with the final snapshot, whose totals cover the whole run.

use std::time::Duration;

use asyncprof_format::{encode_frame, end_frame, RecordKind, RunFile};

use crate::stalls::stall_line;
use crate::support::{serial, temp_run_path};

/// Stalls the service makes, one after another.
const STALLS: u64 = 40;
/// The limit: room for the header, a few snapshots and a few stalls' records.
const LIMIT: u64 = 64 << 10;

/// Record `STALLS` blocking stalls of 15 ms with the run file limited to `max_file_bytes`;
/// the file's length and its contents.
fn record_stalls(name: &str, max_file_bytes: u64) -> (u64, RunFile) {
    let _one = serial();
    let path = temp_run_path(name);
    let guard = asyncprof::Profiler::builder()
        .out(&path)
        .flush_interval(Duration::from_millis(50))
        .max_file_size(max_file_bytes)
        .start()
        .unwrap();
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2);
    let rt = guard.instrument(&mut b).enable_all().build().unwrap();
    rt.block_on(async {
        for _ in 0..STALLS {
            tokio::spawn(async {
                std::thread::sleep(Duration::from_millis(15)); // stall: limit
            })
            .await
            .unwrap();
        }
    });
    drop(rt);
    drop(guard);
    let len = std::fs::metadata(&path).unwrap().len();
    let run = asyncprof_format::read_path(&path).unwrap();
    std::fs::remove_file(&path).ok();
    (len, run)
}

/// The bytes of what recording wrote when it stopped: the final snapshot and the end record.
fn final_batch_len(run: &RunFile) -> u64 {
    let snapshot = run.snapshot.as_ref().expect("a final snapshot");
    assert!(snapshot.is_final, "the last snapshot is the final one");
    (encode_frame(RecordKind::Snapshot, snapshot).unwrap().len() + end_frame().len()) as u64
}

#[test]
fn the_run_file_stops_at_its_size_limit_and_keeps_the_beginning_and_the_totals() {
    let line = stall_line("limit");

    // Without a limit the same service writes well past it: the limit below is what holds
    // its file back.
    let (unlimited_len, unlimited) = record_stalls("nolimit", 0);
    assert!(
        unlimited_len > LIMIT + final_batch_len(&unlimited) + 4096,
        "{unlimited_len} bytes with no limit"
    );
    let loss = &unlimited.snapshot.as_ref().unwrap().loss;
    assert_eq!(loss.unwritten_at_file_limit, 0);
    assert!(
        unlimited.stalls.len() as u64 >= STALLS * 3 / 4,
        "{} stalls recorded of {STALLS}",
        unlimited.stalls.len()
    );

    let (len, run) = record_stalls("limit", LIMIT);
    // The limit, plus the final batch (1 KiB of slack for a snapshot encoded again here).
    let most = LIMIT + final_batch_len(&run) + 1024;
    assert!(len <= most, "{len} bytes, limit {LIMIT}, at most {most}");
    assert!(run.ended, "the end record is written past the limit");
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
    let last = run.snapshot.as_ref().unwrap();
    assert!(
        last.loss.unwritten_at_file_limit > 0,
        "what was not written is counted: {:?}",
        last.loss
    );
    // The final snapshot's totals cover the whole run, after the limit too.
    assert!(
        last.runtime.tasks_spawned >= STALLS,
        "{} tasks spawned in the final snapshot",
        last.runtime.tasks_spawned
    );
    // The file holds the first stalls, at their line, and not all of them.
    assert!(
        !run.stalls.is_empty() && (run.stalls.len() as u64) < STALLS * 3 / 4,
        "{} stalls in a file of {len} bytes",
        run.stalls.len()
    );
    let first = &run.stalls[0];
    let culprit = first
        .culprit
        .as_ref()
        .expect("the first stall has a culprit");
    assert!(
        culprit
            .file
            .as_deref()
            .is_some_and(|f| f.ends_with("tests/it/filelimit.rs"))
            && culprit.line == Some(line),
        "{culprit}, expected filelimit.rs:{line}"
    );
}
