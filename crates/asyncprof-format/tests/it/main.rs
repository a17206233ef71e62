//! Integration tests of the run-file format: round trips, truncation and damage.

mod corpus;

use asyncprof_format::{
    read_bytes, Error, Header, Histogram, LocationStats, Record, RunReader, RunWriter, Snapshot,
    SourceLocation, StallRecord, TaskStats, FORMAT_VERSION,
};

fn sample_snapshot(elapsed_ns: u64) -> Snapshot {
    let mut h = hdrhistogram::Histogram::<u64>::new_with_max(3_600_000_000_000, 2).unwrap();
    h.record_n(2_000_000, 5).unwrap();
    h.record_n(150, 1000).unwrap();
    let mut snap = Snapshot::default();
    snap.elapsed_ns = elapsed_ns;
    snap.runtime.polls = 1005;
    snap.runtime.tasks_spawned = 3;
    snap.runtime.tasks_alive = 1;
    snap.runtime.poll_ns = Histogram::from_hdr(&h);
    let mut loc = LocationStats::default();
    loc.location = SourceLocation::new("src/main.rs", 10, 5);
    loc.polls = 1005;
    loc.poll_ns = Histogram::from_hdr(&h);
    snap.locations.push(loc);
    let mut task = TaskStats::default();
    task.id = 7;
    task.name = Some("worker <one>".into());
    task.polls = 5;
    snap.tasks.push(task);
    snap
}

fn sample_file() -> Vec<u8> {
    let mut header = Header::new("demo");
    header.pid = 42;
    header.workers = 2;
    let mut out = Vec::new();
    let mut w = RunWriter::new(&mut out, &header).unwrap();
    w.write_snapshot(&sample_snapshot(1_000_000_000)).unwrap();
    w.write_snapshot(&sample_snapshot(2_000_000_000)).unwrap();
    w.write_end().unwrap();
    out
}

#[test]
fn round_trip() {
    let bytes = sample_file();
    let run = read_bytes(&bytes).unwrap();
    assert_eq!(run.header.program, "demo");
    assert_eq!(run.header.pid, 42);
    assert_eq!(run.header.format_version, FORMAT_VERSION);
    assert!(run.ended);
    assert!(!run.truncated);
    assert!(run.warnings.is_empty());
    assert_eq!(run.series.len(), 2);
    assert_eq!(run.snapshot.unwrap(), sample_snapshot(2_000_000_000));
}

#[test]
fn truncation_at_every_offset_keeps_what_came_before() {
    let bytes = sample_file();
    let full = read_bytes(&bytes).unwrap();
    let mut partial_reads = 0;
    for cut in 0..bytes.len() {
        match read_bytes(&bytes[..cut]) {
            Ok(run) => {
                partial_reads += 1;
                assert_eq!(run.header, full.header, "cut at {cut}");
                assert!(!run.ended, "cut at {cut} cannot contain the end record");
                assert!(run.series.len() <= 2);
                if let Some(snap) = &run.snapshot {
                    assert_eq!(snap.runtime.polls, 1005);
                }
            }
            Err(Error::TruncatedHeader { .. }) => {}
            Err(Error::NotARunFile) if cut == 0 => {}
            Err(other) => panic!("cut at {cut}: unexpected error {other}"),
        }
    }
    assert!(partial_reads > bytes.len() / 2);
    // A cut inside the second snapshot keeps the first one and says so.
    let second_start = bytes.len() - 200;
    let run = read_bytes(&bytes[..second_start]).unwrap();
    assert!(run.truncated);
    assert_eq!(run.series.len(), 1);
    assert!(run.warnings[0].contains("truncated at byte"));
}

/// A file written with a stall between its snapshots, and a later record of the same stall.
fn growing_file() -> Vec<u8> {
    let mut out = sample_file();
    out.truncate(out.len() - asyncprof_format::end_frame().len());
    let mut w = RunWriter::new(Vec::new(), &Header::new("unused")).unwrap();
    let mut stall = StallRecord::default();
    stall.id = 3;
    stall.ongoing = true;
    w.write_stall(&stall).unwrap();
    stall.ongoing = false;
    stall.duration_ns = 40_000_000;
    w.write_stall(&stall).unwrap();
    w.write_snapshot(&sample_snapshot(3_000_000_000)).unwrap();
    w.write_end().unwrap();
    let written = w.into_inner();
    let first = read_bytes(&written).unwrap();
    assert_eq!(first.header.program, "unused");
    // Skip the second file's preamble and header frame: append only its records.
    let header_len = asyncprof_format::preamble().len()
        + asyncprof_format::encode_frame(
            asyncprof_format::RecordKind::Header,
            &Header::new("unused"),
        )
        .unwrap()
        .len();
    out.extend_from_slice(&written[header_len..]);
    out
}

