//! Findings: what is wrong, where, and what to change. Each kind is a diagnosis in
//! [`crate::diagnoses`]. Stalls of one kind are grouped by culprit function and by task into
//! one finding, at the line where most stall time went.
//!
//! A finding names a line a stack showed. A stall that no stack placed at a line of the
//! program's own code (no stack was sampled, or none reached the program's code) joins a
//! finding of its task whose stacks were sampled, when its kind fits; otherwise it is evidence
//! about its task, listed under the task's spawn location ([`crate::TaskStalls`]), never a
//! finding at the spawn line.

use std::collections::BTreeMap;

use asyncprof_format::{RunFile, StallClass, StallRecord};
use serde::Serialize;

use crate::Thresholds;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Severity {
    /// Worth a look.
    Warning,
    /// Hurts the service now.
    Error,
}

/// Where a finding points: the user's line.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[non_exhaustive]
pub struct FindingLocation {
    /// Source file.
    pub file: String,
    /// Line.
    pub line: u32,
    /// Function.
    pub function: String,
}

impl FindingLocation {
    /// A spawn location, span or call site, whose function is not known yet (the report
    /// names it from the source).
    pub(crate) fn at(loc: &asyncprof_format::SourceLocation) -> Self {
        FindingLocation {
            file: loc.file.clone(),
            line: loc.line,
            function: String::new(),
        }
    }

    /// A stall's line: its culprit frame.
    pub(crate) fn of(culprit: &asyncprof_format::Frame) -> Self {
        FindingLocation {
            file: culprit.file.clone().unwrap_or_default(),
            line: culprit.line.unwrap_or(0),
            function: culprit.function.clone(),
        }
    }
}

/// One diagnosis: its kind, where to change the code, the evidence and what to do.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Finding {
    /// One of [`crate::diagnoses::KINDS`].
    pub kind: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// The line to change.
    pub location: FindingLocation,
    /// The blocking call made there, when one was found.
    pub primitive: Option<String>,
    /// Other names of the primitive's machine code (see `asyncprof_format::Frame::same_code`):
    /// the call made may be any of them. [`crate::name_merged_primitives`] picks the one the
    /// line's source calls, where it can read it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub primitive_same_code: Vec<String>,
    /// The system call the thread slept in.
    pub syscall: Option<String>,
    /// Stalls grouped here (queue findings: sender waits, or items sent for growth;
    /// `runtime-saturated`, `blocking-pool-saturated`, `cpu-contention`: the samples that
    /// showed it; `task-leak`: tasks alive at the peak; `slow-stage`: the stage's spans;
    /// `scheduling-delay`: the culprit location's polls).
    pub count: u64,
    /// Their total duration (queue findings: time senders waited; `runtime-saturated`: busy
    /// time in the saturated samples; `cpu-contention`: time waited for a CPU; `slow-stage`:
    /// the stage's spans' life; `scheduling-delay`: the culprit's long polls; 0 where no
    /// duration applies).
    pub total_ms: f64,
    /// The longest.
    pub max_ms: f64,
    /// What to do.
    pub recommendation: String,
    /// Where the stalled task was spawned (queue findings: where the consumer receives).
    pub task_location: Option<String>,
    /// A stack of the longest stall at the finding's line, innermost first: the first through
    /// that line with a sample that places a line (not one taken as a short call through std
    /// returned; the stall's class's stacks come first, most sampled first).
    pub stack: Vec<String>,
    /// For queue findings: the queue and what it showed.
    pub queue: Option<crate::QueueEvidence>,
    /// Other lines whose stalls were folded into this finding (same function, or same
    /// task), as `file:line in function (N stalls)`.
    pub also: Vec<String>,
    /// When the finding's line is in a plain function (a helper the async code calls): the
    /// code that called it (`asyncprof_format::culprit::caller`: an async body, where to move
    /// the call into `spawn_blocking` or await an async equivalent, else a closure such as a
    /// response stream's), as `file:line in function (N stalls)`, most stalls first (at most
    /// three); plain functions on the way come first (`file:line in call, called from
    /// file:line in handle (N stalls)`).
    pub called_from: Vec<String>,
    /// In a process with several runtimes: the ones whose workers these stalls held, by name
    /// (or `runtime <id>`). Empty when the run saw one runtime.
    pub runtimes: Vec<String>,
    /// For the runtime-wide kinds (saturation, leaks, the blocking pool, CPU contention): the
    /// measurements behind the finding, one per line.
    pub evidence: Vec<String>,
}

impl Finding {
    /// The primitive as the report shows it: its name, and the other names of its code when
    /// the compiler merged several (`A (or B: the same machine code)`).
    pub fn primitive_text(&self) -> Option<String> {
        let p = self.primitive.as_deref()?;
        Some(if self.primitive_same_code.is_empty() {
            p.to_string()
        } else {
            format!(
                "{p} (or {}: the same machine code)",
                self.primitive_same_code.join(", ")
            )
        })
    }

    /// A finding of a runtime-wide kind: no stall or queue behind it, its evidence in
    /// `evidence`. `location` is empty (file "") where no line can be named.
    pub(crate) fn runtime_wide(
        kind: &'static str,
        severity: Severity,
        location: FindingLocation,
        recommendation: String,
        evidence: Vec<String>,
    ) -> Finding {
        Finding {
            kind,
            severity,
            location,
            primitive: None,
            primitive_same_code: Vec::new(),
            syscall: None,
            count: 0,
            total_ms: 0.0,
            max_ms: 0.0,
            recommendation,
            task_location: None,
            stack: Vec::new(),
            queue: None,
            also: Vec::new(),
            called_from: Vec::new(),
            runtimes: Vec::new(),
            evidence,
        }
    }

    /// Whether it blames the machine rather than a line of the program (no location).
    pub fn blames_the_machine(&self) -> bool {
        self.kind == crate::diagnoses::cpu_contention::KIND
    }

