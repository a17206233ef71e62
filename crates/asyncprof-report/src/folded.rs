//! Stall stacks as folded stacks: one line per distinct stack, outermost frame first, frames
//! separated by `;`, then a space and a weight. inferno, speedscope and flamegraph.pl read it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use asyncprof_format::RunFile;

use crate::flame::{frame_label, weighted_stall_stacks};

/// Every stall's sampled stacks, weighted by stall time in microseconds: a stall's duration
/// is shared among its samples (a part's time among the part's,
/// [`asyncprof_format::StallRecord::stack_times`]). Every frame is kept (the HTML report's flamegraph folds the
/// runtime's own frames; this text is for other tools).
pub fn folded_stalls(run: &RunFile) -> String {
    folded_stalls_of(&[run])
}

/// The stall stacks of several runs (instances of one service) as one folded profile: a
/// stack seen in several runs is one line, its weights added.
pub fn folded_stalls_of(runs: &[&RunFile]) -> String {
    let mut weights: BTreeMap<String, u64> = BTreeMap::new();
    for (_, frames, us) in runs.iter().flat_map(|r| weighted_stall_stacks(r)) {
        let line = frames
            .iter()
            .rev()
            .map(|f| frame_label(f).replace([';', '\n'], ":"))
            .collect::<Vec<_>>()
            .join(";");
        let w = weights.entry(line).or_default();
        *w = w.saturating_add(us);
    }
    let mut out = String::new();
    for (stack, w) in weights {
        let _ = writeln!(out, "{stack} {w}");
    }
    out
}
