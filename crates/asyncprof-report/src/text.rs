//! The human-readable summary `asyncprof report` prints without `--json`.

use std::fmt::Write as _;

use crate::{Latency, Summary};

fn dur(ns: u64) -> String {
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

/// Render the summary as text for a terminal.
pub fn render_text(s: &Summary) -> Vec<u8> {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{} (pid {}): {:.1}s, {:?} tier, {:?} runtime, {} workers",
        s.program,
        s.pid,
        s.duration_ms / 1e3,
        s.tier,
        s.flavor,
        s.workers
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
    let lost: Vec<(u64, &str)> = crate::summary::loss_counters(&s.loss)
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .collect();
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
    if s.findings.is_empty() {
        let _ = writeln!(o, "\nno findings ({} stalls)", s.stalls);
    } else {
        let _ = writeln!(o, "\nfindings:");
    }
    if s.unattributed_stalls > 0 {
        let _ = writeln!(
            o,
            "  ({} stalls had no stack sample and no tracked task: no line to blame)",
            s.unattributed_stalls
        );
    }
    if s.preempted_stalls > 0 {
        let _ = writeln!(
            o,
            "  ({} stalls were a thread waiting for a core, not its poll's code: the machine was overloaded)",
            s.preempted_stalls
        );
    }
    for f in &s.findings {
        let evidence = match &f.queue {
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
                "{} stalls, {:.1} ms in all, longest {:.1} ms{}{}{}",
                f.count,
                f.total_ms,
                f.max_ms,
                f.primitive.as_deref().map_or_else(String::new, |p| format!("; calls {p}")),
                f.syscall.as_deref().map_or_else(String::new, |p| format!(", asleep in {p}")),
                if f.runtimes.is_empty() {
                    String::new()
                } else {
                    format!("; on {}", f.runtimes.join(", "))
                },
            ),
        };
        let _ = writeln!(
            o,
            "  {:?} {} at {}:{} in {}\n    {}\n    {}",
            f.severity,
            f.kind,
            f.location.file,
            f.location.line,
            f.location.function,
            evidence,
            f.recommendation
        );
        for a in &f.also {
            let _ = writeln!(o, "    also: {a}");
        }
    }
    if !s.stalls_without_culprit.is_empty() {
        let _ = writeln!(
            o,
            "\nstalls without a line to blame (no stack showed a line of your code; evidence about their task, not a finding):"
        );
        for t in &s.stalls_without_culprit {
            let _ = writeln!(
                o,
                "  task spawned at {}: {} stalls, {:.1} ms in all, longest {:.1} ms; {}",
                t.task_location,
                t.stalls,
                t.total_ms,
                t.max_ms,
                task_stall_evidence(t)
            );
        }
    }
    let _ = writeln!(o, "\nspawn locations (busiest first):");
    for loc in s.locations.iter().take(20) {
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
