//! Stack samples never surface as `EINTR` in the service's own blocking calls: a blocking
//! read (one read(2), which std does not retry), an accept and a sleep, each sampled several
//! times while it waits, complete as if nothing happened (the handler is installed with
//! SA_RESTART).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::support::{record_with, Flavor};

#[test]
fn sampled_blocking_calls_are_not_interrupted() {
    crate::support::retry_if_disturbed(|| {
        let (run, _) = record_with(
            "eintr",
            Flavor::MultiThread(2),
            |b| b.stall_threshold(Duration::from_millis(5)),
            || async {
                let (mut ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                // The other ends answer from plain threads, 300 ms later.
                let peer = std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(300));
                    theirs.write_all(b"late").unwrap();
                    std::thread::sleep(Duration::from_millis(300));
                    std::net::TcpStream::connect(addr).unwrap()
                });
                let read = tokio::spawn(async move {
                    let mut buf = [0u8; 4];
                    // Blocks the worker for ~300 ms while the watchdog samples it. One read(2):
                    // std retries EINTR in read_exact, accept and sleep, not in a plain read.
                    let r = ours.read(&mut buf);
                    (r.map_err(|e| e.kind()), buf)
                });
                let (r, buf) = read.await.unwrap();
                assert_eq!(r, Ok(4), "the read completed, not interrupted");
                assert_eq!(&buf, b"late");
                let accepted = tokio::spawn(async move { listener.accept().map_err(|e| e.kind()) });
                assert!(accepted.await.unwrap().is_ok(), "accept completed");
                let slept = tokio::spawn(async {
                    let t = Instant::now();
                    std::thread::sleep(Duration::from_millis(250));
                    t.elapsed()
                });
                assert!(slept.await.unwrap() >= Duration::from_millis(250));
                drop(peer.join().unwrap());
            },
        );
        // Each of the three calls was a stall sampled several times while it waited.
        let sampled: Vec<u32> = run
            .stalls
            .iter()
            .map(|s| s.stacks.iter().map(|st| st.count).sum())
            .collect();
        assert!(
            sampled.iter().filter(|&&n| n >= 3).count() >= 3,
            "stalls and their samples: {sampled:?}"
        );
    });
}
