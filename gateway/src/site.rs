//! The site's shared state: the firmware's acquisition and dynamic-control trackers fed by every
//! serial port, the intervals a platform may change, and the path from a produced message to the
//! store.
//!
//! Every message goes through [`Site::publish`]: it is encoded with the site's header, written to
//! the store (every platform's queue, flushed), and only then are the uplinks woken. The firmware
//! decides what to send, real-time pacing included (a CN 1062 sets the firmware's `RtdInterval`
//! without losing the open statistics periods); this module adds no protocol or statistics logic
//! of its own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use firmware::acquire::{AcquireConfig, Acquisition, Reading};
use firmware::dynamic::{self, DynamicConfig, Tracker};
use firmware::modbus::{CommState, ExceptionCode};
use firmware::profile::{Code, ControlAction, ControlSpec, OwnedProfile, Target, Value};
use firmware::stats::GasValidity;
use hj212_codec::Flag;
use hj212_codec::Version;
use hj212_codec::message::{Header, Message};
use hj212_codec::qn::SharedQnGenerator;
use tokio::sync::{mpsc, oneshot, watch};

use crate::clock::Clock;
use crate::config::{CodeTable, Config};
use crate::metrics::Metrics;
use crate::store::{Record, Store};

/// One analyzer as the site knows it.
#[derive(Debug, Clone)]
pub struct AnalyzerInfo {
    /// Its configured name.
    pub name: String,
    /// The port it is on (index into the configuration's `serial`).
    pub port: usize,
    /// Its profile, unit override applied.
    pub profile: OwnedProfile,
    /// Its `PolId`.
    pub pol_id: Code,
}

/// A request from an uplink to a serial port.
#[derive(Debug)]
pub enum PortCommand {
    /// Write a parameter point (CN 3021): the point's registers get `value` encoded per its type.
    WritePoint {
        /// Analyzer index (site-wide).
        analyzer: usize,
        /// Point index in the analyzer's profile.
        point: usize,
        /// The value, before the point's scale and offset are undone.
        value: Value,
        /// The outcome.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Trigger a control action (CN 3011–3015): the one write its [`ControlSpec`] names.
    Control {
        /// Analyzer index (site-wide).
        analyzer: usize,
        /// The trigger, from the analyzer's profile.
        control: ControlSpec,
        /// The outcome.
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// Read one point now (the retention bottle number after a CN 3015).
    ReadPoint {
        /// Analyzer index (site-wide).
        analyzer: usize,
        /// Point index in the analyzer's profile.
        point: usize,
        /// The decoded value, or why there is none.
        reply: oneshot::Sender<Result<Value, String>>,
    },
}

/// Why a control action (CN 3011–3015) was not carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// The analyzer did not answer properly (no answer, damaged answers, or the line failed):
    /// `ExeRtn=4`, communication timeout.
    Timeout(String),
    /// The analyzer answered with a Modbus exception: `ExeRtn=5` (busy) for exception 6, else
    /// `ExeRtn=2`.
    Exception(ExceptionCode),
    /// The gateway could not ask (the port task stopped): `ExeRtn=6`, system fault.
    Unavailable(String),
}

impl ControlError {
    /// The `ExeRtn` that reports it (HJ 212-2017 Table 6).
    #[must_use]
    pub const fn exe_rtn(&self) -> hj212_codec::ExeRtn {
        match self {
            Self::Timeout(_) => hj212_codec::ExeRtn::Timeout,
            Self::Exception(ExceptionCode::ServerDeviceBusy) => hj212_codec::ExeRtn::Busy,
            Self::Exception(_) => hj212_codec::ExeRtn::Failed,
            Self::Unavailable(_) => hj212_codec::ExeRtn::Fault,
        }
    }
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout(why) => write!(f, "no proper answer from the analyzer: {why}"),
            Self::Exception(code) => write!(f, "the analyzer refused with Modbus exception {:#04x}", code.to_u8()),
            Self::Unavailable(why) => write!(f, "cannot reach the analyzer: {why}"),
        }
    }
}

/// Why a control action (CN 3011–3015) is refused before anything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRefusal {
    /// No analyzer has this `PolId`.
    UnknownAnalyzer,
    /// The analyzer's profile has no control for the action (or, for CN 3015, no analyzer has
    /// one).
    NoControl,
}

