//! The listeners and the per-connection driver.
//!
//! One task per listener accepts connections; one task per connection reads, cuts frames with the
//! codec's `Deframer`, and handles each frame synchronously: check, authenticate, publish, answer.
//! Answers go through a writer task that owns the socket's write half, so the reader never waits
//! for the broker: a 9014 is queued to the writer at once, and waits there for the PUBACK of the
//! message it answers (see `write_answers`). That queue is bounded (`limits.max_queued_answers`):
//! a client that sends but does not read its answers is closed, as is one whose socket takes no
//! bytes for `limits.idle_timeout_secs`.
//!
//! Invariants:
//! * A 9014 is written only after the broker acknowledged the frame's message (or the message of
//!   the earlier copy this frame duplicates).
//! * Answers (9011–9014) are never answered.
//! * What the registry learns per MN (CRC variant, version) and the per-MN rate budget are touched
//!   only by frames that authenticated: a frame that merely claims a site's MN changes nothing the
//!   site is answered with, and uses none of its budget.
//! * Passwords are never logged: log lines carry the MN and a reason, and the packet log masks them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hj212_codec::codes::Command;
use hj212_codec::crc::{CrcPolicy, CrcVariant};
use hj212_codec::encode::OwnedPacket;
use hj212_codec::frame::{Deframer, Event as FrameEvent, Split, SplitConfig, Splitter};
use hj212_codec::log::Direction;
use hj212_codec::packet::{Flag, Version};
use hj212_codec::qn::QnGenerator;
use hj212_codec::tables::{self, CommandClass, TableVersion};
use hj212_codec::time::DateTime;
use hj212_codec::{DecodeOptions, Decoded, Packet, RawFrame};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::answers;
use crate::auth::{Registry, Verdict};
use crate::commands::{self, PendingMap, SiteLink};
use crate::config::AckAfter;
use crate::config::{Config, DecodeMode};
use crate::dedup::{Dedup, Key, Seen};
use crate::ledger::{Delivery, Ledger};
use crate::metrics::Verdict as FrameVerdict;
use crate::metrics::{Event, Metrics};
use crate::packet_log::PacketLog;
use crate::payload;
use crate::spool::{Spool, Wait};
use crate::subpackets::{Outcome as Reassembled, Subpackets};
use crate::v2025::{self, KeyUse};

/// State shared by every connection.
#[derive(Debug)]
pub struct Shared {
    /// The configuration.
    pub config: Arc<Config>,
    /// Sites and what is learnt about them.
    pub registry: Arc<Registry>,
    /// The MQTT ledger.
    pub ledger: Ledger,
    /// Recently seen frames.
    pub dedup: Dedup,
    /// Counters and events.
    pub metrics: Arc<Metrics>,
    /// The packet log.
    pub packet_log: PacketLog,
    /// QNs of the requests the platform sends.
    pub qn: Mutex<QnGenerator>,
    /// Connection and answer tasks.
    pub tracker: TaskTracker,
    /// Cancelled at shutdown.
    pub shutdown: CancellationToken,
    /// Open connections.
    pub active: AtomicUsize,
    /// The spool, when configured.
    pub spool: Option<Arc<Spool>>,
    /// Connected sites by MN, for commands down.
    pub(crate) sites: Mutex<HashMap<String, SiteLink>>,
    /// Numbers connections.
    pub next_conn_id: AtomicU64,
    /// The data-quality engine's input queue, when the engine runs.
    pub(crate) quality: Option<crate::quality_task::Feed>,
    /// HJ 212-2025 keys set by 1014 exchanges.
    pub keys: v2025::KeyStore,
    /// HJ 212-2025 registration of DAUs without an MN.
    pub registrar: v2025::Registrar,
    /// The "frame not accepted" warning: under overload it would repeat for every frame.
    pub(crate) not_accepted_log: LogGate,
    /// Sub-packet reassembly, when enabled.
    pub(crate) subpackets: Option<Subpackets>,
}

/// Lets a warning that could repeat for every frame through at most once a second, and counts
/// the ones held back (each is also counted in a metric by its caller).
#[derive(Debug, Default)]
pub(crate) struct LogGate {
    next_ms: AtomicI64,
    held: AtomicU64,
}

impl LogGate {
    /// `Some(n)` when this occurrence may be logged, `n` being how many were held back since
    /// the last one logged.
    pub(crate) fn pass(&self, now_ms: i64) -> Option<u64> {
        let next = self.next_ms.load(Ordering::Relaxed);
        if now_ms < next
            || self.next_ms.compare_exchange(next, now_ms + 1000, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.held.swap(0, Ordering::Relaxed))
    }
}

impl Shared {
    /// A fresh platform QN (17 digits, the sites' civil time).
    fn next_qn(&self) -> String {
        let now = DateTime::civil_from_utc(now_ms(), self.config.utc_offset_minutes);
        self.qn.lock().unwrap_or_else(PoisonError::into_inner).next_string(now)
    }

    /// Frames a platform request for `mn`: SM4-encrypted when the site is a 2025 peer with
    /// `encryption = "sm4"` and `cn` is one that must be encrypted, else in clear.
    ///
    /// # Errors
    /// The data segment is over 1024 bytes or has no `CP`.
    pub(crate) fn request_frame(
        &self,
        mn: &str,
        version: Version,
        p: &OwnedPacket,
        crc: hj212_codec::CrcVariant,
    ) -> Result<Vec<u8>, String> {
        let cn = p.field("CN").and_then(|c| c.parse::<u16>().ok()).unwrap_or(0);
        match self.registry.cipher(mn) {
            Some((registry_key, form)) if version == Version::V2025 && hj212_codec::crypt::must_encrypt(cn) => {
                let data = p.data_segment();
                if data.len() > hj212_codec::frame::MAX_DATA_LEN_2017 {
                    return Err(format!("cannot encode the request: {} bytes is over 1024", data.len()));
                }
                let key = self.keys.current(mn, Some(&registry_key)).unwrap_or(registry_key);
                v2025::seal(data.as_bytes(), &key, form, crc).map_err(|e| format!("cannot encrypt the request: {e}"))
            }
            _ => p.to_frame(crc).map_err(|e| format!("cannot encode the request: {e}")),
        }
    }
}

