//! A run file that cannot be written (the disk is full: `/dev/full` refuses every write): the
//! service runs its work at the same pace, asyncprof says so once on stderr, and it stops
//! cleanly. A disk that fills up in the middle of a record and has room again later: the
//! file still reads to its end.

use std::time::{Duration, Instant};

const CHILD_ENV: &str = "ASYNCPROF_IT_DISKFULL_CHILD";

/// Runs only as a child of the test below: a fixed yield-heavy workload recorded to the path
/// in the environment; prints its wall time.
#[test]
fn child_workload_recorded_to_the_given_path() {
    let _serial = crate::support::serial();
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let guard = asyncprof::Profiler::builder()
        .out(path)
        .flush_interval(Duration::from_millis(50))
        .start()
        .unwrap();
    let rt = crate::support::multi_thread(&guard, 2, None);
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        rt.block_on(async {
            let tasks: Vec<_> = (0..1000)
                .map(|_| {
                    tokio::spawn(async {
                        for _ in 0..500 {
                            tokio::task::yield_now().await;
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        best = best.min(start.elapsed());
        // Let the recorder flush between rounds.
        std::thread::sleep(Duration::from_millis(60));
    }
    drop(rt);
    drop(guard);
    println!("best_us={}", best.as_micros());
}

fn run_child(path: &str) -> (u128, String) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "diskfull::child_workload_recorded_to_the_given_path",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let us = stdout
        .split("best_us=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no timing in {stdout}"))
        .parse()
        .unwrap();
    (us, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_full_disk_costs_the_service_nothing_and_is_said_once() {
    let _serial = crate::support::serial();
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let normal = crate::support::temp_run_path("diskfull-normal");
    let (ok_us, ok_err) = run_child(normal.to_str().unwrap());
    let (full_us, full_err) = run_child("/dev/full");
    std::fs::remove_file(&normal).ok();
    eprintln!("best of five: {ok_us} µs writing a run file, {full_us} µs to a full disk");
    assert!(!ok_err.contains("cannot write run file"), "{ok_err}");
    let warnings = full_err.matches("cannot write run file /dev/full").count();
    assert_eq!(warnings, 1, "said exactly once: {full_err}");
    assert!(full_err.contains("dropped and counted"), "{full_err}");
    // Same pace, within a generous factor for a noisy machine (best of five rounds each).
    assert!(
        full_us < ok_us * 2 + 20_000,
        "recording to a full disk took {full_us} µs against {ok_us} µs"
    );
}

const FILLS_ENV: &str = "ASYNCPROF_IT_DISK_FILLS_CHILD";
const START_ENV: &str = "ASYNCPROF_IT_DISK_FULL_AT_START_CHILD";

/// Time for the recorder to write what came before.
const SETTLE: Duration = Duration::from_millis(250);

/// The process's file size limit (soft), as a full disk: writes past it fail (EFBIG), a
/// write across it is cut short.
fn limit_file_size(bytes: libc::rlim_t) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut lim), 0);
        lim.rlim_cur = bytes.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

/// In a child: a write past the file size limit fails (EFBIG) instead of killing the process.
fn survive_the_file_size_limit() {
    // SAFETY: ignoring SIGXFSZ installs no handler; nothing runs on the signal.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// In a child: recording to `path`, snapshots every 50 ms, and a runtime of 2 workers.
fn recording(path: &str) -> (asyncprof::Guard, tokio::runtime::Runtime) {
    let guard = asyncprof::Profiler::builder()
        .out(path)
        .flush_interval(Duration::from_millis(50))
        .start()
        .unwrap();
    let rt = crate::support::multi_thread(&guard, 2, None);
    (guard, rt)
}

/// Run the child test `test` with `env` set to a fresh run file's path; its run file (read,
/// then removed) and its stderr.
fn child_run(
    test: &str,
    env: &str,
    name: &str,
) -> (asyncprof_format::Result<asyncprof_format::RunFile>, String) {
    let path = crate::support::temp_run_path(name);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, &path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("done"));
    let run = asyncprof_format::read_path(&path);
    std::fs::remove_file(&path).ok();
    (run, stderr)
}

/// The run's stalls at the line marked `// stall: MARKER`.
fn stalls_at(run: &asyncprof_format::RunFile, marker: &str) -> usize {
    let line = crate::stalls::stall_line(marker);
    run.stalls
        .iter()
        .filter(|s| s.culprit.as_ref().and_then(|c| c.line) == Some(line))
        .count()
}

/// Three blocking stalls of 15 ms, one after another, each in `stall` (whose line is marked
/// `// stall: MARKER`, never inlined and not ending in a tail call, so that the stall's line is
/// its own); then time for the recorder to write them.
async fn three_stalls(stall: fn()) {
    for _ in 0..3 {
        tokio::spawn(async move { stall() }).await.unwrap();
    }
    tokio::time::sleep(SETTLE).await;
}

#[inline(never)]
fn before_room() {
    std::thread::sleep(Duration::from_millis(15)); // stall: before-room
    std::hint::black_box(()); // not a tail call: this function keeps its frame
}

#[inline(never)]
fn after_room() {
    std::thread::sleep(Duration::from_millis(15)); // stall: after-room
    std::hint::black_box(()); // not a tail call: this function keeps its frame
}

#[inline(never)]
fn room_at_last() {
    std::thread::sleep(Duration::from_millis(15)); // stall: room-at-last
    std::hint::black_box(()); // not a tail call: this function keeps its frame
}

/// A child's recording ends: the runtime, then the guard (which writes the run's end).
fn finish(guard: asyncprof::Guard, rt: tokio::runtime::Runtime) {
    drop(rt);
    drop(guard);
    println!("done");
}

/// Runs only as a child of the test below: records a few stalls, then the disk "fills up"
/// (a file size limit a little past the file's end), more stalls are refused, then it has
/// room again and more stalls are recorded.
#[test]
fn child_disk_fills_up_then_has_room_again() {
    let _serial = crate::support::serial();
    let Ok(path) = std::env::var(FILLS_ENV) else {
        return;
    };
    survive_the_file_size_limit();
    let (guard, rt) = recording(&path);
    rt.block_on(three_stalls(before_room));
    let len = std::fs::metadata(&path).unwrap().len();
    // Room for a snapshot or two, not for a stall's record: the first stall below is cut
    // short across the limit.
    limit_file_size(len + 3000);
    rt.block_on(three_stalls(before_room));
    limit_file_size(libc::RLIM_INFINITY);
    rt.block_on(three_stalls(after_room));
    finish(guard, rt);
}

#[test]
fn a_disk_that_fills_up_and_frees_again_leaves_a_file_that_reads_to_its_end() {
    let _serial = crate::support::serial();
    if std::env::var(FILLS_ENV).is_ok() || std::env::var(START_ENV).is_ok() {
        return;
    }
    let (run, stderr) = child_run(
        "diskfull::child_disk_fills_up_then_has_room_again",
        FILLS_ENV,
        "disk-fills",
    );
    assert_eq!(
        stderr.matches("cannot write run file").count(),
        1,
        "said once: {stderr}"
    );
    let run = run.expect("the whole file reads, past the records the full disk refused");
    assert!(run.ended, "the end record is there");
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
    let loss = &run.snapshot.as_ref().unwrap().loss;
    assert!(loss.dropped_records > 0, "the refused records are counted");
    let after = stalls_at(&run, "after-room");
    assert!(
        after >= 2,
        "{after} of the 3 stalls after the disk had room again: {:?}",
        run.stalls
            .iter()
            .map(|s| s.culprit.as_ref().map(|c| c.to_string()))
            .collect::<Vec<_>>()
    );
}

/// Runs only as a child of the test below: the disk is full when recording starts (a file
/// size limit of 10 bytes: the preamble and header are refused), then it has room.
#[test]
fn child_disk_full_at_start_then_has_room() {
    let _serial = crate::support::serial();
    let Ok(path) = std::env::var(START_ENV) else {
        return;
    };
    survive_the_file_size_limit();
    limit_file_size(10);
    // `start` returns once the header's write was tried (and refused).
    let (guard, rt) = recording(&path);
    limit_file_size(libc::RLIM_INFINITY);
    rt.block_on(three_stalls(room_at_last));
    finish(guard, rt);
}

#[test]
fn a_disk_full_when_recording_starts_still_gives_a_file_that_starts_as_a_run_file() {
    let _serial = crate::support::serial();
    if std::env::var(START_ENV).is_ok() || std::env::var(FILLS_ENV).is_ok() {
        return;
    }
    let (run, stderr) = child_run(
        "diskfull::child_disk_full_at_start_then_has_room",
        START_ENV,
        "disk-full-at-start",
    );
    assert!(stderr.contains("cannot write run file"), "{stderr}");
    // The refused header goes before the first records the disk took.
    let run = run.expect("the file starts with the preamble and header");
    assert!(
        run.header.program.starts_with("it"),
        "{:?}",
        run.header.program
    );
    assert!(run.ended);
    let stalls = stalls_at(&run, "room-at-last");
    assert!(stalls >= 2, "{stalls} of the 3 stalls");
}
