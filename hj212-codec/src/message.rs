//! Typed messages for every command of HJ 212-2017 Table 9, the answers 9011–9014, and the
//! HJ 212-2025 additions that public material establishes (marked provisional in
//! `docs/protocol.md`).
//!
//! [`Message::from_packet`] reads a parsed [`Packet`]; [`Message::to_cp`] writes the `CP` groups in
//! the layout of the standard's Appendix C examples, and [`Message::to_packet`] wraps them in a
//! header. Whether a packet is a request or an upload is read from its content (a request to
//! "get" carries no data; a history request carries `BeginTime`; an upload carries `DataTime`),
//! which is what the Appendix C flows show for both directions.
//!
//! Values stay text: HJ 212 numbers are decimals of varying precision (Table 4 `Nx.y`) and
//! must reach the platform exactly as the analyzer wrote them. [`DataItem::number`] parses on demand.
//!
//! The HJ 212-2025 uploads 2013, 2052, 2062 and 2111 decode into [`Message::Data`] like every other
//! upload, so storing and forwarding them needs nothing new and their re-encoding stays
//! byte-identical; typed views on top read their own fields ([`Message::raw_data`],
//! [`Message::standard_check`], [`Message::furnace_temperature`], [`Message::noise_measurement`];
//! all provisional, see [`RawData`]).

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::codes::{CalibrationType, Command, DataFlag, ExeRtn, QnRtn};
use crate::encode::{OwnedPacket, OwnedPair};
use crate::error::{Error, ErrorKind};
use crate::packet::{Flag, Packet};
use crate::time::DateTime;

mod v2025;

pub use v2025::{
    FurnaceReading, FurnaceTemperature, NoiseLevel, NoiseMeasurement, RawData, RawSample, StandardCheck,
    StandardCheckItem,
};

/// All the values of one code in a data message, in the order received.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DataItem {
    /// The pollutant, noise, facility (`SB1`) or process code.
    pub code: String,
    /// `(suffix, value)` pairs such as `("Rtd", "2.2")`, `("Flag", "N")`.
    pub fields: Vec<(String, String)>,
}

impl DataItem {
    /// The value for `suffix` (`"Rtd"`, `"Avg"`, …).
    #[must_use]
    pub fn get(&self, suffix: &str) -> Option<&str> {
        self.fields.iter().find(|(s, _)| s == suffix).map(|(_, v)| v.as_str())
    }

    /// The value for `suffix` as a number, when it is one.
    #[must_use]
    pub fn number(&self, suffix: &str) -> Option<f64> {
        self.get(suffix).and_then(finite_number)
    }

    /// The data flag, when the item has one.
    #[must_use]
    pub fn flag(&self) -> Option<DataFlag<'_>> {
        self.get("Flag").map(DataFlag::parse)
    }
}

/// One `<i-code>-Info` value of a site-information message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InfoItem {
    /// The information code (`i12001`).
    pub code: String,
    /// The value as written; logs keep their `//…//`.
    pub value: String,
}

