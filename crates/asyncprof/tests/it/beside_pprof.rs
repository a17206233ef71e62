//! A service that runs pprof itself, beside asyncprof: its own CPU profile keeps working,
//! and asyncprof's stall stacks (sampled with their own signal, not SIGPROF) too.

use std::time::Duration;

use crate::support::{lock_recording, spin, temp_run_path};

#[inline(never)]
fn the_services_own_work(d: Duration) {
    spin(d);
}

#[test]
fn a_service_running_pprof_itself_keeps_its_profile_and_asyncprof_its_stalls() {
    let _one = lock_recording();
    // The service profiles itself from its start, as a service with a profiling endpoint
    // that is on would.
    let service_profiler = pprof::ProfilerGuardBuilder::default()
        .frequency(199)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .expect("the service's own pprof starts");
    let path = temp_run_path("service-pprof");
    // asyncprof is asked for its CPU profile too: pprof is the service's, so asyncprof goes
    // without one (and says so once on stderr) instead of taking it.
    let guard = asyncprof::Profiler::builder()
        .out(&path)
        .cpu_profile(99)
        .start()
        .unwrap();
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2);
    let rt = guard.instrument(&mut b).enable_all().build().unwrap();
    rt.block_on(async {
        tokio::spawn(async { the_services_own_work(Duration::from_millis(300)) })
            .await
            .unwrap();
        tokio::spawn(async {
            std::thread::sleep(Duration::from_millis(80)); // stall: beside-pprof
        })
        .await
        .unwrap();
    });
    drop(rt);
    drop(guard);

    let report = service_profiler
        .report()
        .build()
        .expect("the service's report");
    drop(service_profiler);
    let own: isize = report
        .data
        .iter()
        .filter(|(frames, _)| {
            frames
                .frames
                .iter()
                .flatten()
                .any(|s| s.name().contains("the_services_own_work"))
        })
        .map(|(_, n)| *n)
        .sum();
    // 300 ms at 199 Hz: about 60 samples; generous.
    assert!(
        own >= 15,
        "{own} samples of the service's own work in its own profile"
    );

    let run = asyncprof_format::read_path(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert!(run.ended);
    assert!(
        run.cpu_profile.is_none(),
        "asyncprof left pprof to the service"
    );
    let stall = crate::stalls::stall_at(&run, "beside-pprof");
    assert!(!stall.stacks.is_empty(), "{stall:#?}");
}
