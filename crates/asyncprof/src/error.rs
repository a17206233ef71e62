use std::path::PathBuf;

/// What can go wrong starting a recording.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An `ASYNCPROF_*` environment variable holds a value asyncprof cannot use. Fix or unset
    /// the variable.
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What a valid value looks like.
        reason: &'static str,
    },
    /// A builder setting is out of range.
    #[error("invalid setting {setting}: {reason}")]
    Setting {
        /// The builder method.
        setting: &'static str,
        /// What a valid value looks like.
        reason: &'static str,
    },
    /// The run file cannot be created. Check that its folder exists and is writable, or set
    /// `ASYNCPROF_OUT` to another path.
    #[error("cannot create run file {path}: {source}")]
    Output {
        /// The path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A recording is already running in this process; drop its guard first.
    #[error("asyncprof is already recording in this process (to {path})")]
    AlreadyRunning {
        /// The running recording's run file.
        path: PathBuf,
    },
    /// A background thread could not be started.
    #[error("cannot start the {name} thread")]
    Thread {
        /// The thread's name.
        name: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
