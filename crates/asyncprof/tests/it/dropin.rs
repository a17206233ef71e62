//! `asyncprof::sync::mpsc` against `tokio::sync::mpsc`: the same scenarios run on both, each
//! writing down everything it observes (values, errors, capacities, closing), and the two
//! transcripts must be identical. The scenarios are written once, in a macro, for both.

use std::time::Duration;

/// Run `f` on a current-thread runtime (deterministic order) and return its transcript.
fn transcript<F: std::future::Future<Output = Vec<String>>>(f: impl FnOnce() -> F) -> Vec<String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f())
}

macro_rules! scenarios {
    ($module:ident, $bounded:expr, $unbounded:expr) => {
        mod $module {
            use super::*;

            pub(super) async fn ordering() -> Vec<String> {
                let mut log = Vec::new();
                let (tx, mut rx) = $bounded(4);
                let mut producers = Vec::new();
                for p in 0..3u32 {
                    let tx = tx.clone();
                    producers.push(tokio::spawn(async move {
                        for i in 0..20u32 {
                            tx.send(p * 100 + i).await.unwrap();
                            if i % 3 == 0 {
                                tokio::task::yield_now().await;
                            }
                        }
                    }));
                }
                drop(tx);
                while let Some(v) = rx.recv().await {
                    log.push(format!("{v}"));
                }
                for p in producers {
                    p.await.unwrap();
                }
                log.push(format!("after close: {:?}", rx.recv().await));
                log
            }

            pub(super) async fn capacity() -> Vec<String> {
                let mut log = Vec::new();
                let (tx, mut rx) = $bounded(2);
                log.push(format!("cap {} max {}", tx.capacity(), tx.max_capacity()));
                log.push(format!("{:?}", tx.try_send(1u32)));
                log.push(format!("{:?}", tx.try_send(2)));
                log.push(format!("{:?}", tx.try_send(3)));
                log.push(format!(
                    "cap {} len {} empty {}",
                    tx.capacity(),
                    rx.len(),
                    rx.is_empty()
                ));
                log.push(format!(
                    "rx cap {} max {}",
                    rx.capacity(),
                    rx.max_capacity()
                ));
                log.push(format!("{:?}", rx.recv().await));
                let permit = tx.reserve().await.unwrap();
                log.push(format!("reserved: cap {}", tx.capacity()));
                log.push(format!("{:?}", tx.try_reserve().map(|_| ())));
                drop(permit);
                log.push(format!("released: cap {}", tx.capacity()));
                let mut permits = tx.reserve_many(1).await.unwrap();
                log.push(format!("many: len {}", permits.len()));
                permits.next().unwrap().send(7);
                log.push(format!("{:?}", tx.try_reserve_many(1).map(|p| p.len())));
                log.push(format!("{:?} {:?}", rx.try_recv(), rx.try_recv()));
                log.push(format!("{:?}", rx.try_recv()));
                log.push(format!(
                    "{:?}",
                    tx.send_timeout(9, Duration::from_millis(5)).await
                ));
                log.push(format!("{:?}", tx.try_send(10)));
                log.push(format!(
                    "full: {:?}",
                    tx.send_timeout(11, Duration::from_millis(5)).await
                ));
                log
            }

            pub(super) async fn owned_permits() -> Vec<String> {
                let mut log = Vec::new();
                let (tx, mut rx) = $bounded(1);
                let permit = tx.clone().reserve_owned().await.unwrap();
                log.push(format!("cap {}", tx.capacity()));
                match tx.clone().try_reserve_owned() {
                    Ok(_) => log.push("reserved twice".into()),
                    Err(e) => {
                        let text = e.to_string();
                        let same = match e {
                            tokio::sync::mpsc::error::TrySendError::Full(s) => s.same_channel(&tx),
                            tokio::sync::mpsc::error::TrySendError::Closed(_) => false,
                        };
                        log.push(format!("full: {text} same {same}"));
                    }
                }
                let back = permit.send(5u32);
                log.push(format!("same {}", back.same_channel(&tx)));
                log.push(format!("{:?}", rx.recv().await));
                let p = tx.clone().try_reserve_owned().unwrap();
                log.push(format!("same as sender {}", p.same_channel_as_sender(&tx)));
                let s = p.release();
                log.push(format!(
                    "released: cap {} strong {}",
                    s.capacity(),
                    s.strong_count()
                ));
                log
            }

            pub(super) async fn closing() -> Vec<String> {
                let mut log = Vec::new();
                let (tx, mut rx) = $bounded(8);
                tx.send(1u32).await.unwrap();
                tx.send(2).await.unwrap();
                rx.close();
                log.push(format!("closed {} {}", tx.is_closed(), rx.is_closed()));
                log.push(format!("{:?}", tx.try_send(3)));
                log.push(format!("{:?}", tx.send(4).await));
                log.push(format!("{:?} {:?}", rx.recv().await, rx.recv().await));
                log.push(format!("{:?}", rx.recv().await));
                tx.closed().await;
                log.push("closed() returned".into());
                let (tx, rx) = $bounded(8);
                let weak = tx.downgrade();
                log.push(format!(
                    "strong {} weak {}",
                    tx.strong_count(),
                    tx.weak_count()
                ));
                log.push(format!(
                    "rx strong {} weak {}",
                    rx.sender_strong_count(),
                    rx.sender_weak_count()
                ));
                log.push(format!("upgrade {}", weak.upgrade().is_some()));
                drop(rx);
                log.push(format!("{:?}", tx.send(5u32).await));
                drop(tx);
                log.push(format!("upgrade after drop {}", weak.upgrade().is_some()));
                log
            }

            pub(super) async fn many_and_cancel() -> Vec<String> {
                let mut log = Vec::new();
                let (tx, mut rx) = $bounded(16);
                for i in 0..10u32 {
                    tx.send(i).await.unwrap();
                }
                let mut buf = Vec::new();
                log.push(format!("{}", rx.recv_many(&mut buf, 4).await));
                log.push(format!("{}", rx.recv_many(&mut buf, 100).await));
                log.push(format!("{buf:?}"));
                // A recv cancelled by select! loses nothing.
                let sent = tokio::spawn({
                    let tx = tx.clone();
                    async move {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        tx.send(42).await.unwrap();
                    }
                });
                tokio::select! {
                    v = rx.recv() => log.push(format!("early {v:?}")),
                    _ = std::future::ready(()) => log.push("cancelled".into()),
                }
                sent.await.unwrap();
                log.push(format!("{:?}", rx.recv().await));
                drop(tx);
                log.push(format!("{}", rx.recv_many(&mut buf, 4).await));
                log.push(format!(
                    "{:?}",
                    std::future::poll_fn(|cx| rx.poll_recv(cx)).await
                ));
                log
            }

            pub(super) async fn blocking() -> Vec<String> {
                let (tx, mut rx) = $bounded(2);
                let producer = std::thread::spawn(move || {
                    let mut log = Vec::new();
                    for i in 0..6u32 {
                        log.push(format!("{:?}", tx.blocking_send(i)));
                    }
                    log
                });
                let consumer = std::thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Some(v) = rx.blocking_recv() {
                        got.push(v);
                    }
                    got
                });
                let mut log = tokio::task::spawn_blocking(move || producer.join().unwrap())
                    .await
                    .unwrap();
                let got = tokio::task::spawn_blocking(move || consumer.join().unwrap())
                    .await
                    .unwrap();
                log.push(format!("{got:?}"));
                log
            }

            /// A producer that always finds room still yields when its cooperative budget
            /// is spent, after the same number of sends.
            pub(super) async fn budget() -> Vec<String> {
                use std::sync::atomic::{AtomicU32, Ordering};
                use std::sync::Arc;
                let (tx, mut rx) = $bounded(10_000);
                let progress = Arc::new(AtomicU32::new(0));
                let producer = tokio::spawn({
                    let progress = progress.clone();
                    async move {
                        for i in 1..=1000u32 {
                            tx.send(i).await.unwrap();
                            progress.store(i, Ordering::Relaxed);
                        }
                    }
                });
                let watcher = tokio::spawn(async move {
                    let mut seen = Vec::new();
                    for _ in 0..4 {
                        seen.push(progress.load(Ordering::Relaxed));
                        tokio::task::yield_now().await;
                    }
                    seen
                });
                let mut log = vec![format!("{:?}", watcher.await.unwrap())];
                producer.await.unwrap();
                let mut buf = Vec::new();
                log.push(format!("{}", rx.recv_many(&mut buf, 5000).await));
                log.push(format!("{:?}", &buf[..3]));
                log
            }

            pub(super) async fn unbounded() -> Vec<String> {
                let mut log = Vec::new();
                let (tx, mut rx) = $unbounded();
                for i in 0..5u32 {
                    log.push(format!("{:?}", tx.send(i)));
                }
                log.push(format!("len {} empty {}", rx.len(), rx.is_empty()));
                log.push(format!("{:?} {:?}", rx.recv().await, rx.try_recv()));
                let mut buf = Vec::new();
                log.push(format!("{} {buf:?}", rx.recv_many(&mut buf, 2).await));
                let weak = tx.downgrade();
                log.push(format!(
                    "weak {} strong {}",
                    tx.weak_count(),
                    weak.strong_count()
                ));
                let tx2 = weak.upgrade().unwrap();
                log.push(format!("same {}", tx2.same_channel(&tx)));
                drop(tx2);
                rx.close();
                log.push(format!("{:?} closed {}", tx.send(9), tx.is_closed()));
                log.push(format!("{:?} {:?}", rx.recv().await, rx.try_recv()));
                drop(tx);
                log.push(format!("{:?}", rx.try_recv()));
                log.push(format!("upgrade {}", weak.upgrade().is_some()));
                log
            }
        }
    };
}

scenarios!(with_tokio, |n| tokio::sync::mpsc::channel(n), || {
    tokio::sync::mpsc::unbounded_channel()
});
scenarios!(
    with_asyncprof,
    |n| asyncprof::sync::mpsc::channel("dropin", n),
    || asyncprof::sync::mpsc::unbounded_channel("dropin-unbounded")
);

macro_rules! same {
    ($name:ident) => {
        #[test]
        fn $name() {
            let _serial = crate::support::serial();
            let ours = transcript(with_asyncprof::$name);
            let theirs = transcript(with_tokio::$name);
            assert!(
                theirs.len() >= 3,
                "the scenario observes something: {theirs:?}"
            );
            assert_eq!(ours, theirs);
        }
    };
}

same!(ordering);
same!(capacity);
same!(owned_permits);
same!(closing);
same!(many_and_cancel);
same!(blocking);
same!(budget);
same!(unbounded);
