//! The data-quality engine inside the daemon: one task owns the sans-IO [`Engine`] and talks to
//! the rest of the daemon only through a bounded queue of inputs, the MQTT ledger and the
//! commands path.
//!
//! ```text
//! connection tasks ──try_send──▶ [bounded queue] ──▶ quality task (owns Engine)
//!   (messages, connect/close,                         │ alerts  → {prefix}/alert/{mn}
//!    CRC/auth failures)                               │ daily   → {prefix}/report/{mn} + state file
//! commands path ──try_send──▶ (history ends, 3011)    │ recovery→ {prefix}/recovery/{mn} + state file
//!                                                     │ request → commands::send_request (A=1, QN)
//!                                                     └ tick every `quality.tick_secs`
//! ```
//!
//! Invariants:
//! * Nothing on the frame → PUBACK → 9014 path waits for the engine: inputs are offered with
//!   `try_send`; when the queue is full they are dropped and counted (`quality_inputs_dropped`).
//!   The task takes the queue in batches every 20 ms rather than waking for each input.
//! * Times given to the engine are on the sites' civil scale: UTC plus `utc_offset_minutes`.
//! * Replies to the engine's history requests are matched by QN in the commands path and come
//!   back as `HistoryFinished`; the 9011/9012 frames themselves are not fed as messages, so a reply
//!   to another command can never end a recovery.
//! * Interval commands from the command topic (1062/1064) are remembered here by their QN; the
//!   9012 (or refusing 9011) with that QN becomes `CommandFinished`, so the engine's expectation
//!   follows a set the DAU executed. 9011/9012 with any other QN are ignored.
//!
//! The state file (`quality.state_path`, JSON, see [`State`]) holds the daily records, the online
//! values used by comparisons, the last recovery records, the networking status and the engine's
//! durable state ([`crate::quality::persist`]). It is written every `quality.persist_secs` and at
//! shutdown (temporary file, then rename), and read back at start so that settled days and what
//! the engine learnt survive restarts. A state file that cannot be read or parsed is reported
//! (log line with its path and the error, `quality_state_errors`), renamed aside to
//! `<path>.unreadable-<time>`, and the daemon starts with empty state: it never refuses to start
//! because of it. `hj212-ingest report` and `compare` read the file.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hj212_codec::Packet;
use hj212_codec::message::Message;
use hj212_codec::time::DateTime;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::commands::{self, Origin};
use crate::conn::{Shared, now_ms, topic_segment};
use crate::metrics::Metrics;
use crate::quality::{
    Action, DailyRecord, Engine, EngineState, Event, LabSample, LinkStatus, OnlineValue, QualityConfig, RecoveryRecord,
    comparison::{ComparisonReport, compare},
};

/// Recovery records kept in the state file.
const RECOVERIES_KEPT: usize = 1000;
/// Days recomputed from the engine at every write (the others are settled records).
const RECENT_DAYS: i64 = 3;
/// The state-file format written by this version. 0 (no `version` field): before the engine's
/// state was saved; such a file loads, with the engine starting empty.
pub const STATE_VERSION: u32 = 2;
/// How often the engine takes what the connections queued.
const DRAIN: Duration = Duration::from_millis(20);
/// Inputs fed per drain, at most.
const DRAIN_MAX: usize = 4096;
/// How long an interval command's QN is remembered for its result.
const SET_COMMAND_MEMORY_MS: i64 = 3_600_000;

