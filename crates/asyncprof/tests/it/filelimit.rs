//! The run file's size limit (`Builder::max_file_size`, `ASYNCPROF_MAX_FILE_MB`): a service
//! that stalls again and again does not fill its disk. Past half the limit the run goes on in
//! a new file at the same path, the full one renamed to `NAME.old.run` (the one before it
//! removed): the two take at most the limit, the newest holds the latest stalls and, in its
//! final snapshot, the whole run's totals, and each part says where the run went on.

use std::path::Path;
use std::time::Duration;

use asyncprof_format::RunFile;

use crate::stalls::stall_line;
use crate::support::{serial, temp_run_path};

/// Stalls the service makes, one after another.
const STALLS: u64 = 60;
/// The limit: room for a few stalls' records in each part.
const LIMIT: u64 = 256 << 10;

/// The run's files after recording `STALLS` blocking stalls of 15 ms with the limit
/// `max_file_bytes`: the run file and the part before it, when there is one, with their
/// lengths.
struct Recorded {
    len: u64,
    run: RunFile,
    previous: Option<(u64, RunFile)>,
}

fn record_stalls(name: &str, max_file_bytes: u64) -> Recorded {
    let _one = serial();
    let path = temp_run_path(name);
    let old = path.with_extension("old.run");
    std::fs::remove_file(&old).ok();
    let guard = asyncprof::Profiler::builder()
        .out(&path)
        .flush_interval(Duration::from_millis(50))
        .max_file_size(max_file_bytes)
        .start()
        .unwrap();
    let rt = crate::support::multi_thread(&guard, 2, None);
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
    let read = |p: &Path| {
        let len = std::fs::metadata(p).ok()?.len();
        let run = asyncprof_format::read_path(p);
        std::fs::remove_file(p).ok();
        Some((len, run.unwrap()))
    };
    let (len, run) = read(&path).expect("the run file");
    Recorded {
        len,
        run,
        previous: read(&old),
    }
}

#[test]
fn past_its_size_limit_the_run_goes_on_in_a_new_file_and_the_two_take_at_most_the_limit() {
    let line = stall_line("limit");

    // Without a limit the same service writes one file well past it: the limit below is
    // what holds the disk's share back.
    let unlimited = record_stalls("nolimit", 0);
    assert!(unlimited.previous.is_none());
    assert!(
        unlimited.len > LIMIT * 2,
        "{} bytes with no limit",
        unlimited.len
    );
    assert_eq!(unlimited.run.header.part, 0);
    assert!(unlimited.run.continued.is_none());

    let limited = record_stalls("limit", LIMIT);
    let (old_len, old) = limited
        .previous
        .expect("the part before the run file's, renamed to NAME.old.run");
    let run = &limited.run;
    eprintln!(
        "no limit: {} bytes, {} stalls; limit {LIMIT}: part {} {} bytes ({} stalls), part {} \
         {old_len} bytes ({} stalls)",
        unlimited.len,
        unlimited.run.stalls.len(),
        run.header.part,
        limited.len,
        run.stalls.len(),
        old.header.part,
        old.stalls.len()
    );
    // Each part holds at most half the limit plus the one batch that started it (a 100 ms
    // cycle: a few 15 ms stalls' records), so the two stay well under twice the limit; with
    // no limit the same run took more than that.
    assert!(
        limited.len + old_len <= LIMIT + LIMIT / 2,
        "{} + {old_len} bytes, limit {LIMIT}",
        limited.len
    );
    assert!(run.header.part >= 2, "part {}", run.header.part);
    assert!(
        run.ended && run.continued.is_none(),
        "the newest part ends the run"
    );
    assert!(run.warnings.is_empty(), "{:?}", run.warnings);
    // The part before says where the run went on, and it is the newest part.
    let continued = old
        .continued
        .as_ref()
        .expect("the old part says it goes on");
    assert!(!old.ended);
    assert_eq!(old.header.part + 1, run.header.part);
    assert_eq!(continued.next_part, run.header.part);
    assert_eq!(
        Some(continued.next.as_str()),
        temp_run_path("limit").file_name().and_then(|n| n.to_str())
    );
    assert!(continued.previous.ends_with(".old.run"));
    // Nothing was lost: the parts hold the latest stalls, in order, the newest the very
    // last; the final snapshot's totals cover the whole run.
    let last = run.snapshot.as_ref().unwrap();
    assert_eq!(last.loss.unwritten_at_file_limit, 0, "{:?}", last.loss);
    assert!(
        last.runtime.tasks_spawned >= STALLS,
        "{} tasks spawned in the final snapshot",
        last.runtime.tasks_spawned
    );
    // (A stall still going when the part ended is in both: the newest has its end.)
    let max_old = old.stalls.iter().map(|s| s.id).max().unwrap_or(0);
    assert!(
        !run.stalls.is_empty() && run.stalls.iter().all(|s| s.id >= max_old),
        "the newest part's stalls {:?} follow the old part's {:?}",
        run.stalls.iter().map(|s| s.id).collect::<Vec<_>>(),
        old.stalls.iter().map(|s| s.id).collect::<Vec<_>>()
    );
    // The run counts its stalls in every snapshot: the newest part's final one counts the
    // whole run's, the old part's last one those up to its end, and with no limit the count
    // is the file's own ended stalls.
    let totals = |r: &RunFile| {
        r.snapshot
            .as_ref()
            .and_then(|n| n.runtime.stalls)
            .expect("the run's stall count in its snapshots")
    };
    let ended = |r: &RunFile| r.stalls.iter().filter(|s| !s.ongoing).count() as u64;
    let whole = totals(run);
    eprintln!(
        "the run's own stall count: {whole:?}; {} ended stalls in the newest part, {} in the one \
         before",
        ended(run),
        ended(&old)
    );
    let (all, lost) = (
        totals(&unlimited.run),
        &unlimited.run.snapshot.as_ref().unwrap().loss,
    );
    assert!(
        all.count == ended(&unlimited.run) || lost.dropped_records > 0,
        "the unlimited run counts {} stalls, its file has {} ({lost:?})",
        all.count,
        ended(&unlimited.run)
    );
    assert!(
        whole.count >= STALLS * 3 / 4 && whole.count > ended(run),
        "the whole run's {} stalls, {} in its newest part",
        whole.count,
        ended(run)
    );
    // (The old part's last snapshot can precede its last stall records: no lower bound.)
    assert!(totals(&old).count <= whole.count);
    assert!(
        whole.longest_ns >= 15_000_000 && whole.total_ns >= whole.count * 15_000_000,
        "{whole:?}"
    );
    let latest = unlimited.run.stalls.len() as u64;
    assert!(
        run.stalls.iter().map(|s| s.id).max() >= Some(latest.saturating_sub(STALLS / 4)),
        "the newest part ends near the run's last stall ({latest} in the unlimited run)"
    );
    for s in run.stalls.iter().chain(&old.stalls) {
        let culprit = s.culprit.as_ref().expect("a culprit");
        assert!(
            culprit
                .file
                .as_deref()
                .is_some_and(|f| f.ends_with("tests/it/filelimit.rs"))
                && culprit.line == Some(line),
            "{culprit}, expected filelimit.rs:{line}"
        );
    }
}
