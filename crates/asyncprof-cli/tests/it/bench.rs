//! `asyncprof bench`: help, listing, bad input, a real quick run with JSON results, the gates.

use crate::{asyncprof, temp};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_names_the_commands_and_the_gates() {
    let out = asyncprof(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["bench", "run", "report", "Exit codes"] {
        assert!(text.contains(word), "{word} missing from\n{text}");
    }
    assert!(
        !text.contains("__pipeline"),
        "the child command stays hidden"
    );
    let out = asyncprof(&["bench", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--check",
        "--fail-on",
        "--variant",
        "--load",
        "--json",
        "--out",
    ] {
        assert!(text.contains(flag), "{flag} missing from\n{text}");
    }
}

#[test]
fn list_names_every_pipeline_and_its_defect() {
    let out = asyncprof(&["bench", "--list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for p in [
        "scraper",
        "scraper-blocking-client",
        "log-aggregator",
        "log-aggregator-backpressure",
        "market-data",
        "enrichment",
        "news-aggregator",
        "price-monitor",
    ] {
        assert!(text.contains(p), "{p} missing from\n{text}");
    }
    assert!(text.contains("expect queue-growth"), "{text}");
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    for args in [
        vec!["bench", "--load", "enormous"],
        vec!["bench", "--threshold", "0"],
        vec!["bench", "--duration", "ten"],
        vec!["bench", "--fail-on", "slow-code"],
        vec!["bench", "--diagnose", "growth_ratio=fast"],
        vec!["bench", "no-such-pipeline"],
    ] {
        let out = asyncprof(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.starts_with("error"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let blocker = temp("bench-out-blocker");
    std::fs::write(&blocker, b"a file").unwrap();
    let out = asyncprof(&[
        "bench",
        "scraper",
        "--out",
        blocker.join("x").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("cannot create output folder"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    std::fs::remove_file(&blocker).ok();
}

#[test]
fn a_quick_bench_scores_both_variants_and_writes_json_and_reports() {
    let dir = temp("bench-quick");
    let out = asyncprof(&[
        "bench",
        "scraper-blocking-client",
        "--load",
        "quick",
        "--check",
        "--out",
        dir.to_str().unwrap(),
        "--json",
        "-",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Machine output on stdout, human output on stderr.
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results["recall"], 1.0);
    assert_eq!(results["precision"], 1.0);
    let runs = results["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let bad = &runs[0];
    assert_eq!(bad["variant"], "bad");
    assert_eq!(bad["findings"][0]["kind"], "blocking-call");
    assert_eq!(bad["outcome"]["checks"]["pages_parsed"], 60);
    assert_eq!(runs[1]["findings"].as_array().unwrap().len(), 0);
    let human = stderr(&out);
    assert!(human.contains("recall 100%"), "{human}");
    assert!(human.contains("scraper-blocking-client"), "{human}");
    for f in [
        "scraper-blocking-client-bad.run",
        "scraper-blocking-client-bad.txt",
        "scraper-blocking-client-fixed.json",
        "results.json",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn fail_on_a_kind_that_appears_exits_1() {
    let dir = temp("bench-fail-on");
    let out = asyncprof(&[
        "bench",
        "news-aggregator",
        "--variant",
        "bad",
        "--load",
        "quick",
        // Long enough for the hung poll to have held its worker past the 1 s that makes it
        // `runtime-blocked` when the pipeline is stopped, even when its setup is slow (a
        // loaded machine took 4.6 s for a run budgeted 1.5 s and caught the stall younger).
        "--duration",
        "3s",
        "--fail-on",
        "runtime-blocked",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    // The hung pipeline was stopped at its budget and still reported from its run file.
    assert!(text.contains("runtime-blocked"), "{text}");
    assert!(text.contains('*'), "{text}");
    assert!(stderr(&out).contains("--fail-on runtime-blocked"));
    std::fs::remove_dir_all(&dir).ok();
}
