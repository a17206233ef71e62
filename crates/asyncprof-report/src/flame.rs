//! Flamegraphs a person can use: the stall flamegraph and the CPU flamegraph as interactive
//! widgets of the HTML report.
//!
//! A stack sampled on a tokio worker opens with some forty frames that are the same in every
//! program: thread start-up (`clone3`, `start_thread`, `std::rt`, `std::sys`), the runtime's
//! scheduler (`tokio::runtime::scheduler`, `task::harness`, `task::core`, `coop`, `context`),
//! and the std and core glue between them (`catch_unwind`, `FnOnce::call_once`,
//! `LocalKey::with`). The folded view replaces that prefix, down to the frame that polls the
//! task's future, with one frame named after the stalled task ("task spawned at
//! src/foo.rs:12:5"), so that each stall's stack starts at the task's own code. Frames of the
//! program that sit between runtime frames (a `main` that calls `Runtime::block_on`) stay,
//! with the runtime frames after them folded into one "tokio runtime" frame; the innermost
//! frames (the call that blocked, even inside std or tokio) are never folded. The rule looks
//! at module paths only, so it holds for any program. The "show all frames" toggle draws the
//! stacks unfolded.
//!
//! Each widget is static markup (a search box, a reset button, the toggle) plus its stacks as
//! JSON in a `<script type="application/json">` block, escaped so that no frame name can end
//! the block. The page's inline script draws the graph as SVG and handles clicks (zoom: the
//! frame takes the full width, its ancestors stay above it), search (matching frames are
//! highlighted and their share of the weight is shown), reset, and the keyboard (arrows move
//! between frames, Enter zooms, Escape resets, `/` searches). Nothing is fetched.

use std::collections::BTreeMap;

use asyncprof_format::{Frame, RunFile};
use maud::{html, Markup, PreEscaped};
use serde::Serialize;

/// What a frame is to the folding rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The tokio runtime's own machinery, or a future that wraps whole tasks.
    Runtime,
    /// Process and thread start-up: libc's entry points, `std::rt`, std's thread spawn.
    StartUp,
    /// std, core and alloc code, and unresolved addresses: folded when runtime or start-up
    /// frames surround it, kept when it is the innermost code (a `sleep`, a `lock`).
    Glue,
    /// Anything else: the program's code and the libraries it calls.
    Own,
}

/// Module paths of the tokio runtime's machinery. `tokio::task` holds the cooperative
/// budget, `LocalSet` and task-locals; the APIs a task calls (`tokio::sync`, `tokio::time`,
/// `tokio::io`, `tokio::net`) are not here and stay visible.
const RUNTIME_PREFIXES: &[&str] = &[
    "tokio::runtime::",
    "tokio::loom::",
    "tokio::task::",
    "tokio::util::",
    "tokio::coop::",
    "tokio::park::",
];

/// Futures that wrap a whole task to attach data to its polls; between the runtime and the
/// task's code they are part of the plumbing.
const TASK_WRAPPER_PREFIXES: &[&str] = &["tracing::instrument::", "tracing_futures::"];

/// Module paths of Rust's process and thread start-up.
const START_UP_PREFIXES: &[&str] = &[
    "std::rt::",
    "std::sys::backtrace::__rust_begin_short_backtrace",
    "std::thread::lifecycle::spawn_unchecked",
    "std::thread::Builder::spawn_unchecked",
    "std::thread::spawn_unchecked",
];

/// C symbols of process and thread start-up, without leading underscores.
const START_UP_SYMBOLS: &[&str] = &[
    "start",
    "main",
    "libc_start_main",
    "libc_start_main_impl",
    "libc_start_call_main",
    "start_thread",
    "clone",
    "clone3",
    "clone_internal",
    "thread_start",
];

/// Module paths of Rust's own libraries, folded when they sit among runtime frames.
const GLUE_PREFIXES: &[&str] = &["std::", "core::", "alloc::"];

/// The name of the frame the folded prefix becomes when the stalled task's spawn location is
/// not known, and of runtime frames folded between frames of the program.
pub(crate) const RUNTIME_LABEL: &str = "tokio runtime";

/// The name of a folded prefix with no runtime frame in it (a CPU profile's other threads).
const START_UP_LABEL: &str = "thread start-up";

/// Frames per graph at most: the lightest are left out beyond it (and counted).
const MAX_NODES: usize = 8000;

/// Stack depth drawn at most: deeper frames are left out (the stacks cut are counted). Stacks
/// are captured with at most 128 frames, plus inlined ones.
const MAX_DEPTH: usize = 256;

