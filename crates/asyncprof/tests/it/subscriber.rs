//! issue 18: `asyncprof::init()` never takes the global `tracing` subscriber from the
//! service. A service that installs its own subscriber after `init()` (as
//! `tracing_subscriber::fmt().init()` does) or before it starts, and asyncprof records its
//! runtime in the hooks tier either way. Each order runs in a child process of its own: the
//! global subscriber can be set once per process.

use asyncprof_format::Tier;

const CHILD_ENV: &str = "ASYNCPROF_IT_SUBSCRIBER_CHILD";

/// The service: its own global subscriber, before or after `init()`, then a runtime built
/// through the guard running ten polls of one task.
fn service(subscriber_first: bool) {
    let _serial = crate::support::serial();
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    std::env::set_var("ASYNCPROF_OUT", &path);
    let own = || {
        tracing::subscriber::set_global_default(tracing_subscriber::registry())
            .expect("the service's own global subscriber is installed")
    };
    if subscriber_first {
        own();
    }
    let guard = asyncprof::init().expect("asyncprof starts");
    if !subscriber_first {
        own();
    }
    let mut b = tokio::runtime::Builder::new_current_thread();
    let rt = guard.instrument(&mut b).enable_all().build().unwrap();
    rt.block_on(async {
        tokio::spawn(async {
            for _ in 0..9 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
    });
    drop(rt);
    drop(guard);
}

/// Runs only as a child of `issue_18_the_service_sets_its_own_subscriber_in_either_order`.
#[test]
fn child_subscriber_after_init() {
    service(false);
}

/// Runs only as a child of `issue_18_the_service_sets_its_own_subscriber_in_either_order`.
#[test]
fn child_subscriber_before_init() {
    service(true);
}

#[test]
fn issue_18_the_service_sets_its_own_subscriber_in_either_order() {
    let _serial = crate::support::serial();
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    for child in [
        "subscriber::child_subscriber_after_init",
        "subscriber::child_subscriber_before_init",
    ] {
        let path = crate::support::temp_run_path("subscriber");
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", child, "--nocapture"])
            .env(CHILD_ENV, &path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{child}: the service did not start: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let run = asyncprof_format::read_path(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert!(run.ended, "{child}");
        assert_eq!(run.header.tier, Tier::Hooks, "{child}");
        let polls = run.snapshot.as_ref().map_or(0, |s| s.runtime.polls);
        assert!(polls >= 10, "{child}: {polls} polls recorded");
    }
}