    /// Whether it names no line: the machine's, or a runtime-wide finding whose tasks the
    /// recording could not place (the stable tier sees no spawn locations).
    pub fn names_no_line(&self) -> bool {
        self.location.file.is_empty()
    }

    /// Why it names no line, as reports print it in place of its location; `None` when it
    /// names one. A stall in a program built without debug info names its function only.
    pub fn no_line_reason(&self) -> Option<String> {
        if self.blames_the_machine() {
            Some("(the machine, not a line)".into())
        } else if self.names_no_line() && !self.location.function.is_empty() {
            Some(format!(
                "in {} (no line: the program was built without debug info; set debug = \
                 \"line-tables-only\" under [profile.release])",
                self.location.function
            ))
        } else if self.names_no_line() {
            Some("(runtime-wide: no line of the program to name)".into())
        } else {
            None
        }
    }
}

/// Between the steps of a caller's way from the finding's function (`a:65 in call, called
/// from a:132 in handle`).
pub(crate) const CALLED_FROM: &str = ", called from ";

/// The code that called the plain function of `stalls`' line: per stall, the caller
/// (`asyncprof_format::culprit::caller_chain`: the plain functions on the way, then the
/// caller) most of its samples at its recorded culprit show; as `file:line in function (N
/// stalls)`, steps joined by [`CALLED_FROM`], most stalls first, at most three.
fn callers<'a>(stalls: impl Iterator<Item = &'a StallRecord>) -> Vec<String> {
    let callers = stalls.filter_map(|s| {
        let culprit = s.culprit.as_ref()?;
        // Its stacks' callers (frames of the user's code: with a file and a line), by samples.
        let mut samples: BTreeMap<String, u32> = BTreeMap::new();
        for st in &s.stacks {
            let chain = asyncprof_format::culprit::caller_chain(&st.frames, culprit);
            if !chain.is_empty() {
                let place = chain
                    .iter()
                    .map(|f| match f {
                        Some(f) => format!(
                            "{}:{} in {}",
                            f.file.as_deref().unwrap_or(""),
                            f.line.unwrap_or(0),
                            asyncprof_format::culprit::without_type_arguments(&f.function)
                        ),
                        // Plain functions left out between two named.
                        None => "…".to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(CALLED_FROM);
                *samples.entry(place).or_default() += st.count;
            }
        }
        let (place, _) = samples.into_iter().max_by_key(|(_, n)| *n)?;
        Some((place, 1))
    });
    callers_text(callers)
}

/// Callers as `place (N stalls)`, most stalls first (then by place), at most three; the same
/// place given twice counts once with both counts.
pub(crate) fn callers_text(callers: impl Iterator<Item = (String, u64)>) -> Vec<String> {
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for (place, n) in callers {
        *by.entry(place).or_default() += n;
    }
    let mut list: Vec<(String, u64)> = by.into_iter().collect();
    list.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    list.into_iter()
        .take(3)
        .map(|(place, n)| format!("{place} ({})", crate::text::stalls_count(n)))
        .collect()
}

/// A caller as [`callers_text`] wrote it, split into its place and its stall count.
pub(crate) fn caller_parts(text: &str) -> Option<(String, u64)> {
    let (place, tail) = text.rsplit_once(" (")?;
    let n = tail.split(' ').next()?.parse().ok()?;
    Some((place.to_string(), n))
}

/// The runtimes of `stalls`, by label, when the run saw more than one runtime.
fn runtime_labels(run: &RunFile, stalls: &[&StallRecord]) -> Vec<String> {
    let Some(snap) = run.snapshot.as_ref().filter(|s| s.runtimes.len() > 1) else {
        return Vec::new();
    };
    let mut labels: Vec<String> = stalls
        .iter()
        .map(|s| {
            snap.runtimes
                .iter()
                .find(|r| r.id == s.runtime)
                .map_or_else(|| "an unknown runtime".to_string(), |r| r.label())
        })
        .collect();
    labels.sort();
    labels.dedup();
    labels
}

/// Short system calls by name with their samples (most first), those samples and all.
type ShortCalls<'a> = (Vec<(&'a str, u64)>, u64, u64);

/// When at least two samples and more than half of the stack samples of `stalls` came as a
/// short system call returned ([`asyncprof_format::samples_at_a_short_call`]): those calls
/// with their counts, most first, and the count of those samples and of all. Calls that give
/// memory back ([`asyncprof_format::gives_memory_back`]: the allocator's `madvise`, `munmap`)
/// are not among them: the advice is about the poll's own I/O.
fn mostly_at_short_calls<'a>(
    stalls: impl Iterator<Item = &'a StallRecord>,
) -> Option<ShortCalls<'a>> {
    let mut total = 0u64;
    let mut by_call: BTreeMap<&str, u64> = BTreeMap::new();
    for st in stalls.flat_map(|s| &s.stacks) {
        total += u64::from(st.count);
        let short = asyncprof_format::samples_at_a_short_call(st);
        match asyncprof_format::call_wrapper(st) {
            Some(call) if short > 0 && !asyncprof_format::gives_memory_back(call) => {
                *by_call.entry(call).or_default() += u64::from(short);
            }
            _ => {}
        }
    }
    let short: u64 = by_call.values().sum();
    let mut calls: Vec<(&str, u64)> = by_call.into_iter().collect();
    calls.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    (short >= 2 && short * 2 > total).then_some((calls, short, total))
}

/// The stack a finding shows of its stall `s`: the first (the stall's class's come first)
/// through the stall's line with a sample that places a line
/// ([`asyncprof_format::samples_placing_no_line`], as the recorder placed it), else the first
/// through its line, else the first. `asyncprof top` lists it first among a stall's stacks.
pub fn shown_stack(s: &StallRecord) -> Option<&asyncprof_format::StackSample> {
    use asyncprof_format::culprit;
    let at_line = |st: &&asyncprof_format::StackSample| {
        let c = culprit::primitive_and_culprit(&st.frames).1;
        c.zip(s.culprit.as_ref())
            .is_some_and(|(c, line)| culprit::same_line(&c, line))
    };
    s.stacks
        .iter()
        .filter(at_line)
        .find(|st| st.count > asyncprof_format::samples_placing_no_line(st))
        .or_else(|| s.stacks.iter().find(at_line))
        .or(s.stacks.first())
}