/// One input for the engine, with the UTC time it happened.
#[derive(Debug)]
pub(crate) enum Input {
    /// An authenticated frame: `text` is its MN followed by its data segment (one allocation
    /// for both; the task parses the segment again, which costs less than decoding it here).
    Frame {
        at_ms: i64,
        mn_len: usize,
        text: Box<str>,
    },
    Opened {
        at_ms: i64,
        mn: String,
        conn: u64,
    },
    Closed {
        at_ms: i64,
        mn: String,
        conn: u64,
    },
    CrcFailure {
        at_ms: i64,
        key: String,
    },
    AuthFailure {
        at_ms: i64,
        key: String,
    },
    CommandSent {
        at_ms: i64,
        mn: String,
        qn: Option<String>,
        message: Message,
    },
    HistoryFinished {
        at_ms: i64,
        mn: String,
        ok: bool,
    },
    /// A 9012, or a refusing 9011, from `mn` answering the request with this QN.
    CommandEnded {
        at_ms: i64,
        mn: String,
        qn: String,
        ok: bool,
    },
}

/// The sending side of the engine's queue, held by the connections and the commands path.
/// Every method returns at once.
#[derive(Debug, Clone)]
pub(crate) struct Feed {
    tx: mpsc::Sender<Input>,
    metrics: Arc<Metrics>,
}

impl Feed {
    fn push(&self, input: Input) {
        match self.tx.try_send(input) {
            Ok(()) => Metrics::inc(&self.metrics.counters.quality_inputs),
            Err(_) => Metrics::inc(&self.metrics.counters.quality_inputs_dropped),
        }
    }

    /// An authenticated frame. Answers (90xx) are not fed as messages: the commands path reports
    /// how the engine's own requests ended, and the ends of other requests (9012, refusing 9011)
    /// go by QN to the task, which keeps those of interval commands. A frame whose message does
    /// not parse counts as traffic.
    pub(crate) fn packet(&self, at_ms: i64, mn: &str, packet: &Packet<'_>) {
        let cn = packet.cn();
        if (9011..=9014).contains(&cn) {
            let code = |k: &str| packet.cp().get(k).and_then(|v| v.trim().parse::<u16>().ok());
            let ok = match cn {
                9012 => Some(code("ExeRtn") == Some(1)),
                9011 if code("QnRtn") != Some(1) => Some(false),
                _ => None,
            };
            if let (Some(ok), Some(qn)) = (ok, packet.qn()) {
                self.push(Input::CommandEnded { at_ms, mn: mn.to_string(), qn: qn.to_string(), ok });
            }
            return;
        }
        let segment = packet.as_str();
        let mut text = String::with_capacity(mn.len() + segment.len());
        text.push_str(mn);
        text.push_str(segment);
        self.push(Input::Frame { at_ms, mn_len: mn.len(), text: text.into_boxed_str() });
    }

    /// Connection `conn` carries frames of `mn` from now on.
    pub(crate) fn opened(&self, mn: &str, conn: u64) {
        self.push(Input::Opened { at_ms: now_ms(), mn: mn.to_string(), conn });
    }

    /// Connection `conn`, which carried `mn`, closed.
    pub(crate) fn closed(&self, mn: &str, conn: u64) {
        self.push(Input::Closed { at_ms: now_ms(), mn: mn.to_string(), conn });
    }

    /// A frame failed its CRC; `key` is its MN when readable, else the peer.
    pub(crate) fn crc_failure(&self, key: &str) {
        self.push(Input::CrcFailure { at_ms: now_ms(), key: key.to_string() });
    }

    /// A frame failed authentication; `key` as for [`Feed::crc_failure`].
    pub(crate) fn auth_failure(&self, key: &str) {
        self.push(Input::AuthFailure { at_ms: now_ms(), key: key.to_string() });
    }

    /// A command from the command topic was sent to `mn` (calibration evidence for 3011; an
    /// interval to expect once a 1062/1064 succeeds).
    pub(crate) fn command_sent(&self, mn: &str, data_segment: &str) {
        let Ok(packet) = Packet::parse(data_segment.as_bytes()) else { return };
        if let Ok(message) = Message::from_packet(&packet) {
            let qn = packet.qn().map(str::to_string);
            self.push(Input::CommandSent { at_ms: now_ms(), mn: mn.to_string(), qn, message });
        }
    }

