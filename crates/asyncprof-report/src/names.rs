//! Names for the bodies the compiler leaves anonymous.
//!
//! A release build with `debug = "line-tables-only"` (what asyncprof asks for) names the body
//! of an `async fn` `{async_fn#0}` and a closure `{closure#0}`, without the path of the
//! function they belong to. A finding "in {async_fn#0}" has the right file and line but a name
//! nobody can search for; where the source file is readable, the `fn` that holds the line
//! names it instead.

use crate::Finding;

/// The kinds of anonymous body, by the compiler's name for them.
const ANONYMOUS: &[(&str, &str)] = &[
    ("{async_fn#", "async fn"),
    ("{async_block#", "async block"),
    ("{closure#", "closure"),
    ("{{closure}}", "closure"),
    ("{async_closure#", "async closure"),
];

/// What kind of anonymous body `function` is (`async fn`, `closure`, …), or `None` for a
/// named function. Only bare names count: `app::run::{{closure}}` already says where it is.
pub fn anonymous_kind(function: &str) -> Option<&'static str> {
    let f = function.trim();
    if f.contains("::") {
        return None;
    }
    ANONYMOUS
        .iter()
        .find(|(prefix, _)| f.starts_with(prefix))
        .map(|(_, kind)| *kind)
}

/// Leading whitespace of a line, in columns (a tab counts 4).
fn indent(line: &str) -> usize {
    line.chars()
        .take_while(|c| c.is_whitespace())
        .map(|c| if c == '\t' { 4 } else { 1 })
        .sum()
}