/// A typed HJ 212 message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Message {
    /// 1000: set timeout (`OverTime`, seconds) and retry count (`ReCount`).
    SetTimeoutRetry {
        /// Seconds to wait for an answer.
        over_time: u16,
        /// Retries before the link is considered down.
        re_count: u16,
    },
    /// 1011 request: get the DAU's clock, or an analyzer's when `pol_id` is given.
    GetTime {
        /// The analyzer, by pollutant code.
        pol_id: Option<String>,
    },
    /// 1011 reply: the clock.
    TimeReply {
        /// The analyzer, by pollutant code.
        pol_id: Option<String>,
        /// The site's time.
        system_time: DateTime,
    },
    /// 1012: set the clock.
    SetTime {
        /// The analyzer, by pollutant code.
        pol_id: Option<String>,
        /// The time to set.
        system_time: DateTime,
    },
    /// 1013: the site asks for a time calibration.
    TimeCalibrationRequest {
        /// The analyzer, by pollutant code.
        pol_id: Option<String>,
    },
    /// 1061 request.
    GetRtdInterval,
    /// 1061 reply: `RtdInterval` in seconds.
    RtdIntervalReply {
        /// Seconds (30–3600 in 2017).
        seconds: u16,
    },
    /// 1062: set `RtdInterval`.
    SetRtdInterval {
        /// Seconds (30–3600 in 2017).
        seconds: u16,
    },
    /// 1063 request.
    GetMinInterval,
    /// 1063 reply: `MinInterval` in minutes.
    MinIntervalReply {
        /// Minutes (1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30).
        minutes: u16,
    },
    /// 1064: set `MinInterval`.
    SetMinInterval {
        /// Minutes.
        minutes: u16,
    },
    /// 1072: set the access password.
    SetPassword {
        /// The new password.
        new_pw: String,
    },
    /// 2011 or 2021 request with an empty `CP`: start uploading.
    StartUpload(Command),
    /// 2012 or 2022: stop uploading.
    StopUpload(Command),
    /// 2031, 2041, 2051, 2061 request: history between two times; also HJ 212-2025's 2013 and 2062,
    /// and 2011 for electricity-use history under ST 44 (provisional).
    HistoryRequest {
        /// Which history.
        cn: Command,
        /// `BeginTime`.
        begin: DateTime,
        /// `EndTime`.
        end: DateTime,
    },
    /// Data uploads: 2011, 2021, 2031, 2041, 2051, 2061, and HJ 212-2025's 2013, 2052, 2062 and 2111
    /// (provisional), whose fields the typed views [`Message::raw_data`],
    /// [`Message::noise_measurement`], [`Message::standard_check`] and
    /// [`Message::furnace_temperature`] read.
    Data {
        /// Which data.
        cn: Command,
        /// `DataTime`: the sampling instant (2011/2021) or the period start (2031–2061).
        data_time: DateTime,
        /// The items in order (see [`data_items`]).
        items: Vec<DataItem>,
    },
    /// 2081: the DAU's restart time.
    RestartTime {
        /// `DataTime`.
        data_time: DateTime,
        /// `RestartTime`.
        restart_time: DateTime,
    },
    /// 3011–3014: act on an analyzer; also HJ 212-2025's 3022 (sample retention) and 3024 (start a
    /// standard-sample check), provisional.
    AnalyzerControl {
        /// Which action.
        cn: Command,
        /// The analyzer, by pollutant code.
        pol_id: String,
        /// HJ 212-2025 3011 `CalibrationType` (provisional; see [`CalibrationType`]).
        calibration_type: Option<CalibrationType>,
    },
    /// 3015 request: over-limit sample retention.
    OverLimitSampling,
    /// 3015 reply: the bottle used.
    OverLimitSampleReply {
        /// `DataTime`.
        data_time: DateTime,
        /// `VaseNo`.
        vase_no: u16,
    },
    /// 3016: set the sampling period.
    SetSamplingPeriod {
        /// The analyzer.
        pol_id: String,
        /// `CstartTime`, `hhmmss`.
        cstart_time: String,
        /// `CTime`, hours.
        ctime: u16,
    },
    /// 3017 request.
    GetSamplingPeriod {
        /// The analyzer.
        pol_id: String,
    },
    /// 3017 reply.
    SamplingPeriodReply {
        /// The analyzer.
        pol_id: String,
        /// `CstartTime`, `hhmmss`.
        cstart_time: String,
        /// `CTime`, hours.
        ctime: u16,
    },
    /// 3018 request.
    GetSampleOutputTime {
        /// The analyzer.
        pol_id: String,
    },
    /// 3018 reply: `Stime` in minutes.
    SampleOutputTimeReply {
        /// The analyzer.
        pol_id: String,
        /// Minutes.
        stime: u16,
    },
    /// 3019 request.
    GetInstrumentId {
        /// The analyzer.
        pol_id: String,
    },
    /// 3019 reply or upload (with `DataTime` when uploaded after a replacement).
    InstrumentId {
        /// `DataTime`, present on uploads.
        data_time: Option<DateTime>,
        /// The analyzer.
        pol_id: String,
        /// `<code>-SN`.
        sn: String,
    },
    /// 3020 request.
    GetSiteInfo {
        /// The analyzer, if any.
        pol_id: Option<String>,
        /// `InfoId`.
        info_id: String,
        /// `BeginTime`/`EndTime` for logs.
        range: Option<(DateTime, DateTime)>,
    },
    /// 3020 reply or upload: logs, states, parameters.
    SiteInfo {
        /// `DataTime`.
        data_time: DateTime,
        /// The analyzer, if any.
        pol_id: Option<String>,
        /// The `-Info` items in order.
        items: Vec<InfoItem>,
    },
    /// 3021: set a site parameter.
    SetSiteInfo {
        /// The analyzer, if any.
        pol_id: Option<String>,
        /// `InfoId`.
        info_id: String,
        /// The value.
        value: String,
    },
    /// 9011.
    RequestAnswer {
        /// `QnRtn`.
        qn_rtn: QnRtn,
    },
    /// 9012.
    ExecutionResult {
        /// `ExeRtn`.
        exe_rtn: ExeRtn,
    },
    /// 9013.
    NotificationAnswer,
    /// 9014.
    DataAnswer,
    /// 9015 (2025, provisional): heartbeat.
    Heartbeat,
    /// 1001 (2025, provisional): the DAU's hardware identifiers, `i23005`–`i23008`.
    HardwareIds {
        /// The `-Info` items.
        items: Vec<InfoItem>,
    },
    /// 1002 (2025, provisional): the platform assigns the MN in the header to the DAU named here.
    AssignMn {
        /// `i23005-Info`: the DAU identifier the new MN is for.
        dau_id: String,
    },
    /// 1014 (2025, provisional): key request (site) or new key (platform).
    Key {
        /// `SKCreateTime`.
        created: String,
        /// `NewSK`, present when the platform sends a key.
        new_key: Option<String>,
    },
    /// A command this crate does not model; the `CP` groups are kept.
    Other {
        /// The command code.
        cn: u16,
        /// The `CP` groups.
        cp: Vec<Vec<OwnedPair>>,
    },
}

