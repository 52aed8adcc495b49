//! One task per platform: a TCP client driving the codec's site-role [`Session`], fed from that
//! platform's queue in the store.
//!
//! # Delivery
//!
//! - On connect, the queue is split in two: the **backlog** (records written more than
//!   `live_window_secs` before the connection) is replayed oldest first at `replay_per_sec`, and
//!   **live** records (written since, including those of the window) go out at once, in the
//!   order written, ahead of the backlog; so after a short cut the newest values arrive first,
//!   however long the backlog. At most `max_in_flight` uploads wait for their `9014` at once.
//! - With `ack = true` an upload carries Flag A=1 and its record is deleted only on the
//!   session's [`Event::Acked`]; with `ack = false` it is deleted once written to the socket.
//! - Any upload the session gives up on ([`Event::Failed`], after `OverTime` × `ReCount`), a
//!   socket error or EOF drops the connection; the next connection replays the whole queue
//!   from its oldest record, so nothing is skipped and order within the queue is kept. A platform
//!   may see a record twice (sent, connection lost before its `9014`): that is the un-acked window.
//! - The connection is re-established with exponential backoff (`reconnect_min_ms` doubling to
//!   `reconnect_max_ms`) and ±25 % jitter.
//!
//! # HJ 212-2025 platforms (`version = 2025`)
//!
//! - Uploads carry `Flag` version bits 2; every record stored before the connection came up
//!   (the backlog, and the live window sent ahead of it) carries `RF=1` (back-fill), since it
//!   is sent late; records stored since go out without it.
//! - With `encryption = "sm4"`, frames of the commands HJ 212-2025 §6.4.4 lists are sealed on
//!   their way to the socket and frames from the platform are opened before they are decoded
//!   ([`crate::v2025`]); a frame no key opens is logged, counted
//!   (`hj212_gateway_decrypt_failures_total`) and dropped.
//! - With `register = true` and no MN assigned yet, the link first uploads the hardware
//!   identifiers (CN 1001, empty MN) and sends no data until the platform's CN 1002 assigns an
//!   MN, which is kept in the store (`mn/<platform>`) and used from then on.
//! - Keys: the link asks for a new key (CN 1014 `SKCreateTime`) after registration and whenever
//!   the key in use is older than `key_rotation_days`; a platform's CN 1014 with `NewSK` installs
//!   the new key (9011, stored, 9012), used from the next frame on.
//! - 1001, 1014 and the heartbeat 9015 are sent with Flag A=1 (answer wanted; `Flag=9` in 2025) and wait for the platform's `9013`
//!   (resent after `OverTime`, up to `ReCount` times; then the link is dropped). The codec's
//!   session only knows `9014` for what a site sends, so these are tracked here.
//! - The heartbeat (`heartbeat_secs`) goes to HJ 212-2025 platforms only: HJ 212-2017 reserves
//!   CN 9015, so a 2017 or 2005 platform gets none (a warning at start says so).
//! - A wrong key is silent: a platform that cannot decrypt a frame drops it. So when encrypted
//!   uploads go unanswered for `OverTime` and nothing encrypted has been answered on the link,
//!   the link sends one 9015 in clear as a probe (unanswered, it is forgotten: the link is not
//!   dropped for it). If an encrypted upload then fails for want of an answer while a frame in
//!   clear (the probe, a heartbeat, the 1001) was answered, the link logs a probable key mismatch
//!   and counts it (`hj212_gateway_suspected_key_mismatch_total`) before it is dropped as for
//!   any failed upload.
//!
//! # Platform requests
//!
//! Handled: 1000 (by the session), 1011/1012 time, 1061–1064 intervals, 1072 password, 2011/2021
//! start, 2012/2022 stop (notifications), 2031/2041/2051/2061 history from the store, 3020
//! (latest dynamic-control value), 3021 (write through the serial port, when the analyzer's
//! profile has the point), and 3011 calibration (in HJ 212-2025 with `CalibrationType` 0 zero or 1
//! span), 3012 immediate sampling, 3013 cleaning/back-blowing, 3014 comparison sampling and 3015
//! over-limit sample retention (C.30–C.34) through the analyzer's control register, when its
//! profile has that control; for HJ 212-2025 platforms also 1002 (MN assignment) and 1014 (new
//! key). Every other CN is refused by the session with `QnRtn=8`. Bad parameters get `ExeRtn=3`,
//! an empty history `ExeRtn=100`, a 1012 that the configuration does not allow `QnRtn=2`.
//!
//! Control requests (3011–3015): the analyzer is the one with the request's `PolId` (3015 names
//! none: the first analyzer with a retention control). Unknown analyzer, or no such control in
//! its profile: `QnRtn=2`, a log line and `hj212_gateway_control_refused_total{reason}`.
//! Otherwise `9011 QnRtn=1` goes out at once, the serial port task that owns the analyzer's line
//! makes the write between two poll cycles, and `9012` follows: `ExeRtn=1` when the analyzer took
//! it, 4 when it did not answer properly, 2 for a Modbus exception (5 for exception 6, busy), 6
//! when the port task is gone. A 3015 whose analyzer reports its bottle number (`i43006`) gets the
//! 3015 upload (`DataTime`, `VaseNo`) before its `9012`; otherwise only the `9012`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use firmware::profile::{ControlAction, Value};
use hj212_codec::codes::{CalibrationType, Command, ExeRtn, QnRtn};
use hj212_codec::crypt::Key;
use hj212_codec::encode::OwnedPacket;
use hj212_codec::log::Direction;
use hj212_codec::message::{Header, InfoItem, Message};
use hj212_codec::qn::SharedQnGenerator;
use hj212_codec::session::{self, Checks, Event, Failure, Now, Outgoing, Role, Session};
use hj212_codec::time::DateTime;
use hj212_codec::{DecodeOptions, Decoded, Flag, Packet, Split, Splitter, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{MIN_INTERVALS, Platform};
use crate::metrics::Metrics;
use crate::packet_log::PacketLog;
use crate::site::{ControlError, ControlRefusal, InfoLookup, Site, WriteError};
use crate::store::Record;
use crate::v2025::{self, KeyRing, Opened};

/// The commands this gateway answers (the session refuses the rest with `QnRtn=8`).
pub const SUPPORTED_REQUESTS: &[u16] = &[
    1000, 1011, 1012, 1061, 1062, 1063, 1064, 1072, 2011, 2021, 2031, 2041, 2051, 2061, 3011, 3012, 3013, 3014, 3015,
    3020, 3021,
];

/// The commands an HJ 212-2025 platform may send on top of [`SUPPORTED_REQUESTS`].
pub const SUPPORTED_REQUESTS_2025: &[u16] = &[1002, 1014];

/// How often the age of the key in use is checked.
const KEY_CHECK: Duration = Duration::from_secs(3600);

/// Most history records sent for one request.
const MAX_HISTORY: usize = 10_000;

/// Per-platform state that survives reconnects.
#[derive(Debug)]
struct Upload {
    realtime: bool,
    facility_state: bool,
    password: String,
    /// The MN this platform knows us by (empty while an HJ 212-2025 registration is pending).
    mn: String,
    /// The SM4 keys, when the platform encrypts.
    keys: Option<KeyRing>,
}

/// A frame of ours (1001, 1014, 9015) that waits for the platform's `9013`.
#[derive(Debug)]
struct Note {
    qn: String,
    cn: u16,
    frame: Vec<u8>,
    deadline: Instant,
    resends: u16,
    /// No `9013` after the resends drops the link; false for the key-mismatch probe, which is
    /// only forgotten (a platform may not implement 9015).
    fatal: bool,
}

/// A control action (CN 3011–3015) carried out by a serial port task, back to its link.
#[derive(Debug)]
struct ControlDone {
    /// The request's QN.
    qn: String,
    action: ControlAction,
    analyzer: usize,
    result: Result<(), ControlError>,
    /// For a retention, the bottle number read back, when the profile reports one.
    vase: Option<Result<Value, String>>,
}

/// An upload waiting for its `9014`.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    /// The record's sequence number.
    seq: u64,
    /// When it was submitted.
    at: Instant,
    /// Its `CP` goes out SM4-encrypted.
    sealed: bool,
}