/// A request the platform sent on its own (not from the command topic), by QN.
enum Internal {
    /// A 1014 with `NewSK`: the new key is installed on the site's 9012 with ExeRtn=1.
    KeyExchange { mn: String, new_key: String },
    /// A 1002 assigning `mn` to the DAU `dau_id`.
    Registration { mn: String, dau_id: String },
}

/// Internal requests open on one connection, at most.
const MAX_INTERNAL: usize = 16;

/// The time now, in milliseconds since 1970 (UTC).
#[must_use]
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Accepts connections until shutdown; `nodelay` sets `TCP_NODELAY` on each.
pub async fn accept_loop(listener: TcpListener, nodelay: bool, shared: Arc<Shared>) {
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Usually EMFILE: back off briefly instead of spinning.
                tracing::warn!(%error, "Accept failed.");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let max = shared.config.limits.max_connections;
        if shared.active.fetch_add(1, Ordering::AcqRel) >= max {
            shared.active.fetch_sub(1, Ordering::AcqRel);
            Metrics::inc(&shared.metrics.counters.connections_refused);
            tracing::warn!(%peer, max_connections = max, "Refused a connection: too many open.");
            drop(stream);
            continue;
        }
        Metrics::inc(&shared.metrics.counters.connections_accepted);
        Metrics::set(&shared.metrics.gauges.connections_open, shared.active.load(Ordering::Acquire) as u64);
        let shared2 = shared.clone();
        shared.tracker.spawn(async move {
            serve(stream, peer, nodelay, &shared2).await;
            let open = shared2.active.fetch_sub(1, Ordering::AcqRel) - 1;
            Metrics::set(&shared2.metrics.gauges.connections_open, open as u64);
        });
    }
    tracing::debug!(listener = ?local, "Listener stopped.");
}

/// Most answers written to one connection in one `write`.
const WRITE_BATCH: usize = 64;

/// One frame to write, with what to report once it is written.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) frame: Vec<u8>,
    pub(crate) mn: String,
    pub(crate) cn: u16,
    pub(crate) qn: Option<String>,
    /// When the frame this answers arrived (for the ack-latency histogram).
    pub(crate) received: Option<Instant>,
    /// What must be delivered before the frame is written (a 9014's upload); `None`: at once.
    pub(crate) awaits: Option<Awaits>,
}

/// The deliveries a 9014 waits for: its upload's and, when the upload was the last part of a
/// split message, the whole message's; and how long it may wait.
#[derive(Debug)]
pub(crate) struct Awaits {
    first: Delivery,
    also: Option<Delivery>,
    deadline: Instant,
}

impl Awaits {
    /// `None` while either is pending; then whether both were delivered.
    fn outcome(&self) -> Option<bool> {
        let first = self.first.outcome()?;
        match &self.also {
            Some(also) => Some(first && also.outcome()?),
            None => Some(first),
        }
    }

    /// Ready once both are settled (the outcome is then read with [`Awaits::outcome`]).
    fn poll_settled(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        std::task::ready!(self.first.poll_settled(cx));
        if let Some(also) = &self.also {
            std::task::ready!(also.poll_settled(cx));
        }
        std::task::Poll::Ready(())
    }
}

/// The way into a connection's writer: a bounded queue, and the switch that closes a connection
/// whose client does not read.
#[derive(Debug, Clone)]
pub(crate) struct AnswerTx {
    tx: mpsc::Sender<Outgoing>,
    unread: Arc<Unread>,
}

/// Closes a connection that does not read its answers: once, logged and counted.
#[derive(Debug)]
struct Unread {
    token: CancellationToken,
    tripped: std::sync::atomic::AtomicBool,
    peer: Arc<str>,
    metrics: Arc<Metrics>,
}

impl Unread {
    fn trip(&self, why: &'static str) {
        if !self.tripped.swap(true, Ordering::AcqRel) {
            Metrics::inc(&self.metrics.counters.connections_unread_closed);
            tracing::warn!(peer = %self.peer, why, "Closing a connection that does not read its answers.");
        }
        self.token.cancel();
    }
}

impl AnswerTx {
    /// Queues a frame for the writer; false when the connection is gone, or does not read its
    /// answers (it is then being closed).
    pub(crate) fn send(&self, out: Outgoing) -> bool {
        match self.tx.try_send(out) {
            Ok(()) => true,
            Err(TrySendError::Closed(_)) => false,
            Err(TrySendError::Full(_)) => {
                self.unread.trip("limits.max_queued_answers answers waiting");
                false
            }
        }
    }
}

