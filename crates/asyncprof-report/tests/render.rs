//! The renderers on a fixed run file: golden output (deterministic: no clock, no machine
//! paths), escaping of every user string, and the HTML page in a real headless Chromium.
//!
//! Regenerate the golden files after an intended change with
//! `ASYNCPROF_UPDATE_GOLDEN=1 cargo test -p asyncprof-report --test render`.

use std::path::{Path, PathBuf};

use asyncprof_format::{
    read_bytes, DepthPoint, Frame, Header, Histogram, LocationStats, QueueKind, QueueStats,
    RunFile, RunWriter, Snapshot, SourceLocation, StackSample, StageStats, StallClass, StallRecord,
    TaskStats, WorkerStats,
};
use asyncprof_report::{render_html, render_json, render_text, Summary};

fn hist(values: &[(u64, u64)]) -> Histogram {
    let mut h = hdrhistogram::Histogram::<u64>::new_with_max(3_600_000_000_000, 2).unwrap();
    for &(v, n) in values {
        h.record_n(v, n).unwrap();
    }
    Histogram::from_hdr(&h)
}

/// A run with a blocking-call stall, a backed-up queue and hostile strings, built record by
/// record so that every byte is known.
fn fixture(task_name: &str, file: &str) -> RunFile {
    let mut header = Header::new("fixture-service");
    header.pid = 4242;
    header.workers = 2;
    let mut bytes = Vec::new();
    let mut w = RunWriter::new(&mut bytes, &header).unwrap();
    let mut snap = Snapshot::default();
    snap.elapsed_ns = 3_000_000_000;
    snap.is_final = true;
    snap.runtime.polls = 12_000;
    snap.runtime.tasks_spawned = 40;
    snap.runtime.tasks_completed = 39;
    snap.runtime.tasks_alive = 1;
    snap.runtime.poll_ns = hist(&[(20_000, 11_000), (900_000, 950), (25_000_000, 50)]);
    snap.runtime.scheduled_ns = hist(&[(5_000, 11_000), (3_000_000, 1000)]);
    for i in 0..2 {
        let mut ws = WorkerStats::default();
        ws.index = i;
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
    w.write_end().unwrap();
    read_bytes(&bytes).unwrap()
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("ASYNCPROF_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (ASYNCPROF_UPDATE_GOLDEN=1 writes it)",
            path.display()
        )
    });
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .map_or(expected.lines().count().min(actual.lines().count()), |i| i);
        panic!(
            "{name} differs from its golden file at line {}:\n  golden: {:?}\n  actual: {:?}",
            line + 1,
            expected.lines().nth(line),
            actual.lines().nth(line)
        );
    }
}

const FILE: &str = "src/service.rs";

#[test]
fn renderers_match_their_golden_files() {
    let run = fixture("ingest", FILE);
    let summary = Summary::of(&run);
    assert_eq!(summary.findings.len(), 2, "{:#?}", summary.findings);
    let no_source = |_: &str| None;
    golden(
        "fixture.txt",
        &String::from_utf8(render_text(&summary)).unwrap(),
    );
    golden(
        "fixture.json",
        &String::from_utf8(render_json(&summary)).unwrap(),
    );
    golden("fixture.html", &render_html(&run, &summary, &no_source));
    // Deterministic: the same input renders the same bytes.
    assert_eq!(
        render_html(&run, &summary, &no_source),
        render_html(&run, &summary, &no_source)
    );
}

#[test]
fn every_user_string_is_escaped_in_html() {
    let name = "<script>alert(1)</script>";
    let file = "src/we\"ird<dir>/svc.rs";
    let run = fixture(name, file);
    let summary = Summary::of(&run);
    let source =
        |f: &str| (f == file).then(|| "fn main() {}\n".repeat(60) + "</pre><script>x()</script>\n");
    let html = render_html(&run, &summary, &source);
    assert!(
        !html.contains("<script>alert(1)"),
        "a task name became markup"
    );
    assert!(!html.contains("<script>x()"), "source text became markup");
    assert!(!html.contains("we\"ird<dir>"), "a path became markup");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("we&quot;ird&lt;dir&gt;"));
    // Exactly the report's own script tag, nothing injected.
    assert_eq!(html.matches("<script>").count(), 1);
}

fn chromium() -> PathBuf {
    for c in [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ] {
        if Path::new(c).exists() {
            return PathBuf::from(c);
        }
    }
    panic!("the browser test needs Chromium: `.ci/test` installs it (apt-get install chromium)");
}

#[test]
fn the_report_renders_in_headless_chromium_without_errors() {
    let run = fixture("ingest", FILE);
    let summary = Summary::of(&run);
    let source = |_: &str| Some("fn handle() {}\n".repeat(50));
    let html = render_html(&run, &summary, &source);
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    let dir = target.join("report-browser-test");
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("report.html");
    std::fs::write(&page, &html).unwrap();
    let url = format!("file://{}#selftest", page.canonicalize().unwrap().display());
    let browser = chromium();
    let common = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1280,2400",
        "--enable-logging=stderr",
        "--v=0",
    ];
    let out = std::process::Command::new(&browser)
        .args(common)
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    let verdict = dom
        .split("<pre id=\"selftest\">")
        .nth(1)
        .and_then(|r| r.split("</pre>").next())
        .unwrap_or_else(|| panic!("the page's self-check did not run:\n{log}"));
    assert!(verdict.starts_with("OK"), "{verdict}");
    let charts: usize = verdict.rsplit("charts=").next().unwrap().parse().unwrap();
    assert!(charts >= 6, "{verdict}");
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    // A screenshot for people to look at (not committed).
    let shot = dir.join("report.png");
    let out = std::process::Command::new(&browser)
        .args(common)
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url.trim_end_matches("#selftest"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
}
