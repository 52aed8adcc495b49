//! Data you can trust: the platform's data-quality engine.
//!
//! The module is **sans-IO**: it never reads a clock, opens a socket or touches a file. The daemon
//! feeds it what happened — decoded messages ([`Engine::feed_message`]), link events
//! ([`Engine::feed_event`]) and the passage of time ([`Engine::tick`]) — always with the current
//! time passed in, and gets [`Action`]s back: [`Alert`]s, history requests to send to a DAU
//! (gap recovery), the outcome of those requests, and daily accounting records. Reports are pure
//! functions of the engine's state ([`Engine::daily_records`], [`Engine::network_status`],
//! [`Engine::compare_lab`]) rendered by [`report`] and [`comparison`].
//!
//! # Time
//! HJ 212 times are zone-less civil times. Every time given to the engine (`now` included) must be
//! on the **same civil scale as the DAUs' `DataTime`** (for a deployment in China: UTC+8 local
//! time). Days in the accounting are civil days of that scale.
//!
//! # Boundary
//! Imports are limited to `hj212_codec`, `serde`, `serde_json` and `std`, so the module compiles
//! on its own. Nothing here knows about tokio, MQTT or the store.
//!
//! Submodules:
//! * [`config`]: the site registry and every rule's thresholds (serde, documented defaults);
//! * [`expect`]: what should arrive per MN, CN and pollutant, and at which interval;
//! * [`accounting`]: transmission rate and effective rate per MN, stream and day;
//! * [`recovery`]: the gap-recovery planner (history requests, rate limits, outcomes);
//! * [`rules`]: the alert rules fed by data and site-information messages;
//! * [`link`]: connection state, silent DAUs, CRC/auth failure bursts, networking status;
//! * [`comparison`]: comparison monitoring against laboratory results;
//! * [`report`]: text tables and the SVG completeness calendar;
//! * [`engine`]: [`Engine`], which ties them together;
//! * [`persist`]: [`EngineState`], what survives a restart and what deliberately does not.

pub mod accounting;
pub mod comparison;
pub mod config;
pub mod engine;
pub mod expect;
pub mod link;
pub mod persist;
pub mod recovery;
pub mod report;
pub mod rules;

use hj212_codec::message::Message;
use hj212_codec::time::DateTime;
use serde::{Deserialize, Serialize};

pub use accounting::{DailyRecord, PollutantDay};
pub use comparison::{ComparisonReport, LabSample, OnlineValue};
pub use config::{PollutantSpec, QualityConfig, SiteEntry, StreamSpec};
pub use engine::Engine;
pub use expect::{Expectation, IntervalSource};
pub use link::{LinkState, LinkStatus};
pub use persist::EngineState;
pub use recovery::{RecoveryOutcome, RecoveryRecord};

/// Milliseconds on the engine's civil time scale (see the module docs).
/// A map key kept for lookups, so that a map keyed by owned strings is searched for every
/// value without allocating: the caller refills it ([`refill`]) and looks up with it. Not
/// state: every `LookupKey` equals every other, and none is saved.
#[derive(Debug, Clone, Default)]
pub(crate) struct LookupKey<K>(pub(crate) K);

impl<K> PartialEq for LookupKey<K> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Replaces the text of `s` with `with`, keeping its allocation.
pub(crate) fn refill(s: &mut String, with: &str) {
    s.clear();
    s.push_str(with);
}

pub(crate) type Ms = i64;
/// One minute in milliseconds.
pub(crate) const MINUTE: Ms = 60_000;
/// One hour in milliseconds.
pub(crate) const HOUR: Ms = 3_600_000;
/// One day in milliseconds.
pub(crate) const DAY: Ms = 86_400_000;

/// The time of a millisecond count; 1970-01-01 when out of range.
pub(crate) fn dt(ms: Ms) -> DateTime {
    DateTime::from_millis_or_epoch(ms)
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01).
pub(crate) fn date_string(day: i64) -> String {
    let t = dt(day * DAY);
    format!("{:04}-{:02}-{:02}", t.year, t.month, t.day)
}