    /// One of the engine's history requests to `mn` ended (9012, refusing 9011, timeout, close).
    pub(crate) fn history_finished(&self, mn: &str, ok: bool) {
        self.push(Input::HistoryFinished { at_ms: now_ms(), mn: mn.to_string(), ok });
    }
}

/// What the daemon persists for the `report` and `compare` subcommands and for its own restart
/// (JSON). Every field added since the first format has a default, so older files load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The format ([`STATE_VERSION`] when written by this version; 0 when absent).
    #[serde(default)]
    pub version: u32,
    /// When it was written, site civil time `YYYYMMDDhhmmss`.
    pub written_at: String,
    /// The daemon's `utc_offset_minutes`.
    pub utc_offset_minutes: i32,
    /// Daily accounting records: settled ones, and the recent days recomputed at every write
    /// (`complete = false` for a day in progress).
    pub daily: Vec<DailyRecord>,
    /// Online values kept for comparisons (the first CN of `comparison.online_cns`).
    pub online: Vec<OnlineValue>,
    /// The last finished gap-recovery requests, oldest first.
    pub recoveries: Vec<RecoveryRecord>,
    /// The networking status of every known MN.
    pub network: Vec<LinkStatus>,
    /// The engine's durable state (learnt intervals, rule state, recovery bookkeeping …),
    /// restored at start. Absent in files written before version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineState>,
}

impl State {
    /// Reads a state file.
    ///
    /// # Errors
    /// The file cannot be read or is not a state file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("{} is not a quality state file", path.display()))
    }

    /// The daily records of one civil day (`YYYY-MM-DD`), of one MN or all.
    #[must_use]
    pub fn day(&self, date: &str, mn: Option<&str>) -> Vec<DailyRecord> {
        self.daily.iter().filter(|r| r.date == date && mn.is_none_or(|m| m == r.mn)).cloned().collect()
    }

    /// The networking status of one MN or all, as of [`State::written_at`].
    #[must_use]
    pub fn network(&self, mn: Option<&str>) -> Vec<LinkStatus> {
        self.network.iter().filter(|r| mn.is_none_or(|m| m == r.mn)).cloned().collect()
    }

    /// Compares laboratory samples of one MN (or all) with the persisted online values.
    #[must_use]
    pub fn compare(&self, lab: &[LabSample], mn: Option<&str>, cfg: &QualityConfig) -> ComparisonReport {
        let lab: Vec<LabSample> = lab.iter().filter(|s| mn.is_none_or(|m| m == s.mn)).cloned().collect();
        let online: Vec<OnlineValue> = self
            .online
            .iter()
            .filter(|o| lab.iter().any(|l| l.mn == o.mn && l.pollutant == o.pollutant))
            .cloned()
            .collect();
        compare(&lab, &online, &cfg.comparison)
    }
}

/// What reading the state file at start gave.
#[derive(Debug)]
enum Loaded {
    /// No file (first start, or no `state_path`).
    Missing,
    /// A state file.
    State(Box<State>),
    /// A file that cannot be read or is not a state file; it was renamed to `moved_to` (or
    /// could not be).
    Unusable { error: String, moved_to: std::io::Result<PathBuf> },
}

/// Reads the state file; an unusable one is renamed aside so that the next write does not
/// destroy it, and so that an operator can look at it.
fn read_state(path: &Path, now: DateTime) -> Loaded {
    if path.as_os_str().is_empty() {
        return Loaded::Missing;
    }
    let error = match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => format!("cannot read it: {e}"),
        Ok(bytes) => match serde_json::from_slice::<State>(&bytes) {
            Ok(state) => return Loaded::State(Box::new(state)),
            Err(e) => format!("not a quality state file: {e}"),
        },
    };
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".unreadable-{now}"));
    let aside = PathBuf::from(aside);
    let moved_to = std::fs::rename(path, &aside).map(|()| aside);
    Loaded::Unusable { error, moved_to }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The civil time of a UTC millisecond count.
