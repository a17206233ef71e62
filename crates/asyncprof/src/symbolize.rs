//! Turning a stall's raw stacks into named frames, and naming its culprit. Cold path: runs on
//! the aggregator thread.

use std::collections::HashMap;

use asyncprof_format::{culprit, Frame, StackSample, StallClass, StallPart, StallRecord};

use crate::watchdog::RawStall;

/// Frames per address, cached for the life of the recording (code does not move).
///
/// Addresses not yet cached are looked up in one batch per stack ([`crate::resolve`]): the
/// module's file is mapped and its debug info read as a stream for that batch only, so
/// nothing parsed outlives it and a stall costs the service no more than one compilation
/// unit's entries at a time.
#[derive(Debug, Default)]
pub(crate) struct Symbolizer {
    cache: HashMap<(usize, bool), Vec<Frame>>,
    /// A batch ran since the last [`Symbolizer::release_if_idle`]: give the allocator's free
    /// memory back.
    looked_up: bool,
}

/// Addresses cached at most (a few hundred bytes each); past it the cache starts over.
const MAX_CACHED: usize = 100_000;

/// A stall's class and its share on CPU. A poll's stall is classed by where its time went
/// (its thread's `schedstat`: on CPU against asleep, time spent waiting for a core left out),
/// not by the share of looks that found it on CPU: the looks come closest at a stall's start,
/// so a poll that slept, then computed for longer, had most of its looks asleep. The looks
/// decide where the time is unknown, for a busy period's stall (several polls' time), and when
/// no stack of the time's class names a line while one of the looks' class does (signals off,
/// or every signal sample failed): a class is not given a line it has no evidence for.
fn classify(raw: &RawStall, stacks: &[StackSample], on_cpu: &[bool]) -> (StallClass, f64) {
    // On CPU for at least half: CPU-bound.
    let by_ratio = |on_cpu: f64, asleep: f64| {
        let ratio = on_cpu / (on_cpu + asleep);
        let class = if ratio >= 0.5 {
            StallClass::CpuBound
        } else {
            StallClass::Blocking
        };
        (class, ratio)
    };
    let by_looks = match raw.on_cpu + raw.asleep {
        0 => (StallClass::Unknown, 0.0),
        _ => by_ratio(f64::from(raw.on_cpu), f64::from(raw.asleep)),
    };
    let by_time = match raw.time_split {
        Some(t) if raw.task_id != 0 => {
            let (on_cpu, asleep) = t.estimated();
            by_ratio(on_cpu as f64, asleep as f64)
        }
        _ => return by_looks,
    };
    let names_a_line = |class| class_names_a_line(stacks, on_cpu, class);
    if by_time.0 != by_looks.0 && !names_a_line(by_time.0) && names_a_line(by_looks.0) {
        return by_looks;
    }
    by_time
}

/// Whether a stack taken on CPU (`cpu`) or copied asleep is of `class` (every stack is of
/// an unknown class).
fn of_class(class: StallClass, cpu: bool) -> bool {
    match class {
        StallClass::CpuBound => cpu,
        StallClass::Blocking => !cpu,
        _ => true,
    }
}

/// A finished poll's stall whose time of the other class than `class` (asleep for a CPU-bound
/// one, on CPU for a blocking one) reached the threshold too, at a line of the user's that
/// stacks of that class name and that is not the stall's (`culprit`), reached by at least two
/// and half of that class's samples: that part, with those stacks. A poll that called a blocking client for 25 ms, then computed on its answer for
/// 100 ms, is a CPU-bound stall at the computation with a blocking part at the call.
fn other_part(
    raw: &RawStall,
    stacks: &[StackSample],
    on_cpu: &[bool],
    class: StallClass,
    culprit: Option<&Frame>,
) -> Option<StallPart> {
    let t = raw
        .time_split
        .filter(|_| raw.task_id != 0 && !raw.ongoing)?;
    // The part's time must reach the threshold as measured; its time before the first read
    // (half the threshold, not measured) is counted in the time shown only.
    let (cpu_ns, asleep_ns) = t.estimated();
    let (other, measured, estimated) = match class {
        StallClass::CpuBound => (StallClass::Blocking, t.asleep_ns, asleep_ns),
        StallClass::Blocking => (StallClass::CpuBound, t.on_cpu_ns, cpu_ns),
        _ => return None,
    };
    if raw.threshold_ns == 0 || measured < raw.threshold_ns {
        return None;
    }
    let (of, flags): (Vec<StackSample>, Vec<bool>) = stacks
        .iter()
        .zip(on_cpu)
        .filter(|&(_, &cpu)| of_class(other, cpu))
        .map(|(s, &cpu)| (s.clone(), cpu))
        .unzip();
    // No stack of the class names a line: no line, no part.
    let (primitive, line) = most_sampled_culprit(&of, &flags, other);
    let line = line?;
    let same = |c: &Frame| culprit::same_line(c, &line);
    if culprit.is_some_and(same) {
        return None;
    }
    // The line must account for that time: at least two of the class's samples, and half of
    // them, reach it. Short sleeps spread through a computation (a page fault, a log write)
    // can add up to the threshold without any one line holding the thread for it. Samples
    // taken as a short call returned count as they did for the line.
    let named = |s: &&StackSample| culprit::primitive_and_culprit(&s.frames).1.is_some();
    let placed = any_placed(of.iter().filter(named));
    let weight = |s: &StackSample| placing_weight(s, placed);
    let total: u32 = of.iter().map(&weight).sum();
    let at_line: u32 = of
        .iter()
        .filter(|s| {
            culprit::primitive_and_culprit(&s.frames)
                .1
                .is_some_and(|c| same(&c))
        })
        .map(&weight)
        .sum();
    if at_line < 2 || at_line * 2 < total {
        return None;
    }
    let mut part = StallPart::default();
    part.class = other;
    part.duration_ns = estimated;
    part.stacks = of;
    part.primitive = primitive;
    part.culprit = Some(line);
    Some(part)
}