/// The index of the `>` that closes the `<` at the start of `s`; `->` is not a bracket.
fn matching_close(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut prev = ' ';
    for (i, c) in s.char_indices() {
        match c {
            '<' => depth += 1,
            '>' if prev != '-' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        prev = c;
    }
    None
}

/// The position of ` as ` outside any brackets in `s`.
fn top_level_as(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut prev = ' ';
    for (i, c) in s.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' if prev != '-' => depth = depth.saturating_sub(1),
            ')' | ']' => depth = depth.saturating_sub(1),
            ' ' if depth == 0 && s[i..].starts_with(" as ") => return Some(i),
            _ => {}
        }
        prev = c;
    }
    None
}

/// The module path a function belongs to: `<a::B<T> as c::D>::e` is `a::B<T>::e`, and
/// `<&mut F as core::ops::FnOnce>::call_once` (a generic type) is `core::ops::FnOnce::call_once`.
fn module_path(function: &str) -> String {
    let f = function.trim();
    let Some(close) = f.strip_prefix('<').and(matching_close(f)) else {
        return f.to_string();
    };
    let inside = &f[1..close];
    let rest = &f[close + 1..];
    let (self_ty, trait_path) = match top_level_as(inside) {
        Some(at) => (&inside[..at], Some(&inside[at + 4..])),
        None => (inside, None),
    };
    let mut self_ty = self_ty.trim();
    loop {
        let before = self_ty;
        for p in ["&", "mut ", "dyn ", "*const ", "*mut ", "(", "["] {
            self_ty = self_ty.strip_prefix(p).unwrap_or(self_ty).trim_start();
        }
        if self_ty == before {
            break;
        }
    }
    let base = match trait_path {
        Some(t) if !self_ty.contains("::") => t.trim(),
        _ => self_ty,
    };
    format!("{base}{rest}")
}

/// The module a source file belongs to, for frames named without their path (crates built
/// with `debug = "line-tables-only"`): cargo's registry and the toolchain's library sources.
fn module_of_file(file: &str) -> Option<String> {
    let (krate, path) = if let Some(at) = file.find("/registry/src/") {
        // <index>/<crate>-<version>/src/<path>.rs
        let mut parts = file[at + "/registry/src/".len()..].splitn(3, '/');
        let _index = parts.next()?;
        let dir = parts.next()?;
        let path = parts.next()?.strip_prefix("src/")?;
        let cut = dir
            .char_indices()
            .find(|&(i, c)| c == '-' && dir[i + 1..].starts_with(|d: char| d.is_ascii_digit()))
            .map_or(dir.len(), |(i, _)| i);
        (dir[..cut].replace('-', "_"), path)
    } else {
        let at = file.find("library/")?;
        let (krate, path) = file[at + "library/".len()..].split_once("/src/")?;
        (krate.to_string(), path)
    };
    let module = path
        .trim_end_matches(".rs")
        .trim_end_matches("/mod")
        .trim_end_matches("lib")
        .trim_end_matches('/')
        .replace('/', "::");
    Some(if module.is_empty() {
        krate
    } else {
        format!("{krate}::{module}")
    })
}

/// A pprof frame name without its symbol hash (`::h0123456789abcdef`).
fn without_hash(name: &str) -> &str {
    match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            head
        }
        _ => name,
    }
}

fn role(function: &str, file: Option<&str>) -> Role {
    let function = without_hash(function);
    let mut path = module_path(function);
    if !path.contains("::") {
        if function.starts_with("__rust_") || function.starts_with("0x") || function.is_empty() {
            return Role::Glue;
        }
        let rust_file = file.is_some_and(|f| f.ends_with(".rs"));
        if !rust_file {
            let bare = function.trim_start_matches('_');
            let bare = bare
                .strip_prefix("GI_")
                .unwrap_or(bare)
                .trim_start_matches('_');
            return if START_UP_SYMBOLS.contains(&bare) {
                Role::StartUp
            } else {
                Role::Own
            };
        }
        match file.and_then(module_of_file) {
            Some(module) => path = format!("{module}::{path}"),
            None => return Role::Own,
        }
    }
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| path.starts_with(p));
    if starts(RUNTIME_PREFIXES) || starts(TASK_WRAPPER_PREFIXES) {
        Role::Runtime
    } else if starts(START_UP_PREFIXES) || path.contains("::thread_start") {
        Role::StartUp
    } else if starts(GLUE_PREFIXES) {
        Role::Glue
    } else {
        Role::Own
    }
}

