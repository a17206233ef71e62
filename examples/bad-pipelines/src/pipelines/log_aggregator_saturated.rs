//! `log-aggregator-saturated`: UDP log lines from 500 simulated services; each line is handled
//! by a task of its own that parses it and redacts secrets (tokens, session ids, user names)
//! before it is counted per service and level.
//!
//! Defect: the redaction rules (a table of 3,000 words, each mapped to its mask) are built
//! again for every line. Each poll is short (a few hundred microseconds, never a stall), but
//! the two workers are busy all the time, ready tasks queue behind them and the socket drops
//! what they cannot read: the runtime is saturated.
//! Fixed: the rules are built once and shared; each line costs a few microseconds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::logs;
use crate::{Ctx, Outcome, RunFuture, Variant};

/// Words the rules mask.
const RULE_WORDS: u64 = 3_000;

/// The redaction rules: which words to mask, and with what.
struct Rules {
    masks: HashMap<String, String>,
}

impl Rules {
    fn build() -> Rules {
        let mut masks = HashMap::with_capacity(RULE_WORDS as usize + 4);
        for secret in ["token", "session", "user", "payment"] {
            masks.insert(secret.to_string(), format!("<{secret}>"));
        }
        for i in 0..RULE_WORDS {
            masks.insert(format!("secret-{i}"), format!("<secret {i}>"));
        }
        Rules { masks }
    }

    /// The message with every masked word replaced.
    fn redact(&self, message: &str) -> String {
        let mut out = String::with_capacity(message.len());
        for word in message.split(' ') {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(self.masks.get(word).map_or(word, String::as_str));
        }
        out
    }
}

/// Lines counted per (service, level), and what the count costs.
#[derive(Default)]
struct Counts {
    per_key: Mutex<HashMap<(u64, String), u64>>,
    handled: AtomicU64,
    redacted_bytes: AtomicU64,
}

fn handle(counts: &Counts, rules: &Rules, line: &str, received: Instant) -> bool {
    let Some(record) = logs::parse(line, received) else {
        return false;
    };
    let redacted = rules.redact(&record.message);
    counts
        .redacted_bytes
        .fetch_add(redacted.len() as u64, Relaxed);
    *counts
        .per_key
        .lock()
        .unwrap()
        .entry((record.service, record.level))
        .or_default() += 1;
    counts.handled.fetch_add(1, Relaxed);
    true
}

pub(crate) fn run(variant: Variant, ctx: Arc<Ctx>) -> RunFuture {
    Box::pin(async move {
        let (lines, per_second): (u64, u64) =
            ctx.load
                .pick((6_000, 6_000), (12_000, 6_000), (24_000, 6_000));
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let generator = logs::generate(socket.local_addr()?, lines, per_second)?;
        let counts = Arc::new(Counts::default());
        let shared_rules = Arc::new(Rules::build());
        let mut received = 0u64;
        let mut buf = vec![0u8; 2048];
        let mut handlers = tokio::task::JoinSet::new();
        loop {
            // Done once the generator has stopped and the socket stays quiet.
            let quiet = generator.is_finished();
            match tokio::time::timeout(Duration::from_millis(200), socket.recv_from(&mut buf)).await
            {
                Ok(Ok((n, _))) => {
                    received += 1;
                    let line = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let at = Instant::now();
                    let counts = counts.clone();
                    let latency = ctx.latency.clone();
                    match variant {
                        Variant::Bad => {
                            // The rules are built inside every line's task.
                            let task = async move {
                                if handle(&counts, &Rules::build(), &line, at) {
                                    latency.record_since(at);
                                }
                            };
                            handlers.spawn(task); // asyncprof-expect: runtime-saturated
                        }
                        Variant::Fixed => {
                            let rules = shared_rules.clone();
                            handlers.spawn(async move {
                                if handle(&counts, &rules, &line, at) {
                                    latency.record_since(at);
                                }
                            });
                        }
                    }
                    while handlers.try_join_next().is_some() {}
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) if quiet => break,
                Err(_) => {}
            }
        }
        while handlers.join_next().await.is_some() {}
        let sent = generator
            .join()
            .map_err(|_| anyhow::anyhow!("the log generator panicked"))?;
        let handled = counts.handled.load(Relaxed);
        let mut out = Outcome {
            items: handled,
            errors: received - handled,
            ..Outcome::default()
        };
        out.checks.insert("lines_sent".into(), sent);
        out.checks.insert("lines_received".into(), received);
        out.checks
            .insert("keys".into(), counts.per_key.lock().unwrap().len() as u64);
        Ok(out)
    })
}
