//! asyncprof's layer on one registry with `EnvFilter`, `fmt` and console-subscriber's
//! `ConsoleLayer`: every layer keeps working, and tokio-console's server still sees tasks.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing_subscriber::layer::SubscriberExt;

use crate::support::{location, marked_line};

/// A `fmt` writer that keeps what it is given.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Ask the console server for updates until one lists a task whose fields mention `name`.
fn console_sees_task(addr: SocketAddr, name: &str, deadline: Instant) -> bool {
    use console_api::instrument::{instrument_client::InstrumentClient, InstrumentRequest};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = loop {
            match InstrumentClient::connect(format!("http://{addr}")).await {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(_) => return false,
            }
        };
        let mut client = client;
        let Ok(stream) = client.watch_updates(InstrumentRequest {}).await else {
            return false;
        };
        let mut stream = stream.into_inner();
        while Instant::now() < deadline {
            let next = tokio::time::timeout_at(deadline.into(), stream.message()).await;
            match next {
                Ok(Ok(Some(update))) => {
                    let seen = update
                        .task_update
                        .iter()
                        .flat_map(|t| t.new_tasks.iter())
                        .any(|t| format!("{t:?}").contains(name));
                    if seen {
                        return true;
                    }
                }
                _ => return false,
            }
        }
        false
    })
}

#[test]
fn composes_with_env_filter_fmt_and_console() {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let (console_layer, server) = console_subscriber::ConsoleLayer::builder()
        .server_addr(addr)
        .publish_interval(Duration::from_millis(50))
        .build();
    let server_thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            // The test ends the process; the server runs until then.
            let _ = server.serve().await;
        });
    });
    drop(server_thread);

    let path = std::env::temp_dir().join(format!(
        "asyncprof-compat-console-{}.run",
        std::process::id()
    ));
    let _one = crate::support::serial();
    let guard = asyncprof::Profiler::builder().out(&path).start().unwrap();
    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(
            "info,tokio=trace,runtime=trace",
        ))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer({
                    let c = captured.clone();
                    move || c.clone()
                })
                .with_ansi(false),
        )
        .with(console_layer)
        .with(guard.layer());

    let deadline = Instant::now() + Duration::from_secs(20);
    let line = marked_line(file!(), "probe");
    let seen = tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            tracing::info!("probe event for fmt");
            let probe = tokio::task::Builder::new()
                .name("console-probe")
                // spawn: probe
                .spawn(async {
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    std::future::pending::<()>().await
                })
                .unwrap();
            let seen = tokio::task::spawn_blocking(move || {
                console_sees_task(addr, "console-probe", deadline)
            })
            .await
            .unwrap();
            probe.abort();
            seen
        })
    });
    drop(guard);
    assert!(
        seen,
        "tokio-console's server lists the task spawned beside asyncprof's layer"
    );
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("probe event for fmt"), "fmt output: {text}");
    let run = asyncprof_format::read_path(&path).unwrap();
    std::fs::remove_file(&path).ok();
    let loc = location(&run, file!(), line);
    assert_eq!(loc.tasks_spawned, 1);
    assert_eq!(loc.polls, 4, "three yields, then the pending poll");
}
