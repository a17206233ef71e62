//! pprof export: a run's stalls (weighted by stall time) and its CPU profile as pprof profiles
//! (the protobuf of `profile.proto`, gzipped), for `go tool pprof` and the continuous-profiling
//! backends that read pprof.
//!
//! The protobuf is written here by hand: a profile is six message types of plain integers and
//! strings, and a code generator would be a heavier dependency than the format.

use std::collections::HashMap;
use std::io::Write;

use asyncprof_format::{Frame, RunFile};

/// Protobuf wire types.
const VARINT: u64 = 0;
const LEN: u64 = 2;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, (field << 3) | wire);
}

fn int_field(out: &mut Vec<u8>, field: u64, v: u64) {
    if v != 0 {
        key(out, field, VARINT);
        varint(out, v);
    }
}

fn bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    key(out, field, LEN);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn packed_field(out: &mut Vec<u8>, field: u64, values: &[u64]) {
    if values.is_empty() {
        return;
    }
    let mut inner = Vec::new();
    for &v in values {
        varint(&mut inner, v);
    }
    bytes_field(out, field, &inner);
}

/// A profile being built: interned strings, functions and locations, and samples.
#[derive(Default)]
struct Profile {
    strings: Vec<String>,
    string_ids: HashMap<String, u64>,
    functions: Vec<(u64, u64)>,
    function_ids: HashMap<(String, String), u64>,
    locations: Vec<(u64, u64)>,
    location_ids: HashMap<(u64, u64), u64>,
    samples: Vec<(Vec<u64>, Vec<u64>)>,
    sample_types: Vec<(u64, u64)>,
    period_type: (u64, u64),
    period: u64,
    duration_ns: u64,
}

impl Profile {
    fn new(sample_types: &[(&str, &str)], period: (&str, &str, u64), duration_ns: u64) -> Self {
        let mut p = Profile::default();
        p.string("");
        p.sample_types = sample_types
            .iter()
            .map(|(t, u)| (p.string(t), p.string(u)))
            .collect();
        p.period_type = (p.string(period.0), p.string(period.1));
        p.period = period.2;
        p.duration_ns = duration_ns;
        p
    }

    fn string(&mut self, s: &str) -> u64 {
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = self.strings.len() as u64;
        self.strings.push(s.to_string());
        self.string_ids.insert(s.to_string(), id);
        id
    }

    /// The location of a frame: its function (name and file) and line.
    fn location(&mut self, function: &str, file: Option<&str>, line: Option<u32>) -> u64 {
        let fkey = (function.to_string(), file.unwrap_or("").to_string());
        let fid = match self.function_ids.get(&fkey) {
            Some(&id) => id,
            None => {
                let id = self.functions.len() as u64 + 1;
                let name = self.string(function);
                let file = self.string(file.unwrap_or(""));
                self.functions.push((name, file));
                self.function_ids.insert(fkey, id);
                id
            }
        };
        let line = u64::from(line.unwrap_or(0));
        *self.location_ids.entry((fid, line)).or_insert_with(|| {
            self.locations.push((fid, line));
            self.locations.len() as u64
        })
    }

    /// The gzipped protobuf.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for &(t, u) in &self.sample_types {
            let mut vt = Vec::new();
            int_field(&mut vt, 1, t);
            int_field(&mut vt, 2, u);
            bytes_field(&mut out, 1, &vt);
        }
        for (locs, values) in &self.samples {
            let mut s = Vec::new();
            packed_field(&mut s, 1, locs);
            packed_field(&mut s, 2, values);
            bytes_field(&mut out, 2, &s);
        }
        for (i, &(fid, line)) in self.locations.iter().enumerate() {
            let mut l = Vec::new();
            int_field(&mut l, 1, i as u64 + 1);
            let mut ln = Vec::new();
            int_field(&mut ln, 1, fid);
            int_field(&mut ln, 2, line);
            bytes_field(&mut l, 4, &ln);
            bytes_field(&mut out, 4, &l);
        }
        for (i, &(name, file)) in self.functions.iter().enumerate() {
            let mut f = Vec::new();
            int_field(&mut f, 1, i as u64 + 1);
            int_field(&mut f, 2, name);
            int_field(&mut f, 3, name);
            int_field(&mut f, 4, file);
            bytes_field(&mut out, 5, &f);
        }
        for s in &self.strings {
            bytes_field(&mut out, 6, s.as_bytes());
        }
        int_field(&mut out, 10, self.duration_ns);
        let mut pt = Vec::new();
        int_field(&mut pt, 1, self.period_type.0);
        int_field(&mut pt, 2, self.period_type.1);
        bytes_field(&mut out, 11, &pt);
        int_field(&mut out, 12, self.period);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        // Writing into a Vec cannot fail.
        let _ = gz.write_all(&out);
        gz.finish().unwrap_or_default()
    }
}

