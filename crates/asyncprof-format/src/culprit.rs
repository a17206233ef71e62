//! Reading a stall's stack: which frame is the user's own code, and which call it made.

use crate::Frame;

/// Function-name prefixes of code that is not the user's: the standard library, the runtime,
/// common executors, the unwinder and asyncprof itself.
const FOREIGN_PREFIXES: &[&str] = &[
    "std::",
    "core::",
    "alloc::",
    "tokio::",
    "futures",
    "backtrace::",
    // asyncprof's own crates, by their exact paths: a user's crate may start with the same
    // word (asyncprof's own pipelines crate does).
    "asyncprof::",
    "asyncprof_sampler::",
    "asyncprof_format::",
    "asyncprof_report::",
    "<asyncprof::",
    "libc::",
    "__",
    "<std::",
    "<core::",
    "<alloc::",
    "<tokio::",
    "<futures",
];

/// True when `frame` is in the user's own code: it has a Rust source file, and neither the
/// file (the toolchain's sources, downloaded crates, the C library) nor the function (std,
/// core, alloc, tokio, futures, libc, asyncprof) belongs to someone else.
pub fn is_user_frame(frame: &Frame) -> bool {
    let Some(file) = frame.file.as_deref() else {
        return false;
    };
    let f = frame.function.as_str();
    is_user_file(file) && !FOREIGN_PREFIXES.iter().any(|p| f.starts_with(p))
}

/// True when `file` is a Rust source file of the user's own code: not the toolchain's
/// sources, a downloaded crate or the C library.
pub fn is_user_file(file: &str) -> bool {
    // Downloaded crates live under cargo's home, wherever CARGO_HOME points (a CI cache, a
    // container's /usr/local/cargo): `<home>/registry/src/<index>/<crate>-<version>/` and
    // `<home>/git/checkouts/<repo>-<hash>/<rev>/`.
    let foreign_file = !file.ends_with(".rs")
        || is_toolchain_file(file)
        || file.contains("/registry/src/")
        || file.contains("/git/checkouts/")
        || file.contains("/.cargo/registry/")
        || file.contains("/.cargo/git/");
    !foreign_file
}

/// True when `file` is a source of the toolchain's own libraries (std, core, alloc, and the
/// standard library's dependencies), as their debug info names it.
pub fn is_toolchain_file(file: &str) -> bool {
    file.starts_with("/rustc/")
        // The standard library's own dependencies (hashbrown, …), as the toolchain names them.
        || file.starts_with("/rust/deps/")
        || file.contains("/rustlib/")
        || file.starts_with("library/")
}

/// Whether two frames are at one line of code: its file and line, or, without a file (a
/// build without debug info), its function.
pub fn same_line(a: &Frame, b: &Frame) -> bool {
    a.file == b.file && a.line == b.line && (a.file.is_some() || a.function == b.function)
}

/// The crate of the profiled program's executable (its file's name, `-` read as `_`), set by
/// the recorder as it starts: see [`primitive_and_culprit`].
static OWN_CRATE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Name the crate of the program being profiled (its executable's name): a frame with no
/// source file whose function is in that crate is the user's code (a build without debug
/// info). The first call wins.
pub fn set_own_crate(executable_name: &str) {
    let _ = OWN_CRATE.set(crate_of_executable(executable_name));
}

/// The crate an executable's file name names: `-` read as `_`, and the hash cargo puts after
/// the names of test and bench executables (`it-0123456789abcdef`) left off. An executable
/// renamed after its build names no crate of the program.
fn crate_of_executable(name: &str) -> String {
    let name = match name.rsplit_once('-') {
        Some((stem, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            stem
        }
        _ => name,
    };
    name.replace('-', "_")
}

/// Whether `function` (a demangled path, or a `<Type as Trait>` form) is in crate `krate`.
pub(crate) fn in_crate(function: &str, krate: &str) -> bool {
    let mut f = function.trim_start_matches(['<', '&']);
    for prefix in ["mut ", "dyn "] {
        f = f.strip_prefix(prefix).unwrap_or(f);
    }
    !krate.is_empty()
        && f.strip_prefix(krate)
            .is_some_and(|rest| rest.starts_with("::"))
}

/// The first frame of the user's code (the culprit) and the call it made (the blocking
/// primitive), innermost first. The primitive is `None` when the user's own code was running
/// (a CPU-bound loop).
///
/// A program built without debug info (cargo's release profile strips it unless `debug` is
/// set) has frames with names but no files: then the first frame without a file whose
/// function is in the program's own crate ([`set_own_crate`]) is the culprit, a function with
/// no line.
pub fn primitive_and_culprit(frames: &[Frame]) -> (Option<Frame>, Option<Frame>) {
    primitive_and_culprit_in(frames, own_crate())
}

/// The program's crate, once the recorder named it ([`set_own_crate`]).
fn own_crate() -> Option<&'static str> {
    OWN_CRATE.get().map(String::as_str)
}

/// [`primitive_and_culprit`] with the program's crate given (`None`: not known).
pub fn primitive_and_culprit_in(
    frames: &[Frame],
    own_crate: Option<&str>,
) -> (Option<Frame>, Option<Frame>) {
    let Some(at) = culprit_at(frames, own_crate) else {
        return (None, None);
    };
    let culprit = frames[at].clone();
    let primitive = call_of(frames, at).and_then(|f| {
        let full = qualified(f);
        // An operator inlined into the line (`wrapping_mul`, a range's `next`) is the line's
        // own computation, not a call it made: by its bare name's path, or by the trait of a
        // full name (`<u64 as core::ops::arith::AddAssign>::add_assign`).
        if is_an_operation(&full) {
            return None;
        }
        let name = match macro_call(f) {
            Some(m) => m.to_string(),
            None => primitive_name(&full),
        };
        let mut p = Frame::new(name, f.file.clone(), f.line);
        for other in &f.same_code {
            let other = primitive_name(other);
            if other != p.function && !p.same_code.contains(&other) {
                p.same_code.push(other);
            }
        }
        Some(p)
    });
    (primitive, Some(culprit))
}

/// Whether a call's name is one of core's operators and integer methods, which the compiler
/// inlines into the line that uses them (`core::num::uint_macros::wrapping_mul`,
/// `core::ops::arith::add_assign`, `core::cmp::max`, a range's or a slice iterator's `next`,
/// an index): the line's own computation, not a call it made. Not `core::slice::sort` and
/// the like, nor `core::hint::spin_loop` (a spin-wait says what it is), nor drop glue.
pub fn is_an_operation(name: &str) -> bool {
    const OPERATIONS: &[&str] = &[
        "core::num::",
        "core::ops::arith::",
        "core::ops::bit::",
        "core::ops::range::",
        "core::ops::index::",
        "core::cmp::",
        "core::intrinsics::",
        "core::iter::range::",
        "core::slice::iter::",
        "core::slice::index::",
    ];
    let name = name.trim_start_matches('<');
    // `<T as Trait>::method`: the trait says what it is (not `Drop`, `Deref` or the `Fn`
    // traits, which are not in the list: a type's own `Drop` is a call of its own).
    let of_trait = name
        .split_once(" as ")
        .map(|(_, t)| t.trim_start_matches('<'));
    OPERATIONS
        .iter()
        .any(|p| name.starts_with(p) || of_trait.is_some_and(|t| t.starts_with(p)))
}

/// A logging macro's expansion, by the file its code comes from: an event of `tracing`'s
/// macros (`info!`, `warn!`, ...: a closure of `tracing/src/macros.rs` whose name, with full
/// debug info, is the user's function's), or `log`'s (its `__private_api`). The crate is the
/// directory `src/` is in, without its version (`tracing-0.1.41` from the registry, `tracing`
/// in a git checkout; `tracing-subscriber-0.3.20` is another crate).
pub(crate) fn macro_call(frame: &Frame) -> Option<&'static str> {
    let file = frame.file.as_deref()?;
    let (dir, path) = file.rsplit_once("/src/")?;
    match (without_version(dir.rsplit('/').next()?), path) {
        ("tracing", "macros.rs") => Some("tracing::event!"),
        ("log", "__private_api.rs") => Some("log::log!"),
        _ => None,
    }
}

/// A crate's source directory name without its version, which begins at the first `-`
/// followed by a digit: `tracing-subscriber-0.3.20` → `tracing-subscriber`,
/// `tracing-0.1.42-alpha.1` → `tracing`; a directory without one (a git checkout's crate
/// directory) as it is.
fn without_version(dir: &str) -> &str {
    dir.char_indices()
        .find(|&(i, c)| c == '-' && dir[i + 1..].starts_with(|d: char| d.is_ascii_digit()))
        .map_or(dir, |(i, _)| &dir[..i])
}

/// Whether `function` is drop glue (`core::ptr::drop_in_place<T>`, `core::mem::drop<T>`,
/// qualified or bare, with or without its type argument), whose type argument names the type
/// dropped. A type's own `Drop::drop` is not: it names its type in its path.
pub fn is_drop_glue(function: &str) -> bool {
    let path = without_type_arguments(function);
    [
        "core::ptr::drop_in_place",
        "core::mem::drop",
        "drop_in_place",
        "drop",
    ]
    .contains(&path.trim_end_matches("::"))
}

/// The call the user's code made, as the stack names it (not renamed to its public path): the
/// frame inward of the first frame of the user's code, innermost first.
pub fn call_frame(frames: &[Frame]) -> Option<&Frame> {
    call_of(frames, culprit_at(frames, own_crate())?)
}