/// The name a line declares with `fn NAME`, after any `pub`, `pub(...)`, `const`, `async`,
/// `unsafe` and `extern "ABI"`.
fn declared_fn(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    loop {
        let before = rest;
        if let Some(r) = rest.strip_prefix("pub(") {
            rest = r.split_once(')')?.1.trim_start();
        }
        for word in ["pub ", "const ", "async ", "unsafe ", "default "] {
            if let Some(r) = rest.strip_prefix(word) {
                rest = r.trim_start();
            }
        }
        if let Some(r) = rest.strip_prefix("extern ") {
            rest = r.trim_start();
            if let Some(r) = rest.strip_prefix('"') {
                rest = r.split_once('"')?.1.trim_start();
            }
        }
        if rest == before {
            break;
        }
    }
    let rest = rest.strip_prefix("fn ")?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// The function whose body holds line `line` (1-based) of `source`: the nearest `fn NAME`
/// above it that is indented less than it (or on the line itself, for a one-line body).
pub fn enclosing_fn(source: &str, line: u32) -> Option<String> {
    let lines: Vec<&str> = source.lines().collect();
    let at = usize::try_from(line).ok()?.checked_sub(1)?;
    let target = *lines.get(at)?;
    if let Some(name) = declared_fn(target) {
        return Some(name.to_string());
    }
    let depth = indent(target);
    lines[..at]
        .iter()
        .rev()
        .filter(|l| !l.trim().is_empty() && indent(l) < depth)
        .find_map(|l| declared_fn(l))
        .map(str::to_string)
}

/// Name the anonymous functions of `findings` after the `fn` that holds their line, where
/// `source` can read the file: `{async_fn#0}` at a line of `async fn render` becomes
/// `render (async fn)`, a closure in `fetch` becomes `fetch (closure)`. Other names, and
/// files `source` cannot read, stay as they are.
pub fn name_anonymous(findings: &mut [Finding], source: &dyn Fn(&str) -> Option<String>) {
    for f in findings {
        // The other lines of a merged finding (`FILE:LINE in FUNCTION (N stalls, KIND)`).
        for also in f.also.iter_mut().chain(f.called_from.iter_mut()) {
            if let Some(named) = name_also(also, source) {
                *also = named;
            }
        }
        let l = &mut f.location;
        if let Some(name) = anonymous_name(&l.function, &l.file, l.line, source) {
            l.function = name;
        } else if l.function.is_empty() && !l.file.is_empty() {
            // A spawn or `spawn_blocking` call site (the runtime-wide kinds): no stack named
            // a function; the `fn` that holds the line does.
            if let Some(name) = source(&l.file).and_then(|text| enclosing_fn(&text, l.line)) {
                l.function = name;
            }
        }
    }
}

/// Name the merged primitive of each finding (`Finding::primitive_same_code`: a function
/// whose machine code the compiler merged with others', so the address names any of them)
/// after the one its line calls, where `source` can read the file: the line
/// `let n = stream.read(&mut buf)?;` calls `read`, so `std::net::TcpStream::read`, not
/// `std::net::UdpSocket::recv`. A line that calls none of the names, or several (two `read`s
/// of different types), leaves every name shown.
pub fn name_merged_primitives(findings: &mut [Finding], source: &dyn Fn(&str) -> Option<String>) {
    for f in findings {
        let Some(p) = f.primitive.clone() else {
            continue;
        };
        if f.primitive_same_code.is_empty() || f.location.file.is_empty() {
            continue;
        }
        let Some(text) = source(&f.location.file) else {
            continue;
        };
        let Some(line) = text.lines().nth((f.location.line as usize).wrapping_sub(1)) else {
            continue;
        };
        let names = std::iter::once(&p).chain(&f.primitive_same_code);
        let called: Vec<&String> = names
            .filter(|n| calls(line, &asyncprof_format::culprit::last_segment(n)))
            .collect();
        let [chosen] = called[..] else {
            continue;
        };
        let before = crate::diagnoses::call(Some(&p), &f.primitive_same_code);
        let after = crate::diagnoses::call(Some(chosen), &[]);
        f.recommendation = f.recommendation.replace(&before, &after);
        f.primitive = Some(chosen.clone());
        f.primitive_same_code.clear();
    }
}

/// Whether source line `line` calls `method`: `method(` or `method::<`, not inside a longer
/// name (`read` is not called by `read_line(` or `unread(`).
fn calls(line: &str, method: &str) -> bool {
    if method.is_empty() {
        return false;
    }
    line.match_indices(method).any(|(i, _)| {
        let before = line[..i].chars().next_back();
        let after = &line[i + method.len()..];
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && (after.starts_with('(') || after.starts_with("::<"))
    })
}

/// A merged finding's other line, `FILE:LINE in FUNCTION (…)`, with its anonymous function
/// named as [`anonymous_name`] names it; `None` when it is not of that form or keeps its name.
fn name_also(also: &str, source: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    // A caller's way (`a:65 in call, called from a:132 in {async_fn#0} (N stalls)`): each
    // step named, the last with the counts.
    if let Some((first, rest)) = also.split_once(crate::findings::CALLED_FROM) {
        let first = name_place(first, source).unwrap_or_else(|| first.to_string());
        let rest = name_also(rest, source).unwrap_or_else(|| rest.to_string());
        return Some(format!("{first}{}{rest}", crate::findings::CALLED_FROM));
    }
    let (at, rest) = also.split_once(" in ")?;
    let (function, tail) = rest.split_once(" (")?;
    let named = name_place(&format!("{at} in {function}"), source)?;
    Some(format!("{named} ({tail}"))
}

/// One step of a caller's way, `file:line in function` (no counts), with its function named
/// as [`name_also`] names it.
fn name_place(place: &str, source: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let (at, function) = place.split_once(" in ")?;
    let (file, line) = at.rsplit_once(':')?;
    let name = anonymous_name(function, file, line.parse().ok()?, source)?;
    Some(format!("{at} in {name}"))
}

/// An anonymous `function` at `file:line` named after the `fn` that holds that line, as
/// [`name_anonymous`] names findings (`render (async fn)`); `None` when it has a name of its
/// own, or `source` cannot read the file, or no `fn` holds the line.
pub fn anonymous_name(
    function: &str,
    file: &str,
    line: u32,
    source: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    let kind = anonymous_kind(function)?;
    let name = enclosing_fn(&source(file)?, line)?;
    Some(format!("{name} ({kind})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"use std::io;

pub(crate) async fn render_markdown(path: &str) -> io::Result<String> {
    let source = tokio::fs::read_to_string(path).await?;
    let html = markdown_to_html(&source);
    Ok(html)
}

fn spawn_all(urls: Vec<String>) {
    for u in urls {
        tokio::spawn(async move {
            fetch(&u).await;
        });
    }
    let f = |x: u64| x * 2;
}
"#;

    #[test]
    fn anonymous_bodies_are_told_from_named_functions() {
        assert_eq!(anonymous_kind("{async_fn#0}"), Some("async fn"));
        assert_eq!(anonymous_kind("{closure#2}"), Some("closure"));
        assert_eq!(anonymous_kind("{async_block#0}"), Some("async block"));
        assert_eq!(anonymous_kind("{{closure}}"), Some("closure"));
        assert_eq!(anonymous_kind("compress_file"), None);
        assert_eq!(anonymous_kind("app::run::{{closure}}"), None);
    }

    #[test]
    fn a_line_is_named_after_the_fn_that_holds_it() {
        assert_eq!(enclosing_fn(SRC, 5).as_deref(), Some("render_markdown"));
        assert_eq!(enclosing_fn(SRC, 3).as_deref(), Some("render_markdown"));
        // Inside an async block inside a loop: still spawn_all.
        assert_eq!(enclosing_fn(SRC, 12).as_deref(), Some("spawn_all"));
        assert_eq!(enclosing_fn(SRC, 15).as_deref(), Some("spawn_all"));
        // Outside any fn, and past the end.
        assert_eq!(enclosing_fn(SRC, 1), None);
        assert_eq!(enclosing_fn(SRC, 400), None);
        assert_eq!(enclosing_fn(SRC, 0), None);
        assert_eq!(
            declared_fn("    pub(in crate::a) const unsafe extern \"C\" fn go(x: i32)"),
            Some("go")
        );
        assert_eq!(declared_fn("    let fnord = 1;"), None);
    }

    fn finding(file: &str, line: u32, function: &str) -> Finding {
        Finding {
            kind: "cpu-bound-poll",
            severity: crate::Severity::Warning,
            location: crate::FindingLocation {
                file: file.into(),
                line,
                function: function.into(),
            },
            primitive: None,
            primitive_same_code: Vec::new(),
            syscall: None,
            count: 1,
            total_ms: 20.0,
            max_ms: 20.0,
            recommendation: String::new(),
            task_location: None,
            stack: Vec::new(),
            queue: None,
            also: Vec::new(),
            called_from: Vec::new(),
            runtimes: Vec::new(),
            evidence: Vec::new(),
        }
    }

    /// Known truth: std's `TcpStream::read` and `UdpSocket::recv` are one function in a
    /// release build and the stack named `UdpSocket::recv`; the line calls `.read(`.
    #[test]
    fn a_merged_primitive_is_named_after_the_call_its_line_makes() {
        let merged = |line: u32| {
            let mut f = finding("src/db.rs", line, "query");
            f.primitive = Some("std::net::UdpSocket::recv".into());
            f.primitive_same_code = vec![
                "std::net::TcpStream::read".into(),
                "std::os::unix::net::datagram::UnixDatagram::recv".into(),
            ];
            f.recommendation = crate::diagnoses::blocking_call::recommendation(
                f.primitive.as_deref(),
                &f.primitive_same_code,
                Some("recvfrom"),
                25.0,
            );
            f
        };
        let src = "fn query(s: &mut TcpStream) -> usize {\n    let n = s.read(&mut buf).unwrap();\n    s.read_line(&mut text).unwrap();\n}\n";
        let source = |file: &str| (file == "src/db.rs").then(|| src.to_string());
        let mut found = vec![merged(2), merged(3), merged(9)];
        assert!(found[0]
            .recommendation
            .contains("(or `std::net::TcpStream::read`"));
        name_merged_primitives(&mut found, &source);
        assert_eq!(
            found[0].primitive.as_deref(),
            Some("std::net::TcpStream::read")
        );
        assert!(found[0].primitive_same_code.is_empty());
        assert!(
            found[0]
                .recommendation
                .starts_with("`std::net::TcpStream::read` blocked the worker thread"),
            "{}",
            found[0].recommendation
        );
        assert_eq!(
            found[0].primitive_text().as_deref(),
            Some("std::net::TcpStream::read")
        );
        // `read_line(` is not a call of `read`; a line past the end: every name stays.
        for f in &found[1..] {
            assert_eq!(f.primitive.as_deref(), Some("std::net::UdpSocket::recv"));
            assert_eq!(f.primitive_same_code.len(), 2);
            assert!(f
                .primitive_text()
                .unwrap()
                .contains("(or std::net::TcpStream::read, "));
        }
    }

    #[test]
    fn findings_get_the_name_where_the_source_is_readable() {
        let mut f = finding("src/render.rs", 5, "{async_fn#0}");
        let mut other = finding("src/gone.rs", 5, "{closure#0}");
        let source = |file: &str| (file == "src/render.rs").then(|| SRC.to_string());
        name_anonymous(std::slice::from_mut(&mut f), &source);
        name_anonymous(std::slice::from_mut(&mut other), &source);
        assert_eq!(f.location.function, "render_markdown (async fn)");
        assert_eq!(
            other.location.function, "{closure#0}",
            "no source: unchanged"
        );
    }

    /// A merged finding's other lines are named as its own: the lock wait of a deadlock's
    /// second task, in an async block of `spawn_all`.
    #[test]
    fn a_merged_finding_s_other_lines_get_their_names_too() {
        let mut f = finding("src/render.rs", 5, "{async_fn#0}");
        f.also = vec![
            "src/render.rs:13 in {async_block#1} (1 stall, runtime-blocked)".into(),
            "src/gone.rs:7 in {closure#0} (2 stalls, blocking-call)".into(),
            "3 more stalls at this line were blocking-call".into(),
        ];
        let source = |file: &str| (file == "src/render.rs").then(|| SRC.to_string());
        name_anonymous(std::slice::from_mut(&mut f), &source);
        assert_eq!(
            f.also,
            [
                "src/render.rs:13 in spawn_all (async block) (1 stall, runtime-blocked)",
                "src/gone.rs:7 in {closure#0} (2 stalls, blocking-call)",
                "3 more stalls at this line were blocking-call",
            ]
        );
        // A caller's way: each step named, the counts kept at the end.
        f.called_from = vec![
            "src/render.rs:15 in {closure#0}, called from src/render.rs:4 in {async_fn#0} (2 stalls)"
                .into(),
        ];
        name_anonymous(std::slice::from_mut(&mut f), &source);
        assert_eq!(
            f.called_from,
            [
                "src/render.rs:15 in spawn_all (closure), called from src/render.rs:4 in \
              render_markdown (async fn) (2 stalls)"
            ]
        );
    }
}