/// The kind of one stall.
pub fn stall_kind(s: &StallRecord) -> &'static str {
    asyncprof_format::StallKind::of(s).name()
}

fn recommendation(
    kind: &str,
    primitive: Option<&str>,
    same_code: &[String],
    syscall: Option<&str>,
    max_ms: f64,
) -> String {
    use crate::diagnoses::{blocking_call, cpu_bound_poll, lock_contention, runtime_blocked};
    match kind {
        runtime_blocked::KIND => runtime_blocked::recommendation(primitive, same_code),
        lock_contention::KIND => lock_contention::recommendation(primitive, same_code, max_ms),
        cpu_bound_poll::KIND => cpu_bound_poll::recommendation(max_ms),
        _ => blocking_call::recommendation(primitive, same_code, syscall, max_ms),
    }
}

type Key = (&'static str, FindingLocation);

/// The stalls' summed duration (saturating: a damaged file may claim anything).
fn total_duration(stalls: &[&StallRecord]) -> u64 {
    stalls
        .iter()
        .fold(0u64, |a, s| a.saturating_add(s.duration_ns))
}

/// Stalls grouped under one key, with the other lines folded into them.
type Group<'a> = (Key, Vec<&'a StallRecord>, Vec<String>);

/// Merge groups that share `key` into one at the location that stalled longest; the other
/// locations are kept, with their stall counts, in `also`.
fn merge<'a, K: Ord>(
    groups: Vec<Group<'a>>,
    key: impl Fn(&Key, &[&'a StallRecord]) -> K,
) -> Vec<Group<'a>> {
    let mut by: BTreeMap<K, Vec<Group<'a>>> = BTreeMap::new();
    for g in groups {
        by.entry(key(&g.0, &g.1)).or_default().push(g);
    }
    by.into_values()
        .map(|mut parts| {
            parts.sort_by_key(|(_, stalls, _)| std::cmp::Reverse(total_duration(stalls)));
            let mut parts = parts.into_iter();
            let (top, mut stalls, mut also) = parts.next().expect("a group has one part");
            let mut at: BTreeMap<u64, usize> =
                stalls.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
            for ((kind, loc), more, more_also) in parts {
                let n = more.len();
                let s = if n == 1 { "" } else { "s" };
                also.push(if loc == top.1 {
                    let were = if n == 1 { "was" } else { "were" };
                    format!("{n} more stall{s} at this line {were} {kind}")
                } else if loc.file.is_empty() {
                    format!("{} ({n} stall{s}, {kind})", loc.function)
                } else {
                    format!(
                        "{}:{} in {} ({n} stall{s}, {kind})",
                        loc.file, loc.line, loc.function
                    )
                });
                also.extend(more_also);
                // A stall and its part (`StallRecord::part`, same id) in one group are one
                // poll: counted once, with the whole poll's time.
                for s in more {
                    match at.get(&s.id) {
                        Some(&i) if stalls[i].duration_ns < s.duration_ns => stalls[i] = s,
                        Some(_) => {}
                        None => {
                            at.insert(s.id, stalls.len());
                            stalls.push(s);
                        }
                    }
                }
            }
            (top, stalls, also)
        })
        .collect()
}

/// Every finding of a run with the default thresholds, most severe and costly first.
pub fn diagnose(run: &RunFile) -> Vec<Finding> {
    diagnose_with(run, &Thresholds::default())
}

/// Every finding of a run, most severe and costly first.
pub fn diagnose_with(run: &RunFile, thresholds: &Thresholds) -> Vec<Finding> {
    diagnosis(run, thresholds).0
}

