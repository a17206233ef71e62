//! `asyncprof run -- CMD ARGS...`: run a user's program (instrumented with asyncprof) with
//! `ASYNCPROF_OUT` set, optionally drive load at it (HTTP GET with `--load`, or the user's own
//! client with `--load-cmd`), pass Ctrl-C on to it, stop it at `--timeout` or when the load
//! client is done, and report on it when it exits. Every command is started directly, never
//! through a shell.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use signal_hook::consts as sig;

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
    if host_port.contains('@') {
        // `user@host`: the host is what follows the `@`, which a check of the part before
        // would miss (http://127.0.0.1:80@example.com/ goes to example.com).
        bail!("--load {url}: a user name in the URL (user@host) is not supported");
    }
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
    let shown = program.to_string_lossy();
    let name = Path::new(program)
        .file_name()
        .map_or_else(|| "program".into(), |n| n.to_string_lossy().into_owned());
    let run_file = args.out.join(format!("{name}.run"));
    // Where the run's part before goes if the run file reaches its size limit
    // (ASYNCPROF_MAX_FILE_MB).
    let old_part = asyncprof_format::previous_part_path(&run_file);
    // A process still records there (another `asyncprof run` of the same program into this
    // folder, one left running): its run is not this one's to set aside.
    let regular = std::fs::symlink_metadata(&run_file).is_ok_and(|m| m.is_file());
    if let Some(f) = regular
        .then(|| std::fs::File::open(&run_file).ok())
        .flatten()
    {
        if let Ok(false) = asyncprof_sampler::try_lock_exclusive(&f) {
            bail!(
                "{} is being recorded by a running process: stop it, or give another --out",
                run_file.display()
            );
        }
    }
    // Absolute: the program may change its working folder before asyncprof starts in it.
    let out_env = std::path::absolute(&run_file)
        .with_context(|| format!("cannot resolve {}", run_file.display()))?;
    // Caught before the program starts: SIGINT, SIGTERM and SIGHUP stop the program, not
    // asyncprof, which still reports afterwards.
    forward_stop_signals()?;

    let mut cmd = Command::new(program);
    cmd.args(&args.command[1..]).env("ASYNCPROF_OUT", out_env);
    // The user's own ASYNCPROF_CPU_HZ (0 for a program that runs pprof itself) stands unless
    // --cpu-hz is given.
    match args.cpu_hz {
        Some(hz) => {
            cmd.env("ASYNCPROF_CPU_HZ", hz.to_string());
        }
        None if std::env::var_os("ASYNCPROF_CPU_HZ").is_none() => {
            cmd.env("ASYNCPROF_CPU_HZ", DEFAULT_CPU_HZ.to_string());
        }
        None => {}
    }
    if let Some(ms) = args.threshold {
        cmd.env("ASYNCPROF_STALL_THRESHOLD_MS", ms.to_string());
    }
    // An earlier run's files are not this run's: set aside until the program has started,
    // and put back if it cannot start (its data is not lost to a mistyped command).
    let earlier = SetAside::new([&run_file, &old_part]);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            earlier.put_back();
            return Err(e).with_context(|| format!("cannot start {shown}"));
        }
    };
    if let Some(early) = program_started(child.id()) {
        let _ = asyncprof_sampler::send_signal(child.id(), early);
    }
    earlier.remove();

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
            let _ = asyncprof_sampler::send_signal(child.id(), sig::SIGTERM);
            terminated_at = Some(Instant::now());
        }
        if let Some(t) = args.timeout {
            if started.elapsed() > t && terminated_at.is_none() {
                term::warn(&format!(
                    "{name} ran past --timeout {:.1} s: stopping it",
                    t.as_secs_f64()
                ));
                let _ = asyncprof_sampler::send_signal(child.id(), sig::SIGTERM);
                terminated_at = Some(Instant::now());
            }
        }
        if terminated_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    CHILD.store(0, Relaxed);
    if let Some(Some(h)) = client.take() {
        // The program exited before its load client finished: stop the client too.
        stop_client(h);
        client_failed = Some(format!(
            "{name} exited (with {status}) before the load command finished"
        ));
    }
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
    // The findings first: a report file that cannot be written loses none of them.
    let text = asyncprof_report::render_text(&summary);
    // Printed, then written: either failing still leaves the other done.
    let printed = if quiet {
        Ok(())
    } else {
        term::print_stdout(&text)
    };
    let written = write_reports(&run_file, &run, &summary);
    if written.is_ok() {
        let n = summary.findings.len();
        eprintln!(
            "{n} finding{}; run file {}, report {} (also .txt, .json)",
            if n == 1 { "" } else { "s" },
            run_file.display(),
            run_file.with_extension("html").display(),
        );
    }
    if let Some(why) = &client_failed {
        term::warn(why);
    }
    // The program's own status, unless asyncprof (at --timeout, or when the load client was
    // done) or the user (Ctrl-C, SIGTERM, SIGHUP) stopped it and it ended as stopped: a crash
    // on the way out is the program's failure all the same.
    let stopped_by_us = terminated_at.is_some() || INTERRUPTED.load(Relaxed);
    let ok = status.success() || (stopped_by_us && ended_as_stopped(status));
    if !ok {
        term::warn(&format!("{name} exited with {status}"));
    }
    printed?;
    written?;
    Ok(if ok && client_failed.is_none() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// CPU profile samples per second when neither --cpu-hz nor ASYNCPROF_CPU_HZ says.
const DEFAULT_CPU_HZ: u32 = 99;

/// Whether a program that was sent a stop signal ended as one that stops: by such a signal
/// (or SIGKILL, two seconds after SIGTERM), or with a shell's code for one (128 + signal).
fn ended_as_stopped(status: std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    const STOPS: [i32; 4] = [sig::SIGHUP, sig::SIGINT, sig::SIGKILL, sig::SIGTERM];
    status.signal().is_some_and(|s| STOPS.contains(&s))
        || status
            .code()
            .is_some_and(|c| STOPS.iter().any(|s| c == 128 + s))
}

/// Pass SIGINT, SIGTERM and SIGHUP on to the program (once it runs) and remember that the
/// run was stopped, instead of ending asyncprof: a `kill`, `timeout` or CI cancel stops the
/// program and still gets its report. A signal sent to run's whole process group reached the
/// program too when it is in that group, and passing it on would deliver it twice (a second
/// Ctrl-C or SIGTERM is "quit now" to many programs):
///
/// - one the terminal sent (Ctrl-C, a hang-up) went to its foreground process group;
/// - one a process sent is checked against the [`Witness`], a process of run's group that
///   reports the stop signals it gets and who sent them: the same signal from the same sender
///   there was sent to the group (GNU `timeout` signals its child, then the child's whole
///   group; `kill -TERM -PGID`; a service manager signals every process of the service), not
///   to run alone (`kill PID`, a script's `kill $!`).
fn forward_stop_signals() -> Result<()> {
    use asyncprof_sampler::procfs::group_and_session;
    use signal_hook::iterator::exfiltrator::WithOrigin;
    use signal_hook::iterator::SignalsInfo;
    use signal_hook::low_level::siginfo::Cause;
    let mut signals = SignalsInfo::<WithOrigin>::new(STOP_SIGNALS)
        .context("cannot catch SIGINT, SIGTERM and SIGHUP")?;
    let (ready_tx, ready) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            // The witness inherits this thread's mask: it blocks every signal from its start.
            // The handlers run on run's other threads.
            let blocked = asyncprof_sampler::block_all_signals_in_this_thread().is_ok();
            let mut witness = blocked.then(Witness::start).flatten();
            let _ = ready_tx.send(());
            let mut heard = GroupSignals::default();
            loop {
                let Some(first) = signals.forever().next() else {
                    break;
                };
                INTERRUPTED.store(true, SeqCst);
                if CHILD.load(SeqCst) == 0 {
                    if let Some((pid, early)) = signal_before_the_program(first.signal) {
                        let _ = asyncprof_sampler::send_signal(pid, early);
                    }
                    continue;
                }
                // Killed (SIGKILL, the one signal it cannot block): a new one.
                if witness.as_mut().is_some_and(|w| !w.alive()) {
                    witness = Witness::start();
                }
                let at = Instant::now();
                // A group's signal reaches its processes one by one, and `timeout` signals
                // run before its group: the witness is heard once the burst is in.
                std::thread::sleep(WITNESS_WAIT);
                let mut burst = vec![first];
                burst.extend(signals.pending());
                let new = witness.as_mut().map(|w| w.reports.try_iter().collect());
                heard.take(new.unwrap_or_default(), at);
                let pid = CHILD.load(SeqCst);
                if pid == 0 {
                    continue;
                }
                let me = std::process::id();
                let (ours, its) = (group_and_session(me), group_and_session(pid));
                let same_group = matches!((ours, its), (Some(o), Some(i)) if o.0 == i.0);
                let mut handled: Vec<(i32, u32)> = Vec::new();
                for origin in burst {
                    let sender = origin.process.map_or(0, |p| p.pid as u32);
                    if handled.contains(&(origin.signal, sender)) {
                        continue;
                    }
                    handled.push((origin.signal, sender));
                    // The terminal's Ctrl-C went to its foreground process group: the program
                    // got it too when it is in run's group (not in a `setsid` wrapper's). Its
                    // hang-up goes to the session's leader alone: when that is run, the
                    // program did not.
                    let from_terminal = origin.cause == Cause::Kernel
                        && same_group
                        && !(origin.signal == sig::SIGHUP
                            && ours.is_some_and(|o| o.1 == u64::from(me)));
                    let to_group = heard.sent_to_group(origin.signal, sender);
                    if from_terminal || (to_group && same_group) {
                        continue;
                    }
                    let _ = asyncprof_sampler::send_signal(pid, origin.signal);
                    heard.passed_on(origin.signal, sender, at);
                }
            }
        })
        .context("cannot start the signal thread")?;
    // The program starts once the witness is there (or could not be).
    let _ = ready.recv();
    Ok(())
}

