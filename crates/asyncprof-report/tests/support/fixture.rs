//! A run file with a blocking-call stall, a stall no stack placed at a line, a backed-up queue
//! and chosen strings, built record by record so that every byte is known. Shared by the render
//! and hostile-input tests.

use asyncprof_format::{
    read_bytes, DepthPoint, Flavor, Frame, Header, Histogram, LocationStats, QueueKind, QueueStats,
    RunFile, RunWriter, RuntimeInfo, Snapshot, SourceLocation, StackSample, StageStats, StallClass,
    StallRecord, TaskStats, WorkerStats,
};

fn hist(values: &[(u64, u64)]) -> Histogram {
    let mut h = hdrhistogram::Histogram::<u64>::new_with_max(3_600_000_000_000, 2).unwrap();
    for &(v, n) in values {
        h.record_n(v, n).unwrap();
    }
    Histogram::from_hdr(&h)
}

/// A run with a blocking-call stall, a backed-up queue and hostile strings, built record by
/// record so that every byte is known.
pub(crate) fn fixture(task_name: &str, file: &str) -> RunFile {
    read_bytes(&fixture_bytes(task_name, file)).unwrap()
}

/// The fixture recorded with `stall_signal` set to `signal` (0: no signal).
pub(crate) fn fixture_with_signal(task_name: &str, file: &str, signal: i32) -> RunFile {
    let mut run = fixture(task_name, file);
    run.header.config.stall_signal = signal;
    run
}

/// The fixture's bytes.
pub(crate) fn fixture_bytes(task_name: &str, file: &str) -> Vec<u8> {
    let mut header = Header::new("fixture-service");
    header.pid = 4242;
    header.workers = 2;
    // SIGRTMIN+5, the default.
    header.config.stall_signal = 39;
    let mut bytes = Vec::new();
    let mut w = RunWriter::new(&mut bytes, &header).unwrap();
    let mut snap = Snapshot::default();
    snap.elapsed_ns = 3_000_000_000;
    snap.is_final = true;
    snap.runtime.polls = 12_000;
    snap.runtime.tasks_spawned = 40;
    snap.runtime.tasks_completed = 39;
    snap.runtime.tasks_alive = 1;
    // Stack samples: one failed, four not taken (the per-minute budget was spent).
    snap.loss.missed_samples = 1;
    snap.loss.skipped_samples = 4;
    snap.runtime.poll_ns = hist(&[(20_000, 11_000), (900_000, 950), (25_000_000, 50)]);
    snap.runtime.scheduled_ns = hist(&[(5_000, 11_000), (3_000_000, 1000)]);
    // Two runtimes, one worker each; the first is named by the user.
    for (id, name) in [(1, Some(format!("{task_name} api"))), (2, None)] {
        let mut rt = RuntimeInfo::default();
        rt.id = id;
        rt.name = name;
        rt.flavor = Flavor::MultiThread;
        rt.workers = 1;
        snap.runtimes.push(rt);
    }
    for i in 0..2 {
        let mut ws = WorkerStats::default();
        ws.index = i;
        ws.runtime = u64::from(i) + 1;
        ws.thread_name = format!("worker-{i}");
        ws.busy_ns = 1_000_000_000 + u64::from(i) * 500_000_000;
        ws.parked_ns = 2_000_000_000 - u64::from(i) * 500_000_000;
        ws.polls = 6000;
        snap.workers.push(ws);
    }
    let mut loc = LocationStats::default();
    loc.location = SourceLocation::new(file, 42, 5);
    loc.tasks_spawned = 40;
    loc.tasks_completed = 39;
    loc.polls = 12_000;
    loc.busy_ns = 2_000_000_000;
    loc.max_poll_ns = 25_000_000;
    loc.poll_ns = snap.runtime.poll_ns.clone();
    loc.scheduled_ns = snap.runtime.scheduled_ns.clone();
    snap.locations.push(loc);
    let mut task = TaskStats::default();
    task.id = 7;
    task.name = Some(task_name.to_string());
    task.location = SourceLocation::new(file, 42, 5);
    task.polls = 300;
    task.busy_ns = 900_000_000;
    task.poll_ns = hist(&[(25_000_000, 36), (10_000, 264)]);
    snap.tasks.push(task);
    let mut stage = StageStats::default();
    stage.name = format!("{task_name} item latency");
    stage.target = "latency".into();
    stage.count = 1000;
    stage.duration_ns = hist(&[(2_000_000, 990), (40_000_000, 10)]);
    snap.stages.push(stage);
    let mut q = QueueStats::default();
    q.id = 0;
    q.name = format!("{task_name} queue");
    q.kind = QueueKind::Bounded;
    q.location = SourceLocation::new(file, 30, 9);
    q.capacity = Some(64);
    q.instances = 1;
    q.live_instances = 1;
    q.enqueued = 5000;
    q.dequeued = 4936;
    q.depth = 64;
    q.max_depth = 64;
    q.samples = 30;
    q.full_samples = 27;
    q.send_wait_ns = hist(&[(1_500_000, 800), (6_000_000, 20)]);
    q.recv_wait_ns = hist(&[(50_000, 10)]);
    q.consumer = Some(SourceLocation::new(file, 51, 13));
    for i in 0..30u64 {
        let mut p = DepthPoint::default();
        p.elapsed_ns = i * 100_000_000;
        p.depth = (i * 8).min(64);
        p.waiting = u64::from(i > 8);
        q.points.push(p);
    }
    snap.queues.push(q);
    w.write_snapshot(&snap).unwrap();
    let mut stall = StallRecord::default();
    stall.id = 1;
    stall.thread_name = "worker-1".into();
    stall.worker = 1;
    stall.runtime = 2;
    stall.task_id = 7;
    stall.task_location = Some(SourceLocation::new(file, 42, 5));
    stall.start_ns = 1_200_000_000;
    stall.duration_ns = 25_000_000;
    stall.class = StallClass::Blocking;
    stall.syscall = Some("clock_nanosleep".into());
    stall.on_cpu_ratio = 0.0;
    let frames = vec![
        Frame::new("clock_nanosleep", None, None),
        Frame::new(
            "std::thread::sleep",
            Some("/rustc/x/library/std/src/thread/mod.rs".into()),
            Some(10),
        ),
        Frame::new(
            format!("handle<{task_name}>"),
            Some(file.to_string()),
            Some(44),
        ),
        Frame::new("tokio::runtime::task::harness::poll", None, None),
    ];
    let mut sample = StackSample::default();
    sample.count = 3;
    sample.frames = frames.clone();
    stall.stacks = vec![sample];
    stall.primitive = Some(frames[1].clone());
    stall.culprit = Some(frames[2].clone());
    w.write_stall(&stall).unwrap();
    // A stall of another task on CPU, with no stack (past the sampling budget): evidence about
    // that task, not a finding.
    let mut unsampled = StallRecord::default();
    unsampled.id = 2;
    unsampled.thread_name = "worker-0".into();
    unsampled.worker = 0;
    unsampled.runtime = 1;
    unsampled.task_id = 9;
    unsampled.task_location = Some(SourceLocation::new(file, 60, 9));
    unsampled.start_ns = 2_000_000_000;
    unsampled.duration_ns = 40_000_000;
    unsampled.class = StallClass::CpuBound;
    unsampled.on_cpu_ratio = 1.0;
    unsampled.cpu_share = Some(0.97);
    w.write_stall(&unsampled).unwrap();
    w.write_end().unwrap();
    bytes
}
