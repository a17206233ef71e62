//! An argument that is not UTF-8 (a file name in another encoding) is the service's to take:
//! a process that starts recording runs with one as it runs without asyncprof, and the run
//! file records it (lossily). Without a test harness: libtest refuses such an argument itself.
//! The test runs this binary again with the argument; that run records and exits.

use std::os::unix::ffi::OsStrExt;

const CHILD_ENV: &str = "ASYNCPROF_ARGS_TEST_RUN_FILE";

fn main() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        let guard = asyncprof::Profiler::builder().out(path).start().unwrap();
        let mut b = tokio::runtime::Builder::new_current_thread();
        let rt = guard.instrument(&mut b).enable_all().build().unwrap();
        rt.block_on(async { tokio::spawn(async { 1 }).await.unwrap() });
        return;
    }
    // `cargo test` passes its own flags (`--nocapture`, filters): this test takes none.
    let path = std::env::temp_dir().join(format!("asyncprof-args-{}.run", std::process::id()));
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg(std::ffi::OsStr::from_bytes(b"caf\xe9.log"))
        .env(CHILD_ENV, &path)
        .output()
        .unwrap();
    let run = asyncprof_format::read_path(&path);
    std::fs::remove_file(&path).ok();
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let run = run.unwrap();
    assert!(run.ended);
    assert_eq!(run.header.args, vec!["caf\u{fffd}.log".to_string()]);
    println!("args: an argument that is not UTF-8 is the service's to take ... ok");
}