/// Minutes (as configured) to milliseconds.
pub(crate) fn minutes(m: f64) -> Ms {
    (m * MINUTE as f64) as Ms
}

/// Serde for [`DateTime`] as `YYYYMMDDhhmmss` text (the HJ 212 N14 form).
pub mod stamp {
    use hj212_codec::time::DateTime;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `YYYYMMDDhhmmss`.
    ///
    /// # Errors
    /// Those of the serializer.
    pub fn serialize<S: Serializer>(t: &DateTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(t)
    }

    /// Reads `YYYYMMDDhhmmss` (or 17 digits with milliseconds).
    ///
    /// # Errors
    /// When the text is not a valid N14/N17 time.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not a YYYYMMDDhhmmss time: {s}")))
    }

    /// The same for `Option<DateTime>` (`null` for `None`).
    pub mod option {
        use hj212_codec::time::DateTime;
        use serde::{Deserialize, Deserializer, Serializer};

        /// Writes `YYYYMMDDhhmmss` or `null`.
        ///
        /// # Errors
        /// Those of the serializer.
        pub fn serialize<S: Serializer>(t: &Option<DateTime>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.collect_str(t),
                None => s.serialize_none(),
            }
        }

        /// Reads `YYYYMMDDhhmmss` or `null`.
        ///
        /// # Errors
        /// When the text is not a valid N14/N17 time.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| {
                    DateTime::parse(&s)
                        .ok_or_else(|| serde::de::Error::custom(format!("not a YYYYMMDDhhmmss time: {s}")))
                })
                .transpose()
        }
    }
}

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look; no action required.
    Info,
    /// Probably a data-quality problem or a suspicious pattern.
    Warning,
    /// A rule that indicates invalid data or possible tampering.
    Critical,
}

/// The rule that raised an alert. Each is described, with its source and thresholds, in
/// `docs/data-quality.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// A value unchanged (or within a tiny band) for longer than plausible.
    FlatLine,
    /// A high share of values just under the emission limit.
    NearLimit,
    /// Slope (`i13008`) or intercept (`i13007`) changed with no calibration around that time.
    UncalibratedParameterChange,
    /// A standard check whose deviation exceeds the allowed error, or that reports a failure.
    StandardCheckFailed,
    /// Data flagged `N` while the analyzer reported maintenance, fault or calibration.
    NormalFlagDuringBadStatus,
    /// Ammonia nitrogen (`w21003`) above total nitrogen (`w21001`).
    AmmoniaAboveTotalNitrogen,
    /// Oxygen (`a19001`) outside 0–21 %.
    OxygenOutOfRange,
    /// Flow zero while pollutant loads (`-Cou`) are positive.
    LoadWithoutFlow,
    /// A treatment facility without power while discharge is reported as normal.
    FacilityUnpowered,
    /// A connected DAU that sent nothing for longer than its intervals allow.
    SilentDau,
    /// A registered MN that stopped transmitting (not connected, nothing received).
    StoppedTransmitting,
    /// Repeated CRC failures.
    RepeatedCrcFailures,
    /// Repeated authentication failures.
    RepeatedAuthFailures,
    /// An analyzer whose data has been flagged `B` (no communication with the DAU: an unplugged
    /// cable, a dead analyzer) for longer than allowed while the DAU itself keeps sending.
    AnalyzerCommFailure,
}

impl Rule {
    /// The snake-case name used in JSON and reports.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::FlatLine => "flat_line",
            Self::AnalyzerCommFailure => "analyzer_comm_failure",
            Self::NearLimit => "near_limit",
            Self::UncalibratedParameterChange => "uncalibrated_parameter_change",
            Self::StandardCheckFailed => "standard_check_failed",
            Self::NormalFlagDuringBadStatus => "normal_flag_during_bad_status",
            Self::AmmoniaAboveTotalNitrogen => "ammonia_above_total_nitrogen",
            Self::OxygenOutOfRange => "oxygen_out_of_range",
            Self::LoadWithoutFlow => "load_without_flow",
            Self::FacilityUnpowered => "facility_unpowered",
            Self::SilentDau => "silent_dau",
            Self::StoppedTransmitting => "stopped_transmitting",
            Self::RepeatedCrcFailures => "repeated_crc_failures",
            Self::RepeatedAuthFailures => "repeated_auth_failures",
        }
    }
}

