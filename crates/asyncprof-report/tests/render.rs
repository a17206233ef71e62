//! The renderers on a fixed run file: golden output (deterministic: no clock, no machine
//! paths), escaping of every user string, and the HTML page in a real headless Chromium.
//!
//! Regenerate the golden files after an intended change with
//! `ASYNCPROF_BLESS=1 cargo test -p asyncprof-report --test render` (`ASYNCPROF_UPDATE_GOLDEN=1`
//! works too).

use std::path::{Path, PathBuf};

use asyncprof_report::{render_html, render_json, render_text, Summary};

#[path = "support/fixture.rs"]
mod fixture;

use fixture::{fixture, fixture_with_signal};

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("ASYNCPROF_BLESS").is_some()
        || std::env::var_os("ASYNCPROF_UPDATE_GOLDEN").is_some()
    {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (ASYNCPROF_BLESS=1 writes it)", path.display()));
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
        text.contains("src/service.rs:60:9: 1 stall, 40.0 ms in all, longest 40.0 ms; 1 on CPU (no stack: signals were off)"),
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
fn each_part_of_a_run_split_at_the_file_size_limit_says_where_the_rest_is() {
    // The fixture as the part that filled its file: no end record, a record saying where
    // the run went on.
    let mut run = fixture("ingest", FILE);
    run.ended = false;
    run.header.part = 2;
    run.continued = Some(asyncprof_format::Continued::new(
        "svc.old.run".into(),
        "svc.run".into(),
        3,
        5_400_000_000_000,
    ));
    let text = String::from_utf8(render_text(&Summary::of(&run))).unwrap();
    assert!(
        text.contains(
            "the run went on in svc.run (part 3): this file, part 2 of the run, reached its size \
             limit (ASYNCPROF_MAX_FILE_MB) 5400.0 s into the run and was renamed to svc.old.run"
        ),
        "{text}"
    );
    assert!(
        !text.contains("killed"),
        "not taken for a killed process: {text}"
    );
    assert!(text.contains(
        "part 2 of the run: its run file reached its size limit (ASYNCPROF_MAX_FILE_MB) and the \
         run went on in a new file, so the stalls before part 2 are not here"
    ));
    // The newest part: it ended, and says where the stalls before it are and how many the
    // whole run had (its snapshots count them all: 41 here, 2 of them in this file).
    let mut run = fixture("ingest", FILE);
    run.header.part = 3;
    let mut totals = asyncprof_format::StallTotals::default();
    for _ in 0..40 {
        totals.add(25_000_000);
    }
    totals.add(80_000_000);
    run.snapshot.as_mut().unwrap().runtime.stalls = Some(totals);
    let summary = Summary::of(&run);
    let text = String::from_utf8(render_text(&summary)).unwrap();
    assert!(text.contains("part 3 of the run"), "{text}");
    assert!(text.contains("NAME.old.run"), "{text}");
    assert!(!text.contains("was renamed to"), "{text}");
    assert!(
        text.contains(
            "so the stalls before part 3 are not here: 2 of the run's 41 stalls that ended are \
             here (the run's own count: 1080.0 ms stalled in all, the longest 80.0 ms)"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "stalls in the whole run: 41 (1080.0 ms in all, longest 80.0 ms); 2 in this file"
        ),
        "{text}"
    );
    let html = render_html(&run, &summary, &|_| None);
    assert!(html.contains("part 3 of the run"));
    assert!(
        html.contains("2 stalls (41 in the whole run, 1080.0 ms)"),
        "{html}"
    );
    // A run in one file: neither.
    let text = String::from_utf8(render_text(&Summary::of(&fixture("ingest", FILE)))).unwrap();
    assert!(!text.contains("ASYNCPROF_MAX_FILE_MB"), "{text}");
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

/// `page` loaded in headless Chromium at `fragment`: the DOM after the page's script ran, and
/// the browser's log.
fn load_in_chromium(
    page_name: &str,
    html: &str,
    fragment: &str,
    extra: &[&str],
) -> (String, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/report-browser-test");
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join(page_name);
    std::fs::write(&page, html).unwrap();
    let url = format!(
        "file://{}{fragment}",
        page.canonicalize().unwrap().display()
    );
    let out = std::process::Command::new(chromium())
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1280,1600",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .args(extra)
        .arg(&url)
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The flamegraph test hook's steps as the page's address fragment.
fn flame_steps(steps: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b.is_ascii_alphanumeric() {
                true => (b as char).to_string(),
                false => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let steps: Vec<String> = steps
        .iter()
        .map(|(verb, arg)| format!("{verb}={}", encode(arg)))
        .collect();
    format!("#flame-test={}", steps.join(";"))
}

/// Drive the report's flamegraphs through `steps` and return what each `report` step saw.
fn drive(page_name: &str, html: &str, steps: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let (dom, log) = load_in_chromium(page_name, html, &flame_steps(steps), &["--dump-dom"]);
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    let text = dom
        .split("<pre id=\"flame-test\">")
        .nth(1)
        .and_then(|r| r.split("</pre>").next())
        .unwrap_or_else(|| panic!("the flamegraph test hook did not run:\n{log}"));
    let text = text
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("the hook said {l:?} ({e})")))
        .collect()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The share of the weight of a folded text's stacks that have a frame containing `term`
/// (case-insensitive), as the page writes it.
fn share_of(folded: &str, term: &str) -> String {
    let (mut hit, mut total) = (0u64, 0u64);
    for line in folded.lines() {
        let (stack, w) = line.rsplit_once(' ').unwrap();
        let w: u64 = w.parse().unwrap();
        total += w;
        if stack.to_lowercase().contains(&term.to_lowercase()) {
            hit += w;
        }
    }
    format!("{:.1}%", hit as f64 * 100.0 / total as f64)
}

/// The frame name the stall flamegraph gives a frame of the program's code.
fn own(function: &str, line: u32) -> String {
    format!("{function} (service.rs:{line})")
}

#[test]
fn flamegraphs_zoom_search_reset_and_unfold_in_headless_chromium() {
    let run = fixture::flame_fixture(None);
    let summary = Summary::of(&run);
    let html = render_html(&run, &summary, &|_| None);
    let task = "task spawned at src/service.rs:42:5";
    let (handle, lookup, parse) = (
        own("service::handle::{{closure}}", 44),
        own("service::lookup", 80),
        own("service::parse", 51),
    );
    let seen = drive(
        "flame.html",
        &html,
        &[
            ("on", "stall-flame"),
            ("report", ""),
            ("click", &handle),
            ("report", ""),
            ("search", "SLEEP"),
            ("report", ""),
            ("reset", ""),
            ("report", ""),
            ("key", "ArrowDown"),
            ("key", "Enter"),
            ("report", ""),
            ("key", "/"),
            ("search", "checksum"),
            ("report", ""),
            ("key", "Escape"),
            ("all", ""),
            ("search", "tokio::runtime::task::harness"),
            ("report", ""),
            ("on", "cpu-flame"),
            ("search", "service::parse"),
            ("report", ""),
        ],
    );
    assert_eq!(seen.len(), 8, "{seen:#?}");
    let stall_folded = asyncprof_report::folded_stalls(&run);

    // At first: the folded view, each stack starting at its task.
    let first = &seen[0];
    let names = strings(&first["names"]);
    assert_eq!(strings(&first["full"]), ["all"]);
    for kept in [
        task,
        "task spawned at src/service.rs:60:9",
        "tokio runtime",
        &handle,
        &own("service::main", 9),
        "tokio::runtime::runtime::Runtime::block_on (runtime.rs:100)",
        &own("service::checksum", 70),
        "clock_nanosleep",
    ] {
        assert!(
            names.iter().any(|n| n == kept),
            "{kept} not drawn: {names:#?}"
        );
    }
    for folded in [
        "clone3",
        "start_thread",
        "tokio::runtime::task::harness",
        "std::rt::",
    ] {
        assert!(
            !names.iter().any(|n| n.starts_with(folded)),
            "{folded} drawn in the folded view: {names:#?}"
        );
    }
    assert_eq!(first["share"], "");

    // Zoom: the clicked frame and its ancestors take the full width, its children their
    // share of it, and frames outside it are gone.
    let zoomed = &seen[1];
    assert_eq!(strings(&zoomed["full"]), ["all", task, &handle]);
    assert_eq!(zoomed["cur"], handle.as_str());
    let widths = &zoomed["widths"];
    let (w_lookup, w_parse) = (widths[&lookup].as_f64(), widths[&parse].as_f64());
    // Three samples of four asleep in lookup, one parsing.
    assert!((w_lookup.unwrap() - 0.75).abs() < 0.01, "{widths}");
    assert!((w_parse.unwrap() - 0.25).abs() < 0.01, "{widths}");
    let zoomed_names = strings(&zoomed["names"]);
    assert!(
        !zoomed_names
            .iter()
            .any(|n| n.contains("checksum") || n.contains("serve")),
        "{zoomed_names:#?}"
    );

    // Search, case-insensitive, while zoomed: the matches are highlighted, and their share
    // of all stall time and of the zoomed frame is shown.
    let searched = &seen[2];
    let matches = strings(&searched["matches"]);
    let drawn_sleepers: Vec<String> = strings(&searched["names"])
        .into_iter()
        .filter(|n| n.to_lowercase().contains("sleep"))
        .collect();
    assert_eq!(matches, drawn_sleepers);
    assert_eq!(matches.len(), 3, "{matches:?}");
    let share = searched["share"].as_str().unwrap();
    assert!(
        share.starts_with(&format!(
            "{} of stall time matched (3 frames); 75.0% of the zoomed frame",
            share_of(&stall_folded, "sleep")
        )),
        "{share}"
    );

    // Reset: the whole graph again, no search.
    let reset = &seen[3];
    assert_eq!(strings(&reset["full"]), ["all"]);
    assert_eq!(reset["names"], first["names"]);
    assert!(strings(&reset["matches"]).is_empty());
    assert_eq!(reset["share"], "");

    // The keyboard: down to the first task, Enter zooms on it.
    let keyed = &seen[4];
    assert_eq!(keyed["cur"], task);
    assert_eq!(strings(&keyed["full"]), ["all", task, &handle]);
    assert_eq!(keyed["focus"], "graph");

    // `/` moves to the search box; the search covers the whole graph, not the zoomed frame.
    let slash = &seen[5];
    assert_eq!(slash["focus"], "search");
    assert!(
        strings(&slash["matches"]).is_empty(),
        "outside the zoomed frame"
    );
    let share = slash["share"].as_str().unwrap();
    assert!(
        share.starts_with(&format!(
            "{} of stall time matched (1 frame); 0.0% of the zoomed frame",
            share_of(&stall_folded, "checksum")
        )),
        "{share}"
    );

    // Escape in the search box cleared it; "show all frames" draws every frame, whose
    // runtime frames can then be searched.
    let all = &seen[6];
    let names = strings(&all["names"]);
    assert!(names.iter().any(|n| n.starts_with("clone3")), "{names:#?}");
    assert!(!names.iter().any(|n| n.starts_with("task spawned at")));
    assert_eq!(strings(&all["full"]), ["all"], "the toggle resets the zoom");
    let share = all["share"].as_str().unwrap();
    let harness = "tokio::runtime::task::harness";
    assert_eq!(share_of(&stall_folded, harness), "100.0%");
    assert!(share.starts_with("100.0% of stall time matched"), "{share}");
    assert!(!all["matches"].as_array().unwrap().is_empty());

    // The CPU flamegraph: weighted by samples.
    let cpu = &seen[7];
    let cpu_folded = &run.cpu_profile.as_ref().unwrap().folded;
    let share = cpu["share"].as_str().unwrap();
    assert!(
        share.starts_with(&format!(
            "{} of samples matched (1 frame)",
            share_of(cpu_folded, "service::parse")
        )),
        "{share}"
    );
    let names = strings(&cpu["names"]);
    assert!(names.iter().any(|n| n == "tokio runtime"), "{names:#?}");
    assert!(
        names.iter().any(|n| n == "service::parse"),
        "hash removed: {names:#?}"
    );
}

#[test]
fn a_hostile_frame_name_is_drawn_as_text_in_headless_chromium() {
    let hostile = "</script><script>document.title='pwned'</script><!--\u{2028}&amp;";
    let run = fixture::flame_fixture(Some(hostile));
    let summary = Summary::of(&run);
    let html = render_html(&run, &summary, &|_| None);
    let name = format!("{hostile} (service.rs:81)");
    let seen = drive(
        "hostile-flame.html",
        &html,
        &[("on", "stall-flame"), ("search", "pwned"), ("report", "")],
    );
    assert_eq!(strings(&seen[0]["matches"]), [name]);
    let (dom, _) = load_in_chromium("hostile-flame.html", &html, "", &["--dump-dom"]);
    assert!(dom.contains("<title>asyncprof"), "the page's title changed");
    assert!(!dom.contains("<title>pwned"));
}
