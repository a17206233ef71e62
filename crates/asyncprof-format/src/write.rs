use std::io::Write;

use serde::Serialize;

use crate::{
    Error, Header, Result, Snapshot, FORMAT_VERSION, FRAME_HEADER_LEN, FRAME_MARKER, MAGIC,
    MAX_FRAME_LEN,
};

/// The kinds of record a frame can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordKind {
    /// [`Header`]: always the first frame; a later one supersedes it.
    Header,
    /// [`Snapshot`].
    Snapshot,
    /// The run ended normally; no payload fields yet.
    End,
    /// [`crate::StallRecord`].
    Stall,
    /// [`crate::CpuProfile`]: written once, when recording stops.
    CpuProfile,
    /// [`crate::Continued`]: the last record of a part of a run whose file reached its size
    /// limit; the run goes on in a new file ([`Header::part`]).
    Continued,
}

impl RecordKind {
    pub(crate) fn code(self) -> u8 {
        match self {
            RecordKind::Header => 1,
            RecordKind::Snapshot => 2,
            RecordKind::End => 3,
            RecordKind::Stall => 4,
            RecordKind::CpuProfile => 5,
            RecordKind::Continued => 6,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(RecordKind::Header),
            2 => Some(RecordKind::Snapshot),
            3 => Some(RecordKind::End),
            4 => Some(RecordKind::Stall),
            5 => Some(RecordKind::CpuProfile),
            6 => Some(RecordKind::Continued),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            RecordKind::Header => "header",
            RecordKind::Snapshot => "snapshot",
            RecordKind::End => "end",
            RecordKind::Stall => "stall",
            RecordKind::CpuProfile => "cpu profile",
            RecordKind::Continued => "continued",
        }
    }
}

/// Encode one record as a complete frame, ready to append to a run file.
///
/// The service's background thread encodes off the writer so that a slow disk delays only
/// the writer, never the encoding of the next snapshot.
///
/// # Errors
///
/// [`Error::RecordTooLarge`] when the encoded payload exceeds [`MAX_FRAME_LEN`].
pub fn encode_frame<T: Serialize>(kind: RecordKind, record: &T) -> Result<Vec<u8>> {
    let payload = serde_json::to_vec(record).map_err(|source| Error::Encode {
        kind: kind.name(),
        source,
    })?;
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|len| *len <= MAX_FRAME_LEN)
        .ok_or(Error::RecordTooLarge {
            len: payload.len(),
            max: MAX_FRAME_LEN,
        })?;
    let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    frame.push(FRAME_MARKER);
    frame.push(kind.code());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    let header_crc = crc32fast::hash(&frame);
    frame.extend_from_slice(&header_crc.to_le_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// The frame that marks a run as ended normally.
pub fn end_frame() -> Vec<u8> {
    encode_frame(RecordKind::End, &serde_json::json!({}))
        .expect("an empty JSON object always encodes within the frame limit")
}

/// The file preamble: magic and format version. A writer that encodes frames itself
/// ([`encode_frame`]) starts the file with these bytes, then the header frame.
pub fn preamble() -> [u8; crate::PREAMBLE_LEN] {
    let mut p = [0u8; crate::PREAMBLE_LEN];
    p[..8].copy_from_slice(MAGIC);
    p[8..].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    p
}

/// Writes a run file: the preamble and header on creation, then records.
///
/// ```
/// use asyncprof_format::{Header, RunWriter, Snapshot};
/// # fn main() -> Result<(), asyncprof_format::Error> {
/// let mut out = Vec::new();
/// let mut w = RunWriter::new(&mut out, &Header::new("svc"))?;
/// w.write_snapshot(&Snapshot::default())?;
/// w.write_end()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RunWriter<W: Write> {
    out: W,
}

impl<W: Write> RunWriter<W> {
    /// Start a run file on `out` with its header.
    ///
    /// # Errors
    ///
    /// [`Error::Write`] when `out` refuses the bytes.
    pub fn new(mut out: W, header: &Header) -> Result<Self> {
        let frame = encode_frame(RecordKind::Header, header)?;
        out.write_all(&preamble()).map_err(Error::Write)?;
        out.write_all(&frame).map_err(Error::Write)?;
        out.flush().map_err(Error::Write)?;
        Ok(RunWriter { out })
    }

    /// Append a header that supersedes the first one, with facts learnt since the start
    /// (tier, runtime flavor, workers), and flush it. Readers keep the latest header.
    ///
    /// # Errors
    ///
    /// [`Error::Write`] when `out` refuses the bytes.
    pub fn write_header(&mut self, header: &Header) -> Result<()> {
        let frame = encode_frame(RecordKind::Header, header)?;
        self.write_frame(&frame)
    }

    /// Append a snapshot and flush it.
    ///
    /// # Errors
    ///
    /// [`Error::Write`] when `out` refuses the bytes.
    pub fn write_snapshot(&mut self, snapshot: &Snapshot) -> Result<()> {
        let frame = encode_frame(RecordKind::Snapshot, snapshot)?;
        self.write_frame(&frame)
    }

    /// Append a frame made by [`encode_frame`] and flush it.
    ///
    /// # Errors
    ///
    /// [`Error::Write`] when `out` refuses the bytes.
    pub fn write_frame(&mut self, frame: &[u8]) -> Result<()> {
        self.out.write_all(frame).map_err(Error::Write)?;
        self.out.flush().map_err(Error::Write)
    }

    /// Append a stall record and flush it.
    ///
    /// # Errors
    ///
    /// [`Error::Write`] when `out` refuses the bytes.
    pub fn write_stall(&mut self, stall: &crate::StallRecord) -> Result<()> {
        let frame = encode_frame(RecordKind::Stall, stall)?;
        self.write_frame(&frame)
    }

    /// Mark the run as ended normally.
    ///
    /// # Errors
    ///
    /// [`Error::Write`] when `out` refuses the bytes.
    pub fn write_end(&mut self) -> Result<()> {
        self.write_frame(&end_frame())
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}