fn civil(utc_ms: i64, offset_minutes: i32) -> DateTime {
    DateTime::civil_from_utc(utc_ms, offset_minutes)
}

/// Creates the queue; the [`Feed`] goes into `Shared`, the receiver to [`run`].
pub(crate) fn channel(capacity: usize, metrics: Arc<Metrics>) -> (Feed, mpsc::Receiver<Input>) {
    let (tx, rx) = mpsc::channel(capacity);
    (Feed { tx, metrics }, rx)
}

/// The task that owns the engine.
struct Task {
    engine: Engine,
    shared: Arc<Shared>,
    offset: i32,
    prefix: String,
    conns: HashMap<String, HashSet<u64>>,
    settled: BTreeMap<(String, u16, String), DailyRecord>,
    online_loaded: Vec<OnlineValue>,
    recoveries: VecDeque<RecoveryRecord>,
    next_id: u64,
    /// Interval commands sent from the command topic, by QN, until their result.
    sets: HashMap<String, SetCommand>,
}

/// A 1062/1064 sent to `mn`, waiting for the DAU's result.
#[derive(Debug)]
struct SetCommand {
    mn: String,
    message: Message,
    at_ms: i64,
}

/// Runs the engine until shutdown, then drains the queue and writes the state file.
pub(crate) async fn run(
    mut rx: mpsc::Receiver<Input>,
    shared: Arc<Shared>,
    mut config_rx: watch::Receiver<QualityConfig>,
) {
    let config = shared.config.clone();
    let q = &config.quality;
    let engine_cfg = config_rx.borrow_and_update().clone();
    let mut task = Task {
        engine: Engine::new(engine_cfg),
        offset: config.utc_offset_minutes,
        prefix: config.mqtt.prefix.clone(),
        conns: HashMap::new(),
        settled: BTreeMap::new(),
        online_loaded: Vec::new(),
        recoveries: VecDeque::new(),
        next_id: 0,
        sets: HashMap::new(),
        shared: shared.clone(),
    };
    let state_path = q.state_path.clone();
    task.load(&state_path);
    let mut tick = tokio::time::interval(Duration::from_secs(q.tick_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut persist = tokio::time::interval(Duration::from_secs(q.persist_secs));
    persist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    persist.tick().await;
    // The queue is read in batches every DRAIN: the connections' `try_send` then finds no task
    // waiting to be woken, which under load costs more than the engine's work itself.
    let mut drain = tokio::time::interval(DRAIN);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            _ = drain.tick() => {
                // What is queued now, up to a bound (200 000 inputs a second, far above what the
                // daemon takes in), so that one batch never holds a worker for long.
                for _ in 0..rx.len().min(DRAIN_MAX) {
                    match rx.try_recv() {
                        Ok(input) => task.input(input),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => return finish(task, rx, &state_path).await,
                    }
                }
            }
            _ = tick.tick() => {
                let now = task.now();
                let actions = task.engine.tick(now);
                task.act(now, actions);
            }
            _ = persist.tick() => task.persist(&state_path).await,
            changed = config_rx.changed() => {
                if changed.is_ok() {
                    let cfg = config_rx.borrow_and_update().clone();
                    let now = task.now();
                    task.engine.set_config(now, cfg);
                    tracing::info!("Quality configuration reloaded.");
                }
            }
        }
    }
    finish(task, rx, &state_path).await;
}

/// Feeds what is still queued, writes the state file.
async fn finish(mut task: Task, mut rx: mpsc::Receiver<Input>, state_path: &Path) {
    while let Ok(input) = rx.try_recv() {
        task.input(input);
    }
    task.persist(state_path).await;
    tracing::debug!("Quality task stopped.");
}

impl Task {
    fn now(&self) -> DateTime {
        civil(now_ms(), self.offset)
    }

