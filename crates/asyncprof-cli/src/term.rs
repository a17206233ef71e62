//! Terminal conventions: colors only on a terminal and never with `NO_COLOR`; errors as one
//! line on standard error.

use std::io::IsTerminal;

/// Whether standard error may be colored.
pub(crate) fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// `text` in the ANSI color `code` when colors are on.
pub(crate) fn paint(text: &str, code: &str) -> String {
    if color() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// Print an error: one line, `error: ` and the cause chain.
pub(crate) fn error(message: &str) {
    eprintln!("{}: {message}", paint("error", "1;31"));
}

/// Print a warning line.
pub(crate) fn warn(message: &str) {
    eprintln!("{}: {message}", paint("warning", "1;33"));
}

/// Write `bytes` to standard output. A reader that closed the pipe early (`| head`) has what
/// it wanted: that is not an error, and what the command goes on to decide (its exit code, a
/// gate such as `--fail-on-regression`) stands.
pub(crate) fn print_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}
