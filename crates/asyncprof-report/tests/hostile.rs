//! Hostile run files: every truncation, random bit flips, byte insertions and deletions, and
//! frames whose length and header checksums are forged to claim huge payloads, of a real run
//! file. Each is read and, when readable, summarized and rendered as text, JSON and HTML. Nothing
//! may panic or hang, and no single allocation may exceed a bound set by the input's size, not
//! by a length field inside it. A counting allocator measures the largest request.
//!
//! `ASYNCPROF_HOSTILE_INPUTS=N` runs N random mutations instead of the default 3,000 (the long
//! run is a command, not a CI test: `ASYNCPROF_HOSTILE_INPUTS=200000 cargo test --release -p
//! asyncprof-report --test hostile`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

// Shared with the render tests, which also use the parsed form.
#[allow(dead_code)]
#[path = "support/fixture.rs"]
mod fixture;

/// The largest single allocation since the last reset.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: forwards every call to the system allocator unchanged; only records request sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Relaxed);
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Allocations the renderers make whatever the input (plot buffers, histogram arrays).
const FIXED_BUDGET: usize = 8 << 20;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Read, summarize and render `bytes`; panics propagate to the test.
fn exercise(bytes: &[u8]) -> bool {
    LARGEST.store(0, Relaxed);
    let ok = match asyncprof_format::read_bytes(bytes) {
        Ok(run) => {
            let s = asyncprof_report::Summary::of(&run);
            let _ = asyncprof_report::render_text(&s);
            let _ = asyncprof_report::render_json(&s);
            let _ = asyncprof_report::render_html(&run, &s, &|_| None);
            let _ = asyncprof_report::folded_stalls(&run);
            true
        }
        Err(e) => {
            // Errors are one line with a byte offset or a reason.
            assert!(!e.to_string().contains('\n'), "{e}");
            false
        }
    };
    let largest = LARGEST.load(Relaxed);
    assert!(
        largest <= FIXED_BUDGET + 64 * bytes.len(),
        "a {} byte input made a {largest} byte allocation",
        bytes.len()
    );
    ok
}

fn original() -> Vec<u8> {
    fixture::fixture_bytes("ingest", "src/service.rs")
}

/// Offsets of every frame's start in a well-formed file.
fn frames(bytes: &[u8]) -> Vec<usize> {
    let mut at = 12;
    let mut out = Vec::new();
    while at + 14 <= bytes.len() {
        out.push(at);
        let len = u32::from_le_bytes(bytes[at + 2..at + 6].try_into().unwrap()) as usize;
        at += 14 + len;
    }
    out
}

#[test]
fn every_truncation_is_read_up_to_the_cut() {
    let bytes = original();
    assert!(exercise(&bytes));
    let mut readable = 0;
    for cut in 0..bytes.len() {
        if exercise(&bytes[..cut]) {
            readable += 1;
            let run = asyncprof_format::read_bytes(&bytes[..cut]).unwrap();
            assert!(
                run.truncated || !run.ended,
                "a cut file never claims a clean end"
            );
        }
    }
    // Every cut after the header frame is readable (a truncated tail is a warning).
    let header_end = frames(&bytes)[1];
    assert_eq!(
        readable,
        bytes.len() - header_end,
        "cuts after the header must read"
    );
}

#[test]
fn forged_lengths_never_drive_an_allocation() {
    let bytes = original();
    for &frame in &frames(&bytes) {
        for len in [
            u32::MAX,
            asyncprof_format::MAX_FRAME_LEN,
            asyncprof_format::MAX_FRAME_LEN + 1,
            1 << 31,
            (bytes.len() as u32).saturating_mul(4),
            0,
        ] {
            let mut b = bytes.clone();
            b[frame + 2..frame + 6].copy_from_slice(&len.to_le_bytes());
            // Forge the header checksum too, so that the reader believes the length.
            let crc = crc32fast::hash(&b[frame..frame + 10]);
            b[frame + 10..frame + 14].copy_from_slice(&crc.to_le_bytes());
            let read = exercise(&b);
            if len > asyncprof_format::MAX_FRAME_LEN {
                assert!(!read, "a length of {len} is refused as damage");
            }
        }
    }
}

#[test]
fn huge_values_inside_records_degrade_instead_of_allocating() {
    // A histogram that claims the finest precision over the widest range, counts near
    // u64::MAX, and a depth series of absurd values: rewritten in the JSON of a snapshot.
    let bytes = original();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    for (from, to) in [
        ("\"sigfig\":2", "\"sigfig\":255"),
        ("\"high\":3600000000000", "\"high\":18446744073709551615"),
        ("\"capacity\":64", "\"capacity\":1152921504606846976"),
        ("\"depth\":64", "\"depth\":18446744073709551615"),
    ] {
        assert!(text.contains(from), "the fixture holds {from}");
        let forged = text.replace(from, to);
        // Checksums now fail: the reader reports damage, one line, no panic.
        assert!(!exercise(forged.as_bytes()), "{from} -> {to} is damage");
    }
    // The same values in a file whose checksums match, written by the writer itself.
    let run = asyncprof_format::read_bytes(&bytes).unwrap();
    let mut snap = run.snapshot.clone().unwrap();
    snap.runtime.poll_ns.sigfig = 255;
    snap.runtime.poll_ns.high = u64::MAX;
    snap.runtime.poll_ns.buckets.push([u64::MAX, u64::MAX]);
    snap.queues[0].capacity = Some(1 << 60);
    let mut point = asyncprof_format::DepthPoint::default();
    point.depth = u64::MAX;
    point.elapsed_ns = u64::MAX;
    snap.queues[0].points = vec![point; 3];
    snap.elapsed_ns = u64::MAX;
    let mut out = Vec::new();
    let mut w = asyncprof_format::RunWriter::new(&mut out, &run.header).unwrap();
    w.write_snapshot(&snap).unwrap();
    let mut stall = run.stalls[0].clone();
    stall.start_ns = u64::MAX;
    stall.duration_ns = u64::MAX;
    stall.max_ready_tasks = u64::MAX;
    stall.on_cpu_ratio = f64::MAX;
    stall.stacks[0].count = u32::MAX;
    stall.stacks.push(stall.stacks[0].clone());
    w.write_stall(&stall).unwrap();
    stall.id = 2;
    w.write_stall(&stall).unwrap();
    assert!(exercise(&out));
}

#[test]
fn random_mutations_never_panic() {
    let bytes = original();
    let n: usize = std::env::var("ASYNCPROF_HOSTILE_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let mut rng = Rng(0x5EED);
    let (mut readable, mut refused) = (0u64, 0u64);
    for _ in 0..n {
        let mut b = bytes.clone();
        match rng.below(4) {
            0 => {
                for _ in 0..=rng.below(4) {
                    let i = rng.below(b.len());
                    b[i] ^= 1 << rng.below(8);
                }
            }
            1 => {
                let i = rng.below(b.len());
                b.insert(i, rng.next() as u8);
            }
            2 => {
                let i = rng.below(b.len());
                let n = rng.below(64).min(b.len() - i);
                b.drain(i..i + n);
            }
            _ => {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
                b.truncate(rng.below(b.len()) + 1);
            }
        }
        if exercise(&b) {
            readable += 1;
        } else {
            refused += 1;
        }
    }
    eprintln!("{n} mutated inputs: {readable} read (some with warnings), {refused} refused");
    // The mutations reach both the reading and the refusing paths.
    assert!(
        readable > 0 && refused > 0,
        "{readable} read, {refused} refused"
    );
}