    /// Loads the state file, if any. Never fails: an unusable file is reported, counted and
    /// moved aside, and the task starts with empty state.
    fn load(&mut self, path: &Path) {
        let now = self.now();
        let state = match read_state(path, now) {
            Loaded::Missing => return,
            Loaded::State(state) => *state,
            Loaded::Unusable { error, moved_to } => {
                Metrics::inc(&self.shared.metrics.counters.quality_state_errors);
                match moved_to {
                    Ok(aside) => tracing::error!(
                        path = %path.display(), moved_to = %aside.display(), %error,
                        "Quality state file unusable; moved aside, starting with empty quality state."
                    ),
                    Err(rename) => tracing::error!(
                        path = %path.display(), %error, %rename,
                        "Quality state file unusable and could not be moved aside; starting with empty quality state (the next write replaces it)."
                    ),
                }
                return;
            }
        };
        if state.version > STATE_VERSION {
            tracing::warn!(
                path = %path.display(), version = state.version, known = STATE_VERSION,
                "Quality state file written by a newer version; reading what this version knows."
            );
        }
        tracing::info!(
            path = %path.display(),
            version = state.version,
            days = state.daily.len(),
            mns = state.engine.as_ref().map_or(0, EngineState::mn_count),
            "Quality state loaded."
        );
        self.settled =
            state.daily.into_iter().filter(|r| r.complete).map(|r| ((r.mn.clone(), r.cn, r.date.clone()), r)).collect();
        self.online_loaded = state.online;
        self.recoveries = state.recoveries.into();
        if let Some(saved) = state.engine {
            let cfg = self.engine.config().clone();
            self.engine = Engine::restore(cfg, saved, now);
        }
    }

    fn input(&mut self, input: Input) {
        let (at, actions) = match input {
            Input::Frame { at_ms, mn_len, text } => {
                let at = civil(at_ms, self.offset);
                let (mn, segment) = text.split_at_checked(mn_len).unwrap_or(("", &text));
                // The connection parsed these bytes already; a failure here would be a bug,
                // and the frame still counts as traffic.
                let actions = match Packet::parse(segment.as_bytes()) {
                    Ok(packet) => self.engine.feed_frame(at, mn, &packet),
                    Err(_) => self.engine.feed_message(at, mn, &Message::Heartbeat),
                };
                (at, actions)
            }
            Input::Opened { at_ms, mn, conn } => {
                let at = civil(at_ms, self.offset);
                let set = self.conns.entry(mn.clone()).or_default();
                let first = set.is_empty();
                set.insert(conn);
                (at, if first { self.engine.feed_event(at, Event::Connected { mn }) } else { Vec::new() })
            }
            Input::Closed { at_ms, mn, conn } => {
                let at = civil(at_ms, self.offset);
                let last = self.conns.get_mut(&mn).is_some_and(|set| set.remove(&conn) && set.is_empty());
                if last {
                    self.conns.remove(&mn);
                }
                (at, if last { self.engine.feed_event(at, Event::Disconnected { mn }) } else { Vec::new() })
            }
            Input::CrcFailure { at_ms, key } => {
                let at = civil(at_ms, self.offset);
                (at, self.engine.feed_event(at, Event::CrcFailure { key }))
            }
            Input::AuthFailure { at_ms, key } => {
                let at = civil(at_ms, self.offset);
                (at, self.engine.feed_event(at, Event::AuthFailure { key }))
            }
            Input::CommandSent { at_ms, mn, qn, message } => {
                let at = civil(at_ms, self.offset);
                if let Some(qn) =
                    qn.filter(|_| matches!(message, Message::SetRtdInterval { .. } | Message::SetMinInterval { .. }))
                {
                    self.sets.retain(|_, s| at_ms - s.at_ms < SET_COMMAND_MEMORY_MS);
                    self.sets.insert(qn, SetCommand { mn: mn.clone(), message: message.clone(), at_ms });
                }
                (at, self.engine.feed_event(at, Event::CommandSent { mn, message }))
            }
            Input::CommandEnded { at_ms, mn, qn, ok } => {
                let at = civil(at_ms, self.offset);
                match self.sets.remove(&qn).filter(|s| s.mn == mn) {
                    Some(set) => {
                        tracing::info!(mn, qn, ok, cn = set.message.cn(), "Interval command finished.");
                        (at, self.engine.feed_event(at, Event::CommandFinished { mn, message: set.message, ok }))
                    }
                    None => (at, Vec::new()),
                }
            }
            Input::HistoryFinished { at_ms, mn, ok } => {
                let at = civil(at_ms, self.offset);
                (at, self.engine.feed_event(at, Event::HistoryFinished { mn, ok }))
            }
        };
        self.act(at, actions);
    }