/// Every finding of a run, most severe and costly first, and the stalls of tracked tasks that
/// no finding holds because no stack placed them at a line (evidence about their task).
pub(crate) fn diagnosis<'a>(
    run: &'a RunFile,
    thresholds: &Thresholds,
) -> (Vec<Finding>, Vec<&'a StallRecord>) {
    // Stalls with no stack (past the sampling budget, or a sample that timed out) join the
    // culprit most often seen for the same task location, of a kind their kernel state fits.
    let mut culprits: BTreeMap<String, BTreeMap<(&'static str, FindingLocation), u64>> =
        BTreeMap::new();
    // A poll that both slept and computed past the threshold at two lines: its other part is
    // a stall of its own here, at its line (not in the stall counts and times elsewhere).
    // A preempted poll's part counts too: its own time asleep, at its own line, was no core's
    // doing.
    let parts: Vec<StallRecord> = run
        .stalls
        .iter()
        .filter_map(StallRecord::part_as_stall)
        .filter(|s| !crate::diagnoses::preempted(s))
        .collect();
    for s in run
        .stalls
        .iter()
        .filter(|s| !crate::diagnoses::preempted(s))
    {
        if let (Some(c), Some(t)) = (&s.culprit, &s.task_location) {
            let loc = FindingLocation::of(c);
            *culprits
                .entry(t.to_string())
                .or_default()
                .entry((stall_kind(s), loc))
                .or_default() += 1;
        }
    }
    let adopted = |s: &StallRecord| -> Option<(&'static str, FindingLocation)> {
        let seen = culprits.get(&s.task_location.as_ref()?.to_string())?;
        let kind = stall_kind(s);
        // Without a stack, a thread asleep in a futex looks like a blocking call; in a task
        // whose sampled stalls waited for a lock, it is one more lock wait.
        let compatible = |k: &str| {
            k == kind
                || s.class == StallClass::Unknown
                || (kind == crate::diagnoses::blocking_call::KIND
                    && k == crate::diagnoses::lock_contention::KIND
                    && s.syscall.as_deref() == Some("futex"))
        };
        seen.iter()
            .filter(|((k, _), _)| compatible(k))
            .max_by_key(|(_, n)| **n)
            .map(|((k, loc), _)| (*k, loc.clone()))
    };
    let mut groups: BTreeMap<(&'static str, FindingLocation), Vec<&StallRecord>> = BTreeMap::new();
    let mut unplaced = Vec::new();
    for s in run
        .stalls
        .iter()
        .filter(|s| !crate::diagnoses::preempted(s))
    {
        if s.culprit.is_none() {
            if let Some(key) = adopted(s) {
                groups.entry(key).or_default().push(s);
                continue;
            }
        }
        let location = match &s.culprit {
            Some(c) => FindingLocation::of(c),
            // No stack showed a line, and no sampled stall of its task took it in: evidence
            // about the task (listed under its spawn location), not a line to change. The
            // spawn line is not where the time went. A stall of an untracked task is counted
            // in the summary (`unattributed_stalls`); both are drawn on the worker timeline.
            None => {
                if s.task_location.is_some() {
                    unplaced.push(s);
                }
                continue;
            }
        };
        groups.entry((stall_kind(s), location)).or_default().push(s);
    }
    // A part always has its line (apart: `unplaced` holds the run's own records only).
    for s in &parts {
        if let Some(c) = &s.culprit {
            let location = FindingLocation::of(c);
            groups.entry((stall_kind(s), location)).or_default().push(s);
        }
    }
    // One finding per kind and function: a function whose stalls land on several of its
    // lines (an insert loop and its commit) is one place to change, shown at the line that
    // stalled longest.
    let groups: Vec<(Key, Vec<&StallRecord>, Vec<String>)> = groups
        .into_iter()
        .map(|(k, v)| (k, v, Vec::new()))
        .collect();
    let groups = merge(groups, |(kind, location), _| {
        (*kind, format!("{}\n{}", location.file, location.function))
    });
    // Then one per kind and task: a long poll is sampled at some moment of it, and a stall
    // that ends just past the threshold can be sampled after the slow part (dropping what it
    // built); the task's other stalls say where its time went.
    let groups = merge(groups, |(kind, location), stalls| {
        let task = stalls
            .iter()
            .find_map(|s| s.task_location.as_ref())
            .map_or_else(
                // A culprit with no file (a build without debug info) by its function.
                || {
                    if location.file.is_empty() {
                        format!("in {}", location.function)
                    } else {
                        format!("{}:{}", location.file, location.line)
                    }
                },
                ToString::to_string,
            );
        (*kind, task)
    });
    // Last, one per function: a function whose stalls were sometimes on CPU and sometimes
    // asleep in I/O (a database call doing both, a loop of inserts and its commit) is one
    // place to change, of the kind that took longest; the other kind's lines are listed with
    // it. A poll that never returned stays apart. Stalls of a frame with no function name
    // are kept apart by line.
    let groups = merge(groups, |(kind, location), _| {
        let never_returned = *kind == crate::diagnoses::runtime_blocked::KIND;
        let place = if location.function.is_empty() {
            format!("line {}", location.line)
        } else {
            location.function.clone()
        };
        (never_returned, location.file.clone(), place)
    });
    let mut out: Vec<Finding> = groups
        .into_iter()
        .map(|((kind, location), stalls, also)| {
            let longest = stalls
                .iter()
                .max_by_key(|s| s.duration_ns)
                .expect("a group holds at least one stall");
            // A culprit with no file (a build without debug info) is at its function.
            let at_line = |s: &&&StallRecord| {
                s.culprit.as_ref().is_some_and(|c| {
                    if location.file.is_empty() {
                        c.file.is_none() && c.function == location.function
                    } else {
                        c.line == Some(location.line)
                    }
                })
            };
            // The stack shown is one of a stall at the finding's own line.
            let shown = stalls
                .iter()
                .filter(at_line)
                .max_by_key(|s| s.duration_ns)
                .unwrap_or(longest);
            let total_ns: u64 = total_duration(&stalls);
            let max_ms = longest.duration_ns as f64 / 1e6;
            // The call made at the finding's own line, where one of its stalls has one (the
            // line whose source tells a merged primitive's name). A computation at its line
            // without one (an operator's loop) names none: another line's call is not its.
            let computes = kind == crate::diagnoses::cpu_bound_poll::KIND;
            let primitive_frame = stalls
                .iter()
                .filter(at_line)
                .find_map(|s| s.primitive.as_ref())
                .or_else(|| {
                    stalls
                        .iter()
                        .filter(|_| !computes)
                        .find_map(|s| s.primitive.as_ref())
                });
            let primitive = primitive_frame.map(|p| p.function.clone());
            let primitive_same_code =
                primitive_frame.map_or_else(Vec::new, |p| p.same_code.clone());
            // The kernel's call of the finding's own kind: a function's lock waits merged
            // into its computation's finding do not make that computation "asleep in futex".
            let syscall = stalls
                .iter()
                .filter(|s| stall_kind(s) == kind)
                .find_map(|s| s.syscall.clone());
            let severity = if kind == "runtime-blocked" || max_ms >= 100.0 {
                Severity::Error
            } else {
                Severity::Warning
            };
            let mut advice = recommendation(
                kind,
                primitive.as_deref(),
                &primitive_same_code,
                syscall.as_deref(),
                max_ms,
            );
            // Of the stalls at the finding's line and of its kind: not those of other lines
            // and kinds merged into it.
            let own = stalls
                .iter()
                .copied()
                .filter(|s| at_line(&s) && stall_kind(s) == kind);
            if kind == crate::diagnoses::cpu_bound_poll::KIND {
                if let Some((calls, short, total)) = mostly_at_short_calls(own) {
                    advice.push_str(&crate::diagnoses::cpu_bound_poll::at_short_calls(
                        &calls, short, total,
                    ));
                }
            }
            if run.header.tier == asyncprof_format::Tier::Stable {
                advice.push_str(
                    " (Stable tier: the worker neither parked nor moved on to another task's \
                     poll for this long, as tokio's busy time for it shows; the task is not \
                     known, and polls of one task in a row (one that yields between chunks \
                     with nothing else to run) read as one. Build with --cfg tokio_unstable to \
                     time every poll.)",
                );
            } else if run.header.tier == asyncprof_format::Tier::Hooks
                && stalls.iter().all(|s| s.task_id == 0)
            {
                advice.push_str(
                    " (No task's poll: the future given to a current-thread runtime's \
                     `block_on`, or a `LocalSet` task, which tokio's task hooks do not time; \
                     the worker ran no task and did not park for this long, and tokio's busy \
                     time for it stood still.)",
                );
            }
            let called_from = callers(stalls.iter().filter(at_line).copied());
            Finding {
                kind,
                severity,
                recommendation: advice,
                location,
                primitive,
                primitive_same_code,
                syscall,
                count: stalls.len() as u64,
                total_ms: (total_ns as f64 / 1e4).round() / 100.0,
                max_ms: (max_ms * 100.0).round() / 100.0,
                task_location: shown.task_location.as_ref().map(|l| l.to_string()),
                stack: shown_stack(shown)
                    .map(|s| s.frames.iter().map(|f| f.to_string()).collect())
                    .unwrap_or_default(),
                queue: None,
                also,
                called_from,
                runtimes: runtime_labels(run, &stalls),
                evidence: Vec::new(),
            }
        })
        .collect();
    if let Some(snap) = &run.snapshot {
        out.extend(crate::diagnoses::queue_backpressure::findings(
            &snap.queues,
            snap.elapsed_ns,
            thresholds,
        ));
        out.extend(crate::diagnoses::queue_growth::findings(
            run,
            &snap.queues,
            thresholds,
        ));
    }
    out.extend(crate::diagnoses::runtime_saturated::findings(
        run, thresholds,
    ));
    out.extend(crate::diagnoses::blocking_pool_saturated::findings(
        run, thresholds,
    ));
    out.extend(crate::diagnoses::task_leak::findings(run, thresholds));
    out.extend(crate::diagnoses::cpu_contention::findings(run, thresholds));
    out.extend(crate::diagnoses::slow_stage::findings(run, thresholds));
    // After the others: a saturated runtime or a crowded machine among them explains delays.
    let delays = crate::diagnoses::scheduling_delay::findings(run, thresholds, &out);
    out.extend(delays);
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.total_ms.total_cmp(&a.total_ms))
    });
    (out, unplaced)
}

