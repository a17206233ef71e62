//! `blocking-call`: a poll slept in a system call past the threshold.
//!
//! **Measures**: a stall whose thread was asleep for most of its time (a poll's stall: its
//! `schedstat`), or in most of the watchdog's looks (a busy period's), outside a std lock: a
//! `std::thread::sleep`, synchronous file or socket I/O, a blocking HTTP or database client;
//! or one on CPU whose stacks mostly begin in the C library's wrapper of a system call that
//! kept the thread past the signal (a `read` copying a large file from the page cache,
//! sampled as the call returned; not short calls between steps of a computation).
//! The primitive is the call the user's code made; the system call says which kind of wait.
//! **Why it hurts**: the worker does nothing and runs nothing else for as long as the call
//! takes; every task queued on it waits.
//! **What to do**: use the async equivalent (`tokio::time::sleep`, `tokio::net`,
//! `tokio::fs`, an async client) or move the call into `tokio::task::spawn_blocking`.

/// The kind's name.
pub const KIND: &str = asyncprof_format::StallKind::BlockingCall.name();

/// What to do: the async equivalent of the call when it is a known one, else the general
/// advice.
pub fn recommendation(
    primitive: Option<&str>,
    same_code: &[String],
    syscall: Option<&str>,
    max_ms: f64,
) -> String {
    format!(
        "{} blocked the worker thread for up to {max_ms:.1} ms{}. {}",
        super::call(primitive, same_code),
        syscall.map_or_else(String::new, |s| format!(" (asleep in {s})")),
        primitive.and_then(instead_of).unwrap_or(
            "Use the async equivalent (tokio::time::sleep, tokio::net, tokio::fs, an async \
             client) or move the call into tokio::task::spawn_blocking."
        )
    )
}

/// What to use instead of a known blocking call (its name as the finding gives it:
/// `std::thread::sleep`, `rayon::reduce`, `std::process::Command::output`), most specific
/// first.
fn instead_of(primitive: &str) -> Option<&'static str> {
    // Drop glue: dropping the value blocked, whatever its type's crate. (Not every method
    // named `drop` is a `Drop`: a database client's `Collection::drop` is a request.)
    if asyncprof_format::culprit::is_drop_glue(primitive) {
        return Some(
            "Dropping the value here runs its Drop, which blocks: drop it inside \
             tokio::task::spawn_blocking (move it into the closure), or close it with an async \
             method, awaited, before it goes out of scope.",
        );
    }
    // A log line written on the worker thread: a logging macro's call, or the event's way
    // to its writer (not every call into tracing is a log line: an `Instrumented` future's
    // poll, a span's `in_scope`).
    if primitive == "tracing::event!"
        || primitive == "log::log!"
        || [
            "tracing_core::event::",
            "tracing_core::dispatcher::",
            "tracing_subscriber::fmt::",
            "log::__private_api",
        ]
        .iter()
        .any(|c| primitive.starts_with(c))
    {
        return Some(
            "The log line was written to its destination on the worker thread (a pipe or \
             terminal read slowly, a file on a slow disk, or a writer's lock held by another \
             thread's write): write logs through tracing_appender::non_blocking (a writer \
             thread of its own; with .lossy(false) a full buffer waits too) and keep large \
             values out of log lines.",
        );
    }
    const ADVICE: &[(&[&str], &str)] = &[
        (
            &[
                "std::println!",
                "std::eprintln!",
                "std::io::stdio::_print",
                "std::io::stdio::_eprint",
            ],
            "println! (print!, eprintln!, dbg!) writes stdout (stderr) synchronously, under \
             its lock, on the worker thread: when that is a pipe read slowly (a container's log collector, \
             a terminal), the worker waits with it. Log through tracing with \
             tracing_appender::non_blocking, or write with tokio::io::stdout() (stderr()).",
        ),
        (
            &["std::io::Stdin", "std::io::stdio::Stdin"],
            "Reading standard input waits, on the worker thread, until the other end writes: \
             read it with tokio::io::stdin() (in a tokio::io::BufReader for lines), or on a \
             thread of its own that sends each line on a tokio channel.",
        ),
        (
            &["std::thread::sleep"],
            "Use tokio::time::sleep(..).await, which lets the worker run other tasks meanwhile.",
        ),
        (
            // Without debug info, std's inner join names the call.
            &["JoinHandle::join", "JoinInner::join"],
            "Run the work with tokio::task::spawn_blocking and .await its JoinHandle, or have \
             the thread send its result on a tokio::sync::oneshot and .await that.",
        ),
        (
            &[
                "std::process::",
                "Command::output",
                "Command::status",
                "Child::wait",
            ],
            "Use tokio::process::Command, whose output(), status() and wait() are awaited.",
        ),
        (
            &["rayon::", "rayon_core::"],
            "A rayon call waits for rayon's threads on the worker thread: hand the work to \
             rayon with rayon::spawn and .await its result on a tokio::sync::oneshot, or run \
             the call inside tokio::task::spawn_blocking.",
        ),
        (
            &["futures::executor::", "futures_executor::", "block_on"],
            "Do not block on a future inside the runtime: .await it.",
        ),
        (
            // A wait for another thread's first initialization of a lazily initialized
            // value (std's, once_cell's, lazy_static's).
            &[
                "std::sync::lazy_lock::",
                "std::sync::once_lock::",
                "::once::",
                "Once::call_once",
                "LazyLock",
                "OnceLock",
                "once_cell::",
                "lazy_static::",
            ],
            "The worker waited for another thread to initialize this lazily initialized \
             value (a LazyLock, OnceLock, once_cell or lazy_static whose initializer is slow): \
             initialize it before serving (LazyLock::force at start-up, or in \
             tokio::task::spawn_blocking), or use tokio::sync::OnceCell, whose get_or_init is \
             awaited.",
        ),
        (
            &[
                "std::sync::mpsc::",
                "crossbeam_channel::",
                "crossbeam::channel::",
                "flume::",
            ],
            "Use an async channel (tokio::sync::mpsc, or tokio::sync::oneshot for one reply) \
             and .await it, or move the wait into tokio::task::spawn_blocking.",
        ),
        (
            // std's file locks (`lock`, `lock_shared`), and fs2's and fs4's before them.
            &[
                "File::lock",
                "FileExt::lock_exclusive",
                "FileExt::lock_shared",
            ],
            "A file lock waits for whoever holds it, and tokio has none that is awaited: take \
             it (and do the work under it) inside tokio::task::spawn_blocking, or try it with \
             File::try_lock and retry after tokio::time::sleep(..).await.",
        ),
        (
            &["std::fs::"],
            "Use tokio::fs, or move the file work into tokio::task::spawn_blocking (one call \
             there for many small operations).",
        ),
        (
            &["std::net::", "std::os::unix::net::"],
            "Use tokio::net's sockets, whose reads, writes and connects are awaited.",
        ),
        (
            &["ureq::", "reqwest::blocking::", "attohttpc::", "minreq::"],
            "Use an async HTTP client (reqwest) and .await the request, or move the call into \
             tokio::task::spawn_blocking.",
        ),
        (
            &[
                "rusqlite::",
                "postgres::",
                "mysql::",
                "diesel::",
                "r2d2::",
                "redis::",
            ],
            "A synchronous database client blocks the worker for every query: move the call \
             into tokio::task::spawn_blocking, or use an async driver (sqlx, tokio-postgres, \
             redis's async connection).",
        ),
    ];
    ADVICE
        .iter()
        .find(|(names, _)| names.iter().any(|n| primitive.contains(n)))
        .map(|(_, advice)| *advice)
}