    fn publish(&self, kind: &str, mn: &str, body: Vec<u8>) {
        let topic = format!("{}/{kind}/{}", self.prefix, topic_segment(mn));
        if let Err(error) = self.shared.ledger.publish(topic, body, false, None) {
            tracing::warn!(mn, kind, %error, "Could not publish a data-quality message.");
        }
    }

    fn act(&mut self, now: DateTime, actions: Vec<Action>) {
        let mut work: VecDeque<Action> = actions.into();
        let metrics = self.shared.metrics.clone();
        while let Some(action) = work.pop_front() {
            match action {
                Action::Alert(alert) => {
                    metrics.count_quality_alert(alert.rule.name());
                    tracing::warn!(mn = %alert.mn, rule = alert.rule.name(), subject = ?alert.subject, "{}", alert.message);
                    self.publish("alert", &alert.mn, serde_json::to_vec(&alert).unwrap_or_default());
                }
                Action::Request { mn, message } => {
                    self.next_id += 1;
                    let command = commands::Command {
                        id: format!("quality-{}", self.next_id),
                        cn: message.cn(),
                        groups: message
                            .to_cp()
                            .into_iter()
                            .map(|g| g.into_iter().map(|p| (p.key, p.value.unwrap_or_default())).collect())
                            .collect(),
                    };
                    match commands::send_request(&self.shared, &mn, &command, Origin::Quality) {
                        Ok(qn) => {
                            Metrics::inc(&metrics.counters.quality_requests_sent);
                            tracing::info!(mn, qn, cn = command.cn, "Gap-recovery request sent.");
                        }
                        Err(error) => {
                            Metrics::inc(&metrics.counters.quality_requests_failed);
                            tracing::info!(mn, error, "Gap-recovery request not sent.");
                            work.extend(self.engine.feed_event(now, Event::HistoryFinished { mn, ok: false }));
                        }
                    }
                }
                Action::Recovery(record) => {
                    Metrics::inc(&metrics.counters.quality_recoveries);
                    tracing::info!(mn = %record.mn, outcome = ?record.outcome, "Gap recovery finished.");
                    self.publish("recovery", &record.mn, serde_json::to_vec(&record).unwrap_or_default());
                    self.recoveries.push_back(record);
                    while self.recoveries.len() > RECOVERIES_KEPT {
                        self.recoveries.pop_front();
                    }
                }
                Action::Daily(record) => {
                    Metrics::inc(&metrics.counters.quality_daily_records);
                    self.publish("report", &record.mn, serde_json::to_vec(&record).unwrap_or_default());
                    self.settled.insert((record.mn.clone(), record.cn, record.date.clone()), record);
                }
            }
        }
    }

