//! The human-readable summary `asyncprof report` prints without `--json`.

use std::fmt::Write as _;

use crate::{Latency, Summary};

/// A duration in its unit, as reports print it: `870ns`, `12.5µs`, `3.1ms`.
pub fn dur(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns}ns"),
        1_000..=999_999 => format!("{:.1}µs", ns as f64 / 1e3),
        _ => format!("{:.1}ms", ns as f64 / 1e6),
    }
}

fn lat(l: &Latency) -> String {
    format!(
        "p50 {} p99 {} max {}",
        dur(l.p50_ns),
        dur(l.p99_ns),
        dur(l.max_ns)
    )
}

/// `front (multi-thread, 2 workers), db (multi-thread, 1 worker)`.
pub(crate) fn runtime_list(runtimes: &[asyncprof_format::RuntimeInfo]) -> String {
    runtimes
        .iter()
        .map(|r| {
            let flavor = match r.flavor {
                asyncprof_format::Flavor::CurrentThread => "current-thread",
                asyncprof_format::Flavor::MultiThread => "multi-thread",
                _ => "unknown flavor",
            };
            let s = if r.workers == 1 { "" } else { "s" };
            format!("{} ({flavor}, {} worker{s})", r.label(), r.workers)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `2 on CPU, 1 asleep (futex), 1 never returned`: what a task's stalls without a line were.
/// Stalls on CPU without a stack in a run without signals point to [`crate::SIGNALS_OFF`],
/// which heads the report.
pub(crate) fn task_stall_evidence(t: &crate::TaskStalls) -> String {
    let mut parts = Vec::new();
    if t.on_cpu > 0 {
        parts.push(if t.note.is_some() {
            // The note is the signals-off sentence, said once at the top of the report.
            format!("{} on CPU (no stack: signals were off)", t.on_cpu)
        } else {
            format!("{} on CPU", t.on_cpu)
        });
    }
    if t.asleep > 0 {
        parts.push(if t.syscalls.is_empty() {
            format!("{} asleep", t.asleep)
        } else {
            format!("{} asleep ({})", t.asleep, t.syscalls.join(", "))
        });
    }
    let other = t.stalls.saturating_sub(t.on_cpu.saturating_add(t.asleep));
    if other > 0 {
        parts.push(format!("{other} not classified"));
    }
    if t.never_returned > 0 {
        parts.push(format!("{} never returned", t.never_returned));
    }
    if t.with_stack > 0 {
        parts.push(format!(
            "{} with stacks that never reached your code",
            t.with_stack
        ));
    }
    parts.join(", ")
}

/// One finding: its heading (with `seen`, e.g. `3 of 3 instances`, when several runs were
/// merged), its evidence, what to do, and the lines folded into it.
pub(crate) fn write_finding(o: &mut String, f: &crate::Finding, seen: Option<&str>) {
    let evidence = match &f.queue {
        None if !f.evidence.is_empty() => f.evidence.join("\n    "),
        Some(q) if f.kind == "queue-growth" => format!(
            "{} sent, {} received, depth {} at the end (max {}), +{:.0} items/s",
            q.enqueued, q.dequeued, q.depth, q.max_depth, q.growth_per_s
        ),
        Some(q) => format!(
            "full {:.0}% of the run; senders waited {} times, {:.1} ms in all, longest {:.1} ms; {} refused{}",
            q.full_share * 100.0,
            f.count,
            f.total_ms,
            f.max_ms,
            q.rejected,
            if q.upstream.is_empty() {
                String::new()
            } else {
                format!("; also full because of it: {}", q.upstream.join(", "))
            }
        ),
        None => format!(
            "{}, {:.1} ms in all, longest {:.1} ms{}{}{}",
            stalls_count(f.count),
            f.total_ms,
            f.max_ms,
            f.primitive_text().map_or_else(String::new, |p| format!("; calls {p}")),
            f.syscall.as_deref().map_or_else(String::new, |p| format!(", asleep in {p}")),
            if f.runtimes.is_empty() {
                String::new()
            } else {
                format!("; on {}", f.runtimes.join(", "))
            },
        ),
    };
    let place = match f.no_line_reason() {
        Some(why) => format!(" {why}"),
        None => format!(
            " at {}:{} in {}",
            f.location.file, f.location.line, f.location.function
        ),
    };
    let _ = writeln!(
        o,
        "  {:?} {}{}{}\n    {}\n    {}",
        f.severity,
        f.kind,
        place,
        seen.map_or_else(String::new, |n| format!(", on {n}")),
        evidence,
        f.recommendation
    );
    for c in &f.called_from {
        let _ = writeln!(o, "    called from: {c}");
    }
    for a in &f.also {
        let _ = writeln!(o, "    also: {a}");
    }
}

/// The loss counters, or `loss: none` when every one is 0.
pub(crate) fn write_loss(o: &mut String, counters: &[(u64, &str)]) {
    let lost: Vec<&(u64, &str)> = counters.iter().filter(|(n, _)| *n > 0).collect();
    if lost.is_empty() {
        let _ = writeln!(
            o,
            "loss: none (nothing dropped, clamped, untracked or skipped)"
        );
    } else {
        let _ = writeln!(o, "loss:");
        for (n, what) in lost {
            let _ = writeln!(o, "  {n} {what}");
        }
    }
}

/// Up to 20 spawn locations, busiest first, under `title`.
pub(crate) fn write_locations(o: &mut String, title: &str, locations: &[crate::LocationSummary]) {
    let _ = writeln!(o, "\n{title}");
    for loc in locations.iter().take(20) {
        let _ = writeln!(
            o,
            "  {}\n    tasks {}, polls {}, busy {:.1}ms; poll {}; delay p50 {} p99 {}",
            loc.location,
            loc.tasks_spawned,
            loc.polls,
            loc.busy_ms,
            lat(&loc.poll),
            dur(loc.scheduled.p50_ns),
            dur(loc.scheduled.p99_ns)
        );
    }
}

/// The stalls no finding blames: without a stack or a task, or preempted.
pub(crate) fn write_unblamed(o: &mut String, unattributed: u64, preempted: u64) {
    if unattributed > 0 {
        let _ = writeln!(
            o,
            "  ({unattributed} stalls had no stack sample and no tracked task: no line to blame)"
        );
    }
    if preempted > 0 {
        let _ = writeln!(
            o,
            "  ({preempted} stalls were a thread, or the holder of a lock it waited for inside an awaited library call, waiting for a core, not its poll's code: the machine was overloaded)"
        );
    }
}

/// Where a finding is, as a diff lists it: `at FILE:LINE in FUNCTION`; a culprit with no file
/// (a build without debug info) by its function; none at all, runtime-wide.
fn place(l: &crate::findings::FindingLocation) -> String {
    match (l.file.is_empty(), l.function.is_empty()) {
        (false, _) => format!("at {}:{} in {}", l.file, l.line, l.function),
        (true, false) => format!("in {} (no line)", l.function),
        (true, true) => "(runtime-wide)".to_string(),
    }
}

/// "1 finding", "3 findings".
fn findings_count(n: u64) -> String {
    format!("{n} finding{}", if n == 1 { "" } else { "s" })
}

/// "1 stall", "3 stalls".
pub(crate) fn stalls_count(n: u64) -> String {
    format!("{n} stall{}", if n == 1 { "" } else { "s" })
}

/// Render the summary as text for a terminal.
pub fn render_text(s: &Summary) -> Vec<u8> {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} (pid {}): {:.1}s, {:?} tier, {:?} runtime, {} worker{}",
        s.program,
        s.pid,
        s.duration_ms / 1e3,
        s.tier,
        s.flavor,
        s.workers,
        if s.workers == 1 { "" } else { "s" }
    );
    if s.config.stall_signal == 0 {
        let _ = writeln!(o, "{}", crate::SIGNALS_OFF);
    }
    if s.runtimes.len() > 1 {
        let _ = writeln!(o, "runtimes: {}", runtime_list(&s.runtimes));
    }
    for w in &s.warnings {
        let _ = writeln!(o, "warning: {w}");
    }
    write_loss(&mut o, &crate::summary::loss_counters(&s.loss));
    let r = &s.runtime;
    let _ = writeln!(
        o,
        "runtime: {} polls, {} tasks spawned, {} alive; poll {}; scheduling delay {}",
        r.polls,
        r.tasks_spawned,
        r.tasks_alive,
        lat(&r.poll),
        lat(&r.scheduled)
    );
    if let Some(t) = r.stalls.filter(|t| t.count > s.stalls) {
        // Earlier parts of the run (or records lost) hold stalls this file does not.
        let _ = writeln!(
            o,
            "stalls in the whole run: {} ({:.1} ms in all, longest {:.1} ms); {} in this file",
            t.count, t.total_ms, t.longest_ms, s.stalls
        );
    }
    for l in &s.load {
        let pct =
            |x: Option<f64>| x.map_or_else(|| "?".to_string(), |x| format!("{:.0}%", x * 100.0));
        let _ = writeln!(
            o,
            "load of {}: workers busy {}, tasks waiting for a worker {:.1} mean / {} max, \
             blocking jobs waiting {} max ({} threads), waited for a CPU {}, memory {:.0} -> {:.0} MiB \
             ({} samples)",
            l.runtime,
            pct(l.busy_share),
            l.ready_mean,
            l.ready_max,
            l.blocking_queue_max,
            l.blocking_threads_max,
            pct(l.cpu_wait_share),
            l.rss_mib.0,
            l.rss_mib.1,
            l.samples
        );
    }
    if s.findings.is_empty() {
        let _ = writeln!(o, "\nno findings ({} stalls)", s.stalls);
    } else {
        let _ = writeln!(o, "\nfindings:");
    }
    write_unblamed(&mut o, s.unattributed_stalls, s.preempted_stalls);
    for f in &s.findings {
        write_finding(&mut o, f, None);
    }
    if !s.stalls_without_culprit.is_empty() {
        let _ = writeln!(
            o,
            "\nstalls without a line to blame (no stack showed a line of your code; evidence about their task, not a finding):"
        );
        for t in &s.stalls_without_culprit {
            let _ = writeln!(
                o,
                "  task spawned at {}: {}, {:.1} ms in all, longest {:.1} ms; {}",
                t.task_location,
                stalls_count(t.stalls),
                t.total_ms,
                t.max_ms,
                task_stall_evidence(t)
            );
        }
    }
    write_locations(&mut o, "spawn locations (busiest first):", &s.locations);
    if !s.queues.is_empty() {
        let _ = writeln!(o, "\nqueues:");
        for q in &s.queues {
            let _ = writeln!(
                o,
                "  {} ({:?}, capacity {}) at {}\n    {} in, {} out, {} refused; depth {} (max {}); full {:.0}% of samples; send wait {}; receive wait {}",
                q.name,
                q.kind,
                q.capacity.map_or_else(|| "unbounded".to_string(), |c| c.to_string()),
                q.location,
                q.enqueued,
                q.dequeued,
                q.rejected,
                q.depth,
                q.max_depth,
                q.full_share * 100.0,
                lat(&q.send_wait),
                lat(&q.recv_wait)
            );
        }
    }
    if !s.stages.is_empty() {
        let _ = writeln!(o, "\nstages:");
        for st in &s.stages {
            let _ = writeln!(
                o,
                "  {} ({}): {} spans; {}",
                st.name,
                st.target,
                st.count,
                lat(&st.duration)
            );
        }
    }
    o.into_bytes()
}

/// Several runs merged, as text for a terminal: the runs, the loss summed, the findings
/// ranked across the runs (each saying on how many instances it appeared), and the spawn
/// locations merged.
pub fn render_merged_text(m: &crate::Merged) -> Vec<u8> {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} instances of {}: findings merged across them",
        m.instances.len(),
        m.programs.join(", ")
    );
    for i in &m.instances {
        let _ = writeln!(
            o,
            "  {} ({} pid {}): {:.1}s, {} stalls ({:.1} ms), {}{}",
            i.name,
            i.program,
            i.pid,
            i.duration_ms / 1e3,
            i.stalls,
            i.stall_ms,
            findings_count(i.findings as u64),
            if i.truncated { ", truncated" } else { "" }
        );
    }
    for w in &m.warnings {
        let _ = writeln!(o, "warning: {w}");
    }
    write_loss(&mut o, &m.loss());
    if m.findings.is_empty() {
        let _ = writeln!(o, "\nno findings ({} stalls)", m.stalls);
    } else {
        let _ = writeln!(
            o,
            "\nfindings (ranked across instances: severity, stall time, instances):"
        );
    }
    write_unblamed(&mut o, m.unattributed_stalls, m.preempted_stalls);
    for f in &m.findings {
        write_finding(&mut o, &f.finding, Some(&f.seen()));
    }
    write_locations(
        &mut o,
        "spawn locations (all instances, busiest first):",
        &m.locations,
    );
    o.into_bytes()
}