impl ControlRefusal {
    /// The `reason` label of `hj212_gateway_control_refused_total`.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::UnknownAnalyzer => "unknown_analyzer",
            Self::NoControl => "no_control",
        }
    }
}

/// The answer of [`Site::info`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InfoLookup {
    /// The latest value.
    Value(String),
    /// The analyzer has the parameter but it has not been read yet.
    NotYetRead,
    /// No analyzer has such a parameter.
    Unknown,
}

/// Why a CN 3021 could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    /// No analyzer has this `PolId`, or its profile has no such parameter point, or the value is bad.
    NoPoint,
    /// The analyzer did not take it.
    Failed(String),
}

struct State {
    acquisition: Acquisition,
    trackers: Vec<Tracker>,
    rtd_interval_s: u32,
    min_interval: u8,
    /// When each analyzer's electricity-use record last went out.
    last_electricity_ms: Vec<Option<u64>>,
    /// Latest dynamic-control values: (PolId, i-code) → value text.
    info: BTreeMap<(String, String), String>,
}

/// HJ 212-2025 system code of electricity-use records.
const ELECTRICITY_ST: &str = "44";

/// The site: shared by the serial tasks (producers) and the uplinks (consumers, command handlers).
pub struct Site {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// The data clock.
    pub clock: Arc<dyn Clock>,
    /// The store.
    pub store: Arc<dyn Store>,
    /// The counters.
    pub metrics: Arc<Metrics>,
    /// Every analyzer of every port, in configuration order.
    pub analyzers: Vec<AnalyzerInfo>,
    /// Per analyzer, the electricity-use points and their codes (`(point index, code)`), when it
    /// has some and a platform speaks HJ 212-2025.
    electricity: Vec<Vec<(usize, String)>>,
    state: Mutex<State>,
    maintenance: Mutex<crate::maintenance::Watcher>,
    /// The one QN generator of the gateway: records, and every uplink's session and own frames.
    qns: SharedQnGenerator,
    appended: watch::Sender<u64>,
    ports: Vec<mpsc::Sender<PortCommand>>,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site").field("analyzers", &self.analyzers.len()).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a panic elsewhere; the state is still consistent enough to go on.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Tells a new acquisition which periods the store already holds: after a restart, a period the
/// clock passes again (it was set back) is not reported a second time.
fn seed_reported(acquisition: &mut Acquisition, store: &dyn Store) {
    acquisition.seed_reported(
        store.latest_history_time(2051),
        store.latest_history_time(2061),
        store.latest_history_time(2031),
    );
}

fn acquire_config(config: &Config, rtd_interval_s: u32, min_interval: u8) -> AcquireConfig {
    let a = &config.acquisition;
    AcquireConfig {
        rtd_interval_s,
        min_interval,
        validity: GasValidity {
            samples_per_minute: a.samples_per_minute,
            minutes_per_hour: a.minutes_per_hour,
            hours_per_day: a.hours_per_day,
        },
        // The 2025-only records (2013, 2111) are produced when any platform speaks 2025; each
        // uplink drops those its platform does not take (`Platform::takes`).
        hj212_2025: config.any_2025_platform(),
        ..AcquireConfig::default()
    }
}

impl Site {
    /// The site for `config`, with the intervals a platform set earlier (kept in the store's
    /// `meta` tree) taking precedence over the file.
    #[must_use]
    pub fn new(
        config: Arc<Config>,
        clock: Arc<dyn Clock>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        analyzers: Vec<AnalyzerInfo>,
        ports: Vec<mpsc::Sender<PortCommand>>,
    ) -> Self {
        let rtd_interval_s = store
            .meta("rtd_interval_secs")
            .and_then(|v| v.parse().ok())
            .unwrap_or(config.acquisition.rtd_interval_secs);
        let min_interval = store
            .meta("min_interval_mins")
            .and_then(|v| v.parse().ok())
            .filter(|m| crate::config::MIN_INTERVALS.contains(m))
            .unwrap_or(config.acquisition.min_interval_mins);
        let profiles: Vec<_> = analyzers.iter().map(|a| a.profile.as_profile()).collect();
        let refs: Vec<_> = profiles.iter().collect();
        let mut acquisition = Acquisition::new(acquire_config(&config, rtd_interval_s, min_interval), &refs);
        seed_reported(&mut acquisition, store.as_ref());
        let trackers = analyzers.iter().map(|a| Tracker::new(&a.profile.as_profile(), Some(a.pol_id))).collect();
        let configured = config.serial.iter().flat_map(|p| &p.analyzer);
        let electricity: Vec<Vec<(usize, String)>> = analyzers
            .iter()
            .zip(configured)
            .map(|(a, c)| match (&c.electricity, config.any_2025_platform()) {
                (Some(e), true) => e
                    .codes
                    .iter()
                    .filter_map(|(name, code)| {
                        let q = crate::config::Electricity::quantity(name)?;
                        let point = a.profile.points.iter().position(|p| p.target == Target::Facility(q))?;
                        Some((point, code.clone()))
                    })
                    .collect(),
                _ => Vec::new(),
            })
            .collect();
        let (appended, _) = watch::channel(0);
        let maintenance =
            Mutex::new(crate::maintenance::Watcher::new(config.maintenance_file(), config.site.utc_offset_minutes));
        Self {
            maintenance,
            state: Mutex::new(State {
                acquisition,
                trackers,
                rtd_interval_s,
                min_interval,
                last_electricity_ms: vec![None; analyzers.len()],
                info: BTreeMap::new(),
            }),
            electricity,
            config,
            clock,
            store,
            metrics,
            analyzers,
            qns: SharedQnGenerator::new(),
            appended,
            ports,
        }
    }

