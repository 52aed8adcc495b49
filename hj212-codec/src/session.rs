//! The exchange state machine of HJ 212, for both roles, without IO and without a clock.
//!
//! A [`Session`] stands for one link between a site (现场机: the data logger or gateway) and a
//! platform (上位机). The driver feeds it decoded packets with [`Session::handle_packet`], wakes
//! it at [`Session::poll_timeout`] with [`Session::handle_timeout`], sends what
//! [`Session::poll_transmit`] returns, and acts on what [`Session::poll_event`] returns. Every
//! entry point takes the caller's reading of the clocks, [`Now`]: a monotonic millisecond count
//! for the timers and a civil [`DateTime`] for minting QNs. This is the quinn-proto shape.
//!
//! # The exchanges (HJ 212-2017 §6.1, §6.5, Appendix C)
//!
//! - **Request** (platform → site, CN 1000–3021): request → `9011 QnRtn` → data replies, each with
//!   its own QN (C.20, C.47) or the request's QN (C.2) → `9012 ExeRtn`. The platform resends the
//!   request until the `9011` arrives (§6.2.1); after `QnRtn=1` it waits for the result, and the
//!   execution timer restarts on every reply or sub-packet (§6.2.2).
//! - **Upload** (site → platform, or anything sent with A=1 that is not a request or a
//!   notification): upload → `9014` with the upload's QN when A=1.
//! - **Notification** (1013 from the site; 2012 and 2022 from the platform): notification →
//!   `9013` with its QN.
//!
//! Answers use ST=91, the PW and MN of the packet answered, `Flag = version << 2` (A=0) and
//! `CP=&&&&`, `&&QnRtn=n&&` or `&&ExeRtn=n&&` (Appendix C). A peer in the 2005 style (a packet
//! without a header QN or without version bits) is answered in the 2005 form, with the QN in
//! `CP` (spec digest §11.4): `ST=91;CN=9014;PW=…;MN=…;CP=&&QN=<qn>;CN=<cn>&&`.
//!
//! # Timers (HJ 212-2017 §6.2, Table 1)
//!
//! A frame that waits for an answer is resent after `OverTime` (default 10 s) without one, at
//! most `ReCount` times (default 3); then the exchange fails with [`Event::Failed`]. So with the
//! defaults a frame is sent at 0, 10, 20 and 30 s and the exchange fails at 40 s. CN 1000 sets
//! both: a site applies them when its runtime finishes the 1000 request with `ExeRtn=1`.
//!
//! # Invariants
//!
//! - The session never does IO and never reads a clock; it never panics on any input.
//! - An answer (9011–9014) is never answered, even when its `Flag` has A=1 (seen in the wild).
//! - A platform never sends `9014` for a whole upload on its own: it emits [`Event::Upload`] and
//!   answers only when the driver calls [`Session::ack`] (after the broker's PUBACK). Only the
//!   non-final parts of a split upload are answered automatically, because the site waits for
//!   each part's `9014` before sending the next (C.50); the site still keeps its record until the
//!   final part's `9014`, which comes from [`Session::ack`].
//! - A site reports [`Event::Acked`] for an upload only when the platform answered its last
//!   frame: this is the only event that lets a store delete a record.
//! - Memory is bounded by [`Limits`]: open exchanges, queued frames, queued events, pending acks,
//!   sub-packet groups, remembered QNs. Overflow is an error (returned or as [`Event::Error`]),
//!   never a panic.
//! - The frames of one exchange leave in order; a frame that waits for an answer holds back the
//!   frames behind it in the same exchange (C.48, C.50), never those of other exchanges.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::codes::{ExeRtn, QnRtn};
use crate::crc::CrcVariant;
use crate::encode::OwnedPacket;
use crate::error::Error;
use crate::frame::MAX_DATA_LEN_2017;
use crate::message::{Header, Message};
use crate::packet::{Flag, Packet, Version};
use crate::qn::QnGenerator;
use crate::subpacket::{self, Reassembler, Reassembly};
use crate::time::DateTime;

/// HJ 212-2017 Table 9: the request answer.
const CN_9011: u16 = 9011;
/// HJ 212-2017 Table 9: the execution result.
const CN_9012: u16 = 9012;
/// HJ 212-2017 Table 9: the notification answer.
const CN_9013: u16 = 9013;
/// HJ 212-2017 Table 9: the data answer.
const CN_9014: u16 = 9014;
/// HJ 212-2017 Table 5: the system code of answers.
const ST_ANSWER: &str = "91";

/// The request commands a site accepts by default (HJ 212-2017 Table 9, platform to site).
pub const REQUEST_COMMANDS: &[u16] = &[
    1000, 1011, 1012, 1061, 1062, 1063, 1064, 1072, 2011, 2021, 2031, 2041, 2051, 2061, 3011, 3012, 3013, 3014, 3015,
    3016, 3017, 3018, 3019, 3020, 3021,
];

/// The caller's reading of its clocks, passed to every entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// A monotonic millisecond count; every timer of the session uses it.
    pub ms: u64,
    /// The local civil time, used only to mint QNs (HJ 212-2017 Table 3).
    pub wall: DateTime,
}

impl Now {
    /// A reading of both clocks.
    #[must_use]
    pub const fn new(ms: u64, wall: DateTime) -> Self {
        Self { ms, wall }
    }
}

/// Which end of the link this session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The site (现场机): uploads data, answers platform requests.
    Site,
    /// The platform (上位机): receives uploads, sends requests.
    Platform,
}

/// The checks a site runs on a platform request before handing it to the runtime.
///
/// A failed check is answered with `9011` and the `QnRtn` of HJ 212-2017 Table 7, in this order:
/// missing QN (7), wrong PW (3), wrong MN (4), unsupported CN (8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checks {
    /// Refuse a request without a QN (`QnRtn=7`).
    pub qn: bool,
    /// Refuse a request whose PW is not ours (`QnRtn=3`).
    pub password: bool,
    /// Refuse a request whose MN is not ours (`QnRtn=4`).
    pub mn: bool,
    /// Refuse a request whose CN is not listed (`QnRtn=8`); `None` passes every CN.
    pub commands: Option<Vec<u16>>,
}

impl Default for Checks {
    fn default() -> Self {
        Self { qn: true, password: true, mn: true, commands: Some(REQUEST_COMMANDS.to_vec()) }
    }
}

/// Bounds on the memory a session holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open exchanges: our uploads, notifications and requests plus the peer's open requests.
    pub max_exchanges: usize,
    /// Frames waiting in [`Session::poll_transmit`].
    pub max_queued_frames: usize,
    /// Events waiting in [`Session::poll_event`]; more are dropped and counted.
    pub max_events: usize,
    /// Uploads a platform has reported and not yet acknowledged; the oldest is forgotten first.
    pub max_pending_acks: usize,
    /// Sub-packet groups being reassembled.
    pub max_reassembly_groups: usize,
    /// Bytes of one sub-packet group.
    pub max_reassembly_bytes: usize,
    /// A sub-packet group still incomplete after this long (at most twice this) is dropped.
    pub reassembly_timeout_ms: u64,
    /// QNs remembered to recognise resent requests and uploads.
    pub remembered_qns: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_exchanges: 64,
            max_queued_frames: 256,
            max_events: 1024,
            max_pending_acks: 256,
            max_reassembly_groups: 16,
            max_reassembly_bytes: 256 * 1024,
            reassembly_timeout_ms: 120_000,
            remembered_qns: 32,
        }
    }
}