/// One stack, outermost frame first, folded: how many leading frames went into the root-side
/// frame (and whether a runtime frame was among them), then the frames that stay, with runs
/// of runtime frames between frames of the program folded into [`RUNTIME_LABEL`].
fn fold(stack: &[(Role, String)]) -> (usize, bool, Vec<String>) {
    let n = stack.len();
    let first_own = stack.iter().position(|f| f.0 == Role::Own).unwrap_or(n);
    // Glue after the last runtime or start-up frame is the innermost code (a sleep, a lock):
    // never folded, nor is the innermost frame.
    let after_anchor = stack
        .iter()
        .rposition(|f| matches!(f.0, Role::Runtime | Role::StartUp))
        .map_or(0, |i| i + 1);
    let cut = first_own.min(after_anchor).min(n.saturating_sub(1));
    let runtime = stack[..cut].iter().any(|f| f.0 == Role::Runtime);
    let mut out = Vec::with_capacity(n - cut);
    let mut i = cut;
    while i < n {
        if stack[i].0 == Role::Own {
            out.push(stack[i].1.clone());
            i += 1;
            continue;
        }
        let end = (i..n).find(|&k| stack[k].0 == Role::Own).unwrap_or(n);
        // A run of plumbing that leads back into the program's code: keep the call into the
        // runtime (`Runtime::block_on`, `block_in_place`), fold what follows it.
        let entry = (i..end).find(|&k| stack[k].0 == Role::Runtime);
        match entry {
            Some(r) if end < n && r + 1 < end => {
                out.extend(stack[i..=r].iter().map(|f| f.1.clone()));
                out.push(RUNTIME_LABEL.to_string());
            }
            _ => out.extend(stack[i..end].iter().map(|f| f.1.clone())),
        }
        i = end;
    }
    (cut, runtime, out)
}

/// A stall frame as the graph names it: the function, then the file's name and the line.
pub(crate) fn frame_label(f: &Frame) -> String {
    let mut s = f.function.clone();
    if let (Some(file), Some(line)) = (&f.file, f.line) {
        let name = file.rsplit('/').next().unwrap_or(file);
        s.push_str(&format!(" ({name}:{line})"));
    }
    s
}

#[derive(Default)]
struct Node {
    weight: u64,
    children: BTreeMap<String, Node>,
    /// Stacks added under this node that were cut at [`MAX_DEPTH`].
    cut_stacks: usize,
}

impl Node {
    fn add(&mut self, stack: impl IntoIterator<Item = String>, weight: u64) {
        self.weight = self.weight.saturating_add(weight);
        let mut node = &mut *self;
        let mut frames = stack.into_iter();
        for frame in frames.by_ref().take(MAX_DEPTH) {
            node = node.children.entry(frame).or_default();
            node.weight = node.weight.saturating_add(weight);
        }
        if frames.next().is_some() {
            self.cut_stacks += 1;
        }
    }

    fn count(&self) -> usize {
        1 + self.children.values().map(Node::count).sum::<usize>()
    }

    fn weights(&self, out: &mut Vec<u64>) {
        out.push(self.weight);
        for c in self.children.values() {
            c.weights(out);
        }
    }
}

/// Both views of one graph, as the page's script reads them.
#[derive(Debug, Serialize)]
struct Data<'a> {
    /// The weight's unit (`µs`, `samples`).
    unit: &'a str,
    /// What the weight is, for the search's share (`stall time`, `samples`).
    what: &'a str,
    /// Every frame name, once.
    names: Vec<String>,
    /// Names that stand for folded frames, by index.
    synthetic: Vec<usize>,
    /// Frames of the folded view in depth-first order: name index, weight, depth; three
    /// numbers per frame.
    folded: Vec<u64>,
    /// The same for every frame.
    full: Vec<u64>,
    /// Frames too light to draw, per view.
    left_out: [usize; 2],
}

#[derive(Default)]
struct Names {
    index: BTreeMap<String, usize>,
    list: Vec<String>,
}

impl Names {
    fn id(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.list.push(name.to_string());
        self.index.insert(name.to_string(), self.list.len() - 1);
        self.list.len() - 1
    }
}

/// `root` in depth-first order, lightest frames beyond [`MAX_NODES`] left out: name index,
/// weight and depth per frame, and how many were left out.
fn flatten(root: &Node, names: &mut Names) -> (Vec<u64>, usize) {
    let total = root.count();
    // Keep the heaviest frames. A frame weighs at least as much as any frame under it, so
    // the kept set holds every kept frame's ancestors.
    let floor = if total > MAX_NODES {
        let mut w = Vec::with_capacity(total);
        root.weights(&mut w);
        w.sort_unstable_by(|a, b| b.cmp(a));
        w[MAX_NODES]
    } else {
        0
    };
    fn walk(name: &str, n: &Node, depth: u64, floor: u64, names: &mut Names, out: &mut Vec<u64>) {
        if depth > 0 && n.weight <= floor {
            return;
        }
        out.extend([names.id(name) as u64, n.weight, depth]);
        for (child, c) in &n.children {
            walk(child, c, depth + 1, floor, names, out);
        }
    }
    let mut out = Vec::new();
    walk("all", root, 0, floor, names, &mut out);
    let left_out = total - out.len() / 3;
    (out, left_out)
}