    fn dynamic_config(&self) -> DynamicConfig<'static> {
        DynamicConfig {
            table: match self.config.site.code_table {
                CodeTable::National => dynamic::NATIONAL,
                CodeTable::Hebei => dynamic::HEBEI,
            },
            snapshot_interval_ms: self.config.acquisition.snapshot_interval_secs.saturating_mul(1000),
            hj212_2025: self.config.any_2025_platform(),
            ..DynamicConfig::default()
        }
    }

    /// Feeds one poll cycle of one port: `(analyzer index, one value slot per point, comm state)`.
    /// Returns the messages that came due.
    ///
    /// Each cycle also checks the maintenance file ([`crate::maintenance`]): its start and stop
    /// logs come first, and while a maintenance is open data flags `N` become `M`.
    pub fn cycle(&self, readings: &[(usize, Vec<Option<Value>>, CommState)]) -> Vec<Message> {
        let now = self.clock.now();
        let now_ms = self.clock.ms();
        let profiles: Vec<_> = readings.iter().map(|(i, _, _)| self.analyzers[*i].profile.as_profile()).collect();
        let refs: Vec<Reading<'_>> =
            readings.iter().zip(&profiles).map(|((_, values, comm), p)| Reading::new(p, values, *comm)).collect();
        let dyn_cfg = self.dynamic_config();
        let (mut notes, maintenance) = {
            let mut w = lock(&self.maintenance);
            (w.poll(self.store.as_ref(), now), w.is_open())
        };
        let mut st = lock(&self.state);
        let mut out = st.acquisition.ingest(now, now_ms, &refs);
        if maintenance {
            crate::maintenance::flag_maintenance(&mut out);
        }
        for ((i, _, _), reading) in readings.iter().zip(&refs) {
            let msgs = st.trackers[*i].update(&dyn_cfg, reading, now, now_ms);
            for m in &msgs {
                if let Message::SiteInfo { pol_id, items, .. } = m {
                    let pol = pol_id.clone().unwrap_or_default();
                    for item in items {
                        st.info.insert((pol.clone(), item.code.clone()), item.value.clone());
                    }
                }
            }
            out.extend(msgs);
        }
        for (i, values, comm) in readings {
            let points = &self.electricity[*i];
            let interval_ms = u64::from(st.rtd_interval_s) * 1000;
            if points.is_empty() || st.last_electricity_ms[*i].is_some_and(|l| now_ms.saturating_sub(l) < interval_ms) {
                continue;
            }
            st.last_electricity_ms[*i] = Some(now_ms);
            out.push(electricity_record(now, points, values, *comm, maintenance));
        }
        notes.append(&mut out);
        notes
    }

