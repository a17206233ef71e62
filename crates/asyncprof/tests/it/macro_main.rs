//! `#[asyncprof::main]` runs an async fn on an instrumented runtime and writes a run file.

#[asyncprof::main(flavor = "multi_thread", worker_threads = 2)]
async fn service() -> u64 {
    let mut total = 0;
    for i in 0..10u64 {
        total += tokio::spawn(async move { i * 2 }).await.unwrap();
    }
    total
}

#[test]
fn attribute_records_the_service() {
    let _serial = crate::support::serial();
    let path = crate::support::temp_run_path("macro");
    // Only this test reads ASYNCPROF_OUT; the others name their run file explicitly.
    std::env::set_var("ASYNCPROF_OUT", &path);
    assert_eq!(service(), 90);
    std::env::remove_var("ASYNCPROF_OUT");
    let run = asyncprof_format::read_path(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert!(run.ended);
    assert_eq!(run.header.workers, 2);
    assert_eq!(run.header.flavor, asyncprof_format::Flavor::MultiThread);
    let snap = run.snapshot.unwrap();
    assert_eq!(snap.runtime.tasks_spawned, 10);
    assert_eq!(snap.runtime.tasks_completed, 10);
}
