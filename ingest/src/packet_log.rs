//! The packet log: every frame in and out, written by one task through
//! [`hj212_codec::log::LogWriter`] (passwords masked), so connection tasks never wait on the disk.
//!
//! Lines are queued on a bounded channel; when the writer falls behind, lines are dropped and
//! counted (`packet_log_dropped`) rather than slowing the sites down.

use std::path::Path;
use std::sync::Arc;

use hj212_codec::log::{Direction, LogWriter};
use tokio::sync::mpsc;

use crate::metrics::Metrics;

struct Line {
    time_ms: i64,
    direction: Direction,
    peer: Arc<str>,
    frame: Vec<u8>,
    crc_bad: bool,
}

/// The sending side; cheap to clone. A disabled log ignores everything.
#[derive(Clone)]
pub struct PacketLog {
    tx: Option<mpsc::Sender<Line>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for PacketLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketLog").field("enabled", &self.tx.is_some()).finish()
    }
}

impl PacketLog {
    /// Opens the log at `path` (an empty path disables it) and returns the writer task to spawn.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open(
        path: &Path,
        max_bytes: u64,
        keep: u32,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, Option<impl Future<Output = ()> + Send + 'static>)> {
        if path.as_os_str().is_empty() {
            return Ok((Self { tx: None, metrics }, None));
        }
        let mut writer = LogWriter::open(path, max_bytes, keep, true)?;
        let (tx, mut rx) = mpsc::channel::<Line>(8192);
        let task_metrics = metrics.clone();
        let task = async move {
            while let Some(line) = rx.recv().await {
                let mut next = Some(line);
                while let Some(l) = next.take() {
                    if let Err(error) = writer.write(l.time_ms, l.direction, &l.peer, &l.frame, l.crc_bad) {
                        Metrics::inc(&task_metrics.counters.packet_log_dropped);
                        tracing::warn!(%error, "Packet log write failed.");
                    }
                    next = rx.try_recv().ok();
                }
                if let Err(error) = writer.flush() {
                    tracing::warn!(%error, "Packet log flush failed.");
                }
            }
            let _ = writer.flush();
        };
        Ok((Self { tx: Some(tx), metrics }, Some(task)))
    }

    /// Queues one frame.
    pub fn record(&self, time_ms: i64, direction: Direction, peer: &Arc<str>, frame: &[u8], crc_bad: bool) {
        let Some(tx) = &self.tx else { return };
        let line = Line { time_ms, direction, peer: peer.clone(), frame: frame.to_vec(), crc_bad };
        if tx.try_send(line).is_err() {
            Metrics::inc(&self.metrics.counters.packet_log_dropped);
        }
    }
}