/// Whether one of the stacks taken as `class` (on CPU: a signal's; blocking: copied while
/// asleep) names a line of the user's.
fn class_names_a_line(stacks: &[StackSample], on_cpu: &[bool], class: StallClass) -> bool {
    class != StallClass::Unknown
        && stacks.iter().zip(on_cpu).any(|(s, &cpu)| {
            of_class(class, cpu) && culprit::primitive_and_culprit(&s.frames).1.is_some()
        })
}

/// A stall's stacks (each with whether it was taken on CPU, and the CPU time its signals'
/// answers waited for inside a call: [`crate::watchdog::InCall::cpu_ns`]), most sampled
/// first; among those sampled as often, the one whose thread computed longer inside its call
/// before answering first (a read from the page cache, its signal held until the read
/// returned, before the unmapping of its buffer as it was freed, `munmap`), then by frames.
/// Among the stacks of one line that weigh the same, the first's call is the line's
/// ([`most_sampled_culprit`]).
fn most_sampled_first(mut stacks: Vec<(StackSample, bool, u64)>) -> Vec<(StackSample, bool)> {
    stacks.sort_by(|(a, _, a_cpu), (b, _, b_cpu)| {
        b.count
            .cmp(&a.count)
            .then_with(|| b_cpu.cmp(a_cpu))
            .then_with(|| a.frames.cmp(&b.frames))
    });
    stacks.into_iter().map(|(s, cpu, _)| (s, cpu)).collect()
}

/// The user's line the most samples of a stall reach, and the call it made in the most sampled
/// stack among them. A poll on CPU leaves a different innermost frame in each sample, so its
/// stacks differ while its line is the same; ties go to the most sampled stack's line.
/// `stacks` are sorted, most sampled first; `on_cpu` says for each whether it was taken on
/// CPU. With `class` CPU-bound, only the stacks taken on CPU count (when one of them names a
/// line), and with `class` blocking only those copied while the thread slept: a poll that
/// slept, then computed for longer, is CPU-bound at the line that computed, however many
/// samples (denser at a stall's start) its sleep got.
///
/// Samples taken as a short system call the user's line made through std
/// ([`asyncprof_format::samples_placing_no_line`]: the signal's interrupt overtaken by the
/// call) count only when no
/// other sample names a line: they show the thread computing just before the call, elsewhere.
/// A loop that computes and then writes a line of output has most of its samples in the
/// write, all answered at once.
fn most_sampled_culprit(
    stacks: &[StackSample],
    on_cpu: &[bool],
    class: StallClass,
) -> (Option<Frame>, Option<Frame>) {
    // Every stack counts when none of the class names a line (or the class is unknown).
    let only_the_class = class_names_a_line(stacks, on_cpu, class);
    let mut chosen: Vec<(&StackSample, Frame, Option<Frame>)> = stacks
        .iter()
        .zip(on_cpu)
        .filter(|&(_, &cpu)| !only_the_class || of_class(class, cpu))
        .filter_map(|(s, _)| {
            let (primitive, culprit) = culprit::primitive_and_culprit(&s.frames);
            Some((s, culprit?, primitive))
        })
        .collect();
    let placed = any_placed(chosen.iter().map(|(s, _, _)| *s));
    let weight = |s: &StackSample| placing_weight(s, placed);
    // Heaviest first (stable: most sampled first among equals): a line's call is its
    // heaviest stack's, and ties go to the line whose heaviest stack comes first.
    chosen.sort_by_key(|(s, _, _)| std::cmp::Reverse(weight(s)));
    let mut lines: Vec<(Option<Frame>, Frame, u32)> = Vec::new();
    for (s, culprit, primitive) in chosen {
        match lines
            .iter_mut()
            .find(|(_, c, _)| culprit::same_line(c, &culprit))
        {
            Some((_, _, n)) => *n += weight(s),
            None => lines.push((primitive, culprit, weight(s))),
        }
    }
    let mut best: Option<(Option<Frame>, Frame, u32)> = None;
    for l in lines {
        if best.as_ref().is_none_or(|b| l.2 > b.2) {
            best = Some(l);
        }
    }
    best.map_or((None, None), |(p, c, _)| (p, Some(c)))
}