/// Runs the uplink to `platform` until `shutdown`.
pub async fn run(site: Arc<Site>, log: Arc<PacketLog>, platform: Platform, shutdown: CancellationToken) {
    if platform.heartbeat_secs > 0 && platform.version != 2025 {
        tracing::warn!(
            platform = %platform.name,
            version = platform.version,
            "heartbeat_secs is set, but CN 9015 exists only in HJ 212-2025 (reserved in 2017): no heartbeat is sent to this platform."
        );
    }
    let password = site
        .store
        .meta(&format!("pw/{}", platform.name))
        .unwrap_or_else(|| site.config.platform_password(&platform).to_string());
    let assigned = site.store.meta(&format!("mn/{}", platform.name));
    let mn = site.config.platform_mn(&platform, assigned);
    let keys = if platform.encrypts() {
        let Some(initial) = platform.key.as_deref().and_then(Key::from_text) else {
            tracing::error!(platform = %platform.name, "SM4 encryption is on but the key is unusable; uplink not started.");
            return;
        };
        Some(KeyRing::load(site.store.as_ref(), &platform.name, initial, site.clock.now(), platform.key_grace_secs))
    } else {
        None
    };
    let mut up = Upload { realtime: true, facility_state: true, password, mn, keys };
    let min = Duration::from_millis(platform.reconnect_min_ms);
    let max = Duration::from_millis(platform.reconnect_max_ms);
    let mut delay = min;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let connect = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&platform.address));
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            r = connect => r,
        };
        match result {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                let peer = stream.peer_addr().map_or_else(|_| platform.address.clone(), |a| a.to_string());
                Metrics::inc(&site.metrics.connects);
                site.metrics.links_up.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(platform = %platform.name, %peer, queued = site.store.queue_len(&platform.name), "Connected to platform.");
                let started = Instant::now();
                let outcome = Link::new(&site, &log, &platform, &mut up, peer).run(stream, &shutdown).await;
                site.metrics.links_up.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                match outcome {
                    Ok(()) => return,
                    Err(reason) => {
                        tracing::warn!(platform = %platform.name, %reason, "Platform link lost.");
                    }
                }
                if started.elapsed() > Duration::from_secs(30) {
                    delay = min;
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(platform = %platform.name, address = %platform.address, %error, "Cannot connect to platform.");
            }
            Err(_) => {
                tracing::warn!(platform = %platform.name, address = %platform.address, "Connecting to platform timed out.");
            }
        }
        let wait = jitter(delay);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        delay = (delay * 2).min(max);
    }
}

/// `d` ± 25 %, from a cheap time-seeded generator (no cryptographic need).
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |t| t.subsec_nanos());
    let mut x = u64::from(nanos) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let factor = 0.75 + (x % 1000) as f64 / 2000.0;
    d.mul_f64(factor)
}

struct Link<'a> {
    site: &'a Arc<Site>,
    log: &'a PacketLog,
    platform: &'a Platform,
    up: &'a mut Upload,
    peer: String,
    session: Session,
    start: Instant,
    /// Session handle → uploads waiting for their 9014.
    in_flight: HashMap<String, InFlight>,
    /// Records written to the session without an ack request: delete once written.
    written_unacked: Vec<u64>,
    live_next: u64,
    /// The newest record stored when the connection came up: everything up to it is sent late.
    stored_before: Option<u64>,
    backlog_next: u64,
    /// The newest record at connect time; `None` when the queue was empty (sequence numbers
    /// start at 0, so the first record ever is live, not backlog).
    backlog_end: Option<u64>,
    next_backlog_at: Instant,
    last_sent: Instant,
    /// Frames of ours sent outside the session (1001, 1014, 9015).
    own_tx: VecDeque<Vec<u8>>,
    /// Those of them waiting for `9013`.
    notes: Vec<Note>,
    /// The site's QN generator, shared with the session and the store's records.
    qns: SharedQnGenerator,
    /// When to check the age of the key next.
    next_key_check: Instant,
    /// Control actions under way report here.
    controls_tx: mpsc::UnboundedSender<ControlDone>,
    controls_rx: mpsc::UnboundedReceiver<ControlDone>,
    /// Something encrypted was answered on this link, or the platform's frame opened with our key:
    /// the keys agree.
    sealed_answered: bool,
    /// A frame of ours in clear (9015, 1001) was answered with `9013` on this link.
    clear_answered: bool,
    /// The 9015 probe of a silent encrypted link was sent.
    probe_sent: bool,
}