/// Two runs compared, as text for a terminal: the runs, stall time, new, vanished and
/// persisting findings, each spawn location's p99s, and what fails the gate.
pub fn render_diff_text(d: &crate::Diff) -> Vec<u8> {
    use crate::diff::change_text;
    let mut o = String::new();
    for (label, i) in [("base", &d.base), ("new ", &d.new)] {
        let _ = writeln!(
            o,
            "{label}: {} ({} pid {}): {:.1}s, {}, {}{}",
            i.name,
            i.program,
            i.pid,
            i.duration_ms / 1e3,
            stalls_count(i.stalls),
            findings_count(i.findings as u64),
            if i.truncated { ", truncated" } else { "" }
        );
    }
    let mark = |c: &crate::Change| if c.regressed { "  REGRESSED" } else { "" };
    let _ = writeln!(
        o,
        "stall time: {}{}",
        change_text(&d.stall_time),
        mark(&d.stall_time)
    );
    if d.new_findings.is_empty() {
        let _ = writeln!(o, "\nnew findings: none");
    } else {
        let _ = writeln!(o, "\nnew findings ({}):", d.new_findings.len());
        for f in &d.new_findings {
            write_finding(&mut o, f, None);
        }
    }
    if d.vanished_findings.is_empty() {
        let _ = writeln!(o, "\nvanished findings: none");
    } else {
        let _ = writeln!(o, "\nvanished findings ({}):", d.vanished_findings.len());
        for f in &d.vanished_findings {
            let _ = writeln!(
                o,
                "  {} {} ({} events, {:.1} ms in all)",
                f.kind,
                f.no_line_reason().unwrap_or_else(|| place(&f.location)),
                f.count,
                f.total_ms
            );
        }
    }
    if !d.persisting_findings.is_empty() {
        let _ = writeln!(o, "\nfindings in both ({}):", d.persisting_findings.len());
        for f in &d.persisting_findings {
            let _ = writeln!(
                o,
                "  {} {}: {} → {} events, {:.1} → {:.1} ms in all",
                f.kind,
                place(&f.location),
                f.base_count,
                f.new_count,
                f.base_total_ms,
                f.new_total_ms
            );
        }
    }
    let _ = writeln!(
        o,
        "\nspawn locations (p99 poll time and scheduling delay, base → new; regressed first):"
    );
    for l in d.locations.iter().take(20) {
        let _ = writeln!(
            o,
            "  {} ({} → {} polls)\n    poll p99 {}{}; delay p99 {}{}",
            l.location,
            l.base_polls,
            l.new_polls,
            change_text(&l.poll_p99),
            mark(&l.poll_p99),
            change_text(&l.scheduled_p99),
            mark(&l.scheduled_p99)
        );
    }
    let t = &d.thresholds;
    let mut gates = vec!["a new finding".to_string()];
    if let Some(f) = t.stall_factor {
        gates.push(format!(
            "stall time at ×{f} or more and +{} ms or more",
            t.stall_floor_ms
        ));
    }
    if let Some(f) = t.p99_factor {
        gates.push(format!(
            "a p99 of {} values or more at ×{f} or more and +{} ms or more",
            t.min_values, t.p99_floor_ms
        ));
    }
    let _ = writeln!(o, "\nregressions ({}):", gates.join("; "));
    if d.regressions.is_empty() {
        let _ = writeln!(o, "  none");
    }
    for r in &d.regressions {
        let _ = writeln!(o, "  {r}");
    }
    o.into_bytes()
}
