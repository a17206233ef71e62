//! Scheduling delay: a task made ready while its worker is busy with another.

use std::time::Duration;

use crate::support::{location, marked_line, record, spin, Flavor};

const BUSY: Duration = Duration::from_millis(20);

fn check_delay(flavor: Flavor, name: &str) {
    let line = marked_line(file!(), "child");
    let (run, _) = record(name, flavor, || async {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            // The spawned task is ready at once, but this poll holds the only worker for
            // 20 ms: its first poll waits that long.
            // spawn: child
            let child = tokio::spawn(async {});
            spin(BUSY);
            tx.send(child).ok();
        })
        .await
        .unwrap();
        rx.await.unwrap().await.unwrap();
    });
    let loc = location(&run, file!(), line);
    assert_eq!(loc.scheduled_ns.count(), 1);
    let delay = loc.scheduled_ns.max();
    assert!(
        delay >= BUSY.as_nanos() as u64 * 3 / 4 && delay < BUSY.as_nanos() as u64 * 5,
        "spawn-to-first-poll delay {:.3} ms, expected about 20 ms",
        delay as f64 / 1e6
    );
    assert_eq!(
        run.header.config.schedule_source,
        asyncprof_format::ScheduleSource::SpawnToFirstPoll
    );
}

#[test]
fn delay_while_worker_busy_current_thread() {
    crate::support::retry_if_disturbed(|| {
        check_delay(Flavor::CurrentThread, "sched-ct");
    });
}

#[test]
fn delay_while_worker_busy_multi_thread() {
    crate::support::retry_if_disturbed(|| {
        check_delay(Flavor::MultiThread(1), "sched-mt");
    });
}
