//! The metrics endpoint (`ASYNCPROF_METRICS_ADDR`) scraped by a real Prometheus server (the
//! Debian package `prometheus`, which `.ci/test` installs), on loopback, every second, while
//! a bad pipeline and then its fixed twin run in processes of their own.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port free now on loopback.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET http://127.0.0.1:{port}{path}`: the status code and the body, or `None` when nothing
/// answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    // Prometheus answers its API in chunks; the JSON needs only the chunks' text joined.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The result vector of a PromQL instant query.
fn query(prometheus: u16, promql: &str) -> Vec<serde_json::Value> {
    let Some((200, body)) = get(
        prometheus,
        &format!("/api/v1/query?query={}", percent_encode(promql)),
    ) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Poll `check` every 200 ms until it returns `Some`, or `None` after `limit`.
fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Kills the child when the test ends, passed or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("`{name}` is not installed: install the Debian package prometheus (.ci/test does)");
}

/// A pipeline variant in a process of its own, serving metrics on `port`.
fn pipeline(variant: &str, port: u16, dir: &Path) -> Killed {
    let child = Command::new(env!("CARGO_BIN_EXE_asyncprof"))
        .args(["__pipeline", "scraper", variant, "default"])
        .env("ASYNCPROF_OUT", dir.join(format!("scraper-{variant}.run")))
        .env("ASYNCPROF_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Killed(child)
}

/// The line of the bad scraper's defect, from its marker.
fn marked_line() -> String {
    let src = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/bad-pipelines/src/pipelines/scraper.rs"
    );
    let text = std::fs::read_to_string(src).unwrap();
    let i = text
        .lines()
        .position(|l| l.contains("// asyncprof-expect: blocking-call"))
        .unwrap();
    (i + 1).to_string()
}

#[test]
fn prometheus_scrapes_the_stall_counter_with_the_marked_line_and_the_fixed_twin_stays_at_zero() {
    let prometheus = tool("prometheus");
    let promtool = tool("promtool");
    let dir = std::env::temp_dir().join(format!("asyncprof-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (bad_port, fixed_port, prom_port) = (free_port(), free_port(), free_port());
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  \
             - job_name: bad\n    static_configs:\n      - targets: ['127.0.0.1:{bad_port}']\n  \
             - job_name: fixed\n    static_configs:\n      - targets: ['127.0.0.1:{fixed_port}']\n"
        ),
    )
    .unwrap();
    let _server = Killed(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(Duration::from_secs(30), || {
        get(prom_port, "/-/ready").filter(|(s, _)| *s == 200)
    })
    .expect("Prometheus is ready within 30 s");
    // Its scrape loops start a few seconds after it is ready (target discovery is throttled):
    // the pipelines start once both targets have been tried (down: nothing listens yet).
    wait_for(Duration::from_secs(30), || {
        let (_, body) = get(prom_port, "/api/v1/targets")?;
        (body.matches("\"health\":\"down\"").count() == 2).then_some(())
    })
    .expect("Prometheus scrapes both targets within 30 s");

    // The bad pipeline: its stall counter reaches Prometheus with the marked file and line.
    // The pipeline runs a few seconds: on a busy machine it can end before Prometheus's next
    // scrape after its first stall. Its series are queried over the last minutes (a finished
    // target's series are stale for an instant query), and a run that ended unscraped is run
    // again, three runs at most.
    let line = marked_line();
    let promql = "max_over_time(asyncprof_stalls_total{job=\"bad\"}[5m])";
    let marked = |seen: &[serde_json::Value]| {
        seen.iter()
            .find(|s| {
                s["metric"]["line"].as_str() == Some(line.as_str())
                    && s["metric"]["kind"] == "blocking-call"
            })
            .cloned()
    };
    let mut seen = Vec::new();
    let mut found = None;
    for _ in 0..3 {
        let mut bad = pipeline("bad", bad_port, &dir);
        // The endpoint's own text, as promtool checks it.
        let text = wait_for(Duration::from_secs(20), || {
            get(bad_port, "/metrics").and_then(|(status, body)| {
                (status == 200 && body.contains("asyncprof_stalls_total{")).then_some(body)
            })
        })
        .expect("a stall on the endpoint within 20 s");
        let mut check = Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        check
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let checked = check.wait_with_output().unwrap();
        assert!(
            checked.status.success(),
            "promtool check metrics: {}{}\n{text}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
        // While the pipeline runs, and two scrape intervals after it ended.
        let mut ended: Option<Instant> = None;
        found = wait_for(Duration::from_secs(30), || {
            seen = query(prom_port, promql);
            if let Some(series) = marked(&seen) {
                return Some(Some(series));
            }
            if ended.is_none() && matches!(bad.0.try_wait(), Ok(Some(_))) {
                ended = Some(Instant::now());
            }
            ended
                .filter(|at| at.elapsed() > Duration::from_secs(2))
                .map(|_| None)
        })
        .flatten();
        let _ = bad.0.wait();
        if found.is_some() {
            break;
        }
    }
    let series = found.unwrap_or_else(|| {
        panic!(
            "no blocking-call stall at line {line} in Prometheus after 3 runs: {seen:#?}; \
             targets: {:?}",
            get(prom_port, "/api/v1/targets")
        )
    });
    let metric = &series["metric"];
    assert!(
        metric["file"]
            .as_str()
            .unwrap()
            .ends_with("examples/bad-pipelines/src/pipelines/scraper.rs"),
        "{series}"
    );
    assert!(
        metric["function"].as_str().unwrap().contains("scraper"),
        "{series}"
    );
    let stalls: f64 = series["value"][1].as_str().unwrap().parse().unwrap();
    assert!(stalls >= 1.0, "{series}");
    // The poll histograms are there too, by spawn location.
    assert!(
        !query(
            prom_port,
            "max_over_time(asyncprof_poll_duration_seconds_count{job=\"bad\"}[5m])"
        )
        .is_empty(),
        "no poll histogram"
    );

    // The fixed twin: scraped the same way, its stall counters stay at zero (stalls the
    // machine caused, kind "preempted", are not the pipeline's).
    let mut fixed = pipeline("fixed", fixed_port, &dir);
    wait_for(Duration::from_secs(20), || {
        let polls = query(
            prom_port,
            "sum(max_over_time(asyncprof_polls_total{job=\"fixed\"}[5m])) > 100",
        );
        (!polls.is_empty()).then_some(())
    })
    .expect("Prometheus scrapes the fixed twin within 20 s");
    let _ = fixed.0.wait();
    // One more scrape interval for the last samples.
    std::thread::sleep(Duration::from_secs(2));
    // Over the run (the target is gone now, its series stale for instant queries).
    let fixed_stalls = query(
        prom_port,
        "max_over_time(asyncprof_stalls_total{job=\"fixed\",kind!=\"preempted\"}[5m])",
    );
    assert!(
        fixed_stalls.is_empty(),
        "the fixed twin stalled: {fixed_stalls:?}"
    );
    let running = query(
        prom_port,
        "max_over_time(asyncprof_stalls_running{job=\"fixed\"}[5m])",
    );
    assert!(
        !running.is_empty(),
        "the fixed twin's stall gauge was scraped"
    );
    std::fs::remove_dir_all(&dir).ok();
}
