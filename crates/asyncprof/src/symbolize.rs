//! Turning a stall's raw stacks into named frames, and naming its culprit. Cold path: runs on
//! the aggregator thread.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use asyncprof_format::{culprit, Frame, StackSample, StallClass, StallRecord};

use crate::watchdog::RawStall;

/// Frames per address, cached for the life of the recording (code does not move).
///
/// Looking an address up parses the binary's debug info (its line tables), which the
/// `backtrace` crate keeps: tens of MiB for a large binary. A service that stalls at the same
/// lines again needs only this cache, so the parsed debug info is let go once no address has
/// been looked up for a while ([`RELEASE_AFTER`] at first), and parsed again when a new one
/// comes. A service whose new stacks keep coming soon after a release would pay the parse
/// again and again: each such return doubles the wait, up to [`MAX_RELEASE_AFTER`].
#[derive(Debug)]
pub(crate) struct Symbolizer {
    cache: HashMap<(usize, bool), Vec<Frame>>,
    /// The last lookup that parsed debug info, while that is still held.
    last_lookup: Option<Instant>,
    /// When the parsed debug info was last let go.
    released_at: Option<Instant>,
    /// How long it is kept after the last lookup now.
    keep_for: Duration,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Symbolizer {
            cache: HashMap::new(),
            last_lookup: None,
            released_at: None,
            keep_for: RELEASE_AFTER,
        }
    }
}

/// How long parsed debug info is kept after the last lookup that needed it, at first.
const RELEASE_AFTER: Duration = Duration::from_secs(5);
/// The longest it is kept.
const MAX_RELEASE_AFTER: Duration = Duration::from_secs(600);
/// A lookup this soon after a release doubles the wait before the next.
const RETURNED_WITHIN: Duration = Duration::from_secs(120);

/// Addresses cached at most (a few hundred bytes each); past it the cache starts over.
const MAX_CACHED: usize = 100_000;