    /// The system code of a record: 44 for the electricity-use records of [`electricity_record`],
    /// the site's otherwise.
    fn system_of(&self, m: &Message) -> &str {
        match m {
            Message::Data { cn, items, .. }
                if cn.value() == 2011
                    && !items.is_empty()
                    && items.iter().all(|it| self.electricity.iter().flatten().any(|(_, c)| *c == it.code)) =>
            {
                ELECTRICITY_ST
            }
            _ => &self.config.site.st,
        }
    }

    /// Encodes `messages` with the site's header and stores them; wakes the uplinks once they are
    /// durable. A message that cannot be stored is logged and counted, and not sent.
    pub async fn publish(self: &Arc<Self>, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        let mut records = Vec::with_capacity(messages.len());
        for m in &messages {
            match self.encode(m) {
                Ok(r) => records.push(r),
                Err(e) => {
                    Metrics::inc(&self.metrics.store_errors);
                    tracing::error!(cn = m.cn(), error = %e, "Message cannot be encoded; dropped.");
                }
            }
        }
        let store = self.store.clone();
        let total = records.len();
        let result = tokio::task::spawn_blocking(move || {
            let mut done = 0usize;
            for r in &records {
                match store.append(r) {
                    Ok(_) => done += 1,
                    Err(e) => tracing::error!(cn = r.cn, error = %e, "Store write failed; message lost."),
                }
            }
            done
        })
        .await;
        let done = result.unwrap_or_else(|error| {
            // The store panicked: what it wrote is unknown, so count every record as failed.
            tracing::error!(%error, records = total, "Store task failed; messages lost.");
            0
        });
        self.metrics.messages_stored.fetch_add(done as u64, std::sync::atomic::Ordering::Relaxed);
        self.metrics.store_errors.fetch_add((total - done) as u64, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(stored = done, "Messages stored.");
        if done > 0 {
            self.appended.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Encodes a message as a store record: header `QN;ST;CN;PW;MN;Flag` with the site's values.
    ///
    /// # Errors
    /// The message is too long for one frame (over 9999 bytes).
    pub fn encode(&self, m: &Message) -> Result<Record, hj212_codec::Error> {
        let now = self.clock.now();
        let qn = self.qns.next_string(now);
        let site = &self.config.site;
        let header = Header {
            qn: Some(&qn),
            st: self.system_of(m),
            pw: &site.pw,
            mn: &site.mn,
            flag: Some(Flag::new(Version::V2017, false, false)),
        };
        let frame = m.to_packet(&header).to_frame_unchecked(hj212_codec::CrcVariant::Hj212, false)?;
        let data_time_ms = match m {
            Message::Data { data_time, .. } | Message::SiteInfo { data_time, .. } => data_time.to_millis(),
            _ => 0,
        };
        Ok(Record { cn: m.cn(), data_time_ms, written_ms: self.clock.utc_ms(), frame })
    }

    /// The QN generator every QN of this gateway comes from.
    ///
    /// HJ 212-2017 Table 3 wants QNs unique per MN. A stored record keeps the QN it was given
    /// here, but goes out under the MN of each platform (an assigned one, for a platform that
    /// registers the DAU), next to the QNs that the uplink's session gives replies and
    /// sub-packets. So the gateway uses one generator for all of them, whatever the MN: two
    /// QNs made in the same millisecond by any two of these users never collide.
    #[must_use]
    pub const fn qns(&self) -> &SharedQnGenerator {
        &self.qns
    }

    /// A receiver that changes whenever records were appended.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// `RtdInterval` in force, seconds.
    #[must_use]
    pub fn rtd_interval(&self) -> u32 {
        lock(&self.state).rtd_interval_s
    }

    /// `MinInterval` in force, minutes.
    #[must_use]
    pub fn min_interval(&self) -> u8 {
        lock(&self.state).min_interval
    }

    /// Sets `RtdInterval` (CN 1062) and keeps it in the store.
    ///
    /// # Errors
    /// The store failed.
    pub fn set_rtd_interval(&self, seconds: u32) -> Result<(), crate::store::StoreError> {
        self.store.set_meta("rtd_interval_secs", &seconds.to_string())?;
        let mut st = lock(&self.state);
        st.rtd_interval_s = seconds;
        st.acquisition.set_rtd_interval(seconds);
        Ok(())
    }

    /// Sets `MinInterval` (CN 1064) and keeps it in the store. The statistics restart: the open
    /// minute, hour and day periods are abandoned (the firmware fixes the interval at creation).
    ///
    /// # Errors
    /// The store failed.
    pub fn set_min_interval(&self, minutes: u8) -> Result<(), crate::store::StoreError> {
        self.store.set_meta("min_interval_mins", &minutes.to_string())?;
        let profiles: Vec<_> = self.analyzers.iter().map(|a| a.profile.as_profile()).collect();
        let refs: Vec<_> = profiles.iter().collect();
        let mut st = lock(&self.state);
        st.min_interval = minutes;
        st.acquisition = Acquisition::new(acquire_config(&self.config, st.rtd_interval_s, minutes), &refs);
        seed_reported(&mut st.acquisition, self.store.as_ref());
        Ok(())
    }

    /// The latest value of the dynamic-control parameter `info_id` of the analyzer `pol_id`
    /// (any analyzer when `None`).
    pub fn info(&self, pol_id: Option<&str>, info_id: &str) -> InfoLookup {
        let st = lock(&self.state);
        let found = st
            .info
            .iter()
            .find(|((pol, code), _)| pol_id.is_none_or(|p| p == pol) && code == info_id)
            .map(|(_, v)| v.clone());
        match found {
            Some(v) => InfoLookup::Value(v),
            None if self.find_point(pol_id, info_id).is_some() => InfoLookup::NotYetRead,
            None => InfoLookup::Unknown,
        }
    }

    /// The analyzer and point a parameter code names.
    fn find_point(&self, pol_id: Option<&str>, info_id: &str) -> Option<(usize, usize)> {
        let code = Code::try_new(info_id)?;
        self.analyzers.iter().enumerate().filter(|(_, a)| pol_id.is_none_or(|p| p == a.pol_id.as_str())).find_map(
            |(ai, a)| {
                let kind = dynamic::AnalyzerKind::of(a.pol_id);
                let wanted = dynamic::resolve(code, kind);
                a.profile
                    .points
                    .iter()
                    .position(|p| match p.target {
                        Target::Info(c) => c == code || (wanted.is_some() && dynamic::resolve(c, kind) == wanted),
                        _ => false,
                    })
                    .map(|pi| (ai, pi))
            },
        )
    }

    /// The analyzer and the trigger of `action`: the analyzer whose `PolId` is `pol_id`, or with
    /// `None` (CN 3015, which names no analyzer) the first analyzer that has the action.
    ///
    /// # Errors
    /// [`ControlRefusal`]: no analyzer has the `PolId`, or its profile has no such control.
    pub fn find_control(
        &self,
        pol_id: Option<&str>,
        action: ControlAction,
    ) -> Result<(usize, ControlSpec), ControlRefusal> {
        let mut known = pol_id.is_none();
        for (i, a) in self.analyzers.iter().enumerate() {
            if pol_id.is_some_and(|p| p != a.pol_id.as_str()) {
                continue;
            }
            known = true;
            if let Some(c) = a.profile.as_profile().control(action) {
                return Ok((i, *c));
            }
        }
        Err(if known { ControlRefusal::NoControl } else { ControlRefusal::UnknownAnalyzer })
    }

    /// Carries out a control action (CN 3011–3015) through the analyzer's serial port: the port
    /// task that owns the line makes the write between two poll cycles.
    ///
    /// # Errors
    /// [`ControlError`] when the analyzer did not take it.
    pub async fn control(&self, analyzer: usize, control: ControlSpec) -> Result<(), ControlError> {
        let stopped = || ControlError::Unavailable("serial port task stopped".into());
        let port = self.ports.get(self.analyzers[analyzer].port).ok_or_else(stopped)?;
        let (tx, rx) = oneshot::channel();
        port.send(PortCommand::Control { analyzer, control, reply: tx }).await.map_err(|_| stopped())?;
        match tokio::time::timeout(std::time::Duration::from_secs(10), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(stopped()),
            // The port is being reopened, or the line is that slow: the analyzer was not reached.
            Err(_) => Err(ControlError::Timeout("the serial port did not get to it within 10 s".into())),
        }
    }

    /// The point that reports the analyzer's retention bottle number (`i43006`), if its profile
    /// has one.
    #[must_use]
    pub fn vase_point(&self, analyzer: usize) -> Option<usize> {
        self.analyzers[analyzer].profile.points.iter().position(|p| p.target == firmware::profile::VASE_NO)
    }

    /// Reads one point of an analyzer now, through its serial port.
    ///
    /// # Errors
    /// The port or the analyzer failed; the message says how.
    pub async fn read_point(&self, analyzer: usize, point: usize) -> Result<Value, String> {
        let port = self.ports.get(self.analyzers[analyzer].port).ok_or("no serial port")?;
        let (tx, rx) = oneshot::channel();
        port.send(PortCommand::ReadPoint { analyzer, point, reply: tx })
            .await
            .map_err(|_| "serial port task stopped".to_string())?;
        match tokio::time::timeout(std::time::Duration::from_secs(10), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("serial port task stopped".into()),
            Err(_) => Err("timed out".into()),
        }
    }

    /// Writes a parameter (CN 3021) through the analyzer's serial port.
    ///
    /// # Errors
    /// [`WriteError::NoPoint`] when no analyzer has the parameter or the value does not parse;
    /// [`WriteError::Failed`] when the port or the analyzer refused.
    pub async fn write_info(&self, pol_id: Option<&str>, info_id: &str, value: &str) -> Result<(), WriteError> {
        let (analyzer, point) = self.find_point(pol_id, info_id).ok_or(WriteError::NoPoint)?;
        let spec = self.analyzers[analyzer].profile.points[point];
        let value = if spec.value.is_time() {
            let t = hj212_codec::time::DateTime::parse(value).ok_or(WriteError::NoPoint)?;
            let t = firmware::profile::DateTime::new(t.year, t.month, t.day, t.hour, t.minute, t.second)
                .ok_or(WriteError::NoPoint)?;
            Value::Time(t)
        } else {
            Value::Number(value.trim().parse::<f64>().ok().filter(|v| v.is_finite()).ok_or(WriteError::NoPoint)?)
        };
        let port = self.ports.get(self.analyzers[analyzer].port).ok_or(WriteError::NoPoint)?;
        let (tx, rx) = oneshot::channel();
        port.send(PortCommand::WritePoint { analyzer, point, value, reply: tx })
            .await
            .map_err(|_| WriteError::Failed("serial port task stopped".into()))?;
        match tokio::time::timeout(std::time::Duration::from_secs(10), rx).await {
            Ok(Ok(r)) => r.map_err(WriteError::Failed),
            Ok(Err(_)) => Err(WriteError::Failed("serial port task stopped".into())),
            Err(_) => Err(WriteError::Failed("timed out".into())),
        }
    }
}

/// An HJ 212-2025 electricity-use record (CN 2011 under ST 44, provisional): `DataTime` = now
/// (whole seconds), `<code>-Rtd` and `<code>-Flag` per configured quantity; a value not read, or
/// read while the meter's link is down, goes as flag `B` without a number; `M` during maintenance.
fn electricity_record(
    now: hj212_codec::time::DateTime,
    points: &[(usize, String)],
    values: &[Option<Value>],
    comm: CommState,
    maintenance: bool,
) -> Message {
    let items = points
        .iter()
        .map(|(point, code)| {
            let value = values.get(*point).and_then(|v| v.as_ref()).and_then(Value::as_f64).filter(|v| v.is_finite());
            let mut fields = Vec::with_capacity(2);
            match value {
                Some(v) if comm.is_ok() => {
                    fields.push(("Rtd".to_string(), format_reading(v)));
                    fields.push(("Flag".to_string(), if maintenance { "M" } else { "N" }.to_string()));
                }
                _ => fields.push(("Flag".to_string(), "B".to_string())),
            }
            hj212_codec::message::DataItem { code: code.clone(), fields }
        })
        .collect();
    let data_time = hj212_codec::time::DateTime { millis: 0, ..now };
    Message::Data { cn: hj212_codec::codes::Command::RealTimeData, data_time, items }
}

/// A meter reading with at most three decimals, trailing zeros dropped.
fn format_reading(v: f64) -> String {
    let text = format!("{v:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".to_string() } else { text.to_string() }
}