/// Whether, among `stacks` (those that name a line), one has a sample that places a line
/// ([`asyncprof_format::samples_placing_no_line`]): then only such samples do
/// ([`placing_weight`]).
fn any_placed<'a>(mut stacks: impl Iterator<Item = &'a StackSample>) -> bool {
    stacks.any(|s| s.count > asyncprof_format::samples_placing_no_line(s))
}

/// What a stack's samples weigh in placing a stall's line: all of them, or with `placed`
/// ([`any_placed`]) only those that place a line.
fn placing_weight(s: &StackSample, placed: bool) -> u32 {
    if placed {
        s.count - asyncprof_format::samples_placing_no_line(s)
    } else {
        s.count
    }
}

/// Leave out of a stall's stacks (each with whether it was taken on CPU) those that cannot
/// have held the worker. A busy period (the stable tier, or the hooks tier's stretch between
/// polls: `task_id` 0) of a current-thread runtime's `block_on` thread runs on after
/// `block_on` returns, through the caller's own code, until the next `block_on` parks: when
/// some of its stacks show a runtime driven ([`culprit::shows_a_runtime`]), those outside
/// every runtime ([`culprit::outside_any_runtime`]) are the caller's code, which holds no
/// worker. A stall of a task's poll, or one no stack shows in a runtime, keeps every stack.
fn leave_out_the_callers_code(stacks: &mut Vec<(StackSample, bool)>, task_id: u64) {
    let mixed = task_id == 0
        && stacks
            .iter()
            .any(|(s, _)| culprit::shows_a_runtime(&s.frames));
    if mixed {
        stacks.retain(|(s, _)| !culprit::outside_any_runtime(&s.frames));
    }
}

/// The sigreturn trampoline: every frame above it belongs to the signal handler.
const TRAMPOLINES: &[&str] = &["__restore_rt", "__kernel_rt_sigreturn"];

impl Symbolizer {
    /// Look up every `(ip, exact)` not cached yet, in one batch. `exact` is true for the
    /// interrupted instruction itself; other addresses are return addresses, looked up one
    /// byte back so that they name the call, not the line after it.
    fn look_up(&mut self, keys: impl Iterator<Item = (usize, bool)>) {
        // Each once as it is met: a batch of many stalls' stacks repeats their shared frames.
        let missing: std::collections::HashSet<(usize, bool)> =
            keys.filter(|k| !self.cache.contains_key(k)).collect();
        if missing.is_empty() {
            return;
        }
        let mut missing: Vec<(usize, bool)> = missing.into_iter().collect();
        missing.sort_unstable();
        if self.cache.len() + missing.len() > MAX_CACHED {
            self.cache.clear();
        }
        let lookup =
            |&(ip, exact): &(usize, bool)| (if exact { ip } else { ip.saturating_sub(1) }) as u64;
        let addrs: Vec<u64> = missing.iter().map(lookup).collect();
        let mut found = crate::resolve::resolve(&addrs);
        for key in missing {
            let mut frames = found.remove(&lookup(&key)).unwrap_or_default();
            for f in &mut frames {
                if f.function.is_empty() {
                    f.function = format!("{:#x}", key.0);
                }
            }
            if frames.is_empty() {
                frames.push(Frame::new(format!("{:#x}", key.0), None, None));
            }
            self.cache.insert(key, frames);
        }
        self.looked_up = true;
    }

    /// The frames at `ip`, innermost (inlined) first, once looked up.
    fn frames_at(&self, ip: usize, exact: bool) -> &[Frame] {
        self.cache.get(&(ip, exact)).map_or(&[], Vec::as_slice)
    }

    /// Give back what the allocator keeps of the batches' memory, once after they ran.
    pub(crate) fn release_if_idle(&mut self) {
        if std::mem::take(&mut self.looked_up) {
            asyncprof_sampler::release_free_memory();
        }
    }