fn err(field: &'static str, at: usize) -> Error {
    Error::new(ErrorKind::InvalidField(field), at)
}

/// Looks fields up in a packet's `CP`, reporting the offset of bad values.
struct Fields<'p, 'a> {
    packet: &'p Packet<'a>,
}

impl<'a> Fields<'_, 'a> {
    fn pair(&self, key: &str) -> Option<crate::cp::Pair<'a>> {
        self.packet.cp().pairs().find(|p| p.key() == key)
    }
    fn text(&self, key: &str) -> Option<&'a str> {
        self.pair(key).and_then(|p| p.value())
    }
    fn required(&self, key: &'static str) -> Result<&'a str, Error> {
        self.text(key).ok_or_else(|| Error::new(ErrorKind::MissingField(key), 6 + self.packet.cp().offset()))
    }
    fn number(&self, key: &'static str) -> Result<u16, Error> {
        let p =
            self.pair(key).ok_or_else(|| Error::new(ErrorKind::MissingField(key), 6 + self.packet.cp().offset()))?;
        p.value().and_then(|v| v.parse().ok()).ok_or_else(|| err(key, 6 + p.value_offset()))
    }
    fn time(&self, key: &'static str) -> Result<DateTime, Error> {
        let p =
            self.pair(key).ok_or_else(|| Error::new(ErrorKind::MissingField(key), 6 + self.packet.cp().offset()))?;
        p.value().and_then(DateTime::parse).ok_or_else(|| err(key, 6 + p.value_offset()))
    }
    fn has(&self, key: &str) -> bool {
        self.pair(key).is_some()
    }
    fn pol_id(&self) -> Option<String> {
        self.text("PolId").map(ToString::to_string)
    }
}

