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

/// The standard library's sources, as the symbolizer names them.
const STD: &str = "/rustc/5980/library/std/src";
/// tokio's sources in cargo's registry.
const TOKIO: &str =
    "/home/dev/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src";

/// A tokio multi-thread worker's frames from thread start-up to the poll of a task, outermost
/// first, as a real stack shows them.
const WORKER: &[(&str, &str)] = &[
    ("clone3", "./misc/../sysdeps/unix/sysv/linux/x86_64/clone3.S"),
    ("start_thread", "./nptl/pthread_create.c"),
    ("<std::sys::thread::unix::Thread>::new::thread_start", "std:sys/thread/unix.rs"),
    ("<alloc::boxed::Box<dyn core::ops::function::FnOnce<(), Output = ()> + core::marker::Send> as core::ops::function::FnOnce<()>>::call_once", "core:ops/function.rs"),
    ("std::thread::lifecycle::spawn_unchecked::{{closure}}", "std:thread/lifecycle.rs"),
    ("std::panic::catch_unwind", "std:panic.rs"),
    ("__rust_try", ""),
    ("std::panicking::catch_unwind::do_call", "std:panicking.rs"),
    ("std::sys::backtrace::__rust_begin_short_backtrace", "std:sys/backtrace.rs"),
    ("tokio::runtime::blocking::pool::Spawner::spawn_thread::{{closure}}", "tokio:runtime/blocking/pool.rs"),
    ("tokio::runtime::blocking::pool::Inner::run", "tokio:runtime/blocking/pool.rs"),
    ("tokio::runtime::task::raw::RawTask::poll", "tokio:runtime/task/raw.rs"),
    ("tokio::runtime::task::harness::Harness<T,S>::poll", "tokio:runtime/task/harness.rs"),
    ("<tokio::runtime::blocking::task::BlockingTask<T> as core::future::future::Future>::poll", "tokio:runtime/blocking/task.rs"),
    ("tokio::runtime::scheduler::multi_thread::worker::Launch::launch::{{closure}}", "tokio:runtime/scheduler/multi_thread/worker.rs"),
    ("tokio::runtime::scheduler::multi_thread::worker::run", "tokio:runtime/scheduler/multi_thread/worker.rs"),
    ("tokio::runtime::context::runtime::enter_runtime", "tokio:runtime/context/runtime.rs"),
    ("tokio::runtime::context::set_scheduler", "tokio:runtime/context.rs"),
    ("std::thread::local::LocalKey<T>::with", "std:thread/local.rs"),
    ("tokio::runtime::context::scoped::Scoped<T>::set", "tokio:runtime/context/scoped.rs"),
    ("tokio::runtime::scheduler::multi_thread::worker::Context::run", "tokio:runtime/scheduler/multi_thread/worker.rs"),
    ("tokio::runtime::scheduler::multi_thread::worker::Context::run_task", "tokio:runtime/scheduler/multi_thread/worker.rs"),
    ("tokio::task::coop::budget", "tokio:task/coop/mod.rs"),
    ("tokio::runtime::task::LocalNotified<S>::run", "tokio:runtime/task/mod.rs"),
    ("tokio::runtime::task::raw::RawTask::poll", "tokio:runtime/task/raw.rs"),
    ("tokio::runtime::task::harness::Harness<T,S>::poll", "tokio:runtime/task/harness.rs"),
    ("tokio::runtime::task::harness::poll_future", "tokio:runtime/task/harness.rs"),
    ("std::panic::catch_unwind", "std:panic.rs"),
    ("<core::panic::unwind_safe::AssertUnwindSafe<F> as core::ops::function::FnOnce<()>>::call_once", "core:panic/unwind_safe.rs"),
    ("tokio::runtime::task::core::Core<T,S>::poll", "tokio:runtime/task/core.rs"),
    ("tokio::loom::std::unsafe_cell::UnsafeCell<T>::with_mut", "tokio:loom/std/unsafe_cell.rs"),
    ("tokio::runtime::task::core::Core<T,S>::poll::{{closure}}", "tokio:runtime/task/core.rs"),
];

/// A process's main thread from its entry point to the program's `main`.
const MAIN: &[(&str, &str)] = &[
    ("_start", ""),
    ("__libc_start_main_impl", "./csu/../csu/libc-start.c"),
    (
        "__libc_start_call_main",
        "./csu/../sysdeps/nptl/libc_start_call_main.h",
    ),
    ("main", ""),
    ("std::rt::lang_start_internal", "std:rt.rs"),
    ("std::rt::lang_start::{{closure}}", "std:rt.rs"),
    (
        "std::sys::backtrace::__rust_begin_short_backtrace",
        "std:sys/backtrace.rs",
    ),
    (
        "core::ops::function::FnOnce::call_once",
        "core:ops/function.rs",
    ),
];