    /// Look up every address of `stacks` not cached yet, in two batches for them all (a
    /// module's unit is read once per batch, whatever the number of its addresses).
    fn look_up_stacks<'s>(&mut self, stacks: impl Iterator<Item = &'s [usize]> + Clone) {
        self.look_up(stacks.clone().flatten().map(|&ip| (ip, false)));
        let exact: Vec<(usize, bool)> = stacks
            .filter_map(|ips| ips.get(self.interrupted_at(ips)?).map(|&ip| (ip, true)))
            .collect();
        self.look_up(exact.into_iter());
    }

    /// Look up every address of `stalls`' stacks not cached yet, in one lookup for them all.
    pub(crate) fn look_up_stalls<'r>(
        &mut self,
        stalls: impl Iterator<Item = &'r RawStall> + Clone,
    ) {
        self.look_up_stacks(stalls.flat_map(|raw| raw.stacks.keys().map(Vec::as_slice)));
    }

    /// Where the interrupted instruction is in a captured stack: the frame after the sigreturn
    /// trampoline (`None`: no trampoline, a stack copied from outside).
    fn interrupted_at(&self, ips: &[usize]) -> Option<usize> {
        ips.iter()
            .position(|&ip| {
                self.frames_at(ip, false)
                    .iter()
                    .any(|f| TRAMPOLINES.iter().any(|t| f.function.contains(t)))
            })
            .map(|i| i + 1)
    }

    /// A captured stack as named frames, innermost first, without the handler's own frames.
    pub(crate) fn stack(&mut self, ips: &[usize]) -> Vec<Frame> {
        self.look_up_stacks(std::iter::once(ips));
        let start = self.interrupted_at(ips);
        let mut out = Vec::new();
        match start {
            Some(first) => {
                for (k, &ip) in ips.iter().enumerate().skip(first) {
                    out.extend_from_slice(self.frames_at(ip, k == first));
                }
            }
            None => {
                for &ip in ips {
                    out.extend(
                        self.frames_at(ip, false)
                            .iter()
                            .filter(|f| !is_capture_frame(f))
                            .cloned(),
                    );
                }
            }
        }
        out
    }

    /// The stall record for the run file.
    /// `run_start_ns` is when the run began on the coarse clock's scale.
    /// Its stacks' addresses are looked up as [`Symbolizer::stack`] meets them, unless
    /// [`Symbolizer::look_up_stalls`] took them with those of the other stalls at hand.
    pub(crate) fn record(&mut self, raw: &RawStall, run_start_ns: u64) -> StallRecord {
        let stacks: Vec<(StackSample, bool, u64)> = raw
            .stacks
            .iter()
            .map(|(ips, &count)| {
                let mut s = StackSample::default();
                s.count = count;
                s.frames = self.stack(ips);
                let in_call = raw.in_a_call.get(ips).copied().unwrap_or_default();
                s.in_a_call = Some(in_call.samples.min(count));
                (s, raw.on_cpu_stacks.contains(ips), in_call.cpu_ns)
            })
            .collect();
        let mut stacks = most_sampled_first(stacks);
        // The caller's code after a `block_on` returned is not the stall's: its stacks leave
        // the record (its line, its call, the stack a finding shows).
        leave_out_the_callers_code(&mut stacks, raw.task_id);
        let (stacks, on_cpu): (Vec<StackSample>, Vec<bool>) = stacks.into_iter().unzip();
        let (class, on_cpu_ratio) = classify(raw, &stacks, &on_cpu);
        let (primitive, culprit) = most_sampled_culprit(&stacks, &on_cpu, class);
        let syscall = raw.syscalls.iter().max_by_key(|(_, n)| **n).map(|(nr, _)| {
            asyncprof_sampler::syscall_name(*nr)
                .map(str::to_string)
                .unwrap_or_else(|| format!("syscall {nr}"))
        });
        let part = other_part(raw, &stacks, &on_cpu, class, culprit.as_ref()).map(|mut p| {
            if p.class == StallClass::Blocking {
                p.syscall.clone_from(&syscall);
            }
            p
        });
        // The stall's class's stacks first: a finding shows the first of them through the
        // stall's line (one not taken as a short call returned, where there is one).
        let (stacks, _): (Vec<StackSample>, Vec<bool>) = {
            let mut both: Vec<_> = stacks.into_iter().zip(on_cpu).collect();
            both.sort_by_key(|(_, cpu)| !of_class(class, *cpu));
            both.into_iter().unzip()
        };
        let mut r = StallRecord::default();
        r.id = raw.id;
        r.worker = raw.worker;
        r.runtime = raw.runtime;
        r.thread_name = raw.thread_name.clone();
        r.tid = raw.tid;
        r.task_id = raw.task_id;
        r.task_location = raw.task_location.clone();
        r.start_ns = raw.start_ns.saturating_sub(run_start_ns);
        r.duration_ns = raw.last_seen_ns.saturating_sub(raw.start_ns);
        r.ongoing = raw.ongoing;
        r.detection_latency_ns = raw.detected_ns.saturating_sub(raw.start_ns);
        r.class = class;
        r.syscall = if class == StallClass::Blocking {
            syscall
        } else {
            None
        };
        r.on_cpu_ratio = on_cpu_ratio;
        r.cpu_share = raw.cpu_share;
        r.crowded_share =
            (raw.crowd_known > 0).then(|| f64::from(raw.crowded) / f64::from(raw.crowd_known));
        r.stacks = stacks;
        r.primitive = primitive;
        r.culprit = culprit;
        r.max_ready_tasks = raw.max_ready;
        r.part = part;
        r
    }
}

