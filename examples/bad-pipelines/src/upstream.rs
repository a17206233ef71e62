//! The fake upstream services (HTTP APIs, WebSocket exchanges, UDP senders), on a runtime of
//! their own so that they do not run on, or distort, the profiled runtime.

use std::future::Future;
use std::net::SocketAddr;

/// A runtime for upstream services; dropping it stops them.
#[derive(Debug)]
pub struct Upstream {
    rt: Option<tokio::runtime::Runtime>,
}

impl Upstream {
    /// Start the upstream runtime (one worker thread, named `upstream`).
    ///
    /// # Errors
    ///
    /// When the runtime cannot be built.
    pub fn start() -> std::io::Result<Upstream> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("upstream")
            .enable_all()
            .build()?;
        Ok(Upstream { rt: Some(rt) })
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("the runtime lives until drop")
    }

    /// Serve `router` over HTTP/1 on a fresh loopback port.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub fn http(&self, router: axum::Router) -> std::io::Result<SocketAddr> {
        let listener = self.listen()?;
        let addr = listener.local_addr()?;
        self.rt().spawn(async move {
            if let Err(err) = axum::serve(listener, router).await {
                eprintln!("upstream HTTP server {addr}: {err}");
            }
        });
        Ok(addr)
    }

    /// A TCP listener on a fresh loopback port, registered with the upstream runtime.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub fn listen(&self) -> std::io::Result<tokio::net::TcpListener> {
        let std = std::net::TcpListener::bind("127.0.0.1:0")?;
        std.set_nonblocking(true)?;
        let _entered = self.rt().enter();
        tokio::net::TcpListener::from_std(std)
    }

    /// Run `fut` on the upstream runtime.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.rt().spawn(fut)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