impl Message {
    /// Reads the message a packet carries.
    ///
    /// # Errors
    /// A missing or malformed field the command requires, with its offset from the frame start
    /// (the data segment is assumed to start at byte 6).
    pub fn from_packet(packet: &Packet<'_>) -> Result<Self, Error> {
        let f = Fields { packet };
        let cn = Command::from_value(packet.cn());
        let empty = packet.cp().pairs().all(|p| p.key().is_empty());
        Ok(match cn {
            Command::SetTimeoutRetry => {
                Self::SetTimeoutRetry { over_time: f.number("OverTime")?, re_count: f.number("ReCount")? }
            }
            Command::GetTime if f.has("SystemTime") => {
                Self::TimeReply { pol_id: f.pol_id(), system_time: f.time("SystemTime")? }
            }
            Command::GetTime => Self::GetTime { pol_id: f.pol_id() },
            Command::SetTime => Self::SetTime { pol_id: f.pol_id(), system_time: f.time("SystemTime")? },
            Command::TimeCalibrationRequest => Self::TimeCalibrationRequest { pol_id: f.pol_id() },
            Command::GetRtdInterval if f.has("RtdInterval") => {
                Self::RtdIntervalReply { seconds: f.number("RtdInterval")? }
            }
            Command::GetRtdInterval => Self::GetRtdInterval,
            Command::SetRtdInterval => Self::SetRtdInterval { seconds: f.number("RtdInterval")? },
            Command::GetMinInterval if f.has("MinInterval") => {
                Self::MinIntervalReply { minutes: f.number("MinInterval")? }
            }
            Command::GetMinInterval => Self::GetMinInterval,
            Command::SetMinInterval => Self::SetMinInterval { minutes: f.number("MinInterval")? },
            // 2005 carried the new password as `PW` inside CP (spec digest §11.6).
            Command::SetPassword => Self::SetPassword {
                new_pw: f
                    .text("NewPW")
                    .or_else(|| f.text("PW"))
                    .ok_or_else(|| Error::new(ErrorKind::MissingField("NewPW"), 6 + packet.cp().offset()))?
                    .to_string(),
            },
            Command::StopRealTimeData | Command::StopFacilityState => Self::StopUpload(cn),
            Command::RealTimeData | Command::FacilityState if empty => Self::StartUpload(cn),
            // HJ 212-2025 also fetches real-time (electricity, ST 44) history with 2011.
            Command::RealTimeData
            | Command::DailyData
            | Command::DailyRunTime
            | Command::MinuteData
            | Command::HourlyData
            | Command::RawData
            | Command::StandardCheckData
                if f.has("BeginTime") =>
            {
                Self::HistoryRequest { cn, begin: f.time("BeginTime")?, end: f.time("EndTime")? }
            }
            Command::RealTimeData
            | Command::FacilityState
            | Command::DailyData
            | Command::DailyRunTime
            | Command::MinuteData
            | Command::HourlyData
            | Command::RawData
            | Command::StandardCheckData
            | Command::FurnaceTemperature
            | Command::NoiseMeasurement => {
                let data_time = f.time("DataTime")?;
                v2025::check_typed_fields(packet, cn)?;
                Self::Data { cn, data_time, items: data_items(packet) }
            }
            Command::RestartTime => {
                Self::RestartTime { data_time: f.time("DataTime")?, restart_time: f.time("RestartTime")? }
            }
            Command::Calibrate
            | Command::SampleNow
            | Command::Clean
            | Command::ComparisonSampling
            | Command::SampleRetention
            | Command::StartStandardCheck => {
                let calibration_type = match f.pair("CalibrationType") {
                    Some(p) => Some(
                        p.value()
                            .and_then(|v| v.parse().ok())
                            .map(CalibrationType::from_value)
                            .ok_or_else(|| err("CalibrationType", 6 + p.value_offset()))?,
                    ),
                    None => None,
                };
                Self::AnalyzerControl { cn, pol_id: f.required("PolId")?.to_string(), calibration_type }
            }
            Command::OverLimitSampling if f.has("VaseNo") => {
                Self::OverLimitSampleReply { data_time: f.time("DataTime")?, vase_no: f.number("VaseNo")? }
            }
            Command::OverLimitSampling => Self::OverLimitSampling,
            Command::SetSamplingPeriod => Self::SetSamplingPeriod {
                pol_id: f.required("PolId")?.to_string(),
                cstart_time: f.required("CstartTime")?.to_string(),
                ctime: ctime(&f)?,
            },
            Command::GetSamplingPeriod if f.has("CstartTime") => Self::SamplingPeriodReply {
                pol_id: f.required("PolId")?.to_string(),
                cstart_time: f.required("CstartTime")?.to_string(),
                ctime: ctime(&f)?,
            },
            Command::GetSamplingPeriod => Self::GetSamplingPeriod { pol_id: f.required("PolId")?.to_string() },
            Command::GetSampleOutputTime if f.has("Stime") => {
                Self::SampleOutputTimeReply { pol_id: f.required("PolId")?.to_string(), stime: f.number("Stime")? }
            }
            Command::GetSampleOutputTime => Self::GetSampleOutputTime { pol_id: f.required("PolId")?.to_string() },
            Command::InstrumentId => {
                let pol_id = f.required("PolId")?.to_string();
                match packet.cp().pairs().find(|p| p.code_and_suffix().is_some_and(|(_, s)| s == "SN")) {
                    Some(sn) => Self::InstrumentId {
                        data_time: if f.has("DataTime") { Some(f.time("DataTime")?) } else { None },
                        pol_id,
                        sn: sn.value().unwrap_or("").to_string(),
                    },
                    None => Self::GetInstrumentId { pol_id },
                }
            }
            Command::SiteInfo if f.has("InfoId") => Self::GetSiteInfo {
                pol_id: f.pol_id(),
                info_id: f.required("InfoId")?.to_string(),
                range: if f.has("BeginTime") { Some((f.time("BeginTime")?, f.time("EndTime")?)) } else { None },
            },
            Command::SiteInfo => {
                Self::SiteInfo { data_time: f.time("DataTime")?, pol_id: f.pol_id(), items: info_items(packet) }
            }
            Command::SetSiteInfo => {
                let info_id = f.required("InfoId")?.to_string();
                let key = alloc::format!("{info_id}-Info");
                let value = f
                    .text(&key)
                    .ok_or_else(|| Error::new(ErrorKind::MissingField("<InfoId>-Info"), 6 + packet.cp().offset()))?;
                Self::SetSiteInfo { pol_id: f.pol_id(), info_id, value: value.to_string() }
            }
            Command::RequestAnswer => Self::RequestAnswer { qn_rtn: QnRtn::from_value(f.number("QnRtn")?) },
            Command::ExecutionResult => Self::ExecutionResult { exe_rtn: ExeRtn::from_value(f.number("ExeRtn")?) },
            Command::NotificationAnswer => Self::NotificationAnswer,
            Command::DataAnswer => Self::DataAnswer,
            Command::Heartbeat => Self::Heartbeat,
            Command::UploadHardwareIds if packet.version() >= crate::packet::Version::V2025 || f.has("i23005-Info") => {
                Self::HardwareIds { items: info_items(packet) }
            }
            Command::SetMn => Self::AssignMn { dau_id: f.required("i23005-Info")?.to_string() },
            Command::KeyExchange => Self::Key {
                created: f.required("SKCreateTime")?.to_string(),
                new_key: f.text("NewSK").map(ToString::to_string),
            },
            _ => Self::Other { cn: packet.cn(), cp: OwnedPacket::from_packet(packet).cp },
        })
    }

