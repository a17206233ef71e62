//! `asyncprof run -- CMD`: run a user's program with recording switched on.
pub(crate) fn run(_args: &crate::RunArgs, _quiet: bool) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("not yet")
}
