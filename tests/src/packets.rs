//! Frames and packet logs: reading what the daemons wrote (the format of `hj212_codec::log`).

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use hj212_codec::encode::OwnedPacket;
use hj212_codec::log::Record;
use hj212_codec::{Packet, Split, Splitter};

/// Parses one whole frame (`##…\r\n`) into an owned packet; the CRC is not checked (a logged frame
/// has its password masked).
#[must_use]
pub fn parse_frame(bytes: &[u8]) -> Option<OwnedPacket> {
    let Split::Frame(f) = Splitter::default().split(bytes, true) else { return None };
    Packet::parse(f.data()).ok().map(|p| OwnedPacket::from_packet(&p))
}

/// The command code of a packet (0 when missing).
#[must_use]
pub fn cn(p: &OwnedPacket) -> u16 {
    p.field("CN").and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// True for the answers and notices of HJ 212-2017 Table 9 (90xx): they carry no data.
#[must_use]
pub const fn is_answer(cn: u16) -> bool {
    cn >= 9000
}

/// Follows a packet log: each call to [`LogTail::poll`] returns the records appended since.
#[derive(Debug)]
pub struct LogTail {
    path: PathBuf,
    pos: u64,
    partial: String,
}

impl LogTail {
    /// Follows `path` from its start (the file may not exist yet).
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), pos: 0, partial: String::new() }
    }

    /// Records written since the last call; an unreadable line is skipped.
    pub fn poll(&mut self) -> Vec<Record> {
        let Ok(mut f) = std::fs::File::open(&self.path) else { return Vec::new() };
        let len = f.metadata().map_or(0, |m| m.len());
        if len < self.pos {
            // Rotated: start over on the new file.
            self.pos = 0;
            self.partial.clear();
        }
        if f.seek(SeekFrom::Start(self.pos)).is_err() {
            return Vec::new();
        }
        let mut bytes = Vec::new();
        if f.read_to_end(&mut bytes).is_err() {
            return Vec::new();
        }
        self.pos += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let mut out = Vec::new();
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            if let Ok(r) = Record::parse_line(&line) {
                out.push(r);
            }
        }
        out
    }
}

/// Every record of a packet log.
#[must_use]
pub fn read_log(path: &Path) -> Vec<Record> {
    LogTail::new(path).poll()
}
