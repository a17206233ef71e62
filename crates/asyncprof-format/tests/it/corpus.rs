//! A corpus of real run files damaged the ways files get damaged (a process killed mid-write,
//! a flipped bit, a forged length, a zeroed block, a newer version, the wrong file): each reads
//! as far as it is intact or fails with one clear error naming what is wrong and where.
//! `tests/corpus/README.md` says how each file was made.

use std::path::PathBuf;

enum Expect {
    /// Reads, with these flags, and keeps at least this many stalls.
    Reads {
        truncated: bool,
        ended: bool,
        min_stalls: usize,
    },
    /// Fails with an error whose message contains this.
    Fails(&'static str),
}

const CASES: &[(&str, Expect)] = &[
    (
        "intact.run",
        Expect::Reads {
            truncated: false,
            ended: true,
            min_stalls: 2,
        },
    ),
    (
        "killed-at-frame-boundary.run",
        Expect::Reads {
            truncated: false,
            ended: false,
            min_stalls: 2,
        },
    ),
    (
        "killed-mid-frame.run",
        Expect::Reads {
            truncated: true,
            ended: false,
            min_stalls: 1,
        },
    ),
    ("empty.run", Expect::Fails("truncated at byte 0")),
    ("preamble-cut.run", Expect::Fails("truncated at byte 5")),
    ("flipped-payload-byte.run", Expect::Fails("damaged at byte")),
    ("flipped-length-byte.run", Expect::Fails("damaged at byte")),
    (
        "forged-length.run",
        Expect::Fails("a frame length of at most 67108864 bytes"),
    ),
    ("zeroed-block.run", Expect::Fails("damaged at byte")),
    ("newer-version.run", Expect::Fails("version 3 is newer")),
    (
        "not-a-run-file.run",
        Expect::Fails("not an asyncprof run file"),
    ),
];

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

#[test]
fn every_damaged_file_reads_as_far_as_it_is_intact_or_fails_clearly() {
    let listed: Vec<&str> = CASES.iter().map(|(f, _)| *f).collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".run"))
        .collect();
    on_disk.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(
        on_disk, sorted,
        "every corpus file has a case, and every case a file"
    );

    let intact = asyncprof_format::read_path(corpus().join("intact.run")).unwrap();
    for (file, expect) in CASES {
        let result = asyncprof_format::read_path(corpus().join(file));
        match (expect, result) {
            (
                Expect::Reads {
                    truncated,
                    ended,
                    min_stalls,
                },
                Ok(run),
            ) => {
                assert_eq!(run.truncated, *truncated, "{file}: truncated");
                assert_eq!(run.ended, *ended, "{file}: ended");
                assert!(
                    run.stalls.len() >= *min_stalls,
                    "{file}: {} stalls",
                    run.stalls.len()
                );
                assert_eq!(run.header.pid, intact.header.pid, "{file}: the same run");
                let snap = run.snapshot.as_ref().expect("snapshots before the damage");
                assert!(snap.runtime.polls > 0, "{file}");
                if *truncated {
                    assert!(
                        run.warnings.iter().any(|w| w.contains("truncated")),
                        "{file}: a truncated tail is a warning: {:?}",
                        run.warnings
                    );
                }
            }
            (Expect::Fails(needle), Err(e)) => {
                let msg = e.to_string();
                assert!(msg.contains(needle), "{file}: {msg:?} lacks {needle:?}");
                assert!(!msg.contains('\n'), "{file}: one line: {msg:?}");
            }
            (Expect::Reads { .. }, Err(e)) => panic!("{file} should read: {e}"),
            (Expect::Fails(needle), Ok(_)) => panic!("{file} should fail with {needle:?}"),
        }
    }
}
