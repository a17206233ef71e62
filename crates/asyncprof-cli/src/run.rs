//! `asyncprof run -- CMD ARGS...`: run a user's program (instrumented with asyncprof) with
//! `ASYNCPROF_OUT` set, optionally drive load at it (HTTP GET with `--load`, or the user's own
//! client with `--load-cmd`), pass Ctrl-C on to it, stop it at `--timeout` or when the load
//! client is done, and report on it when it exits. Every command is started directly, never
//! through a shell.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::report::{read_run, writable_dir, write_reports};
use crate::{term, RunArgs};

/// The child's pid, for the Ctrl-C handler (0: none).
static CHILD: AtomicU32 = AtomicU32::new(0);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// What the load generator did.
#[derive(Debug, Default)]
struct LoadStats {
    sent: u64,
    errors: u64,
    latencies_us: Vec<u64>,
}

/// The URL must point at this machine: the load generator never leaves loopback.
fn check_loopback(url: &str) -> Result<()> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--load {url}: only http:// URLs are supported"))?;
    let host_port = rest.split('/').next().unwrap_or("");
    let host = match host_port.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') || h.starts_with('[') => h,
        _ => host_port,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("--load {url}: the load generator only targets loopback (127.0.0.1, ::1, localhost)");
    }
    Ok(())
}

