//! The packet log: one line per frame sent or received, shared by the gateway, the ingest daemon
//! and `hj212 tail` (one writer, one reader, defined here once).
//!
//! A record is one line of UTF-8 text, five fields separated by single spaces:
//!
//! ```text
//! 2026-11-28T14:43:16.123Z in 127.0.0.1:40112 masked ##0101QN=…;PW=******;…&&1C80\r\n
//! ```
//!
//! 1. the time, UTC, RFC 3339 with milliseconds;
//! 2. the direction, `in` or `out`, seen from the process that writes the log;
//! 3. the peer, without spaces (`127.0.0.1:40112`, `serial:/dev/ttyUSB0`);
//! 4. markers, comma-separated, or `-`: `masked` when the password was replaced by `*` (the
//!    default: passwords never reach logs), `crc-bad` when the frame's CRC did not verify when it
//!    was logged (a masked frame cannot be re-checked, so the verdict is kept);
//! 5. the frame, escaped: `\\` for a backslash, `\r` and `\n` for CR and LF, `\xNN` for other
//!    control bytes and bytes that are not UTF-8; everything else as it is.
//!
//! Files rotate by size: `packets.log` → `packets.log.1` → … up to a configured count.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use crate::time::DateTime;

/// Which way a frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received.
    In,
    /// Sent.
    Out,
}

impl Direction {
    /// `in` or `out`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }
}

/// One packet-log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Milliseconds since 1970-01-01 UTC.
    pub time_ms: i64,
    /// Sent or received.
    pub direction: Direction,
    /// The other end.
    pub peer: String,
    /// The password was masked.
    pub masked: bool,
    /// The CRC did not verify when logged.
    pub crc_bad: bool,
    /// The frame bytes (with the password masked when `masked`).
    pub frame: Vec<u8>,
}

/// Keys whose values are secrets: the access password, a new password (2017 `NewPW`, 2005 `PW`
/// inside `CP` of CN 1072) and an HJ 212-2025 key (`NewSK`).
const SECRET_KEYS: [&[u8]; 3] = [b"PW=", b"NewPW=", b"NewSK="];

/// Replaces every secret value in a frame (`PW`, `NewPW`, `NewSK`) with `*` of the same length.
///
/// Returns true when anything was masked. A key counts only at a field boundary: at the start of
/// the data segment, or after `;`, `,` or `&&`.
pub fn mask_password(frame: &mut [u8]) -> bool {
    let mut masked = false;
    for key in SECRET_KEYS {
        let mut from = 0;
        while let Some(i) = memchr::memmem::find(&frame[from..], key) {
            let at = from + i;
            from = at + key.len();
            let boundary = at == 6 || matches!(frame.get(at.wrapping_sub(1)), Some(b';' | b',' | b'&'));
            if !boundary {
                continue;
            }
            let start = at + key.len();
            let end = frame[start..]
                .iter()
                .position(|&b| matches!(b, b';' | b',' | b'&' | b'\r' | b'\n'))
                .map_or(frame.len(), |n| start + n);
            frame[start..end].fill(b'*');
            masked |= end > start;
        }
    }
    masked
}

impl Record {
    /// Writes the record as one line, with the trailing LF.
    #[must_use]
    pub fn to_line(&self) -> String {
        let mut s = String::with_capacity(self.frame.len() + 64);
        write_time(&mut s, self.time_ms);
        s.push(' ');
        s.push_str(self.direction.as_str());
        s.push(' ');
        if self.peer.is_empty() {
            s.push('-');
        } else {
            s.extend(self.peer.chars().map(|c| if c.is_whitespace() { '_' } else { c }));
        }
        s.push(' ');
        match (self.masked, self.crc_bad) {
            (false, false) => s.push('-'),
            (true, false) => s.push_str("masked"),
            (false, true) => s.push_str("crc-bad"),
            (true, true) => s.push_str("masked,crc-bad"),
        }
        s.push(' ');
        escape(&self.frame, &mut s);
        s.push('\n');
        s
    }

