//! A recording test platform on loopback TCP: accepts connection after connection (the daemon
//! reconnects after every restart), runs the codec's platform-role session on each, acks every
//! upload (`9014`, optionally after a random delay) and records each upload it receives with the
//! connection it came on and when it was acked.
#![allow(dead_code)] // Each test file uses part of it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hj212_codec::session::{Config as SessionConfig, Event, Now, Role, Session};
use hj212_codec::time::DateTime;
use hj212_codec::{DecodeOptions, Decoded, Split, Splitter};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One upload as the platform received it.
#[derive(Debug, Clone)]
pub struct Receipt {
    /// The connection (0, 1, …, in accept order).
    pub conn: usize,
    /// The upload's QN.
    pub qn: String,
    /// Its CN.
    pub cn: u16,
    /// Its `DataTime`, when it has one.
    pub data_time: Option<String>,
    /// When it arrived.
    pub at: Instant,
    /// When its `9014` was sent (none: never, the connection ended first).
    pub acked: Option<Instant>,
}

/// One connection.
#[derive(Debug, Clone)]
pub struct Conn {
    /// Accepted at.
    pub opened: Instant,
    /// Ended at (EOF, error, or the platform stopped).
    pub closed: Option<Instant>,
}

/// What the platform saw, shared by every listener started on it.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every upload, in arrival order.
    pub receipts: Vec<Receipt>,
    /// Every connection.
    pub conns: Vec<Conn>,
}

/// A small deterministic generator (SplitMix64), for random kill moments and ack delays.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo { lo } else { lo + self.next_u64() % (hi - lo) }
    }
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(key)? + key.len();
    let rest = &text[at..];
    let end = rest.find([';', '&', ',']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// `(QN, CN)` of a frame, read from its text (works on masked packet-log frames too).
pub fn qn_cn(frame: &[u8]) -> Option<(String, u16)> {
    let text = std::str::from_utf8(frame).ok()?;
    let qn = field(text, "QN=")?.to_string();
    let cn = field(text, ";CN=")?.parse().ok()?;
    Some((qn, cn))
}

/// Serves `listener` until `stop`: one platform-role session per connection, acking every upload
/// after a random delay below `ack_delay_max` (zero: at once). `mn`/`pw` are the site's.
pub fn serve(
    listener: TcpListener,
    seen: Arc<Mutex<Seen>>,
    mn: &str,
    pw: &str,
    ack_delay_max: Duration,
    seed: u64,
    stop: CancellationToken,
) {
    let (mn, pw) = (mn.to_string(), pw.to_string());
    tokio::spawn(async move {
        let mut rng = Rng(seed);
        loop {
            let accepted = tokio::select! {
                () = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            let Ok((sock, _)) = accepted else { continue };
            let conn = {
                let mut s = seen.lock().unwrap();
                s.conns.push(Conn { opened: Instant::now(), closed: None });
                s.conns.len() - 1
            };
            let (seen, stop, mn, pw) = (seen.clone(), stop.clone(), mn.clone(), pw.clone());
            let seed = rng.next_u64();
            tokio::spawn(async move {
                connection(sock, conn, &seen, &mn, &pw, ack_delay_max, seed, stop).await;
                seen.lock().unwrap().conns[conn].closed = Some(Instant::now());
            });
        }
    });
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    mut sock: tokio::net::TcpStream,
    conn: usize,
    seen: &Mutex<Seen>,
    mn: &str,
    pw: &str,
    ack_delay_max: Duration,
    seed: u64,
    stop: CancellationToken,
) {
    let mut rng = Rng(seed);
    let start = Instant::now();
    let wall = DateTime::from_millis(1_767_225_600_000).unwrap();
    let now = || Now::new(u64::try_from(start.elapsed().as_millis()).unwrap_or(0), wall);
    let mut session = Session::new(SessionConfig::new(Role::Platform, mn, pw, "32"));
    // Acks waiting for their moment: (due, token, receipt index).
    let mut pending = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let max_delay = u64::try_from(ack_delay_max.as_millis()).unwrap_or(0);
    loop {
        let t = Instant::now();
        let mut i = 0;
        while i < pending.len() {
            let (due, _, _) = &pending[i];
            if *due <= t {
                let (_, token, idx): (Instant, _, usize) = pending.swap_remove(i);
                if session.ack(now(), token).is_ok() {
                    seen.lock().unwrap().receipts[idx].acked = Some(Instant::now());
                }
            } else {
                i += 1;
            }
        }
        while let Some(frame) = session.poll_transmit() {
            if sock.write_all(&frame).await.is_err() {
                return;
            }
        }
        let mut progressed = false;
        while let Some(ev) = session.poll_event() {
            progressed = true;
            if let Event::Upload { token, qn, packet, needs_ack, .. } = ev {
                let cn = packet.field("CN").and_then(|c| c.parse().ok()).unwrap_or(0);
                let data_time = packet.cp_get("DataTime").map(str::to_string);
                let idx = {
                    let mut s = seen.lock().unwrap();
                    s.receipts.push(Receipt {
                        conn,
                        qn: qn.unwrap_or_default(),
                        cn,
                        data_time,
                        at: Instant::now(),
                        acked: None,
                    });
                    s.receipts.len() - 1
                };
                if needs_ack {
                    let delay = Duration::from_millis(rng.range(0, max_delay));
                    pending.push((Instant::now() + delay, token, idx));
                }
            }
        }
        if progressed {
            continue;
        }
        let session_wake = session.poll_timeout().map(|ms| start + Duration::from_millis(ms));
        let ack_wake = pending.iter().map(|(d, _, _)| *d).min();
        let wake = match (session_wake, ack_wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            () = stop.cancelled() => return,
            r = sock.read(&mut chunk) => {
                let Ok(n) = r else { return };
                if n == 0 { return; }
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    let (len, frame) = match Splitter::default().split(&buf, false) {
                        Split::Frame(f) => (f.len(), Some(f.bytes().to_vec())),
                        Split::Skip { len, .. } => (len, None),
                        Split::Incomplete => break,
                    };
                    buf.drain(..len);
                    if let Some(frame) = frame {
                        let Split::Frame(f) = Splitter::default().split(&frame, true) else { continue };
                        if let Ok(p) = Decoded::new(f, DecodeOptions::LENIENT).verdict() {
                            session.handle_packet(now(), &p);
                        }
                    }
                }
            }
            () = async {
                match wake {
                    Some(w) => tokio::time::sleep_until(tokio::time::Instant::from_std(w)).await,
                    None => std::future::pending().await,
                }
            } => {
                session.handle_timeout(now());
            }
        }
    }
}