    /// The command code.
    #[must_use]
    pub fn cn(&self) -> u16 {
        let c = match self {
            Self::SetTimeoutRetry { .. } => Command::SetTimeoutRetry,
            Self::GetTime { .. } | Self::TimeReply { .. } => Command::GetTime,
            Self::SetTime { .. } => Command::SetTime,
            Self::TimeCalibrationRequest { .. } => Command::TimeCalibrationRequest,
            Self::GetRtdInterval | Self::RtdIntervalReply { .. } => Command::GetRtdInterval,
            Self::SetRtdInterval { .. } => Command::SetRtdInterval,
            Self::GetMinInterval | Self::MinIntervalReply { .. } => Command::GetMinInterval,
            Self::SetMinInterval { .. } => Command::SetMinInterval,
            Self::SetPassword { .. } => Command::SetPassword,
            Self::StartUpload(cn) | Self::StopUpload(cn) => *cn,
            Self::HistoryRequest { cn, .. } | Self::Data { cn, .. } | Self::AnalyzerControl { cn, .. } => *cn,
            Self::RestartTime { .. } => Command::RestartTime,
            Self::OverLimitSampling | Self::OverLimitSampleReply { .. } => Command::OverLimitSampling,
            Self::SetSamplingPeriod { .. } => Command::SetSamplingPeriod,
            Self::GetSamplingPeriod { .. } | Self::SamplingPeriodReply { .. } => Command::GetSamplingPeriod,
            Self::GetSampleOutputTime { .. } | Self::SampleOutputTimeReply { .. } => Command::GetSampleOutputTime,
            Self::GetInstrumentId { .. } | Self::InstrumentId { .. } => Command::InstrumentId,
            Self::GetSiteInfo { .. } | Self::SiteInfo { .. } => Command::SiteInfo,
            Self::SetSiteInfo { .. } => Command::SetSiteInfo,
            Self::RequestAnswer { .. } => Command::RequestAnswer,
            Self::ExecutionResult { .. } => Command::ExecutionResult,
            Self::NotificationAnswer => Command::NotificationAnswer,
            Self::DataAnswer => Command::DataAnswer,
            Self::Heartbeat => Command::Heartbeat,
            Self::HardwareIds { .. } => Command::UploadHardwareIds,
            Self::AssignMn { .. } => Command::SetMn,
            Self::Key { .. } => Command::KeyExchange,
            Self::Other { cn, .. } => return *cn,
        };
        c.value()
    }