#[test]
fn a_file_pushed_in_pieces_of_any_size_reads_as_one_read() {
    let bytes = growing_file();
    let whole = read_bytes(&bytes).unwrap();
    assert_eq!(whole.stalls.len(), 1);
    assert_eq!(whole.series.len(), 3);
    for piece in [1, 2, 13, 14, 15, 100, 1000] {
        let mut reader = RunReader::new();
        let mut seen = Vec::new();
        for chunk in bytes.chunks(piece) {
            reader
                .push(chunk, |r| {
                    seen.push(match r {
                        Record::Header(_) => "header",
                        Record::Snapshot(_) => "snapshot",
                        Record::Stall(s) if s.ongoing => "ongoing stall",
                        Record::Stall(_) => "stall",
                        Record::End => "end",
                        _ => "other",
                    })
                })
                .unwrap();
        }
        assert_eq!(reader.pending_bytes(), 0, "pieces of {piece}");
        assert_eq!(reader.complete_bytes(), bytes.len() as u64);
        assert_eq!(
            seen,
            [
                "header",
                "snapshot",
                "snapshot",
                "ongoing stall",
                "stall",
                "snapshot",
                "end"
            ],
            "pieces of {piece}"
        );
        // The latest record of a stall wins while reading, not only at the end.
        let stalls: Vec<_> = reader.stalls().cloned().collect();
        assert_eq!(stalls, whole.stalls, "pieces of {piece}");
        let run = reader.finish().unwrap();
        assert_eq!(run.series, whole.series);
        assert_eq!(run.snapshot, whole.snapshot);
        assert!(run.ended && !run.truncated);
    }
}

#[test]
fn a_reader_keeps_what_came_before_damage_and_stays_stopped() {
    let bytes = growing_file();
    let whole = read_bytes(&bytes).unwrap();
    // Damage the payload of the last snapshot.
    let end = asyncprof_format::end_frame().len();
    let at = bytes.len() - end - 5;
    let mut damaged = bytes.clone();
    damaged[at] ^= 0x20;
    let mut reader = RunReader::new();
    let err = reader.push(&damaged, |_| {}).unwrap_err();
    assert!(err.to_string().contains("damaged at byte"), "{err}");
    // Everything before the damaged record was folded in.
    let run = reader.run().unwrap();
    assert_eq!(run.series.len(), 2);
    assert_eq!(reader.stalls().count(), 1);
    assert_eq!(whole.series[..2], run.series[..]);
    // A later push does not read past the damage.
    let again = reader
        .push(b"more", |_| panic!("no record after damage"))
        .unwrap_err();
    assert!(again.to_string().contains("damaged at byte"), "{again}");
}

#[test]
fn every_flipped_byte_is_a_clear_error() {
    let bytes = sample_file();
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut damaged = bytes.clone();
            damaged[i] ^= mask;
            let err = read_bytes(&damaged).expect_err(&format!("flip {mask:#x} at byte {i}"));
            let msg = err.to_string();
            match err {
                Error::Corrupt { offset, .. } => {
                    assert!(offset as usize <= i, "byte {i}: reported at {offset}");
                    assert!(msg.contains("damaged at byte"), "{msg}");
                }
                Error::NotARunFile => assert!(i < 8),
                Error::UnsupportedVersion { found, supported } => {
                    assert!((8..12).contains(&i));
                    assert!(found > supported);
                    assert!(msg.contains(&found.to_string()));
                }
                other => panic!("flip at byte {i}: unexpected {other}"),
            }
        }
    }
}