/// A frame's function as the profile names it: bare names from other crates get their crate
/// or std module in front, and the body of an async fn or closure of the program is named
/// after the fn that holds it where `source` can read its file (see [`crate::name_anonymous`]).
fn function_name(f: &Frame, source: &dyn Fn(&str) -> Option<String>) -> String {
    if let (Some(kind), Some(file), Some(line)) = (
        crate::anonymous_kind(&f.function),
        f.file.as_deref(),
        f.line,
    ) {
        if let Some(name) = source(file).and_then(|text| crate::enclosing_fn(&text, line)) {
            return format!("{name} ({kind})");
        }
    }
    asyncprof_format::culprit::qualified(f)
}

/// The run's stalls as a pprof profile: each sampled stack of a stall, innermost frame first,
/// with two values: the number of stalls it stands for (its share of the stall's samples) and
/// the stall time it stands for, in nanoseconds. `source` reads a program's file (for naming
/// async fn bodies and closures). `None` when no stall has a stack.
pub fn stall_profile(run: &RunFile, source: &dyn Fn(&str) -> Option<String>) -> Option<Vec<u8>> {
    let duration = run.series.last().map_or(0, |s| s.elapsed_ns);
    let mut p = Profile::new(
        &[("stalls", "count"), ("stall_time", "nanoseconds")],
        ("stall_time", "nanoseconds", 1),
        duration,
    );
    for s in &run.stalls {
        let total: u64 = s.stacks.iter().map(|st| u64::from(st.count)).sum();
        for (st, ns) in s.stack_times() {
            let locs: Vec<u64> = st
                .frames
                .iter()
                .map(|f: &Frame| p.location(&function_name(f, source), f.file.as_deref(), f.line))
                .collect();
            // The stall's time, shared among its stacks by how often each was sampled (its
            // part's among the part's: `stack_times`); the count in thousandths of a stall,
            // the same share of it, so that shares add up.
            let stalls = match s.duration_ns {
                0 => u64::from(st.count) * 1000 / total.max(1),
                d => (u128::from(ns) * 1000 / u128::from(d)) as u64,
            };
            p.samples.push((locs, vec![stalls.max(1), ns]));
        }
    }
    (!p.samples.is_empty()).then(|| p.encode())
}

/// The run's CPU profile as a pprof profile: each folded stack (thread outermost) with its
/// samples and their CPU time. `None` when the run has no CPU profile.
pub fn cpu_profile(run: &RunFile) -> Option<Vec<u8>> {
    let cpu = run.cpu_profile.as_ref()?;
    let period = 1_000_000_000 / u64::from(cpu.hz.max(1));
    let duration = run.series.last().map_or(0, |s| s.elapsed_ns);
    let mut p = Profile::new(
        &[("samples", "count"), ("cpu", "nanoseconds")],
        ("cpu", "nanoseconds", period),
        duration,
    );
    for line in cpu.folded.lines() {
        let Some((stack, count)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(count) = count.trim().parse::<u64>() else {
            continue;
        };
        let locs: Vec<u64> = stack
            .split(';')
            .rev()
            .map(|f| p.location(f, None, None))
            .collect();
        p.samples.push((locs, vec![count, count * period]));
    }
    (!p.samples.is_empty()).then(|| p.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_protobufs() {
        let mut out = Vec::new();
        varint(&mut out, 1);
        varint(&mut out, 300);
        assert_eq!(out, [0x01, 0xac, 0x02]);
        let mut f = Vec::new();
        bytes_field(&mut f, 6, b"ab");
        assert_eq!(f, [0x32, 2, b'a', b'b']);
    }

    #[test]
    fn frames_and_functions_are_interned_once() {
        let mut p = Profile::new(&[("stalls", "count")], ("stalls", "count", 1), 0);
        let a = p.location("app::f", Some("src/a.rs"), Some(3));
        let b = p.location("app::f", Some("src/a.rs"), Some(3));
        let c = p.location("app::f", Some("src/a.rs"), Some(4));
        assert_eq!((a, b), (1, 1));
        assert_eq!(c, 2);
        assert_eq!(p.functions.len(), 1);
        assert_eq!(
            p.strings[0], "",
            "pprof's string table starts with the empty string"
        );
        let gz = p.encode();
        assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzipped");
    }
}