/// Frames of the capture machinery, dropped when no trampoline marks where they end.
fn is_capture_frame(frame: &Frame) -> bool {
    let function = frame.function.as_str();
    let file = frame.file.as_deref().unwrap_or("");
    function.starts_with("backtrace::")
        || function.starts_with("asyncprof_sampler::")
        || function.contains("_Unwind_")
        || file.contains("asyncprof-sampler/src/signal")
        || file.contains("/backtrace-0.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn a_known_function() -> usize {
        a_known_function as fn() -> usize as usize
    }

    fn sample(count: u32, inner: &str, line: u32) -> StackSample {
        let mut s = StackSample::default();
        s.count = count;
        s.frames = vec![
            Frame::new(
                inner,
                Some("/home/u/.cargo/registry/src/index/rusqlite-0.37.0/src/lib.rs".into()),
                Some(10),
            ),
            Frame::new("app::write", Some("/app/src/main.rs".into()), Some(line)),
        ];
        s
    }

    /// A poll that slept (one stack, sampled four times: a stall's first samples are the
    /// densest), then computed for longer (three on-CPU samples at line 26): the stacks and
    /// whether each was taken on CPU.
    fn slept_then_computed() -> ([StackSample; 4], [bool; 4]) {
        let stacks = [
            sample(4, "clock_nanosleep", 5),
            sample(1, "step", 26),
            sample(1, "commit", 26),
            sample(1, "exec", 26),
        ];
        (stacks, [false, true, true, true])
    }

    /// Known truth: a busy period that held its worker in a blocking call inside `block_on`
    /// (tokio's loop on the stack), then ran on through the caller's own code (from the
    /// thread's start, no runtime) for more samples.
    #[test]
    fn the_callers_code_after_block_on_is_not_the_stalls() {
        let tokio = "/r/registry/src/i/tokio-1.54.1/src/runtime/scheduler/current_thread/mod.rs";
        let stack = |count, frames: &[(&str, Option<&str>, u32)]| {
            let mut s = StackSample::default();
            s.count = count;
            s.frames = frames
                .iter()
                .map(|&(f, file, line)| Frame::new(f, file.map(str::to_string), Some(line)))
                .collect();
            s
        };
        let start = (
            "std::rt::lang_start_internal",
            Some("/rustc/1/library/std/src/rt.rs"),
            1,
        );
        let after = stack(
            5,
            &[
                ("clock_nanosleep", None, 0),
                ("app::main", Some("/app/src/main.rs"), 30),
                start,
            ],
        );
        let inside = stack(
            3,
            &[
                ("clock_nanosleep", None, 0),
                ("app::main::{{closure}}", Some("/app/src/main.rs"), 22),
                (
                    "tokio::runtime::scheduler::current_thread::CoreGuard::block_on",
                    Some(tokio),
                    1,
                ),
                ("app::main", Some("/app/src/main.rs"), 25),
                start,
            ],
        );
        let kept = |stacks: &[&StackSample], task_id| {
            let mut stacks: Vec<_> = stacks.iter().map(|&s| (s.clone(), false)).collect();
            leave_out_the_callers_code(&mut stacks, task_id);
            stacks.into_iter().map(|(s, _)| s).collect::<Vec<_>>()
        };
        assert_eq!(kept(&[&after, &inside], 0), std::slice::from_ref(&inside));
        // A task's poll (the hooks tier), or no stack in a runtime: every stack counts.
        assert_eq!(kept(&[&after, &inside], 7), [after.clone(), inside]);
        assert_eq!(kept(&[&after], 0), [after]);
    }

    #[test]
    fn the_culprit_is_the_line_most_samples_reach() {
        // Sorted most sampled first: one stack at line 197, then three at line 40 whose
        // innermost frames differ (a poll on CPU), each sampled once.
        let stacks = [
            sample(1, "drop_in_place", 197),
            sample(1, "step", 40),
            sample(1, "commit", 40),
            sample(1, "exec", 40),
        ];
        let cpu = [true; 4];
        let (primitive, culprit) = most_sampled_culprit(&stacks, &cpu, StallClass::CpuBound);
        assert_eq!(culprit.and_then(|c| c.line), Some(40));
        assert!(primitive.is_some_and(|p| p.function.ends_with("step")));
        // Even: the most sampled stack's line.
        let (_, culprit) = most_sampled_culprit(&stacks[..2], &cpu, StallClass::CpuBound);
        assert_eq!(culprit.and_then(|c| c.line), Some(197));
        assert_eq!(
            most_sampled_culprit(&[], &[], StallClass::CpuBound),
            (None, None)
        );
    }

    /// Known truth: a poll that reads a 96 MiB file from the page cache and drops the buffer
    /// (`it::stalls`' large file read): one sample as the read returned and one as freeing the
    /// buffer (`munmap` under `free`) returned, each held in its call (here 35 ms and 1 ms of
    /// CPU: the test's figures). The call is the read's, which held the worker longer,
    /// whichever stack's frames sort first; a stack sampled more often still comes first.
    #[test]
    fn between_stacks_sampled_as_often_the_longer_call_comes_first() {
        let at = |top: &str, call: Frame| {
            let mut s = StackSample::default();
            s.count = 1;
            s.in_a_call = Some(1);
            s.frames = vec![
                Frame::new(top, None, None),
                call,
                Frame::new(
                    "app::load::{{closure}}",
                    Some("/app/src/main.rs".into()),
                    Some(181),
                ),
            ];
            s
        };
        let read = at(
            "read",
            Frame::new(
                "std::fs::read",
                Some("/rustc/abc/library/std/src/fs.rs".into()),
                Some(346),
            ),
        );
        let free = at("__munmap", Frame::new("__libc_free", None, None));
        let call = |stacks: Vec<(StackSample, bool, u64)>| {
            let (stacks, cpu): (Vec<_>, Vec<_>) = most_sampled_first(stacks).into_iter().unzip();
            let (primitive, culprit) = most_sampled_culprit(&stacks, &cpu, StallClass::CpuBound);
            assert_eq!(culprit.and_then(|c| c.line), Some(181));
            primitive.map(|p| p.function)
        };
        let read_call = Some("std::fs::read".to_string());
        assert_eq!(
            call(vec![
                (free.clone(), true, 1_000_000),
                (read.clone(), true, 35_000_000)
            ]),
            read_call
        );
        assert_eq!(
            call(vec![
                (read.clone(), true, 35_000_000),
                (free.clone(), true, 1_000_000)
            ]),
            read_call
        );
        // As often and as long: by frames, whatever order they came in.
        let free_call = Some("__libc_free".to_string());
        assert_eq!(
            call(vec![(read.clone(), true, 0), (free.clone(), true, 0)]),
            free_call
        );
        // More samples outweigh a longer call.
        let mut freed_often = free.clone();
        freed_often.count = 2;
        freed_often.in_a_call = Some(2);
        assert_eq!(
            call(vec![
                (read, true, 35_000_000),
                (freed_often, true, 2_000_000)
            ]),
            free_call
        );
    }

    /// Known truth: a loop that hashes (line 12) and writes each result with `pwrite` (line
    /// 14): three samples in the write, answered at once (the signal's interrupt overtaken by
    /// the call), one in the hashing. The line is the hashing's. A write the thread stayed in
    /// (its samples counted in `in_a_call`) is the write's; with only samples at short calls,
    /// theirs; a record without the count reads as before; a short call inside another library
    /// places its line.
    #[test]
    fn samples_at_a_short_call_place_no_line_beside_others() {
        let at = |count, top: Frame, line, in_a_call| {
            let mut s = StackSample::default();
            s.count = count;
            s.in_a_call = in_a_call;
            s.frames = vec![
                top,
                Frame::new(
                    "app::handle::{{closure}}",
                    Some("/app/src/main.rs".into()),
                    Some(line),
                ),
            ];
            s
        };
        let write = |n, stayed| at(n, Frame::new("pwrite", None, None), 14, stayed);
        let hash = at(
            1,
            Frame::new(
                "<core::hash::sip::Hasher<S> as core::hash::Hasher>::write",
                Some("/rustc/abc/library/core/src/hash/sip.rs".into()),
                Some(250),
            ),
            12,
            Some(0),
        );
        let line = |stacks: &[StackSample]| {
            let cpu = vec![true; stacks.len()];
            most_sampled_culprit(stacks, &cpu, StallClass::CpuBound)
                .1
                .and_then(|c| c.line)
        };
        assert_eq!(line(&[write(3, Some(0)), hash.clone()]), Some(12));
        assert_eq!(line(&[write(3, Some(2)), hash.clone()]), Some(14));
        assert_eq!(line(&[write(3, Some(0))]), Some(14));
        assert_eq!(line(&[write(3, None), hash]), Some(14));
        // One line that serializes and writes what it made: its call is the one its samples
        // outside the write show.
        let serialize = at(
            1,
            Frame::new(
                "serde_json::ser::to_string",
                Some("/r/registry/src/i/serde_json-1.0.140/src/ser.rs".into()),
                Some(2210),
            ),
            14,
            Some(0),
        );
        let stacks = [write(3, Some(0)), serialize.clone()];
        let (primitive, culprit) = most_sampled_culprit(&stacks, &[true; 2], StallClass::CpuBound);
        assert_eq!(culprit.and_then(|c| c.line), Some(14));
        assert_eq!(
            primitive.map(|p| p.function),
            Some("serde_json::ser::to_string".to_string())
        );
        // A call made inside another library (SQLite's page read under `commit`, line 40):
        // the library computed before it, under that line, which keeps its samples beside the
        // serialization at line 14.
        let mut page_read = at(
            2,
            Frame::new(
                "seekAndRead",
                Some("/r/registry/src/i/libsqlite3-sys-0.35.0/sqlite3/sqlite3.c".into()),
                Some(42159),
            ),
            40,
            Some(0),
        );
        page_read
            .frames
            .insert(0, Frame::new("pread64", None, None));
        assert_eq!(line(&[page_read.clone(), serialize]), Some(40));
        assert_eq!(asyncprof_format::samples_placing_no_line(&page_read), 0);
        assert_eq!(
            asyncprof_format::samples_placing_no_line(&write(3, Some(1))),
            2
        );
    }

    /// Known truth: a poll of a program built without debug info, sampled once in one of its
    /// functions and twice in another: no files, no lines; the function most samples reach is
    /// the culprit, not every function counted as one "line".
    #[test]
    fn without_debug_info_the_culprit_is_the_function_most_samples_reach() {
        asyncprof_format::culprit::set_own_crate("asyncprof");
        let at = |function: &str| {
            let mut s = StackSample::default();
            s.count = 1;
            s.frames = vec![
                Frame::new("core::slice::sort::quicksort", None, None),
                Frame::new(function, None, None),
                Frame::new("tokio::runtime::task::core::Core<T,S>::poll", None, None),
            ];
            s
        };
        let stacks = [
            at("asyncprof::orders::parse"),
            at("asyncprof::orders::rank"),
            at("asyncprof::orders::rank"),
        ];
        let (_, culprit) = most_sampled_culprit(&stacks, &[true; 3], StallClass::CpuBound);
        assert_eq!(
            culprit.map(|c| c.function),
            Some("asyncprof::orders::rank".to_string())
        );
    }

    #[test]
    fn the_culprit_is_a_line_of_the_stalls_class() {
        let (stacks, cpu) = slept_then_computed();
        let line = |class| {
            most_sampled_culprit(&stacks, &cpu, class)
                .1
                .and_then(|c| c.line)
        };
        assert_eq!(line(StallClass::CpuBound), Some(26));
        assert_eq!(line(StallClass::Blocking), Some(5));
        // No class: every sample counts.
        assert_eq!(line(StallClass::Unknown), Some(5));
        // None of the class's stacks names a line: the others do.
        assert_eq!(
            most_sampled_culprit(&stacks[..1], &cpu[..1], StallClass::CpuBound)
                .1
                .and_then(|c| c.line),
            Some(5)
        );
    }

    /// Known truth: a poll computed at line 26 (three samples on CPU) and slept 25 ms; its
    /// part is the sleep only where the asleep samples show one line holding the thread.
    #[test]
    fn a_part_needs_its_line_to_hold_most_of_its_samples() {
        use crate::watchdog::TimeSplit;
        let raw = |asleep_ns| RawStall {
            task_id: 7,
            threshold_ns: 10_000_000,
            time_split: Some(TimeSplit {
                on_cpu_ns: 100_000_000,
                asleep_ns,
                lead_ns: 5_000_000,
                lead_asleep: true,
            }),
            ..RawStall::default()
        };
        let part_line = |raw: &RawStall, asleep: &[StackSample]| {
            // The computation's three stacks, then `asleep`.
            let mut stacks = slept_then_computed().0[1..].to_vec();
            stacks.extend_from_slice(asleep);
            let on_cpu: Vec<bool> = (0..stacks.len()).map(|i| i < 3).collect();
            let (_, culprit) = most_sampled_culprit(&stacks, &on_cpu, StallClass::CpuBound);
            other_part(
                raw,
                &stacks,
                &on_cpu,
                StallClass::CpuBound,
                culprit.as_ref(),
            )
            .map(|p| (p.class, p.duration_ns, p.culprit.and_then(|c| c.line)))
        };
        let sleep = sample(3, "clock_nanosleep", 5);
        // Its time shown counts the 5 ms before the first read (asleep there).
        assert_eq!(
            part_line(&raw(25_000_000), std::slice::from_ref(&sleep)),
            Some((StallClass::Blocking, 30_000_000, Some(5)))
        );
        // Under the threshold as measured, though not with the unmeasured 5 ms: no part.
        assert_eq!(
            part_line(&raw(9_000_000), std::slice::from_ref(&sleep)),
            None
        );
        // Short sleeps at three lines, one sample each: no line held the thread.
        let spread = [
            sample(1, "write", 7),
            sample(1, "page_fault", 8),
            sample(1, "futex", 9),
        ];
        assert_eq!(part_line(&raw(25_000_000), &spread), None);
        // One asleep sample: too little.
        assert_eq!(
            part_line(&raw(25_000_000), &[sample(1, "clock_nanosleep", 5)]),
            None
        );
        // Still going on, or a busy period's stall: no part.
        let mut going_on = raw(25_000_000);
        going_on.ongoing = true;
        assert_eq!(part_line(&going_on, std::slice::from_ref(&sleep)), None);
        let mut busy = raw(25_000_000);
        busy.task_id = 0;
        assert_eq!(part_line(&busy, std::slice::from_ref(&sleep)), None);
    }

    /// Known truth: a poll slept at line 5, then hashed at line 12 and wrote each result at
    /// line 14 for 30 ms: its samples on CPU, three in the write (taken as the short call
    /// returned) and two in the hashing. Its on-CPU part is at the hashing's line, whose
    /// samples are all of those that place a line.
    #[test]
    fn a_part_s_line_is_weighed_without_short_calls() {
        use crate::watchdog::TimeSplit;
        let raw = RawStall {
            task_id: 7,
            threshold_ns: 10_000_000,
            time_split: Some(TimeSplit {
                on_cpu_ns: 30_000_000,
                asleep_ns: 100_000_000,
                lead_ns: 5_000_000,
                lead_asleep: true,
            }),
            ..RawStall::default()
        };
        let mut write = sample(3, "pwrite", 14);
        write.frames[0].file = None;
        write.in_a_call = Some(0);
        let mut hash = sample(2, "hash", 12);
        hash.in_a_call = Some(0);
        let stacks = [sample(4, "clock_nanosleep", 5), write, hash];
        let on_cpu = [false, true, true];
        let (_, culprit) = most_sampled_culprit(&stacks, &on_cpu, StallClass::Blocking);
        assert_eq!(culprit.as_ref().and_then(|c| c.line), Some(5));
        let part = other_part(
            &raw,
            &stacks,
            &on_cpu,
            StallClass::Blocking,
            culprit.as_ref(),
        )
        .map(|p| (p.class, p.culprit.and_then(|c| c.line)));
        assert_eq!(part, Some((StallClass::CpuBound, Some(12))));
    }

    #[test]
    fn a_polls_stall_is_classed_by_where_its_time_went() {
        use crate::watchdog::TimeSplit;
        // Four looks asleep, three on CPU; 25 ms asleep, 100 ms on CPU.
        let (stacks, cpu) = slept_then_computed();
        let mut raw = RawStall {
            task_id: 7,
            on_cpu: 3,
            asleep: 4,
            time_split: Some(TimeSplit {
                on_cpu_ns: 100_000_000,
                asleep_ns: 25_000_000,
                ..TimeSplit::default()
            }),
            ..RawStall::default()
        };
        let (class, ratio) = classify(&raw, &stacks, &cpu);
        assert_eq!(class, StallClass::CpuBound);
        assert!((ratio - 0.8).abs() < 1e-9, "{ratio}");
        // A 120 ms sleep then 80 ms of computing, the first 50 ms before the first read
        // (asleep there): blocking.
        let mut slept_first = raw.clone();
        slept_first.time_split = Some(TimeSplit {
            on_cpu_ns: 80_000_000,
            asleep_ns: 70_000_000,
            lead_ns: 50_000_000,
            lead_asleep: true,
        });
        assert_eq!(
            classify(&slept_first, &stacks, &cpu).0,
            StallClass::Blocking
        );
        // No stack on CPU names a line (signals off): the looks' class, whose line has one.
        let (class, ratio) = classify(&raw, &stacks[..1], &cpu[..1]);
        assert_eq!(class, StallClass::Blocking);
        assert!((ratio - 3.0 / 7.0).abs() < 1e-9, "{ratio}");
        // No stack at all: the time's class.
        assert_eq!(classify(&raw, &[], &[]).0, StallClass::CpuBound);
        // A busy period's stall (several polls' time): the looks decide.
        raw.task_id = 0;
        assert_eq!(classify(&raw, &stacks, &cpu).0, StallClass::Blocking);
        // The time unknown (no `schedstat`): the looks decide.
        raw.task_id = 7;
        raw.time_split = None;
        assert_eq!(classify(&raw, &stacks, &cpu).0, StallClass::Blocking);
        raw.on_cpu = 0;
        raw.asleep = 0;
        assert_eq!(classify(&raw, &stacks, &cpu), (StallClass::Unknown, 0.0));
    }
    #[test]
    fn a_stack_is_named_in_one_batch_and_then_from_the_cache() {
        let mut s = Symbolizer::default();
        let ip = a_known_function() + 1;
        let frames = s.stack(&[ip]);
        assert!(
            frames
                .iter()
                .any(|f| f.function.contains("a_known_function")),
            "{frames:?}"
        );
        assert!(s.looked_up);
        s.release_if_idle();
        assert!(!s.looked_up);
        // The same address again: from the cache, no batch.
        assert_eq!(s.stack(&[ip]), frames);
        assert!(!s.looked_up);
        // An address no module holds is named by its value.
        let nowhere = s.stack(&[0x10]);
        assert_eq!(nowhere[0].function, "0x10");
    }
}