    /// Reads one line (with or without its LF).
    ///
    /// # Errors
    /// The field that could not be read and its byte offset in the line.
    pub fn parse_line(line: &str) -> Result<Self, (&'static str, usize)> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let mut parts = line.splitn(5, ' ');
        let mut at = 0;
        let mut next = |name: &'static str| {
            let p = parts.next().ok_or((name, at))?;
            let start = at;
            at += p.len() + 1;
            Ok::<_, (&'static str, usize)>((p, start))
        };
        let (time, _) = next("time")?;
        let time_ms = parse_time(time).ok_or(("time", 0))?;
        let (dir, dir_at) = next("direction")?;
        let direction = match dir {
            "in" => Direction::In,
            "out" => Direction::Out,
            _ => return Err(("direction", dir_at)),
        };
        let (peer, _) = next("peer")?;
        let (markers, markers_at) = next("markers")?;
        let (mut masked, mut crc_bad) = (false, false);
        for m in markers.split(',') {
            match m {
                "-" => {}
                "masked" => masked = true,
                "crc-bad" => crc_bad = true,
                _ => return Err(("markers", markers_at)),
            }
        }
        let (frame, frame_at) = next("frame")?;
        let frame = unescape(frame).map_err(|i| ("frame", frame_at + i))?;
        Ok(Self {
            time_ms,
            direction,
            peer: if peer == "-" { String::new() } else { peer.into() },
            masked,
            crc_bad,
            frame,
        })
    }
}

fn write_time(s: &mut String, ms: i64) {
    match DateTime::from_millis(ms) {
        Some(t) => {
            let _ = write!(
                s,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year, t.month, t.day, t.hour, t.minute, t.second, t.millis
            );
        }
        None => s.push_str("1970-01-01T00:00:00.000Z"),
    }
}

fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    DateTime::parse(&digits).map(|t| t.to_millis())
}

/// Escapes frame bytes as field 5 of a record.
pub fn escape(bytes: &[u8], out: &mut String) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let (valid, bad) = match core::str::from_utf8(rest) {
            Ok(v) => (v, 0),
            Err(e) => {
                // The prefix up to valid_up_to() is UTF-8 by definition.
                let v = core::str::from_utf8(&rest[..e.valid_up_to()]).unwrap_or("");
                (v, e.error_len().unwrap_or_else(|| rest.len() - e.valid_up_to()))
            }
        };
        for c in valid.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\r' => out.push_str("\\r"),
                '\n' => out.push_str("\\n"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        let _ = write!(out, "\\x{b:02X}");
                    }
                }
                c => out.push(c),
            }
        }
        let after = valid.len();
        for &b in &rest[after..after + bad] {
            let _ = write!(out, "\\x{b:02X}");
        }
        rest = &rest[after + bad..];
    }
}

/// Reverses [`escape`]; the error is the offset of a bad escape.
///
/// # Errors
/// The byte offset of an escape that is not `\\`, `\r`, `\n` or `\xNN`.
pub fn unescape(s: &str) -> Result<Vec<u8>, usize> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'\\') => out.push(b'\\'),
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b'x') => {
                let hex = b.get(i + 2..i + 4).ok_or(i)?;
                let hi = (hex[0] as char).to_digit(16).ok_or(i)?;
                let lo = (hex[1] as char).to_digit(16).ok_or(i)?;
                out.push((hi * 16 + lo) as u8);
                i += 2;
            }
            _ => return Err(i),
        }
        i += 2;
    }
    Ok(out)
}

/// A size-rotated packet-log file.
#[cfg(feature = "std")]
#[derive(Debug)]
pub struct LogWriter {
    path: std::path::PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    size: u64,
    max_bytes: u64,
    keep: u32,
    mask: bool,
}

