//! A service that runs pprof itself, beside asyncprof: its own CPU profile keeps working,
//! and asyncprof's stall stacks (sampled with their own signal, not SIGPROF) too.

use std::cell::RefCell;
use std::time::Duration;

use crate::support::{record_with, spin, Flavor};

#[inline(never)]
fn the_services_own_work(d: Duration) {
    spin(d);
}

#[test]
fn a_service_running_pprof_itself_keeps_its_profile_and_asyncprof_its_stalls() {
    crate::support::retry_if_disturbed(|| {
        // The service's profiler lives only while the recording lock is held (started in the
        // configure step, reported and dropped at the end of the workload), so no other test's CPU
        // profile finds pprof taken.
        let service_profiler = RefCell::new(None);
        let service_report = RefCell::new(None);
        let (run, _) = record_with(
            "service-pprof",
            Flavor::MultiThread(2),
            |b| {
                // The service profiles itself from its start, as a service with a profiling
                // endpoint that is on would.
                *service_profiler.borrow_mut() = Some(
                    pprof::ProfilerGuardBuilder::default()
                        .frequency(199)
                        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
                        .build()
                        .expect("the service's own pprof starts"),
                );
                // asyncprof is asked for its CPU profile too: pprof is the service's, so asyncprof
                // goes without one (and says so once on stderr) instead of taking it.
                b.cpu_profile(99)
            },
            || async {
                tokio::spawn(async { the_services_own_work(Duration::from_millis(300)) })
                    .await
                    .unwrap();
                tokio::spawn(async {
                    std::thread::sleep(Duration::from_millis(80)); // stall: beside-pprof
                })
                .await
                .unwrap();
                let profiler = service_profiler
                    .borrow_mut()
                    .take()
                    .expect("started before recording");
                *service_report.borrow_mut() =
                    Some(profiler.report().build().expect("the service's report"));
            },
        );

        let report = service_report
            .into_inner()
            .expect("reported in the workload");
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

        assert!(
            run.cpu_profile.is_none(),
            "asyncprof left pprof to the service"
        );
        let stall = crate::stalls::stall_at(&run, "beside-pprof");
        assert!(!stall.stacks.is_empty(), "{stall:#?}");
    });
}