impl<'a> Link<'a> {
    fn new(site: &'a Arc<Site>, log: &'a PacketLog, platform: &'a Platform, up: &'a mut Upload, peer: String) -> Self {
        let mut cfg = session::Config::new(
            Role::Site,
            site.config.site.mn.clone(),
            up.password.clone(),
            site.config.site.st.clone(),
        );
        cfg.version = platform.codec_version();
        cfg.mn.clone_from(&up.mn);
        cfg.over_time_ms = platform.over_time_secs * 1000;
        cfg.re_count = platform.re_count;
        cfg.crc = platform.crc.variant();
        let mut commands = SUPPORTED_REQUESTS.to_vec();
        if platform.version == 2025 {
            commands.extend_from_slice(SUPPORTED_REQUESTS_2025);
        }
        // While registration is pending we have no MN, and CN 1002 carries the new one.
        cfg.checks = Checks { commands: Some(commands), mn: !up.mn.is_empty(), ..Checks::default() };
        cfg.limits.max_exchanges = cfg.limits.max_exchanges.max(platform.max_in_flight + 8);
        // Records written within the live window before this connection go first, as live data;
        // the backlog is what is older (replayed oldest first, paced).
        let last = site.store.last_seq(&platform.name);
        let since = site.clock.utc_ms().saturating_sub(i64::from(platform.live_window_secs) * 1000);
        let live_from =
            if platform.live_window_secs == 0 { None } else { site.store.first_written_since(&platform.name, since) };
        let (live_next, backlog_end) = match (live_from, last) {
            (Some(first), _) => (first, first.checked_sub(1)),
            (None, Some(last)) => (last.saturating_add(1), Some(last)),
            (None, None) => (0, None),
        };
        let now = Instant::now();
        let (controls_tx, controls_rx) = mpsc::unbounded_channel();
        Self {
            site,
            log,
            platform,
            up,
            peer,
            session: Session::with_shared_qns(cfg, site.qns().clone()),
            start: now,
            in_flight: HashMap::new(),
            written_unacked: Vec::new(),
            live_next,
            stored_before: last,
            backlog_next: 0,
            backlog_end,
            next_backlog_at: now,
            last_sent: now,
            own_tx: VecDeque::new(),
            notes: Vec::new(),
            qns: site.qns().clone(),
            next_key_check: now,
            controls_tx,
            controls_rx,
            sealed_answered: false,
            clear_answered: false,
            probe_sent: false,
        }
    }

    /// True while backlog records remain to be replayed.
    fn backlog_pending(&self) -> bool {
        self.backlog_end.is_some_and(|end| self.backlog_next <= end)
    }

    /// False while an HJ 212-2025 registration waits for the platform's MN.
    fn registered(&self) -> bool {
        !(self.platform.register && self.up.mn.is_empty())
    }

    fn is_2025(&self) -> bool {
        self.platform.version == 2025
    }

    /// Sends a message of ours with Flag A=1 outside the session and waits for its `9013`.
    fn notify(&mut self, m: &Message) {
        self.notify_with(m, true);
    }

    /// [`Link::notify`]; with `fatal` false a missing `9013` does not drop the link.
    fn notify_with(&mut self, m: &Message, fatal: bool) {
        let qn = self.qns.next_string(self.site.clock.now());
        let header = Header {
            qn: Some(&qn),
            st: &self.site.config.site.st,
            pw: &self.up.password,
            mn: &self.up.mn,
            flag: Some(Flag::new(self.platform.codec_version(), false, true)),
        };
        match m.to_packet(&header).to_frame(self.platform.crc.variant()) {
            Ok(frame) => {
                self.own_tx.push_back(frame.clone());
                let deadline = Instant::now() + Duration::from_secs(self.platform.over_time_secs);
                self.notes.push(Note { qn, cn: m.cn(), frame, deadline, resends: 0, fatal });
            }
            Err(error) => tracing::error!(platform = %self.name(), cn = m.cn(), %error, "Cannot encode a frame."),
        }
    }

    /// Resends notes whose `OverTime` passed; `Err` when one ran out of resends.
    fn note_timeouts(&mut self) -> Result<(), String> {
        let now = Instant::now();
        let re_count = self.platform.re_count;
        self.notes.retain(|n| {
            let forget = !n.fatal && n.deadline <= now && n.resends >= re_count;
            if forget {
                tracing::debug!(qn = %n.qn, "The heartbeat probe got no 9013; forgotten.");
            }
            !forget
        });
        for note in &mut self.notes {
            if note.deadline > now {
                continue;
            }
            if note.resends >= re_count {
                return Err(format!("CN {} {} got no 9013", note.cn, note.qn));
            }
            note.resends += 1;
            note.deadline = now + Duration::from_secs(self.platform.over_time_secs);
            self.own_tx.push_back(note.frame.clone());
        }
        Ok(())
    }

    /// Uploads the hardware identifiers (CN 1001, empty MN) to be registered.
    fn register(&mut self) {
        let items = v2025::hardware_ids(&self.site.config.hardware);
        tracing::info!(platform = %self.name(), "Registering: hardware identifiers sent (CN 1001).");
        self.notify(&Message::HardwareIds { items });
    }

    /// Asks the platform for a new key (CN 1014 with the key in use's `SKCreateTime`).
    fn request_key(&mut self) {
        let Some(ring) = &self.up.keys else { return };
        if self.notes.iter().any(|n| n.cn == 1014) {
            return;
        }
        let created = ring.created_text();
        tracing::info!(platform = %self.name(), created = %created, "New key requested (CN 1014).");
        self.notify(&Message::Key { created, new_key: None });
    }

    /// Asks for a new key when the key in use is older than `key_rotation_days`.
    fn check_key(&mut self) {
        self.next_key_check = Instant::now() + KEY_CHECK;
        let due =
            self.up.keys.as_ref().is_some_and(|r| r.is_due(self.site.clock.now(), self.platform.key_rotation_days));
        if due && self.registered() {
            self.request_key();
        }
    }

    /// Seals a frame for the wire (HJ 212-2025 SM4), or returns it as it is.
    fn seal(&self, frame: Vec<u8>) -> Vec<u8> {
        let Some(ring) = &self.up.keys else { return frame };
        match v2025::seal(ring.current(), self.platform.cipher_form.codec(), self.platform.crc.variant(), &frame) {
            Ok(sealed) => sealed,
            Err(error) => {
                tracing::error!(platform = %self.name(), %error, "Frame cannot be encrypted; sent as it is.");
                frame
            }
        }
    }

