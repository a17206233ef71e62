//! Stall stacks as folded stacks: one line per distinct stack, outermost frame first, frames
//! separated by `;`, then a space and a weight. inferno, speedscope and flamegraph.pl read it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use asyncprof_format::{Frame, RunFile};

fn label(f: &Frame) -> String {
    let mut s = f.function.replace([';', '\n'], ":");
    if let (Some(file), Some(line)) = (&f.file, f.line) {
        let name = file.rsplit('/').next().unwrap_or(file);
        let _ = write!(s, " ({name}:{line})");
    }
    s
}

/// Every stall's sampled stacks, weighted by stall time in microseconds: a stall's duration
/// is shared among its samples.
pub fn folded_stalls(run: &RunFile) -> String {
    let mut weights: BTreeMap<String, u64> = BTreeMap::new();
    for stall in &run.stalls {
        let samples: u64 = stall.stacks.iter().map(|s| u64::from(s.count)).sum();
        if samples == 0 {
            continue;
        }
        for stack in &stall.stacks {
            let line = stack
                .frames
                .iter()
                .rev()
                .map(label)
                .collect::<Vec<_>>()
                .join(";");
            let us = (u128::from(stall.duration_ns / 1000) * u128::from(stack.count)
                / u128::from(samples)) as u64;
            let w = weights.entry(line).or_default();
            *w = w.saturating_add(us.max(1));
        }
    }
    let mut out = String::new();
    for (stack, w) in weights {
        let _ = writeln!(out, "{stack} {w}");
    }
    out
}