/// The code that called the culprit's function in `frames`, when that function is a plain
/// one (a helper `fn` doing the blocking call or the computation, a hand-written
/// `Future::poll`): of the user's code outward of the culprit, inside the same task (inward
/// of tokio's poll of it), the first async body (`{async_fn#0}`, `{async_block#0}`,
/// `{async_closure#0}`), where the call can be moved into `spawn_blocking` or an async
/// equivalent awaited; without one, the first closure (a response body's stream closure,
/// polled by the server after the handler returned; with full debug info, where every async
/// body is named `{{closure}}` as sync closures are, the first of those, which may be a
/// closure inside a helper). `None` when the stack's culprit is not `culprit` (the line the
/// stall was recorded at), when the culprit is an async body or a closure itself, or when
/// neither is found (a helper called only from plain functions).
pub fn caller<'f>(frames: &'f [Frame], culprit: &Frame) -> Option<&'f Frame> {
    let at = culprit_at(frames, own_crate())?;
    let found = &frames[at];
    if found.file != culprit.file || found.line != culprit.line {
        return None;
    }
    if !matches!(body_kind(&found.function), Body::Plain) {
        return None;
    }
    let mut outward = frames[at + 1..]
        .iter()
        .take_while(|f| !polls_for_tokio(f))
        .filter(|f| is_user_frame(f));
    outward
        .clone()
        .find(|f| matches!(body_kind(&f.function), Body::Async))
        .or_else(|| outward.find(|f| matches!(body_kind(&f.function), Body::Closure)))
}

/// At most this many plain functions between a culprit and its [`caller`] are named.
const MAX_CHAIN: usize = 2;

/// The way from the culprit's function to its [`caller`] in `frames`: the plain functions of
/// the user's code between them (innermost first, a line given once), then the caller. A
/// helper's direct caller can be a plain function that returns a future (a `Service::call`,
/// a builder): the line to change is there, awaited from the async body. Past
/// two (`MAX_CHAIN`) plain functions, the innermost and the outermost are kept (the helper's
/// caller, and the function the async body called) and `None` stands for those between.
/// Empty when there is no caller.
pub fn caller_chain<'f>(frames: &'f [Frame], culprit: &Frame) -> Vec<Option<&'f Frame>> {
    let Some(end) = caller(frames, culprit) else {
        return Vec::new();
    };
    let (Some(at), Some(end_at)) = (
        culprit_at(frames, own_crate()),
        frames.iter().position(|f| std::ptr::eq(f, end)),
    ) else {
        return vec![Some(end)];
    };
    let mut chain: Vec<&Frame> = Vec::new();
    for f in frames.get(at + 1..end_at).unwrap_or(&[]) {
        let same_line = |g: &&Frame| g.file == f.file && g.line == f.line;
        if is_user_frame(f)
            && matches!(body_kind(&f.function), Body::Plain)
            && !same_line(&&frames[at])
            && !same_line(&end)
            && !chain.iter().any(same_line)
        {
            chain.push(f);
        }
    }
    let mut way: Vec<Option<&Frame>> = match chain.len() {
        n if n > MAX_CHAIN => vec![Some(chain[0]), None, Some(chain[n - 1])],
        _ => chain.into_iter().map(Some).collect(),
    };
    way.push(Some(end));
    way
}

/// What a function's name says it is.
pub(crate) enum Body {
    /// An async fn's, block's or closure's body.
    Async,
    /// A closure, or an async body named as one (`{{closure}}`, `{closure#0}`).
    Closure,
    /// A named function.
    Plain,
}

/// A function's last path segment without its type arguments, `{..}` segments kept
/// (`reduce<Map<..>, h::{closure_env#5}>` → `reduce`, `handle::{async_fn#0}` →
/// `{async_fn#0}`); [`last_segment`] skips those to the function around.
pub(crate) fn innermost_segment(function: &str) -> String {
    let f = without_type_arguments(function);
    f.rsplit("::").next().unwrap_or(&f).to_string()
}

/// What `function` is, by its last segment without type arguments.
pub(crate) fn body_kind(function: &str) -> Body {
    let last = innermost_segment(function);
    if ["{async_fn", "{async_block", "{async_closure"]
        .iter()
        .any(|p| last.starts_with(p))
    {
        Body::Async
    } else if last.starts_with("{{closure") || last.starts_with("{closure") {
        Body::Closure
    } else {
        Body::Plain
    }
}

/// Where the first frame of the user's code is: by its file, or, with none so found, the
/// first frame without a file in the program's crate (see [`primitive_and_culprit`]) inward
/// of tokio's poll of a task or of a `block_on` future: outward of it is the code that runs
/// the runtime (`main` calling `block_on`), not the poll's. A poll's code the compiler inlined
/// into tokio's has no frame of its own without debug info: then there is none.
fn culprit_at(frames: &[Frame], own_crate: Option<&str>) -> Option<usize> {
    frames.iter().position(is_user_frame).or_else(|| {
        let own = own_crate?;
        // The outermost: tokio's task code inward of the user's (a `JoinHandle`'s poll, a
        // spawn binding its task) is no boundary.
        let runs_the_poll = frames
            .iter()
            .rposition(polls_for_tokio)
            .unwrap_or(frames.len());
        frames[..runs_the_poll]
            .iter()
            .position(|f| f.file.is_none() && in_crate(&f.function, own))
    })
}

/// Whether `frame` is tokio's poll of a task or its `block_on` of a future (the outermost
/// such frame is the task harness's or the runtime's): by its file, or without one by its full
/// name.
fn polls_for_tokio(frame: &Frame) -> bool {
    match last_segment(&frame.function).as_str() {
        "block_on" => in_tokio(frame, "/src/runtime/", "tokio::runtime::"),
        "poll" => in_tokio(frame, "/src/runtime/task/", "tokio::runtime::task::"),
        _ => false,
    }
}

fn call_of(frames: &[Frame], culprit_at: usize) -> Option<&Frame> {
    frames.get(culprit_at.checked_sub(1)?)
}

/// A frame's function with its crate in front when the debug info gave a bare name (crates
/// built with `debug = "line-tables-only"` name functions without their path): `call` in
/// `~/.cargo/registry/src/*/ureq-3.5.1/src/...` becomes `ureq::call`, `lock` in std's
/// `sync/poison/mutex.rs` `std::sync::poison::mutex::lock`. Other names stay as they are.
pub fn qualified(frame: &Frame) -> String {
    if strip_generics(&frame.function).contains("::") {
        return frame.function.clone();
    }
    let crate_dir = frame.file.as_deref().and_then(|file| {
        let rest = &file[file.find("/registry/src/")? + "/registry/src/".len()..];
        // index.crates.io-<hash>/<crate>-<version>/src/...
        let dir = rest.split('/').nth(1)?;
        Some(without_version(dir).replace('-', "_"))
    });
    // The standard library: /rustc/<hash>/library/std/src/sync/poison/mutex.rs names
    // std::sync::poison::mutex.
    let std_module = || {
        let file = frame.file.as_deref()?;
        let rest = &file[file.find("/library/")? + "/library/".len()..];
        let (krate, path) = rest.split_once("/src/")?;
        let module = path.trim_end_matches(".rs").trim_end_matches("/mod");
        Some(format!("{krate}::{}", module.replace('/', "::")))
    };
    // lock_api (parking_lot's locks' generic front) names the lock by its file: `lock` in
    // `mutex.rs` is `Mutex::lock`, as full debug info names it.
    let lock_type = |krate: &str| {
        let stem = frame
            .file
            .as_deref()?
            .rsplit('/')
            .next()?
            .strip_suffix(".rs")?;
        let ty = match (krate, stem) {
            ("lock_api", "mutex") => "mutex::Mutex",
            ("lock_api", "rwlock") => "rwlock::RwLock",
            ("lock_api", "remutex") => "remutex::ReentrantMutex",
            _ => return None,
        };
        Some(format!("{krate}::{ty}"))
    };
    match crate_dir
        .map(|k| lock_type(&k).unwrap_or(k))
        .or_else(std_module)
    {
        Some(prefix) => format!("{prefix}::{}", frame.function),
        None => frame.function.clone(),
    }
}