    fn now(&self) -> Now {
        Now::new(u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX), self.site.clock.now())
    }

    fn name(&self) -> &str {
        &self.platform.name
    }

    /// Drives the link until shutdown (`Ok`) or failure (`Err(reason)`).
    async fn run(mut self, stream: TcpStream, shutdown: &CancellationToken) -> Result<(), String> {
        let (mut rd, mut wr) = stream.into_split();
        let mut appended = self.site.subscribe();
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        let splitter = Splitter::default();
        let backlog_pause = Duration::from_secs_f64(1.0 / f64::from(self.platform.replay_per_sec));
        if !self.registered() {
            self.register();
        }
        loop {
            if self.registered() {
                self.fill(backlog_pause)?;
            }
            let mut wrote = false;
            while let Some(frame) = self.session.poll_transmit().or_else(|| self.own_tx.pop_front()) {
                let frame = self.seal(frame);
                self.log.write(self.site.clock.utc_ms(), Direction::Out, &self.peer, &frame, false);
                wr.write_all(&frame).await.map_err(|e| format!("write: {e}"))?;
                Metrics::inc(&self.site.metrics.frames_sent);
                wrote = true;
            }
            if wrote {
                self.last_sent = Instant::now();
                for seq in std::mem::take(&mut self.written_unacked) {
                    self.remove(seq);
                }
            }
            let mut progressed = false;
            while let Some(event) = self.session.poll_event() {
                progressed = true;
                self.on_event(event).await?;
            }
            if progressed {
                continue;
            }
            let wake = self.session.poll_timeout().map(|ms| self.start + Duration::from_millis(ms));
            let backlog_wake =
                (self.registered() && self.backlog_pending() && self.in_flight.len() < self.platform.max_in_flight)
                    .then_some(self.next_backlog_at);
            let note_wake = self.notes.iter().map(|n| n.deadline).min();
            let key_wake = (self.up.keys.is_some() && self.registered()).then_some(self.next_key_check);
            // HJ 212-2017 reserves CN 9015: heartbeats go to HJ 212-2025 platforms only.
            let heartbeat = (self.is_2025() && self.platform.heartbeat_secs > 0)
                .then(|| self.last_sent + Duration::from_secs(self.platform.heartbeat_secs));
            let probe_wake = self.probe_due_at();
            tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = wr.shutdown().await;
                    return Ok(());
                }
                read = rd.read_buf(&mut buf) => {
                    match read {
                        Ok(0) => return Err("closed by the platform".into()),
                        Ok(_) => self.on_bytes(&splitter, &mut buf),
                        Err(e) => return Err(format!("read: {e}")),
                    }
                }
                () = sleep_until(wake) => {
                    let now = self.now();
                    self.session.handle_timeout(now);
                }
                () = sleep_until(backlog_wake) => {}
                () = sleep_until(note_wake) => self.note_timeouts()?,
                () = sleep_until(key_wake) => self.check_key(),
                () = sleep_until(heartbeat) => {
                    // HJ 212-2025 C.54: the platform answers 9015 with 9013.
                    if !self.notes.iter().any(|n| n.cn == 9015) {
                        self.notify(&Message::Heartbeat);
                    }
                    self.last_sent = Instant::now();
                }
                () = sleep_until(probe_wake) => self.probe(),
                Some(done) = self.controls_rx.recv() => self.finish_control(done),
                changed = appended.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn on_bytes(&mut self, splitter: &Splitter, buf: &mut Vec<u8>) {
        loop {
            let (consumed, frame) = match splitter.split(buf, false) {
                Split::Frame(f) => (f.len(), Some(f.bytes().to_vec())),
                Split::Skip { len, .. } => {
                    self.site.metrics.garbage_bytes.fetch_add(len as u64, std::sync::atomic::Ordering::Relaxed);
                    (len, None)
                }
                Split::Incomplete => break,
            };
            buf.drain(..consumed);
            if let Some(frame) = frame {
                self.on_frame(&frame);
            }
        }
    }

    fn on_frame(&mut self, wire: &[u8]) {
        Metrics::inc(&self.site.metrics.frames_received);
        let opened;
        let bytes = match &self.up.keys {
            None => wire,
            Some(ring) => match v2025::open(&ring.decrypt_keys(self.site.clock.now()), wire) {
                Opened::Clear => wire,
                Opened::Decrypted { frame, key } => {
                    if key > 0 {
                        tracing::info!(platform = %self.name(), "Frame opened with the replaced key (grace period).");
                    } else {
                        // The platform encrypts with the key we use: the keys agree.
                        self.sealed_answered = true;
                    }
                    opened = frame;
                    &opened
                }
                Opened::Failed => {
                    self.log.write(self.site.clock.utc_ms(), Direction::In, &self.peer, wire, true);
                    Metrics::inc(&self.site.metrics.decrypt_failures);
                    tracing::error!(
                        platform = %self.name(),
                        cn = ?v2025::header_cn(wire.get(6..).unwrap_or_default()),
                        "Frame from platform cannot be decrypted (wrong key?); dropped."
                    );
                    return;
                }
            },
        };
        let Split::Frame(frame) = Splitter::default().split(bytes, true) else { return };
        let decoded = Decoded::new(frame, DecodeOptions::LENIENT);
        // The packet log keeps what was on the wire: ciphertext stays ciphertext.
        self.log.write(self.site.clock.utc_ms(), Direction::In, &self.peer, wire, decoded.crc.is_err());
        match decoded.verdict() {
            Ok(packet) => {
                let now = self.now();
                self.session.handle_packet(now, &packet);
            }
            Err(error) => {
                tracing::warn!(platform = %self.name(), %error, "Undecodable frame from platform ignored.");
            }
        }
    }

    fn remove(&self, seq: u64) {
        if let Err(error) = self.site.store.remove(self.name(), seq) {
            tracing::error!(platform = %self.name(), seq, %error, "Cannot remove a delivered record.");
        }
    }

    /// Submits live records, then (paced) backlog records, while there is room.
    fn fill(&mut self, backlog_pause: Duration) -> Result<(), String> {
        let store = &self.site.store;
        while self.in_flight.len() < self.platform.max_in_flight && self.session.can_submit() {
            let room = self.platform.max_in_flight - self.in_flight.len();
            let live = store.queue_range(self.name(), self.live_next, room).map_err(|e| e.to_string())?;
            if live.is_empty() {
                break;
            }
            for (seq, rec) in live {
                self.live_next = seq + 1;
                // A record of the live window was stored before this connection: it is sent
                // late, so an HJ 212-2025 platform gets it marked as back-fill too.
                let late = self.stored_before.is_some_and(|last| seq <= last);
                self.submit(seq, &rec, late);
            }
        }
        while self.backlog_pending()
            && self.in_flight.len() < self.platform.max_in_flight
            && self.session.can_submit()
            && Instant::now() >= self.next_backlog_at
        {
            let next = store.queue_range(self.name(), self.backlog_next, 1).map_err(|e| e.to_string())?;
            match next.into_iter().next() {
                Some((seq, rec)) if self.backlog_end.is_some_and(|end| seq <= end) => {
                    self.backlog_next = seq + 1;
                    self.next_backlog_at = Instant::now() + backlog_pause;
                    self.submit(seq, &rec, true);
                }
                _ => {
                    self.backlog_end = None;
                    tracing::info!(platform = %self.name(), "Backlog replayed.");
                }
            }
        }
        Ok(())
    }

    /// The stored packet, adapted to this platform: its password, MN and protocol version, and
    /// for an HJ 212-2025 platform the back-fill marker `RF=1` on records stored before the
    /// connection came up.
    fn adapt(&self, rec: &Record, keep_qn: bool, backfill: bool) -> Option<OwnedPacket> {
        let Split::Frame(frame) = Splitter::default().split(&rec.frame, true) else { return None };
        let packet = Packet::parse(frame.data()).ok()?;
        let mut p = OwnedPacket::from_packet(&packet);
        p.set_field("PW", self.session.config().pw.clone());
        p.set_field("MN", self.up.mn.clone());
        p.set_field("Flag", Flag::new(self.session.config().version, false, false).0.to_string());
        if !keep_qn {
            p.remove_field("QN");
        }
        if backfill && self.session.config().version == Version::V2025 {
            p.set_backfill();
        }
        Some(p)
    }

    fn submit(&mut self, seq: u64, rec: &Record, backfill: bool) {
        if (rec.cn == 2011 && !self.up.realtime) || (rec.cn == 2021 && !self.up.facility_state) {
            // Stopped by the platform (2012/2022): not wanted, not kept for it.
            self.remove(seq);
            return;
        }
        let Some(packet) = self.adapt(rec, true, backfill) else {
            tracing::error!(platform = %self.name(), seq, "Stored frame does not parse; removed.");
            self.remove(seq);
            return;
        };
        if !self.platform.takes(rec.cn, packet.field("ST").unwrap_or_default()) {
            // An HJ 212-2025 record on a platform of an earlier version: not sent, not kept for it.
            tracing::debug!(platform = %self.name(), seq, cn = rec.cn, "Record of a later protocol version skipped.");
            self.remove(seq);
            return;
        }
        let now = self.now();
        match self.session.submit(now, Outgoing::Packet(packet), self.platform.ack) {
            Ok(handle) => {
                tracing::debug!(platform = %self.name(), seq, cn = rec.cn, qn = %handle, "Upload submitted.");
                if self.platform.ack {
                    let sealed = self.up.keys.is_some() && hj212_codec::crypt::must_encrypt(rec.cn);
                    self.in_flight.insert(handle, InFlight { seq, at: Instant::now(), sealed });
                } else {
                    self.written_unacked.push(seq);
                }
            }
            Err(error) => {
                tracing::error!(platform = %self.name(), seq, %error, "Upload could not be submitted; removed.");
                self.remove(seq);
            }
        }
    }

    async fn on_event(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Acked { qn } => {
                if let Some(up) = self.in_flight.remove(&qn) {
                    Metrics::inc(&self.site.metrics.uploads_acked);
                    self.sealed_answered |= up.sealed;
                    self.remove(up.seq);
                }
            }
            Event::Failed { qn, cn, reason } => {
                if let Some(up) = self.in_flight.get(&qn) {
                    if up.sealed && matches!(reason, Failure::NoAnswer { .. }) && self.key_mismatch_suspected() {
                        Metrics::inc(&self.site.metrics.suspected_key_mismatch);
                        tracing::error!(
                            platform = %self.name(),
                            %qn,
                            cn,
                            "Encrypted uploads get no answer while frames in clear on the same link do: the platform probably holds another SM4 key (compare `key`, or the last key it sent with CN 1014)."
                        );
                        return Err(format!("upload {qn} (CN {cn}) got no answer: probable SM4 key mismatch"));
                    }
                    return Err(format!("upload {qn} (CN {cn}) failed: {reason:?}"));
                }
                if matches!(reason, Failure::NoAnswer { .. }) {
                    return Err(format!("reply {qn} (CN {cn}) got no answer"));
                }
                tracing::warn!(platform = %self.name(), %qn, cn, ?reason, "Exchange failed.");
            }
            Event::Request { qn, cn, message, packet } => {
                Metrics::inc(&self.site.metrics.requests);
                tracing::info!(platform = %self.name(), %qn, cn, "Platform request.");
                self.on_request(&qn, message, packet.field("MN").unwrap_or_default()).await;
            }
            Event::Stray { cn: 9013, qn: Some(qn) } if self.notes.iter().any(|n| n.qn == qn) => {
                let i = self.notes.iter().position(|n| n.qn == qn).unwrap_or_default();
                let note = self.notes.remove(i);
                // 1014 goes out encrypted; 1001 and 9015 in clear.
                if note.cn == 1014 {
                    self.sealed_answered = true;
                } else {
                    self.clear_answered = true;
                }
                match note.cn {
                    1001 => {
                        tracing::info!(platform = %self.name(), "Hardware identifiers received; waiting for the MN (CN 1002).")
                    }
                    1014 => {
                        tracing::info!(platform = %self.name(), "Key request received; waiting for the key (CN 1014).")
                    }
                    _ => tracing::debug!(platform = %self.name(), cn = note.cn, "Answered with 9013."),
                }
            }
            Event::AutoRefused { qn, cn, qn_rtn } => {
                tracing::info!(platform = %self.name(), qn = ?qn, cn, qn_rtn = qn_rtn.value(), "Platform request refused.");
            }
            Event::Notification { cn, .. } => {
                match cn {
                    2012 => self.up.realtime = false,
                    2022 => self.up.facility_state = false,
                    _ => {}
                }
                tracing::info!(platform = %self.name(), cn, "Platform notification.");
            }
            Event::Stray { cn, qn } => tracing::debug!(platform = %self.name(), cn, qn = ?qn, "Stray answer."),
            Event::Error(error) => tracing::warn!(platform = %self.name(), %error, "Session error."),
            other => tracing::debug!(platform = %self.name(), event = ?other, "Session event ignored."),
        }
        Ok(())
    }

    fn answer(&mut self, qn: &str, replies: Vec<Outgoing>, result: ExeRtn) {
        let now = self.now();
        let r = self.session.accept(now, qn).and_then(|()| {
            for reply in replies {
                self.session.reply(now, qn, reply, self.platform.ack)?;
            }
            self.session.finish(now, qn, result)
        });
        if let Err(error) = r {
            tracing::warn!(platform = %self.name(), %qn, %error, "Cannot answer a request.");
        }
    }

    fn refuse(&mut self, qn: &str, qn_rtn: QnRtn) {
        let now = self.now();
        if let Err(error) = self.session.refuse(now, qn, qn_rtn) {
            tracing::warn!(platform = %self.name(), %qn, %error, "Cannot refuse a request.");
        }
    }

    async fn on_request(&mut self, qn: &str, message: Result<Message, hj212_codec::Error>, header_mn: &str) {
        let site = self.site.clone();
        let message = match message {
            Ok(m) => m,
            Err(error) => {
                tracing::info!(platform = %self.name(), %qn, %error, "Request with bad parameters.");
                return self.answer(qn, Vec::new(), ExeRtn::BadCondition);
            }
        };
        match message {
            Message::SetTimeoutRetry { .. } => self.answer(qn, Vec::new(), ExeRtn::Success),
            Message::GetTime { pol_id } => {
                let reply = Message::TimeReply { pol_id, system_time: site.clock.now() };
                self.answer(qn, vec![reply.into()], ExeRtn::Success);
            }
            Message::SetTime { system_time, .. } => {
                if !site.config.site.allow_set_clock {
                    tracing::info!(platform = %self.name(), "Clock setting (CN 1012) refused by configuration.");
                    return self.refuse(qn, QnRtn::Refused);
                }
                let utc_ms = system_time.to_millis() - i64::from(site.config.site.utc_offset_minutes) * 60_000;
                let ok = set_system_clock(utc_ms).await;
                self.answer(qn, Vec::new(), if ok { ExeRtn::Success } else { ExeRtn::Failed });
            }
            Message::GetRtdInterval => {
                let seconds = u16::try_from(site.rtd_interval()).unwrap_or(u16::MAX);
                self.answer(qn, vec![Message::RtdIntervalReply { seconds }.into()], ExeRtn::Success);
            }
            Message::SetRtdInterval { seconds } => {
                let ok = (30..=3600).contains(&seconds) && site.set_rtd_interval(u32::from(seconds)).is_ok();
                tracing::info!(platform = %self.name(), seconds, ok, "RtdInterval set (CN 1062).");
                self.answer(qn, Vec::new(), if ok { ExeRtn::Success } else { ExeRtn::BadCondition });
            }
            Message::GetMinInterval => {
                let minutes = u16::from(site.min_interval());
                self.answer(qn, vec![Message::MinIntervalReply { minutes }.into()], ExeRtn::Success);
            }
            Message::SetMinInterval { minutes } => {
                let valid = u8::try_from(minutes).ok().filter(|m| MIN_INTERVALS.contains(m));
                let ok = valid.is_some_and(|m| site.set_min_interval(m).is_ok());
                tracing::info!(platform = %self.name(), minutes, ok, "MinInterval set (CN 1064).");
                self.answer(qn, Vec::new(), if ok { ExeRtn::Success } else { ExeRtn::BadCondition });
            }
            Message::SetPassword { new_pw } => {
                let valid = !new_pw.is_empty()
                    && new_pw.len() <= 9
                    && new_pw.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'&' | b'='));
                let stored = valid && site.store.set_meta(&format!("pw/{}", self.platform.name), &new_pw).is_ok();
                if stored {
                    self.up.password = new_pw;
                }
                // The password itself is never logged.
                tracing::info!(platform = %self.name(), ok = stored, "Password changed (CN 1072).");
                self.answer(qn, Vec::new(), if stored { ExeRtn::Success } else { ExeRtn::BadCondition });
            }
            Message::StartUpload(cn) => {
                match cn {
                    Command::RealTimeData => self.up.realtime = true,
                    Command::FacilityState => self.up.facility_state = true,
                    _ => {}
                }
                self.answer(qn, Vec::new(), ExeRtn::Success);
            }
            Message::HistoryRequest { cn, begin, end } if matches!(cn.value(), 2031 | 2041 | 2051 | 2061) => {
                let store = site.store.clone();
                let (b, e) = (begin.to_millis(), end.to_millis());
                let records = tokio::task::spawn_blocking(move || store.history(cn.value(), b, e, MAX_HISTORY)).await;
                match records {
                    Ok(Ok(records)) if records.is_empty() => self.answer(qn, Vec::new(), ExeRtn::NoData),
                    Ok(Ok(records)) => {
                        let replies: Vec<Outgoing> =
                            records.iter().filter_map(|r| self.adapt(r, false, false)).map(Outgoing::Packet).collect();
                        tracing::info!(platform = %self.name(), cn = cn.value(), records = replies.len(), "History request answered.");
                        self.answer(qn, replies, ExeRtn::Success);
                    }
                    _ => self.answer(qn, Vec::new(), ExeRtn::Fault),
                }
            }
            Message::GetSiteInfo { pol_id, info_id, .. } => match site.info(pol_id.as_deref(), &info_id) {
                InfoLookup::Value(value) => {
                    let reply = Message::SiteInfo {
                        data_time: site.clock.now(),
                        pol_id,
                        items: vec![InfoItem { code: info_id, value }],
                    };
                    self.answer(qn, vec![reply.into()], ExeRtn::Success);
                }
                InfoLookup::NotYetRead => self.answer(qn, Vec::new(), ExeRtn::NoData),
                InfoLookup::Unknown => self.answer(qn, Vec::new(), ExeRtn::BadCondition),
            },
            Message::SetSiteInfo { pol_id, info_id, value } => {
                let now = self.now();
                if let Err(error) = self.session.accept(now, qn) {
                    tracing::warn!(platform = %self.name(), %qn, %error, "Cannot accept a request.");
                    return;
                }
                let result = site.write_info(pol_id.as_deref(), &info_id, &value).await;
                let exe = match &result {
                    Ok(()) => ExeRtn::Success,
                    Err(WriteError::NoPoint) => ExeRtn::BadCondition,
                    Err(WriteError::Failed(_)) => ExeRtn::Failed,
                };
                tracing::info!(platform = %self.name(), %info_id, result = ?result, "Parameter set (CN 3021).");
                let now = self.now();
                if let Err(error) = self.session.finish(now, qn, exe) {
                    tracing::warn!(platform = %self.name(), %qn, %error, "Cannot finish a request.");
                }
            }
            Message::AnalyzerControl { cn, pol_id, calibration_type } if (3011..=3014).contains(&cn.value()) => {
                let action = match (cn.value(), calibration_type) {
                    (3011, None) => ControlAction::Calibration,
                    (3011, Some(CalibrationType::Zero)) => ControlAction::ZeroCalibration,
                    (3011, Some(CalibrationType::Span)) => ControlAction::SpanCalibration,
                    (3011, Some(other)) => {
                        tracing::info!(platform = %self.name(), %qn, calibration_type = other.value(), "Calibration (CN 3011) with an unknown CalibrationType.");
                        return self.answer(qn, Vec::new(), ExeRtn::BadCondition);
                    }
                    (3012, _) => ControlAction::SampleNow,
                    (3013, _) => ControlAction::Cleaning,
                    _ => ControlAction::ComparisonSample,
                };
                self.start_control(qn, Some(&pol_id), action);
            }
            Message::OverLimitSampling => self.start_control(qn, None, ControlAction::RetainSample),
            Message::AssignMn { dau_id } => self.assign_mn(qn, &dau_id, header_mn),
            Message::Key { created, new_key: Some(new_key) } => self.install_key(qn, &created, &new_key),
            other => {
                tracing::info!(platform = %self.name(), cn = other.cn(), "Request not supported.");
                self.refuse(qn, QnRtn::BadCn);
            }
        }
    }
}