#[test]
fn huge_length_field_does_not_allocate_or_panic() {
    let mut bytes = sample_file();
    // Rewrite the second frame's length to 2^31 and fix its header checksum, as a writer bug
    // or a deliberately hostile file would.
    let first_frame_len = u32::from_le_bytes(bytes[14..18].try_into().unwrap()) as usize + 14;
    let off = 12 + first_frame_len;
    bytes[off + 2..off + 6].copy_from_slice(&(1u32 << 31).to_le_bytes());
    let crc = crc32fast::hash(&bytes[off..off + 10]);
    bytes[off + 10..off + 14].copy_from_slice(&crc.to_le_bytes());
    let err = read_bytes(&bytes).unwrap_err();
    assert!(err.to_string().contains("frame length of at most"), "{err}");
}

#[test]
fn newer_version_is_refused_naming_both() {
    let mut bytes = sample_file();
    bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let err = read_bytes(&bytes).unwrap_err().to_string();
    assert!(
        err.contains(&format!("version {}", FORMAT_VERSION + 1)),
        "{err}"
    );
    assert!(
        err.contains(&format!("(version {FORMAT_VERSION})")),
        "{err}"
    );
}

#[test]
fn not_a_run_file() {
    let err = read_bytes(b"{\"hello\": 1}").unwrap_err();
    assert!(matches!(err, Error::NotARunFile));
}

#[test]
fn queue_depth_points_are_joined_across_snapshots_and_thinned_evenly() {
    use asyncprof_format::{DepthPoint, QueueStats, MAX_DEPTH_POINTS};
    let mut out = Vec::new();
    let mut w = RunWriter::new(&mut out, &Header::new("queues")).unwrap();
    // 1,000 snapshots of 10 points each for queue 3; queue 4 appears only in the last one.
    let snapshots = 1000u64;
    for s in 0..snapshots {
        let mut snap = Snapshot::default();
        snap.elapsed_ns = (s + 1) * 1_000_000_000;
        let mut q = QueueStats::default();
        q.id = 3;
        q.name = "ingest".into();
        for i in 0..10 {
            let mut p = DepthPoint::default();
            p.elapsed_ns = s * 1_000_000_000 + i * 100_000_000;
            p.depth = s * 10 + i;
            q.points.push(p);
        }
        snap.queues.push(q);
        if s == snapshots - 1 {
            let mut other = QueueStats::default();
            other.id = 4;
            other.points.push(DepthPoint::default());
            snap.queues.push(other);
        }
        w.write_snapshot(&snap).unwrap();
    }
    let run = read_bytes(&out).unwrap();
    let points = &run.queue_depths[&3];
    assert!(points.len() <= MAX_DEPTH_POINTS, "{}", points.len());
    assert!(points.len() >= MAX_DEPTH_POINTS / 4, "{}", points.len());
    // Evenly spaced from the first point, in order.
    assert_eq!(points[0].depth, 0);
    let step = points[1].depth - points[0].depth;
    assert!(step.is_power_of_two() && step > 1, "{step}");
    assert!(points.windows(2).all(|w| w[1].depth - w[0].depth == step));
    assert!(points.last().unwrap().depth >= 10_000 - step);
    assert_eq!(run.queue_depths[&4].len(), 1);
    // The snapshot hands its points to the series.
    assert!(run.snapshot.unwrap().queues[0].points.is_empty());
}

#[test]
fn a_later_header_supersedes_the_one_written_at_start() {
    use asyncprof_format::{Flavor, Tier};
    // At start nothing is known of the runtime.
    let mut first = Header::new("svc");
    first.pid = 7;
    first.tier = Tier::Unknown;
    let mut only = Vec::new();
    RunWriter::new(&mut only, &first).unwrap();
    let header_only = read_bytes(&only).unwrap();
    assert_eq!(header_only.header, first);
    assert!(header_only.snapshot.is_none());
    assert!(!header_only.truncated && !header_only.ended);
    assert!(
        header_only.warnings.is_empty(),
        "{:?}",
        header_only.warnings
    );
    let mut out = Vec::new();
    let mut w = RunWriter::new(&mut out, &first).unwrap();
    // The first poll tells the tier and the runtime.
    let mut known = first.clone();
    known.tier = Tier::Hooks;
    known.flavor = Flavor::MultiThread;
    known.workers = 4;
    w.write_snapshot(&sample_snapshot(1_000_000_000)).unwrap();
    w.write_header(&known).unwrap();
    w.write_snapshot(&sample_snapshot(2_000_000_000)).unwrap();
    w.write_end().unwrap();
    let run = read_bytes(&out).unwrap();
    assert_eq!(run.header, known, "the latest header wins");
    assert_eq!(run.series.len(), 2);
    assert!(run.ended);
    // Cut inside the second header: the first one stands, with a warning.
    let cut = out.len() - 40;
    let run = read_bytes(&out[..cut]).unwrap();
    assert!(run.truncated);
    assert_eq!(run.header.pid, 7);
}

