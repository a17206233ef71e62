//! The HTML report: one self-contained file (inline CSS, SVG and a little script), findings
//! first. Rendered with maud, which escapes every value it inserts.

use asyncprof_format::{Histogram, QueueKind, RunFile};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Serialize;

use crate::{charts, stall_kind, Finding, Latency, Summary};

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1280px;margin:0 auto;padding:16px 24px}
header{background:#1d2330;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px} header p{margin:4px 0 0;opacity:.85;font-size:13px}
h2{margin:28px 0 10px;font-size:18px;border-bottom:1px solid #d8dce3;padding-bottom:4px}
.card{background:#fff;border:1px solid #d8dce3;border-radius:6px;padding:12px 16px;margin:10px 0}
.finding.error{border-left:6px solid #c62828}.finding.warning{border-left:6px solid #ef8f00}
.badge{display:inline-block;border-radius:3px;padding:1px 6px;font-size:12px;font-weight:600;color:#fff;margin-right:6px}
.badge.error{background:#c62828}.badge.warning{background:#ef8f00}.badge.ok{background:#2e7d32}
.kind{font-weight:600;font-size:15px} .loc{font-family:ui-monospace,monospace;font-size:13px}
.fix{background:#eef6ee;border-radius:4px;padding:8px 10px;margin:8px 0}
pre{background:#f1f3f6;padding:8px;overflow:auto;font-size:12px;margin:6px 0}
pre .hit{background:#ffe08a;display:inline-block;width:100%}
table{border-collapse:collapse;font-size:13px;background:#fff;width:100%}
th,td{border:1px solid #d8dce3;padding:4px 8px;text-align:right} th{background:#eef1f5;cursor:pointer}
td.l,th.l{text-align:left} .loss{color:#c62828;font-weight:600} .loss ul{margin:4px 0;font-weight:400}
.grid{display:flex;flex-wrap:wrap;gap:12px} .grid>div{background:#fff;border:1px solid #d8dce3;border-radius:6px}
details summary{cursor:pointer;color:#36c} .muted{color:#667085}
"#;

/// Sorting for tables with `class="sortable"`; the self-check the browser test runs.
const SCRIPT: &str = r#"
document.querySelectorAll('table.sortable th').forEach(function(th, col){
  th.addEventListener('click', function(){
    var table = th.closest('table'), body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var desc = th.dataset.desc !== 'true'; th.dataset.desc = desc;
    rows.sort(function(a, b){
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var r = (x !== undefined && y !== undefined) ? (parseFloat(x) - parseFloat(y))
            : a.cells[col].textContent.localeCompare(b.cells[col].textContent);
      return desc ? -r : r;
    });
    rows.forEach(function(r){ body.appendChild(r); });
  });
});
if (location.hash === '#selftest') {
  var problems = [];
  var f = document.getElementById('findings');
  if (!f || f.getBoundingClientRect().height <= 0) problems.push('findings not visible');
  var charts = document.querySelectorAll('main svg');
  charts.forEach(function(s, i){
    var r = s.getBoundingClientRect();
    if (!(r.width > 0 && r.height > 0)) problems.push('chart ' + i + ' has no size');
  });
  var out = document.createElement('pre'); out.id = 'selftest';
  out.textContent = (problems.length ? 'FAIL ' + problems.join('; ') : 'OK') + ' charts=' + charts.length;
  document.body.appendChild(out);
}
"#;

fn ms(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1e6)
}

fn lat_cells(l: &Latency) -> Markup {
    html! {
        td data-v=(l.p50_ns) { (ms(l.p50_ns)) }
        td data-v=(l.p99_ns) { (ms(l.p99_ns)) }
        td data-v=(l.max_ns) { (ms(l.max_ns)) }
    }
}

/// The lines around `line` of `text`, the line itself marked.
fn excerpt(text: &str, line: u32) -> Option<Markup> {
    let lines: Vec<&str> = text.lines().collect();
    let at = (line as usize)
        .checked_sub(1)
        .filter(|&i| i < lines.len())?;
    let from = at.saturating_sub(3);
    let to = (at + 3).min(lines.len() - 1);
    Some(html! {
        pre {
            @for i in from..=to {
                @if i == at {
                    span.hit { (format!("{:>5} | {}", i + 1, lines[i])) } "\n"
                } @else {
                    (format!("{:>5} | {}", i + 1, lines[i])) "\n"
                }
            }
        }
    })
}

/// The loss counters that are not 0, or a line saying nothing was lost.
fn loss_block(counters: &[(u64, &str)]) -> Markup {
    let lost: Vec<&(u64, &str)> = counters.iter().filter(|(n, _)| *n > 0).collect();
    html! {
        @if lost.is_empty() {
            p.muted { "Loss: none (nothing dropped, clamped, untracked or skipped)." }
        } @else {
            div.loss {
                "Lost, clamped or skipped:"
                ul { @for (n, what) in &lost { li { b { (n) } " " (what) "." } } }
            }
        }
    }
}

/// The spawn locations as a sortable table, busiest first.
fn locations_section(locations: &[crate::LocationSummary]) -> Markup {
    html! {
        section #locations {
            h2 { "Spawn locations" }
            table.sortable {
                thead { tr {
                    th.l { "location" } th { "tasks" } th { "polls" } th { "busy ms" }
                    th { "poll p50 ms" } th { "poll p99 ms" } th { "poll max ms" }
                    th { "delay p50 ms" } th { "delay p99 ms" } th { "delay max ms" }
                } }
                tbody {
                    @for l in locations {
                        tr {
                            td.l.loc { (l.location) }
                            td data-v=(l.tasks_spawned) { (l.tasks_spawned) }
                            td data-v=(l.polls) { (l.polls) }
                            td data-v=(l.busy_ms) { (format!("{:.1}", l.busy_ms)) }
                            (lat_cells(&l.poll)) (lat_cells(&l.scheduled))
                        }
                    }
                }
            }
        }
    }
}

/// One finding's card; `seen` (`3 of 3 instances`) when several runs were merged.
fn finding(f: &Finding, seen: Option<&str>, source: &dyn Fn(&str) -> Option<String>) -> Markup {
    let sev = match f.severity {
        crate::Severity::Error => "error",
        crate::Severity::Warning => "warning",
    };
    let is_queue = f.queue.is_some();
    html! {
        div class=(format!("card finding {sev}")) {
            span class=(format!("badge {sev}")) { (sev) }
            span.kind { (f.kind) }
            @if let Some(why) = f.no_line_reason() {
                " " (why)
            } @else {
                " at "
                span.loc { (f.location.file) ":" (f.location.line) }
                " in "
                span.loc { (f.location.function) }
            }
            @if let Some(seen) = seen { ", on " b.seen { (seen) } }
            @if let Some(text) = source(&f.location.file) {
                @if let Some(x) = excerpt(&text, f.location.line) { (x) }
            }
            p {
                @if let Some(q) = &f.queue {
                    @if f.kind == "queue-growth" {
                        "Queue " b { (q.name) } ": " (q.enqueued) " sent, " (q.dequeued)
                        " received, depth " (q.depth) " at the end (max " (q.max_depth) "), +"
                        (format!("{:.0}", q.growth_per_s)) " items/s."
                    } @else {
                        "Queue " b { (q.name) } " full " (format!("{:.0}", q.full_share * 100.0))
                        "% of the run; senders waited " (f.count) " times, "
                        (format!("{:.1}", f.total_ms)) " ms in all, longest "
                        (format!("{:.1}", f.max_ms)) " ms; " (q.rejected) " sends refused."
                    }
                    @if !q.upstream.is_empty() {
                        " Also full because of it: " (q.upstream.join(", ")) "."
                    }
                } @else if !f.evidence.is_empty() {
                    @for (i, e) in f.evidence.iter().enumerate() {
                        @if i > 0 { br; }
                        (e) "."
                    }
                } @else {
                    (crate::text::stalls_count(f.count)) ", " (format!("{:.1}", f.total_ms)) " ms in all, longest "
                    (format!("{:.1}", f.max_ms)) " ms."
                    @if let Some(p) = f.primitive_text() { " Calls " code { (p) } "." }
                    @if let Some(s) = &f.syscall { " Asleep in " code { (s) } "." }
                    @if !f.runtimes.is_empty() { " On " (f.runtimes.join(", ")) "." }
                }
                @if let Some(t) = &f.task_location {
                    span.muted {
                        @if is_queue { " Consumer: " } @else { " Task spawned at " }
                        (t)
                    }
                }
            }
            div.fix { (f.recommendation) }
            @if !f.called_from.is_empty() {
                p.muted { "Called from: " (f.called_from.join("; ")) }
            }
            @if !f.also.is_empty() {
                p.muted { "Also: " (f.also.join("; ")) }
            }
            @if !f.stack.is_empty() {
                details {
                    summary { "Stack (innermost first, " (f.stack.len()) " frames)" }
                    pre { @for fr in &f.stack { (fr) "\n" } }
                }
            }
        }
    }
}

/// Render one run as a self-contained HTML page. `source` returns a source file's text when
/// it is readable, for the excerpt around each finding's line.
pub fn render_html(run: &RunFile, s: &Summary, source: &dyn Fn(&str) -> Option<String>) -> String {
    let snap = run.snapshot.as_ref();
    let h = &run.header;
    let threshold_ms = h.config.stall_threshold_us as f64 / 1000.0;
    // Latency charts.
    let mut latency_charts: Vec<String> = Vec::new();
    if let Some(snap) = snap {
        latency_charts.push(charts::percentile_plot(
            "Poll duration and scheduling delay (runtime)",
            &[
                ("poll".to_string(), &snap.runtime.poll_ns),
                ("scheduling delay".to_string(), &snap.runtime.scheduled_ns),
            ],
        ));
        let mut locs: Vec<&asyncprof_format::LocationStats> = snap.locations.iter().collect();
        locs.sort_by_key(|l| std::cmp::Reverse(l.busy_ns));
        let top: Vec<(String, &Histogram)> = locs
            .iter()
            .take(5)
            .map(|l| (short(&l.location.to_string()), &l.poll_ns))
            .collect();
        latency_charts.push(charts::percentile_plot(
            "Poll duration, busiest spawn locations",
            &top,
        ));
        let tasks: Vec<(String, &Histogram)> = snap
            .tasks
            .iter()
            .take(5)
            .map(|t| {
                let label = match &t.name {
                    Some(n) => format!("task {} {n}", t.id),
                    None => format!("task {} ({})", t.id, short(&t.location.to_string())),
                };
                (label, &t.poll_ns)
            })
            .collect();
        latency_charts.push(charts::percentile_plot(
            "Poll duration, busiest live tasks",
            &tasks,
        ));
        let stages: Vec<(String, &Histogram)> = snap
            .stages
            .iter()
            .take(6)
            .map(|st| (st.name.clone(), &st.duration_ns))
            .collect();
        latency_charts.push(charts::percentile_plot("Item and stage latency", &stages));
    }
    latency_charts.retain(|c| !c.is_empty());
    let duration_ns = snap.map_or(0, |s| s.elapsed_ns);
    let workers: Vec<(String, f64, f64)> = snap
        .map(|s| {
            s.workers
                .iter()
                .map(|w| {
                    let total = (w.busy_ns + w.parked_ns).max(1) as f64;
                    let runtime = s
                        .runtimes
                        .iter()
                        .find(|r| r.id == w.runtime)
                        .filter(|_| s.runtimes.len() > 1);
                    (
                        match runtime {
                            Some(r) => format!("{} ({})", w.thread_name, r.label()),
                            None => w.thread_name.clone(),
                        },
                        w.busy_ns as f64 / total,
                        w.parked_ns as f64 / total,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let timeline = charts::worker_timeline(&workers, &run.stalls, duration_ns, stall_kind);
    let flame = crate::flame::stall_flame(run);
    let cpu_flame = run
        .cpu_profile
        .as_ref()
        .map(|p| (p, crate::flame::cpu_flame(&p.folded)));
    let queues: Vec<(String, String, String)> = snap
        .map(|snap| {
            snap.queues
                .iter()
                .map(|q| {
                    let pts = run.queue_depths.get(&q.id).map_or(&[][..], |v| &v[..]);
                    let cap = match q.kind {
                        QueueKind::Unbounded => None,
                        _ => q.capacity,
                    };
                    let depth = charts::depth_chart(&format!("{} — depth", q.name), pts, cap);
                    let waits = charts::percentile_plot(
                        &format!("{} — waits", q.name),
                        &[
                            ("senders waiting for room".to_string(), &q.send_wait_ns),
                            ("receivers waiting for an item".to_string(), &q.recv_wait_ns),
                        ],
                    );
                    (q.name.clone(), depth, waits)
                })
                .collect()
        })
        .unwrap_or_default();

    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "asyncprof — " (s.program) " " (h.args.join(" ")) }
                style { (PreEscaped(STYLE)) (PreEscaped(crate::flame::FLAME_STYLE)) }
            }
            body {
                header {
                    h1 { "asyncprof — " (s.program) " " (h.args.join(" ")) }
                    p {
                        (format!("{:.1}", s.duration_ms / 1e3)) " s · " (format!("{:?}", s.tier))
                        " tier · " (format!("{:?}", s.flavor)) " runtime · " (s.workers)
                        " workers · stall threshold " (threshold_ms) " ms · "
                        (s.runtime.polls) " polls · " (s.runtime.tasks_spawned) " tasks · "
                        (s.stalls) " stalls"
                        @if let Some(t) = s.runtime.stalls.filter(|t| t.count > s.stalls) {
                            " (" (t.count) " in the whole run, " (format!("{:.1}", t.total_ms)) " ms)"
                        }
                        @if s.truncated { " · truncated (the process was killed or is running)" }
                    }
                    @if s.config.stall_signal == 0 {
                        p { (capitalized(crate::SIGNALS_OFF)) "." }
                    }
                    @if s.runtimes.len() > 1 {
                        p { "Runtimes: " (crate::text::runtime_list(&s.runtimes)) }
                    }
                }
                main {
                    @for w in &s.warnings { p.loss { "Warning: " (w) } }
                    (loss_block(&crate::summary::loss_counters(&s.loss)))
                    section #findings {
                        h2 { "Findings (" (s.findings.len()) ")" }
                        @if s.findings.is_empty() {
                            div.card {
                                span.badge.ok { "ok" }
                                "No findings: no poll held a worker past " (threshold_ms)
                                " ms, and no queue backed up or kept growing."
                            }
                        }
                        @for f in &s.findings { (finding(f, None, source)) }
                        @if s.preempted_stalls > 0 {
                            p.muted {
                                (s.preempted_stalls) " stalls were a worker thread, or the holder of a lock it waited for inside an awaited library call, waiting for a core (runnable, preempted), not its poll's code: the machine was overloaded."
                            }
                        }
                        @if s.unattributed_stalls > 0 {
                            p.muted {
                                (s.unattributed_stalls) " stalls had no stack sample and no tracked task, so no line to blame; they are on the worker timeline."
                            }
                        }
                        @if !s.stalls_without_culprit.is_empty() {
                            div.card #stalls-without-culprit {
                                span.kind { "Stalls without a line to blame" }
                                p.muted {
                                    "No stack showed a line of your code for these stalls, and none joined a finding of their task: they are evidence about the task spawned there (its code held a worker this long), not a line to change. They are on the worker timeline."
                                }
                                table {
                                    thead { tr {
                                        th.l { "task spawned at" } th { "stalls" } th { "ms in all" }
                                        th { "longest ms" } th.l { "what the threads did" }
                                    } }
                                    tbody {
                                        @for t in &s.stalls_without_culprit {
                                            tr {
                                                td.l.loc { (t.task_location) }
                                                td { (t.stalls) }
                                                td { (format!("{:.1}", t.total_ms)) }
                                                td { (format!("{:.1}", t.max_ms)) }
                                                td.l { (crate::text::task_stall_evidence(t)) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    section #latency {
                        h2 { "Latency" }
                        div.grid { @for c in &latency_charts { div { (PreEscaped(c)) } } }
                    }
                    section #workers {
                        h2 { "Workers" }
                        p.muted { "Each row is a worker thread; bars are stalls (orange: blocking, red: CPU, purple: lock, black: never returned)." }
                        div.card { (timeline) }
                    }
                    @if !queues.is_empty() {
                        section #queues {
                            h2 { "Queues" }
                            table.sortable {
                                thead { tr {
                                    th.l { "queue" } th.l { "kind" } th.l { "created at" } th { "capacity" }
                                    th { "in" } th { "out" } th { "refused" } th { "max depth" }
                                    th { "full %" } th { "send wait p99 ms" } th { "recv wait p99 ms" }
                                } }
                                tbody {
                                    @for q in &s.queues {
                                        tr {
                                            td.l { (q.name) } td.l { (format!("{:?}", q.kind)) }
                                            td.l.loc { (q.location) }
                                            td { (q.capacity.map_or_else(|| "unbounded".to_string(), |c| c.to_string())) }
                                            td data-v=(q.enqueued) { (q.enqueued) }
                                            td data-v=(q.dequeued) { (q.dequeued) }
                                            td data-v=(q.rejected) { (q.rejected) }
                                            td data-v=(q.max_depth) { (q.max_depth) }
                                            td data-v=(q.full_share) { (format!("{:.0}", q.full_share * 100.0)) }
                                            td data-v=(q.send_wait.p99_ns) { (ms(q.send_wait.p99_ns)) }
                                            td data-v=(q.recv_wait.p99_ns) { (ms(q.recv_wait.p99_ns)) }
                                        }
                                    }
                                }
                            }
                            div.grid {
                                @for (_, depth, waits) in &queues {
                                    @if !depth.is_empty() { div { (PreEscaped(depth)) } }
                                    @if !waits.is_empty() { div { (PreEscaped(waits)) } }
                                }
                            }
                        }
                    }
                    section #stall-flamegraph {
                        h2 { "Stall flamegraph" }
                        @match &flame {
                            None => { p.muted { "No stack was sampled during a stall." } }
                            Some(flame) => {
                                p.muted {
                                    "Stacks sampled while workers were stalled, weighted by stall time. Each stack starts at its task: thread start-up and the runtime's frames down to the poll of the task are folded into one frame named after where the task was spawned (\"" (crate::flame::RUNTIME_LABEL) "\" when that is not known); \"show all frames\" draws them."
                                }
                                div.card { (flame.markup("stall-flame", "stall")) }
                            }
                        }
                    }
                    section #cpu-flamegraph {
                        h2 { "CPU flamegraph" }
                        @match &cpu_flame {
                            Some((p, svg)) => {
                                p.muted {
                                    "Every thread's stacks, sampled " (p.hz) " times a second while on CPU ("
                                    (p.samples) " samples"
                                    @if p.dropped_stacks > 0 { ", " (p.dropped_stacks) " rare stacks left out" }
                                    "); the first level is the thread, then its start-up and runtime frames folded into one."
                                    @if let Some(at) = p.stopped_at_ns {
                                        " The profile stopped " (format!("{:.1}", at as f64 / 1e9)) " s into the run (its sample file reached its limit, a quarter of ASYNCPROF_MAX_FILE_MB) and covers the run up to then."
                                    }
                                }
                                @if let Some(flame) = svg {
                                    div.card { (flame.markup("cpu-flame", "CPU")) }
                                }
                            }
                            None => {
                                p.muted { "No CPU profile in this run (set ASYNCPROF_CPU_HZ=99, as asyncprof bench and asyncprof run do)." }
                            }
                        }
                    }
                    (locations_section(&s.locations))
                    @if !s.tasks.is_empty() {
                        section #tasks {
                            h2 { "Busiest live tasks" }
                            table.sortable {
                                thead { tr {
                                    th { "id" } th.l { "name" } th.l { "spawned at" } th { "polls" }
                                    th { "busy ms" } th { "idle ms" } th { "poll p50 ms" }
                                    th { "poll p99 ms" } th { "poll max ms" }
                                } }
                                tbody {
                                    @for t in &s.tasks {
                                        tr {
                                            td data-v=(t.id) { (t.id) }
                                            td.l { (t.name.as_deref().unwrap_or("")) }
                                            td.l.loc { (t.location) }
                                            td data-v=(t.polls) { (t.polls) }
                                            td data-v=(t.busy_ms) { (format!("{:.1}", t.busy_ms)) }
                                            td data-v=(t.idle_ms) { (format!("{:.1}", t.idle_ms)) }
                                            (lat_cells(&t.poll))
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                script { (PreEscaped(crate::flame::FLAME_SCRIPT)) (PreEscaped(SCRIPT)) }
            }
        }
    };
    page.into_string()
}

/// Several runs merged ([`crate::Merged`]) as a self-contained HTML page: the runs, the
/// findings ranked across them (each saying on how many instances it appeared) and the spawn
/// locations merged. `source` is as for [`render_html`].
pub fn render_merged_html(m: &crate::Merged, source: &dyn Fn(&str) -> Option<String>) -> String {
    let title = format!(
        "asyncprof — {} instances of {}",
        m.instances.len(),
        m.programs.join(", ")
    );
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    h1 { (title) }
                    p { (m.stalls) " stalls in all; findings merged across the runs by kind and line" }
                }
                main {
                    @for w in &m.warnings { p.loss { "Warning: " (w) } }
                    (loss_block(&m.loss()))
                    section #instances {
                        h2 { "Instances (" (m.instances.len()) ")" }
                        table.sortable {
                            thead { tr {
                                th.l { "run file" } th.l { "program" } th { "pid" } th { "seconds" }
                                th { "stalls" } th { "stall ms" } th { "findings" }
                            } }
                            tbody {
                                @for i in &m.instances {
                                    tr {
                                        td.l.loc { (i.name) @if i.truncated { " (truncated)" } }
                                        td.l { (i.program) }
                                        td data-v=(i.pid) { (i.pid) }
                                        td data-v=(i.duration_ms) { (format!("{:.1}", i.duration_ms / 1e3)) }
                                        td data-v=(i.stalls) { (i.stalls) }
                                        td data-v=(i.stall_ms) { (format!("{:.1}", i.stall_ms)) }
                                        td data-v=(i.findings) { (i.findings) }
                                    }
                                }
                            }
                        }
                    }
                    section #findings {
                        h2 { "Findings (" (m.findings.len()) ")" }
                        @if m.findings.is_empty() {
                            div.card {
                                span.badge.ok { "ok" }
                                "No findings in any of the runs."
                            }
                        }
                        @for f in &m.findings { (finding(&f.finding, Some(&f.seen()), source)) }
                    }
                    (locations_section(&m.locations))
                }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
    .into_string()
}

/// `text` with its first letter upper-case, to open a sentence.
fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |c| {
        c.to_uppercase().chain(chars).collect::<String>()
    })
}

fn short(location: &str) -> String {
    match location.find("/src/") {
        Some(i) => location[location[..i].rfind('/').map_or(0, |j| j + 1)..].to_string(),
        None => location.to_string(),
    }
}

/// One run in the bench's index.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct IndexRow {
    /// Pipeline name.
    pub pipeline: String,
    /// `bad` or `fixed`.
    pub variant: String,
    /// Items per second, when the run finished.
    pub throughput: Option<f64>,
    /// p99 item latency in ms, when the run finished.
    pub p99_ms: Option<f64>,
    /// Stalls recorded.
    pub stalls: u64,
    /// Kinds of the findings.
    pub findings: Vec<String>,
    /// Markers expected.
    pub expected: usize,
    /// `found`, `clean`, `missed`, `false positive`, …
    pub verdict: String,
    /// The run's own report, relative to the index.
    pub report: String,
}

impl IndexRow {
    /// A row.
    pub fn new(pipeline: impl Into<String>, variant: impl Into<String>) -> Self {
        IndexRow {
            pipeline: pipeline.into(),
            variant: variant.into(),
            ..IndexRow::default()
        }
    }
}

/// The bench's index: bad against fixed per pipeline, with links to every run's report.
pub fn render_index(title: &str, verdict: &str, rows: &[IndexRow]) -> String {
    let num = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "-".to_string(), |x| format!("{x:.digits$}"))
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header { h1 { (title) } p { (verdict) } }
                main {
                    section #findings {
                        h2 { "Bad against fixed" }
                        table.sortable {
                            thead { tr {
                                th.l { "pipeline" } th.l { "variant" } th { "items/s" }
                                th { "p99 item latency ms" } th { "stalls" } th.l { "findings" }
                                th { "expected" } th.l { "verdict" } th.l { "report" }
                            } }
                            tbody {
                                @for r in rows {
                                    tr {
                                        td.l { (r.pipeline) } td.l { (r.variant) }
                                        td data-v=(r.throughput.unwrap_or(0.0)) { (num(r.throughput, 0)) }
                                        td data-v=(r.p99_ms.unwrap_or(0.0)) { (num(r.p99_ms, 1)) }
                                        td data-v=(r.stalls) { (r.stalls) }
                                        td.l { (r.findings.join(", ")) }
                                        td data-v=(r.expected) { (r.expected) }
                                        td.l { (r.verdict) }
                                        td.l { a href=(r.report) { (r.report) } }
                                    }
                                }
                            }
                        }
                    }
                }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
    .into_string()
}
