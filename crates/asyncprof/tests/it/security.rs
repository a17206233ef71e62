//! The run file is never written through a symbolic link.

use crate::support::temp_run_path;

#[test]
fn a_symlink_at_the_run_file_path_is_refused_and_its_target_untouched() {
    let _serial = crate::support::serial();
    let target = temp_run_path("symlink-target");
    let link = temp_run_path("symlink-link");
    std::fs::write(&target, b"precious").unwrap();
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let err = asyncprof::Profiler::builder()
        .out(&link)
        .start()
        .expect_err("writing through a symlink is refused");
    let msg = err.to_string();
    assert!(msg.contains(link.to_str().unwrap()), "{msg}");
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    // A plain path still works, and a second start after the refusal is possible.
    let plain = temp_run_path("symlink-plain");
    let guard = asyncprof::Profiler::builder().out(&plain).start().unwrap();
    drop(guard);
    assert!(asyncprof_format::read_path(&plain).is_ok());
    for p in [&target, &link, &plain] {
        let _ = std::fs::remove_file(p);
    }
}