    /// The `CP` groups in the layout of the standard's Appendix C examples.
    #[must_use]
    pub fn to_cp(&self) -> Vec<Vec<OwnedPair>> {
        let mut g = Groups::default();
        match self {
            Self::SetTimeoutRetry { over_time, re_count } => {
                g.one("OverTime", over_time.to_string());
                g.one("ReCount", re_count.to_string());
            }
            Self::GetTime { pol_id } | Self::TimeCalibrationRequest { pol_id } => g.opt("PolId", pol_id.as_deref()),
            Self::TimeReply { pol_id, system_time } | Self::SetTime { pol_id, system_time } => {
                g.opt("PolId", pol_id.as_deref());
                g.one("SystemTime", system_time.to_string());
            }
            Self::RtdIntervalReply { seconds } | Self::SetRtdInterval { seconds } => {
                g.one("RtdInterval", seconds.to_string())
            }
            Self::MinIntervalReply { minutes } | Self::SetMinInterval { minutes } => {
                g.one("MinInterval", minutes.to_string())
            }
            Self::SetPassword { new_pw } => g.one("NewPW", new_pw.clone()),
            Self::HistoryRequest { begin, end, .. } => {
                g.one("BeginTime", begin.to_string());
                g.one("EndTime", end.to_string());
            }
            Self::Data { data_time, items, .. } => {
                g.one("DataTime", data_time.to_string());
                for item in items {
                    g.0.push(
                        item.fields
                            .iter()
                            .map(|(s, v)| OwnedPair::new(alloc::format!("{}-{s}", item.code), v.clone()))
                            .collect(),
                    );
                }
            }
            Self::RestartTime { data_time, restart_time } => {
                g.one("DataTime", data_time.to_string());
                g.one("RestartTime", restart_time.to_string());
            }
            Self::AnalyzerControl { pol_id, calibration_type, .. } => {
                let mut group = alloc::vec![OwnedPair::new("PolId", pol_id.clone())];
                if let Some(t) = calibration_type {
                    group.push(OwnedPair::new("CalibrationType", t.value().to_string()));
                }
                g.0.push(group);
            }
            Self::OverLimitSampleReply { data_time, vase_no } => {
                g.one("DataTime", data_time.to_string());
                g.one("VaseNo", vase_no.to_string());
            }
            Self::SetSamplingPeriod { pol_id, cstart_time, ctime }
            | Self::SamplingPeriodReply { pol_id, cstart_time, ctime } => {
                g.one("PolId", pol_id.clone());
                g.one("CstartTime", cstart_time.clone());
                g.one("CTime", ctime.to_string());
            }
            Self::GetSamplingPeriod { pol_id }
            | Self::GetSampleOutputTime { pol_id }
            | Self::GetInstrumentId { pol_id } => g.one("PolId", pol_id.clone()),
            Self::SampleOutputTimeReply { pol_id, stime } => {
                g.one("PolId", pol_id.clone());
                g.one("Stime", stime.to_string());
            }
            Self::InstrumentId { data_time, pol_id, sn } => {
                if let Some(t) = data_time {
                    g.one("DataTime", t.to_string());
                }
                g.one("PolId", pol_id.clone());
                g.one(&alloc::format!("{pol_id}-SN"), sn.clone());
            }
            Self::GetSiteInfo { pol_id, info_id, range } => {
                g.opt("PolId", pol_id.as_deref());
                g.one("InfoId", info_id.clone());
                if let Some((b, e)) = range {
                    g.0.push(alloc::vec![
                        OwnedPair::new("BeginTime", b.to_string()),
                        OwnedPair::new("EndTime", e.to_string())
                    ]);
                }
            }
            Self::SiteInfo { data_time, pol_id, items } => {
                g.one("DataTime", data_time.to_string());
                g.opt("PolId", pol_id.as_deref());
                for i in items {
                    g.one(&alloc::format!("{}-Info", i.code), i.value.clone());
                }
            }
            Self::SetSiteInfo { pol_id, info_id, value } => {
                g.opt("PolId", pol_id.as_deref());
                g.one("InfoId", info_id.clone());
                g.one(&alloc::format!("{info_id}-Info"), value.clone());
            }
            Self::RequestAnswer { qn_rtn } => g.one("QnRtn", qn_rtn.value().to_string()),
            Self::ExecutionResult { exe_rtn } => g.one("ExeRtn", exe_rtn.value().to_string()),
            Self::HardwareIds { items } => {
                for i in items {
                    g.one(&alloc::format!("{}-Info", i.code), i.value.clone());
                }
            }
            Self::AssignMn { dau_id } => g.one("i23005-Info", dau_id.clone()),
            Self::Key { created, new_key } => {
                let mut group = alloc::vec![OwnedPair::new("SKCreateTime", created.clone())];
                if let Some(k) = new_key {
                    group.push(OwnedPair::new("NewSK", k.clone()));
                }
                g.0.push(group);
            }
            Self::Other { cp, .. } => g.0.clone_from(cp),
            Self::GetRtdInterval
            | Self::GetMinInterval
            | Self::StartUpload(_)
            | Self::StopUpload(_)
            | Self::OverLimitSampling
            | Self::NotificationAnswer
            | Self::DataAnswer
            | Self::Heartbeat => {}
        }
        g.0
    }