/// The public name of a blocking call from its implementation's symbol: the path a user
/// writes (`std::sync::Mutex::lock`), not the one inside std (`std::sync::poison::mutex::
/// Mutex<T>::lock`).
///
/// Functions with identical machine code may be merged by the compiler, and the stack then
/// names the twin: a `TcpStream::read` can show as `UdpSocket::recv`. The frame's
/// `same_code` keeps the other names (named here too, in [`primitive_and_culprit`]), and the
/// report picks the one the user's line calls where it can read the source.
pub fn primitive_name(function: &str) -> String {
    let f = function.trim_end_matches("::{{closure}}");
    // The known calls are told by the path, not by a type argument: `read_line<BufReader<
    // TcpStream>>` is not `TcpStream::read`.
    let path = without_type_arguments(f);
    // The lines of standard input (`stdin.lock().lines()`): told by the type argument.
    if path.contains("std::io::Lines") && f.contains("std::io::stdio::Stdin") {
        return "std::io::Stdin::lines".to_string();
    }
    // parking_lot's locks (through lock_api, their generic front) have std's method names:
    // named as they are, not as std's.
    if [
        "lock_api::",
        "parking_lot::",
        "<lock_api::",
        "<parking_lot::",
    ]
    .iter()
    .any(|p| path.starts_with(p))
    {
        return strip_generics(f);
    }
    // Drop glue: the value dropped (its type argument) is what the user's line names, and
    // its `Drop` is what blocks (`core::ptr::drop_in_place::<app::Conn>`).
    if path.contains("::") && is_drop_glue(&path) {
        return match f.find('<') {
            Some(at) if !f[..at].ends_with("::") => format!("{}::{}", &f[..at], &f[at..]),
            _ => f.to_string(),
        };
    }
    let known: &[(&[&str], &str)] = &[
        (&["std::thread", "sleep"], "std::thread::sleep"),
        // The print macros' function (`println!` expands to a call of it).
        (&["std::io::stdio::_print"], "std::println!"),
        (&["std::io::stdio::_eprint"], "std::eprintln!"),
        // `log`'s macros before its `__private_api` module (see `macro_call`).
        (&["log::__private_api_log"], "log::log!"),
        (&["Mutex", "::lock"], "std::sync::Mutex::lock"),
        (&["std::sync::", "mutex::lock"], "std::sync::Mutex::lock"),
        (&["std::sync::", "rwlock::read"], "std::sync::RwLock::read"),
        (
            &["std::sync::", "rwlock::write"],
            "std::sync::RwLock::write",
        ),
        (&["RwLock", "::read"], "std::sync::RwLock::read"),
        (&["RwLock", "::write"], "std::sync::RwLock::write"),
        (&["Condvar", "::wait"], "std::sync::Condvar::wait"),
        (
            &["std::sync::", "condvar::wait"],
            "std::sync::Condvar::wait",
        ),
        (
            &["std::sync::", "barrier::wait"],
            "std::sync::Barrier::wait",
        ),
        (&["Barrier", "::wait"], "std::sync::Barrier::wait"),
        (
            &["futures_executor", "block_on"],
            "futures::executor::block_on",
        ),
        (&["std::thread", "::park"], "std::thread::park"),
        (&["JoinHandle", "::join"], "std::thread::JoinHandle::join"),
        (
            &["std::thread::", "join_handle::join"],
            "std::thread::JoinHandle::join",
        ),
        (&["TcpStream", "Read", "read"], "std::net::TcpStream::read"),
        (&["TcpStream", "connect"], "std::net::TcpStream::connect"),
        (
            &["TcpStream", "Write", "write"],
            "std::net::TcpStream::write",
        ),
        (&["UdpSocket", "recv"], "std::net::UdpSocket::recv"),
        (&["std::fs::read_to_string"], "std::fs::read_to_string"),
        (&["std::fs::read"], "std::fs::read"),
        (&["std::fs::write"], "std::fs::write"),
        (&["File", "sync_all"], "std::fs::File::sync_all"),
        (&["mpsc", "recv"], "std::sync::mpsc::Receiver::recv"),
        // Standard input, on std's internal path (`std::io::stdio::Stdin::read_line`, or a
        // bare `read_line` in std's stdio.rs: only standard input reads there).
        (
            &["std::io::stdio::", "read_line"],
            "std::io::Stdin::read_line",
        ),
        (
            &["std::io::stdio::", "read_to_string"],
            "std::io::Stdin::read_to_string",
        ),
        // std::io's trait methods, inlined into the caller and named by their file (io/mod.rs).
        (&["std::io::read_line"], "std::io::BufRead::read_line"),
        (&["std::io::read_until"], "std::io::BufRead::read_until"),
        (&["std::io::read_exact"], "std::io::Read::read_exact"),
        (&["std::io::write_all"], "std::io::Write::write_all"),
    ];
    for (needles, name) in known {
        if needles.iter().all(|n| path.contains(n)) {
            // The needles name a method by its start: std's longer sibling (`read_dir` beside
            // `read`, `wait_timeout` beside `wait`) keeps its own name on the public path.
            // (Another crate's type the needles match keeps the known name: its owner is not
            // std's.) An inner function's method is the one around it, as a closure's is.
            let std_path = ["std::", "<std::", "<&std::"]
                .iter()
                .any(|p| path.starts_with(p));
            let method = last_segment(path.trim_end_matches("::inner"));
            return match name.rsplit_once("::") {
                Some((owner, known))
                    if std_path && method != known && method.starts_with(known) =>
                {
                    format!("{owner}::{method}")
                }
                _ => (*name).to_string(),
            };
        }
    }
    strip_generics(f)
}

/// True when a stack shows a thread of tokio's multi-thread scheduler in its worker loop
/// between two polls: inward of the loop (`Context::run`) there is no task being run
/// (`Context::run_task`, tokio's task harness polling a future) and none of the user's code,
/// only the scheduler's own work (parking, the I/O and timer drivers, waking other workers,
/// maintenance). No poll held the worker when such a stack was taken.
///
/// False whenever it cannot tell: no worker loop in the stack (a current-thread runtime, a
/// `block_on`, a stack cut short), or anything inward of it that could be a poll.
///
/// Names come in two forms: full paths (`tokio::runtime::scheduler::multi_thread::worker::
/// Context::run`), and bare names (`run`) where tokio was built with `debug =
/// "line-tables-only"`; the file tells those apart.
pub fn in_scheduler_between_polls(frames: &[Frame]) -> bool {
    // Innermost first: the first `run` of the worker file is the loop; the one outward of it
    // is the thread's entry (`worker::run`), which tokio runs as a blocking task.
    let Some(worker_loop) = frames
        .iter()
        .position(|f| tokio_frame(f, WORKER_FILE, WORKER_MODULE, &["run"]))
    else {
        return false;
    };
    !frames[..worker_loop].iter().any(|f| {
        is_user_frame(f)
            || tokio_frame(f, WORKER_FILE, WORKER_MODULE, &["run_task"])
            || tokio_frame(f, "/runtime/task/raw.rs", "::task::raw::", &["poll"])
            || tokio_frame(f, "/runtime/task/core.rs", "::task::core::", &["poll"])
            || tokio_frame(
                f,
                "/runtime/task/harness.rs",
                "::task::harness::",
                &["poll", "poll_inner", "poll_future"],
            )
    })
}

/// Whether the stack passes through tokio's `block_in_place`: on a multi-thread runtime the
/// thread gave its worker to another thread there (or, nested, holds none), so it holds up no
/// worker however long it stays.
pub fn in_block_in_place(frames: &[Frame]) -> bool {
    frames.iter().any(|f| {
        tokio_frame(
            f,
            "/task/blocking.rs",
            "::task::blocking::",
            &["block_in_place"],
        ) || tokio_frame(f, WORKER_FILE, WORKER_MODULE, &["block_in_place"])
            || tokio_frame(
                f,
                "/runtime/scheduler/block_in_place.rs",
                "::scheduler::block_in_place::",
                &["block_in_place"],
            )
    })
}

/// Whether the stack is a thread of tokio's blocking pool that is not running a worker's loop:
/// idle in the pool, or running a `spawn_blocking` job. A worker's thread passes through both
/// (tokio runs the worker as a blocking task); a thread whose `block_in_place` returned
/// without its worker (another thread took it) goes back to the pool so, without a park.
pub fn in_blocking_pool_outside_a_worker(frames: &[Frame]) -> bool {
    frames.iter().any(|f| {
        tokio_frame(
            f,
            "/runtime/blocking/pool.rs",
            "::blocking::pool::",
            &["run"],
        )
    }) && !frames
        .iter()
        .any(|f| tokio_frame(f, WORKER_FILE, WORKER_MODULE, &["run"]))
}

/// Whether the stack shows a thread that holds no tokio worker: inside `block_in_place`
/// ([`in_block_in_place`]) or in the blocking pool outside a worker's loop
/// ([`in_blocking_pool_outside_a_worker`]).
pub fn holds_no_worker(frames: &[Frame]) -> bool {
    in_block_in_place(frames) || in_blocking_pool_outside_a_worker(frames)
}

/// Whether the stack shows a thread outside every tokio runtime, running no poll of any: a
/// current-thread runtime's `block_on` thread after `block_on` returned (its busy period,
/// begun at its last unpark, ends at a park that does not come), or any thread that once
/// drove a runtime and now runs code of its own.
///
/// True only when the stack tells: it reaches the thread's start (std's thread entry, or
/// `lang_start` on the main thread), every Rust frame inward of that has its source file (the
/// debug info names inlined functions, so a runtime inlined into the caller of `block_on` still
/// shows), and none is tokio's runtime (its files under `src/runtime/`, or without a file,
/// `tokio::runtime::` names). Frames without a name are code without symbols in the program's
/// debug info (the vDSO's clock, a C library without its symbol table), which is not tokio.
/// False whenever it cannot tell: a stack cut short, a build without debug info, a thread
/// started by foreign code.
pub fn outside_any_runtime(frames: &[Frame]) -> bool {
    let Some(start) = frames.iter().rposition(is_thread_start) else {
        return false;
    };
    frames[..=start].iter().all(|f| {
        // A C function (the system call's wrapper, a lock wait) has no file and no path.
        let rust_without_file = f.file.is_none() && f.function.contains("::");
        !(rust_without_file || is_tokio_runtime(f))
    })
}

/// Whether any frame of the stack is a tokio scheduler's or task's (files under
/// `src/runtime/scheduler/` or `src/runtime/task/`, or without a file, such names): the thread
/// was driving a runtime then, inside a `block_on` or a worker's loop. A runtime's drop or
/// its blocking pool alone is not.
pub fn shows_a_runtime(frames: &[Frame]) -> bool {
    frames.iter().any(|f| {
        in_tokio(f, "/src/runtime/scheduler/", "tokio::runtime::scheduler::")
            || in_tokio(f, "/src/runtime/task/", "tokio::runtime::task::")
    })
}

/// Whether any frame of the stack is a current-thread runtime's scheduler (its `block_on`
/// loop, its tasks' runs, its park): the thread was inside a current-thread `block_on`.
pub fn in_current_thread_block_on(frames: &[Frame]) -> bool {
    frames.iter().any(|f| {
        in_tokio(
            f,
            "/src/runtime/scheduler/current_thread/",
            "tokio::runtime::scheduler::current_thread::",
        )
    })
}

/// Whether the stack reaches the thread's start (std's thread entry, or `lang_start` on the
/// main thread): it was not cut short.
pub fn reaches_thread_start(frames: &[Frame]) -> bool {
    frames.iter().any(is_thread_start)
}

/// std's entry of a thread it started, or of the main thread (`lang_start`), by name.
fn is_thread_start(frame: &Frame) -> bool {
    let function = strip_generics(&frame.function);
    function.ends_with("thread_start") || function.contains("lang_start")
}

/// A frame of tokio's runtime (`src/runtime/`).
fn is_tokio_runtime(frame: &Frame) -> bool {
    in_tokio(frame, "/src/runtime/", "tokio::runtime::")
}

/// Whether `frame` is tokio's code under `dir` of its sources: by its file when it has one,
/// else by its full name, which then starts with `module`.
pub(crate) fn in_tokio(frame: &Frame, dir: &str, module: &str) -> bool {
    match frame.file.as_deref() {
        Some(f) => f.contains("tokio") && f.contains(dir),
        None => frame.function.trim_start_matches('<').starts_with(module),
    }
}

const WORKER_FILE: &str = "/runtime/scheduler/multi_thread/worker.rs";
const WORKER_MODULE: &str = "::scheduler::multi_thread::worker::";

