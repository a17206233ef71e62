//! Many runs at once: `report A.run B.run ...` merges the runs of one service's instances, and
//! `diff BASE NEW` compares two runs. Known truth: the `scraper` pipeline's bad variant blocks
//! its worker at its marked line (a blocking-call), and its fixed twin does not.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{asyncprof, temp};

/// The pipeline's source and the line its marker names.
fn marker() -> (PathBuf, u32) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/bad-pipelines/src/pipelines/scraper.rs");
    let text = std::fs::read_to_string(&src).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("// asyncprof-expect: blocking-call"))
        .expect("the scraper pipeline marks its defect") as u32
        + 1;
    (src, line)
}

/// Record one quick run of the scraper pipeline's `variant` into `path`, as `bench` does;
/// `line` is the marked line.
///
/// The assertions below are about merging and diffing, so their inputs must be clean runs: a
/// bad run whose one located finding is the marked blocking call, a fixed run with none. A
/// loaded machine can hold a worker in a library's system call now and then (a lone 33.7 ms
/// `blocking-call` inside reqwest's `send` in one CI run of the bad variant); such a run is
/// recorded again, at most `TRIES` times in all, and the test fails if none comes out clean.
/// How often the detectors find only what is marked is `asyncprof bench --check`'s to gate.
fn record_pipeline(variant: &str, path: &Path, line: u32) {
    const TRIES: usize = 3;
    let mut strays = Vec::new();
    for _ in 0..TRIES {
        let out = Command::new(env!("CARGO_BIN_EXE_asyncprof"))
            .args(["__pipeline", "scraper", variant, "quick"])
            .env("ASYNCPROF_OUT", path)
            .env("ASYNCPROF_STALL_THRESHOLD_MS", "10")
            .output()
            .expect("the asyncprof binary runs");
        assert!(
            out.status.success(),
            "scraper {variant}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report = json(&asyncprof(&["report", path.to_str().unwrap(), "--json"]));
        let located: Vec<&serde_json::Value> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            // A finding of the machine (cpu-contention) has no line: line 0.
            .filter(|f| f["location"]["line"].as_u64().unwrap_or(0) != 0)
            .collect();
        let marked =
            |f: &serde_json::Value| f["kind"] == "blocking-call" && f["location"]["line"] == line;
        let clean = match variant {
            "bad" => located.len() == 1 && marked(located[0]),
            _ => located.is_empty(),
        };
        if clean {
            return;
        }
        let found = serde_json::to_string(&located).unwrap();
        eprintln!("scraper {variant}: not a clean run, recorded again: {found}");
        strays.push(found);
    }
    panic!("scraper {variant}: no clean run in {TRIES} tries: {strays:#?}");
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &std::process::Output) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(0), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The finding of `findings` at the marked line.
fn at_marker(findings: &serde_json::Value, line: u32) -> &serde_json::Value {
    findings
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "blocking-call" && f["location"]["line"] == line)
        .unwrap_or_else(|| panic!("no blocking-call at line {line} in {findings:#}"))
}

