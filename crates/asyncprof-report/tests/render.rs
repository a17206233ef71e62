//! The renderers on a fixed run file: golden output (deterministic: no clock, no machine
//! paths), escaping of every user string, and the HTML page in a real headless Chromium.
//!
//! Regenerate the golden files after an intended change with
//! `ASYNCPROF_UPDATE_GOLDEN=1 cargo test -p asyncprof-report --test render`.

use std::path::{Path, PathBuf};

use asyncprof_report::{render_html, render_json, render_text, Summary};

#[path = "support/fixture.rs"]
mod fixture;

use fixture::{fixture, fixture_with_signal};

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
fn a_run_without_signals_says_so_once_and_its_stalls_on_cpu_without_a_stack_point_to_it() {
    let sentence = asyncprof_report::SIGNALS_OFF;
    let run = fixture_with_signal("ingest", FILE, 0);
    let summary = Summary::of(&run);
    let text = String::from_utf8(render_text(&summary)).unwrap();
    assert_eq!(text.matches(sentence).count(), 1, "{text}");
    assert_eq!(text.lines().nth(1), Some(sentence), "{text}");
    assert!(
        text.contains("src/service.rs:60:9: 1 stalls, 40.0 ms in all, longest 40.0 ms; 1 on CPU (no stack: signals were off)"),
        "{text}"
    );
    let html = render_html(&run, &summary, &|_| None);
    assert_eq!(html.matches("Signals off (ASYNCPROF_SIGNAL=0)").count(), 1);
    assert!(html.contains("1 on CPU (no stack: signals were off)"));
    // Recorded with a signal: not a word of it.
    let run = fixture("ingest", FILE);
    let summary = Summary::of(&run);
    assert!(!String::from_utf8(render_text(&summary))
        .unwrap()
        .contains("ASYNCPROF_SIGNAL=0"));
    assert!(!render_html(&run, &summary, &|_| None).contains("ASYNCPROF_SIGNAL=0"));
}

#[test]
fn stalls_no_stack_placed_are_shown_under_their_task_never_at_its_spawn_line() {
    let run = fixture("ingest", FILE);
    let summary = Summary::of(&run);
    assert!(
        summary
            .findings
            .iter()
            .all(|f| f.location.line != 60 && !f.location.function.contains("spawned")),
        "{:#?}",
        summary.findings
    );
    assert_eq!(summary.stalls, 2);
    assert_eq!(summary.stalls_without_culprit.len(), 1);
    let t = &summary.stalls_without_culprit[0];
    assert_eq!(t.task_location, "src/service.rs:60:9");
    assert_eq!((t.stalls, t.on_cpu, t.max_ms), (1, 1, 40.0));
    assert_eq!(t.note, None, "recorded with a signal");
    // Each loss counter is stated apart, in plain words.
    let text = String::from_utf8(render_text(&summary)).unwrap();
    assert!(text.contains("\n  1 stack samples that failed"), "{text}");
    assert!(
        text.contains("\n  4 stack samples not taken: the per-minute budget"),
        "{text}"
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