/// One flamegraph's stacks, ready to be drawn by the page.
#[derive(Debug)]
pub(crate) struct Flame {
    /// [`Data`] as JSON for a `<script>` element.
    data: String,
    /// The folded view differs from the full one: the page offers the toggle.
    foldable: bool,
    /// Frames too light to draw, in the view that left out more.
    left_out: usize,
    /// Stacks deeper than [`MAX_DEPTH`], cut there.
    cut_stacks: usize,
}

impl Flame {
    /// `None` when nothing weighs anything.
    fn new(folded: &Node, full: &Node, synthetic: &[&str], unit: &str, what: &str) -> Option<Self> {
        if full.weight == 0 {
            return None;
        }
        let mut names = Names::default();
        let (folded_flat, folded_out) = flatten(folded, &mut names);
        let (full_flat, full_out) = flatten(full, &mut names);
        let synthetic_ids = synthetic
            .iter()
            .filter_map(|s| names.index.get(*s).copied())
            .collect::<Vec<_>>();
        let data = Data {
            unit,
            what,
            synthetic: synthetic_ids,
            names: names.list,
            folded: folded_flat,
            full: full_flat,
            left_out: [folded_out, full_out],
        };
        let foldable = data.folded != data.full;
        Some(Flame {
            data: script_json(&data),
            foldable,
            left_out: folded_out.max(full_out),
            cut_stacks: full.cut_stacks,
        })
    }

    /// The widget: search box, reset button, the toggle, and the data the script draws.
    pub(crate) fn markup(&self, id: &str, what: &str) -> Markup {
        html! {
            div.flame id=(id) {
                div.flame-bar {
                    input.flame-search type="search" placeholder="Search frames"
                        aria-label=(format!("Search the {what} flamegraph's frames"));
                    button.flame-reset type="button" { "Reset" }
                    @if self.foldable {
                        label { input.flame-all type="checkbox"; " show all frames" }
                    }
                    span.flame-share aria-live="polite" {}
                }
                div.flame-info.muted aria-live="polite" {
                    "Click a frame to zoom; type to search; keys: arrows move, Enter zooms, Escape resets, / searches."
                }
                div.flame-svg {}
                noscript { p.muted { "The flamegraph is drawn by the page's script." } }
                @if self.left_out > 0 {
                    p.muted { (self.left_out) " frames too light to draw were left out." }
                }
                @if self.cut_stacks > 0 {
                    p.muted { (self.cut_stacks) " stacks were cut at " (MAX_DEPTH) " frames deep." }
                }
                script.flame-data type="application/json" { (PreEscaped(&self.data)) }
            }
        }
    }
}