#[cfg(test)]
mod tests {
    use asyncprof_format::{
        read_bytes, Frame, Header, RunWriter, SourceLocation, StackSample, StallClass, StallRecord,
    };

    /// The user's file: the task is spawned at its line 40, its stalls are at other lines.
    const FILE: &str = "src/enrich.rs";

    /// A stall of the task spawned at `FILE:40`, asleep in a futex (`Blocking`) or computing,
    /// with a stack whose user frame is at `line` calling `primitive`, or with no stack at all.
    fn stall(id: u64, class: StallClass, sampled: Option<(u32, &str)>) -> StallRecord {
        let mut s = StallRecord::default();
        s.id = id;
        s.class = class;
        s.duration_ns = 30_000_000;
        s.cpu_share = Some(if class == StallClass::Blocking {
            0.0
        } else {
            1.0
        });
        s.task_location = Some(SourceLocation::new(FILE, 40, 5));
        if class == StallClass::Blocking {
            s.syscall = Some("futex".into());
        }
        if let Some((line, primitive)) = sampled {
            let call = Frame::new(
                primitive,
                Some("/rustc/x/library/std/src/sync.rs".into()),
                Some(1),
            );
            let user = Frame::new("enrich::lookup", Some(FILE.into()), Some(line));
            let mut sample = StackSample::default();
            sample.count = 1;
            sample.frames = vec![call.clone(), user.clone()];
            s.stacks = vec![sample];
            s.primitive = (!primitive.is_empty()).then_some(call);
            s.culprit = Some(user);
        }
        s
    }