#[cfg(feature = "std")]
impl LogWriter {
    /// Opens (appending to) `path`, rotating when it passes `max_bytes`, keeping `keep` old files.
    /// With `mask` (the default everywhere), passwords are replaced by `*`.
    ///
    /// # Errors
    /// The file cannot be opened or created.
    pub fn open(path: impl Into<std::path::PathBuf>, max_bytes: u64, keep: u32, mask: bool) -> std::io::Result<Self> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(Self { path, file: std::io::BufWriter::new(file), size, max_bytes: max_bytes.max(4096), keep, mask })
    }

    /// Appends one frame.
    ///
    /// # Errors
    /// Writing or rotating failed.
    pub fn write(
        &mut self,
        time_ms: i64,
        direction: Direction,
        peer: &str,
        frame: &[u8],
        crc_bad: bool,
    ) -> std::io::Result<()> {
        use std::io::Write;
        let mut bytes = frame.to_vec();
        let masked = self.mask && mask_password(&mut bytes);
        let line = Record { time_ms, direction, peer: peer.into(), masked, crc_bad, frame: bytes }.to_line();
        if self.size + line.len() as u64 > self.max_bytes && self.size > 0 {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.size += line.len() as u64;
        Ok(())
    }

    /// Pushes buffered lines to the file.
    ///
    /// # Errors
    /// Writing failed.
    pub fn flush(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        self.file.flush()
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        self.file.flush()?;
        let name = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(alloc::format!(".{n}"));
            std::path::PathBuf::from(p)
        };
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(name(self.keep));
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(name(n), name(n + 1));
            }
            std::fs::rename(&self.path, name(1))?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.file = std::io::BufWriter::new(file);
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRAME: &[u8] = b"##0101QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&1C80\r\n";

    #[test]
    fn records_round_trip_through_a_line() {
        let mut frame = FRAME.to_vec();
        frame.extend_from_slice(&[0xFF, b'\\', 0x01]);
        frame.extend_from_slice("清洗".as_bytes());
        let r = Record {
            time_ms: 1_764_340_996_123,
            direction: Direction::In,
            peer: "127.0.0.1:40112".into(),
            masked: false,
            crc_bad: true,
            frame,
        };
        let line = r.to_line();
        assert!(line.starts_with("2025-11-28T14:43:16.123Z in 127.0.0.1:40112 crc-bad ##0101"), "{line}");
        assert!(line.ends_with("1C80\\r\\n\\xFF\\\\\\x01清洗\n"), "{line}");
        assert_eq!(line.matches('\n').count(), 1);
        assert_eq!(Record::parse_line(&line), Ok(r));
    }

    #[test]
    fn passwords_and_keys_are_masked() {
        let mut f = b"##0086QN=1;ST=22;CN=1072;PW=123456;MN=AB;Flag=3;CP=&&PW=654321&&E476\r\n".to_vec();
        assert!(mask_password(&mut f));
        assert_eq!(&f[..], b"##0086QN=1;ST=22;CN=1072;PW=******;MN=AB;Flag=3;CP=&&PW=******&&E476\r\n");
        let mut k = b"##0000ST=32;CN=1014;PW=;CP=&&SKCreateTime=1,NewSK=0123456789abcdef&&0000\r\n".to_vec();
        assert!(mask_password(&mut k));
        assert!(k.windows(22).any(|w| w == b"NewSK=****************"));
        let mut none = b"##0010ST=32;CN=2011;CP=&&&&0000\r\n".to_vec();
        assert!(!mask_password(&mut none));
    }

    #[test]
    fn bad_lines_say_which_field() {
        assert_eq!(Record::parse_line("nonsense"), Err(("time", 0)));
        assert_eq!(Record::parse_line("2025-11-28T14:43:16.123Z up x - ##"), Err(("direction", 25)));
        assert_eq!(Record::parse_line("2025-11-28T14:43:16.123Z in x - ##\\q"), Err(("frame", 32 + 2)));
    }

    #[cfg(feature = "std")]
    #[test]
    fn the_writer_rotates_by_size() {
        let dir = std::env::temp_dir().join(alloc::format!("hj212-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("packets.log");
        let mut w = LogWriter::open(&path, 4096, 2, true).unwrap();
        for i in 0..100 {
            w.write(i, Direction::Out, "p", FRAME, false).unwrap();
        }
        w.flush().unwrap();
        let current = std::fs::read_to_string(&path).unwrap();
        assert!(current.len() <= 4096);
        assert!(current.contains("PW=******"));
        assert!(dir.join("packets.log.1").exists() && dir.join("packets.log.2").exists());
        assert!(!dir.join("packets.log.3").exists());
        for line in current.lines() {
            let r = Record::parse_line(line).unwrap();
            assert!(r.masked);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