/// The signals `run` passes on.
const STOP_SIGNALS: [i32; 3] = [sig::SIGINT, sig::SIGTERM, sig::SIGHUP];

/// How long the signal thread waits for the rest of a burst of stop signals (and the
/// witness's reports of it) before it passes them on.
const WITNESS_WAIT: Duration = Duration::from_millis(300);

/// A witness's report read this long before run got a signal was of another one.
const WITNESS_EARLIEST: Duration = Duration::from_millis(300);

/// A witness's report of a signal run passed on, read up to this long after run got that
/// signal (past the wait for it), was of that signal, late, not of a later one.
const WITNESS_LATE: Duration = Duration::from_millis(400);

/// One stop signal the witness got: which, from which process (0: the kernel), and when run
/// heard of it.
struct WitnessReport {
    signal: i32,
    sender: u32,
    at: Instant,
}

/// The witness's reports not yet matched, and the signals run passed on (which, from whom,
/// when run got it): a report of one of those, come late, is not taken for a later signal's.
#[derive(Default)]
struct GroupSignals {
    reports: Vec<WitnessReport>,
    passed: Vec<(i32, u32, Instant)>,
}

impl GroupSignals {
    /// The witness's reports `new`, for the burst of signals run got at `at`. A group's signal
    /// reaches the witness and run within moments: an earlier report was of another signal (a
    /// `pkill -P` of run's children), and one of a signal passed on, read soon after the wait
    /// for it, was that signal's, late (each signal passed on accounts for one such report).
    fn take(&mut self, new: Vec<WitnessReport>, at: Instant) {
        self.reports.extend(new);
        self.passed.retain(|p| p.2 + WITNESS_LATE >= at);
        self.reports.retain(|r| r.at + WITNESS_EARLIEST >= at);
        let passed = &mut self.passed;
        self.reports.retain(|r| {
            let late = passed.iter().position(|p| {
                (p.0, p.1) == (r.signal, r.sender) && r.at >= p.2 && r.at <= p.2 + WITNESS_LATE
            });
            if let Some(i) = late {
                passed.remove(i);
            }
            late.is_none()
        });
    }