/// `value` as JSON that can sit inside a `<script>` element: `<`, `>` and `&` are written as
/// `\u` escapes, so no string can close the element or open a comment, and U+2028 and
/// U+2029 too, so the text is also a valid JavaScript literal. The escapes can only occur in
/// strings (everything else in JSON is ASCII punctuation, digits and names), where JSON
/// reads them back as the same characters.
pub(crate) fn script_json(value: &impl Serialize) -> String {
    let json = serde_json::to_string(value).expect("plain data always serializes to JSON");
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Each stall's sampled stacks with their weight in microseconds of stall time: a stall's
/// duration is shared among its samples (its part's time among the part's,
/// [`asyncprof_format::StallRecord::stack_times`]), and every sampled stack weighs at least 1.
pub(crate) fn weighted_stall_stacks(
    run: &RunFile,
) -> impl Iterator<Item = (&asyncprof_format::StallRecord, &[Frame], u64)> {
    run.stalls.iter().flat_map(|stall| {
        stall
            .stack_times()
            .into_iter()
            .map(move |(stack, ns)| (stall, &stack.frames[..], (ns / 1000).max(1)))
    })
}

/// The stall flamegraph: weighted by stall time, each stack folded under its task.
pub(crate) fn stall_flame(run: &RunFile) -> Option<Flame> {
    let (mut folded, mut full) = (Node::default(), Node::default());
    let mut synthetic = vec![RUNTIME_LABEL.to_string()];
    for (stall, frames, us) in weighted_stall_stacks(run) {
        let stack: Vec<(Role, String)> = frames
            .iter()
            .rev()
            .map(|f| (role(&f.function, f.file.as_deref()), frame_label(f)))
            .collect();
        let root = match &stall.task_location {
            Some(loc) => format!("task spawned at {loc}"),
            None => RUNTIME_LABEL.to_string(),
        };
        let (_, _, rest) = fold(&stack);
        full.add(stack.into_iter().map(|f| f.1), us);
        folded.add(std::iter::once(root.clone()).chain(rest), us);
        synthetic.push(root);
    }
    synthetic.sort();
    synthetic.dedup();
    let synthetic: Vec<&str> = synthetic.iter().map(String::as_str).collect();
    Flame::new(&folded, &full, &synthetic, "µs", "stall time")
}

/// The CPU flamegraph of a folded profile (`thread;outermost;…;innermost count` per line):
/// each thread's start-up and runtime frames folded after the thread's name.
pub(crate) fn cpu_flame(folded_text: &str) -> Option<Flame> {
    let (mut folded, mut full) = (Node::default(), Node::default());
    for line in folded_text.lines() {
        let Some((stack, w)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(w) = w.parse::<u64>() else { continue };
        let mut parts = stack.split(';');
        let thread = parts.next().unwrap_or_default().to_string();
        let stack: Vec<(Role, String)> = parts
            .map(|f| (role(f, None), without_hash(f).to_string()))
            .collect();
        let (cut, runtime, rest) = fold(&stack);
        let label = (cut > 0).then_some(if runtime {
            RUNTIME_LABEL
        } else {
            START_UP_LABEL
        });
        full.add(
            std::iter::once(thread.clone()).chain(stack.into_iter().map(|f| f.1)),
            w,
        );
        folded.add(
            std::iter::once(thread)
                .chain(label.map(str::to_string))
                .chain(rest),
            w,
        );
    }
    Flame::new(
        &folded,
        &full,
        &[RUNTIME_LABEL, START_UP_LABEL],
        "samples",
        "samples",
    )
}

/// Styles of the widget.
pub(crate) const FLAME_STYLE: &str = include_str!("flame.css");

/// Draws every `.flame` widget and handles its clicks, search, reset, toggle and keys.
/// `#flame-test=…` in the address drives the widgets as a person would (real click, input
/// and key events) and writes what the page then shows into `<pre id="flame-test">`, for
/// the browser test: steps separated by `;`, each `verb=argument` with the argument
/// percent-encoded; verbs `on` (the widget's id), `click` (a drawn frame, by name), `search`,
/// `key`, `all` (the toggle), `reset`, `scroll` and `report`.
pub(crate) const FLAME_SCRIPT: &str = include_str!("flame.js");

#[cfg(test)]
mod tests {
    use super::*;
    use asyncprof_format::{read_bytes, Header, RunWriter, SourceLocation, StackSample};
    use asyncprof_format::{StallClass, StallRecord};

    const STD: &str = "/rustc/5980/library/std/src/rt.rs";

    /// A tokio 1.54 multi-thread worker's stack down to the poll of a task, as the symbolizer
    /// names it, outermost first.
    const WORKER: &[(&str, Option<&str>)] = &[
        ("clone3", Some("./misc/../sysdeps/unix/sysv/linux/x86_64/clone3.S")),
        ("start_thread", Some("./nptl/pthread_create.c")),
        ("<std::sys::thread::unix::Thread>::new::thread_start", Some(STD)),
        ("<alloc::boxed::Box<dyn core::ops::function::FnOnce<(), Output = ()> + core::marker::Send> as core::ops::function::FnOnce<()>>::call_once", Some(STD)),
        ("core::ops::function::FnOnce::call_once{{vtable.shim}}", Some(STD)),
        ("std::thread::lifecycle::spawn_unchecked::{{closure}}", Some(STD)),
        ("std::panic::catch_unwind", Some(STD)),
        ("__rust_try", None),
        ("<core::panic::unwind_safe::AssertUnwindSafe<F> as core::ops::function::FnOnce<()>>::call_once", Some(STD)),
        ("std::sys::backtrace::__rust_begin_short_backtrace", Some(STD)),
        ("tokio::runtime::blocking::pool::Inner::run", None),
        ("<tokio::runtime::blocking::task::BlockingTask<T> as core::future::future::Future>::poll", None),
        ("tokio::runtime::scheduler::multi_thread::worker::run", None),
        ("std::thread::local::LocalKey<T>::with", Some(STD)),
        ("tokio::runtime::scheduler::multi_thread::worker::Context::run_task", None),
        ("tokio::task::coop::budget", None),
        ("tokio::runtime::task::harness::Harness<T,S>::poll", None),
        ("tokio::runtime::task::harness::poll_future", None),
        ("std::panicking::catch_unwind::do_call", Some(STD)),
        ("tokio::runtime::task::core::Core<T,S>::poll", None),
        ("tokio::loom::std::unsafe_cell::UnsafeCell<T>::with_mut", None),
        ("tokio::runtime::task::core::Core<T,S>::poll::{{closure}}", None),
    ];

    /// A process's main thread down to the `main` of the program.
    const MAIN: &[(&str, Option<&str>)] = &[
        ("_start", None),
        ("__libc_start_main_impl", Some("./csu/../csu/libc-start.c")),
        ("__libc_start_call_main", None),
        ("main", None),
        ("std::rt::lang_start_internal", Some(STD)),
        ("std::panic::catch_unwind::<std::rt::lang_start_internal::{closure#0}, isize>", Some(STD)),
        ("<&dyn core::ops::function::Fn<(), Output = i32> + core::marker::Sync + core::panic::unwind_safe::RefUnwindSafe as core::ops::function::FnOnce<()>>::call_once", Some(STD)),
        ("std::rt::lang_start::{{closure}}", Some(STD)),
        ("std::sys::backtrace::__rust_begin_short_backtrace", Some(STD)),
        ("core::ops::function::FnOnce::call_once", Some(STD)),
    ];

    fn stack(frames: &[(&str, Option<&str>)]) -> Vec<(Role, String)> {
        frames
            .iter()
            .map(|&(f, file)| (role(f, file), f.to_string()))
            .collect()
    }

    fn with(
        prefix: &[(&'static str, Option<&'static str>)],
        tail: &[(&'static str, Option<&'static str>)],
    ) -> Vec<(&'static str, Option<&'static str>)> {
        prefix.iter().chain(tail).copied().collect()
    }

    const APP: Option<&str> = Some("src/service.rs");

    #[test]
    fn a_worker_stack_starts_at_its_task_and_keeps_the_call_that_blocked() {
        let tail = [
            ("service::handle::{{closure}}", APP),
            ("service::lookup", APP),
            ("std::thread::sleep", Some(STD)),
            ("std::sys::thread::unix::sleep", Some(STD)),
            ("clock_nanosleep", None),
        ];
        let s = stack(&with(WORKER, &tail));
        let (cut, runtime, rest) = fold(&s);
        assert_eq!(cut, WORKER.len());
        assert!(runtime);
        let kept: Vec<&str> = tail.iter().map(|f| f.0).collect();
        assert_eq!(rest, kept);
    }

    #[test]
    fn program_frames_between_runtime_frames_stay_and_the_runtime_after_them_folds() {
        let middle = [
            ("service::main", Some("src/main.rs")),
            ("tokio::runtime::runtime::Runtime::block_on", None),
            (
                "tokio::runtime::scheduler::current_thread::CoreGuard::block_on",
                None,
            ),
            ("std::thread::local::LocalKey<T>::try_with", Some(STD)),
            ("tokio::runtime::task::harness::Harness<T,S>::poll", None),
            (
                "tokio::runtime::task::core::Core<T,S>::poll::{{closure}}",
                None,
            ),
            ("service::crunch::{{closure}}", APP),
            (
                "<tokio::time::timeout::Timeout<T> as core::future::future::Future>::poll",
                None,
            ),
            ("service::checksum", APP),
        ];
        let (cut, runtime, rest) = fold(&stack(&with(MAIN, &middle)));
        assert_eq!(cut, MAIN.len());
        assert!(!runtime, "start-up only before main");
        assert_eq!(
            rest,
            [
                "service::main",
                "tokio::runtime::runtime::Runtime::block_on",
                RUNTIME_LABEL,
                "service::crunch::{{closure}}",
                // An API the task called, not the scheduler: kept.
                "<tokio::time::timeout::Timeout<T> as core::future::future::Future>::poll",
                "service::checksum",
            ]
        );
    }

    #[test]
    fn a_stack_of_plumbing_only_keeps_what_follows_the_last_runtime_frame() {
        let tail = [
            (
                "tokio::runtime::scheduler::multi_thread::park::Parker::park",
                None,
            ),
            ("std::thread::park", Some(STD)),
            ("std::sys::pal::unix::futex::futex_wait", Some(STD)),
            ("syscall", None),
        ];
        let (cut, _, rest) = fold(&stack(&with(WORKER, &tail)));
        assert_eq!(cut, WORKER.len() + 1);
        assert_eq!(
            rest,
            [
                "std::thread::park",
                "std::sys::pal::unix::futex::futex_wait",
                "syscall"
            ]
        );
        // The innermost frame is never folded, even when it is the runtime's.
        let (cut, _, rest) = fold(&stack(WORKER));
        assert_eq!(cut, WORKER.len() - 1);
        assert_eq!(rest, [WORKER[WORKER.len() - 1].0]);
        assert_eq!(fold(&[]), (0, false, vec![]));
    }

    #[test]
    fn frames_named_without_their_path_are_placed_by_their_file() {
        let reg = "/home/u/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f";
        let harness = format!("{reg}/tokio-1.54.1/src/runtime/task/harness.rs");
        assert_eq!(role("poll_future", Some(&harness)), Role::Runtime);
        let ureq = format!("{reg}/ureq-3.5.1/src/run.rs");
        assert_eq!(role("call", Some(&ureq)), Role::Own);
        let time = format!("{reg}/tokio-1.54.1/src/time/sleep.rs");
        assert_eq!(
            role("poll", Some(&time)),
            Role::Own,
            "an API, not the scheduler"
        );
        assert_eq!(role("lang_start", Some(STD)), Role::StartUp);
        assert_eq!(
            role("do_call", Some("/rustc/x/library/std/src/panicking.rs")),
            Role::Glue
        );
        // The program's own `main` built with line tables only, and the C `main`.
        assert_eq!(role("main", Some("src/main.rs")), Role::Own);
        assert_eq!(role("main", None), Role::StartUp);
        assert_eq!(role("__GI___clone3", None), Role::StartUp);
        assert_eq!(role("0x7f00deadbeef", None), Role::Glue);
        assert_eq!(role("epoll_wait", None), Role::Own);
    }

    #[test]
    fn qualified_paths_are_read_as_the_type_they_name() {
        assert_eq!(
            module_path("<std::sys::thread::unix::Thread>::new::thread_start"),
            "std::sys::thread::unix::Thread::new::thread_start"
        );
        assert_eq!(
            module_path("<&mut F as core::ops::function::FnOnce<A>>::call_once"),
            "core::ops::function::FnOnce<A>::call_once"
        );
        assert_eq!(
            module_path("<tokio::runtime::blocking::task::BlockingTask<T> as core::future::future::Future>::poll"),
            "tokio::runtime::blocking::task::BlockingTask<T>::poll"
        );
        assert_eq!(
            module_path("<dyn core::ops::function::Fn(&str) -> bool as core::ops::function::FnMut<A>>::call_mut"),
            "core::ops::function::Fn(&str) -> bool::call_mut"
        );
        assert_eq!(module_path("<unclosed"), "<unclosed");
        assert_eq!(
            without_hash("tokio::runtime::task::raw::poll::h0123456789abcdef"),
            "tokio::runtime::task::raw::poll"
        );
        assert_eq!(without_hash("a::hello"), "a::hello");
        assert_eq!(
            role("tokio::runtime::task::raw::poll::h0123456789abcdef", None),
            Role::Runtime
        );
        assert_eq!(
            role(
                "<tracing::instrument::Instrumented<T> as core::future::future::Future>::poll",
                None
            ),
            Role::Runtime
        );
    }

    fn frame(function: &str, file: Option<&str>, line: u32) -> Frame {
        Frame::new(function, file.map(str::to_string), Some(line))
    }

    fn stall(id: u64, task: Option<u32>, frames: &[(&str, Option<&str>)], ms: u64) -> StallRecord {
        let mut s = StallRecord::default();
        s.id = id;
        s.task_location = task.map(|line| SourceLocation::new("src/service.rs", line, 5));
        s.duration_ns = ms * 1_000_000;
        s.class = StallClass::Blocking;
        let mut sample = StackSample::default();
        sample.count = 2;
        sample.frames = frames
            .iter()
            .rev()
            .map(|&(f, file)| frame(f, file, 7))
            .collect();
        s.stacks = vec![sample];
        s
    }

    fn run(stalls: &[StallRecord]) -> RunFile {
        let mut bytes = Vec::new();
        let mut w = RunWriter::new(&mut bytes, &Header::new("svc")).unwrap();
        for s in stalls {
            w.write_stall(s).unwrap();
        }
        w.write_end().unwrap();
        read_bytes(&bytes).unwrap()
    }

    fn data(flame: &Flame) -> serde_json::Value {
        serde_json::from_str(&flame.data).unwrap()
    }

    /// The folded view's frames as `depth name weight`.
    fn rows(flame: &Flame, view: &str) -> Vec<String> {
        let d = data(flame);
        let names = d["names"].as_array().unwrap();
        d[view]
            .as_array()
            .unwrap()
            .chunks(3)
            .map(|c| {
                let name = names[c[0].as_u64().unwrap() as usize].as_str().unwrap();
                format!("{} {name} {}", c[2], c[1])
            })
            .collect()
    }

    #[test]
    fn stalls_are_grouped_under_their_task_and_every_frame_stays_in_the_full_view() {
        let tail = [("service::lookup", APP), ("std::thread::sleep", Some(STD))];
        let r = run(&[
            stall(1, Some(42), &with(WORKER, &tail), 30),
            stall(2, Some(42), &with(WORKER, &tail[..1]), 10),
            stall(3, None, &with(WORKER, &tail[..1]), 20),
        ]);
        let flame = stall_flame(&r).unwrap();
        assert_eq!(
            rows(&flame, "folded"),
            [
                "0 all 60000",
                "1 task spawned at src/service.rs:42:5 40000",
                "2 service::lookup (service.rs:7) 40000",
                "3 std::thread::sleep (rt.rs:7) 30000",
                "1 tokio runtime 20000",
                "2 service::lookup (service.rs:7) 20000",
            ]
        );
        let full = rows(&flame, "full");
        assert_eq!(full.len(), 1 + WORKER.len() + tail.len());
        assert_eq!(full[1], "1 clone3 (clone3.S:7) 60000");
        assert!(flame.foldable);
        let d = data(&flame);
        let synthetic: Vec<&str> = d["synthetic"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| d["names"][i.as_u64().unwrap() as usize].as_str().unwrap())
            .collect();
        assert_eq!(
            synthetic,
            ["task spawned at src/service.rs:42:5", RUNTIME_LABEL]
        );
        assert!(stall_flame(&run(&[])).is_none());
    }

    #[test]
    fn cpu_stacks_fold_after_the_thread_name() {
        let text = "\
tokio-runtime-worker;clone3;start_thread;std::sys::thread::unix::Thread::new::thread_start::h0123456789abcdef;tokio::runtime::scheduler::multi_thread::worker::run::h0123456789abcdef;mio::poll::Poll::poll::h0123456789abcdef;epoll_wait 5
main;_start;main;std::rt::lang_start_internal;svc::main::h0123456789abcdef 2
asyncprof-aggregator;svc::own 1
";
        let flame = cpu_flame(text).unwrap();
        assert_eq!(
            rows(&flame, "folded"),
            [
                "0 all 8",
                "1 asyncprof-aggregator 1",
                "2 svc::own 1",
                "1 main 2",
                "2 thread start-up 2",
                "3 svc::main 2",
                "1 tokio-runtime-worker 5",
                "2 tokio runtime 5",
                "3 mio::poll::Poll::poll 5",
                "4 epoll_wait 5",
            ]
        );
        assert!(cpu_flame("").is_none());
        assert!(cpu_flame("garbage\nx;y notanumber\n").is_none());
    }

    #[test]
    fn a_graph_past_its_frame_budget_keeps_the_heaviest_frames_and_counts_the_rest() {
        let mut root = Node::default();
        for i in 0..(MAX_NODES as u64) {
            root.add(
                [format!("a{}", i % 7), format!("b{i}"), format!("c{i}")],
                i + 1,
            );
        }
        let mut names = Names::default();
        let (flat, left_out) = flatten(&root, &mut names);
        let kept = flat.len() / 3;
        assert!(kept <= MAX_NODES, "{kept}");
        assert_eq!(kept + left_out, root.count());
        // Depth-first order holds: each frame is at most one level under the one before,
        // so every kept frame's parent was kept.
        for w in flat.chunks(3).collect::<Vec<_>>().windows(2) {
            assert!(w[1][2] <= w[0][2] + 1, "{w:?}");
        }
        // The heaviest stack is drawn whole.
        let heaviest = format!("c{}", MAX_NODES - 1);
        assert!(names.list.contains(&heaviest));
        assert!(!names.list.contains(&"c0".to_string()));
    }

    #[test]
    fn stacks_deeper_than_the_graph_are_cut_and_counted() {
        let deep: Vec<String> = (0..MAX_DEPTH + 10).map(|i| format!("svc::f{i}")).collect();
        let text = format!("worker;{} 3\nworker;svc::short 1\n", deep.join(";"));
        let flame = cpu_flame(&text).unwrap();
        assert_eq!(flame.cut_stacks, 1);
        let full = rows(&flame, "full");
        assert_eq!(full.last().unwrap(), "2 svc::short 1");
        assert!(full
            .iter()
            .any(|r| r.starts_with(&format!("{MAX_DEPTH} svc::f{}", MAX_DEPTH - 2))));
        let html = flame.markup("f", "CPU").into_string();
        assert!(
            html.contains(&format!("1 stacks were cut at {MAX_DEPTH} frames deep.")),
            "{html}"
        );
    }

    /// A frame name that tries to close the script element, open a comment, break a
    /// JavaScript string with a line separator, or pass as an entity.
    const HOSTILE: &str = "</script><script>alert(1)</script><!-- \u{2028}\u{2029} &amp; \"' <b>";

    #[test]
    fn hostile_frame_names_cannot_leave_the_data_element() {
        let frames = [(HOSTILE, APP), ("</SCRIPT >", None)];
        let mut s = stall(1, Some(1), &frames, 5);
        s.task_location = Some(SourceLocation::new("src/</script>.rs", 1, 1));
        let flame = stall_flame(&run(&[s])).unwrap();
        for bad in ['<', '>', '&', '\u{2028}', '\u{2029}'] {
            assert!(!flame.data.contains(bad), "{bad:?} in {}", flame.data);
        }
        // The names read back unchanged.
        let d = data(&flame);
        let names: Vec<&str> = d["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        assert!(
            names.contains(&format!("{HOSTILE} (service.rs:7)").as_str()),
            "{names:?}"
        );
        assert!(
            names.contains(&"task spawned at src/</script>.rs:1:1"),
            "{names:?}"
        );
        // In the page: exactly one element's end, its own.
        let html = flame.markup("f", "stall").into_string();
        assert_eq!(
            html.to_ascii_lowercase().matches("</script").count(),
            1,
            "{html}"
        );
        assert!(!html.contains("<!--"));
        assert!(html.ends_with("</script></div>"), "{html}");
    }
}