/// A connection's writer: owns the socket's write half and writes the answers in the order they
/// were queued, except that answers with nothing to wait for (9013, 1012, commands) go out at once.
/// A 9014 waits in the queue until its deliveries settle: delivered within
/// `limits.ack_timeout_secs` of its frame's arrival, it is written; abandoned or later than that,
/// it is dropped and counted. The writer waits on the oldest 9014 only: one connection's uploads
/// go over one broker connection and are acknowledged in order, so a later one that settles first
/// is written right after the older one, and no task or timer is spent per answer. Answers that are
/// ready together (a burst of PUBACKs settles several uploads at once) go out in one write.
///
/// Ends once every sender is gone (the reader, and the command link) and no 9014 waits; when a
/// write fails; or when the client does not read (`unread`).
async fn write_answers(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
    peer: Arc<str>,
    unread: Arc<Unread>,
) {
    let idle = Duration::from_secs(shared.config.limits.idle_timeout_secs);
    let stop = unread.token.cancelled();
    tokio::pin!(stop);
    // Taken from the channel one by one into these two (`recv_many` would keep a buffer of 32
    // answers per connection, idle or not: 3 KiB each, 30 MiB for 10 000 DAUs). A waiting answer
    // is kept with what it waits for, taken out of it.
    let mut waiting: std::collections::VecDeque<(Awaits, Outgoing)> = std::collections::VecDeque::new();
    let mut ready: Vec<Outgoing> = Vec::new();
    let mut bytes: Vec<u8> = Vec::new();
    let mut open = true;
    // Armed for the oldest waiting 9014's deadline; it may fire early (that answer left the
    // queue), and is then armed again for the new oldest.
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut armed = false;
    loop {
        if !open && waiting.is_empty() {
            break;
        }
        let oldest = waiting.front().map(|(awaits, _)| awaits);
        tokio::select! {
            () = &mut stop => break,
            first = rx.recv(), if open => match first {
                None => open = false,
                Some(out) => {
                    let mut take = |mut out: Outgoing| match out.awaits.take() {
                        Some(awaits) => waiting.push_back((awaits, out)),
                        None => ready.push(out),
                    };
                    take(out);
                    for _ in 1..WRITE_BATCH {
                        let Ok(out) = rx.try_recv() else { break };
                        take(out);
                    }
                }
            },
            () = std::future::poll_fn(|cx| oldest.map_or(std::task::Poll::Pending, |a| a.poll_settled(cx))),
                if oldest.is_some() => {}
            () = &mut timer, if armed => armed = false,
        }
        let now = Instant::now();
        while let Some((awaits, _)) = waiting.front() {
            let (outcome, in_time) = (awaits.outcome(), now <= awaits.deadline);
            if outcome.is_none() && in_time {
                break;
            }
            let Some((_, out)) = waiting.pop_front() else { break };
            if outcome == Some(true) && in_time {
                ready.push(out);
            } else {
                Metrics::inc(&shared.metrics.counters.answers_timed_out);
                tracing::warn!(mn = %out.mn, qn = ?out.qn, "No broker acknowledgement in time; 9014 not sent.");
            }
        }
        if let (false, Some((awaits, _))) = (armed, waiting.front()) {
            timer.as_mut().reset(tokio::time::Instant::from_std(awaits.deadline));
            armed = true;
        }
        if ready.is_empty() {
            continue;
        }
        bytes.clear();
        ready.iter().for_each(|out| bytes.extend_from_slice(&out.frame));
        let written = tokio::select! {
            () = &mut stop => break,
            w = tokio::time::timeout(idle, wr.write_all(&bytes)) => w,
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(peer = %peer, %error, answers = ready.len(), "Write failed; the answers are dropped.");
                break;
            }
            Err(_) => {
                unread.trip("no answer bytes taken for limits.idle_timeout_secs");
                break;
            }
        }
        for out in ready.drain(..) {
            shared.packet_log.record(now_ms(), Direction::Out, &peer, &out.frame, false);
            if let (9014, Some(t)) = (out.cn, out.received) {
                shared.metrics.ack_latency.observe(t.elapsed());
            }
            Metrics::inc(&shared.metrics.counters.answers_sent);
            shared.metrics.emit_with(|| Event::AnswerSent { mn: out.mn, cn: out.cn, qn: out.qn });
        }
    }
    let _ = wr.shutdown().await;
}

/// Most bytes taken from a socket in one read.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// The read buffer of every connection served on this thread. Bytes are copied out into the
    /// connection's deframer before the task yields, so a connection holds no read buffer of its
    /// own: only the part of a frame that has not arrived whole (10 000 idle DAUs would otherwise
    /// hold 80 MiB of empty buffers).
    static READ_BUFFER: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// Reads what the socket holds into `deframer`: the byte count, 0 at the end of the stream. The
/// bytes pass through this thread's buffer within one poll, so the future can be dropped at any
/// `await` without losing any.
async fn read_into(rd: &mut tokio::net::tcp::OwnedReadHalf, deframer: &mut Deframer) -> std::io::Result<usize> {
    std::future::poll_fn(|cx| {
        READ_BUFFER.with_borrow_mut(|buf| {
            let mut read = tokio::io::ReadBuf::new(buf);
            std::task::ready!(std::pin::Pin::new(&mut *rd).poll_read(cx, &mut read))?;
            deframer.feed(read.filled());
            std::task::Poll::Ready(Ok(read.filled().len()))
        })
    })
    .await
}

struct Conn<'s> {
    shared: &'s Arc<Shared>,
    peer: Arc<str>,
    tx: AnswerTx,
    id: u64,
    pending: PendingMap,
    /// The MN this connection is registered for commands under.
    site: Mutex<Option<String>>,
    /// The MN the data-quality engine was told this connection carries.
    quality_mn: Mutex<Option<String>>,
    /// The platform's own requests (1014 key exchange, 1002 registration) waiting for replies.
    internal: Mutex<HashMap<String, Internal>>,
}

