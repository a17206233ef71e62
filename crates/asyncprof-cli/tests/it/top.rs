//! `asyncprof top` in a real terminal (tmux: `send-keys`, `capture-pane`), following the run
//! file of a bad pipeline that runs in another process: the stall's marked line appears on
//! screen while the pipeline runs, sorting and the stack view work, quitting restores the
//! terminal; then a killed process's file, a finished one, a damaged one, and the plain
//! output on a pipe.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use asyncprof_format::StallRecord;

/// The scraper's marked line (`// asyncprof-expect: blocking-call`).
const MARKED: &str = "pipelines/scraper.rs:88";

/// A directory of the test's own.
fn dir(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("asyncprof-top-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The scraper's bad variant, recording to `path`, in a process of its own. Its temporary
/// files go beside `path`: a test that kills it removes them with its directory.
fn pipeline(path: &Path, load: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_asyncprof"))
        .args(["__pipeline", "scraper", "bad", load])
        .env("ASYNCPROF_OUT", path)
        .env("TMPDIR", path.parent().unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Poll `probe` every 20 ms until it gives a value, for at most `limit`.
fn wait_for<T>(limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(start.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The stalls in the run file so far (nothing while it has no complete header).
fn stalls_in(path: &Path) -> Vec<StallRecord> {
    std::fs::read(path)
        .ok()
        .and_then(|b| asyncprof_format::read_bytes(&b).ok())
        .map_or_else(Vec::new, |r| r.stalls)
}

fn at_marked_line(s: &StallRecord) -> bool {
    s.culprit.as_ref().is_some_and(|c| {
        c.file
            .as_deref()
            .is_some_and(|f| f.ends_with("pipelines/scraper.rs"))
            && c.line == Some(88)
    })
}

/// A tmux server of this test's own (its own socket), with one 200×50 session running a
/// plain shell; killed when dropped.
pub(crate) struct Tmux {
    socket: String,
}

impl Tmux {
    pub(crate) fn new(name: &str) -> Tmux {
        let t = Tmux {
            socket: format!("asyncprof-top-{name}-{}", std::process::id()),
        };
        let out = t.cmd(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "200",
            "-y",
            "50",
            "env",
            "PS1=$ ",
            "bash",
            "--norc",
            "--noprofile",
        ]);
        assert!(
            out.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux runs (.ci/test installs it)")
    }

    /// Type `keys` (tmux key names, e.g. "Enter", "Left", or literal text).
    pub(crate) fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        assert!(self.cmd(&args).status.success());
    }

    /// Type a command line and run it.
    pub(crate) fn run(&self, line: &str) {
        assert!(self
            .cmd(&["send-keys", "-t", "t", "-l", line])
            .status
            .success());
        self.keys(&["Enter"]);
    }

    /// The screen as text.
    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned()
    }

    /// Wait until the screen shows `text` and has stopped changing (a frame is written to the
    /// terminal in pieces: its header can be there before its rows); the screen then.
    pub(crate) fn wait_for(&self, text: &str, limit: Duration) -> String {
        let start = Instant::now();
        let mut previous = String::new();
        loop {
            let screen = self.screen();
            if screen.contains(text) && screen == previous {
                return screen;
            }
            assert!(
                start.elapsed() < limit,
                "waited {limit:?} for {text:?} on a settled screen; it shows:\n{screen}"
            );
            previous = screen;
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pid of the program the pane's shell runs now.
    fn child_pid(&self) -> String {
        let shell = self.cmd(&["display-message", "-p", "-t", "t", "#{pane_pid}"]);
        let shell = String::from_utf8_lossy(&shell.stdout).trim().to_string();
        let child = Command::new("pgrep").args(["-P", &shell]).output().unwrap();
        let child = String::from_utf8_lossy(&child.stdout).trim().to_string();
        assert!(!child.is_empty(), "no child of the shell {shell}");
        child
    }

    /// Wait until the screen no longer shows `text`.
    fn wait_gone(&self, text: &str, limit: Duration) {
        wait_for(limit, &format!("{text:?} to leave the screen"), || {
            (!self.screen().contains(text)).then_some(())
        });
    }

    /// Whether the terminal is in the alternate screen (a full-screen program owns it).
    fn alternate_on(&self) -> bool {
        let out = self.cmd(&["display-message", "-p", "-t", "t", "#{alternate_on}"]);
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// The text under the column `name` in each row below the header line that holds it.
fn column(screen: &str, name: &str) -> Vec<String> {
    let lines: Vec<&str> = screen.lines().collect();
    let Some(h) = lines.iter().position(|l| l.contains(name)) else {
        return Vec::new();
    };
    let header = lines[h];
    let start = header[..header.find(name).unwrap()].chars().count();
    lines[h + 1..]
        .iter()
        .map(|l| l.chars().skip(start).collect::<String>())
        .map(|cell| cell.split_whitespace().next().unwrap_or("").to_string())
        .take_while(|cell| !cell.is_empty())
        .collect()
}

/// `45.0ms`, `870ns`, `12.5µs`, `1.2ms` in nanoseconds.
fn parse_dur(s: &str) -> f64 {
    for (unit, scale) in [("ms", 1e6), ("µs", 1e3), ("ns", 1.0)] {
        if let Some(v) = s.strip_suffix(unit) {
            return v.parse::<f64>().unwrap() * scale;
        }
    }
    panic!("not a duration: {s:?}")
}

#[test]
fn top_shows_a_live_stall_at_its_line_sorts_shows_stacks_and_restores_the_terminal() {
    let dir = dir("live");
    let path = dir.join("live.run");
    let bin = env!("CARGO_BIN_EXE_asyncprof");
    let mut child = pipeline(&path, "default");
    wait_for(Duration::from_secs(20), "the run file", || {
        path.exists().then_some(())
    });
    let tmux = Tmux::new("live");
    let before = dir.join("stty-before");
    let after = dir.join("stty-after");
    tmux.run(&format!(
        "stty -g > {} ; {bin} top {} ; stty -g > {}",
        before.display(),
        path.display(),
        after.display()
    ));
    tmux.wait_for("● recording", Duration::from_secs(20));
    assert!(tmux.alternate_on());

    // A stall that the file records from now on, and when the screen shows it: its start
    // time (the AT column, to the millisecond) names it on screen.
    let known: Vec<u64> = stalls_in(&path).iter().map(|s| s.id).collect();
    let (recorded, stall) = wait_for(
        Duration::from_secs(20),
        "a new stall at the marked line",
        || {
            stalls_in(&path)
                .into_iter()
                .find(|s| !known.contains(&s.id) && at_marked_line(s))
                .map(|s| (Instant::now(), s))
        },
    );
    let at = format!("{:.3}s", stall.start_ns as f64 / 1e9);
    // The first capture that shows it (not a settled screen: that would add its wait).
    let shown = wait_for(Duration::from_secs(5), "the stall on screen", || {
        tmux.screen().contains(&at).then(|| recorded.elapsed())
    });
    eprintln!("stall at {at}: on screen {shown:?} after it was in the file");
    assert!(
        shown < Duration::from_secs(1),
        "stall at {at} on screen {shown:?} after it was in the file"
    );
    let screen = tmux.wait_for(&at, Duration::from_secs(5));
    let row = screen.lines().find(|l| l.contains(&at)).unwrap();
    assert!(row.contains(MARKED), "{row}");
    // At least three stalls on screen for the sort to order, then stop taking new data
    // while the sort is checked: space pauses.
    wait_for(Duration::from_secs(20), "three stalls on screen", || {
        let screen = tmux.screen();
        let count = screen
            .split("stalls ")
            .nth(1)?
            .split(' ')
            .next()?
            .parse::<u32>()
            .ok()?;
        (count >= 3).then_some(())
    });
    tmux.keys(&["Space"]);
    tmux.wait_for("PAUSED", Duration::from_secs(5));

    // The default order is newest first; `s` sorts by the next column (LASTED, longest
    // first), `S` reverses it.
    tmux.keys(&["s"]);
    let screen = tmux.wait_for("LASTED▼", Duration::from_secs(5));
    let lasted: Vec<f64> = column(&screen, "LASTED")
        .iter()
        .map(|s| parse_dur(s))
        .collect();
    assert!(lasted.len() >= 2, "{screen}");
    assert!(
        lasted.windows(2).all(|w| w[0] >= w[1]),
        "{lasted:?}\n{screen}"
    );
    tmux.keys(&["S"]);
    let screen = tmux.wait_for("LASTED▲", Duration::from_secs(5));
    let lasted: Vec<f64> = column(&screen, "LASTED")
        .iter()
        .map(|s| parse_dur(s))
        .collect();
    assert!(
        lasted.windows(2).all(|w| w[0] <= w[1]),
        "{lasted:?}\n{screen}"
    );

    // A filter keeps the rows that hold its text (here: the stalls at the marked line, whose
    // stacks name it; a busy machine adds stalls of its own, without a line).
    tmux.keys(&["/"]);
    tmux.keys(&["-l", "scraper.rs:88"]);
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("filter: scraper.rs:88", Duration::from_secs(5));
    assert!(screen.contains(MARKED), "{screen}");

    // The stack view of the selected stall: its samples, the culprit frame marked.
    tmux.keys(&["Enter"]);
    let screen = tmux.wait_for("Stacks (Esc closes", Duration::from_secs(5));
    assert!(screen.contains("sample"), "{screen}");
    assert!(
        screen
            .lines()
            .any(|l| l.contains("▶ ") && l.contains(&format!("{MARKED})"))),
        "the culprit frame, marked:\n{screen}"
    );
    // A key right after Escape would read as Alt and that key: wait for each to land.
    tmux.keys(&["Escape"]);
    tmux.wait_gone("Stacks (Esc closes", Duration::from_secs(5));
    tmux.keys(&["?"]);
    tmux.wait_for("Keys (Esc closes)", Duration::from_secs(5));
    tmux.keys(&["Escape"]);
    tmux.wait_gone("Keys (Esc closes)", Duration::from_secs(5));

    // One that matches nothing says so; Esc clears it.
    tmux.keys(&["/"]);
    tmux.keys(&["-l", "zz"]);
    tmux.keys(&["Enter"]);
    tmux.wait_for("no row matches the filter", Duration::from_secs(5));
    tmux.keys(&["/"]);
    tmux.keys(&["Escape"]);
    tmux.wait_gone("filter:", Duration::from_secs(5));

    // Other views: spawn locations with their rates, and the workers.
    tmux.keys(&["Space", "2"]);
    let screen = tmux.wait_for("POLLS/S▼", Duration::from_secs(5));
    assert!(screen.contains("pipelines/scraper.rs:"), "{screen}");
    tmux.keys(&["4"]);
    tmux.wait_for("PARKED", Duration::from_secs(5));

    // Quit: the shell's screen comes back and the terminal's settings are as before.
    tmux.keys(&["q"]);
    wait_for(Duration::from_secs(10), "top to quit", || {
        after.exists().then_some(())
    });
    assert!(!tmux.alternate_on(), "still in the alternate screen");
    assert_eq!(
        std::fs::read_to_string(&before).unwrap(),
        std::fs::read_to_string(&after).unwrap(),
        "terminal settings differ after quitting"
    );
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn top_on_a_killed_process_a_finished_run_and_a_damaged_file() {
    let dir = dir("after");
    let bin = env!("CARGO_BIN_EXE_asyncprof");

    // Killed while stalls were being recorded.
    let killed = dir.join("killed.run");
    let mut child = pipeline(&killed, "default");
    wait_for(
        Duration::from_secs(30),
        "a stall at the marked line",
        || stalls_in(&killed).iter().any(at_marked_line).then_some(()),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let tmux = Tmux::new("after");
    tmux.run(&format!("{bin} top {}", killed.display()));
    let screen = tmux.wait_for("process gone", Duration::from_secs(10));
    assert!(screen.contains(MARKED), "{screen}");
    tmux.keys(&["q"]);
    wait_for(Duration::from_secs(10), "top to quit", || {
        (!tmux.alternate_on()).then_some(())
    });

    // On a pipe: one line per stall, then how the run ended.
    let out = Command::new(bin)
        .args(["top", killed.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains("stall") && l.contains("blocking-call") && l.contains(MARKED)),
        "{text}"
    );
    assert!(
        text.trim_end()
            .lines()
            .last()
            .unwrap()
            .contains("is gone without ending its run"),
        "{text}"
    );

    // A finished run: it says so, and ← steps back to its first snapshot.
    let finished = dir.join("finished.run");
    let status = pipeline(&finished, "quick").wait().unwrap();
    assert!(status.success());
    tmux.run(&format!("{bin} top {}", finished.display()));
    let screen = tmux.wait_for("■ ended", Duration::from_secs(10));
    assert!(screen.contains(MARKED), "{screen}");
    let snapshots = asyncprof_format::read_path(&finished).unwrap().series.len();
    assert!(snapshots >= 2, "{snapshots} snapshots");
    for _ in 0..snapshots {
        tmux.keys(&["Left"]);
    }
    let screen = tmux.wait_for("snapshot 1 of", Duration::from_secs(5));
    assert!(screen.contains("L live"), "{screen}");
    tmux.keys(&["L"]);
    tmux.wait_gone("snapshot 1 of", Duration::from_secs(5));
    tmux.keys(&["q"]);
    wait_for(Duration::from_secs(10), "top to quit", || {
        (!tmux.alternate_on()).then_some(())
    });

    // SIGTERM (a closed session, `kill`): it ends, and the terminal is restored.
    tmux.run(&format!(
        "{bin} top {}; echo top-exited-$?",
        finished.display()
    ));
    tmux.wait_for("■ ended", Duration::from_secs(10));
    assert!(tmux.alternate_on());
    let top = tmux.child_pid();
    let killed_top = Command::new("kill").args(["-TERM", &top]).status().unwrap();
    assert!(killed_top.success());
    tmux.wait_for("top-exited-0", Duration::from_secs(10));
    assert!(
        !tmux.alternate_on(),
        "still in the alternate screen after SIGTERM"
    );

    // The terminal goes away (the tmux server is killed, as a closed ssh session or terminal
    // window): `top` ends by itself instead of spinning on the dead terminal.
    let gone = Tmux::new("gone");
    gone.run(&format!("{bin} top {}", finished.display()));
    gone.wait_for("■ ended", Duration::from_secs(10));
    let top = gone.child_pid();
    drop(gone);
    let proc_dir = PathBuf::from(format!("/proc/{top}"));
    wait_for(
        Duration::from_secs(5),
        "top to end with its terminal",
        || {
            // Gone, or a zombie its parent has not reaped.
            let stat = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
            let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
            matches!(state, None | Some('Z')).then_some(())
        },
    );

    // A damaged file: a clear message on screen, what came before shown, no panic.
    let mut bytes = std::fs::read(&finished).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let damaged = dir.join("damaged.run");
    std::fs::write(&damaged, &bytes).unwrap();
    tmux.run(&format!(
        "{bin} top {}; echo top-exited-$?",
        damaged.display()
    ));
    let screen = tmux.wait_for("damaged at byte", Duration::from_secs(10));
    assert!(screen.contains("error: cannot read run file"), "{screen}");
    assert!(!screen.contains("panicked"), "{screen}");
    tmux.keys(&["q"]);
    tmux.wait_for("top-exited-0", Duration::from_secs(10));

    // Not a run file at all.
    let junk = dir.join("junk.run");
    std::fs::write(&junk, b"hello, this is not a run file\n").unwrap();
    tmux.run(&format!("{bin} top {}; echo top-exited-$?", junk.display()));
    tmux.wait_for("not an asyncprof run file", Duration::from_secs(10));
    tmux.keys(&["q"]);
    tmux.wait_for("top-exited-0", Duration::from_secs(10));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn top_finds_a_process_by_pid_and_bad_arguments_are_clear() {
    let dir = dir("bypid");
    let path = dir.join("bypid.run");
    let mut child = pipeline(&path, "default");
    let pid = child.id().to_string();
    wait_for(
        Duration::from_secs(30),
        "a stall at the marked line",
        || stalls_in(&path).iter().any(at_marked_line).then_some(()),
    );
    // On a pipe, by pid: the stalls so far, then (once killed) how the run ended.
    let mut top = Command::new(env!("CARGO_BIN_EXE_asyncprof"))
        .args(["top", "--pid", &pid])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let status = wait_for(Duration::from_secs(10), "top to exit", || {
        top.try_wait().unwrap()
    });
    assert!(status.success());
    let mut text = String::new();
    std::io::Read::read_to_string(&mut top.stdout.take().unwrap(), &mut text).unwrap();
    assert!(text.starts_with("watching asyncprof (pid "), "{text}");
    assert!(text.contains(MARKED), "{text}");

    // A process that records nothing.
    let mut plain = Command::new("sleep").arg("30").spawn().unwrap();
    let err = Command::new(env!("CARGO_BIN_EXE_asyncprof"))
        .args(["top", "--pid", &plain.id().to_string()])
        .output()
        .unwrap();
    let _ = plain.kill();
    let _ = plain.wait();
    assert_eq!(err.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("has no asyncprof run file open"),
        "{}",
        String::from_utf8_lossy(&err.stderr)
    );
    let err = Command::new(env!("CARGO_BIN_EXE_asyncprof"))
        .args(["top", "/nonexistent/x.run"])
        .output()
        .unwrap();
    assert_eq!(err.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("cannot read run file /nonexistent/x.run")
    );
    std::fs::remove_dir_all(&dir).ok();
}