/// How a session behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Site or platform.
    pub role: Role,
    /// The site's MN: ours on a site, the peer's on a platform (used in requests).
    pub mn: String,
    /// The site's PW: ours on a site, the peer's on a platform (used in requests).
    pub pw: String,
    /// The site's system code (Table 5), used in everything but answers.
    pub st: String,
    /// The version written in the high bits of `Flag` (Table 3); 2005 also selects 2005 answers.
    pub version: Version,
    /// Put a header QN on a site's uploads and replies; `false` is the 2005 style (§11.3).
    pub qn_in_uploads: bool,
    /// `OverTime` in milliseconds (Table 1 default: 10 s).
    pub over_time_ms: u64,
    /// `ReCount`: resends before an exchange fails (Table 1 default: 3).
    pub re_count: u16,
    /// The execution timeout of §6.2.2; `None` uses `OverTime`.
    pub execution_timeout_ms: Option<u64>,
    /// The checks a site runs on requests.
    pub checks: Checks,
    /// The checksum written on frames.
    pub crc: CrcVariant,
    /// The largest data segment sent before splitting into sub-packets (at most 1024, §6.3.1).
    pub max_data_len: usize,
    /// Memory bounds.
    pub limits: Limits,
}

impl Config {
    /// HJ 212-2017 Table 1: the default timeout for every medium but ADSL.
    pub const DEFAULT_OVER_TIME_MS: u64 = 10_000;
    /// HJ 212-2017 Table 1: the default number of resends.
    pub const DEFAULT_RE_COUNT: u16 = 3;

    /// A 2017 configuration with the Table 1 defaults.
    pub fn new(role: Role, mn: impl Into<String>, pw: impl Into<String>, st: impl Into<String>) -> Self {
        Self {
            role,
            mn: mn.into(),
            pw: pw.into(),
            st: st.into(),
            version: Version::V2017,
            qn_in_uploads: true,
            over_time_ms: Self::DEFAULT_OVER_TIME_MS,
            re_count: Self::DEFAULT_RE_COUNT,
            execution_timeout_ms: None,
            checks: Checks::default(),
            crc: CrcVariant::Hj212,
            max_data_len: MAX_DATA_LEN_2017,
            limits: Limits::default(),
        }
    }

    fn execution_timeout(&self) -> u64 {
        self.execution_timeout_ms.unwrap_or(self.over_time_ms)
    }
}

/// What to send: a typed message (wrapped in our header) or a packet built elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A message; the session writes the header `QN;ST;CN;PW;MN;Flag` from its [`Config`].
    Message(Message),
    /// A packet sent with its own ST, PW and MN. A header QN it carries is kept (so a stored
    /// record keeps its QN across reconnects); without one a fresh QN is added.
    Packet(OwnedPacket),
}

impl From<Message> for Outgoing {
    fn from(m: Message) -> Self {
        Self::Message(m)
    }
}

impl From<OwnedPacket> for Outgoing {
    fn from(p: OwnedPacket) -> Self {
        Self::Packet(p)
    }
}

/// Names an upload a platform reported, for [`Session::ack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AckToken(pub u64);

/// Why an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No answer after the first send and `ReCount` resends (§6.2.1): the link is unusable.
    NoAnswer {
        /// How many times the frame was sent.
        sent: u16,
    },
    /// No reply and no result within the execution timeout after the request answer or the
    /// last reply (§6.2.2).
    ExecutionTimeout,
    /// Given up because another frame of the same request failed, or [`Session::close`] was called.
    Aborted,
}

