//! `asyncprof run` end to end against a small instrumented HTTP service with a known defect
//! (`examples/demo_service.rs`), under its built-in load generator.

use std::path::{Path, PathBuf};

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

/// `asyncprof run` of the demo service (serving `serve_for` seconds) into `dir`, under the
/// built-in load (40 requests a second to its blocking endpoint for `load_for`).
fn run_demo_with_load(
    dir: &std::path::Path,
    load_for: &str,
    serve_for: &str,
) -> std::process::Output {
    let port = free_port().to_string();
    let url = format!("http://127.0.0.1:{port}/report");
    let service = demo_service();
    asyncprof(&[
        "run",
        "--out",
        dir.to_str().unwrap(),
        "--load",
        &url,
        "--rate",
        "40",
        "--duration",
        load_for,
        "--timeout",
        "30s",
        "--",
        service.to_str().unwrap(),
        "--port",
        &port,
        "--serve-for",
        serve_for,
    ])
}

#[test]
fn run_drives_load_and_finds_the_blocking_line() {
    let dir = temp("run-demo");
    let out = run_demo_with_load(&dir, "2s", "3");
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
    // By its share, not its rank: every frame the stalls' stacks share (tokio's worker loop,
    // hyper's dispatch) ties at the top, ranked by name, and a stack taken in the same poll
    // outside the call puts the line a point below them all.
    let wanted = format!("demo_service.rs:{}", marker_line());
    let cum_share = top
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .find(|l| l.contains(&wanted))
        .and_then(|l| {
            l.split_whitespace()
                .nth(4)?
                .strip_suffix('%')?
                .parse::<f64>()
                .ok()
        });
    assert!(
        cum_share.is_some_and(|c| c >= 50.0),
        "{wanted} not in most of the stall time:\n{top}"
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

/// The example that hangs for good (`examples/hang_service`), built beside the CLI.
fn hang_service() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_asyncprof"));
    bin.parent().unwrap().join("examples/hang_service")
}

/// `asyncprof run --timeout 3s` on `service` (a copy of the hanging example) into `out_dir`:
/// its output, after checking that asyncprof stopped it (exit 0), and the report's JSON.
fn run_hanging(out_dir: &Path, service: &Path) -> (std::process::Output, serde_json::Value) {
    let out = asyncprof(&[
        "run",
        "--out",
        out_dir.to_str().unwrap(),
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
    let json =
        serde_json::from_slice(&std::fs::read(out_dir.join("hang_service.json")).unwrap()).unwrap();
    (out, json)
}

#[test]
fn a_program_stuck_for_good_is_stopped_at_the_timeout_and_its_stall_reported() {
    let dir = temp("run-hang");
    let (out, json) = run_hanging(&dir, &hang_service());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ran past --timeout"), "{err}");
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

/// Known truth: the hanging service built without debug info (its copy with the DWARF
/// stripped, as cargo's release profile leaves it out; the symbol table stays). Its frames
/// have names and no files: the finding names its own function, with no line, and says how
/// to get lines; the report warns at its top.
#[test]
fn a_program_without_debug_info_is_named_by_its_function_and_told_how_to_get_lines() {
    let dir = temp("run-stripped");
    std::fs::create_dir_all(&dir).unwrap();
    let service = hang_service();
    let stripped = dir.join("hang_service");
    let strip = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&stripped)
        .arg(&service)
        .status()
        .expect("strip (binutils) runs");
    assert!(strip.success());
    let (out, json) = run_hanging(&dir.join("out"), &stripped);
    let f = &json["findings"][0];
    assert_eq!(f["kind"], "runtime-blocked", "{json:#}");
    assert_eq!(f["location"]["file"], "", "{json:#}");
    assert_eq!(
        f["location"]["function"], "hang_service::wait_for_the_ledger",
        "{json:#}"
    );
    assert_eq!(f["primitive"], "std::thread::sleep", "{json:#}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("runtime-blocked in hang_service::wait_for_the_ledger (no line: the program was built without debug info"),
        "{text}"
    );
    assert!(
        text.contains("warning: the stall stacks have no source files or lines"),
        "{text}"
    );
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

/// Wait (bounded) until `probe` holds.
fn wait_until(limit: std::time::Duration, what: &str, mut probe: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !probe() {
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A SIGTERM to `asyncprof run` (a `kill`, `timeout`, a CI cancel) stops the program, which
/// would otherwise run on orphaned, and asyncprof still reports. It used to end asyncprof at
/// once, with the program left running and no report.
#[test]
fn sigterm_to_run_stops_the_program_and_still_reports() {
    use std::os::unix::process::ExitStatusExt;
    let dir = temp("run-sigterm");
    let port = free_port().to_string();
    let service = demo_service();
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_asyncprof"))
        .args(["run", "--out", dir.to_str().unwrap(), "--"])
        .arg(&service)
        .args(["--port", &port, "--serve-for", "120"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until(
        std::time::Duration::from_secs(30),
        "the service to listen",
        || std::net::TcpStream::connect(addr).is_ok(),
    );
    let run_file = dir.join("demo_service.run");
    let service_pid = asyncprof_format::read_path(&run_file).unwrap().header.pid;
    asyncprof_sampler::send_signal(run.id(), 15).unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > std::time::Duration::from_secs(30) {
            let _ = run.kill();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let service_left = asyncprof_sampler::procfs::exists(service_pid);
    if service_left {
        let _ = asyncprof_sampler::send_signal(service_pid, 9);
    }
    let mut err = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut err).unwrap();
    let status = status.expect("asyncprof run ends within 30 s of its SIGTERM");
    assert!(!service_left, "the service was left running: {err}");
    assert_eq!(status.signal(), None, "asyncprof itself was killed: {err}");
    assert_eq!(status.code(), Some(0), "stopped by the user: {err}");
    assert!(dir.join("demo_service.json").exists(), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

const SIGINT_CHILD_ENV: &str = "ASYNCPROF_CLI_IT_SIGINT_LOG";

/// With [`SIGINT_CHILD_ENV`], how long (ms) the counting child waits after the last signal
/// before it writes its counts (default 1,000).
const QUIET_MS_ENV: &str = "ASYNCPROF_CLI_IT_QUIET_MS";

/// Runs only as the program of the signal tests below: counts every SIGINT, SIGHUP and
/// SIGTERM delivered to it, noting the counts so far in the log at each, until no signal has
/// come for a second (or [`QUIET_MS_ENV`]; 20 s at most before the first), then writes the
/// counts to the file the variable names.
#[test]
fn child_counts_its_sigints() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::time::{Duration, Instant};
    let Some(log) = std::env::var_os(SIGINT_CHILD_ENV) else {
        return;
    };
    let quiet = std::env::var(QUIET_MS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(1), Duration::from_millis);
    static INTS: AtomicUsize = AtomicUsize::new(0);
    static HUPS: AtomicUsize = AtomicUsize::new(0);
    static TERMS: AtomicUsize = AtomicUsize::new(0);
    // SAFETY: the handlers only increment an atomic, which is async-signal-safe.
    unsafe {
        signal_hook::low_level::register(signal_hook::consts::SIGINT, || {
            INTS.fetch_add(1, SeqCst);
        })
        .unwrap();
        signal_hook::low_level::register(signal_hook::consts::SIGHUP, || {
            HUPS.fetch_add(1, SeqCst);
        })
        .unwrap();
        signal_hook::low_level::register(signal_hook::consts::SIGTERM, || {
            TERMS.fetch_add(1, SeqCst);
        })
        .unwrap();
    }
    std::fs::write(&log, "started\n").unwrap();
    let counts = || (INTS.load(SeqCst), HUPS.load(SeqCst), TERMS.load(SeqCst));
    let start = Instant::now();
    let mut seen = (0, 0, 0);
    let mut last: Option<Instant> = None;
    loop {
        let now = counts();
        if now != seen {
            seen = now;
            last = Some(Instant::now());
            let (i, h, t) = now;
            std::fs::write(&log, format!("started\nso far: INT {i} HUP {h} TERM {t}\n")).unwrap();
        }
        let done = match last {
            Some(at) => at.elapsed() >= quiet,
            None => start.elapsed() >= Duration::from_secs(20),
        };
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (ints, hups, terms) = counts();
    std::fs::write(
        &log,
        format!("started\nsigints={ints}\nsighups={hups}\nsigterms={terms}\n"),
    )
    .unwrap();
}

/// A fresh folder for a run of `child_counts_its_sigints`, and its log there.
fn counting_dir(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = temp(name);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("signals.log");
    (dir, log)
}

/// The command line that runs `child_counts_its_sigints` under `asyncprof run` (through
/// `wrapper`, e.g. "setsid "), logging to `log`.
fn counting_run(dir: &std::path::Path, log: &std::path::Path, wrapper: &str) -> String {
    format!(
        "env {SIGINT_CHILD_ENV}={} {} run --out {} -- {wrapper}{} \
         --exact run::child_counts_its_sigints --nocapture",
        log.display(),
        env!("CARGO_BIN_EXE_asyncprof"),
        dir.display(),
        std::env::current_exe().unwrap().display(),
    )
}

/// Wait (20 s at most) until the counting child's log holds `text`; the log then.
fn wait_for_log(log: &std::path::Path, text: &str) -> String {
    wait_until(std::time::Duration::from_secs(20), text, || {
        std::fs::read_to_string(log).is_ok_and(|l| l.contains(text))
    });
    std::fs::read_to_string(log).unwrap()
}

/// A terminal that hangs up (its window closed) sends SIGHUP to its session's leader alone:
/// when that is `asyncprof run` itself (started as the window's command), `run` passes it on
/// to the program, which would otherwise run on, its terminal gone.
#[test]
fn a_terminal_hang_up_reaches_the_program_when_run_leads_the_session() {
    if std::env::var_os(SIGINT_CHILD_ENV).is_some() {
        return;
    }
    let (dir, log) = counting_dir("run-hang-up");
    let tmux = crate::top::Tmux::new("run-hang-up");
    let out = tmux.cmd(&[
        "new-window",
        "-d",
        "-n",
        "hup",
        &counting_run(&dir, &log, ""),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_log(&log, "started");
    assert!(tmux.cmd(&["kill-window", "-t", "hup"]).status.success());
    let text = wait_for_log(&log, "sighups=");
    std::fs::remove_dir_all(&dir).ok();
    assert!(text.contains("sighups=1\n"), "{text}");
}

/// Ctrl-C in a real terminal (tmux) goes to the whole foreground process group: the program
/// gets it from the terminal, and `run` must not send it a second one (which many programs
/// take as "quit now"). It used to pass every SIGINT on. A program in a session of its own
/// (`setsid`) does not get the terminal's: `run` passes it on.
#[test]
fn ctrl_c_in_a_terminal_reaches_the_program_once() {
    if std::env::var_os(SIGINT_CHILD_ENV).is_some() {
        return;
    }
    for (i, wrapper) in ["", "setsid "].into_iter().enumerate() {
        // A tmux server and a folder for each: a server just killed may still hold its socket.
        let (dir, log) = counting_dir(&format!("run-ctrl-c-{i}"));
        let tmux = crate::top::Tmux::new(&format!("run-ctrl-c-{i}"));
        // The quotes keep the typed line from showing what the shell prints when run ends.
        tmux.run(&format!(
            "{}; echo run''-exited",
            counting_run(&dir, &log, wrapper)
        ));
        wait_for_log(&log, "started");
        tmux.keys(&["C-c"]);
        tmux.wait_for("run-exited", std::time::Duration::from_secs(20));
        let text = std::fs::read_to_string(&log).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert!(text.contains("sigints=1\n"), "{wrapper:?}: {text}");
    }
}

/// A SIGTERM sent to `asyncprof run`'s whole process group reaches the program once: GNU
/// `timeout` signals its child (run) and then the child's group, the program with it, and
/// `kill -TERM -PGID` signals the group alone. One sent to run alone (`kill PID`) is passed
/// on, after a group's as well. run used to pass every signal a process sent on: the program
/// got `timeout`'s twice. Nothing of run's is left in its group once it has ended.
#[test]
fn a_sigterm_sent_to_runs_process_group_reaches_the_program_once() {
    use std::os::unix::process::CommandExt;
    use std::time::Duration;
    if std::env::var_os(SIGINT_CHILD_ENV).is_some() {
        return;
    }
    let words = |line: String| -> Vec<String> { shlex::split(&line).unwrap() };
    // `timeout` (coreutils) after 5 s: time for the program to start on a busy machine.
    let (dir, log) = counting_dir("run-timeout");
    let line = words(format!(
        "timeout -k 30 -s TERM 5 {}",
        counting_run(&dir, &log, "")
    ));
    let status = std::process::Command::new(&line[0])
        .args(&line[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    let text = wait_for_log(&log, "sigterms=");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(status.code(), Some(124), "timeout's own code: {text}");
    assert!(text.contains("sigterms=1\n"), "timeout: {text}");
    // run in a process group of its own, signalled: alone; as a group; as a group and then
    // alone (two signals sent, two received).
    let kill = |target: String| {
        let sent = std::process::Command::new("kill")
            .args(["-s", "TERM", "--", &target])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    for (i, (targets, expected)) in [
        (&["run"][..], "sigterms=1\n"),
        (&["group"][..], "sigterms=1\n"),
        (&["group", "run"][..], "sigterms=2\n"),
    ]
    .into_iter()
    .enumerate()
    {
        let (dir, log) = counting_dir(&format!("run-group-{i}"));
        let line = words(counting_run(&dir, &log, ""));
        // `env` sets the variables and becomes run (exec): the pid is run's.
        let mut run = std::process::Command::new(&line[0])
            .arg(format!("{QUIET_MS_ENV}=3000"))
            .args(&line[1..])
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let group = run.id();
        // Ends the group (the program, run and its witness) should an assertion fail.
        struct KillGroup(u32);
        impl Drop for KillGroup {
            fn drop(&mut self) {
                let _ = std::process::Command::new("kill")
                    .args(["-s", "KILL", "--", &format!("-{}", self.0)])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
        let _guard = KillGroup(group);
        wait_for_log(&log, "started");
        for (n, target) in targets.iter().enumerate() {
            kill(match *target {
                "group" => format!("-{group}"),
                _ => group.to_string(),
            });
            // Each received before the next is sent.
            wait_for_log(&log, &format!("TERM {}", n + 1));
        }
        let text = wait_for_log(&log, "sigterms=");
        wait_until(Duration::from_secs(30), "run to end", || {
            run.try_wait().unwrap().is_some()
        });
        wait_until(Duration::from_secs(10), "run's group to be empty", || {
            group_members(group).is_empty()
        });
        // Its number is free again: the guard must not signal a group that takes it.
        std::mem::forget(_guard);
        std::fs::remove_dir_all(&dir).ok();
        assert!(text.contains(expected), "{targets:?}: {text}");
    }
}

/// The processes of process group `pgid`, zombies left out.
fn group_members(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            // A zombie waits for its parent (or init) to reap it: it runs nothing.
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, f)| f.starts_with('Z')));
            !zombie
                && asyncprof_sampler::procfs::group_and_session(pid)
                    .is_some_and(|g| g.0 == u64::from(pgid))
        })
        .collect()
}

/// A report file that cannot be written (here its path is a folder) loses no finding: they
/// are printed first, then the error.
#[test]
fn a_report_that_cannot_be_written_loses_no_finding() {
    let dir = temp("run-unwritable");
    std::fs::create_dir_all(dir.join("demo_service.html")).unwrap();
    let out = run_demo_with_load(&dir, "1s", "2");
    let err = String::from_utf8_lossy(&out.stderr);
    let text = String::from_utf8_lossy(&out.stdout);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("demo_service.html"), "{err}");
    assert!(
        text.contains("blocking-call"),
        "stdout: {text}\nstderr: {err}"
    );
}

/// A program that crashes on its way out after `run` stopped it (here: exits 3 on SIGTERM,
/// from `--timeout`) is the program's failure: `run` says so and exits 1. It used to exit 0
/// for any end of a program it had stopped.
#[test]
fn a_crash_after_the_stop_is_not_hidden() {
    let dir = temp("run-crash-on-stop");
    let port = free_port().to_string();
    let service = demo_service();
    let script = format!(
        "{} --port {port} --serve-for 120 & pid=$!; trap 'kill $pid; wait $pid; exit 3' TERM; wait $pid",
        service.display()
    );
    let out = asyncprof(&[
        "run",
        "--out",
        dir.to_str().unwrap(),
        "--timeout",
        "3s",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    std::fs::remove_dir_all(&dir).ok();
    assert!(err.contains("ran past --timeout"), "{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("exited with exit status: 3"), "{err}");
}

/// `asyncprof run --out DIR -- DIR/PROGRAM` with a run file `DIR/PROGRAM.run` there already,
/// held locked (as a recording process holds its run file) when `locked`: the output, and
/// what that run file holds afterwards.
fn run_beside_a_run_file(
    name: &str,
    program: &str,
    locked: bool,
) -> (std::process::Output, Vec<u8>) {
    let dir = temp(name);
    std::fs::create_dir_all(&dir).unwrap();
    let earlier = dir.join(format!("{program}.run"));
    std::fs::write(&earlier, b"an earlier run").unwrap();
    let held = std::fs::File::open(&earlier).unwrap();
    if locked {
        assert!(asyncprof_sampler::try_lock_exclusive(&held).unwrap());
    }
    let program = dir.join(program);
    let out = asyncprof(&[
        "run",
        "--out",
        dir.to_str().unwrap(),
        "--",
        program.to_str().unwrap(),
    ]);
    let kept = std::fs::read(&earlier).unwrap();
    drop(held);
    std::fs::remove_dir_all(&dir).ok();
    (out, kept)
}

/// The run file an earlier run left is kept until the program has started: a mistyped
/// command loses no data. One a process still records to (another `asyncprof run` of the
/// same program into the same folder) is not set aside under it: one clear error.
#[test]
fn an_earlier_run_file_is_kept_and_one_still_recorded_left_alone() {
    let (out, kept) = run_beside_a_run_file("run-earlier", "no-such-program", false);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(kept, b"an earlier run");
    let (out, kept) = run_beside_a_run_file("run-busy", "true", true);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("being recorded by a running process"), "{err}");
    assert_eq!(kept, b"an earlier run");
}

/// The program may change its working folder before asyncprof starts in it: the run file's
/// path it gets is absolute. The user's own ASYNCPROF_CPU_HZ (0 here) stands, and arguments
/// that are not UTF-8 are passed on (to `sh`, which ignores them).
#[test]
fn run_passes_an_absolute_run_file_the_users_cpu_hz_and_any_argument() {
    use std::os::unix::ffi::OsStrExt;
    let cwd = temp("run-relative");
    std::fs::create_dir_all(&cwd).unwrap();
    let port = free_port().to_string();
    let service = demo_service();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_asyncprof"))
        .current_dir(&cwd)
        .env("ASYNCPROF_CPU_HZ", "0")
        .args(["run", "--out", "reports", "--", "sh", "-c"])
        .arg(format!(
            "cd / && exec {} --port {port} --serve-for 1",
            service.display()
        ))
        .arg(std::ffi::OsStr::from_bytes(b"caf\xe9"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let run = asyncprof_format::read_path(cwd.join("reports/sh.run"));
    std::fs::remove_dir_all(&cwd).ok();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(run.unwrap().header.config.cpu_hz, 0);
}