impl Link<'_> {
    /// When to probe a silent encrypted link with a 9015 in clear: `OverTime` after the oldest
    /// encrypted upload still unanswered, while nothing encrypted and nothing in clear has been
    /// answered on this link (once per link).
    fn probe_due_at(&self) -> Option<Instant> {
        if self.up.keys.is_none() || self.probe_sent || self.sealed_answered || self.clear_answered {
            return None;
        }
        let oldest = self.in_flight.values().filter(|u| u.sealed).map(|u| u.at).min()?;
        Some(oldest + Duration::from_secs(self.platform.over_time_secs))
    }

    /// Sends the 9015 probe (see the module docs).
    fn probe(&mut self) {
        if self.probe_due_at().is_none_or(|at| at > Instant::now()) {
            return;
        }
        self.probe_sent = true;
        if self.notes.iter().any(|n| n.cn == 9015) {
            return; // A heartbeat is already out: its 9013 tells the same.
        }
        tracing::info!(platform = %self.name(), "Encrypted uploads unanswered: checking the link with a heartbeat in clear (CN 9015).");
        self.notify_with(&Message::Heartbeat, false);
    }

    /// True when this link's evidence points at a key mismatch: frames in clear were answered,
    /// nothing encrypted was.
    fn key_mismatch_suspected(&self) -> bool {
        self.up.keys.is_some() && self.clear_answered && !self.sealed_answered
    }

    /// CN 3011–3015: refuses, or accepts and hands the write to the analyzer's serial port.
    fn start_control(&mut self, qn: &str, pol_id: Option<&str>, action: ControlAction) {
        let (analyzer, control) = match self.site.find_control(pol_id, action) {
            Ok(found) => found,
            Err(refusal) => {
                let (counter, why) = match refusal {
                    ControlRefusal::UnknownAnalyzer => {
                        (&self.site.metrics.control_refused_unknown_analyzer, "no analyzer has this PolId")
                    }
                    ControlRefusal::NoControl => {
                        (&self.site.metrics.control_refused_no_control, "the analyzer's profile has no such control")
                    }
                };
                Metrics::inc(counter);
                tracing::warn!(
                    platform = %self.name(),
                    %qn,
                    cn = action.command(),
                    pol_id = pol_id.unwrap_or(""),
                    %action,
                    reason = refusal.label(),
                    why,
                    "Control request refused."
                );
                return self.refuse(qn, QnRtn::Refused);
            }
        };
        let now = self.now();
        if let Err(error) = self.session.accept(now, qn) {
            tracing::warn!(platform = %self.name(), %qn, %error, "Cannot accept a request.");
            return;
        }
        tracing::info!(
            platform = %self.name(),
            %qn,
            cn = action.command(),
            analyzer = %self.site.analyzers[analyzer].name,
            %action,
            "Control request accepted."
        );
        let (site, done, qn) = (self.site.clone(), self.controls_tx.clone(), qn.to_string());
        tokio::spawn(async move {
            let result = site.control(analyzer, control).await;
            let vase = match (&result, action, site.vase_point(analyzer)) {
                (Ok(()), ControlAction::RetainSample, Some(point)) => Some(site.read_point(analyzer, point).await),
                _ => None,
            };
            // The link may be gone by now; its session with it.
            let _ = done.send(ControlDone { qn, action, analyzer, result, vase });
        });
    }

    /// Ends a control request: the 3015 upload when there is a bottle number, then `9012`.
    fn finish_control(&mut self, done: ControlDone) {
        let ControlDone { qn, action, analyzer, result, vase } = done;
        let metrics = &self.site.metrics;
        let exe = match &result {
            Ok(()) => {
                Metrics::inc(&metrics.control_ok);
                ExeRtn::Success
            }
            Err(error) => {
                Metrics::inc(match error {
                    ControlError::Timeout(_) => &metrics.control_timeout,
                    ControlError::Exception(_) => &metrics.control_exception,
                    ControlError::Unavailable(_) => &metrics.control_unavailable,
                });
                error.exe_rtn()
            }
        };
        let name = &self.site.analyzers[analyzer].name;
        match &result {
            Ok(()) => tracing::info!(platform = %self.name(), %qn, analyzer = %name, %action, "Control carried out."),
            Err(error) => tracing::warn!(
                platform = %self.name(),
                %qn,
                analyzer = %name,
                %action,
                %error,
                exe_rtn = exe.value(),
                "Control not carried out."
            ),
        }
        let now = self.now();
        match vase {
            Some(Ok(value)) => {
                let vase_no =
                    value.as_f64().filter(|v| v.is_finite()).map_or(0, |v| v.round().clamp(0.0, 65535.0) as u16);
                let data_time = DateTime { millis: 0, ..self.site.clock.now() };
                let reply = Message::OverLimitSampleReply { data_time, vase_no };
                if let Err(error) = self.session.reply(now, &qn, reply, self.platform.ack) {
                    tracing::warn!(platform = %self.name(), %qn, %error, "Cannot send the retention (CN 3015) upload.");
                }
            }
            Some(Err(error)) => {
                tracing::warn!(platform = %self.name(), %qn, analyzer = %name, %error, "Sample retained, but its bottle number could not be read.");
            }
            None => {}
        }
        if let Err(error) = self.session.finish(now, &qn, exe) {
            tracing::warn!(platform = %self.name(), %qn, %error, "Cannot finish a request.");
        }
    }

    /// CN 1002: the platform assigns the MN in the request's header to the DAU `dau_id` names.
    fn assign_mn(&mut self, qn: &str, dau_id: &str, mn: &str) {
        let ours = &self.site.config.hardware.dau_id;
        if !self.platform.register || dau_id.trim() != ours {
            tracing::warn!(platform = %self.name(), %dau_id, "MN assignment (CN 1002) for another DAU refused.");
            return self.answer(qn, Vec::new(), ExeRtn::BadCondition);
        }
        if mn.is_empty() || mn.len() > 24 || !mn.bytes().all(|b| b.is_ascii_alphanumeric()) {
            tracing::warn!(platform = %self.name(), %mn, "MN assignment (CN 1002) with an unusable MN refused.");
            return self.answer(qn, Vec::new(), ExeRtn::BadCondition);
        }
        if let Err(error) = self.site.store.set_meta(&format!("mn/{}", self.platform.name), mn) {
            tracing::error!(platform = %self.name(), %error, "Cannot store the assigned MN.");
            return self.answer(qn, Vec::new(), ExeRtn::Fault);
        }
        let first = self.up.mn.is_empty();
        self.up.mn = mn.to_string();
        self.session.set_credentials(mn, self.up.password.clone());
        tracing::info!(platform = %self.name(), %mn, "MN assigned by the platform (CN 1002).");
        self.answer(qn, Vec::new(), ExeRtn::Success);
        if first {
            // HJ 212-2025 §6.4.3: a registered DAU fetches its own key.
            self.request_key();
        }
    }

    /// CN 1014 with `NewSK`: installs the platform's new key (used from the next frame on).
    fn install_key(&mut self, qn: &str, created: &str, new_key: &str) {
        let now = self.site.clock.now();
        let (Some(ring), Some(key)) = (self.up.keys.as_mut(), Key::from_text(new_key.trim())) else {
            tracing::warn!(platform = %self.name(), "New key (CN 1014) refused: encryption off or not 16 characters.");
            return self.answer(qn, Vec::new(), ExeRtn::BadCondition);
        };
        let created = DateTime::parse(created.trim()).unwrap_or(now);
        let exe = match ring.install(self.site.store.as_ref(), &self.platform.name, key, created, now) {
            Ok(()) => {
                Metrics::inc(&self.site.metrics.keys_installed);
                let created = ring.created_text();
                tracing::info!(platform = %self.platform.name, %created, "New key installed (CN 1014).");
                ExeRtn::Success
            }
            Err(error) => {
                tracing::error!(platform = %self.name(), %error, "Cannot store the new key; the old one stays.");
                ExeRtn::Fault
            }
        };
        self.answer(qn, Vec::new(), exe);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sets the system clock with `date` (needs `CAP_SYS_TIME`); true on success.
async fn set_system_clock(utc_ms: i64) -> bool {
    let arg = format!("@{}", utc_ms.div_euclid(1000));
    match tokio::process::Command::new("date").arg("-u").arg("-s").arg(&arg).output().await {
        Ok(out) if out.status.success() => {
            tracing::warn!(utc_secs = utc_ms.div_euclid(1000), "System clock set by the platform (CN 1012).");
            true
        }
        Ok(out) => {
            tracing::error!(stderr = %String::from_utf8_lossy(&out.stderr).trim(), "Setting the system clock failed.");
            false
        }
        Err(error) => {
            tracing::error!(%error, "Cannot run date to set the system clock.");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use hj212_codec::codes::Command;
    use hj212_codec::message::DataItem;

    use super::*;
    use crate::clock::Clock;
    use crate::config::Config;
    use crate::store::SledStore;

    /// A data clock stopped at one millisecond: every QN is made "at the same time".
    #[derive(Debug)]
    struct Stopped(DateTime);

    impl Clock for Stopped {
        fn now(&self) -> DateTime {
            self.0
        }
        fn ms(&self) -> u64 {
            0
        }
    }

    fn qn_of(frame: &[u8]) -> String {
        let Split::Frame(f) = Splitter::default().split(frame, true) else { panic!("not a frame") };
        Packet::parse(f.data()).unwrap().qn().unwrap().to_string()
    }

    fn data(n: usize, t: DateTime) -> Message {
        let items = (0..n)
            .map(|i| DataItem {
                code: format!("a{:05}", 21000 + i),
                fields: vec![("Rtd".into(), "123.456".into()), ("Flag".into(), "N".into())],
            })
            .collect();
        Message::Data { cn: Command::RealTimeData, data_time: DateTime { millis: 0, ..t }, items }
    }

    #[test]
    fn records_sessions_and_notifications_of_every_uplink_share_one_qn_sequence() {
        let t = DateTime::parse("20260101120000500").unwrap();
        let dir = std::env::temp_dir().join(format!("hj212-gw-uplink-qn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = Config::default();
        // Two platforms: one knows the site by its own MN, the other assigned it another one.
        let a = Platform { name: "a".into(), ..Platform::default() };
        let b = Platform { name: "b".into(), register: true, ..Platform::default() };
        config.platform = vec![a.clone(), b.clone()];
        let names = vec!["a".to_string(), "b".to_string()];
        let store = Arc::new(SledStore::open(&dir, &names, 1000).unwrap());
        let site =
            Arc::new(Site::new(Arc::new(config), Arc::new(Stopped(t)), store, Arc::default(), Vec::new(), Vec::new()));
        let log = PacketLog::disabled();
        let upload = |mn: &str| Upload {
            realtime: true,
            facility_state: true,
            password: "123456".into(),
            mn: mn.into(),
            keys: None,
        };
        let (mut up_a, mut up_b) = (upload(&site.config.site.mn), upload("ASSIGNED0000000000000001"));
        let mut link_a = Link::new(&site, &log, &a, &mut up_a, "peer-a".into());
        let mut link_b = Link::new(&site, &log, &b, &mut up_b, "peer-b".into());
        assert!(link_a.qns.same_as(site.qns()) && link_b.qns.same_as(site.qns()));

        // In the same millisecond: a record for the store, a split upload on one link, a
        // notification and an upload on the other, and another record.
        let mut qns = Vec::new();
        let record = site.encode(&data(2, t)).unwrap();
        qns.push(qn_of(&record.frame));
        let now = link_a.now();
        assert_eq!(now.wall, t);
        link_a.session.submit(now, data(60, t), false).unwrap();
        let mut parts = 0;
        while let Some(frame) = link_a.session.poll_transmit() {
            qns.push(qn_of(&frame));
            parts += 1;
        }
        assert!(parts >= 3, "the long upload is split into sub-packets");
        link_b.notify(&Message::Heartbeat);
        qns.push(link_b.notes[0].qn.clone());
        link_b.session.submit(link_b.now(), data(2, t), false).unwrap();
        qns.push(qn_of(&link_b.session.poll_transmit().unwrap()));
        qns.push(qn_of(&site.encode(&data(2, t)).unwrap().frame));

        // Every user got a later QN than the one before it, so none was handed out twice.
        assert_eq!(qns[0], "20260101120000500");
        assert!(qns.windows(2).all(|w| w[0] < w[1]), "{qns:?}");
        let mut unique = qns.clone();
        unique.dedup();
        assert_eq!(unique.len(), qns.len());
        drop((link_a, link_b));
        drop(site);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
