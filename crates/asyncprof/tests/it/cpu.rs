//! The whole-run CPU profile: a function known to burn CPU shows in the folded stacks.

use std::time::Duration;

use crate::support::{record_with, spin, Flavor};

#[inline(never)]
fn burn_known_function(d: Duration) {
    spin(d);
}

#[test]
fn a_cpu_profile_names_the_function_that_burned_cpu() {
    crate::support::retry_if_disturbed(|| {
        let (run, _) = record_with(
            "cpu-profile",
            Flavor::MultiThread(2),
            |b| b.cpu_profile(99),
            || async {
                tokio::spawn(async { burn_known_function(Duration::from_millis(400)) })
                    .await
                    .unwrap();
            },
        );
        let p = run.cpu_profile.expect("a CPU profile record");
        assert_eq!(p.hz, 99);
        // 400 ms at 99 Hz: about 40 samples on that thread; generous bounds.
        assert!(p.samples >= 15, "{} samples", p.samples);
        let burning: u64 = p
            .folded
            .lines()
            .filter(|l| l.contains("burn_known_function"))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
            .sum();
        assert!(
            burning >= 10,
            "{burning} samples in burn_known_function of {}",
            p.samples
        );
        // Folded lines start with the thread's name.
        assert!(p.folded.lines().all(|l| !l.starts_with(';')));
    });
}

#[test]
fn no_cpu_profile_unless_asked() {
    crate::support::retry_if_disturbed(|| {
        let (run, _) = record_with("no-cpu-profile", Flavor::CurrentThread, |b| b, || async {});
        assert!(run.cpu_profile.is_none());
    });
}