    /// Wraps the message in a 2017-order header.
    #[must_use]
    pub fn to_packet(&self, header: &Header<'_>) -> OwnedPacket {
        let cn = self.cn();
        let mut p = OwnedPacket::new(header.qn, header.st, cn, header.pw, header.mn, header.flag);
        p.cp = self.to_cp();
        p
    }
}

/// The header fields that wrap a message.
#[derive(Debug, Clone, Copy)]
pub struct Header<'h> {
    /// `QN`.
    pub qn: Option<&'h str>,
    /// `ST` (91 for answers).
    pub st: &'h str,
    /// `PW`.
    pub pw: &'h str,
    /// `MN`.
    pub mn: &'h str,
    /// `Flag`.
    pub flag: Option<Flag>,
}

#[derive(Default)]
struct Groups(Vec<Vec<OwnedPair>>);

impl Groups {
    fn one(&mut self, k: &str, v: String) {
        self.0.push(alloc::vec![OwnedPair::new(k, v)]);
    }
    fn opt(&mut self, k: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.one(k, v.to_string());
        }
    }
}

/// `CTime` (examples) or `Ctime` (Table 4).
fn ctime(f: &Fields<'_, '_>) -> Result<u16, Error> {
    if f.has("CTime") { f.number("CTime") } else { f.number("Ctime") }
}

/// The data items of a packet: within each `;` group, consecutive pairs with the same code form
/// one item, so the layout of the standard's examples (one group per code, and noise codes that
/// appear in several groups, C.28) is kept.
#[must_use]
pub fn data_items(packet: &Packet<'_>) -> Vec<DataItem> {
    DataItems::of(packet).iter().map(|item| item.to_owned()).collect()
}

/// The data items of a packet borrowed from it, grouped as [`data_items`] groups them: for a
/// reader that looks at every upload and keeps little of it, two allocations instead of one
/// string per code, suffix and value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataItems<'a> {
    /// Every `(suffix, value)` pair, item after item.
    fields: Vec<(&'a str, &'a str)>,
    /// Each item's code and the end of its pairs in `fields`.
    items: Vec<(&'a str, usize)>,
}

impl<'a> DataItems<'a> {
    /// Groups the `CP` pairs of `packet` into items.
    #[must_use]
    pub fn of(packet: &Packet<'a>) -> Self {
        let mut out = Self::default();
        for group in packet.cp().groups() {
            let mut open = false;
            for pair in group.pairs() {
                let Some((code, suffix)) = pair.code_and_suffix() else { continue };
                let value = pair.value().unwrap_or("");
                match out.items.last_mut() {
                    Some((current, end)) if open && *current == code => *end += 1,
                    _ => out.items.push((code, out.fields.len() + 1)),
                }
                out.fields.push((suffix, value));
                open = true;
            }
        }
        out
    }

    /// The number of items.
    #[must_use]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when the packet has no data items.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The items in order.
    pub fn iter(&self) -> impl Iterator<Item = DataItemRef<'_>> {
        let mut start = 0;
        self.items.iter().map(move |&(code, end)| {
            let item = DataItemRef { code, fields: &self.fields[start..end] };
            start = end;
            item
        })
    }
}

/// A value as a number, when it is a finite one (how every data value is read as a number).
fn finite_number(v: &str) -> Option<f64> {
    v.parse().ok().filter(|v: &f64| v.is_finite())
}

/// One item of [`DataItems`]: a [`DataItem`] that borrows its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataItemRef<'s> {
    /// The pollutant, noise, facility (`SB1`) or process code.
    pub code: &'s str,
    /// `(suffix, value)` pairs, as in [`DataItem::fields`].
    pub fields: &'s [(&'s str, &'s str)],
}

