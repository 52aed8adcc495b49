//! One task per platform: a TCP client driving the codec's site-role [`Session`], fed from that
//! platform's queue in the store.
//!
//! # Delivery
//!
//! - On connect, the queue's newest sequence number splits it in two: the **backlog** (records
//!   written before the connection) is replayed oldest first at `replay_per_sec`, and **live**
//!   records (written since) go out as soon as they are stored. At most `max_in_flight` uploads
//!   wait for their `9014` at once.
//! - With `ack = true` an upload carries Flag A=1 and its record is deleted only on the
//!   session's [`Event::Acked`]; with `ack = false` it is deleted once written to the socket.
//! - Any upload the session gives up on ([`Event::Failed`], after `OverTime` × `ReCount`), a
//!   socket error or EOF drops the connection; the next connection replays the whole queue
//!   from its oldest record, so nothing is skipped and order within the queue is kept. A platform
//!   may see a record twice (sent, connection lost before its `9014`): that is the un-acked window.
//! - The connection is re-established with exponential backoff (`reconnect_min_ms` doubling to
//!   `reconnect_max_ms`) and ±25 % jitter.
//!
//! # Platform requests
//!
//! Handled: 1000 (by the session), 1011/1012 time, 1061–1064 intervals, 1072 password, 2011/2021
//! start, 2012/2022 stop (notifications), 2031/2041/2051/2061 history from the store, 3020
//! (latest dynamic-control value) and 3021 (write through the serial port, when the analyzer's
//! profile has the point). Every other CN is refused by the session with `QnRtn=8`. Bad
//! parameters get `ExeRtn=3`, an empty history `ExeRtn=100`, a 1012 that the configuration
//! does not allow `QnRtn=2`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hj212_codec::codes::{Command, ExeRtn, QnRtn};
use hj212_codec::encode::OwnedPacket;
use hj212_codec::log::Direction;
use hj212_codec::message::{InfoItem, Message};
use hj212_codec::session::{self, Checks, Event, Failure, Now, Outgoing, Role, Session};
use hj212_codec::{DecodeOptions, Decoded, Flag, Packet, Split, Splitter, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{MIN_INTERVALS, Platform};
use crate::metrics::Metrics;
use crate::packet_log::PacketLog;
use crate::site::{InfoLookup, Site, WriteError};
use crate::store::Record;

/// The commands this gateway answers (the session refuses the rest with `QnRtn=8`).
pub const SUPPORTED_REQUESTS: &[u16] =
    &[1000, 1011, 1012, 1061, 1062, 1063, 1064, 1072, 2011, 2021, 2031, 2041, 2051, 2061, 3020, 3021];

/// Most history records sent for one request.
const MAX_HISTORY: usize = 10_000;

/// Per-platform state that survives reconnects.
#[derive(Debug)]
struct Upload {
    realtime: bool,
    facility_state: bool,
    password: String,
}

/// Runs the uplink to `platform` until `shutdown`.
pub async fn run(site: Arc<Site>, log: Arc<PacketLog>, platform: Platform, shutdown: CancellationToken) {
    let password = site
        .store
        .meta(&format!("pw/{}", platform.name))
        .unwrap_or_else(|| site.config.platform_password(&platform).to_string());
    let mut up = Upload { realtime: true, facility_state: true, password };
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
    /// Session handle → sequence number of uploads waiting for their 9014.
    in_flight: HashMap<String, u64>,
    /// Records written to the session without an ack request: delete once written.
    written_unacked: Vec<u64>,
    live_next: u64,
    backlog_next: u64,
    backlog_end: u64,
    next_backlog_at: Instant,
    last_sent: Instant,
}

impl<'a> Link<'a> {
    fn new(site: &'a Arc<Site>, log: &'a PacketLog, platform: &'a Platform, up: &'a mut Upload, peer: String) -> Self {
        let mut cfg = session::Config::new(
            Role::Site,
            site.config.site.mn.clone(),
            up.password.clone(),
            site.config.site.st.clone(),
        );
        cfg.version = if platform.version == 2005 { Version::V2005 } else { Version::V2017 };
        cfg.over_time_ms = platform.over_time_secs * 1000;
        cfg.re_count = platform.re_count;
        cfg.crc = platform.crc.variant();
        cfg.checks = Checks { commands: Some(SUPPORTED_REQUESTS.to_vec()), ..Checks::default() };
        cfg.limits.max_exchanges = cfg.limits.max_exchanges.max(platform.max_in_flight + 8);
        let backlog_end = site.store.last_seq(&platform.name).unwrap_or(0);
        let now = Instant::now();
        Self {
            site,
            log,
            platform,
            up,
            peer,
            session: Session::new(cfg),
            start: now,
            in_flight: HashMap::new(),
            written_unacked: Vec::new(),
            live_next: backlog_end.saturating_add(1),
            backlog_next: 0,
            backlog_end,
            next_backlog_at: now,
            last_sent: now,
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
        loop {
            self.fill(backlog_pause)?;
            let mut wrote = false;
            while let Some(frame) = self.session.poll_transmit() {
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
            let backlog_wake = (self.backlog_next <= self.backlog_end
                && self.in_flight.len() < self.platform.max_in_flight)
                .then_some(self.next_backlog_at);
            let heartbeat = (self.platform.heartbeat_secs > 0)
                .then(|| self.last_sent + Duration::from_secs(self.platform.heartbeat_secs));
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
                () = sleep_until(heartbeat) => {
                    let now = self.now();
                    if let Err(e) = self.session.submit(now, Message::Heartbeat, false) {
                        tracing::debug!(platform = %self.name(), error = %e, "Heartbeat not sent.");
                    }
                    self.last_sent = Instant::now();
                }
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

    fn on_frame(&mut self, bytes: &[u8]) {
        Metrics::inc(&self.site.metrics.frames_received);
        let Split::Frame(frame) = Splitter::default().split(bytes, true) else { return };
        let decoded = Decoded::new(frame, DecodeOptions::LENIENT);
        self.log.write(self.site.clock.utc_ms(), Direction::In, &self.peer, bytes, decoded.crc.is_err());
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
                self.submit(seq, &rec);
            }
        }
        while self.backlog_next <= self.backlog_end
            && self.in_flight.len() < self.platform.max_in_flight
            && self.session.can_submit()
            && Instant::now() >= self.next_backlog_at
        {
            let next = store.queue_range(self.name(), self.backlog_next, 1).map_err(|e| e.to_string())?;
            match next.into_iter().next() {
                Some((seq, rec)) if seq <= self.backlog_end => {
                    self.backlog_next = seq + 1;
                    self.next_backlog_at = Instant::now() + backlog_pause;
                    self.submit(seq, &rec);
                }
                _ => {
                    self.backlog_next = self.backlog_end.saturating_add(1);
                    tracing::info!(platform = %self.name(), "Backlog replayed.");
                }
            }
        }
        Ok(())
    }

    /// The stored packet, adapted to this platform: its password and protocol version.
    fn adapt(&self, rec: &Record, keep_qn: bool) -> Option<OwnedPacket> {
        let Split::Frame(frame) = Splitter::default().split(&rec.frame, true) else { return None };
        let packet = Packet::parse(frame.data()).ok()?;
        let mut p = OwnedPacket::from_packet(&packet);
        p.set_field("PW", self.session.config().pw.clone());
        p.set_field("Flag", Flag::new(self.session.config().version, false, false).0.to_string());
        if !keep_qn {
            p.remove_field("QN");
        }
        Some(p)
    }

    fn submit(&mut self, seq: u64, rec: &Record) {
        if (rec.cn == 2011 && !self.up.realtime) || (rec.cn == 2021 && !self.up.facility_state) {
            // Stopped by the platform (2012/2022): not wanted, not kept for it.
            self.remove(seq);
            return;
        }
        let Some(packet) = self.adapt(rec, true) else {
            tracing::error!(platform = %self.name(), seq, "Stored frame does not parse; removed.");
            self.remove(seq);
            return;
        };
        let now = self.now();
        match self.session.submit(now, Outgoing::Packet(packet), self.platform.ack) {
            Ok(handle) => {
                tracing::debug!(platform = %self.name(), seq, cn = rec.cn, qn = %handle, "Upload submitted.");
                if self.platform.ack {
                    self.in_flight.insert(handle, seq);
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
                if let Some(seq) = self.in_flight.remove(&qn) {
                    Metrics::inc(&self.site.metrics.uploads_acked);
                    self.remove(seq);
                }
            }
            Event::Failed { qn, cn, reason } => {
                if self.in_flight.contains_key(&qn) {
                    return Err(format!("upload {qn} (CN {cn}) failed: {reason:?}"));
                }
                if matches!(reason, Failure::NoAnswer { .. }) {
                    return Err(format!("reply {qn} (CN {cn}) got no answer"));
                }
                tracing::warn!(platform = %self.name(), %qn, cn, ?reason, "Exchange failed.");
            }
            Event::Request { qn, cn, message, .. } => {
                Metrics::inc(&self.site.metrics.requests);
                tracing::info!(platform = %self.name(), %qn, cn, "Platform request.");
                self.on_request(&qn, message).await;
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

    async fn on_request(&mut self, qn: &str, message: Result<Message, hj212_codec::Error>) {
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
                            records.iter().filter_map(|r| self.adapt(r, false)).map(Outgoing::Packet).collect();
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
            other => {
                tracing::info!(platform = %self.name(), cn = other.cn(), "Request not supported.");
                self.refuse(qn, QnRtn::BadCn);
            }
        }
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