/// Sum of a folded profile's weights.
fn folded_weight(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// Three runs of the bad variant and two of the fixed one, recorded one after the other (side
/// by side they would load the machine), read by every assertion below.
#[test]
fn merged_instances_and_diffs_of_bad_and_fixed_runs() {
    let dir = temp("many").with_extension("d");
    std::fs::create_dir_all(&dir).unwrap();
    let (src, line) = marker();
    let path = |name: &str| dir.join(format!("{name}.run"));
    let (b1, b2, b3, f1, f2) = (
        path("bad-1"),
        path("bad-2"),
        path("bad-3"),
        path("fixed-1"),
        path("fixed-2"),
    );
    for (variant, p) in [
        ("bad", &b1),
        ("bad", &b2),
        ("bad", &b3),
        ("fixed", &f1),
        ("fixed", &f2),
    ] {
        record_pipeline(variant, p, line);
    }
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();
    let run = |args: &[String]| asyncprof(&args.iter().map(String::as_str).collect::<Vec<_>>());

    // Each bad run alone: its finding at the marked line, the truth the merge must add up.
    let single: Vec<serde_json::Value> = [&b1, &b2, &b3]
        .iter()
        .map(|p| {
            at_marker(
                &json(&run(&["report".into(), s(p), "--json".into()]))["findings"],
                line,
            )
            .clone()
        })
        .collect();
    let one_text = stdout(&run(&["report".into(), s(&b1)]));
    assert!(!one_text.contains("instances"), "{one_text}");

    // Three bad instances: one finding at the marked line, on 3 of 3, its evidence summed.
    let three = [s(&b1), s(&b2), s(&b3)];
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a = vec!["report".to_string()];
        a.extend(three.iter().cloned());
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    };
    let merged = json(&run(&args(&["--json"])));
    assert_eq!(merged["instances"].as_array().unwrap().len(), 3);
    let f = at_marker(&merged["findings"], line);
    assert_eq!(
        (f["instances"].as_u64(), f["of"].as_u64()),
        (Some(3), Some(3))
    );
    let count: u64 = single.iter().map(|f| f["count"].as_u64().unwrap()).sum();
    assert_eq!(f["count"].as_u64(), Some(count), "{f:#}");
    let max = single
        .iter()
        .map(|f| f["max_ms"].as_f64().unwrap())
        .fold(0.0, f64::max);
    assert_eq!(f["max_ms"].as_f64(), Some(max), "{f:#}");
    assert_eq!(
        merged["findings"][0]["location"]["line"], line,
        "ranked first"
    );

    let text = run(&args(&[]));
    assert_eq!(text.status.code(), Some(0), "{}", stderr(&text));
    let text = stdout(&text);
    assert!(text.starts_with("3 instances of "), "{text}");
    let heading = text
        .lines()
        .find(|l| l.contains(&format!("blocking-call at {}:{line} ", src_name(&src, f))))
        .unwrap_or_else(|| panic!("no finding at line {line} in\n{text}"));
    assert!(heading.ends_with(", on 3 of 3 instances"), "{heading}");
    assert!(
        text.contains(&format!("{count} stalls, ")),
        "{count} stalls in\n{text}"
    );

    let html = dir.join("merged.html");
    let folded = dir.join("merged.folded");
    let out = run(&args(&[
        "-o",
        html.to_str().unwrap(),
        "--folded",
        folded.to_str().unwrap(),
    ]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("3 of 3 instances"), "merged HTML");
    assert!(page.contains(&format!(":{line}</span>")), "merged HTML");
    // One folded profile: every run's stall time, added up.
    let mut each = 0;
    for (i, p) in [&b1, &b2, &b3].iter().enumerate() {
        let one = dir.join(format!("{i}.folded"));
        let out = run(&["report".into(), s(p), "--folded".into(), s(&one)]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        each += folded_weight(&one);
    }
    assert!(each > 0);
    assert_eq!(folded_weight(&folded), each);

    // Scored against the marker as one service: found, nothing else.
    let markers = dir.join("src");
    std::fs::create_dir_all(&markers).unwrap();
    std::fs::copy(&src, markers.join("scraper.rs")).unwrap();
    let out = run(&args(&["--expect-markers", markers.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("recall 100%"), "{}", stderr(&out));

    // Two bad instances and a fixed one: the finding is on 2 of 3, naming them.
    let out = run(&["report".into(), s(&b1), s(&f1), s(&b2), "--json".into()]);
    let f = at_marker(&json(&out)["findings"], line).clone();
    assert_eq!(
        (f["instances"].as_u64(), f["of"].as_u64()),
        (Some(2), Some(3))
    );
    assert_eq!(f["seen_in"], serde_json::json!([s(&b1), s(&b2)]));
    let text = stdout(&run(&["report".into(), s(&b1), s(&f1), s(&b2)]));
    assert!(
        text.contains(&format!(", on 2 of 3 instances ({}, {})", s(&b1), s(&b2))),
        "{text}"
    );

    // The fixed run against the bad one: the blocking call is new, and the gate fails.
    let out = run(&["diff".into(), s(&f1), s(&b1), "--fail-on-regression".into()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("new findings (1):"), "{text}");
    assert!(text.contains(&format!(":{line} in ")), "{text}");
    let err = stderr(&out);
    assert!(err.contains("--fail-on-regression"), "{err}");
    assert!(
        err.contains("new finding: blocking-call at ") && err.contains(&format!(":{line} in ")),
        "{err}"
    );
    let d = json(&run(&["diff".into(), s(&f1), s(&b1), "--json".into()]));
    assert_eq!(d["new_findings"][0]["location"]["line"], line);
    assert_eq!(d["vanished_findings"].as_array().unwrap().len(), 0);
    assert!(d["stall_time"]["new_ns"].as_u64().unwrap() > 0);
    assert!(!d["locations"].as_array().unwrap().is_empty());

    // Two fixed runs: nothing new, the gate passes; nor does a fix fail it.
    for (base, new, vanished) in [(&f1, &f2, 0), (&b1, &f1, 1)] {
        let out = run(&[
            "diff".into(),
            s(base),
            s(new),
            "--fail-on-regression".into(),
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\n{}",
            stdout(&out),
            stderr(&out)
        );
        let text = stdout(&out);
        assert!(text.contains("new findings: none"), "{text}");
        if vanished > 0 {
            assert!(text.contains("vanished findings (1):"), "{text}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The file name a finding gives for `src` (the compiler's path, absolute or relative).
fn src_name(src: &Path, f: &serde_json::Value) -> String {
    let file = f["location"]["file"].as_str().unwrap().to_string();
    assert!(
        file.ends_with(src.file_name().unwrap().to_str().unwrap()),
        "{file}"
    );
    file
}

#[test]
fn a_damaged_or_missing_run_among_several_is_one_clear_error() {
    let good = temp("many-good");
    crate::record(&good);
    let damaged = temp("many-damaged");
    let mut bytes = std::fs::read(&good).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&damaged, &bytes).unwrap();
    let (g, d) = (good.to_str().unwrap(), damaged.to_str().unwrap());
    let missing = "/nonexistent/asyncprof-many.run";
    for (args, named) in [
        (vec!["report", g, d], d),
        (vec!["report", g, missing, g], missing),
        (vec!["diff", g, d], d),
        (vec!["diff", missing, g], missing),
    ] {
        let out = asyncprof(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!("error: cannot read run file {named}")),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // A flag that takes one run file says so.
    let out = asyncprof(&["report", g, g, "--pprof", "/tmp/asyncprof-many.pb.gz"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--pprof takes one run file"),
        "{}",
        stderr(&out)
    );
    // And `diff` takes exactly two.
    let out = asyncprof(&["diff", g]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_file(&good).ok();
    std::fs::remove_file(&damaged).ok();
}

/// Record blocking stalls with a run-file limit small enough that the run goes on in new
/// files: the run file and the part before it (`.old.run`).
fn record_in_parts(path: &Path) -> PathBuf {
    let _one = crate::RECORDING.lock().unwrap_or_else(|p| p.into_inner());
    let old = path.with_extension("old.run");
    std::fs::remove_file(&old).ok();
    let guard = asyncprof::Profiler::builder()
        .out(path)
        .flush_interval(std::time::Duration::from_millis(50))
        .max_file_size(256 << 10)
        .start()
        .unwrap();
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.worker_threads(2);
    let rt = guard.instrument(&mut b).enable_all().build().unwrap();
    rt.block_on(async {
        for _ in 0..40 {
            tokio::spawn(async { std::thread::sleep(std::time::Duration::from_millis(15)) })
                .await
                .unwrap();
        }
    });
    drop(rt);
    drop(guard);
    old
}

#[test]
fn the_parts_of_a_run_that_went_on_in_a_new_file_read_as_one_run() {
    let path = temp("parts");
    let old = record_in_parts(&path);
    let (p, o) = (path.to_str().unwrap(), old.to_str().unwrap());
    let read = |f: &Path| asyncprof_format::read_path(f).unwrap();
    let (newest, before) = (read(&path), read(&old));
    assert!(newest.header.part >= 1, "the run went on in a new file");
    assert_eq!(before.header.part + 1, newest.header.part);
    let ids: std::collections::BTreeSet<u64> = newest
        .stalls
        .iter()
        .chain(&before.stalls)
        .map(|s| s.id)
        .collect();
    assert!(ids.len() > newest.stalls.len() && ids.len() > before.stalls.len());

    // Given in either order: one run, every stall of both parts, the newest part's totals.
    for args in [
        vec!["report", o, p, "--json"],
        vec!["report", p, o, "--json"],
    ] {
        let out = asyncprof(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            v.get("instances").is_none(),
            "one run, not merged instances: {v}"
        );
        assert_eq!(v["stalls"], ids.len() as u64, "{args:?}");
        let spawned = newest.snapshot.as_ref().unwrap().runtime.tasks_spawned;
        assert_eq!(v["runtime"]["tasks_spawned"], spawned, "{args:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "parts {}, {} of one run read as one",
                before.header.part, newest.header.part
            )),
            "{err}"
        );
        let warnings = v["warnings"].to_string();
        assert!(
            !warnings.contains("was renamed to"),
            "the joined run ended: {warnings}"
        );
    }
    // Alone, the newest part is part of a run and says so.
    let out = asyncprof(&["report", p]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("part {} of the run", newest.header.part)),
        "{text}"
    );
    std::fs::remove_file(&path).ok();
    std::fs::remove_file(&old).ok();
}