#[test]
fn version_1_files_still_read_and_old_loss_counters_default_to_zero() {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(asyncprof_format::MAGIC);
    bytes.extend_from_slice(&1u32.to_le_bytes());
    let header = serde_json::json!({"format_version": 1, "program": "old", "tier": "hooks"});
    bytes.extend(
        asyncprof_format::encode_frame(asyncprof_format::RecordKind::Header, &header).unwrap(),
    );
    // A snapshot from before `skipped_samples` existed.
    let snap = serde_json::json!({"elapsed_ns": 5, "loss": {"missed_samples": 3}});
    bytes.extend(
        asyncprof_format::encode_frame(asyncprof_format::RecordKind::Snapshot, &snap).unwrap(),
    );
    let run = read_bytes(&bytes).unwrap();
    assert_eq!(run.header.program, "old");
    assert_eq!(run.header.tier, asyncprof_format::Tier::Hooks);
    let loss = run.snapshot.unwrap().loss;
    assert_eq!((loss.missed_samples, loss.skipped_samples), (3, 0));
}

/// A part of run `pid`: its header's part number, snapshots at `elapsed` (ms), stalls `ids`.
fn part(
    pid: u32,
    number: u32,
    elapsed: &[u64],
    ids: &[u64],
    ended: bool,
) -> asyncprof_format::RunFile {
    let mut header = Header::new("svc");
    header.pid = pid;
    header.start_unix_ms = 1_700_000_000_000;
    header.part = number;
    let mut bytes = Vec::new();
    {
        let mut w = RunWriter::new(&mut bytes, &header).unwrap();
        for &ms in elapsed {
            w.write_snapshot(&sample_snapshot(ms * 1_000_000)).unwrap();
        }
        for &id in ids {
            let mut stall = StallRecord::default();
            stall.id = id;
            stall.duration_ns = id;
            w.write_stall(&stall).unwrap();
        }
        if ended {
            w.write_end().unwrap();
        }
    }
    read_bytes(&bytes).unwrap()
}

#[test]
fn the_parts_of_one_run_join_into_one_and_say_what_is_missing() {
    let (a, b, c) = (
        part(7, 0, &[100, 200], &[1, 2], false),
        part(7, 1, &[300], &[2, 3], false),
        part(7, 3, &[500, 600], &[5], true),
    );
    assert!(a.same_run(&c) && !a.same_run(&part(8, 1, &[], &[], false)));
    // In any order; a stall in two parts as of its later record.
    let run = asyncprof_format::join_parts(vec![c.clone(), a.clone(), b.clone()]).unwrap();
    let ids: Vec<u64> = run.stalls.iter().map(|s| s.id).collect();
    assert_eq!(ids, [1, 2, 3, 5]);
    let elapsed: Vec<u64> = run
        .series
        .iter()
        .map(|p| p.elapsed_ns / 1_000_000)
        .collect();
    assert_eq!(elapsed, [100, 200, 300, 500, 600]);
    assert_eq!(
        run.snapshot.as_ref().unwrap().elapsed_ns,
        600_000_000,
        "the newest"
    );
    assert!(run.ended && run.header.part == 0);
    let w = run.warnings.last().unwrap();
    assert!(w.starts_with("parts 0, 1, 3 of one run read as one"), "{w}");
    assert!(w.contains("missing"), "part 2 is: {w}");
    // Consecutive parts: no word of anything missing.
    let run = asyncprof_format::join_parts(vec![b, a]).unwrap();
    assert_eq!(
        run.warnings.last().unwrap(),
        "parts 0, 1 of one run read as one"
    );
    assert!(!run.ended);
    assert!(asyncprof_format::join_parts(Vec::new()).is_none());
}