    /// Known truth: a loop that hashes at line 12 and writes each result at line 14, recorded
    /// at line 12 (its samples in the write, three, were taken as the short call returned):
    /// the finding shows the hashing's stack, not the write's, though the write's comes first,
    /// and its advice says the poll writes often. A record with only the write's shows it.
    #[test]
    fn a_finding_shows_a_stack_through_its_line_not_a_short_calls() {
        let f = |name: &str, line: u32| Frame::new(name, Some(FILE.into()), Some(line));
        let sample = |count: u32, frames: Vec<Frame>, in_a_call| {
            let mut st = StackSample::default();
            st.count = count;
            st.frames = frames;
            st.in_a_call = in_a_call;
            st
        };
        let write = sample(
            3,
            vec![Frame::new("pwrite", None, None), f("enrich::store", 14)],
            Some(0),
        );
        let hash = sample(
            1,
            vec![
                Frame::new(
                    "<core::hash::sip::Hasher<S> as core::hash::Hasher>::write",
                    Some("/rustc/x/library/core/src/hash/sip.rs".into()),
                    Some(250),
                ),
                f("enrich::store", 12),
            ],
            Some(0),
        );
        let mut s = stall(1, StallClass::CpuBound, None);
        s.culprit = Some(f("enrich::store", 12));
        s.stacks = vec![write.clone(), hash.clone()];
        let found = findings(std::slice::from_ref(&s));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].kind, "cpu-bound-poll", "{found:#?}");
        assert_eq!(found[0].location.line, 12, "{found:#?}");
        assert!(
            found[0].stack[0].starts_with("<core::hash::sip"),
            "{found:#?}"
        );
        // Most samples at the write: the advice says it calls often.
        let often = "3 of the 4 stack samples of these stalls came as a short system call \
                     returned (`pwrite` 3)";
        assert!(found[0].recommendation.contains(often), "{found:#?}");
        assert_eq!(super::shown_stack(&s), Some(&hash));
        // Written 4 times beside one hashing: none stayed in the call, some did, the hashing
        // three times. Still cpu-bound (under half the samples stayed in the call).
        for (writes, stayed, hashing, words) in [
            (4, 0, 1, Some("4 of the 5 stack samples")),
            (4, 2, 1, None),
            (1, 0, 3, None),
        ] {
            let mut other = s.clone();
            other.stacks[0].count = writes;
            other.stacks[0].in_a_call = Some(stayed);
            other.stacks[1].count = hashing;
            let these = findings(std::slice::from_ref(&other));
            assert_eq!(these[0].kind, "cpu-bound-poll", "{these:#?}");
            let said = these[0].recommendation.contains("system call returned");
            assert_eq!(said, words.is_some(), "{these:#?}");
            assert!(words.is_none_or(|w| these[0].recommendation.contains(w)));
        }
        // Another line's stall merged into the finding (a function's) adds none of its samples.
        let mut elsewhere = stall(2, StallClass::CpuBound, None);
        elsewhere.duration_ns = 10_000_000;
        elsewhere.culprit = Some(f("enrich::store", 14));
        elsewhere.stacks = vec![sample(
            9,
            vec![Frame::new("pwrite", None, None), f("enrich::store", 14)],
            Some(0),
        )];
        let mut mostly_hashing = s.clone();
        mostly_hashing.stacks[1].count = 3;
        let these = findings(&[mostly_hashing, elsewhere]);
        assert_eq!(these.len(), 1, "{these:#?}");
        assert_eq!(these[0].location.line, 12, "{these:#?}");
        assert!(
            !these[0].recommendation.contains("system call returned"),
            "{these:#?}"
        );
        // The allocator giving memory back between steps (`madvise` answered at once, three
        // samples of four): no word of I/O calls.
        let mut allocating = s.clone();
        allocating.stacks[0] = sample(
            3,
            vec![
                Frame::new("madvise", None, None),
                Frame::new("__libc_free", None, None),
                f("enrich::store", 12),
            ],
            Some(0),
        );
        let these = findings(std::slice::from_ref(&allocating));
        assert_eq!(these[0].kind, "cpu-bound-poll", "{these:#?}");
        assert!(
            !these[0].recommendation.contains("system call returned"),
            "{these:#?}"
        );
        s.culprit = Some(f("enrich::store", 14));
        s.stacks = vec![write.clone()];
        assert_eq!(super::shown_stack(&s), Some(&write));
    }

    /// Known truth: a poll that slept 4 samples in helper `audit` (called from line 55) and
    /// then computed at line 26 of helper `score` (called from line 60) for longer: recorded
    /// on CPU at line 26. Its caller is the one of line 26's stacks (60), though the asleep
    /// stack has the most samples; a second such stall adds to the count; a stall recorded
    /// at an async fn's own line names no caller.
    #[test]
    fn a_finding_in_a_helper_names_the_caller_of_its_own_line() {
        let f = |name: &str, line: u32| Frame::new(name, Some(FILE.into()), Some(line));
        let std =
            |name: &str| Frame::new(name, Some("/rustc/x/library/std/src/x.rs".into()), Some(1));
        let sample = |count: u32, frames: Vec<Frame>| {
            let mut st = StackSample::default();
            st.count = count;
            st.frames = frames;
            st
        };
        let helper = |id: u64| {
            let mut s = stall(id, StallClass::CpuBound, None);
            s.duration_ns = 60_000_000;
            s.culprit = Some(f("score", 26));
            s.stacks = vec![
                sample(
                    4,
                    vec![
                        std("std::thread::sleep"),
                        f("audit", 8),
                        f("enrich::handle::{async_fn#0}", 55),
                    ],
                ),
                sample(
                    1,
                    vec![f("score", 26), f("enrich::handle::{async_fn#0}", 60)],
                ),
                sample(
                    1,
                    vec![
                        std("core::slice::sort"),
                        f("score", 26),
                        f("enrich::handle::{async_fn#0}", 60),
                    ],
                ),
            ];
            s
        };
        let findings = findings(&[helper(1), helper(2)]);
        let at_26: Vec<_> = findings.iter().filter(|x| x.location.line == 26).collect();
        assert_eq!(at_26.len(), 1, "{findings:#?}");
        assert_eq!(
            at_26[0].called_from,
            [format!(
                "{FILE}:60 in enrich::handle::{{async_fn#0}} (2 stalls)"
            )],
            "{findings:#?}"
        );
        let mut inline = stall(3, StallClass::Blocking, Some((70, "std::thread::sleep")));
        inline.stacks[0].frames[1] = f("enrich::handle::{async_fn#0}", 70);
        inline.culprit = Some(f("enrich::handle::{async_fn#0}", 70));
        let findings = self::findings(&[inline]);
        assert!(
            findings.iter().all(|x| x.called_from.is_empty()),
            "{findings:#?}"
        );
        // Merged across instances: one place, the counts added, at most three.
        assert_eq!(
            super::callers_text(
                [
                    ("a.rs:1 in f".to_string(), 2),
                    ("b.rs:2 in g".to_string(), 1),
                    ("a.rs:1 in f".to_string(), 3)
                ]
                .into_iter()
            ),
            ["a.rs:1 in f (5 stalls)", "b.rs:2 in g (1 stall)"]
        );
        assert_eq!(
            super::caller_parts("/home/u/svc (copy)/a.rs:1 in f (5 stalls)"),
            Some(("/home/u/svc (copy)/a.rs:1 in f".to_string(), 5))
        );
    }

    /// On a busy machine every look found the thread runnable but waiting for a core, so the
    /// stall has no class; its stack names the library call it was in (not a blocking one).
    /// Never found asleep, it computed if it still used a fair share of the CPU (just above
    /// the preempted share); below it, it was preempted (no finding); with no CPU figure at
    /// all, the stack's call decides as before.
    #[test]
    fn an_unclassified_stall_that_used_the_cpu_is_cpu_bound_not_a_blocking_call() {
        let share = crate::diagnoses::PREEMPTED_CPU_SHARE;
        let mut busy = stall(1, StallClass::Unknown, Some((77, "rusqlite::commit")));
        busy.cpu_share = Some(share + 0.01);
        assert_eq!(super::stall_kind(&busy), "cpu-bound-poll");
        let mut starved = busy.clone();
        starved.cpu_share = Some(share - 0.01);
        assert!(crate::diagnoses::preempted(&starved));
        let mut unknown = stall(2, StallClass::Unknown, Some((77, "std::thread::sleep")));
        unknown.cpu_share = None;
        assert_eq!(super::stall_kind(&unknown), "blocking-call");
        let mut asleep = stall(3, StallClass::Blocking, Some((77, "std::thread::sleep")));
        asleep.cpu_share = Some(share + 0.5);
        assert_eq!(super::stall_kind(&asleep), "blocking-call");
    }

    /// Known truth: one poll called a blocking client (12 ms asleep, at line 50), then
    /// computed on its answer (the stall, CPU-bound at line 60, 30 ms in all). The call is a
    /// finding of its own when it is in another function, and listed with the computation
    /// when it is in the same one; the poll is counted once there, with its whole time.
    #[test]
    fn a_stalls_part_is_a_finding_at_its_line_and_its_poll_counts_once() {
        let with_part = |function: &str| {
            let mut s = stall(1, StallClass::CpuBound, Some((60, "")));
            let mut part = asyncprof_format::StallPart::default();
            part.class = StallClass::Blocking;
            part.duration_ns = 12_000_000;
            part.syscall = Some("recvfrom".into());
            let call = Frame::new(
                "std::net::TcpStream::read",
                Some("/rustc/x/library/std/src/net/tcp.rs".into()),
                Some(1),
            );
            let user = Frame::new(function, Some(FILE.into()), Some(50));
            let mut sample = StackSample::default();
            sample.count = 3;
            sample.frames = vec![call.clone(), user.clone()];
            part.stacks = vec![sample];
            part.primitive = Some(call);
            part.culprit = Some(user);
            s.part = Some(part);
            s
        };
        let found = findings(&[with_part("enrich::fetch")]);
        let at = |line| {
            found
                .iter()
                .find(|f| f.location.line == line)
                .unwrap_or_else(|| panic!("{found:#?}"))
        };
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(
            (at(60).kind, at(60).count, at(60).total_ms),
            ("cpu-bound-poll", 1, 30.0)
        );
        assert_eq!(
            (at(50).kind, at(50).count, at(50).max_ms),
            ("blocking-call", 1, 12.0)
        );
        assert_eq!(at(50).syscall.as_deref(), Some("recvfrom"));
        assert!(at(50).stack[0].contains("TcpStream::read"), "{found:#?}");

        let found = findings(&[with_part("enrich::lookup")]);
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!(
            (f.kind, f.location.line, f.count, f.total_ms),
            ("cpu-bound-poll", 60, 1, 30.0)
        );
        assert!(
            f.also
                .iter()
                .any(|a| a.contains(":50 ") && a.contains("blocking-call")),
            "{f:#?}"
        );
    }

    /// Known truth: a stable-tier run (no task known) of a program built without debug info
    /// computed in two functions: each culprit has a function and no file or line. Two
    /// findings, one per function, each saying how to get its line.
    #[test]
    fn culprits_without_files_in_two_functions_are_two_findings() {
        let at = |id, function: &str| {
            let mut s = stall(id, StallClass::CpuBound, None);
            s.task_location = None;
            let user = Frame::new(function, None, None);
            let mut sample = StackSample::default();
            sample.count = 2;
            sample.frames = vec![Frame::new("core::slice::sort", None, None), user.clone()];
            s.stacks = vec![sample];
            s.culprit = Some(user);
            s
        };
        let f = findings(&[
            at(1, "svc::parse"),
            at(2, "svc::render"),
            at(3, "svc::parse"),
        ]);
        let got: Vec<_> = f
            .iter()
            .map(|f| (f.kind, f.location.function.as_str(), f.count))
            .collect();
        assert_eq!(
            got,
            [
                ("cpu-bound-poll", "svc::parse", 2),
                ("cpu-bound-poll", "svc::render", 1)
            ],
            "{f:#?}"
        );
        assert!(f[1]
            .no_line_reason()
            .is_some_and(|r| r.contains("svc::render") && r.contains("line-tables-only")));
    }

    fn findings(stalls: &[StallRecord]) -> Vec<super::Finding> {
        let mut bytes = Vec::new();
        let mut w = RunWriter::new(&mut bytes, &Header::new("svc")).unwrap();
        for s in stalls {
            w.write_stall(s).unwrap();
        }
        w.write_end().unwrap();
        super::diagnose(&read_bytes(&bytes).unwrap())
    }

    #[test]
    fn stalls_without_a_stack_asleep_in_a_task_that_waits_for_a_lock_are_lock_waits() {
        let lock = "std::sync::poison::mutex::Mutex<T>::lock";
        let f = findings(&[
            stall(1, StallClass::Blocking, Some((167, lock))),
            stall(2, StallClass::Blocking, Some((167, lock))),
            stall(3, StallClass::Blocking, None),
            stall(4, StallClass::Blocking, None),
            stall(5, StallClass::Blocking, None),
        ]);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].kind, "lock-contention", "{f:#?}");
        assert_eq!((f[0].location.line, f[0].count), (167, 5));
    }

    #[test]
    fn stalls_without_a_stack_asleep_in_a_task_that_computes_stay_apart() {
        let stalls = [
            stall(1, StallClass::CpuBound, Some((90, ""))),
            stall(2, StallClass::CpuBound, Some((90, ""))),
            stall(3, StallClass::Blocking, None),
        ];
        let f = findings(&stalls);
        let kinds: Vec<_> = f
            .iter()
            .map(|f| (f.kind, f.location.line, f.count))
            .collect();
        // The asleep stall fits no sampled stall of its task: it is not a finding at the
        // spawn line (no stack showed that line), but evidence about its task.
        assert_eq!(kinds, [("cpu-bound-poll", 90, 2)], "{f:#?}");
        let s = summary(&stalls);
        assert_eq!(s.stalls_without_culprit.len(), 1, "{s:#?}");
        let t = &s.stalls_without_culprit[0];
        assert_eq!(t.task_location, format!("{FILE}:40:5"));
        assert_eq!((t.stalls, t.asleep, t.on_cpu), (1, 1, 0));
        assert_eq!(t.syscalls, ["futex"]);
    }

    /// A function whose stalls were on CPU at one line and asleep in I/O at another (a loop
    /// of inserts and its commit) is one place to change: one finding, of the kind that took
    /// longest, naming the other line. A different function stays a finding of its own.
    #[test]
    fn one_function_on_cpu_at_one_line_and_asleep_at_another_is_one_finding() {
        let mut commit = stall(1, StallClass::CpuBound, Some((40, "")));
        commit.duration_ns = 60_000_000;
        let mut insert = stall(
            2,
            StallClass::Blocking,
            Some((37, "rusqlite::Statement::execute")),
        );
        insert.syscall = Some("pwrite64".into());
        let f = findings(&[commit.clone(), insert.clone()]);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(
            (f[0].kind, f[0].location.line, f[0].count),
            ("cpu-bound-poll", 40, 2)
        );
        assert!(
            f[0].also
                .iter()
                .any(|a| a.contains(":37 ") && a.contains("blocking-call")),
            "{f:#?}"
        );
        // The computation's finding does not say it was asleep in the insert's write.
        assert_eq!(f[0].syscall, None, "{f:#?}");

        let mut elsewhere = insert;
        if let Some(c) = elsewhere.culprit.as_mut() {
            c.function = "enrich::store".into();
        }
        for sample in &mut elsewhere.stacks {
            sample.frames[1].function = "enrich::store".into();
        }
        elsewhere.task_location = Some(SourceLocation::new(FILE, 90, 5));
        let f = findings(&[commit, elsewhere]);
        let kinds: Vec<_> = f.iter().map(|f| (f.kind, f.location.line)).collect();
        assert_eq!(
            kinds,
            [("cpu-bound-poll", 40), ("blocking-call", 37)],
            "{f:#?}"
        );
    }

    fn summary(stalls: &[StallRecord]) -> crate::Summary {
        crate::Summary::of(&read_bytes(&run_bytes(stalls, Header::new("svc"))).unwrap())
    }

    fn run_bytes(stalls: &[StallRecord], header: Header) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut w = RunWriter::new(&mut bytes, &header).unwrap();
        for s in stalls {
            w.write_stall(s).unwrap();
        }
        w.write_end().unwrap();
        bytes
    }

    /// Known truth: one task stalled three times, and no stack was sampled (signals off, on
    /// CPU; the budget spent; a sample that failed). Nothing showed a line: no finding, and
    /// the report still shows the three stalls under the task's spawn location.
    #[test]
    fn a_run_with_only_stack_less_stalls_in_one_task_has_no_finding_and_shows_them_under_the_task()
    {
        let mut never_returned = stall(3, StallClass::CpuBound, None);
        never_returned.ongoing = true;
        never_returned.duration_ns = 90_000_000;
        let stalls = [
            stall(1, StallClass::CpuBound, None),
            stall(2, StallClass::Blocking, None),
            never_returned,
        ];
        assert!(findings(&stalls).is_empty(), "{:#?}", findings(&stalls));
        let mut header = Header::new("svc");
        header.config.stall_signal = 0;
        let s = crate::Summary::of(&read_bytes(&run_bytes(&stalls, header)).unwrap());
        assert!(s.findings.is_empty());
        assert_eq!((s.stalls, s.unattributed_stalls), (3, 0));
        assert_eq!(s.stalls_without_culprit.len(), 1, "{s:#?}");
        let t = &s.stalls_without_culprit[0];
        assert_eq!(t.task_location, format!("{FILE}:40:5"));
        assert_eq!(
            (t.stalls, t.on_cpu, t.asleep, t.never_returned, t.with_stack),
            (3, 2, 1, 1, 0)
        );
        assert_eq!((t.total_ms, t.max_ms), (150.0, 90.0));
        // Signals were off: the stalls on CPU have no stack by that choice, and say so.
        assert_eq!(t.note.as_deref(), Some(crate::SIGNALS_OFF));

        let text = String::from_utf8(crate::render_text(&s)).unwrap();
        assert!(text.contains("no findings (3 stalls)"), "{text}");
        assert!(
            text.contains(&format!(
                "task spawned at {FILE}:40:5: 3 stalls, 150.0 ms in all, longest 90.0 ms; \
                 2 on CPU (no stack: signals were off), 1 asleep (futex), 1 never returned"
            )),
            "{text}"
        );
        // Said once, at the top; the stalls on CPU point to it.
        assert_eq!(text.matches(crate::SIGNALS_OFF).count(), 1, "{text}");
        assert!(text.lines().nth(1).unwrap().starts_with(crate::SIGNALS_OFF));
        assert!(!text.contains("spawned here"), "{text}");
        let html = crate::render_html(
            &read_bytes(&run_bytes(&stalls, Header::new("svc"))).unwrap(),
            &s,
            &|_| None,
        );
        assert!(html.contains("Stalls without a line to blame"));
        assert!(html.contains(&format!("{FILE}:40:5")));
    }

    #[test]
    fn a_stall_whose_stacks_never_reach_the_programs_code_is_not_a_finding_either() {
        let mut foreign = stall(1, StallClass::CpuBound, None);
        let mut sample = StackSample::default();
        sample.count = 2;
        sample.frames = vec![Frame::new(
            "tokio::runtime::task::harness::poll",
            None,
            None,
        )];
        foreign.stacks = vec![sample];
        assert!(findings(std::slice::from_ref(&foreign)).is_empty());
        let s = summary(&[foreign]);
        assert_eq!(s.stalls_without_culprit[0].with_stack, 1, "{s:#?}");
        assert_eq!(s.stalls_without_culprit[0].note, None);
    }
}