/// The user's line the most samples of a stall reach, and the call it made in the most sampled
/// stack among them. A poll on CPU leaves a different innermost frame in each sample, so its
/// stacks differ while its line is the same; ties go to the most sampled stack's line.
/// `stacks` are sorted, most sampled first.
fn most_sampled_culprit(stacks: &[StackSample]) -> (Option<Frame>, Option<Frame>) {
    let mut lines: Vec<(Option<Frame>, Frame, u32)> = Vec::new();
    for s in stacks {
        let (primitive, Some(culprit)) = culprit::primitive_and_culprit(&s.frames) else {
            continue;
        };
        match lines
            .iter_mut()
            .find(|(_, c, _)| c.file == culprit.file && c.line == culprit.line)
        {
            Some((_, _, n)) => *n += s.count,
            None => lines.push((primitive, culprit, s.count)),
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

/// The sigreturn trampoline: every frame above it belongs to the signal handler.
const TRAMPOLINES: &[&str] = &["__restore_rt", "__kernel_rt_sigreturn"];

impl Symbolizer {
    /// The frames at `ip`, innermost (inlined) first. `exact` is true for the interrupted
    /// instruction itself; other addresses are return addresses, looked up one byte back so
    /// that they name the call, not the line after it.
    fn frames_at(&mut self, ip: usize, exact: bool) -> &[Frame] {
        if self.cache.len() >= MAX_CACHED && !self.cache.contains_key(&(ip, exact)) {
            self.cache.clear();
        }
        let (last_lookup, released_at, keep_for) = (
            &mut self.last_lookup,
            &mut self.released_at,
            &mut self.keep_for,
        );
        self.cache.entry((ip, exact)).or_insert_with(|| {
            let now = Instant::now();
            if let Some(r) = released_at.take() {
                if now.saturating_duration_since(r) < RETURNED_WITHIN {
                    *keep_for = (*keep_for * 2).min(MAX_RELEASE_AFTER);
                }
            }
            *last_lookup = Some(now);
            let lookup = if exact { ip } else { ip.saturating_sub(1) };
            let mut frames = Vec::new();
            backtrace::resolve(lookup as *mut std::ffi::c_void, |sym| {
                let function = sym
                    .name()
                    .map(|n| format!("{n:#}"))
                    .unwrap_or_else(|| format!("{ip:#x}"));
                let file = sym.filename().map(|p| p.display().to_string());
                frames.push(Frame::new(function, file, sym.lineno()));
            });
            if frames.is_empty() {
                frames.push(Frame::new(format!("{ip:#x}"), None, None));
            }
            frames
        })
    }

    /// Let go of the parsed debug info when no lookup has needed it for a while.
    pub(crate) fn release_if_idle(&mut self, now: Instant) {
        if self
            .last_lookup
            .is_some_and(|t| now.saturating_duration_since(t) >= self.keep_for)
        {
            self.last_lookup = None;
            self.released_at = Some(now);
            backtrace::clear_symbol_cache();
            asyncprof_sampler::release_free_memory();
        }
    }

    /// A captured stack as named frames, innermost first, without the handler's own frames.
    pub(crate) fn stack(&mut self, ips: &[usize]) -> Vec<Frame> {
        // Find the trampoline; the frame after it is the interrupted instruction.
        let mut start = None;
        for (i, &ip) in ips.iter().enumerate() {
            let frames = self.frames_at(ip, false);
            if frames
                .iter()
                .any(|f| TRAMPOLINES.iter().any(|t| f.function.contains(t)))
            {
                start = Some(i + 1);
                break;
            }
        }
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
    pub(crate) fn record(&mut self, raw: &RawStall, run_start_ns: u64) -> StallRecord {
        let mut stacks: Vec<StackSample> = raw
            .stacks
            .iter()
            .map(|(ips, &count)| {
                let mut s = StackSample::default();
                s.count = count;
                s.frames = self.stack(ips);
                s
            })
            .collect();
        stacks.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.frames.cmp(&b.frames)));
        let (primitive, culprit) = most_sampled_culprit(&stacks);
        let classified = raw.on_cpu + raw.asleep;
        let on_cpu_ratio = if classified == 0 {
            0.0
        } else {
            f64::from(raw.on_cpu) / f64::from(classified)
        };
        let class = match classified {
            0 => StallClass::Unknown,
            _ if on_cpu_ratio >= 0.5 => StallClass::CpuBound,
            _ => StallClass::Blocking,
        };
        let syscall = raw.syscalls.iter().max_by_key(|(_, n)| **n).map(|(nr, _)| {
            asyncprof_sampler::syscall_name(*nr)
                .map(str::to_string)
                .unwrap_or_else(|| format!("syscall {nr}"))
        });
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
        let (primitive, culprit) = most_sampled_culprit(&stacks);
        assert_eq!(culprit.and_then(|c| c.line), Some(40));
        assert!(primitive.is_some_and(|p| p.function.ends_with("step")));
        // Even: the most sampled stack's line.
        let (_, culprit) = most_sampled_culprit(&stacks[..2]);
        assert_eq!(culprit.and_then(|c| c.line), Some(197));
        assert_eq!(most_sampled_culprit(&[]), (None, None));
    }

    #[test]
    fn parsed_debug_info_is_let_go_when_idle_and_kept_longer_when_needed_again() {
        let mut s = Symbolizer::default();
        let ip = a_known_function() + 1;
        assert!(
            s.frames_at(ip, true)
                .iter()
                .any(|f| f.function.contains("a_known_function")),
            "{:?}",
            s.frames_at(ip, true)
        );
        let t0 = s.last_lookup.expect("a lookup parsed debug info");
        s.release_if_idle(t0 + RELEASE_AFTER / 2);
        assert!(s.last_lookup.is_some(), "kept while recent");
        s.release_if_idle(t0 + RELEASE_AFTER);
        assert!(s.last_lookup.is_none(), "let go after {RELEASE_AFTER:?}");
        // The same address again: from the cache, no new parse.
        s.frames_at(ip, true);
        assert!(s.last_lookup.is_none());
        assert_eq!(s.keep_for, RELEASE_AFTER);
        // A new address soon after the release: parsed again, and kept twice as long.
        let named = s.frames_at(ip + 1, true).to_vec();
        assert!(named
            .iter()
            .any(|f| f.function.contains("a_known_function")));
        assert!(s.last_lookup.is_some());
        assert_eq!(s.keep_for, RELEASE_AFTER * 2);
        let t1 = s.last_lookup.unwrap();
        s.release_if_idle(t1 + RELEASE_AFTER);
        assert!(s.last_lookup.is_some(), "now kept for {:?}", s.keep_for);
        s.release_if_idle(t1 + RELEASE_AFTER * 2);
        assert!(s.last_lookup.is_none());
    }
}
