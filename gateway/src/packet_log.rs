//! The packet log: every frame to and from the platforms, through the codec's shared
//! [`LogWriter`] (one line per frame, passwords masked; the format is documented in
//! `hj212_codec::log` and read by `hj212 tail`).
//!
//! Writing is best effort: a failure is logged once and counted, and never stops an uplink.

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use hj212_codec::log::{Direction, LogWriter};

/// A shared packet-log writer; a no-op when the log is turned off.
#[derive(Debug)]
pub struct PacketLog {
    writer: Option<Mutex<LogWriter>>,
    failed: AtomicBool,
}

impl PacketLog {
    /// Opens the log at `path` (none when `path` is empty).
    ///
    /// # Errors
    /// The file cannot be opened or created.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> std::io::Result<Self> {
        let writer = if path.as_os_str().is_empty() {
            None
        } else {
            Some(Mutex::new(LogWriter::open(path, max_bytes, keep, true)?))
        };
        Ok(Self { writer, failed: AtomicBool::new(false) })
    }

    /// A log that writes nothing.
    #[must_use]
    pub const fn disabled() -> Self {
        Self { writer: None, failed: AtomicBool::new(false) }
    }

    /// Appends one frame and flushes.
    pub fn write(&self, time_ms: i64, direction: Direction, peer: &str, frame: &[u8], crc_bad: bool) {
        let Some(w) = &self.writer else { return };
        let mut w = w.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let result = w.write(time_ms, direction, peer, frame, crc_bad).and_then(|()| w.flush());
        if let Err(error) = result {
            if !self.failed.swap(true, Ordering::Relaxed) {
                tracing::error!(%error, "Packet log write failed; further failures are not logged.");
            }
        }
    }
}