impl<'s> DataItemRef<'s> {
    /// The value for `suffix` (`"Rtd"`, `"Avg"`, …).
    #[must_use]
    pub fn get(&self, suffix: &str) -> Option<&'s str> {
        self.fields.iter().find(|(s, _)| *s == suffix).map(|(_, v)| *v)
    }

    /// The value for `suffix` as a number, when it is one (as [`DataItem::number`]).
    #[must_use]
    pub fn number(&self, suffix: &str) -> Option<f64> {
        self.get(suffix).and_then(finite_number)
    }

    /// The owned item.
    #[must_use]
    pub fn to_owned(&self) -> DataItem {
        DataItem {
            code: self.code.to_string(),
            fields: self.fields.iter().map(|(s, v)| ((*s).to_string(), (*v).to_string())).collect(),
        }
    }
}

fn info_items(packet: &Packet<'_>) -> Vec<InfoItem> {
    packet
        .cp()
        .pairs()
        .filter_map(|p| {
            let (code, suffix) = p.code_and_suffix()?;
            (suffix == "Info").then(|| InfoItem { code: code.to_string(), value: p.value().unwrap_or("").to_string() })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seg: &str) -> Message {
        Message::from_packet(&Packet::parse(seg.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn directions_are_read_from_content() {
        assert_eq!(msg("ST=32;CN=1011;CP=&&PolId=w01018&&"), Message::GetTime { pol_id: Some("w01018".into()) });
        assert!(matches!(msg("ST=32;CN=1011;CP=&&SystemTime=20160801085857&&"), Message::TimeReply { .. }));
        assert_eq!(msg("ST=32;CN=2011;CP=&&&&"), Message::StartUpload(Command::RealTimeData));
        let data = msg("ST=32;CN=2011;CP=&&DataTime=20160801085857;w01018-Rtd=2.2,w01018-Flag=N&&");
        let Message::Data { items, .. } = data else { panic!() };
        assert_eq!(items[0].number("Rtd"), Some(2.2));
        assert_eq!(items[0].flag(), Some(DataFlag::Normal));
    }

    #[test]
    fn items_group_by_code_within_a_group_and_never_across_groups() {
        // C.28's layout: the same noise code in two groups stays two items; a pair without a
        // code between two of the same code's pairs does not split them.
        let seg = "ST=23;CN=2011;CP=&&DataTime=20160801085857;LA-Rtd=50.1,LA-Flag=N;\
                   LA-Rtd=51.2,DataTime=20160801085858,LA-Flag=D,a01001-Rtd=oops;a01001-Flag=N&&";
        let p = Packet::parse(seg.as_bytes()).unwrap();
        let items = DataItems::of(&p);
        let seen: Vec<(&str, Vec<(&str, &str)>)> = items.iter().map(|i| (i.code, i.fields.to_vec())).collect();
        assert_eq!(
            seen,
            [
                ("LA", alloc::vec![("Rtd", "50.1"), ("Flag", "N")]),
                ("LA", alloc::vec![("Rtd", "51.2"), ("Flag", "D")]),
                ("a01001", alloc::vec![("Rtd", "oops")]),
                ("a01001", alloc::vec![("Flag", "N")]),
            ]
        );
        let second = items.iter().nth(1).unwrap();
        assert_eq!((second.get("Flag"), second.number("Rtd")), (Some("D"), Some(51.2)));
        assert_eq!(items.iter().nth(2).unwrap().number("Rtd"), None, "text is not a number");
        assert_eq!(items.len(), 4);
        let owned = data_items(&p);
        assert_eq!(owned.iter().map(|i| i.code.as_str()).collect::<Vec<_>>(), ["LA", "LA", "a01001", "a01001"]);
        assert_eq!(owned[1].fields, [("Rtd".to_string(), "51.2".to_string()), ("Flag".to_string(), "D".to_string())]);
        assert!(DataItems::of(&Packet::parse(b"ST=32;CN=2011;CP=&&&&").unwrap()).is_empty());
    }

    #[test]
    fn errors_point_at_the_bad_value() {
        let p = Packet::parse(b"ST=32;CN=1062;CP=&&RtdInterval=3x&&").unwrap();
        let e = Message::from_packet(&p).unwrap_err();
        assert_eq!((e.kind(), e.offset()), (ErrorKind::InvalidField("RtdInterval"), 6 + 31));
        let p = Packet::parse(b"ST=32;CN=1000;CP=&&OverTime=5&&").unwrap();
        assert_eq!(Message::from_packet(&p).unwrap_err().kind(), ErrorKind::MissingField("ReCount"));
    }
}