/// Errors of the session, returned or reported as [`Event::Error`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError {
    /// [`Limits::max_exchanges`] exchanges are open.
    TooManyExchanges {
        /// The limit.
        max: usize,
    },
    /// [`Limits::max_queued_frames`] frames are waiting; the frame was not queued.
    TransmitQueueFull {
        /// The limit.
        max: usize,
    },
    /// [`Limits::max_pending_acks`] uploads were waiting for [`Session::ack`]; the oldest was forgotten.
    PendingAcksFull {
        /// The limit.
        max: usize,
        /// The token forgotten.
        dropped: AckToken,
    },
    /// No open request of the peer has this QN.
    UnknownRequest,
    /// No upload waiting for an answer has this token.
    UnknownToken,
    /// The call does not fit the request's state, such as a reply before `accept`.
    InvalidState(&'static str),
    /// The call belongs to the other role.
    WrongRole,
    /// A frame could not be encoded.
    Encode(Error),
    /// A sub-packet was refused or a group expired (see [`Reassembly::Refused`]).
    Reassembly(&'static str),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooManyExchanges { max } => write!(f, "too many open exchanges (limit {max})"),
            Self::TransmitQueueFull { max } => write!(f, "transmit queue full (limit {max} frames)"),
            Self::PendingAcksFull { max, dropped } => {
                write!(f, "too many uploads waiting for an ack (limit {max}); forgot token {}", dropped.0)
            }
            Self::UnknownRequest => f.write_str("no open request has this QN"),
            Self::UnknownToken => f.write_str("no upload waits for an ack with this token"),
            Self::InvalidState(why) => write!(f, "invalid state: {why}"),
            Self::WrongRole => f.write_str("not available in this role"),
            Self::Encode(e) => write!(f, "cannot encode frame: {e}"),
            Self::Reassembly(why) => write!(f, "sub-packet reassembly: {why}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SessionError {}

/// What the session tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Site: a platform request passed the [`Checks`]. Answer it with [`Session::accept`] or
    /// [`Session::refuse`], then [`Session::reply`] and [`Session::finish`].
    Request {
        /// The request's QN, which names it in those calls.
        qn: String,
        /// The command.
        cn: u16,
        /// The typed request, or why it could not be read (answer `ExeRtn=3` then).
        message: Result<Message, Error>,
        /// The request as received.
        packet: OwnedPacket,
    },
    /// Site: a request failed a check and was refused with `9011`.
    AutoRefused {
        /// The request's QN.
        qn: Option<String>,
        /// The command.
        cn: u16,
        /// The answer sent.
        qn_rtn: QnRtn,
    },
    /// A notification (site: 2012, 2022; platform: 1013), already answered with `9013` if asked.
    Notification {
        /// Its QN.
        qn: Option<String>,
        /// The command.
        cn: u16,
        /// The notification as received.
        packet: OwnedPacket,
    },
    /// Platform: data from the site (an upload or a reply to one of our requests), reassembled
    /// from sub-packets if it was split. If `needs_ack`, answer with [`Session::ack`] once it is
    /// stored durably.
    Upload {
        /// Passed to [`Session::ack`].
        token: AckToken,
        /// The QN of the (first part of the) upload.
        qn: Option<String>,
        /// The packet; for a split upload, the whole message (Flag D cleared, no PNUM/PNO).
        packet: OwnedPacket,
        /// The site asked for `9014`.
        needs_ack: bool,
        /// The QN of our request this replies to, if it is a reply.
        request: Option<String>,
    },
    /// Platform: the site accepted our request (`QnRtn=1`); replies and `9012` follow.
    Accepted {
        /// The request's QN.
        qn: String,
    },
    /// Platform: the site refused our request; the exchange is over.
    Refused {
        /// The request's QN.
        qn: String,
        /// The site's answer.
        qn_rtn: QnRtn,
    },
    /// Platform: the site's execution result; the exchange is over.
    Completed {
        /// The request's QN.
        qn: String,
        /// The result.
        exe_rtn: ExeRtn,
    },
    /// The peer answered (9013 or 9014) the last frame of something we sent: the handle that
    /// [`Session::submit`] or [`Session::reply`] returned.
    Acked {
        /// The handle.
        qn: String,
    },
    /// Something we sent failed; for a site's reply also reported for its request (`Aborted`).
    Failed {
        /// The handle, or the request's QN.
        qn: String,
        /// The command.
        cn: u16,
        /// Why.
        reason: Failure,
    },
    /// An answer that matches nothing open (late, duplicated, or for another session).
    Stray {
        /// The answer's command.
        cn: u16,
        /// The QN it refers to.
        qn: Option<String>,
    },
    /// A bounded resource overflowed or a frame could not be built.
    Error(SessionError),
}

/// A frame waiting for an answer, and what it waits for.
#[derive(Debug, Clone)]
struct Wait {
    /// 9011, 9013 or 9014.
    answer: u16,
    /// The QN the answer must carry; `None` for a 2005-style upload sent without QN.
    qn: Option<String>,
    /// The command of the frame (a 2005 `9014` names it in `CP`).
    cn: u16,
}

impl Wait {
    fn matches(&self, answer: u16, qn: Option<&str>, cp_cn: Option<u16>, exact: bool) -> bool {
        if answer != self.answer {
            return false;
        }
        if exact {
            self.qn.is_some() && self.qn.as_deref() == qn
        } else {
            self.qn.is_none() && cp_cn.is_none_or(|c| c == self.cn)
        }
    }
}

/// One frame of an exchange.
#[derive(Debug, Clone)]
struct Step {
    frame: Vec<u8>,
    wait: Option<Wait>,
    /// The handle reported in `Acked`/`Failed`.
    handle: String,
    /// The last frame of its handle: its answer completes the handle.
    last: bool,
}

#[derive(Debug)]
struct Inflight {
    step: Step,
    deadline: u64,
    resends: u16,
}

/// The frames of one exchange, sent in order; a frame that waits holds back the rest.
#[derive(Debug, Default)]
struct Lane {
    steps: VecDeque<Step>,
    inflight: Option<Inflight>,
}

impl Lane {
    fn is_idle(&self) -> bool {
        self.steps.is_empty() && self.inflight.is_none()
    }

    fn pump(&mut self, now: u64, over_time: u64, tx: &mut Tx) {
        while self.inflight.is_none() && tx.has_room() {
            let Some(step) = self.steps.pop_front() else { break };
            if step.wait.is_some() {
                tx.push(step.frame.clone());
                self.inflight = Some(Inflight { step, deadline: now.saturating_add(over_time), resends: 0 });
            } else {
                tx.push(step.frame);
            }
        }
    }

    fn waits_for(&self, answer: u16, qn: Option<&str>, cp_cn: Option<u16>, exact: bool) -> bool {
        self.inflight.as_ref().and_then(|i| i.step.wait.as_ref()).is_some_and(|w| w.matches(answer, qn, cp_cn, exact))
    }

    /// Resends a frame whose time is up, or gives it back when the resends are used up.
    ///
    /// A resend that finds the transmit queue full still counts as sent.
    fn on_timeout(&mut self, now: u64, over_time: u64, re_count: u16, tx: &mut Tx) -> Option<(Step, u16)> {
        let inflight = self.inflight.as_mut()?;
        if inflight.deadline > now {
            return None;
        }
        if inflight.resends < re_count {
            tx.push(inflight.step.frame.clone());
            inflight.resends += 1;
            inflight.deadline = now.saturating_add(over_time);
            return None;
        }
        let done = self.inflight.take()?;
        Some((done.step, done.resends.saturating_add(1)))
    }

    fn deadline(&self) -> Option<u64> {
        self.inflight.as_ref().map(|i| i.deadline)
    }
}

/// The bounded transmit queue.
#[derive(Debug)]
struct Tx {
    frames: VecDeque<Vec<u8>>,
    max: usize,
}

impl Tx {
    fn has_room(&self) -> bool {
        self.frames.len() < self.max
    }

    /// Queues a frame; returns false (dropping it) when the queue is full.
    fn push(&mut self, frame: Vec<u8>) -> bool {
        if self.has_room() {
            self.frames.push_back(frame);
            true
        } else {
            false
        }
    }
}

/// The bounded event queue.
#[derive(Debug)]
struct Events {
    queue: VecDeque<Event>,
    max: usize,
    dropped: u64,
}

impl Events {
    fn push(&mut self, event: Event) {
        if self.queue.len() < self.max {
            self.queue.push_back(event);
        } else {
            self.dropped += 1;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Upload,
    Notification,
    Request,
}

/// Something we started.
#[derive(Debug)]
struct Exchange {
    kind: Kind,
    handle: String,
    cn: u16,
    lane: Lane,
    /// Set while a request executes: the deadline of the execution timeout.
    executing: Option<u64>,
}

/// Who sent a packet we answer, and how to answer them.
#[derive(Debug, Clone)]
struct Peer {
    qn: Option<String>,
    pw: String,
    mn: String,
    cn: u16,
    /// Answer in the 2005 form (QN in `CP`).
    legacy: bool,
}

impl Peer {
    fn of(p: &Packet<'_>, ours: Version) -> Self {
        Self {
            qn: p.reference_qn().map(ToString::to_string),
            pw: p.pw().unwrap_or_default().to_string(),
            mn: p.mn().unwrap_or_default().to_string(),
            cn: p.cn(),
            legacy: ours == Version::V2005 || p.qn().is_none() || p.version() == Version::V2005,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InState {
    Deciding,
    Accepted,
    Finishing,
}

/// A request of the peer that a site is answering.
#[derive(Debug)]
struct Incoming {
    qn: String,
    peer: Peer,
    /// The request asked for answers (A=1, or a 2005 request without `Flag`).
    answers: bool,
    state: InState,
    lane: Lane,
    /// What to apply to our configuration when the request succeeds (CN 1000, 1072).
    on_success: Option<Message>,
}

#[derive(Debug)]
struct PendingAck {
    peer: Peer,
}

/// Where a session takes its QNs from.
#[derive(Debug)]
enum QnSource {
    /// Its own generator: QNs are unique among this session's frames.
    Own(QnGenerator),
    /// A generator shared with the caller's other senders of the same MN.
    #[cfg(feature = "std")]
    Shared(crate::qn::SharedQnGenerator),
}

impl QnSource {
    /// Exclusive use of the generator for the QNs of one message.
    fn lock(&mut self) -> QnGuard<'_> {
        match self {
            Self::Own(g) => QnGuard::Own(g),
            #[cfg(feature = "std")]
            Self::Shared(g) => QnGuard::Shared(g.lock()),
        }
    }
}

enum QnGuard<'a> {
    Own(&'a mut QnGenerator),
    #[cfg(feature = "std")]
    Shared(std::sync::MutexGuard<'a, QnGenerator>),
}

impl core::ops::Deref for QnGuard<'_> {
    type Target = QnGenerator;

    fn deref(&self) -> &QnGenerator {
        match self {
            Self::Own(g) => g,
            #[cfg(feature = "std")]
            Self::Shared(g) => g,
        }
    }
}

impl core::ops::DerefMut for QnGuard<'_> {
    fn deref_mut(&mut self) -> &mut QnGenerator {
        match self {
            Self::Own(g) => g,
            #[cfg(feature = "std")]
            Self::Shared(g) => g,
        }
    }
}

/// The exchange state machine of one link. See the [module docs](self).
#[derive(Debug)]
pub struct Session {
    config: Config,
    qns: QnSource,
    tx: Tx,
    events: Events,
    outgoing: Vec<Exchange>,
    incoming: Vec<Incoming>,
    pending_acks: BTreeMap<AckToken, PendingAck>,
    next_token: u64,
    /// Platform: `(MN, QN, 9014 frame)` of recent acks, to answer a resend again.
    recent_acks: VecDeque<(String, String, Vec<u8>)>,
    /// Site: QNs of requests already finished, to ignore resends.
    recent_requests: VecDeque<String>,
    reassembler: Reassembler,
    reassembly_check: Option<u64>,
}

impl Session {
    /// A session with nothing open, with a QN generator of its own.
    ///
    /// Its QNs are unique among its own frames only: a caller that also makes QNs elsewhere for
    /// the same MN should use [`Session::with_shared_qns`].
    #[must_use]
    pub fn new(config: Config) -> Self {
        Self::with_qns(config, QnSource::Own(QnGenerator::new()))
    }

    /// A session with nothing open that takes every QN it mints (uploads, requests, replies and
    /// each part of a split message) from `qns`, a generator shared with the caller's other
    /// senders of the same MN, so that no two of them hand out the same QN (HJ 212-2017 Table 3).
    ///
    /// The generator is locked while the QNs of one message are made, so the parts of a split
    /// message still get consecutive QNs.
    #[cfg(feature = "std")]
    #[must_use]
    pub fn with_shared_qns(config: Config, qns: crate::qn::SharedQnGenerator) -> Self {
        Self::with_qns(config, QnSource::Shared(qns))
    }

    fn with_qns(config: Config, qns: QnSource) -> Self {
        let l = config.limits;
        Self {
            qns,
            tx: Tx { frames: VecDeque::new(), max: l.max_queued_frames },
            events: Events { queue: VecDeque::new(), max: l.max_events, dropped: 0 },
            outgoing: Vec::new(),
            incoming: Vec::new(),
            pending_acks: BTreeMap::new(),
            next_token: 0,
            recent_acks: VecDeque::new(),
            recent_requests: VecDeque::new(),
            reassembler: Reassembler::new(l.max_reassembly_groups, l.max_reassembly_bytes),
            reassembly_check: None,
            config,
        }
    }

    /// The configuration in force.
    #[must_use]
    pub const fn config(&self) -> &Config {
        &self.config
    }

    /// Sets `OverTime` (milliseconds) and `ReCount`, as CN 1000 does; frames already waiting
    /// keep their current deadline.
    pub fn set_timers(&mut self, over_time_ms: u64, re_count: u16) {
        self.config.over_time_ms = over_time_ms;
        self.config.re_count = re_count;
    }

    /// Sets the MN and PW used in our headers and checked on requests.
    pub fn set_credentials(&mut self, mn: impl Into<String>, pw: impl Into<String>) {
        self.config.mn = mn.into();
        self.config.pw = pw.into();
    }

    /// Open exchanges: ours plus the peer's requests being answered.
    #[must_use]
    pub fn open_exchanges(&self) -> usize {
        self.outgoing.len() + self.incoming.len()
    }

    /// True when [`Session::submit`] would not fail for lack of room.
    #[must_use]
    pub fn can_submit(&self) -> bool {
        self.open_exchanges() < self.config.limits.max_exchanges
    }

    /// Events dropped because the event queue was full.
    #[must_use]
    pub const fn dropped_events(&self) -> u64 {
        self.events.dropped
    }

    /// The next frame to send, encoded.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.tx.frames.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.queue.pop_front()
    }

    /// When to call [`Session::handle_timeout`] next, on the monotonic clock of [`Now::ms`].
    #[must_use]
    pub fn poll_timeout(&self) -> Option<u64> {
        let out = self.outgoing.iter().flat_map(|e| [e.lane.deadline(), e.executing]);
        let inc = self.incoming.iter().map(|i| i.lane.deadline());
        out.chain(inc).chain([self.reassembly_check]).flatten().min()
    }

    /// Starts an exchange: an upload (9014 awaited if `ack`), a notification (1013 from a site,
    /// 2012/2022 from a platform; 9013 awaited if `ack`) or, on a platform, a request (9011,
    /// then replies and 9012, awaited if `ack`).
    ///
    /// The session mints the QN, writes `Flag` (our version, A = `ack`), and splits a packet
    /// longer than [`Config::max_data_len`] into sub-packets (Flag 6 or 7): with `ack` each
    /// part waits for its 9014 before the next is sent (C.50), without it they leave back to back
    /// (C.49). Returns the handle: the QN of the first frame, reported again in
    /// [`Event::Acked`] or [`Event::Failed`].
    ///
    /// # Errors
    /// [`SessionError::TooManyExchanges`] when the session is full, [`SessionError::Encode`] when
    /// the packet cannot be encoded (a pair longer than a sub-packet).
    pub fn submit(&mut self, now: Now, outgoing: impl Into<Outgoing>, ack: bool) -> Result<String, SessionError> {
        if !self.can_submit() {
            return Err(SessionError::TooManyExchanges { max: self.config.limits.max_exchanges });
        }
        let outgoing = outgoing.into();
        let cn = match &outgoing {
            Outgoing::Message(m) => m.cn(),
            Outgoing::Packet(p) => p.field("CN").and_then(|c| c.parse().ok()).unwrap_or(0),
        };
        let kind = match (self.config.role, cn) {
            (Role::Site, 1013) | (Role::Platform, 2012 | 2022) => Kind::Notification,
            (Role::Platform, 1000..=8999) => Kind::Request,
            _ => Kind::Upload,
        };
        let answer = match kind {
            Kind::Upload => CN_9014,
            Kind::Notification => CN_9013,
            Kind::Request => CN_9011,
        };
        let omit_qn = kind == Kind::Upload && self.config.role == Role::Site && !self.config.qn_in_uploads;
        let (handle, steps) = self.prepare(now, outgoing, ack, answer, omit_qn, None)?;
        self.outgoing.push(Exchange {
            kind,
            handle: handle.clone(),
            cn,
            lane: Lane { steps, inflight: None },
            executing: None,
        });
        self.pump(now);
        Ok(handle)
    }

    /// Feeds a packet received from the peer.
    pub fn handle_packet(&mut self, now: Now, packet: &Packet<'_>) {
        let cn = packet.cn();
        if (CN_9011..=CN_9014).contains(&cn) {
            // Answers are never answered, whatever their Flag says.
            self.on_answer(now, packet);
        } else {
            match (self.config.role, cn) {
                (Role::Site, 2012 | 2022) | (Role::Platform, 1013) => self.on_notification(packet),
                (Role::Site, _) => self.on_request(packet),
                (Role::Platform, _) => self.on_upload(now, packet),
            }
        }
        self.pump(now);
    }

    /// Resends what timed out, fails what ran out of resends or execution time, and expires
    /// incomplete sub-packet groups.
    pub fn handle_timeout(&mut self, now: Now) {
        let (over, re) = (self.config.over_time_ms, self.config.re_count);
        let mut i = 0;
        while i < self.outgoing.len() {
            let ex = &mut self.outgoing[i];
            if let Some((_, sent)) = ex.lane.on_timeout(now.ms, over, re, &mut self.tx) {
                let ex = self.outgoing.remove(i);
                self.events.push(Event::Failed { qn: ex.handle, cn: ex.cn, reason: Failure::NoAnswer { sent } });
            } else if ex.executing.is_some_and(|d| d <= now.ms) {
                let ex = self.outgoing.remove(i);
                self.events.push(Event::Failed { qn: ex.handle, cn: ex.cn, reason: Failure::ExecutionTimeout });
            } else {
                i += 1;
            }
        }
        let mut i = 0;
        while i < self.incoming.len() {
            if let Some((step, sent)) = self.incoming[i].lane.on_timeout(now.ms, over, re, &mut self.tx) {
                // §6.2.1: the link is unusable; the rest of this request is given up.
                let inc = self.incoming.remove(i);
                let cn = step.wait.as_ref().map_or(inc.peer.cn, |w| w.cn);
                self.events.push(Event::Failed { qn: step.handle, cn, reason: Failure::NoAnswer { sent } });
                self.events.push(Event::Failed { qn: inc.qn.clone(), cn: inc.peer.cn, reason: Failure::Aborted });
                self.remember_request(inc.qn);
            } else {
                i += 1;
            }
        }
        if self.reassembly_check.is_some_and(|t| t <= now.ms) {
            let timeout = self.config.limits.reassembly_timeout_ms;
            if self.reassembler.expire(now.ms, timeout) > 0 {
                self.events.push(Event::Error(SessionError::Reassembly("incomplete sub-packet group expired")));
            }
            self.reassembly_check = (self.reassembler.open() > 0).then(|| now.ms.saturating_add(timeout));
        }
        self.pump(now);
    }

    /// Site: accepts a request reported by [`Event::Request`], sending `9011 QnRtn=1`.
    ///
    /// # Errors
    /// [`SessionError::UnknownRequest`], [`SessionError::InvalidState`] when already decided,
    /// [`SessionError::WrongRole`] on a platform.
    pub fn accept(&mut self, now: Now, qn: &str) -> Result<(), SessionError> {
        let i = self.find_incoming(qn)?;
        if self.incoming[i].state != InState::Deciding {
            return Err(SessionError::InvalidState("request already accepted"));
        }
        if self.incoming[i].answers {
            let frame = self.answer_frame(&self.incoming[i].peer, CN_9011, Some(("QnRtn", QnRtn::Ready.value())))?;
            let handle = self.incoming[i].qn.clone();
            self.incoming[i].lane.steps.push_back(Step { frame, wait: None, handle, last: false });
        }
        self.incoming[i].state = InState::Accepted;
        self.pump(now);
        Ok(())
    }

    /// Site: refuses a request reported by [`Event::Request`] with `9011 QnRtn=qn_rtn`.
    ///
    /// # Errors
    /// As [`Session::accept`]; [`SessionError::TransmitQueueFull`] (the request stays open).
    pub fn refuse(&mut self, now: Now, qn: &str, qn_rtn: QnRtn) -> Result<(), SessionError> {
        let i = self.find_incoming(qn)?;
        if self.incoming[i].state != InState::Deciding {
            return Err(SessionError::InvalidState("request already accepted"));
        }
        if self.incoming[i].answers {
            let frame = self.answer_frame(&self.incoming[i].peer, CN_9011, Some(("QnRtn", qn_rtn.value())))?;
            self.transmit(frame)?;
        }
        let inc = self.incoming.remove(i);
        self.remember_request(inc.qn);
        self.pump(now);
        Ok(())
    }

    /// Site: sends data in reply to an accepted request (1011, 1061, 2061, 3020, …), with its own
    /// new QN and our ST (C.2, C.20). With `ack` it waits for the platform's `9014` (Flag 5, or 7
    /// per sub-packet), and later frames of the request wait behind it (C.48, C.50). A reply to a
    /// 2005-style request also carries the request's QN in `CP` (spec digest §11.4).
    ///
    /// Returns the reply's handle, reported in [`Event::Acked`] or [`Event::Failed`].
    ///
    /// # Errors
    /// As [`Session::accept`]; [`SessionError::InvalidState`] before `accept` or after `finish`;
    /// [`SessionError::Encode`].
    pub fn reply(
        &mut self,
        now: Now,
        qn: &str,
        outgoing: impl Into<Outgoing>,
        ack: bool,
    ) -> Result<String, SessionError> {
        let i = self.find_incoming(qn)?;
        match self.incoming[i].state {
            InState::Deciding => return Err(SessionError::InvalidState("reply before accept")),
            InState::Finishing => return Err(SessionError::InvalidState("reply after finish")),
            InState::Accepted => {}
        }
        let cp_qn = self.incoming[i].peer.legacy.then(|| self.incoming[i].qn.clone());
        let omit_qn = !self.config.qn_in_uploads;
        let (handle, steps) = self.prepare(now, outgoing.into(), ack, CN_9014, omit_qn, cp_qn.as_deref())?;
        self.incoming[i].lane.steps.extend(steps);
        self.pump(now);
        Ok(handle)
    }

    /// Site: ends an accepted request with `9012 ExeRtn=exe_rtn`, sent after every reply
    /// before it has been delivered.
    ///
    /// When a CN 1000 or 1072 request ends with `ExeRtn=1`, the session applies its
    /// `OverTime`/`ReCount` or new password to its own configuration.
    ///
    /// # Errors
    /// As [`Session::accept`]; [`SessionError::InvalidState`] before `accept` or twice.
    pub fn finish(&mut self, now: Now, qn: &str, exe_rtn: ExeRtn) -> Result<(), SessionError> {
        let i = self.find_incoming(qn)?;
        match self.incoming[i].state {
            InState::Deciding => return Err(SessionError::InvalidState("finish before accept")),
            InState::Finishing => return Err(SessionError::InvalidState("request already finished")),
            InState::Accepted => {}
        }
        if self.incoming[i].answers {
            let frame = self.answer_frame(&self.incoming[i].peer, CN_9012, Some(("ExeRtn", exe_rtn.value())))?;
            let handle = self.incoming[i].qn.clone();
            self.incoming[i].lane.steps.push_back(Step { frame, wait: None, handle, last: true });
        }
        self.incoming[i].state = InState::Finishing;
        if exe_rtn == ExeRtn::Success {
            match self.incoming[i].on_success.take() {
                // HJ 212-2017 C.1; OverTime is 1–99 s, ReCount 1–99.
                Some(Message::SetTimeoutRetry { over_time, re_count }) if over_time > 0 => {
                    self.set_timers(u64::from(over_time) * 1000, re_count);
                }
                Some(Message::SetPassword { new_pw }) => self.config.pw = new_pw,
                _ => {}
            }
        }
        self.pump(now);
        Ok(())
    }

    /// Platform: answers an upload reported by [`Event::Upload`] with `9014` (its QN, ST=91,
    /// `Flag=4`; the 2005 form `CP=&&QN=…;CN=…&&` to a 2005-style site). Call it once the
    /// upload is stored durably.
    ///
    /// # Errors
    /// [`SessionError::UnknownToken`] (already acked, forgotten, or not asked for),
    /// [`SessionError::TransmitQueueFull`] (the token stays valid), [`SessionError::WrongRole`].
    pub fn ack(&mut self, now: Now, token: AckToken) -> Result<(), SessionError> {
        if self.config.role != Role::Platform {
            return Err(SessionError::WrongRole);
        }
        let pending = self.pending_acks.get(&token).ok_or(SessionError::UnknownToken)?;
        let frame = self.answer_frame(&pending.peer, CN_9014, None)?;
        let (mn, qn) = (pending.peer.mn.clone(), pending.peer.qn.clone());
        self.transmit(frame.clone())?;
        self.pending_acks.remove(&token);
        if let Some(qn) = qn {
            push_bounded(&mut self.recent_acks, (mn, qn, frame), self.config.limits.remembered_qns);
        }
        self.pump(now);
        Ok(())
    }

    /// Gives up everything open (for example when the link drops): every exchange of ours and
    /// every request of the peer ends with [`Failure::Aborted`], and queued frames are dropped.
    pub fn close(&mut self, _now: Now) {
        self.tx.frames.clear();
        for ex in core::mem::take(&mut self.outgoing) {
            self.events.push(Event::Failed { qn: ex.handle, cn: ex.cn, reason: Failure::Aborted });
        }
        for inc in core::mem::take(&mut self.incoming) {
            self.events.push(Event::Failed { qn: inc.qn, cn: inc.peer.cn, reason: Failure::Aborted });
        }
        self.pending_acks.clear();
        let l = self.config.limits;
        self.reassembler = Reassembler::new(l.max_reassembly_groups, l.max_reassembly_bytes);
        self.reassembly_check = None;
    }

    // ----- Building frames -----

    /// Builds the frames of one message: header, Flag, optional `CP` QN, sub-packets.
    fn prepare(
        &mut self,
        now: Now,
        outgoing: Outgoing,
        ack: bool,
        answer: u16,
        omit_qn: bool,
        cp_qn: Option<&str>,
    ) -> Result<(String, VecDeque<Step>), SessionError> {
        // Held until the QNs of this message are made: a shared generator gives none to anyone
        // else in between, so the parts of a split message stay consecutive.
        let mut qns_guard = self.qns.lock();
        let before = qns_guard.clone();
        let minted = qns_guard.next_string(now.wall);
        let base_flag = Flag::new(self.config.version, false, false);
        let mut packet = match outgoing {
            Outgoing::Message(m) => m.to_packet(&Header {
                qn: (!omit_qn).then_some(minted.as_str()),
                st: &self.config.st,
                pw: &self.config.pw,
                mn: &self.config.mn,
                flag: Some(base_flag),
            }),
            Outgoing::Packet(mut p) => {
                if p.field("QN").is_none() && !omit_qn {
                    p.header.insert(0, ("QN".into(), minted.clone()));
                }
                p
            }
        };
        let flag = packet.field("Flag").and_then(|f| f.parse::<u8>().ok()).map_or(base_flag, Flag);
        packet.set_field("Flag", flag.with_ack(ack).with_split(false).0.to_string());
        packet.remove_field("PNUM");
        packet.remove_field("PNO");
        if let Some(qn) = cp_qn {
            packet.cp.insert(0, alloc::vec![crate::encode::OwnedPair::new("QN", qn)]);
        }
        let cn = packet.field("CN").and_then(|c| c.parse().ok()).unwrap_or(0);
        // Parts of a split message get fresh QNs, the first one the QN minted above (C.49:
        // …534, …535), so the generator restarts from before that QN.
        let mut qns = before;
        let parts =
            subpacket::split(&packet, self.config.max_data_len, &mut qns, now.wall).map_err(SessionError::Encode)?;
        if parts.len() > 1 {
            *qns_guard = qns;
        }
        drop(qns_guard);
        let handle = parts.first().and_then(|p| p.field("QN")).map_or(minted, ToString::to_string);
        let count = parts.len();
        let mut steps = VecDeque::with_capacity(count);
        for (i, part) in parts.iter().enumerate() {
            let frame = part.to_frame(self.config.crc).map_err(SessionError::Encode)?;
            let qn = part.field("QN").map(ToString::to_string);
            steps.push_back(Step {
                frame,
                wait: ack.then_some(Wait { answer, qn, cn }),
                handle: handle.clone(),
                last: i + 1 == count,
            });
        }
        Ok((handle, steps))
    }

    /// An answer (9011–9014) to `peer`, in the 2017 or the 2005 form.
    fn answer_frame(&self, peer: &Peer, answer: u16, value: Option<(&str, u16)>) -> Result<Vec<u8>, SessionError> {
        let mut p = if peer.legacy {
            // Spec digest §11.3–11.4: QN in CP; only 9011 carried `Flag=0`.
            let flag = (answer == CN_9011).then_some(Flag(0));
            let mut p = OwnedPacket::new(None, ST_ANSWER, answer, &peer.pw, &peer.mn, flag);
            if let Some(qn) = &peer.qn {
                p.push_group([("QN", qn.as_str())]);
            }
            if answer == CN_9014 {
                p.push_group([("CN", alloc::format!("{:04}", peer.cn))]);
            }
            p
        } else {
            let flag = Flag::new(self.config.version, false, false);
            OwnedPacket::new(peer.qn.as_deref(), ST_ANSWER, answer, &peer.pw, &peer.mn, Some(flag))
        };
        if let Some((key, v)) = value {
            p.push_group([(key, v.to_string())]);
        }
        p.to_frame(self.config.crc).map_err(SessionError::Encode)
    }

    fn transmit(&mut self, frame: Vec<u8>) -> Result<(), SessionError> {
        if self.tx.push(frame) { Ok(()) } else { Err(SessionError::TransmitQueueFull { max: self.tx.max }) }
    }

    /// Queues an automatic answer; a full queue is reported as an event.
    fn transmit_or_report(&mut self, frame: Result<Vec<u8>, SessionError>) {
        if let Err(e) = frame.and_then(|f| self.transmit(f)) {
            self.events.push(Event::Error(e));
        }
    }

    /// Moves frames from the exchanges to the transmit queue and retires what is done.
    fn pump(&mut self, now: Now) {
        let over = self.config.over_time_ms;
        for ex in &mut self.outgoing {
            ex.lane.pump(now.ms, over, &mut self.tx);
        }
        self.outgoing.retain(|ex| !(ex.lane.is_idle() && ex.executing.is_none()));
        for inc in &mut self.incoming {
            inc.lane.pump(now.ms, over, &mut self.tx);
        }
        let mut i = 0;
        while i < self.incoming.len() {
            if self.incoming[i].state == InState::Finishing && self.incoming[i].lane.is_idle() {
                let inc = self.incoming.remove(i);
                self.remember_request(inc.qn);
            } else {
                i += 1;
            }
        }
    }

    fn find_incoming(&self, qn: &str) -> Result<usize, SessionError> {
        if self.config.role != Role::Site {
            return Err(SessionError::WrongRole);
        }
        self.incoming.iter().position(|i| i.qn == qn).ok_or(SessionError::UnknownRequest)
    }

    fn remember_request(&mut self, qn: String) {
        push_bounded(&mut self.recent_requests, qn, self.config.limits.remembered_qns);
    }

    // ----- Receiving -----

    fn on_answer(&mut self, now: Now, p: &Packet<'_>) {
        let answer = p.cn();
        let ref_qn = p.reference_qn();
        if answer == CN_9012 {
            let cp_qn = p.cp().get("QN");
            let found = self.outgoing.iter().position(|e| {
                e.kind == Kind::Request && (Some(e.handle.as_str()) == ref_qn || Some(e.handle.as_str()) == cp_qn)
            });
            match found {
                Some(i) => {
                    let ex = self.outgoing.remove(i);
                    let exe_rtn =
                        p.cp().get("ExeRtn").and_then(|v| v.parse().ok()).map_or(ExeRtn::Failed, ExeRtn::from_value);
                    self.events.push(Event::Completed { qn: ex.handle, exe_rtn });
                }
                None => self.events.push(Event::Stray { cn: answer, qn: ref_qn.map(ToString::to_string) }),
            }
            return;
        }
        let cp_cn = p.cp().get("CN").and_then(|c| c.parse::<u16>().ok());
        for exact in [true, false] {
            if let Some(i) = self.outgoing.iter().position(|e| e.lane.waits_for(answer, ref_qn, cp_cn, exact)) {
                let Some(done) = self.outgoing[i].lane.inflight.take() else { return };
                let ex = &mut self.outgoing[i];
                if ex.kind == Kind::Request && answer == CN_9011 {
                    let qn_rtn =
                        p.cp().get("QnRtn").and_then(|v| v.parse().ok()).map_or(QnRtn::Unknown, QnRtn::from_value);
                    let qn = ex.handle.clone();
                    if qn_rtn == QnRtn::Ready {
                        ex.executing = Some(now.ms.saturating_add(self.config.execution_timeout()));
                        self.events.push(Event::Accepted { qn });
                    } else {
                        self.outgoing.remove(i);
                        self.events.push(Event::Refused { qn, qn_rtn });
                    }
                } else if done.step.last {
                    self.events.push(Event::Acked { qn: done.step.handle });
                }
                return;
            }
            if let Some(i) = self.incoming.iter().position(|e| e.lane.waits_for(answer, ref_qn, cp_cn, exact)) {
                if let Some(done) = self.incoming[i].lane.inflight.take() {
                    if done.step.last {
                        self.events.push(Event::Acked { qn: done.step.handle });
                    }
                }
                return;
            }
        }
        // A repeated 9011 for a request that already executes is not news.
        let repeated = answer == CN_9011
            && self
                .outgoing
                .iter()
                .any(|e| e.kind == Kind::Request && e.executing.is_some() && Some(e.handle.as_str()) == ref_qn);
        if !repeated {
            self.events.push(Event::Stray { cn: answer, qn: ref_qn.map(ToString::to_string) });
        }
    }

    fn on_notification(&mut self, p: &Packet<'_>) {
        // A 2005 peer may send no Flag at all; it still expects the answer.
        if p.wants_ack() || p.flag().is_none() {
            let peer = Peer::of(p, self.config.version);
            let frame = self.answer_frame(&peer, CN_9013, None);
            self.transmit_or_report(frame);
        }
        self.events.push(Event::Notification {
            qn: p.reference_qn().map(ToString::to_string),
            cn: p.cn(),
            packet: OwnedPacket::from_packet(p),
        });
    }

    /// Site: a platform request.
    fn on_request(&mut self, p: &Packet<'_>) {
        let peer = Peer::of(p, self.config.version);
        let answers = p.wants_ack() || p.flag().is_none();
        if let Some(qn) = p.qn() {
            if let Some(inc) = self.incoming.iter().find(|i| i.qn == qn) {
                // The platform resent the request: our 9011 was lost. Say it again.
                if inc.state != InState::Deciding && inc.answers {
                    let frame = self.answer_frame(&inc.peer, CN_9011, Some(("QnRtn", QnRtn::Ready.value())));
                    self.transmit_or_report(frame);
                }
                return;
            }
            if self.recent_requests.iter().any(|q| q == qn) {
                return;
            }
        }
        let cn = p.cn();
        let checks = &self.config.checks;
        let refusal = if checks.qn && p.qn().is_none() {
            Some(QnRtn::BadQn)
        } else if checks.password && p.pw() != Some(self.config.pw.as_str()) {
            Some(QnRtn::BadPassword)
        } else if checks.mn && p.mn() != Some(self.config.mn.as_str()) {
            Some(QnRtn::BadMn)
        } else if checks.commands.as_ref().is_some_and(|list| !list.contains(&cn)) {
            Some(QnRtn::BadCn)
        } else if !self.can_submit() {
            self.events.push(Event::Error(SessionError::TooManyExchanges { max: self.config.limits.max_exchanges }));
            Some(QnRtn::Refused)
        } else {
            None
        };
        let qn = p.qn().map(ToString::to_string);
        if let Some(qn_rtn) = refusal {
            if answers {
                let frame = self.answer_frame(&peer, CN_9011, Some(("QnRtn", qn_rtn.value())));
                self.transmit_or_report(frame);
            }
            self.events.push(Event::AutoRefused { qn, cn, qn_rtn });
            return;
        }
        let Some(qn) = qn else { return };
        let message = Message::from_packet(p);
        let on_success = match &message {
            Ok(m @ (Message::SetTimeoutRetry { .. } | Message::SetPassword { .. })) => Some(m.clone()),
            _ => None,
        };
        self.incoming.push(Incoming {
            qn: qn.clone(),
            peer,
            answers,
            state: InState::Deciding,
            lane: Lane::default(),
            on_success,
        });
        self.events.push(Event::Request { qn, cn, message, packet: OwnedPacket::from_packet(p) });
    }

    /// Platform: data from the site.
    fn on_upload(&mut self, now: Now, p: &Packet<'_>) {
        let needs_ack = p.wants_ack();
        let peer = Peer::of(p, self.config.version);
        if let Some(qn) = p.qn() {
            let mn = p.mn().unwrap_or_default();
            if self.pending_acks.values().any(|a| a.peer.qn.as_deref() == Some(qn) && a.peer.mn == mn) {
                // Resent while the driver is still storing it: the ack will come.
                return;
            }
            if let Some((_, _, frame)) = self.recent_acks.iter().find(|(m, q, _)| m == mn && q == qn) {
                // Resent because our 9014 was lost: answer again, report nothing new.
                let frame = frame.clone();
                self.transmit_or_report(Ok(frame));
                return;
            }
        }
        let request = self.match_reply(now, p);
        let packet = if p.is_sub_packet() {
            match self.reassembler.push(p, now.ms) {
                Reassembly::NotSplit => OwnedPacket::from_packet(p),
                Reassembly::Complete(whole) => whole,
                Reassembly::Pending { .. } | Reassembly::Duplicate => {
                    // A non-final part: the site waits for its 9014 before the next (C.50).
                    if needs_ack {
                        let frame = self.answer_frame(&peer, CN_9014, None);
                        self.transmit_or_report(frame);
                    }
                    if self.reassembly_check.is_none() {
                        self.reassembly_check = Some(now.ms.saturating_add(self.config.limits.reassembly_timeout_ms));
                    }
                    return;
                }
                Reassembly::Refused(why) => {
                    self.events.push(Event::Error(SessionError::Reassembly(why)));
                    return;
                }
            }
        } else {
            OwnedPacket::from_packet(p)
        };
        let token = AckToken(self.next_token);
        self.next_token += 1;
        if needs_ack {
            if self.pending_acks.len() >= self.config.limits.max_pending_acks {
                if let Some((dropped, _)) = self.pending_acks.pop_first() {
                    let max = self.config.limits.max_pending_acks;
                    self.events.push(Event::Error(SessionError::PendingAcksFull { max, dropped }));
                }
            }
            self.pending_acks.insert(token, PendingAck { peer });
        }
        let qn = packet.field("QN").map(ToString::to_string);
        self.events.push(Event::Upload { token, qn, packet, needs_ack, request });
    }

    /// Platform: finds the request a packet from the site replies to, and restarts its
    /// execution timer (§6.2.2). The request's QN in the header (C.2) or in `CP` (2005) names
    /// it; otherwise the oldest executing request with the same CN does (C.47: own QN).
    fn match_reply(&mut self, now: Now, p: &Packet<'_>) -> Option<String> {
        let (qn, cp_qn, cn) = (p.qn(), p.cp().get("QN"), p.cn());
        let named = |e: &Exchange| {
            e.kind == Kind::Request && (qn == Some(e.handle.as_str()) || cp_qn == Some(e.handle.as_str()))
        };
        let i = self.outgoing.iter().position(named).or_else(|| {
            self.outgoing.iter().position(|e| e.kind == Kind::Request && e.executing.is_some() && e.cn == cn)
        })?;
        let deadline = now.ms.saturating_add(self.config.execution_timeout());
        let ex = &mut self.outgoing[i];
        // Data before the 9011 (lost on the way) means the request is being executed.
        ex.lane.inflight = None;
        ex.lane.steps.clear();
        ex.executing = Some(deadline);
        Some(ex.handle.clone())
    }
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T, max: usize) {
    if max == 0 {
        return;
    }
    while queue.len() >= max {
        queue.pop_front();
    }
    queue.push_back(item);
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use alloc::format;

    use super::*;
    use crate::frame::{Split, Splitter};
    use crate::message::DataItem;
    use crate::qn::SharedQnGenerator;

    fn qns_sent(session: &mut Session) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(frame) = session.poll_transmit() {
            let Split::Frame(f) = Splitter::default().split(&frame, true) else { panic!("not a frame") };
            out.push(Packet::parse(f.data()).unwrap().qn().unwrap().to_string());
        }
        out
    }

    /// Real-time data with `n` pollutants.
    fn data(n: usize) -> Message {
        let items = (0..n)
            .map(|i| DataItem {
                code: format!("a{:05}", 21000 + i),
                fields: alloc::vec![("Rtd".into(), "123.456".into()), ("Flag".into(), "N".into())],
            })
            .collect();
        let data_time = DateTime::parse("20160801085857").unwrap();
        Message::Data { cn: crate::codes::Command::RealTimeData, data_time, items }
    }

    fn site() -> Config {
        Config::new(Role::Site, "010000A8900016F000169DC0", "123456", "32")
    }

    #[test]
    fn sessions_sharing_a_generator_never_reuse_a_qn_in_the_same_millisecond() {
        let now = Now::new(0, DateTime::parse("20160801085857223").unwrap());
        // Separate generators: both sessions make the same QN at the same instant.
        let (mut a, mut b) = (Session::new(site()), Session::new(site()));
        a.submit(now, data(2), false).unwrap();
        b.submit(now, data(2), false).unwrap();
        assert_eq!(qns_sent(&mut a), qns_sent(&mut b));

        // One generator for the MN, shared by two sessions and a third user (a store).
        let shared = SharedQnGenerator::new();
        let mut a = Session::with_shared_qns(site(), shared.clone());
        let mut b = Session::with_shared_qns(site(), shared.clone());
        let record = shared.next_string(now.wall);
        // Long enough to be split into sub-packets, each with its own QN (C.49).
        let handle = a.submit(now, data(60), false).unwrap();
        let parts = qns_sent(&mut a);
        assert!(parts.len() >= 3, "{parts:?}");
        assert_eq!(parts[0], handle);
        b.submit(now, data(2), false).unwrap();
        let single = qns_sent(&mut b);
        let from_store = shared.next_string(now.wall);

        let mut all: Vec<String> = [record.clone()].into_iter().chain(parts.clone()).chain(single).collect();
        all.push(from_store);
        let mut unique = all.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), all.len(), "a QN was handed out twice: {all:?}");
        // Every QN is later than the one before, whoever made it, and the parts of the split
        // message are consecutive.
        assert!(all.windows(2).all(|w| w[0] < w[1]), "{all:?}");
        assert_eq!(record, "20160801085857223");
        let ms = |q: &str| DateTime::parse(q).unwrap().to_millis();
        assert!(parts.windows(2).all(|w| ms(&w[1]) == ms(&w[0]) + 1), "{parts:?}");
        assert_eq!(ms(&parts[0]), ms(&record) + 1);
    }
}