/// Send GET requests to `url` at `rate` per second for `duration` (at most rate × duration
/// requests), from a few threads with keep-alive connections. Waits up to 10 s for the
/// program to start listening.
fn drive_load(url: String, rate: u32, duration: Duration, stop: Arc<AtomicBool>) -> LoadStats {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    // Wait for the program to listen.
    let ready_by = Instant::now() + Duration::from_secs(10);
    while agent.get(&url).call().is_err() {
        if Instant::now() > ready_by || stop.load(Relaxed) {
            return LoadStats {
                errors: 1,
                ..LoadStats::default()
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let threads = (rate / 20).clamp(1, 16);
    let per_thread = f64::from(rate) / f64::from(threads);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (agent, url, stop) = (agent.clone(), url.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut stats = LoadStats::default();
                let spacing = Duration::from_secs_f64(1.0 / per_thread);
                let mut next = start;
                while start.elapsed() < duration && !stop.load(Relaxed) {
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                    next += spacing;
                    let t = Instant::now();
                    stats.sent += 1;
                    match agent.get(&url).call() {
                        Ok(mut r) if r.status().is_success() => {
                            let _ = r.body_mut().read_to_vec();
                            stats.latencies_us.push(t.elapsed().as_micros() as u64);
                        }
                        _ => stats.errors += 1,
                    }
                }
                stats
            })
        })
        .collect();
    let mut all = LoadStats::default();
    for h in handles {
        if let Ok(s) = h.join() {
            all.sent += s.sent;
            all.errors += s.errors;
            all.latencies_us.extend(s.latencies_us);
        }
    }
    all
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub(crate) fn run(args: &RunArgs, quiet: bool) -> Result<ExitCode> {
    let thresholds = crate::thresholds(&args.diagnose)?;
    if let Some(url) = &args.load {
        check_loopback(url)?;
    }
    writable_dir(&args.out)?;
    let program = &args.command[0];
    let name = Path::new(program)
        .file_name()
        .map_or_else(|| "program".into(), |n| n.to_string_lossy().into_owned());
    let run_file = args.out.join(format!("{name}.run"));
    let _ = std::fs::remove_file(&run_file);
    // Where the run's part before goes if the run file reaches its size limit
    // (ASYNCPROF_MAX_FILE_MB): one left by an earlier run is not this run's.
    let old_part = asyncprof_format::previous_part_path(&run_file);
    let _ = std::fs::remove_file(&old_part);

    let mut cmd = Command::new(program);
    cmd.args(&args.command[1..])
        .env("ASYNCPROF_OUT", &run_file)
        .env("ASYNCPROF_CPU_HZ", args.cpu_hz.to_string());
    if let Some(ms) = args.threshold {
        cmd.env("ASYNCPROF_STALL_THRESHOLD_MS", ms.to_string());
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {program}"))?;
    CHILD.store(child.id(), Relaxed);
    // Ctrl-C stops the program, not asyncprof: it still writes the report afterwards.
    let _ = ctrlc::set_handler(|| {
        INTERRUPTED.store(true, Relaxed);
        let pid = CHILD.load(Relaxed);
        if pid != 0 {
            let _ = asyncprof_sampler::send_signal(pid, 2);
        }
    });

    let stop_load = Arc::new(AtomicBool::new(false));
    let load = args.load.clone().map(|url| {
        let (rate, duration, stop) = (args.rate, args.duration, stop_load.clone());
        std::thread::spawn(move || drive_load(url, rate, duration, stop))
    });
    let load_cmd = args.load_cmd.clone().map(|c| c.0).unwrap_or_default();
    let client = (!load_cmd.is_empty()).then(|| {
        let (cmd, listen, pid) = (load_cmd.clone(), args.listen, child.id());
        std::thread::spawn(move || run_client(&cmd, listen, pid))
    });
    let mut client = client.map(Some);
    let mut client_failed: Option<String> = None;
    let mut stop_at: Option<Instant> = None;

    let started = Instant::now();
    let mut terminated_at: Option<Instant> = None;
    let status = loop {
        if let Some(s) = child.try_wait().context("cannot wait for the program")? {
            break s;
        }
        // The load client is done: the program has served its load, stop it.
        if let Some(slot) = client.as_mut() {
            if slot.as_ref().is_some_and(|h| h.is_finished()) {
                let outcome = slot.take().map(|h| h.join());
                match outcome {
                    Some(Ok(Ok(c))) => {
                        if !quiet {
                            eprintln!(
                                "load command {} exited with {} after {:.1} s: stopping {name}",
                                load_cmd[0],
                                c.status,
                                c.elapsed.as_secs_f64()
                            );
                        }
                        if !c.status.success() {
                            client_failed = Some(format!(
                                "load command {} exited with {}",
                                load_cmd[0], c.status
                            ));
                        }
                    }
                    Some(Ok(Err(err))) => {
                        term::warn(&format!("{err:#}; stopping {name}"));
                        client_failed = Some(format!("{err:#}"));
                    }
                    _ => client_failed = Some("the load command's thread failed".into()),
                }
                stop_at.get_or_insert(Instant::now() + RUN_FILE_CATCH_UP);
            }
        }
        // The client is done: once the run file has caught up, stop the program.
        if stop_at.is_some_and(|t| Instant::now() >= t) && terminated_at.is_none() {
            let _ = asyncprof_sampler::send_signal(child.id(), 15);
            terminated_at = Some(Instant::now());
        }
        if let Some(t) = args.timeout {
            if started.elapsed() > t && terminated_at.is_none() {
                term::warn(&format!(
                    "{name} ran past --timeout {:.1} s: stopping it",
                    t.as_secs_f64()
                ));
                let _ = asyncprof_sampler::send_signal(child.id(), 15);
                terminated_at = Some(Instant::now());
            }
        }
        if terminated_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    CHILD.store(0, Relaxed);
    stop_load.store(true, Relaxed);
    if let Some(h) = load {
        if let Ok(mut s) = h.join() {
            s.latencies_us.sort_unstable();
            if !quiet {
                eprintln!(
                    "load: {} requests, {} errors, latency p50 {:.1} ms p99 {:.1} ms",
                    s.sent,
                    s.errors,
                    percentile(&s.latencies_us, 0.5) as f64 / 1e3,
                    percentile(&s.latencies_us, 0.99) as f64 / 1e3
                );
            }
        }
    }

    let newest = read_run(&run_file).with_context(|| {
        format!(
            "{name} left no readable run file (is it instrumented with asyncprof? it exited with {status})"
        )
    })?;
    // A run that went on in a new file at its size limit: the part before it too.
    let mut parts = Vec::new();
    if let Ok(before) = read_run(&old_part) {
        if before.same_run(&newest) && before.header.part < newest.header.part {
            parts.push(before);
        }
    }
    parts.push(newest);
    let run = asyncprof_format::join_parts(parts).context("no run file")?;
    for w in &run.warnings {
        term::warn(w);
    }
    let summary = crate::report::summarize(&run, &thresholds);
    write_reports(&run_file, &run, &summary)?;
    let text = asyncprof_report::render_text(&summary);
    if !quiet {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(&text)
            .context("cannot write to standard output")?;
    }
    eprintln!(
        "{} findings; run file {}, report {} (also .txt, .json)",
        summary.findings.len(),
        run_file.display(),
        run_file.with_extension("html").display(),
    );
    let stopped_by_us = terminated_at.is_some() || INTERRUPTED.load(Relaxed);
    if let Some(Some(h)) = client {
        // The program exited before its load client finished: stop the client too.
        stop_client(h);
        client_failed = Some(format!(
            "{name} exited (with {status}) before the load command finished"
        ));
    }
    if let Some(why) = &client_failed {
        term::warn(why);
        return Ok(ExitCode::from(1));
    }
    Ok(if status.success() || stopped_by_us {
        ExitCode::SUCCESS
    } else {
        term::warn(&format!("{name} exited with {status}"));
        ExitCode::from(1)
    })
}

/// What the load client did.
#[derive(Debug)]
struct ClientRun {
    status: std::process::ExitStatus,
    elapsed: Duration,
}

/// The client's pid while it runs (0: none), to stop it when the program exits first.
static CLIENT: AtomicU32 = AtomicU32::new(0);

/// Wait until the program listens (on `listen`, or on any TCP port), for at most
/// [`LISTEN_WAIT`], then run the load client with its output shown.
fn run_client(cmd: &[String], listen: Option<std::net::SocketAddr>, pid: u32) -> Result<ClientRun> {
    let by = Instant::now() + LISTEN_WAIT;
    loop {
        let ready = match listen {
            Some(addr) => {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            }
            None => asyncprof_sampler::procfs::listens_on_tcp(pid),
        };
        if ready {
            break;
        }
        if Instant::now() > by || !asyncprof_sampler::procfs::exists(pid) {
            let what = listen.map_or_else(|| "any TCP port".to_string(), |a| a.to_string());
            bail!(
                "the program did not listen on {what} within {} s: the load command {} was not run",
                LISTEN_WAIT.as_secs(),
                cmd[0]
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let mut client = Command::new(&cmd[0])
        .args(&cmd[1..])
        .spawn()
        .with_context(|| format!("cannot start the load command {}", cmd[0]))?;
    CLIENT.store(client.id(), Relaxed);
    let status = client
        .wait()
        .with_context(|| format!("cannot wait for the load command {}", cmd[0]));
    CLIENT.store(0, Relaxed);
    Ok(ClientRun {
        status: status?,
        elapsed: started.elapsed(),
    })
}

/// Stop a load client still running (its program is gone), and wait for its thread.
fn stop_client(h: std::thread::JoinHandle<Result<ClientRun>>) {
    let pid = CLIENT.load(Relaxed);
    if pid != 0 {
        let _ = asyncprof_sampler::send_signal(pid, 15);
    }
    let _ = h.join();
}

/// How long the program runs on after its load client is done, before it is stopped: stall
/// records reach the run file within 100 ms, so a stall that ended with the client's last
/// request is in the file as ended, not as a poll that never returned.
const RUN_FILE_CATCH_UP: Duration = Duration::from_millis(300);

/// How long `--load-cmd` waits for the program to listen.
const LISTEN_WAIT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::check_loopback;

    #[test]
    fn load_only_targets_loopback() {
        for ok in [
            "http://127.0.0.1:8080/x",
            "http://localhost:3000",
            "http://[::1]:80/a",
        ] {
            assert!(check_loopback(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:80/",
            "http://example.com/",
            "https://127.0.0.1/",
            "ftp://localhost/",
        ] {
            assert!(check_loopback(bad).is_err(), "{bad}");
        }
    }
}