/// Whether `frame` is tokio's function named one of `names` in `file` (a path's end): by its
/// file when the debug info has one, else by its full name, which must then be in `module`.
/// Closures count as the function they are in.
fn tokio_frame(frame: &Frame, file: &str, module: &str, names: &[&str]) -> bool {
    let function = strip_generics(&frame.function);
    let Some(name) = function
        .rsplit("::")
        .find(|s| !(s.starts_with("{{closure") || s.starts_with("{closure")))
    else {
        return false;
    };
    if !names.contains(&name) {
        return false;
    }
    match frame.file.as_deref() {
        Some(f) => f.ends_with(file) && f.contains("tokio"),
        None => function.starts_with("tokio::") && function.contains(module),
    }
}

/// `a::B<T>::c` → `a::B::c`; `<a::B as c::D>::e` and `<&a::B as c::D>::e` → `a::B::e`;
/// `<a::B>::c` (an inherent method) → `a::B::c`.
fn strip_generics(f: &str) -> String {
    // A qualified path: keep the type (without a reference), drop the trait.
    let f = match f.strip_prefix('<') {
        Some(_) => {
            let close = matching_close(f).unwrap_or(f.len());
            let ty_end = top_level_as(f).filter(|&a| a < close).unwrap_or(close);
            let ty = f[1..ty_end]
                .trim_start_matches('&')
                .trim_start_matches("mut ");
            format!("{ty}{}", f.get(close + 1..).unwrap_or(""))
        }
        None => f.to_string(),
    };
    without_type_arguments(&f)
}

/// A function's last path segment without its type arguments, the method a caller's line
/// names (`<std::net::tcp::TcpStream as std::io::Read>::read` → `read`,
/// `std::io::read_line<BufReader<TcpStream>>` → `read_line`); a closure's is the one around
/// it (`Receiver::recv_timeout::{closure#0}` → `recv_timeout`).
pub fn last_segment(function: &str) -> String {
    let path = without_type_arguments(function);
    path.rsplit("::")
        .find(|s| !s.starts_with('{'))
        .unwrap_or(&path)
        .to_string()
}

/// `f` without the type arguments that follow a name (`a::B<T>::c` → `a::B::c`), its
/// qualified path kept (`<a::B as c::D>::e` stays).
pub fn without_type_arguments(f: &str) -> String {
    let mut out = String::with_capacity(f.len());
    let mut depth = 0usize;
    // The last character kept, and the last one read (an arrow's `-`).
    let mut prev = ' ';
    let mut last = ' ';
    for c in f.chars() {
        // Type arguments follow a name, a closure's or async body's `}` or a turbofish `::`.
        let opens = prev.is_alphanumeric() || matches!(prev, '_' | '}' | ':');
        match c {
            '<' if depth > 0 || opens => depth += 1,
            // `fn() -> T` inside type arguments: the arrow closes nothing.
            '>' if depth > 0 && last != '-' => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
        if depth == 0 && c != '>' {
            prev = c;
        }
        last = c;
    }
    // A turbofish's `::` left before its arguments (`read_until::<T>` → `read_until`).
    out.replace("::::", "::").trim_end_matches("::").to_string()
}

/// The index of the ` as ` inside the `<` at the start of `f`, not inside a type nested in it.
fn top_level_as(f: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in f.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth = depth.saturating_sub(1),
            ' ' if depth == 1 && f[i..].starts_with(" as ") => return Some(i),
            _ => {}
        }
    }
    None
}