async fn serve(stream: TcpStream, peer_addr: SocketAddr, nodelay: bool, shared: &Arc<Shared>) {
    let peer: Arc<str> = Arc::from(peer_addr.to_string());
    if nodelay {
        let _ = stream.set_nodelay(true);
    }
    let (mut rd, wr) = stream.into_split();
    let limits = &shared.config.limits;
    let idle = Duration::from_secs(limits.idle_timeout_secs);
    let (tx, rx) = mpsc::channel::<Outgoing>(limits.max_queued_answers);
    let unread = Arc::new(Unread {
        token: CancellationToken::new(),
        tripped: std::sync::atomic::AtomicBool::new(false),
        peer: peer.clone(),
        metrics: shared.metrics.clone(),
    });
    let tx = AnswerTx { tx, unread: unread.clone() };

    shared.tracker.spawn(write_answers(wr, rx, shared.clone(), peer.clone(), unread.clone()));

    let mut deframer = Deframer::new(Splitter::new(SplitConfig { max_data_len: limits.max_frame_len }));
    let mut total: u64 = 0;
    let mut garbage_run: usize = 0;
    let frame_limit = Duration::from_secs(limits.frame_timeout_secs);
    let mut partial_since: Option<Instant> = None;
    let id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let conn = Conn {
        shared,
        peer: peer.clone(),
        tx,
        id,
        pending: PendingMap::default(),
        site: Mutex::new(None),
        quality_mn: Mutex::new(None),
        internal: Mutex::new(HashMap::new()),
    };
    tracing::debug!(peer = %peer, "Connection opened.");
    // Made once, not per read: a wait for cancellation registers itself, and a timeout per read
    // would add and remove a timer per frame. The idle timer is armed for `idle` after the last
    // read, and moved on only when it fires early.
    let shutdown = shared.shutdown.cancelled();
    let closing = unread.token.cancelled();
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(shutdown, closing, idle_timer);
    let mut last_read = tokio::time::Instant::now();
    loop {
        let read = tokio::select! {
            () = &mut shutdown => break,
            () = &mut closing => break,
            () = &mut idle_timer => {
                if last_read.elapsed() < idle {
                    idle_timer.as_mut().reset(last_read + idle);
                    continue;
                }
                None
            }
            read = read_into(&mut rd, &mut deframer) => Some(read),
        };
        let eof = match read {
            None => {
                Metrics::inc(&shared.metrics.counters.connections_idle_closed);
                tracing::info!(peer = %peer, idle_secs = idle.as_secs(), "Closing an idle connection.");
                break;
            }
            Some(Err(error)) => {
                tracing::debug!(peer = %peer, %error, "Read failed.");
                break;
            }
            Some(Ok(0)) => {
                deframer.finish();
                true
            }
            Some(Ok(n)) => {
                last_read = tokio::time::Instant::now();
                total += n as u64;
                false
            }
        };
        while let Some(event) = deframer.next_event() {
            match event {
                FrameEvent::Frame { frame, .. } => {
                    garbage_run = 0;
                    conn.handle_frame(frame);
                }
                FrameEvent::Skipped { len, reason, offset } => {
                    garbage_run += len;
                    Metrics::add(&shared.metrics.counters.bytes_skipped, len as u64);
                    tracing::debug!(peer = %peer, offset, len, reason = reason.name(), "Skipped bytes between frames.");
                }
            }
        }
        if deframer.buffered() == 0 {
            partial_since = None;
        } else if partial_since.get_or_insert_with(Instant::now).elapsed() > frame_limit {
            Metrics::inc(&shared.metrics.counters.connections_frame_timeout);
            tracing::warn!(peer = %peer, buffered = deframer.buffered(), "Closing a connection whose frame did not complete in time.");
            break;
        }
        if garbage_run > limits.max_garbage_bytes {
            Metrics::inc(&shared.metrics.counters.connections_garbage_closed);
            tracing::warn!(peer = %peer, skipped = garbage_run, "Closing a connection that sends no frames.");
            break;
        }
        if eof {
            if total == 0 {
                Metrics::inc(&shared.metrics.counters.connections_probe);
                tracing::debug!(peer = %peer, "Connection closed without data (probe).");
            } else {
                tracing::debug!(peer = %peer, bytes = total, "Connection closed by the peer.");
            }
            break;
        }
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let carried = self.quality_mn.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let (Some(mn), Some(q)) = (carried, &self.shared.quality) {
            q.closed(&mn, self.id);
        }
        let site = self.site.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(mn) = site {
            let mut sites = self.shared.sites.lock().unwrap_or_else(PoisonError::into_inner);
            if sites.get(&mn).is_some_and(|l| l.conn_id == self.id) {
                sites.remove(&mn);
            }
            drop(sites);
            commands::connection_closed(self.shared, &mn, &self.pending);
        }
    }
}

