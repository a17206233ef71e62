//! `asyncprof run` end to end against a small instrumented HTTP service with a known defect
//! (`examples/demo_service.rs`), under its built-in load generator.

use std::path::PathBuf;

use crate::{asyncprof, temp};

fn demo_service() -> PathBuf {
    // Examples are built beside the test's binaries.
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_asyncprof"));
    bin.parent().unwrap().join("examples/demo_service")
}

fn marker_line() -> u32 {
    let src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo_service.rs"),
    )
    .unwrap();
    src.lines()
        .position(|l| l.contains("// asyncprof-expect: blocking-call"))
        .unwrap() as u32
        + 1
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn run_drives_load_and_finds_the_blocking_line() {
    let dir = temp("run-demo");
    let port = free_port().to_string();
    let url = format!("http://127.0.0.1:{port}/report");
    let service = demo_service();
    let out = asyncprof(&[
        "run",
        "--out",
        dir.to_str().unwrap(),
        "--load",
        &url,
        "--rate",
        "40",
        "--duration",
        "2s",
        "--timeout",
        "30s",
        "--",
        service.to_str().unwrap(),
        "--port",
        &port,
        "--serve-for",
        "3",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("load: "), "{err}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("demo_service.json")).unwrap()).unwrap();
    let findings = json["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0]["kind"], "blocking-call");
    assert_eq!(findings[0]["location"]["line"], marker_line());
    assert!(findings[0]["location"]["file"]
        .as_str()
        .unwrap()
        .ends_with("examples/demo_service.rs"));
    assert!(findings[0]["count"].as_u64().unwrap() > 10);
    // The same run file renders folded stacks for a flamegraph.
    let folded = dir.join("stalls.folded");
    let rf = dir.join("demo_service.run");
    let out = asyncprof(&[
        "report",
        rf.to_str().unwrap(),
        "--folded",
        folded.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let text = std::fs::read_to_string(&folded).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("demo_service.rs"))
        .expect("a stack through the demo service");
    let (stack, weight) = line.rsplit_once(' ').unwrap();
    assert!(weight.parse::<u64>().unwrap() > 0);
    assert!(stack.contains(';') && stack.contains("sleep"), "{stack}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `asyncprof run` of the demo service (serving for 120 s, far longer than any client here
/// needs) under the load client that `client` names for the service's port.
fn run_demo_under(dir: &std::path::Path, client: impl Fn(&str) -> String) -> std::process::Output {
    run_demo_with(dir, client, &[])
}

/// [`run_demo_under`] with `env` set for `asyncprof run` (and so for the service).
fn run_demo_with(
    dir: &std::path::Path,
    client: impl Fn(&str) -> String,
    env: &[(&str, &str)],
) -> std::process::Output {
    let port = free_port().to_string();
    let service = demo_service();
    std::process::Command::new(env!("CARGO_BIN_EXE_asyncprof"))
        .args([
            "run",
            "--out",
            dir.to_str().unwrap(),
            "--load-cmd",
            &client(&port),
            "--timeout",
            "60s",
            "--",
            service.to_str().unwrap(),
            "--port",
            &port,
            "--serve-for",
            "120",
        ])
        .envs(env.iter().copied())
        .output()
        .expect("the asyncprof binary runs")
}

/// issue 18: the service's load comes from a real client of the user's choosing (curl here),
/// started once the service listens; the service is stopped when the client is done.
#[test]
fn run_with_its_own_load_client_finds_the_blocking_line() {
    let dir = temp("run-load-cmd");
    let started = std::time::Instant::now();
    let out = run_demo_under(&dir, |port| {
        format!(
            "curl --silent --show-error --fail --output /dev/null 'http://127.0.0.1:{port}/report?[1-40]'"
        )
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("load command curl exited with exit status: 0"),
        "{err}"
    );
    // Stopped when the client was done, not at its own 120 s.
    assert!(started.elapsed() < std::time::Duration::from_secs(50));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("demo_service.json")).unwrap()).unwrap();
    let findings = json["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0]["kind"], "blocking-call");
    assert_eq!(findings[0]["location"]["line"], marker_line());
    // 40 requests, each a 25 ms sleep on a worker.
    assert!(
        findings[0]["count"].as_u64().unwrap() >= 30,
        "{findings:#?}"
    );

    // Scored against the markers of a source tree, as `bench` scores its pipelines: the
    // demo's own source (its marker on the blocking line) passes; the same source without
    // the marker (a clean twin that was not clean) and with the marker on another line fail.
    let run_file = dir.join("demo_service.run");
    let src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo_service.rs"),
    )
    .unwrap();
    let score = |name: &str, text: &str| {
        let tree = dir.join(name);
        std::fs::create_dir_all(tree.join("examples")).unwrap();
        std::fs::write(tree.join("examples/demo_service.rs"), text).unwrap();
        asyncprof(&[
            "report",
            run_file.to_str().unwrap(),
            "--json",
            "--expect-markers",
            tree.to_str().unwrap(),
        ])
    };
    let out = score("marked", &src);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("recall 100% (1/1 marked defects found), precision 100% (1/1"),
        "{err}"
    );
    let unmarked = src.replace("// asyncprof-expect: blocking-call", "");
    let out = score("unmarked", &unmarked);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("unexpected: blocking-call at"), "{err}");
    let moved = format!("{unmarked}\n// asyncprof-expect: blocking-call\n");
    let out = score("moved", &moved);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("missed: blocking-call at examples/demo_service.rs"),
        "{err}"
    );
    let out = asyncprof(&[
        "report",
        run_file.to_str().unwrap(),
        "--expect-markers",
        dir.join("no-such-folder").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read folder"));

    // The stalls as a pprof profile that Go's own pprof reads: its top entries by cumulative
    // stall time include the demo's marked line (with -lines, entries are file:line).
    let profile = dir.join("stalls.pb.gz");
    let out = asyncprof(&[
        "report",
        run_file.to_str().unwrap(),
        "--pprof",
        profile.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let go = std::process::Command::new("go")
        .args(["tool", "pprof", "-top", "-cum", "-lines"])
        .arg(&profile)
        .output()
        .expect("`go` (Debian: golang-go) reads the pprof export; .ci/test installs it");
    let top = String::from_utf8_lossy(&go.stdout);
    assert!(
        go.status.success(),
        "{}",
        String::from_utf8_lossy(&go.stderr)
    );
    assert!(top.contains("Type: stall_time"), "{top}");
    let wanted = format!("demo_service.rs:{}", marker_line());
    let rank = top
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .position(|l| l.contains(&wanted));
    assert!(
        rank.is_some_and(|r| r <= 40),
        "{wanted} not in the top entries:\n{top}"
    );

    // A client that fails: its status is shown, the report is still written, exit 1.
    let dir2 = temp("run-load-cmd-fails");
    let out = run_demo_under(&dir2, |port| {
        format!("curl --silent --fail --output /dev/null http://127.0.0.1:{port}/missing")
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("load command curl exited with exit status: 22"),
        "{err}"
    );
    assert!(dir2.join("demo_service.json").exists());
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&dir2).ok();
}

#[test]
fn a_program_that_cannot_start_or_load_off_loopback_is_one_clear_error() {
    let out = asyncprof(&["run", "--", "/nonexistent/program"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot start /nonexistent/program"), "{err}");
    let out = asyncprof(&["run", "--load", "http://192.0.2.1/", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("only targets loopback"), "{err}");
    let out = asyncprof(&["run"]);
    assert_eq!(out.status.code(), Some(2), "CMD is required");
}

#[test]
fn a_program_without_asyncprof_says_so() {
    let dir = temp("run-plain");
    let out = asyncprof(&["run", "--out", dir.to_str().unwrap(), "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("left no readable run file"), "{err}");
    assert!(err.contains("instrumented with asyncprof"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_program_stuck_for_good_is_stopped_at_the_timeout_and_its_stall_reported() {
    let dir = temp("run-hang");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_asyncprof"));
    let service = bin.parent().unwrap().join("examples/hang_service");
    let out = asyncprof(&[
        "run",
        "--out",
        dir.to_str().unwrap(),
        // The stall must have lasted the second that makes it runtime-blocked by the time the
        // program is stopped, even when a loaded machine starts the program late.
        "--timeout",
        "3s",
        "--",
        service.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    // Stopped by asyncprof: not the program's failure.
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("ran past --timeout"), "{err}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("hang_service.json")).unwrap()).unwrap();
    let f = &json["findings"][0];
    assert_eq!(f["kind"], "runtime-blocked", "{json:#}");
    assert!(f["location"]["file"]
        .as_str()
        .unwrap()
        .ends_with("examples/hang_service.rs"));
    let src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hang_service.rs"),
    )
    .unwrap();
    let line = src
        .lines()
        .position(|l| l.contains("asyncprof-expect: runtime-blocked"))
        .unwrap()
        + 1;
    assert_eq!(f["location"]["line"], line as u64);
    assert!(
        f["stack"].as_array().unwrap().len() > 3,
        "the stack is in the report"
    );
    assert_eq!(f["primitive"], "std::thread::sleep");
    std::fs::remove_dir_all(&dir).ok();
}

/// A run whose file reached its size limit (ASYNCPROF_MAX_FILE_MB, here 1 MiB: parts of 512
/// KiB) and went on in a new one: `run` reports both parts as one run, every stall in them.
#[test]
fn run_reports_both_parts_of_a_run_that_went_on_in_a_new_file() {
    let dir = temp("run-parts");
    let out = run_demo_with(
        &dir,
        |port| {
            format!(
                "curl --silent --show-error --fail --output /dev/null 'http://127.0.0.1:{port}/report?[1-45]'"
            )
        },
        &[("ASYNCPROF_MAX_FILE_MB", "1")],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let read = |name: &str| asyncprof_format::read_path(dir.join(name)).unwrap();
    let (newest, before) = (read("demo_service.run"), read("demo_service.old.run"));
    assert_eq!(
        (before.header.part, newest.header.part),
        (0, 1),
        "one new file"
    );
    assert!(err.contains("parts 0, 1 of one run read as one"), "{err}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("demo_service.json")).unwrap()).unwrap();
    let findings = json["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0]["location"]["line"], marker_line());
    // 45 requests, each a 25 ms sleep on a worker: nearly all of them, from both parts (the
    // newest part alone has fewer).
    let count = findings[0]["count"].as_u64().unwrap();
    eprintln!(
        "stalls at the line: {count} in the report; {} in part 0, {} in part 1",
        before.stalls.len(),
        newest.stalls.len()
    );
    assert!(count >= 40, "{count} stalls: {findings:#?}");
    assert!(
        (newest.stalls.len() as u64) < count,
        "the newest part alone has {} stalls",
        newest.stalls.len()
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `asyncprof top` follows a run from part to part (`ASYNCPROF_MAX_FILE_MB`): every stall of
/// a service whose run file filled and went on in a new one, printed once, and the run's end.
#[test]
fn top_follows_a_run_into_its_next_part_and_prints_every_stall() {
    let dir = std::env::temp_dir().join(format!("asyncprof-cli-top-parts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = dir.join("demo.run");
    let port = free_port();
    let mut service = std::process::Command::new(demo_service())
        .args(["--port", &port.to_string(), "--serve-for", "6"])
        .env("ASYNCPROF_OUT", &run)
        .env("ASYNCPROF_MAX_FILE_MB", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let listening = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            listening.elapsed() < std::time::Duration::from_secs(30),
            "the service never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let top = std::process::Command::new(env!("CARGO_BIN_EXE_asyncprof"))
        .args(["top", "--plain", run.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // 60 requests, each a 25 ms sleep on a worker: about 500 KB of stall records, past half
    // of the 1 MB limit.
    let curl = std::process::Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--fail",
            "--output",
            "/dev/null",
            &format!("http://127.0.0.1:{port}/report?[1-60]"),
        ])
        .status()
        .unwrap();
    assert!(curl.success());
    assert!(service.wait().unwrap().success());
    let out = top.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}\n{err}");
    let newest = asyncprof_format::read_path(&run).unwrap();
    let before = asyncprof_format::read_path(dir.join("demo.old.run")).unwrap();
    assert!(newest.header.part >= 1, "the run went on in a new part");
    let line = format!("demo_service.rs:{}", marker_line());
    let printed = text.lines().filter(|l| l.contains(&line)).count();
    eprintln!(
        "top printed {printed} stalls at the line; parts {} and {} hold {} and {}",
        before.header.part,
        newest.header.part,
        before.stalls.len(),
        newest.stalls.len()
    );
    assert!(printed >= 55, "{printed} stalls printed:\n{text}");
    assert!(
        (newest.stalls.len()) < printed,
        "more than the newest part holds ({})",
        newest.stalls.len()
    );
    assert!(
        text.contains(&format!("the run ended: {printed} stalls")),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
