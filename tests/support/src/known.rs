//! Known-truth helpers shared by the asyncprof and asyncprof-compat-tests test binaries:
//! finding a spawn location by the marker comment above it, and polls of a known length.

use std::time::{Duration, Instant};

use asyncprof_format::{LocationStats, RunFile};

/// The spawn location whose line is `line` in a file ending with `file`.
pub fn location<'a>(run: &'a RunFile, file: &str, line: u32) -> &'a LocationStats {
    let snap = run.snapshot.as_ref().expect("a snapshot");
    snap.locations
        .iter()
        .find(|l| l.location.file.ends_with(file) && l.location.line == line)
        .unwrap_or_else(|| {
            panic!(
                "no location {file}:{line} among {:?}",
                snap.locations
                    .iter()
                    .map(|l| l.location.to_string())
                    .collect::<Vec<_>>()
            )
        })
}

/// The 1-based line of the spawn call that follows the comment `// spawn: {marker}` in `file`
/// (as `file!()` names it: relative to the workspace root).
pub fn marked_line(file: &str, marker: &str) -> u32 {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(root.join(file)).unwrap();
    let needle = format!("// spawn: {marker}");
    let idx = text
        .lines()
        .position(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in {file}"));
    idx as u32 + 2
}

/// Keep the CPU busy for `d` without yielding (a CPU-bound poll of known length). The time
/// goes to arithmetic in this function, the clock is read every few microseconds: a sampling
/// profiler lands here, not in the vDSO's clock (which CPU profiles leave out).
///
/// Always inlined, so "here" is the caller: the tests name the function that burned the CPU
/// (`burn_known_function`), and a caller whose last act is a call into another crate is left
/// as a jump, its frame gone from every stack.
#[inline(always)]
pub fn spin(d: Duration) {
    let start = Instant::now();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while start.elapsed() < d {
        for _ in 0..4096 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
    std::hint::black_box(x);
}