/// The index of the `>` that closes the `<` at the start of `f`.
fn matching_close(f: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in f.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fr(function: &str, file: Option<&str>, line: u32) -> Frame {
        Frame::new(function, file.map(str::to_string), Some(line))
    }

    /// Known truth: a gateway whose handlers reach `std::thread::sleep` through a helper
    /// `fn slow` (line 12) from a `tokio::select!` branch (line 97); a hand-written
    /// `Future::poll` spinning at line 59, awaited at line 153; a sleep straight in an async
    /// fn, which has no caller to name.
    #[test]
    fn a_plain_function_s_stall_names_the_code_that_called_it() {
        let tokio = Some("/r/registry/src/i/tokio-1.54.1/src/runtime/task/raw.rs");
        let select = [
            fr("clock_nanosleep", None, 0),
            fr(
                "std::thread::sleep",
                Some("/rustc/x/library/std/src/thread/mod.rs"),
                1,
            ),
            fr("slow", Some("src/main.rs"), 12),
            fr(
                "{async_block#0}<gateway::handle::{async_fn#0}::{closure_env#0}>",
                Some("src/main.rs"),
                97,
            ),
            fr(
                "poll<(), ..>",
                Some("/r/registry/src/i/tokio-1.54.1/src/future/poll_fn.rs"),
                58,
            ),
            fr("{async_fn#0}", Some("src/main.rs"), 93),
            fr("poll", tokio, 1),
        ];
        let branch = caller(&select, &select[2]).expect("the select branch");
        assert_eq!(
            (branch.line, branch.function.as_str()),
            (Some(97), select[3].function.as_str())
        );
        let future = [
            fr(
                "<gateway::Deadline as core::future::future::Future>::poll",
                Some("src/main.rs"),
                59,
            ),
            fr("gateway::handle::{async_fn#0}", Some("src/main.rs"), 153),
            fr("poll", tokio, 1),
        ];
        assert_eq!(caller(&future, &future[0]).and_then(|f| f.line), Some(153));
        // A stack whose culprit is another line than the stall's: none.
        assert_eq!(caller(&future, &select[2]), None);
        let inline = [
            fr("clock_nanosleep", None, 0),
            fr(
                "std::thread::sleep",
                Some("/rustc/x/library/std/src/thread/mod.rs"),
                1,
            ),
            fr("gateway::handle::{async_fn#0}", Some("src/main.rs"), 40),
            fr("poll", tokio, 1),
        ];
        assert_eq!(caller(&inline, &inline[2]), None);
        // A helper called only from plain code (a thread's body): no async caller.
        let threaded = [
            fr("slow", Some("src/main.rs"), 12),
            fr("gateway::worker", Some("src/main.rs"), 200),
            fr(
                "std::sys::thread::start",
                Some("/rustc/x/library/std/src/sys/thread.rs"),
                1,
            ),
        ];
        assert_eq!(caller(&threaded, &threaded[0]), None);
        // Names of mangled symbols (full debug info): a sync closure and an async body are
        // both `{{closure}}`; the first one outward is the caller, whichever it is.
        let legacy = [
            fr("slow", Some("src/main.rs"), 12),
            fr("gateway::sum::{{closure}}", Some("src/main.rs"), 30),
            fr("gateway::handle::{{closure}}", Some("src/main.rs"), 97),
            fr("poll", tokio, 1),
        ];
        assert_eq!(caller(&legacy, &legacy[0]).and_then(|f| f.line), Some(30));
        // A response body's stream, polled by the HTTP server's task after the handler
        // returned: the helper's caller is the stream's closure in the handler's code.
        let stream = [
            fr("api::spin", Some("src/main.rs"), 23),
            fr("api::compress", Some("src/main.rs"), 106),
            fr(
                "{closure#0}<api::export::{async_fn#0}::{closure_env#0}>",
                Some("src/main.rs"),
                113,
            ),
            fr(
                "poll_next<..>",
                Some("/r/registry/src/i/futures-util-0.3.31/src/stream/stream/map.rs"),
                58,
            ),
            fr(
                "poll_frame",
                Some("/r/registry/src/i/axum-core-0.5.5/src/body.rs"),
                120,
            ),
            fr("poll", tokio, 1),
        ];
        assert_eq!(caller(&stream, &stream[0]).and_then(|f| f.line), Some(113));
        // An iterator's closure inside a helper the handler calls: the handler's line, where
        // the helper's call can move, not the closure's inside the helper.
        let helper = [
            fr("api::score", Some("src/main.rs"), 40),
            fr(
                "{closure#0}<api::summarize::{closure_env#0}>",
                Some("src/main.rs"),
                50,
            ),
            fr(
                "fold<..>",
                Some("/rustc/x/library/core/src/iter/adapters/map.rs"),
                1,
            ),
            fr("api::summarize", Some("src/main.rs"), 50),
            fr("api::handle::{async_fn#0}", Some("src/main.rs"), 70),
            fr("poll", tokio, 1),
        ];
        assert_eq!(caller(&helper, &helper[0]).and_then(|f| f.line), Some(70));
        // The way there: the helper's plain caller (its closure at the same line is not a
        // step of its own), then the handler.
        let lines =
            |c: Vec<Option<&Frame>>| c.iter().map(|f| f.and_then(|f| f.line)).collect::<Vec<_>>();
        assert_eq!(
            lines(caller_chain(&helper, &helper[0])),
            [Some(50), Some(70)]
        );
        assert_eq!(
            lines(caller_chain(&stream, &stream[0])),
            [Some(106), Some(113)]
        );
        assert_eq!(lines(caller_chain(&future, &future[0])), [Some(153)]);
        assert!(caller_chain(&inline, &inline[2]).is_empty());
        // Past two plain functions: the helper's caller and the one the handler called, a
        // gap between; a function's second frame at the same line is no step of its own.
        let deep = [
            fr("quotes::checksum", Some("src/main.rs"), 15),
            fr("quotes::a", Some("src/main.rs"), 20),
            fr("quotes::b", Some("src/main.rs"), 30),
            fr("quotes::b", Some("src/main.rs"), 30),
            fr("quotes::c", Some("src/main.rs"), 40),
            fr(
                "<quotes::Quote as quotes::Service>::call",
                Some("src/main.rs"),
                65,
            ),
            fr("quotes::handle::{async_fn#0}", Some("src/main.rs"), 132),
            fr("poll", tokio, 1),
        ];
        assert_eq!(
            lines(caller_chain(&deep, &deep[0])),
            [Some(20), None, Some(65), Some(132)]
        );
        // A service's `call`, a plain function that computes, then returns a future the
        // handler awaits: the line to change is in `call`.
        let service = [&deep[..1], &deep[5..]].concat();
        assert_eq!(
            lines(caller_chain(&service, &service[0])),
            [Some(65), Some(132)]
        );
        let two = [&deep[..2], &deep[5..]].concat();
        assert_eq!(
            lines(caller_chain(&two, &two[0])),
            [Some(20), Some(65), Some(132)]
        );
        // A `LocalSet` task's helper: the search stops at tokio's poll of the task, not at
        // the `run_until` in `main`'s body that polls the set.
        let local = [
            fr("slow", Some("src/main.rs"), 12),
            fr("poll", tokio, 1),
            fr("{async_block#0}", Some("src/main.rs"), 300),
        ];
        assert_eq!(caller(&local, &local[0]), None);
        // An async closure's body is async code itself.
        let closure = [
            fr("clock_nanosleep", None, 0),
            fr(
                "std::thread::sleep",
                Some("/rustc/x/library/std/src/thread/mod.rs"),
                1,
            ),
            fr("gateway::route::{async_closure#0}", Some("src/main.rs"), 70),
            fr("gateway::handle::{async_fn#0}", Some("src/main.rs"), 90),
            fr("poll", tokio, 1),
        ];
        assert_eq!(caller(&closure, &closure[2]), None);
    }

    #[test]
    fn finds_the_user_frame_and_the_call_it_made() {
        let frames = [
            fr("clock_nanosleep", None, 0),
            fr(
                "std::sys::pal::unix::thread::Thread::sleep",
                Some("/rustc/abc/library/std/src/sys/pal/unix/thread.rs"),
                1,
            ),
            fr(
                "std::thread::sleep",
                Some("/rustc/abc/library/std/src/thread/mod.rs"),
                2,
            ),
            fr(
                "scraper::fetch_page::{{closure}}",
                Some("src/scraper.rs"),
                42,
            ),
            fr(
                "tokio::runtime::task::core::Core<T,S>::poll",
                Some("/home/u/.cargo/registry/src/x/tokio-1.54.1/src/runtime/task/core.rs"),
                3,
            ),
        ];
        let (p, c) = primitive_and_culprit(&frames);
        assert_eq!(p.unwrap().function, "std::thread::sleep");
        let c = c.unwrap();
        assert_eq!(c.file.as_deref(), Some("src/scraper.rs"));
        assert_eq!(c.line, Some(42));
    }

    /// Known truth, as recorded from an accounts service hashing a session's history under a
    /// `DashMap` guard (`line-tables-only`): the signal's stack at its loop begins in core's
    /// `wrapping_mul`, inlined into the line, which is no call the line made; a sort called
    /// from a line is one.
    #[test]
    fn an_operator_inlined_into_the_line_is_no_call() {
        let core = "/rustc/59807616e/library/core/src";
        let at_loop = |inner: &str, file: &str| {
            [
                fr(inner, Some(&format!("{core}/{file}")), 1),
                fr("checksum", Some("/srv/accounts/src/main.rs"), 53),
                fr(
                    "accounts::handle::{async_fn#0}",
                    Some("/srv/accounts/src/main.rs"),
                    107,
                ),
            ]
        };
        for (inner, file) in [
            ("wrapping_mul", "num/uint_macros.rs"),
            ("add_assign", "ops/arith.rs"),
            ("next<usize>", "iter/range.rs"),
            ("max<u64>", "cmp.rs"),
        ] {
            let (p, c) = primitive_and_culprit(&at_loop(inner, file));
            assert_eq!(p, None, "{inner}");
            assert_eq!(c.and_then(|c| c.line), Some(53));
        }
        // Full debug info's names, the trait after the type.
        for full in [
            "<u64 as core::ops::arith::AddAssign>::add_assign",
            "<usize as core::slice::index::SliceIndex<[u64]>>::index",
            "<u64 as core::cmp::PartialOrd>::lt",
        ] {
            let (p, _) = primitive_and_culprit(&at_loop(full, "ops/arith.rs"));
            assert_eq!(p, None, "{full}");
        }
        // A closure called through `FnOnce` and a library type's `Drop` are calls.
        for call in [
            "core::ops::function::FnOnce::call_once",
            "<rusqlite::Connection as core::ops::drop::Drop>::drop",
        ] {
            let (p, _) = primitive_and_culprit(&at_loop(call, "ops/function.rs"));
            assert!(p.is_some(), "{call}");
        }
        let (p, _) = primitive_and_culprit(&at_loop("sort_unstable<u64>", "slice/mod.rs"));
        assert_eq!(
            p.map(|p| p.function),
            Some("core::slice::sort_unstable".to_string())
        );
    }

    /// Known truth: a release build without debug info (cargo's default) of a program
    /// `order-service` blocked in `Receiver::recv` in a spawned async block; its frames have
    /// names and no files. The program's own frame is the culprit, with no line; the call it
    /// made is the primitive. A library's frame (`ureq::`) is not the program's, and with
    /// the program's crate unknown nothing is named.
    #[test]
    fn without_debug_info_the_program_s_own_function_is_the_culprit() {
        let frames = [
            fr("syscall", None, 0),
            fr("<std::thread::thread::Thread>::park", None, 0),
            fr("std::sync::mpmc::list::Channel<T>::recv", None, 0),
            fr("std::sync::mpsc::Receiver<T>::recv", None, 0),
            fr("ureq::run", None, 0),
            fr("order_service::main::{{closure}}::{{closure}}", None, 0),
            fr("tokio::runtime::task::core::Core<T,S>::poll", None, 0),
        ];
        let (p, c) = primitive_and_culprit_in(&frames, Some("order_service"));
        assert_eq!(
            c.map(|c| (c.function, c.file)),
            Some((
                "order_service::main::{{closure}}::{{closure}}".to_string(),
                None
            ))
        );
        assert_eq!(p.unwrap().function, "ureq::run");
        let (p, c) = primitive_and_culprit_in(&frames[..4], Some("order_service"));
        assert!(p.is_none() && c.is_none());
        // The poll's code inlined into tokio's: the program's `main` outward of the runtime
        // is not its culprit.
        let inlined = [
            fr("clock_nanosleep", None, 0),
            fr("std::thread::functions::sleep", None, 0),
            fr("tokio::runtime::task::core::Core<T,S>::poll", None, 0),
            fr("tokio::runtime::runtime::Runtime::block_on", None, 0),
            fr("order_service::main", None, 0),
        ];
        assert_eq!(
            primitive_and_culprit_in(&inlined, Some("order_service")),
            (None, None)
        );
        // A spawn in a loop (tokio's task code inward of the program's) keeps its culprit.
        let spawning = [
            fr("tokio::runtime::task::list::OwnedTasks<S>::bind", None, 0),
            fr("tokio::task::spawn::spawn", None, 0),
            fr("order_service::fan_out", None, 0),
            fr("tokio::runtime::task::core::Core<T,S>::poll", None, 0),
            fr("tokio::runtime::task::harness::Harness<T,S>::poll", None, 0),
            fr("tokio::runtime::runtime::Runtime::block_on", None, 0),
            fr("order_service::main", None, 0),
        ];
        let (p, c) = primitive_and_culprit_in(&spawning, Some("order_service"));
        assert_eq!(c.unwrap().function, "order_service::fan_out");
        assert_eq!(p.unwrap().function, "tokio::task::spawn::spawn");
        assert_eq!(primitive_and_culprit_in(&frames, None), (None, None));
        assert_eq!(
            primitive_name("lock_api::mutex::Mutex<R,T>::lock"),
            "lock_api::mutex::Mutex::lock"
        );
        // With line tables only, the bare name and its file say the same.
        assert_eq!(
            primitive_name(&qualified(&fr(
                "lock",
                Some("/r/registry/src/i/lock_api-0.4.14/src/mutex.rs"),
                213
            ))),
            "lock_api::mutex::Mutex::lock"
        );
        assert_eq!(
            primitive_name(&qualified(&fr(
                "lock",
                Some("/r/registry/src/i/lock_api-0.4.14/src/lib.rs"),
                1
            ))),
            "lock_api::lock"
        );
        // A trait method of the program's type, and a crate whose name starts the same.
        assert!(in_crate(
            "<order_service::Db as core::ops::Drop>::drop",
            "order_service"
        ));
        assert!(!in_crate("order_service_client::get", "order_service"));
        assert!(in_crate(
            "<&mut order_service::Db as core::ops::Drop>::drop",
            "order_service"
        ));
        // cargo's test and bench executables carry a hash after the crate's name.
        assert_eq!(crate_of_executable("order-service"), "order_service");
        assert_eq!(crate_of_executable("it-0123456789abcdef"), "it");
        assert_eq!(crate_of_executable("svc-v2"), "svc_v2");
        assert!(!in_crate(
            "<tokio::X<order_service::Y>>::poll",
            "order_service"
        ));
    }

    /// A build with its own CARGO_HOME (a CI cache, a container's /usr/local/cargo) keeps the
    /// downloaded crates elsewhere than ~/.cargo: they are still not the user's code.
    #[test]
    fn crates_under_any_cargo_home_are_not_user_code() {
        for file in [
            "/tmp/ci/cargo-home/registry/src/index.crates.io-1949cf8c6b5b557f/ureq-3.5.1/src/lib.rs",
            "/usr/local/cargo/registry/src/index.crates.io-6f17d22bba15001f/futures-executor-0.3.34/src/local_pool.rs",
            "/opt/cargo/git/checkouts/hyper-0123456789abcdef/1a2b3c4/src/client.rs",
        ] {
            assert!(!is_user_frame(&fr("f", Some(file), 1)), "{file}");
        }
        let frames = [
            fr("read_retrying_interrupts", Some("/usr/local/cargo/registry/src/i/ureq-3.5.1/src/unversioned/transport/tcp/read.rs"), 18),
            fr("app::fetch", Some("/work/app/src/fetch.rs"), 37),
        ];
        let (p, c) = primitive_and_culprit(&frames);
        assert_eq!(c.unwrap().line, Some(37));
        assert!(p.unwrap().function.starts_with("ureq::"));
    }

    /// asyncprof's own frames (its channels, its sampler) are not the user's, but a crate whose
    /// name merely starts with "asyncprof" is.
    #[test]
    fn asyncprofs_crates_are_foreign_by_their_exact_paths() {
        let own = fr(
            "asyncprof::sync::mpsc::Receiver<T>::recv",
            Some("/src/asyncprof/src/sync/mpsc.rs"),
            9,
        );
        assert!(!is_user_frame(&own));
        for user in [
            "asyncprof_pipelines::pipelines::scraper::fetch_bad::{{closure}}",
            "asyncprofiler_demo::main",
        ] {
            assert!(
                is_user_frame(&fr(user, Some("/work/app/src/lib.rs"), 3)),
                "{user}"
            );
        }
    }

    /// A stall inside a std collection names the user's line, not std's own hashbrown (whose
    /// files the toolchain names `/rust/deps/...`).
    #[test]
    fn the_standard_librarys_dependencies_are_not_user_code() {
        let frames = [
            fr(
                "make_hash<*const u8, fnv::FnvHasher>",
                Some("/rust/deps/hashbrown-0.16.1/src/map.rs"),
                258,
            ),
            fr("app::index", Some("/work/app/src/index.rs"), 12),
        ];
        let (_, c) = primitive_and_culprit(&frames);
        assert_eq!(c.unwrap().file.as_deref(), Some("/work/app/src/index.rs"));
    }

    #[test]
    fn a_cpu_loop_has_no_primitive() {
        let frames = [
            fr("app::hash_all", Some("/work/app/src/lib.rs"), 7),
            fr("app::main", Some("/work/app/src/main.rs"), 3),
        ];
        let (p, c) = primitive_and_culprit(&frames);
        assert!(p.is_none());
        assert_eq!(c.unwrap().line, Some(7));
    }

    #[test]
    fn c_library_frames_are_not_user_code() {
        let f = fr(
            "syscall",
            Some("./misc/../sysdeps/unix/sysv/linux/x86_64/syscall.S"),
            36,
        );
        assert!(!is_user_frame(&f));
        assert_eq!(
            primitive_name("std::thread::functions::sleep"),
            "std::thread::sleep"
        );
    }

    #[test]
    fn bare_names_get_their_crate_from_the_registry_path() {
        let f = fr(
            "call",
            Some(
                "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/ureq-3.5.1/src/lib.rs",
            ),
            10,
        );
        assert_eq!(qualified(&f), "ureq::call");
        let lock = fr(
            "lock<std::collections::hash::map::HashMap<u64, u64>>",
            Some("/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/std/src/sync/poison/mutex.rs"),
            10,
        );
        assert_eq!(
            qualified(&lock),
            "std::sync::poison::mutex::lock<std::collections::hash::map::HashMap<u64, u64>>"
        );
        assert_eq!(primitive_name(&qualified(&lock)), "std::sync::Mutex::lock");
        let user = fr("handle", Some("src/main.rs"), 3);
        assert_eq!(qualified(&user), "handle");
    }

    #[test]
    fn primitive_names_are_public_paths() {
        assert_eq!(
            primitive_name("std::sync::poison::mutex::Mutex<T>::lock"),
            "std::sync::Mutex::lock"
        );
        assert_eq!(
            primitive_name("<std::net::tcp::TcpStream as std::io::Read>::read"),
            "std::net::TcpStream::read"
        );
        assert_eq!(
            primitive_name("futures_executor::local_pool::block_on"),
            "futures::executor::block_on"
        );
        assert_eq!(
            primitive_name("rusqlite::Statement::execute"),
            "rusqlite::Statement::execute"
        );
        assert_eq!(primitive_name("ureq::Agent<T>::run"), "ureq::Agent::run");
        // A logging macro's expansion, named by its file: line tables only, full debug info.
        let event = |function: &str| {
            let frames = [
                fr(
                    "write_all",
                    Some("/r/registry/src/i/tracing-subscriber-0.3.20/src/fmt/writer.rs"),
                    840,
                ),
                fr(
                    function,
                    Some("/r/registry/src/i/tracing-0.1.41/src/macros.rs"),
                    905,
                ),
                fr("quotes::handle::{async_fn#0}", Some("src/main.rs"), 135),
            ];
            primitive_and_culprit_in(&frames, None)
                .0
                .map(|p| p.function)
        };
        assert_eq!(event("{closure#7}").as_deref(), Some("tracing::event!"));
        assert_eq!(
            primitive_name(&qualified(&Frame::new(
                "_print",
                Some("/rustc/5980/library/std/src/io/stdio.rs".into()),
                Some(1227),
            ))),
            "std::println!"
        );
        assert_eq!(primitive_name("std::io::stdio::_eprint"), "std::eprintln!");
        // Standard input, as a release build's inlined frame names it (recorded on a
        // service reading lines a slow writer piped in).
        assert_eq!(
            primitive_name("std::io::stdio::Stdin::read_line"),
            "std::io::Stdin::read_line"
        );
        assert_eq!(
            primitive_name(
                "<std::io::Lines<std::io::stdio::StdinLock> as core::iter::traits::iterator::Iterator>::next"
            ),
            "std::io::Stdin::lines"
        );
        // std built with line tables only: a bare name in stdio.rs.
        assert_eq!(
            primitive_name("std::io::stdio::read_line"),
            "std::io::Stdin::read_line"
        );
        assert_eq!(
            event("quotes::handle::{{closure}}::{{closure}}").as_deref(),
            Some("tracing::event!")
        );
        let at = |file: &str| macro_call(&Frame::new("f", Some(file.into()), Some(1)));
        // A git checkout, a pre-release; another crate's macros; log's.
        assert_eq!(
            at("/h/.cargo/git/checkouts/tracing-1a2b/3c4d/tracing/src/macros.rs"),
            Some("tracing::event!")
        );
        assert_eq!(
            at("/r/registry/src/i/tracing-0.1.42-alpha.1/src/macros.rs"),
            Some("tracing::event!")
        );
        assert_eq!(
            at("/r/registry/src/i/tracing-subscriber-0.3.20/src/macros.rs"),
            None
        );
        assert_eq!(at("/r/registry/src/i/tracing-0.1.41/src/span.rs"), None);
        assert_eq!(
            at("/r/registry/src/i/log-0.4.28/src/__private_api.rs"),
            Some("log::log!")
        );
        assert_eq!(at("src/macros.rs"), None);
        assert_eq!(primitive_name("log::__private_api_log"), "log::log!");
        // Drop glue, in each form it is named in; a type's own `Drop`, or a method named
        // `drop`, is not.
        for glue in [
            "core::ptr::drop_in_place<app::Log>",
            "drop<app::Log>",
            "core::mem::drop::<app::Log>",
            "core::ptr::drop_in_place",
        ] {
            assert!(is_drop_glue(glue), "{glue}");
        }
        assert!(!is_drop_glue("<app::Log as core::ops::drop::Drop>::drop"));
        assert!(!is_drop_glue("mongodb::sync::Collection::drop"));
        // Drop glue keeps the type it drops.
        assert_eq!(
            primitive_name(&qualified(&Frame::new(
                "drop<app::RenderLog>",
                Some("/rustc/5980/library/core/src/mem/mod.rs".into()),
                Some(975),
            ))),
            "core::mem::drop::<app::RenderLog>"
        );
        assert_eq!(
            primitive_name("core::ptr::drop_in_place<rusqlite::Connection>"),
            "core::ptr::drop_in_place::<rusqlite::Connection>"
        );
        // A known call's type in another's type arguments does not make it that call.
        assert_eq!(
            primitive_name(
                "std::io::read_line<std::io::buffered::bufreader::BufReader<std::net::tcp::TcpStream>>"
            ),
            "std::io::BufRead::read_line"
        );
        assert_eq!(
            primitive_name("<&std::net::tcp::TcpStream as std::io::Read>::read"),
            "std::net::TcpStream::read"
        );
        // Bare names inlined into the caller, prefixed with their file's module.
        assert_eq!(
            primitive_name("std::thread::join_handle::join<()>"),
            "std::thread::JoinHandle::join"
        );
        assert_eq!(
            primitive_name("std::sync::poison::condvar::wait<bool>"),
            "std::sync::Condvar::wait"
        );
        // A known call's longer sibling keeps its own method name: `read_dir` is not `read`.
        for (function, name) in [
            ("std::fs::read_dir<&str>", "std::fs::read_dir"),
            (
                "<std::net::tcp::TcpStream as std::io::Read>::read_exact",
                "std::net::TcpStream::read_exact",
            ),
            (
                "std::net::udp::UdpSocket::recv_from",
                "std::net::UdpSocket::recv_from",
            ),
            (
                "std::sync::poison::condvar::Condvar::wait_timeout<bool>",
                "std::sync::Condvar::wait_timeout",
            ),
            (
                "std::sync::poison::condvar::wait_while<bool, F>",
                "std::sync::Condvar::wait_while",
            ),
            (
                "std::thread::functions::park_timeout",
                "std::thread::park_timeout",
            ),
            ("std::thread::functions::park", "std::thread::park"),
            (
                "std::io::write_all_vectored<W>",
                "std::io::Write::write_all_vectored",
            ),
            (
                "std::sync::mpsc::Receiver<T>::recv_timeout::{closure#0}",
                "std::sync::mpsc::Receiver::recv_timeout",
            ),
            ("std::fs::read_to_string::inner", "std::fs::read_to_string"),
            // parking_lot's locks keep their own names (std has no `wait_for`).
            (
                "parking_lot::condvar::Condvar::wait_for<T>",
                "parking_lot::condvar::Condvar::wait_for",
            ),
            // Another crate's type keeps the known name, not a std name that does not exist.
            (
                "my_db::pool::Condvar::wait_for<T>",
                "std::sync::Condvar::wait",
            ),
        ] {
            assert_eq!(primitive_name(function), name, "{function}");
        }
        // Type arguments after a closure's name, a turbofish, an arrow inside them.
        assert_eq!(
            without_type_arguments("lib::read_all::{closure#0}<std::net::tcp::TcpStream>"),
            "lib::read_all::{closure#0}"
        );
        assert_eq!(
            without_type_arguments("std::io::read_until::<std::io::BufReader<T>>::inner"),
            "std::io::read_until::inner"
        );
        assert_eq!(
            without_type_arguments("app::run<fn() -> core::result::Result<u8, E>>::go"),
            "app::run::go"
        );
        assert_eq!(
            primitive_name("std::sync::barrier::Barrier::wait"),
            "std::sync::Barrier::wait"
        );
        // An inherent method's qualified path, a reference's trait impl, a trait nested in
        // the type.
        assert_eq!(
            primitive_name("<std::time::Instant>::elapsed"),
            "std::time::Instant::elapsed"
        );
        assert_eq!(
            primitive_name("<&myio::Conn as std::io::Read>::read"),
            "myio::Conn::read"
        );
        assert_eq!(
            primitive_name("<a::Wrap<<b::T as c::Tr>::Out> as d::Run>::run"),
            "a::Wrap::run"
        );
    }

    /// std's `TcpStream::read` and `UdpSocket::recv` are one function in a release build, and
    /// the debug info names `UdpSocket::recv`: the primitive keeps the other names, as the
    /// user writes them.
    #[test]
    fn a_merged_primitive_keeps_its_other_names() {
        let mut call = fr(
            "<std::net::udp::UdpSocket>::recv",
            Some("/rustc/1/library/std/src/net/udp.rs"),
            729,
        );
        call.same_code = vec![
            "<std::net::tcp::TcpStream as std::io::Read>::read".into(),
            "<std::os::unix::net::datagram::UnixDatagram>::recv".into(),
        ];
        let user = fr("app::query", Some("src/main.rs"), 35);
        let (primitive, culprit) = primitive_and_culprit(&[call, user.clone()]);
        let primitive = primitive.unwrap();
        assert_eq!(primitive.function, "std::net::UdpSocket::recv");
        assert_eq!(
            primitive.same_code,
            [
                "std::net::TcpStream::read",
                "std::os::unix::net::datagram::UnixDatagram::recv"
            ]
        );
        assert_eq!(culprit, Some(user));
    }

    const TOKIO: &str =
        "/home/u/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.54.1/src";
    const STD: &str = "/rustc/5980/library";

    /// Frames from `(function, file under tokio's src or std's library, line)`; `t/` is
    /// tokio's, `s/` std's, anything else as given.
    fn stack(frames: &[(&str, &str, u32)]) -> Vec<Frame> {
        frames
            .iter()
            .map(|&(function, file, line)| {
                let file = match (file.strip_prefix("t/"), file.strip_prefix("s/")) {
                    (Some(rest), _) => Some(format!("{TOKIO}/{rest}")),
                    (_, Some(rest)) => Some(format!("{STD}/{rest}")),
                    _ if file.is_empty() => None,
                    _ => Some(file.to_string()),
                };
                Frame::new(function, file, Some(line))
            })
            .collect()
    }

    /// The thread's entry, outward of the worker loop: tokio runs each worker as a blocking
    /// task, so a task harness polls there too. Bare names, as `line-tables-only` gives them.
    const ENTRY_BARE: &[(&str, &str, u32)] = &[
        (
            "{closure#0}",
            "t/runtime/scheduler/multi_thread/worker.rs",
            560,
        ),
        ("enter_runtime<()>", "t/runtime/context/runtime.rs", 65),
        ("run", "t/runtime/scheduler/multi_thread/worker.rs", 549),
        ("poll<()>", "t/runtime/blocking/task.rs", 42),
        ("poll<()>", "t/runtime/task/core.rs", 369),
        ("poll_future<()>", "t/runtime/task/harness.rs", 525),
        ("poll<()>", "t/runtime/task/harness.rs", 155),
        ("poll", "t/runtime/task/raw.rs", 267),
        ("run_worker", "t/runtime/blocking/pool.rs", 660),
        ("start_thread", "./nptl/pthread_create.c", 442),
    ];

    /// The same, with full paths (a build with full debug info).
    const ENTRY_FULL: &[(&str, &str, u32)] = &[
        (
            "tokio::runtime::scheduler::multi_thread::worker::run::{{closure}}",
            "t/runtime/scheduler/multi_thread/worker.rs",
            560,
        ),
        (
            "tokio::runtime::scheduler::multi_thread::worker::run",
            "t/runtime/scheduler/multi_thread/worker.rs",
            549,
        ),
        (
            "tokio::runtime::task::core::Core<T,S>::poll",
            "t/runtime/task/core.rs",
            369,
        ),
        (
            "tokio::runtime::task::harness::Harness<T,S>::poll",
            "t/runtime/task/harness.rs",
            155,
        ),
        (
            "tokio::runtime::task::raw::poll",
            "t/runtime/task/raw.rs",
            267,
        ),
        (
            "tokio::runtime::blocking::pool::Inner::run",
            "t/runtime/blocking/pool.rs",
            660,
        ),
    ];

    fn with_entry(
        inner: &[(&'static str, &'static str, u32)],
        entry: &[(&'static str, &'static str, u32)],
    ) -> Vec<Frame> {
        stack(&[inner, entry].concat())
    }

    #[test]
    fn a_worker_in_its_scheduler_loop_is_between_polls() {
        // A stack a stable-tier stall once had: the worker waking a parked one after a
        // zero-timeout park, with no task being run.
        let full = with_entry(
            &[
                ("core::sync::atomic::atomic_add<usize>", "s/core/src/sync/atomic.rs", 3),
                (
                    "tokio::runtime::scheduler::multi_thread::idle::Idle::notify_should_wakeup",
                    "t/runtime/scheduler/multi_thread/idle.rs",
                    1,
                ),
                (
                    "tokio::runtime::scheduler::multi_thread::idle::Idle::worker_to_notify",
                    "t/runtime/scheduler/multi_thread/idle.rs",
                    2,
                ),
                (
                    "tokio::runtime::scheduler::multi_thread::worker::<impl tokio::runtime::scheduler::multi_thread::handle::Handle>::notify_parked_local",
                    "t/runtime/scheduler/multi_thread/worker.rs",
                    1,
                ),
                (
                    "tokio::runtime::scheduler::multi_thread::worker::Context::park_internal",
                    "t/runtime/scheduler/multi_thread/worker.rs",
                    2,
                ),
                (
                    "tokio::runtime::scheduler::multi_thread::worker::Context::park_yield",
                    "t/runtime/scheduler/multi_thread/worker.rs",
                    3,
                ),
                (
                    "tokio::runtime::scheduler::multi_thread::worker::Context::run",
                    "t/runtime/scheduler/multi_thread/worker.rs",
                    4,
                ),
            ],
            ENTRY_FULL,
        );
        assert!(in_scheduler_between_polls(&full));
        let bare = with_entry(
            &[
                ("atomic_add<usize>", "s/core/src/sync/atomic.rs", 3),
                (
                    "notify_should_wakeup",
                    "t/runtime/scheduler/multi_thread/idle.rs",
                    1,
                ),
                (
                    "notify_parked_local",
                    "t/runtime/scheduler/multi_thread/worker.rs",
                    1,
                ),
                (
                    "park_internal",
                    "t/runtime/scheduler/multi_thread/worker.rs",
                    2,
                ),
                (
                    "maintenance",
                    "t/runtime/scheduler/multi_thread/worker.rs",
                    3,
                ),
                ("run", "t/runtime/scheduler/multi_thread/worker.rs", 0),
            ],
            ENTRY_BARE,
        );
        assert!(in_scheduler_between_polls(&bare));
    }

    #[test]
    fn a_worker_running_a_task_is_not_between_polls() {
        // A poll spinning in the user's code, bare names.
        let user = [
            ("{async_block#0}", "src/soak.rs", 279),
            ("poll<F>", "t/runtime/task/core.rs", 369),
            ("poll_future<F>", "t/runtime/task/harness.rs", 525),
            ("poll<F>", "t/runtime/task/harness.rs", 155),
            ("poll", "t/runtime/task/raw.rs", 267),
            ("run<S>", "t/runtime/task/mod.rs", 523),
            (
                "{closure#0}",
                "t/runtime/scheduler/multi_thread/worker.rs",
                791,
            ),
            ("budget<R>", "t/task/coop/mod.rs", 133),
            (
                "run_task",
                "t/runtime/scheduler/multi_thread/worker.rs",
                696,
            ),
            ("run", "t/runtime/scheduler/multi_thread/worker.rs", 0),
        ];
        assert!(!in_scheduler_between_polls(&with_entry(&user, ENTRY_BARE)));
        // The poll calls into tokio's scheduler (a spawn waking a parked worker): still a poll.
        let spawning = [
            &[(
                "notify_parked_remote",
                "t/runtime/scheduler/multi_thread/worker.rs",
                1,
            )][..],
            &user,
        ]
        .concat();
        assert!(!in_scheduler_between_polls(&with_entry(
            &spawning, ENTRY_BARE
        )));
        // Any one mark of a poll is enough: the task's harness alone, `run_task` alone, or
        // the user's code alone. Without any, the same stack is the scheduler's.
        let is_mark = |f: &(&str, &str, u32)| {
            f.0 == "{async_block#0}" || f.1.contains("/task/") || f.0 == "run_task"
        };
        let only = |keep: Option<usize>| {
            let mut frames = vec![("spin", "s/core/src/hint.rs", 1)];
            frames.extend(
                user.iter()
                    .enumerate()
                    .filter(|&(i, f)| Some(i) == keep || !is_mark(f))
                    .map(|(_, f)| *f),
            );
            with_entry(&frames, ENTRY_BARE)
        };
        assert!(in_scheduler_between_polls(&only(None)));
        for keep in [0, 2, 4, 8] {
            assert!(is_mark(&user[keep]));
            assert!(!in_scheduler_between_polls(&only(Some(keep))), "{keep}");
        }
        // Full paths.
        let full = [
            ("my_service::handler::{{closure}}", "src/handler.rs", 10),
            (
                "tokio::runtime::task::raw::poll",
                "t/runtime/task/raw.rs",
                267,
            ),
            (
                "tokio::runtime::scheduler::multi_thread::worker::Context::run_task",
                "t/runtime/scheduler/multi_thread/worker.rs",
                696,
            ),
            (
                "tokio::runtime::scheduler::multi_thread::worker::Context::run",
                "t/runtime/scheduler/multi_thread/worker.rs",
                600,
            ),
        ];
        assert!(!in_scheduler_between_polls(&with_entry(&full, ENTRY_FULL)));
        // Symbols only (no debug info): the names tell.
        let symbols = [
            ("spin", "", 0),
            ("tokio::runtime::task::raw::poll", "", 0),
            (
                "tokio::runtime::scheduler::multi_thread::worker::Context::run",
                "",
                0,
            ),
            (
                "tokio::runtime::scheduler::multi_thread::worker::run",
                "",
                0,
            ),
        ];
        assert!(!in_scheduler_between_polls(&stack(&symbols)));
        let parked = [
            ("epoll_wait", "", 0),
            (
                "tokio::runtime::scheduler::multi_thread::worker::Context::park_internal",
                "",
                0,
            ),
            (
                "tokio::runtime::scheduler::multi_thread::worker::Context::run",
                "",
                0,
            ),
        ];
        assert!(in_scheduler_between_polls(&stack(&parked)));
    }

    #[test]
    fn without_the_worker_loop_it_cannot_tell() {
        // A current-thread runtime's `block_on`, and a stack cut short above the loop.
        let current = stack(&[
            (
                "park_internal",
                "t/runtime/scheduler/current_thread/mod.rs",
                1,
            ),
            ("block_on", "t/runtime/scheduler/current_thread/mod.rs", 2),
            ("main", "src/main.rs", 3),
        ]);
        assert!(!in_scheduler_between_polls(&current));
        let cut = stack(&[
            (
                "park_internal",
                "t/runtime/scheduler/multi_thread/worker.rs",
                2,
            ),
            (
                "park_yield",
                "t/runtime/scheduler/multi_thread/worker.rs",
                3,
            ),
        ]);
        assert!(!in_scheduler_between_polls(&cut));
        assert!(!in_scheduler_between_polls(&[]));
        // A `run` of another crate's `worker.rs` is not tokio's loop.
        let other = stack(&[
            ("park", "/home/u/.cargo/registry/src/x/rayon-core-1.12.1/src/sleep/mod.rs", 1),
            ("run", "/home/u/.cargo/registry/src/x/other-1.0.0/src/runtime/scheduler/multi_thread/worker.rs", 2),
        ]);
        assert!(!in_scheduler_between_polls(&other));
    }

    #[test]
    fn a_stack_in_block_in_place_is_told_by_its_tokio_frames() {
        const TOKIO: &str = "/root/.cargo/registry/src/x/tokio-1.54.1/src";
        let sleep = [
            fr("clock_nanosleep", None, 0),
            fr(
                "std::thread::sleep",
                Some("/rustc/abc/library/std/src/thread/mod.rs"),
                2,
            ),
        ];
        let user = fr("app::load::{{closure}}", Some("src/app.rs"), 12);
        let inside = |f: Frame| {
            let mut frames = sleep.to_vec();
            frames.push(user.clone());
            frames.push(f);
            frames
        };
        // With line tables: by file. The public function, the scheduler's, the worker's.
        for (function, file) in [
            ("tokio::task::blocking::block_in_place", "/task/blocking.rs"),
            (
                "tokio::runtime::scheduler::block_in_place::block_in_place",
                "/runtime/scheduler/block_in_place.rs",
            ),
            (
                "tokio::runtime::scheduler::multi_thread::worker::block_in_place",
                "/runtime/scheduler/multi_thread/worker.rs",
            ),
        ] {
            let with_file = inside(fr(function, Some(&format!("{TOKIO}{file}")), 1));
            assert!(in_block_in_place(&with_file), "{function}");
            // Without: by its full name.
            let bare = inside(Frame::new(function, None, None));
            assert!(in_block_in_place(&bare), "{function} without a file");
        }
        // A user's function of that name, or a blocking call outside it, is not.
        let own = inside(fr("app::block_in_place", Some("src/app.rs"), 3));
        assert!(!in_block_in_place(&own));
        let outside = inside(fr(
            "tokio::runtime::task::core::Core<T,S>::poll",
            Some(&format!("{TOKIO}/runtime/task/core.rs")),
            369,
        ));
        assert!(!in_block_in_place(&outside));
        assert!(!holds_no_worker(&outside));

        // Back in the blocking pool without a worker (idle, or a `spawn_blocking` job): holds
        // none; a worker's thread, run by the pool too, passes through the worker's loop.
        let pool = fr(
            "tokio::runtime::blocking::pool::Inner::run",
            Some(&format!("{TOKIO}/runtime/blocking/pool.rs")),
            757,
        );
        let idle = vec![
            fr("syscall", None, 0),
            fr(
                "std::sync::Condvar::wait_timeout",
                Some("/rustc/abc/library/std/src/sync/condvar.rs"),
                1,
            ),
            pool.clone(),
        ];
        assert!(in_blocking_pool_outside_a_worker(&idle) && holds_no_worker(&idle));
        let mut worker = sleep.to_vec();
        worker.push(user.clone());
        worker.push(fr(
            "tokio::runtime::scheduler::multi_thread::worker::run",
            Some(&format!("{TOKIO}/runtime/scheduler/multi_thread/worker.rs")),
            500,
        ));
        worker.push(pool);
        assert!(!in_blocking_pool_outside_a_worker(&worker) && !holds_no_worker(&worker));
        // Unsymbolized: no frame to go by, nothing said.
        let bare = [fr("0x7f00", None, 0), fr("0x7f01", None, 0)];
        assert!(!holds_no_worker(&bare));
    }

    /// A current-thread runtime's `block_on` thread: inside `block_on`, a blocking call in the
    /// future (tokio's loop on the stack); after it returned, the same call in the caller's
    /// own code (no runtime). Only the second is outside, and only when the stack tells.
    #[test]
    fn a_thread_whose_block_on_returned_is_outside_any_runtime() {
        let sleep = [
            ("clock_nanosleep", "", 0),
            (
                "std::sys::thread::unix::sleep",
                "s/std/src/sys/thread/unix.rs",
                579,
            ),
            (
                "std::thread::functions::sleep",
                "s/std/src/thread/functions.rs",
                289,
            ),
        ];
        let main = [
            ("app::main", "/work/app/src/main.rs", 12),
            (
                "core::ops::function::FnOnce::call_once",
                "s/core/src/ops/function.rs",
                250,
            ),
            (
                "std::rt::lang_start::<()>::{{closure}}",
                "s/std/src/rt.rs",
                206,
            ),
            ("std::rt::lang_start_internal", "s/std/src/rt.rs", 175),
            ("main", "", 0),
            ("0x7f0000001000", "", 0),
        ];
        let after = stack(&[&sleep[..], &main[..]].concat());
        assert!(outside_any_runtime(&after));
        // On a thread of its own: std's entry, then the C library's unnamed start.
        let spawned = stack(
            &[
                &sleep[..],
                &[
                    ("app::sync_part", "/work/app/src/sync.rs", 8),
                    (
                        "<std::sys::thread::unix::Thread>::new::thread_start",
                        "s/std/src/sys/thread/unix.rs",
                        118,
                    ),
                    ("0x7f0000002000", "", 0),
                ][..],
            ]
            .concat(),
        );
        assert!(outside_any_runtime(&spawned));

        // Inside `block_on`, full names and bare ones (tokio built with line tables only).
        for (block_on, set) in [
            (
                "tokio::runtime::scheduler::current_thread::CoreGuard::block_on::{{closure}}",
                "tokio::runtime::context::scoped::Scoped<T>::set",
            ),
            ("{closure#0}", "set<scheduler::Context>"),
        ] {
            let inside = stack(
                &[
                    &sleep[..],
                    &[
                        ("app::main::{{closure}}", "/work/app/src/main.rs", 9),
                        (block_on, "t/runtime/scheduler/current_thread/mod.rs", 742),
                        (set, "t/runtime/context/scoped.rs", 40),
                    ][..],
                    &main[..],
                ]
                .concat(),
            );
            assert!(!outside_any_runtime(&inside), "{block_on}");
            assert!(shows_a_runtime(&inside), "{block_on}");
            assert!(in_current_thread_block_on(&inside), "{block_on}");
        }
        // The runtime's drop waiting for its blocking threads is the runtime's.
        let dropping = stack(
            &[
                &sleep[..1],
                &[(
                    "<tokio::runtime::blocking::pool::BlockingPool as core::ops::drop::Drop>::drop",
                    "t/runtime/blocking/pool.rs",
                    300,
                )][..],
                &main[..],
            ]
            .concat(),
        );
        assert!(!outside_any_runtime(&dropping));
        // Not outside, nor driving a runtime: neither rule decides on it.
        assert!(!shows_a_runtime(&dropping) && !shows_a_runtime(&after));
        assert!(!in_current_thread_block_on(&dropping) && !in_current_thread_block_on(&after));
        assert!(reaches_thread_start(&after) && !reaches_thread_start(&after[..5]));

        // An unnamed frame (the vDSO's clock read on CPU, a C library without symbols) is
        // not tokio's.
        let mut vdso = after.clone();
        vdso[0] = fr("0x7ffd0000a6b6", None, 0);
        assert!(outside_any_runtime(&vdso));
        // Cannot tell, so not outside: cut short (no thread start), a Rust frame without its
        // file (no debug info: a runtime inlined there would not show), tokio's name without
        // a file.
        assert!(!outside_any_runtime(&after[..5]));
        assert!(!outside_any_runtime(&[]));
        for (i, f) in [
            (3, fr("app::main", None, 0)),
            (
                3,
                fr(
                    "tokio::runtime::scheduler::current_thread::CoreGuard::block_on",
                    None,
                    0,
                ),
            ),
        ] {
            let mut changed = after.clone();
            changed[i] = f;
            assert!(!outside_any_runtime(&changed), "{changed:?}");
        }
    }
}