/// A current-thread runtime's frames from `Runtime::block_on` to the poll of a task.
const BLOCK_ON: &[(&str, &str)] = &[
    (
        "tokio::runtime::runtime::Runtime::block_on",
        "tokio:runtime/runtime.rs",
    ),
    (
        "tokio::runtime::scheduler::current_thread::CurrentThread::block_on",
        "tokio:runtime/scheduler/current_thread/mod.rs",
    ),
    (
        "tokio::runtime::context::runtime::enter_runtime",
        "tokio:runtime/context/runtime.rs",
    ),
    (
        "tokio::runtime::scheduler::current_thread::CoreGuard::block_on",
        "tokio:runtime/scheduler/current_thread/mod.rs",
    ),
    (
        "std::thread::local::LocalKey<T>::try_with",
        "std:thread/local.rs",
    ),
    (
        "tokio::runtime::scheduler::current_thread::Context::run_task",
        "tokio:runtime/scheduler/current_thread/mod.rs",
    ),
    ("tokio::task::coop::with_budget", "tokio:task/coop/mod.rs"),
    (
        "tokio::runtime::task::raw::poll",
        "tokio:runtime/task/raw.rs",
    ),
    (
        "tokio::runtime::task::harness::poll_future",
        "tokio:runtime/task/harness.rs",
    ),
    (
        "tokio::runtime::task::core::Core<T,S>::poll::{{closure}}",
        "tokio:runtime/task/core.rs",
    ),
];

/// `(function, file)` pairs as frames, `std:`, `core:` and `tokio:` standing for those
/// sources; the line is made up.
fn plumbing(parts: &[(&str, &str)]) -> Vec<Frame> {
    parts
        .iter()
        .enumerate()
        .map(|(i, &(function, file))| {
            let file = if let Some(p) = file.strip_prefix("std:") {
                format!("{STD}/{p}")
            } else if let Some(p) = file.strip_prefix("core:") {
                format!("{}/{p}", STD.replace("/std/", "/core/"))
            } else if let Some(p) = file.strip_prefix("tokio:") {
                format!("{TOKIO}/{p}")
            } else {
                file.to_string()
            };
            match file.is_empty() {
                true => Frame::new(function, None, None),
                false => Frame::new(function, Some(file), Some(100 + i as u32)),
            }
        })
        .collect()
}

/// A frame of the program's code.
fn own(function: &str, line: u32) -> Vec<Frame> {
    vec![Frame::new(
        function,
        Some("src/service.rs".into()),
        Some(line),
    )]
}

/// A sampled stack from its parts, outermost first.
fn sample(count: u32, outer_first: Vec<Vec<Frame>>) -> StackSample {
    let mut s = StackSample::default();
    s.count = count;
    s.frames = outer_first.concat();
    s.frames.reverse();
    s
}

/// The fixture with stalls whose stacks are as long as real ones: a task on a multi-thread
/// worker asleep in `std::thread::sleep` (parsing, in a quarter of its samples), a task on a
/// current-thread runtime that `main` runs with `block_on`, computing, and a task whose spawn
/// location is not known, waiting for a lock. `extra` names one more frame of the program's
/// code in the sleeping task's stack (a hostile name, say). With a CPU profile of a worker,
/// the main thread and a thread of asyncprof's.
pub(crate) fn flame_fixture(extra: Option<&str>) -> RunFile {
    let mut run = fixture("ingest", "src/service.rs");
    let sleep = plumbing(&[
        ("std::thread::sleep", "std:thread/functions.rs"),
        ("std::sys::thread::unix::sleep", "std:sys/thread/unix.rs"),
        ("clock_nanosleep", ""),
    ]);
    let extra = extra.map_or_else(Vec::new, |name| own(name, 81));
    let mut asleep = run.stalls[0].clone();
    let handle = || own("service::handle::{{closure}}", 44);
    asleep.stacks = vec![
        sample(
            3,
            vec![
                plumbing(WORKER),
                handle(),
                own("service::lookup", 80),
                extra,
                sleep,
            ],
        ),
        sample(
            1,
            vec![plumbing(WORKER), handle(), own("service::parse", 51)],
        ),
    ];
    let mut computing = run.stalls[1].clone();
    computing.thread_name = "main".into();
    let main_thread = || {
        vec![
            plumbing(MAIN),
            own("service::main", 9),
            plumbing(BLOCK_ON),
            own("service::crunch::{{closure}}", 61),
            own("service::checksum", 70),
        ]
    };
    computing.stacks = vec![sample(4, main_thread())];
    let mut waiting = run.stalls[0].clone();
    waiting.id = 3;
    waiting.task_id = 11;
    waiting.task_location = None;
    waiting.start_ns = 2_500_000_000;
    waiting.duration_ns = 10_000_000;
    let lock = plumbing(&[
        (
            "std::sync::poison::mutex::Mutex<T>::lock",
            "std:sync/poison/mutex.rs",
        ),
        (
            "std::sys::sync::mutex::futex::Mutex::lock_contended",
            "std:sys/sync/mutex/futex.rs",
        ),
        ("syscall", ""),
    ]);
    waiting.stacks = vec![sample(
        2,
        vec![
            plumbing(WORKER),
            own("service::serve::{{closure}}", 90),
            lock,
        ],
    )];
    run.stalls = vec![asleep, computing, waiting];
    // pprof names functions with their symbol hash and no file.
    let line = |thread: &str, parts: Vec<Vec<Frame>>, n: u64| {
        let names = parts
            .concat()
            .iter()
            .map(|f| format!(";{}::h0123456789abcdef", f.function))
            .collect::<String>();
        format!("{thread}{names} {n}\n")
    };
    let mut cpu = asyncprof_format::CpuProfile::default();
    cpu.hz = 99;
    cpu.samples = 70;
    cpu.folded = line(
        "tokio-runtime-worker",
        vec![plumbing(WORKER), handle(), own("service::parse", 51)],
        40,
    ) + &line("main", main_thread(), 25)
        + &line(
            "asyncprof-aggregator",
            vec![own("asyncprof::aggregator::run", 1)],
            5,
        );
    run.cpu_profile = Some(cpu);
    run
}
