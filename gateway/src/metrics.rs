//! Counters and gauges, served as Prometheus text at `http://<metrics.address>/metrics`.
//!
//! The endpoint is a minimal HTTP/1.0 responder: it answers every request with the metrics and
//! closes the connection. Names start with `hj212_gateway_`. Passwords never appear here.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// The daemon's counters. All are monotonic except the link gauge.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Poll cycles run, all ports.
    pub poll_cycles: AtomicU64,
    /// Read blocks that failed (timeouts, CRC, exceptions, backed-off devices).
    pub poll_errors: AtomicU64,
    /// Serial ports (re)opened.
    pub port_opens: AtomicU64,
    /// Serial port failures (open errors and IO errors that closed a port).
    pub port_failures: AtomicU64,
    /// Port opens where the configured kernel RS-485 mode was refused by the driver.
    pub rs485_refused: AtomicU64,
    /// Messages produced and stored.
    pub messages_stored: AtomicU64,
    /// Store writes that failed (the message was lost).
    pub store_errors: AtomicU64,
    /// Frames sent to platforms.
    pub frames_sent: AtomicU64,
    /// Frames received from platforms.
    pub frames_received: AtomicU64,
    /// Bytes from platforms that were not part of a frame.
    pub garbage_bytes: AtomicU64,
    /// Uploads acknowledged by platforms (9014).
    pub uploads_acked: AtomicU64,
    /// Platform requests handled.
    pub requests: AtomicU64,
    /// TCP connections made to platforms.
    pub connects: AtomicU64,
    /// Platforms connected now.
    pub links_up: AtomicU64,
    /// HJ 212-2025 frames from platforms that no key decrypted (dropped).
    pub decrypt_failures: AtomicU64,
    /// HJ 212-2025 keys installed from a platform's CN 1014.
    pub keys_installed: AtomicU64,
    /// Encrypted uploads to an SM4 platform that went unanswered while frames in clear on the
    /// same link were answered: the platform probably holds another key.
    pub suspected_key_mismatch: AtomicU64,
    /// Control requests (CN 3011–3015) refused because no analyzer has the `PolId`.
    pub control_refused_unknown_analyzer: AtomicU64,
    /// Control requests refused because the analyzer's profile has no such control.
    pub control_refused_no_control: AtomicU64,
    /// Control actions the analyzer took.
    pub control_ok: AtomicU64,
    /// Control writes that got no proper answer (`ExeRtn=4`).
    pub control_timeout: AtomicU64,
    /// Control writes the analyzer refused with a Modbus exception (`ExeRtn=2` or 5).
    pub control_exception: AtomicU64,
    /// Control writes the gateway could not make (`ExeRtn=6`).
    pub control_unavailable: AtomicU64,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders the Prometheus text, with the store's counters and queue depths.
    #[must_use]
    pub fn render(&self, store: &dyn Store, platforms: &[String]) -> String {
        let mut s = String::new();
        let counters = [
            ("poll_cycles_total", &self.poll_cycles),
            ("poll_errors_total", &self.poll_errors),
            ("port_opens_total", &self.port_opens),
            ("port_failures_total", &self.port_failures),
            ("rs485_refused_total", &self.rs485_refused),
            ("messages_stored_total", &self.messages_stored),
            ("store_errors_total", &self.store_errors),
            ("frames_sent_total", &self.frames_sent),
            ("frames_received_total", &self.frames_received),
            ("garbage_bytes_total", &self.garbage_bytes),
            ("uploads_acked_total", &self.uploads_acked),
            ("requests_total", &self.requests),
            ("connects_total", &self.connects),
            ("decrypt_failures_total", &self.decrypt_failures),
            ("keys_installed_total", &self.keys_installed),
            ("suspected_key_mismatch_total", &self.suspected_key_mismatch),
        ];
        for (name, c) in counters {
            let _ =
                writeln!(s, "# TYPE hj212_gateway_{name} counter\nhj212_gateway_{name} {}", c.load(Ordering::Relaxed));
        }
        let _ = writeln!(s, "# TYPE hj212_gateway_control_refused_total counter");
        for (reason, c) in [
            ("unknown_analyzer", &self.control_refused_unknown_analyzer),
            ("no_control", &self.control_refused_no_control),
        ] {
            let _ =
                writeln!(s, "hj212_gateway_control_refused_total{{reason=\"{reason}\"}} {}", c.load(Ordering::Relaxed));
        }
        let _ = writeln!(s, "# TYPE hj212_gateway_controls_total counter");
        for (result, c) in [
            ("success", &self.control_ok),
            ("timeout", &self.control_timeout),
            ("exception", &self.control_exception),
            ("unavailable", &self.control_unavailable),
        ] {
            let _ = writeln!(s, "hj212_gateway_controls_total{{result=\"{result}\"}} {}", c.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            s,
            "# TYPE hj212_gateway_links_up gauge\nhj212_gateway_links_up {}",
            self.links_up.load(Ordering::Relaxed)
        );
        let st = store.stats();
        for (name, v) in [
            ("store_dropped_total", st.dropped),
            ("store_corrupt_total", st.corrupt),
            ("store_delivered_total", st.delivered),
        ] {
            let _ = writeln!(s, "# TYPE hj212_gateway_{name} counter\nhj212_gateway_{name} {v}");
        }
        let _ = writeln!(s, "# TYPE hj212_gateway_queue_depth gauge");
        for p in platforms {
            let _ = writeln!(s, "hj212_gateway_queue_depth{{platform=\"{p}\"}} {}", store.queue_len(p));
        }
        s
    }
}

/// Serves the metrics on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    platforms: Vec<String>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((mut sock, _)) = accepted else { continue };
        let body = metrics.render(store.as_ref(), &platforms);
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), sock.read(&mut buf)).await;
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