impl Conn<'_> {
    /// Makes this connection the way to reach `mn` for commands.
    fn register(&self, packet: &Packet<'_>, mn: &str) {
        let shared = self.shared;
        if !shared.config.commands.enabled || mn.is_empty() {
            return;
        }
        let mut site = self.site.lock().unwrap_or_else(PoisonError::into_inner);
        let mut sites = shared.sites.lock().unwrap_or_else(PoisonError::into_inner);
        let st = packet.st();
        match sites.get_mut(mn) {
            Some(link) if link.conn_id == self.id => {
                if st != answers::ST_INTERACTION && link.st != st {
                    link.st = st.to_string();
                }
                link.version = packet.version();
                return;
            }
            _ => {}
        }
        if st == answers::ST_INTERACTION && sites.contains_key(mn) {
            return;
        }
        sites.insert(
            mn.to_string(),
            SiteLink {
                conn_id: self.id,
                tx: self.tx.clone(),
                pending: self.pending.clone(),
                st: if st == answers::ST_INTERACTION { "32".to_string() } else { st.to_string() },
                version: packet.version(),
            },
        );
        if let Some(old) = site.replace(mn.to_string()) {
            if old != mn && sites.get(&old).is_some_and(|l| l.conn_id == self.id) {
                sites.remove(&old);
            }
        }
    }

    /// Publishes directly or through the spool, as configured.
    fn deliver(&self, topic: &str, body: Vec<u8>, qn: Option<String>, wants_ack: bool) -> Result<Delivery, String> {
        let shared = self.shared;
        let cfg = &shared.config.spool;
        match &shared.spool {
            Some(spool) if !wants_ack || cfg.acked_uploads || cfg.ack_after == AckAfter::Spool => {
                let wait = match (wants_ack, cfg.ack_after) {
                    (false, _) => Wait::Nothing,
                    (true, AckAfter::Spool) => Wait::Flush,
                    (true, AckAfter::Puback) => Wait::Puback,
                };
                spool.append(topic, qn.as_deref(), &body, wait).map_err(|e| e.to_string())
            }
            _ => shared.ledger.publish(topic.to_string(), body, false, qn).map_err(|e| e.to_string()),
        }
    }

    /// Decrypts a frame from a site with `encryption = "sm4"` when it needs it (HJ 212-2025),
    /// then handles the plaintext frame.
    fn handle_frame(&self, wire: RawFrame<'_>) {
        let shared = self.shared;
        let metrics = &shared.metrics;
        let received_ms = now_ms();
        Metrics::inc(&metrics.counters.frames_in);
        let mn = v2025::header_field(wire.data(), "MN").unwrap_or("");
        let cipher = if mn.is_empty() { None } else { shared.registry.cipher(mn) };
        let Some((registry_key, _)) = cipher.filter(|_| v2025::needs_decryption(&wire)) else {
            self.handle_plain(wire, received_ms, false);
            return;
        };
        let keys = shared.keys.decrypt_keys(mn, Some(&registry_key), received_ms);
        match v2025::open(&wire, &keys) {
            Ok((plain, used)) => {
                shared.packet_log.record(received_ms, Direction::In, &self.peer, wire.bytes(), false);
                Metrics::inc(&metrics.counters.frames_decrypted);
                if used == KeyUse::Previous {
                    tracing::info!(mn, "Frame decrypted with the previous key (grace period after a rotation).");
                }
                let splitter = Splitter::new(SplitConfig { max_data_len: hj212_codec::frame::MAX_DATA_LEN_FIELD });
                if let Split::Frame(frame) = splitter.split(&plain, true) {
                    self.handle_plain(frame, received_ms, true);
                }
            }
            Err(reason) => {
                shared.packet_log.record(received_ms, Direction::In, &self.peer, wire.bytes(), true);
                Metrics::inc(&metrics.counters.decrypt_failures);
                let cn = v2025::header_field(wire.data(), "CN").and_then(|c| c.parse::<u16>().ok());
                metrics.count_frame(cn, FrameVerdict::Invalid);
                tracing::warn!(
                    peer = %self.peer,
                    mn,
                    cn,
                    reason = reason.name(),
                    "Refused a frame that does not decrypt with the site's SM4 key; not published, not answered."
                );
            }
        }
    }

    fn handle_plain(&self, frame: RawFrame<'_>, received_ms: i64, encrypted: bool) {
        let shared = self.shared;
        let metrics = &shared.metrics;
        let received = Instant::now();
        let mut decoded = Decoded::new(frame, DecodeOptions::LENIENT);
        if shared.config.decode.mode == DecodeMode::Strict {
            let fixed = decoded.packet.as_ref().ok().and_then(|p| p.mn()).and_then(|mn| shared.registry.fixed_crc(mn));
            let crc = CrcPolicy::Only(fixed.unwrap_or(CrcVariant::Hj212));
            decoded = Decoded::new(frame, DecodeOptions { strict: true, crc });
        }
        if !encrypted {
            shared.packet_log.record(received_ms, Direction::In, &self.peer, frame.bytes(), decoded.crc.is_err());
        }
        let packet = match decoded.verdict() {
            Ok(p) => p,
            Err(error) => {
                Metrics::inc(&metrics.counters.frames_invalid);
                metrics.count_frame(decoded.packet.as_ref().ok().map(Packet::cn), FrameVerdict::Invalid);
                if let (Some(q), true) = (&shared.quality, decoded.crc.is_err()) {
                    let mn = decoded.packet.as_ref().ok().and_then(Packet::mn).filter(|m| !m.is_empty());
                    q.crc_failure(mn.unwrap_or(&self.peer));
                }
                tracing::warn!(peer = %self.peer, %error, "Refused an invalid frame.");
                return;
            }
        };
        metrics.count_deviations(decoded.deviations());
        let mn = packet.mn().unwrap_or("");
        if packet.cn() == 1001
            && mn.is_empty()
            && packet.cp().get("i23005-Info").is_some()
            && shared.registrar.mode() != crate::config::RegistrationMode::Off
        {
            self.register_dau(&packet, received_ms, decoded.crc.as_ref().ok().copied());
            return;
        }
        if matches!(packet.cn(), 9011 | 9012) && self.internal_reply(&packet) {
            return;
        }
        let code_table = match shared.registry.check(mn, packet.pw(), packet.st()) {
            Verdict::Accept { code_table } => code_table,
            Verdict::Reject(reason) => {
                self.refused(&packet, mn, reason.name(), false);
                return;
            }
            Verdict::Quarantine(reason) => {
                if !self.refused(&packet, mn, reason.name(), true) {
                    return;
                }
                // A known MN's frame is described with that MN's table, even when refused.
                let code_table = shared.registry.code_table(mn).unwrap_or_default();
                let ctx = payload::Context {
                    received_ms,
                    peer: &self.peer,
                    code_table,
                    encrypted,
                    refused: Some(reason.name()),
                    parts: None,
                };
                let body = payload::write(&decoded, &packet, &ctx);
                let topic = format!("{}/quarantine/{}", shared.config.mqtt.prefix, topic_segment(mn));
                let _ = shared.ledger.publish(topic, body, false, packet.qn().map(str::to_string));
                return;
            }
        };
        // Authenticated from here on: only now may the frame teach the registry anything.
        if let Ok(variant) = decoded.crc {
            if let Some(previous) = shared.registry.remember_crc(mn, variant) {
                tracing::info!(mn, from = previous.name(), to = variant.name(), "Site changed its CRC variant.");
            }
        }
        if !shared.registry.allow_rate(mn, Instant::now()) {
            Metrics::inc(&metrics.counters.frames_rate_limited);
            metrics.count_frame(Some(packet.cn()), FrameVerdict::RateLimited);
            tracing::warn!(peer = %self.peer, mn, "Dropped a frame over the per-MN rate limit.");
            return;
        }

        self.register(&packet, mn);
        if let Some(previous) = shared.registry.remember_version(mn, packet.version()) {
            tracing::info!(mn, from = ?previous.year(), to = ?packet.version().year(), "Site changed its protocol version.");
        }
        // Answers use the frame's own CRC variant (the one just remembered for the site).
        let crc = decoded.crc.as_ref().ok().copied().unwrap_or_else(|| shared.registry.crc_for(mn));
        match packet.cn() {
            // HJ 212-2025 heartbeat: answered, counted as traffic, not published.
            9015 => {
                Metrics::inc(&metrics.counters.heartbeats);
                metrics.count_frame(Some(9015), FrameVerdict::Accepted);
                if let Some(q) = &shared.quality {
                    self.quality_carries(q, mn);
                    q.packet(received_ms, mn, &packet);
                }
                if packet.wants_ack() {
                    self.send_now(answers::answer(&packet, 9013, crc), mn, 9013, packet.reference_qn());
                }
                return;
            }
            // HJ 212-2025 key request from the site: 9013, then the platform's 1014 with NewSK.
            1014 if packet.cp().get("NewSK").is_none() => {
                metrics.count_frame(Some(1014), FrameVerdict::Accepted);
                if packet.wants_ack() {
                    self.send_now(answers::answer(&packet, 9013, crc), mn, 9013, packet.reference_qn());
                }
                self.start_key_exchange(&packet, mn, "site request");
                return;
            }
            _ => {}
        }
        if encrypted && shared.keys.rotation_due(mn, received_ms) && !self.exchange_open(mn) {
            self.start_key_exchange(&packet, mn, "rotation period elapsed");
        }
        let ctx = payload::Context { received_ms, peer: &self.peer, code_table, encrypted, refused: None, parts: None };
        let body = payload::write(&decoded, &packet, &ctx);
        if shared.config.commands.enabled {
            commands::match_reply(shared, &self.pending, &packet, &body);
        }
        let topic = format!("{}/{}/{}", shared.config.mqtt.prefix, topic_segment(mn), packet.cn_str());
        let command = Command::from_value(packet.cn());
        let qn = packet.qn().map(str::to_string);
        let key = Key::new(mn, packet.cn(), packet.qn(), packet.cp().get("DataTime"));
        let wants_ack = packet.wants_ack();
        let seen = shared.dedup.check(key, Instant::now(), || self.deliver(&topic, body, qn.clone(), wants_ack));
        let (delivery, fresh) = match seen {
            Ok(Seen::New(d)) => {
                metrics.count_frame(Some(packet.cn()), FrameVerdict::Accepted);
                (d, true)
            }
            Ok(Seen::Duplicate(d)) => {
                metrics.count_frame(Some(packet.cn()), FrameVerdict::Duplicate);
                Metrics::inc(&metrics.counters.duplicates);
                tracing::debug!(mn, cn = packet.cn(), qn = ?qn, "Duplicate frame; not published again.");
                (d, false)
            }
            Err(error) => {
                metrics.count_frame(Some(packet.cn()), FrameVerdict::NotAccepted);
                if let Some(held_back) = shared.not_accepted_log.pass(now_ms()) {
                    tracing::warn!(mn, %error, held_back, "Frame not accepted; it stays unanswered.");
                }
                return;
            }
        };
        // A part of a split message (never a duplicate): also reassembled, and the whole
        // published once its last part is here. This part's 9014 then waits for both.
        let whole = if fresh && Subpackets::is_part(&packet) {
            let ctx =
                payload::Context { received_ms, peer: &self.peer, code_table, encrypted, refused: None, parts: None };
            self.reassemble(&packet, mn, crc, &ctx, wants_ack)
        } else {
            None
        };

        if let Some(q) = &shared.quality {
            self.quality_carries(q, mn);
            q.packet(received_ms, mn, &packet);
        }

        // HJ 212-2017 §6.5: answers are never answered.
        if command.is_answer() {
            return;
        }
        if command == Command::TimeCalibrationRequest {
            if packet.wants_ack() || packet.flag().is_none() {
                self.send_now(answers::answer(&packet, 9013, crc), mn, 9013, packet.reference_qn());
            }
            let now = DateTime::civil_from_utc(now_ms(), shared.config.utc_offset_minutes);
            let qn = shared.qn.lock().unwrap_or_else(PoisonError::into_inner).next_string(now);
            let frame = answers::set_time(&packet, &qn, now, crc);
            self.send_now(frame, mn, 1012, Some(&qn));
            return;
        }
        if !packet.wants_ack() {
            return;
        }
        let version = TableVersion::from_flag(packet.flag().map_or(0, |f| f.0)).unwrap_or(TableVersion::V2017);
        let class = tables::command(packet.cn(), version).map(|c| c.class);
        if class == Some(CommandClass::Notification) {
            self.send_now(answers::answer(&packet, 9013, crc), mn, 9013, packet.reference_qn());
            return;
        }
        self.send_after(delivery, whole, &packet, answers::answer(&packet, 9014, crc), received);
    }

    /// Offers a part to the reassembler; when it completes its message, publishes the whole on
    /// `{prefix}/{mn}/{cn}/whole` and returns that delivery.
    fn reassemble(
        &self,
        packet: &Packet<'_>,
        mn: &str,
        crc: CrcVariant,
        ctx: &payload::Context<'_>,
        wants_ack: bool,
    ) -> Option<Delivery> {
        let shared = self.shared;
        let metrics = &shared.metrics;
        let (whole, parts) = match shared.subpackets.as_ref()?.push(mn, packet, Instant::now()) {
            Reassembled::Complete { whole, parts } => (whole, parts),
            Reassembled::Refused(why) => {
                tracing::debug!(mn, cn = packet.cn(), pno = ?packet.pno(), why, "Sub-packet not taken for reassembly; published alone.");
                return None;
            }
            Reassembled::NotSplit | Reassembled::Pending | Reassembled::Duplicate => return None,
        };
        let data = whole.data_segment();
        let Ok(merged) = Packet::parse(data.as_bytes()) else {
            Metrics::inc(&metrics.counters.subpacket_wholes_failed);
            tracing::warn!(
                mn,
                cn = packet.cn(),
                "The reassembled message does not parse; its parts were published alone."
            );
            return None;
        };
        let ctx = payload::Context { parts: Some(&parts), ..*ctx };
        let body = payload::write_whole(&merged, crc, &ctx);
        let topic = format!("{}/{}/{}/whole", shared.config.mqtt.prefix, topic_segment(mn), merged.cn_str());
        match self.deliver(&topic, body, merged.qn().map(str::to_string), wants_ack) {
            Ok(delivery) => {
                tracing::debug!(
                    mn,
                    cn = merged.cn(),
                    parts = parts.len(),
                    "Sub-packets reassembled; the whole message is published."
                );
                Some(delivery)
            }
            Err(error) => {
                Metrics::inc(&metrics.counters.subpacket_wholes_failed);
                tracing::warn!(mn, cn = merged.cn(), %error, "The reassembled message could not be published; its parts were.");
                None
            }
        }
    }

    /// Counts and reports a refused frame. The log line (and, with `quarantine`, the publish)
    /// is limited per peer address by the per-minute budget: a flood of refused frames costs a
    /// counter each, not a log line or an MQTT message each. Returns true when the frame is within
    /// that budget.
    fn refused(&self, packet: &Packet<'_>, mn: &str, reason: &'static str, quarantine: bool) -> bool {
        let shared = self.shared;
        let metrics = &shared.metrics;
        Metrics::inc(&metrics.counters.auth_refused);
        metrics.count_frame(Some(packet.cn()), FrameVerdict::AuthRefused);
        metrics.count_auth_failure(reason);
        metrics.emit(Event::AuthRefused { mn: mn.to_string(), reason });
        self.quality_auth_failure(mn);
        let ip = self.peer.rsplit_once(':').map_or(&*self.peer, |(ip, _)| ip);
        if !shared.registry.allow_rate(&format!("refused/{ip}"), Instant::now()) {
            Metrics::inc(&metrics.counters.auth_refused_throttled);
            return false;
        }
        if quarantine {
            Metrics::inc(&metrics.counters.quarantined);
            tracing::warn!(peer = %self.peer, mn, cn = packet.cn(), reason, "Quarantined a frame.");
        } else {
            tracing::warn!(peer = %self.peer, mn, cn = packet.cn(), reason, "Refused a frame.");
        }
        true
    }

    /// True while a key exchange with `mn` waits for its 9012 on this connection.
    fn exchange_open(&self, mn: &str) -> bool {
        let internal = self.internal.lock().unwrap_or_else(PoisonError::into_inner);
        internal.values().any(|i| matches!(i, Internal::KeyExchange { mn: m, .. } if m == mn))
    }

    fn add_internal(&self, qn: &str, request: Internal) -> bool {
        let mut internal = self.internal.lock().unwrap_or_else(PoisonError::into_inner);
        if internal.len() >= MAX_INTERNAL {
            return false;
        }
        internal.insert(qn.to_string(), request);
        true
    }

    /// Sends the platform's 1014 with a fresh `NewSK`, encrypted with the key in force.
    fn start_key_exchange(&self, packet: &Packet<'_>, mn: &str, why: &'static str) {
        let shared = self.shared;
        let metrics = &shared.metrics;
        if shared.registry.cipher(mn).is_none() {
            Metrics::inc(&metrics.counters.key_exchanges_failed);
            tracing::warn!(mn, "Key exchange asked by a site without encryption = \"sm4\": no key sent in clear.");
            return;
        }
        let new_key = match v2025::random_key_text() {
            Ok(k) => k,
            Err(error) => {
                Metrics::inc(&metrics.counters.key_exchanges_failed);
                tracing::error!(mn, %error, "Cannot generate a key: the system random source failed.");
                return;
            }
        };
        let qn = shared.next_qn();
        let pw = shared.registry.password(mn).unwrap_or_default();
        let st = if packet.st() == answers::ST_INTERACTION { "32" } else { packet.st() };
        let mut p = OwnedPacket::new(Some(&qn), st, 1014, &pw, mn, Some(Flag::new(Version::V2025, false, true)));
        p.push_group([("SKCreateTime", qn.as_str()), ("NewSK", new_key.as_str())]);
        let crc = shared.registry.crc_for(mn);
        let frame = match shared.request_frame(mn, Version::V2025, &p, crc) {
            Ok(f) => f,
            Err(error) => {
                Metrics::inc(&metrics.counters.key_exchanges_failed);
                tracing::warn!(mn, error, "Cannot build the key-exchange request.");
                return;
            }
        };
        if !self.add_internal(&qn, Internal::KeyExchange { mn: mn.to_string(), new_key }) {
            Metrics::inc(&metrics.counters.key_exchanges_failed);
            tracing::warn!(mn, "Too many platform requests open on this connection; no key exchange.");
            return;
        }
        Metrics::inc(&metrics.counters.key_exchanges_started);
        tracing::info!(mn, qn = %qn, why, "Key exchange: new key sent, encrypted with the key in force.");
        self.send_now(frame, mn, 1014, Some(&qn));
    }

    /// Handles a 9011/9012 that answers one of the platform's own requests; false when it
    /// answers none of them (it then goes through the normal path).
    fn internal_reply(&self, packet: &Packet<'_>) -> bool {
        let shared = self.shared;
        let metrics = &shared.metrics;
        let Some(qn) = packet.qn() else { return false };
        let rtn = |k: &str| packet.cp().get(k).and_then(|v| v.trim().parse::<i64>().ok());
        let mut internal = self.internal.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(request) = internal.get(qn) else { return false };
        let mn = packet.mn().unwrap_or("");
        // The outcome: None while the request goes on, Some(ok) when it ended.
        let outcome = match packet.cn() {
            9011 => (rtn("QnRtn") != Some(1)).then_some(false),
            _ => Some(rtn("ExeRtn") == Some(1)),
        };
        match request {
            Internal::KeyExchange { mn: site, .. } => {
                let authentic =
                    site == mn && matches!(shared.registry.check(mn, packet.pw(), packet.st()), Verdict::Accept { .. });
                if !authentic {
                    Metrics::inc(&metrics.counters.auth_refused);
                    tracing::warn!(peer = %self.peer, mn, "Refused a key-exchange reply that does not authenticate.");
                    return true;
                }
                let Some(ok) = outcome else { return true };
                let Some(Internal::KeyExchange { new_key, .. }) = internal.remove(qn) else { return true };
                drop(internal);
                if ok {
                    let registry_key = shared.registry.cipher(mn).map(|(k, _)| k);
                    let old = shared
                        .keys
                        .current(mn, registry_key.as_ref())
                        .and_then(|k| String::from_utf8(k.bytes().to_vec()).ok());
                    shared.keys.rotate(mn, &new_key, old.as_deref(), now_ms());
                    Metrics::inc(&metrics.counters.key_rotations);
                    tracing::info!(
                        mn,
                        qn,
                        grace_secs = shared.config.keys.grace_secs,
                        "New key installed; the previous one still decrypts for the grace period."
                    );
                } else {
                    Metrics::inc(&metrics.counters.key_exchanges_failed);
                    tracing::warn!(mn, qn, cn = packet.cn(), "The site refused the new key; the key in force stays.");
                }
            }
            Internal::Registration { mn: assigned, dau_id } => {
                let Some(ok) = outcome else { return true };
                let (assigned, dau_id) = (assigned.clone(), dau_id.clone());
                internal.remove(qn);
                drop(internal);
                tracing::info!(mn = %assigned, dau_id = %dau_id, ok, "DAU answered its MN assignment.");
                let event = if ok { "confirmed" } else { "refused" };
                self.publish_registration(
                    &assigned,
                    serde_json::json!({
                        "event": event, "mn": assigned, "dau_id": dau_id, "qn": qn, "peer": &*self.peer,
                    }),
                );
            }
        }
        true
    }

    fn publish_registration(&self, mn: &str, body: serde_json::Value) {
        let shared = self.shared;
        let topic = format!("{}/register/{}", shared.config.mqtt.prefix, topic_segment(mn));
        if let Err(error) = shared.ledger.publish(topic, body.to_string().into_bytes(), false, None) {
            tracing::warn!(mn, %error, "Could not publish a registration event.");
        }
    }

    /// A 1001 from a DAU without an MN: assign one (`[registration]`), answer 9013, send 1002.
    fn register_dau(&self, packet: &Packet<'_>, received_ms: i64, crc: Option<CrcVariant>) {
        let shared = self.shared;
        let metrics = &shared.metrics;
        let ip = self.peer.rsplit_once(':').map_or(&*self.peer, |(ip, _)| ip);
        if !shared.registry.allow_rate(&format!("register/{ip}"), Instant::now()) {
            Metrics::inc(&metrics.counters.frames_rate_limited);
            tracing::warn!(peer = %self.peer, "Dropped a registration over the rate limit.");
            return;
        }
        let info = |code: &str| packet.cp().get(code).map(str::trim).filter(|v| !v.is_empty());
        let Some(dau_id) = info("i23005-Info") else { return };
        let assigned = match shared.registrar.assign(dau_id) {
            Ok(mn) => mn,
            Err(reason) => {
                Metrics::inc(&metrics.counters.registrations_refused);
                metrics.count_frame(Some(1001), FrameVerdict::AuthRefused);
                tracing::warn!(peer = %self.peer, dau_id, reason, "Refused a DAU registration (1001 without MN).");
                return;
            }
        };
        metrics.count_frame(Some(1001), FrameVerdict::Accepted);
        // Answered in the DAU's own CRC variant (nothing is remembered for an empty MN).
        let crc = crc.unwrap_or(CrcVariant::Hj212);
        if packet.wants_ack() {
            self.send_now(answers::answer(packet, 9013, crc), "", 9013, packet.reference_qn());
        }
        let qn = shared.next_qn();
        let pw = shared.registry.password(&assigned).unwrap_or_else(|| packet.pw().unwrap_or("").to_string());
        let flag = Flag::new(packet.version(), false, true);
        let mut p = OwnedPacket::new(Some(&qn), packet.st(), 1002, &pw, &assigned, Some(flag));
        p.push_group([("i23005-Info", dau_id)]);
        let frame = match p.to_frame(crc) {
            Ok(f) => f,
            Err(error) => {
                tracing::warn!(dau_id, %error, "Cannot encode the 1002 assignment.");
                return;
            }
        };
        self.add_internal(&qn, Internal::Registration { mn: assigned.clone(), dau_id: dau_id.to_string() });
        Metrics::inc(&metrics.counters.registrations);
        tracing::info!(peer = %self.peer, dau_id, mn = %assigned, qn = %qn, "DAU registered: MN assigned with 1002.");
        self.send_now(frame, &assigned, 1002, Some(&qn));
        self.publish_registration(
            &assigned,
            serde_json::json!({
                "event": "assigned",
                "mn": assigned,
                "dau_id": dau_id,
                "cpu_id": info("i23006-Info"),
                "mac1": info("i23007-Info"),
                "mac2": info("i23008-Info"),
                "mode": match shared.registrar.mode() {
                    crate::config::RegistrationMode::Auto => "auto",
                    _ => "table",
                },
                "in_registry": shared.registry.password(&assigned).is_some(),
                "qn": qn,
                "peer": &*self.peer,
                "received_at": payload::rfc3339(received_ms),
            }),
        );
    }

    fn quality_auth_failure(&self, mn: &str) {
        if let Some(q) = &self.shared.quality {
            q.auth_failure(if mn.is_empty() { &self.peer } else { mn });
        }
    }

    /// Tells the engine that this connection carries `mn` (once per MN and connection).
    fn quality_carries(&self, q: &crate::quality_task::Feed, mn: &str) {
        let mut carried = self.quality_mn.lock().unwrap_or_else(PoisonError::into_inner);
        if carried.as_deref() == Some(mn) {
            return;
        }
        if let Some(old) = carried.replace(mn.to_string()) {
            q.closed(&old, self.id);
        }
        q.opened(mn, self.id);
    }

    fn send_now(&self, frame: Vec<u8>, mn: &str, cn: u16, qn: Option<&str>) {
        self.tx.send(Outgoing {
            frame,
            mn: mn.to_string(),
            cn,
            qn: qn.map(str::to_string),
            received: None,
            awaits: None,
        });
    }

    /// Queues a 9014 to be written once `delivery` (and `also`, the whole message a last
    /// sub-packet completed) is delivered; see [`write_answers`].
    fn send_after(
        &self,
        delivery: Delivery,
        also: Option<Delivery>,
        packet: &Packet<'_>,
        frame: Vec<u8>,
        received: Instant,
    ) {
        let delivered = delivery.is_delivered() && also.as_ref().is_none_or(Delivery::is_delivered);
        let limit = Duration::from_secs(self.shared.config.limits.ack_timeout_secs);
        self.tx.send(Outgoing {
            frame,
            mn: packet.mn().unwrap_or("").to_string(),
            cn: 9014,
            qn: packet.reference_qn().map(str::to_string),
            received: Some(received),
            awaits: (!delivered).then(|| Awaits { first: delivery, also, deadline: received + limit }),
        });
    }
}

/// An MN as one topic level: MQTT wildcards and separators replaced by `_`.
pub(crate) fn topic_segment(mn: &str) -> String {
    if mn.is_empty() {
        return "_".into();
    }
    mn.chars().map(|c| if matches!(c, '/' | '+' | '#' | '\0') { '_' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::LogGate;

    #[test]
    fn a_log_gate_passes_once_a_second_and_counts_what_it_held_back() {
        let gate = LogGate::default();
        assert_eq!(gate.pass(10_000), Some(0));
        assert_eq!(gate.pass(10_001), None);
        assert_eq!(gate.pass(10_999), None);
        assert_eq!(gate.pass(11_000), Some(2));
        assert_eq!(gate.pass(11_500), None);
        assert_eq!(gate.pass(20_000), Some(1));
    }
}
