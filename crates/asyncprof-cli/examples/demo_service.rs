//! A small HTTP service instrumented with asyncprof, with one defect: the `/report` handler
//! renders with a blocking sleep on the runtime. `asyncprof run` is tested against it:
//!
//! ```text
//! asyncprof run --load http://127.0.0.1:3000/report --rate 40 --duration 2s -- \
//!     target/debug/examples/demo_service --port 3000 --serve-for 3
//! ```

use std::time::Duration;

use axum::routing::get;
use axum::Router;

async fn fast() -> &'static str {
    "ok"
}

async fn report() -> String {
    // Rendering the report "takes a while": a blocking sleep on a worker thread.
    std::thread::sleep(Duration::from_millis(25)); // asyncprof-expect: blocking-call
    "report".to_string()
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[asyncprof::main(worker_threads = 2)]
async fn main() {
    let port: u16 = arg("--port").and_then(|p| p.parse().ok()).unwrap_or(3000);
    let serve_for: u64 = arg("--serve-for")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let app = Router::new()
        .route("/", get(fast))
        .route("/report", get(report));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the port is free");
    // Serve from a task (the runtime's workers), then stop after `serve_for` seconds.
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(tokio::time::sleep(Duration::from_secs(serve_for)))
            .await
    });
    server.await.expect("the server task").expect("the server");
}