#[cfg(test)]
mod tests {
    use super::recommendation;

    /// Known truth: the calls a media service's handlers blocked in (a sleep, a child
    /// process's output, a thread's join, a rayon reduce, a sync channel's send, a file
    /// read) and an inventory service's file lock, each told the call that replaces it; an
    /// unknown call keeps the general advice.
    #[test]
    fn a_known_blocking_call_is_told_its_async_equivalent() {
        let advice = |p: &str| recommendation(Some(p), &[], Some("futex"), 25.0);
        for (call, want) in [
            ("std::thread::sleep", "tokio::time::sleep"),
            ("std::process::Command::output", "tokio::process::Command"),
            (
                "std::thread::JoinHandle::join",
                "spawn_blocking and .await its JoinHandle",
            ),
            (
                "std::thread::lifecycle::JoinInner::join",
                "spawn_blocking and .await its JoinHandle",
            ),
            ("rayon::reduce", "rayon::spawn"),
            ("std::sync::mpsc::send", "tokio::sync::mpsc"),
            ("crossbeam_channel::Receiver::recv", "tokio::sync::mpsc"),
            ("futures_executor::local_pool::block_on", ".await it"),
            ("std::fs::read", "tokio::fs"),
            ("std::fs::File::lock", "try_lock"),
            ("fs2::FileExt::lock_exclusive", "spawn_blocking"),
            ("std::fs::File::lock_shared", "try_lock"),
            ("std::net::TcpStream::connect", "tokio::net"),
            ("ureq::call", "async HTTP client"),
            ("rusqlite::Connection::execute", "spawn_blocking"),
            ("core::mem::drop::<app::RenderLog>", "Dropping the value"),
            (
                "core::ptr::drop_in_place::<rusqlite::Connection>",
                "Dropping the value",
            ),
            (
                "mongodb::sync::Collection::drop",
                "Use the async equivalent",
            ),
            ("tracing::event!", "The log line was written"),
            ("log::log!", "The log line was written"),
            (
                "tracing_subscriber::fmt::Layer::on_event",
                "The log line was written",
            ),
            // Not log lines: a future instrumented with a span, a span's closure.
            (
                "tracing::instrument::Instrumented::poll",
                "Use the async equivalent",
            ),
            ("tracing::span::Span::in_scope", "Use the async equivalent"),
            ("shop::catalog::fetch", "Use the async equivalent"),
            ("std::println!", "writes stdout (stderr) synchronously"),
            ("std::eprintln!", "writes stdout (stderr) synchronously"),
            (
                "std::sync::lazy_lock::deref",
                "initialize it before serving",
            ),
            (
                "std::sync::OnceLock::get_or_init",
                "initialize it before serving",
            ),
            ("once_cell::sync::Lazy::force", "tokio::sync::OnceCell"),
            (
                "std::sync::poison::once::Once::call_once",
                "tokio::sync::OnceCell",
            ),
            ("std::io::Stdin::read_line", "tokio::io::stdin()"),
            // `stdin.lock().lines()`'s `next`, as the recorder names it.
            ("std::io::Stdin::lines", "tokio::io::stdin()"),
        ] {
            let text = advice(call);
            assert!(text.contains(want), "{call}: {text}");
            assert!(
                text.starts_with(&format!(
                    "`{call}` blocked the worker thread for up to 25.0 ms"
                )),
                "{text}"
            );
        }
        assert!(!advice("std::fs::File::lock").contains("Use tokio::fs"));
        // Not every call of a crate that has file locks is one, nor every lock.
        assert!(!advice("fs2::FileExt::allocate").contains("file lock"));
        assert!(!advice("parking_lot::RawRwLock::lock_exclusive_slow").contains("file lock"));
        let unknown = advice("acme::Client::fetch");
        assert!(unknown.contains("Use the async equivalent"), "{unknown}");
        assert!(recommendation(None, &[], None, 12.0).starts_with("this call blocked"));
    }
}