    /// Whether the witness got `signal` from `sender` too (it was sent to run's group); the
    /// report is used up.
    fn sent_to_group(&mut self, signal: i32, sender: u32) -> bool {
        let seen = self
            .reports
            .iter()
            .position(|r| (r.signal, r.sender) == (signal, sender));
        seen.map(|i| self.reports.remove(i)).is_some()
    }

    /// Run passed `signal` from `sender`, got at `at`, on to the program.
    fn passed_on(&mut self, signal: i32, sender: u32, at: Instant) {
        self.passed.push((signal, sender, at));
    }
}

/// A process of run's process group (and of its session and control group) that blocks
/// every signal and takes SIGINT, SIGTERM and SIGHUP as they come (`sigtimedwait`), writing
/// each with its sender to run: one that reached both it and run was sent to the group. It is
/// this binary (`__signal-witness`), started as "signal-witness" so that a `pkill -f
/// asyncprof` meant for run does not reach it (its process name is `exe`); it ends with
/// the thread that started it (run's signal thread, which lasts as long as run), and within
/// half a second of run where that cannot be asked for.
struct Witness {
    child: std::process::Child,
    reports: std::sync::mpsc::Receiver<WitnessReport>,
}

impl Witness {
    /// None when it cannot start: every signal a process sent is then passed on.
    fn start() -> Option<Witness> {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0("signal-witness")
            .arg(WITNESS_COMMAND)
            .arg(std::process::id().to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        // Every signal blocked from its fork on: the mask of the signal thread, which starts
        // it, and which the standard library hands to the child.
        asyncprof_sampler::end_with_this_thread(&mut cmd);
        let mut child = cmd.spawn().ok()?;
        let out = child.stdout.take()?;
        let (tx, reports) = std::sync::mpsc::channel();
        let reader = std::thread::Builder::new()
            .name("signal-witness".into())
            .spawn(move || {
                for line in std::io::BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    let mut words = line.split_whitespace().map(str::parse::<u32>);
                    if let (Some(Ok(signal)), Some(Ok(sender))) = (words.next(), words.next()) {
                        let at = Instant::now();
                        let report = WitnessReport {
                            signal: signal as i32,
                            sender,
                            at,
                        };
                        if tx.send(report).is_err() {
                            break;
                        }
                    }
                }
            });
        if reader.is_err() {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        Some(Witness { child, reports })
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The hidden command the witness runs.
pub(crate) const WITNESS_COMMAND: &str = "__signal-witness";

/// The witness's life (see [`Witness`]): report each stop signal and its sender on stdout
/// until run (`run_pid`, its parent) is gone: it is then another process's child, or its pipe
/// closed.
pub(crate) fn witness(run_pid: Option<std::ffi::OsString>) -> Result<ExitCode> {
    use std::io::Write;
    asyncprof_sampler::block_all_signals_in_this_thread().context("the signal witness's mask")?;
    let run_pid = run_pid
        .and_then(|p| p.to_str()?.parse::<u32>().ok())
        .context("the signal witness takes run's pid")?;
    let mut out = std::io::stdout().lock();
    while std::os::unix::process::parent_id() == run_pid {
        let got = asyncprof_sampler::wait_for_signal(&STOP_SIGNALS, Duration::from_millis(500))
            .context("the signal witness's wait")?;
        if let Some((signal, sender)) = got {
            if writeln!(out, "{signal} {sender}")
                .and_then(|()| out.flush())
                .is_err()
            {
                break;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The starting thread: program `pid` has started. A stop signal that came while it was being
/// started found no program: the one to pass on now, unless the signal thread saw the program
/// and passed it on itself.
fn program_started(pid: u32) -> Option<i32> {
    CHILD.store(pid, SeqCst);
    Some(EARLY_SIGNAL.swap(0, SeqCst)).filter(|&s| s != 0)
}

/// The signal thread: stop signal `signal` came while no program ran yet. It is passed on
/// once the program runs, by whichever of this thread and the starting one (which stores the
/// program, then takes the signal) sees both: the program and the signal to pass on now
/// when this one does.
fn signal_before_the_program(signal: i32) -> Option<(u32, i32)> {
    EARLY_SIGNAL.store(signal, SeqCst);
    let pid = CHILD.load(SeqCst);
    if pid == 0 {
        return None;
    }
    Some((pid, EARLY_SIGNAL.swap(0, SeqCst))).filter(|&(_, s)| s != 0)
}

/// A stop signal that came before the program was started (0: none).
static EARLY_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// An earlier run's files, renamed aside (hidden, beside them) until the program starts.
struct SetAside(Vec<(std::path::PathBuf, std::path::PathBuf)>);

impl SetAside {
    fn new<'a>(paths: impl IntoIterator<Item = &'a std::path::PathBuf>) -> SetAside {
        let mut moved = Vec::new();
        for p in paths {
            let (Some(dir), Some(file)) = (p.parent(), p.file_name()) else {
                continue;
            };
            let aside = dir.join(format!(".{}.earlier", file.to_string_lossy()));
            if std::fs::rename(p, &aside).is_ok() {
                moved.push((p.clone(), aside));
            }
        }
        SetAside(moved)
    }

    /// The program could not start: the earlier files go back where they were.
    fn put_back(self) {
        for (p, aside) in &self.0 {
            let _ = std::fs::rename(aside, p);
        }
    }

    /// The program started: the earlier files are gone.
    fn remove(self) {
        for (_, aside) in &self.0 {
            let _ = std::fs::remove_file(aside);
        }
    }
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

/// Stop a load client still running (its program is gone), and wait for its thread: SIGTERM,
/// then SIGKILL two seconds later for a client that ignores it. Its pid is looked up until
/// the thread ends: a client started just as the program exited is stopped too.
fn stop_client(h: std::thread::JoinHandle<Result<ClientRun>>) {
    let mut termed: Option<(u32, Instant)> = None;
    while !h.is_finished() {
        let pid = CLIENT.load(Relaxed);
        match termed {
            Some((p, at)) if p == pid && at.elapsed() > Duration::from_secs(2) => {
                let _ = asyncprof_sampler::send_signal(pid, sig::SIGKILL);
                termed = Some((pid, Instant::now()));
            }
            Some((p, _)) if p == pid => {}
            _ if pid != 0 => {
                let _ = asyncprof_sampler::send_signal(pid, sig::SIGTERM);
                termed = Some((pid, Instant::now()));
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(20));
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
    use super::{check_loopback, program_started, signal_before_the_program, CHILD};

    /// A stop signal that came while the program was being started is passed on exactly once,
    /// with either call first (each called whole: the steps inside them are not interleaved
    /// here). This test is the only user of the statics in this binary.
    #[test]
    fn a_stop_signal_during_start_up_is_passed_on_once() {
        use std::sync::atomic::Ordering::SeqCst;
        // The signal first: the starting thread passes it on.
        CHILD.store(0, SeqCst);
        assert_eq!(signal_before_the_program(15), None);
        assert_eq!(program_started(42), Some(15));
        // The program stored as the signal thread looked: that thread passes it on.
        CHILD.store(0, SeqCst);
        assert_eq!(program_started(43), None);
        assert_eq!(signal_before_the_program(2), Some((43, 2)));
        assert_eq!(program_started(43), None, "not twice");
        CHILD.store(0, SeqCst);
    }

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
            "http://127.0.0.1:80@example.com/",
        ] {
            assert!(check_loopback(bad).is_err(), "{bad}");
        }
    }
}
