//! Memory stays bounded however many tasks a service spawns: completed tasks fold into their
//! spawn location.

use crate::support::{location, marked_line, record, Flavor};

const TASKS: u64 = 1_000_000;
const BATCH: u64 = 1_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[test]
fn a_million_short_tasks_fold_into_their_location() {
    crate::support::retry_if_disturbed(|| {
        let before = rss_bytes();
        let line = marked_line(file!(), "million");
        let (run, footprint) = record("million", Flavor::MultiThread(2), || async {
            for _ in 0..TASKS / BATCH {
                let handles: Vec<_> = (0..BATCH)
                    // spawn: million
                    .map(|i| tokio::spawn(async move { std::hint::black_box(i) }))
                    .collect();
                for h in handles {
                    h.await.unwrap();
                }
            }
        });
        let grown = rss_bytes().saturating_sub(before);
        let loc = location(&run, file!(), line);
        assert_eq!(loc.tasks_spawned, TASKS);
        assert_eq!(loc.tasks_completed, TASKS);
        assert_eq!(loc.polls, TASKS);
        // Nothing is kept per completed task: the table holds no task, its size is fixed.
        assert_eq!(footprint.tasks_tracked, 0);
        assert_eq!(footprint.task_slots, asyncprof::DEFAULT_TASK_CAPACITY);
        eprintln!(
            "{footprint:?}, RSS grew {} KiB",
            rss_bytes().saturating_sub(before) >> 10
        );
        assert!(footprint.table_bytes < 8 << 20, "{footprint:?}");
        let snap = run.snapshot.unwrap();
        assert_eq!(snap.loss.untracked_tasks, 0);
        assert_eq!(snap.runtime.tasks_alive, 0);
        // Generous: tables, histograms and tokio's own allocator caches, never 1M task records.
        assert!(grown < 96 << 20, "RSS grew {} MiB", grown >> 20);
    });
}

/// Threads come and go: one that ran an instrumented runtime of its own (a current-thread
/// runtime's `block_on`, which no tokio hook sees stop) gives its worker entry back when it
/// ends. 300 such threads one after the other, more than the table's 256 entries: none is
/// left unwatched, and a stall on the last one is recorded at its line.
#[test]
fn threads_that_end_give_their_worker_entry_back() {
    crate::support::retry_if_disturbed(|| {
        let (run, ()) = crate::support::record_guarded("threads-come-and-go", |guard| {
            for _ in 0..299 {
                crate::support::task_on_a_new_thread(guard, || {});
            }
            crate::support::task_on_a_new_thread(guard, || {
                std::thread::sleep(std::time::Duration::from_millis(50)); // stall: last-thread
            });
        });
        let loss = &run.snapshot.as_ref().unwrap().loss;
        assert_eq!(loss.untracked_threads, 0, "{loss:#?}");
        crate::stalls::stall_at(&run, "last-thread");
    });
}
