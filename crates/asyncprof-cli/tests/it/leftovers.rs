//! A profiled process leaves nothing in its temporary folder: not pprof's sample spill file
//! (held by a static that is never dropped, so it outlives the CPU profile), not a pipeline's
//! scratch folder, whether the run ends by itself or outlives its budget and exits.

use std::path::Path;
use std::process::Command;

/// Run `__pipeline NAME VARIANT quick` with a CPU profile, its temporary folder `tmp` and its
/// run file outside it; its exit status.
fn run_pipeline(name: &str, variant: &str, tmp: &Path, out: &Path) -> Option<i32> {
    std::fs::create_dir_all(tmp).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_asyncprof"))
        .args(["__pipeline", name, variant, "quick"])
        .env("TMPDIR", tmp)
        .env("ASYNCPROF_OUT", out)
        .env("ASYNCPROF_CPU_HZ", "99")
        .output()
        .expect("the asyncprof binary runs");
    if o.status.success() {
        // The profile ran and was written (a run that exits at its budget writes none).
        let run = asyncprof_format::read_bytes(&std::fs::read(out).unwrap()).unwrap();
        assert!(
            run.cpu_profile.is_some(),
            "{name} {variant}: no CPU profile in the run: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    o.status.code()
}

fn left_in(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_profiled_process_leaves_no_temporary_files() {
    let base = std::env::temp_dir().join(format!("asyncprof-leftovers-{}", std::process::id()));
    std::fs::create_dir_all(&base).unwrap();

    // A run that ends by itself: the profile stops, pprof opens its next spill file.
    let tmp = base.join("finished");
    let status = run_pipeline("scraper", "fixed", &tmp, &base.join("finished.run"));
    assert_eq!(status, Some(0));
    assert_eq!(
        left_in(&tmp),
        Vec::<String>::new(),
        "left behind by a finished run"
    );

    // A run whose runtime is stuck until its budget ends it (exit status 124): the profile
    // never stops, the pipeline never reaches its own clean-up.
    let tmp = base.join("stuck");
    let status = run_pipeline("news-aggregator", "bad", &tmp, &base.join("stuck.run"));
    assert_eq!(
        status,
        Some(124),
        "the bad news aggregator outlives its budget"
    );
    assert_eq!(
        left_in(&tmp),
        Vec::<String>::new(),
        "left behind by a stuck run"
    );

    std::fs::remove_dir_all(&base).ok();
}
