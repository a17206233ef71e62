use std::path::PathBuf;

/// What can go wrong reading or writing a run file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened, read or written. Check the path and its permissions.
    #[error("cannot access run file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Writing to the underlying writer failed (disk full, closed pipe).
    #[error("cannot write run file")]
    Write(#[source] std::io::Error),
    /// The file does not start with the run-file magic: it is not a run file, or its first
    /// bytes were overwritten.
    #[error("not an asyncprof run file: expected magic \"APROFRUN\" at byte 0")]
    NotARunFile,
    /// The file ends before its header record is complete, so nothing in it can be used.
    /// Happens when a service was killed within its first moments.
    #[error("run file is truncated at byte {len} before its header record is complete")]
    TruncatedHeader {
        /// Bytes present.
        len: u64,
    },
    /// The file was written by a newer asyncprof. Upgrade the `asyncprof` command.
    #[error(
        "run file format version {found} is newer than this asyncprof reads (version {supported})"
    )]
    UnsupportedVersion {
        /// The version in the file.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// Bytes in the file do not have the expected shape: a flipped byte, an overwritten
    /// region, or a file written by something else.
    #[error("run file is damaged at byte {offset}: expected {expected}")]
    Corrupt {
        /// Where the damage was found.
        offset: u64,
        /// What the reader expected there.
        expected: String,
    },
    /// A frame's checksum matched but its JSON payload does not decode as its record kind.
    #[error("run file record at byte {offset} does not decode as a {kind} record")]
    Decode {
        /// Where the frame starts.
        offset: u64,
        /// The record kind.
        kind: &'static str,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// A record is too large to be written as one frame.
    #[error("record of {len} bytes is larger than the {max}-byte frame limit")]
    RecordTooLarge {
        /// The encoded size.
        len: usize,
        /// The limit, [`crate::MAX_FRAME_LEN`].
        max: u32,
    },
    /// A record could not be encoded (a bug: every record type is plain data).
    #[error("cannot encode a {kind} record")]
    Encode {
        /// The record kind.
        kind: &'static str,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