/// One piece of evidence behind an alert: a labelled value and/or time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// What this is (`"w01018-Avg"`, `"run start"`, `"i13008 before"` …).
    pub label: String,
    /// The time it refers to, if any.
    #[serde(with = "stamp::option", default)]
    pub time: Option<DateTime>,
    /// The numeric value, if any.
    #[serde(default)]
    pub value: Option<f64>,
}

impl Evidence {
    /// A labelled value at a time.
    #[must_use]
    pub fn at(label: impl Into<String>, time: DateTime, value: f64) -> Self {
        Self { label: label.into(), time: Some(time), value: Some(value) }
    }
    /// A labelled value.
    #[must_use]
    pub fn value(label: impl Into<String>, value: f64) -> Self {
        Self { label: label.into(), time: None, value: Some(value) }
    }
    /// A labelled time.
    #[must_use]
    pub fn time(label: impl Into<String>, time: DateTime) -> Self {
        Self { label: label.into(), time: Some(time), value: None }
    }
}

/// An alert raised by a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The DAU (for CRC/auth failures: whatever key the daemon reported, MN or peer).
    pub mn: String,
    /// The rule.
    pub rule: Rule,
    /// How urgent.
    pub severity: Severity,
    /// When the condition was detected (a `DataTime` for data rules, `now` for link rules).
    #[serde(with = "stamp")]
    pub at: DateTime,
    /// The pollutant or facility concerned, when there is one.
    #[serde(default)]
    pub subject: Option<String>,
    /// The values and times behind the alert.
    pub evidence: Vec<Evidence>,
    /// A one-line human-readable explanation.
    pub message: String,
}

/// What the engine asks the daemon to do, or tells it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// Publish or log an alert.
    Alert(Alert),
    /// Send this request (a [`Message::HistoryRequest`] for CN 2061 or 2051) to the DAU `mn`,
    /// through the platform-role exchange machine. The engine already counts it as outstanding.
    Request {
        /// The DAU.
        mn: String,
        /// The request.
        message: Message,
    },
    /// A gap-recovery request finished (answered, refused or timed out).
    Recovery(RecoveryRecord),
    /// A day is settled for one MN and stream; store or publish its record.
    Daily(DailyRecord),
}

/// Link and protocol events the daemon reports (see [`Engine::feed_event`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A connection now carries frames of this MN.
    Connected {
        /// The DAU.
        mn: String,
    },
    /// The last connection that carried this MN closed.
    Disconnected {
        /// The DAU.
        mn: String,
    },
    /// A frame failed its CRC. `key` is the MN when the header could be read, else the peer.
    CrcFailure {
        /// MN or peer address.
        key: String,
    },
    /// A frame failed authentication (unknown MN, wrong PW). `key` as for `CrcFailure`.
    AuthFailure {
        /// MN or peer address.
        key: String,
    },
    /// The platform sent a command to a DAU. 3011 (calibration) counts as calibration
    /// evidence; 1062/1064 (set `RtdInterval`/`MinInterval`) wait for their result: the next
    /// [`Event::CommandFinished`] for that command, or else the MN's next 9012 while no history
    /// request is outstanding. Other commands are ignored.
    CommandSent {
        /// The DAU.
        mn: String,
        /// The command.
        message: Message,
    },
    /// The exchange machine matched the end of a command the platform sent (other than the
    /// engine's own history requests): its 9012, a refusing 9011 or its timeout. `ok` is true
    /// only for `ExeRtn=1`. A successful 1062/1064 sets the interval the engine expects.
    CommandFinished {
        /// The DAU.
        mn: String,
        /// The command, as sent.
        message: Message,
        /// True when the DAU executed it.
        ok: bool,
    },
    /// The exchange machine matched the end of a history request the engine asked for
    /// (its 9012, or its timeout). Optional: without it the engine takes the next 9011/9012
    /// from that MN as the answer.
    HistoryFinished {
        /// The DAU.
        mn: String,
        /// False when refused or timed out.
        ok: bool,
    },
}