    /// Builds the state and writes it on a blocking thread.
    async fn persist(&mut self, path: &Path) {
        if path.as_os_str().is_empty() {
            return;
        }
        let now = self.now();
        let cfg = self.engine.config();
        let day_ms = 86_400_000;
        let keep = i64::from(cfg.accounting.keep_days.max(1));
        let today = now.to_millis().div_euclid(day_ms);
        let oldest = crate::quality::date_string(today - keep);
        self.settled.retain(|(_, _, date), _| *date >= oldest);
        let mut daily = self.settled.clone();
        let from = civil((today - RECENT_DAYS + 1) * day_ms - i64::from(self.offset) * 60_000, self.offset);
        for r in self.engine.daily_records(now, None, from, now) {
            daily.insert((r.mn.clone(), r.cn, r.date.clone()), r);
        }
        let online_cn = cfg.comparison.online_cns.first().copied();
        let horizon = now.to_millis() - (cfg.comparison.keep_online_hours * 3_600_000.0) as i64;
        let mut online: Vec<OnlineValue> =
            self.engine.online_values().into_iter().filter(|o| Some(o.cn) == online_cn).collect();
        let seen: HashSet<(String, String, i64)> =
            online.iter().map(|o| (o.mn.clone(), o.pollutant.clone(), o.time.to_millis())).collect();
        self.online_loaded.retain(|o| {
            o.time.to_millis() >= horizon && !seen.contains(&(o.mn.clone(), o.pollutant.clone(), o.time.to_millis()))
        });
        online.extend(self.online_loaded.iter().cloned());
        let state = State {
            version: STATE_VERSION,
            written_at: now.to_string(),
            utc_offset_minutes: self.offset,
            daily: daily.into_values().collect(),
            online,
            recoveries: self.recoveries.iter().cloned().collect(),
            network: self.engine.network_status(now),
            engine: Some(self.engine.save(now)),
        };
        let bytes = match serde_json::to_vec(&state) {
            Ok(b) => b,
            Err(error) => {
                tracing::error!(%error, "Cannot serialise the quality state.");
                return;
            }
        };
        let path = path.to_path_buf();
        let written = tokio::task::spawn_blocking(move || write_atomically(&path, &bytes).map_err(|e| (path, e))).await;
        if let Ok(Err((path, error))) = written {
            Metrics::inc(&self.shared.metrics.counters.quality_state_errors);
            tracing::warn!(path = %path.display(), %error, "Cannot write the quality state.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hj212-quality-task-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn state_files_missing_old_current_and_unusable() {
        let d = dir("read");
        let now = DateTime::parse("20260302101500").unwrap();
        let path = d.join("quality.json");
        assert!(matches!(read_state(&path, now), Loaded::Missing));
        assert!(matches!(read_state(Path::new(""), now), Loaded::Missing));

        // The first format (no version, no engine state) loads.
        std::fs::write(&path, r#"{"written_at":"20260301000000","utc_offset_minutes":480,"daily":[],"online":[],"recoveries":[],"network":[]}"#).unwrap();
        let Loaded::State(old) = read_state(&path, now) else { panic!("old format not loaded") };
        assert_eq!((old.version, old.engine.is_none()), (0, true));

        // The current format round-trips, engine state included.
        let state = State {
            version: STATE_VERSION,
            engine: Some(Engine::new(QualityConfig::default()).save(now)),
            ..State::default()
        };
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
        let Loaded::State(back) = read_state(&path, now) else { panic!("current format not loaded") };
        assert_eq!(*back, state);

        // Truncated: moved aside with its content, the path free for the next write.
        std::fs::write(&path, b"{\"written_at\":\"2026").unwrap();
        let Loaded::Unusable { error, moved_to } = read_state(&path, now) else { panic!("corrupt file loaded") };
        assert!(error.contains("not a quality state file"), "{error}");
        let aside = moved_to.unwrap();
        assert_eq!(aside, d.join("quality.json.unreadable-20260302101500"));
        assert_eq!(std::fs::read(&aside).unwrap(), b"{\"written_at\":\"2026");
        assert!(!path.exists());

        // Unreadable (here: a directory where the file should be).
        std::fs::create_dir(&path).unwrap();
        let Loaded::Unusable { error, moved_to } =
            read_state(&path, DateTime::from_millis_or_epoch(now.to_millis() + 1000))
        else {
            panic!("a directory loaded")
        };
        assert!(error.contains("cannot read"), "{error}");
        assert!(moved_to.is_ok() && !path.exists());
        let _ = std::fs::remove_dir_all(d);
    }
}
