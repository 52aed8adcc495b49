//! Dynamic control (动态管控): upload the analyzer's state and the parameters that determine its
//! result, on change and periodically, as CN 3020 site information (HJ 212-2017 §6.4.2, Tables
//! B.8–B.10; Appendix C.40–C.45), and standard-check results as CN 2062 (HJ 212-2025, provisional).
//!
//! Parameters are named by a semantic [`ParamKey`] (slope, intercept, run state, calibration time,
//! standard-check result, ...). A [`CodeTable`] maps a key to the i-code of the platform's table:
//! [`NATIONAL`] (HJ 212-2017 Table B.10), [`HEBEI`] (the Hebei extension, domain notes §3.2), or a
//! platform-supplied table ([`OwnedCodeTable`], data). Water and flue-gas analyzers
//! ([`AnalyzerKind`]) can map the same key to different codes (Hebei: slope i13008 for water,
//! i13026 for gas). `docs/devices.md` lists the mapping.
//!
//! A profile names a parameter point with `Target::Info(code)`, where the code is either a key's
//! short name (`Slope`, `ChkRead`, see [`ParamKey::name`]) or a code of the national or Hebei table
//! ([`resolve`]); a code that resolves to no key is uploaded unchanged under its own code.
//!
//! Change detection ([`Tracker::update`]), per analyzer and cycle:
//! - states (i12001 run state from the status word, i12002 comms from the device health, i12003
//!   alarm) and times are compared exactly; numbers with a deadband ([`Deadband`]);
//! - a value that could not be read (comms loss) is not a change: the last known value stands;
//! - all changes of one cycle go up in one 3020 with `PolId` = the analyzer's pollutant code
//!   (C.42, C.44); the first cycle and every `snapshot_interval_ms` send a full snapshot instead;
//! - when the standard-check time changes and the measured and reference values are known, a CN
//!   2062 `Data` with `SampleRd`, `StandardValue`, `ResultType` (1 pass, 0 fail) is produced if the
//!   platform speaks HJ 212-2025 (notes §3.6, provisional).

use alloc::string::String;
use alloc::vec::Vec;

use hj212_codec::codes::Command;
use hj212_codec::message::{DataItem, InfoItem, Message};
use hj212_codec::time::DateTime as Time;

use crate::acquire::{Reading, format_decimal};
use crate::profile::{AnalyzerMode, Code, Profile, Target, Value};

/// Water analyzer or flue-gas (CEMS) analyzer: some tables give them different codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
#[cfg_attr(feature = "std", serde(rename_all = "snake_case"))]
pub enum AnalyzerKind {
    /// A water analyzer (`w…` codes, HJ 525).
    Water,
    /// A flue-gas analyzer (`a…` codes, HJ 524).
    Gas,
}

impl AnalyzerKind {
    /// The kind of a pollutant code: `a…` is gas, anything else water.
    pub fn of(code: Code) -> Self {
        if code.as_str().starts_with('a') { Self::Gas } else { Self::Water }
    }
}

macro_rules! keys {
    ($($(#[$doc:meta])* $v:ident = $name:literal),* $(,)?) => {
        /// A semantic dynamic-control parameter, independent of any code table.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "std", derive(serde::Deserialize))]
        #[non_exhaustive]
        pub enum ParamKey { $($(#[$doc])* $v,)* }

        impl ParamKey {
            /// Every key.
            pub const ALL: &'static [Self] = &[$(Self::$v,)*];

            /// The short name (at most 8 ASCII letters or digits, usable as a profile `Info` code).
            pub const fn name(self) -> &'static str {
                match self { $(Self::$v => $name,)* }
            }
        }
    };
}

keys! {
    /// Work status (national i12001; Hebei water i12101, gas i12007), from the status word.
    RunState = "RunState",
    /// Analyzer–DAU comms (i12002, 0 normal 1 abnormal), from the device health.
    CommState = "CommSt",
    /// Alarm yes/no (national i12003; Hebei i12102 / i12008), from the alarm word.
    Alarm = "Alarm",
    /// Alarm detail (Hebei i12103 / i12009).
    AlarmDetail = "AlarmDet",
    /// Measuring range, upper limit (national i13001; Hebei water i13116, gas i13013).
    Range = "Range",
    /// Precision (i13002).
    Precision = "Precis",
    /// Measurement interval, min (i13003).
    Interval = "Interval",
    /// Digestion temperature, °C (i13004).
    DigestionTemp = "DigTemp",
    /// Digestion time, min (i13005).
    DigestionTime = "DigTime",
    /// Last calibration time (national i13006; Hebei span-calibration time i13107 / i13027).
    CalibrationTime = "CalTime",
    /// Intercept B (i13007; Hebei gas zero coefficient i13022).
    Intercept = "Intercpt",
    /// Slope K (i13008; Hebei gas span coefficient i13026).
    Slope = "Slope",
    /// Detection limit (i13009).
    DetectionLimit = "DetLimit",
    /// Zero-calibration time (Hebei i13101 / i13021).
    ZeroCalibrationTime = "ZeroTime",
    /// Zero-calibration concentration (Hebei i13104 / i13023).
    ZeroConcentration = "ZeroConc",
    /// Zero-calibration raw value (Hebei i13105 / i13024).
    ZeroRaw = "ZeroRaw",
    /// Zero drift, % (Hebei i13106 / i13025).
    ZeroDrift = "ZeroDrft",
    /// Span-calibration time (Hebei i13107 / i13027).
    SpanCalibrationTime = "SpanTime",
    /// Span-calibration concentration (Hebei i13108 / i13028).
    SpanConcentration = "SpanConc",
    /// Span-calibration raw value (Hebei i13110 / i13029).
    SpanRaw = "SpanRaw",
    /// Span drift, % (Hebei i13112 / i13010).
    SpanDrift = "SpanDrft",
    /// Raw measurement signal (Hebei i13115 / i13011).
    RawValue = "RawValue",
    /// User correction slope (Hebei i13119).
    CorrectionSlope = "CorrSlop",
    /// User correction intercept (Hebei i13120).
    CorrectionIntercept = "CorrIntc",
    /// Cooling time, min (Hebei i13123).
    CoolingTime = "CoolTime",
    /// Dilution ratio (Hebei gas i13012).
    DilutionRatio = "DilRatio",
    /// Smoothing time, min (Hebei gas i13015).
    SmoothingTime = "SmoothTm",
    /// Standard-check time (Hebei i13128; 2025: the 2062 `DataTime`).
    StandardCheckTime = "ChkTime",
    /// Standard-check reference concentration (Hebei i13130; 2025: `StandardValue`).
    StandardCheckReference = "ChkRef",
    /// Standard-check measured value (no 2017 or Hebei code; 2025: `SampleRd`).
    StandardCheckResult = "ChkRead",
    /// Standard-check relative deviation, % (Hebei i13129); derived when not read.
    StandardCheckDeviation = "ChkDev",
    /// Standard-check pass (non-zero) or fail (0) (2025: `ResultType`); derived when not read.
    StandardCheckPass = "ChkPass",
}

impl ParamKey {
    /// The key with short name `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.name() == name)
    }
}

/// How a table writes the work status ([`ParamKey::RunState`]) as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
#[cfg_attr(feature = "std", serde(rename_all = "snake_case"))]
pub enum ModeEncoding {
    /// HJ 212-2017 Table B.10 i12001 ([`AnalyzerMode::i12001`]).
    #[default]
    National,
    /// Hebei i12101: 0 idle, 1 measuring, 2 cleaning, 3 maintenance, 4 fault, 5 calibration,
    /// 6 standard check, 99 other (notes §3.2).
    HebeiWater,
    /// Hebei i12007: 0 running, 1 maintenance, 2 fault, 3 calibration, 5 back-blow, 99 other.
    HebeiGas,
}

impl ModeEncoding {
    /// The number for `mode`.
    pub const fn encode(self, mode: AnalyzerMode) -> u8 {
        use AnalyzerMode as M;
        match self {
            Self::National => mode.i12001(),
            Self::HebeiWater => match mode {
                M::Idle | M::Stopped => 0,
                M::Measuring => 1,
                M::Cleaning => 2,
                M::Maintenance => 3,
                M::Fault => 4,
                M::Calibration => 5,
                M::Check => 6,
                M::Other => 99,
            },
            Self::HebeiGas => match mode {
                M::Idle | M::Measuring => 0,
                M::Maintenance => 1,
                M::Fault => 2,
                M::Calibration | M::Check => 3,
                M::Cleaning => 5,
                M::Stopped | M::Other => 99,
            },
        }
    }
}

/// Which analyzers a table row applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
#[cfg_attr(feature = "std", serde(rename_all = "snake_case"))]
pub enum Applies {
    /// Water and gas.
    Any,
    /// Water analyzers only.
    Water,
    /// Flue-gas analyzers only.
    Gas,
}

impl Applies {
    /// True if the row applies to `kind`.
    pub const fn to(self, kind: AnalyzerKind) -> bool {
        matches!((self, kind), (Self::Any, _) | (Self::Water, AnalyzerKind::Water) | (Self::Gas, AnalyzerKind::Gas))
    }
}

/// One row of a code table: a key, the analyzers it applies to, and its i-code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
pub struct CodeEntry {
    /// The parameter.
    pub key: ParamKey,
    /// Water, gas or both.
    pub applies: Applies,
    /// The i-code on the wire.
    pub code: Code,
    /// For [`ParamKey::RunState`]: how the mode is numbered.
    #[cfg_attr(feature = "std", serde(default))]
    pub modes: ModeEncoding,
}

const fn e(key: ParamKey, applies: Applies, code: &str) -> CodeEntry {
    CodeEntry { key, applies, code: Code::new(code), modes: ModeEncoding::National }
}

const fn state(applies: Applies, code: &str, modes: ModeEncoding) -> CodeEntry {
    CodeEntry { key: ParamKey::RunState, applies, code: Code::new(code), modes }
}

/// A code table: a name and its rows; the first row matching key and kind wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeTable<'a> {
    /// A short name (`national`, `hebei`, or the platform's).
    pub name: &'a str,
    /// The rows.
    pub entries: &'a [CodeEntry],
}

impl CodeTable<'_> {
    /// The row for `key` on a `kind` analyzer.
    pub fn entry(&self, key: ParamKey, kind: AnalyzerKind) -> Option<&CodeEntry> {
        self.entries.iter().find(|e| e.key == key && e.applies.to(kind))
    }

    /// The i-code for `key` on a `kind` analyzer.
    pub fn code(&self, key: ParamKey, kind: AnalyzerKind) -> Option<Code> {
        self.entry(key, kind).map(|e| e.code)
    }
}

use Applies::{Any, Gas, Water};
use ParamKey as K;

static NATIONAL_ROWS: [CodeEntry; 12] = [
    state(Any, "i12001", ModeEncoding::National),
    e(K::CommState, Any, "i12002"),
    e(K::Alarm, Any, "i12003"),
    e(K::Range, Any, "i13001"),
    e(K::Precision, Any, "i13002"),
    e(K::Interval, Any, "i13003"),
    e(K::DigestionTemp, Any, "i13004"),
    e(K::DigestionTime, Any, "i13005"),
    e(K::CalibrationTime, Any, "i13006"),
    e(K::Intercept, Any, "i13007"),
    e(K::Slope, Any, "i13008"),
    e(K::DetectionLimit, Any, "i13009"),
];

/// HJ 212-2017 Table B.10 (i12001–i12003, i13001–i13009). Keys outside it (zero/span data,
/// standard checks, corrections) have no national code and are not uploaded under this table.
pub static NATIONAL: CodeTable<'static> = CodeTable { name: "national", entries: &NATIONAL_ROWS };

static HEBEI_ROWS: [CodeEntry; 51] = [
    // States: Hebei water and gas codes; comms has no Hebei analyzer code, the national one is kept.
    state(Water, "i12101", ModeEncoding::HebeiWater),
    state(Gas, "i12007", ModeEncoding::HebeiGas),
    e(K::CommState, Any, "i12002"),
    e(K::Alarm, Water, "i12102"),
    e(K::Alarm, Gas, "i12008"),
    e(K::AlarmDetail, Water, "i12103"),
    e(K::AlarmDetail, Gas, "i12009"),
    // Water parameters: the national codes Hebei keeps, then i131xx.
    e(K::Interval, Water, "i13003"),
    e(K::DigestionTemp, Water, "i13004"),
    e(K::DigestionTime, Water, "i13005"),
    e(K::Intercept, Water, "i13007"),
    e(K::Slope, Water, "i13008"),
    e(K::Range, Water, "i13116"),
    e(K::CalibrationTime, Water, "i13107"),
    e(K::ZeroCalibrationTime, Water, "i13101"),
    e(K::ZeroConcentration, Water, "i13104"),
    e(K::ZeroRaw, Water, "i13105"),
    e(K::ZeroDrift, Water, "i13106"),
    e(K::SpanCalibrationTime, Water, "i13107"),
    e(K::SpanConcentration, Water, "i13108"),
    e(K::SpanRaw, Water, "i13110"),
    e(K::SpanDrift, Water, "i13112"),
    e(K::RawValue, Water, "i13115"),
    e(K::CorrectionSlope, Water, "i13119"),
    e(K::CorrectionIntercept, Water, "i13120"),
    e(K::CoolingTime, Water, "i13123"),
    e(K::StandardCheckTime, Water, "i13128"),
    e(K::StandardCheckDeviation, Water, "i13129"),
    e(K::StandardCheckReference, Water, "i13130"),
    // Gas parameters: i130xx.
    e(K::Range, Gas, "i13013"),
    e(K::SpanDrift, Gas, "i13010"),
    e(K::RawValue, Gas, "i13011"),
    e(K::DilutionRatio, Gas, "i13012"),
    e(K::SmoothingTime, Gas, "i13015"),
    e(K::ZeroCalibrationTime, Gas, "i13021"),
    e(K::Intercept, Gas, "i13022"),
    e(K::ZeroConcentration, Gas, "i13023"),
    e(K::ZeroRaw, Gas, "i13024"),
    e(K::ZeroDrift, Gas, "i13025"),
    e(K::Slope, Gas, "i13026"),
    e(K::CalibrationTime, Gas, "i13027"),
    e(K::SpanCalibrationTime, Gas, "i13027"),
    e(K::SpanConcentration, Gas, "i13028"),
    e(K::SpanRaw, Gas, "i13029"),
    // National codes without a Hebei replacement, for gas analyzers too.
    e(K::Interval, Gas, "i13003"),
    e(K::Precision, Any, "i13002"),
    e(K::DetectionLimit, Any, "i13009"),
    e(K::DigestionTemp, Gas, "i13004"),
    e(K::DigestionTime, Gas, "i13005"),
    e(K::CorrectionSlope, Gas, "i13119"),
    e(K::CorrectionIntercept, Gas, "i13120"),
];

/// The Hebei dynamic-control extension (domain notes §3.2, §3.7; [S-code]) with the national codes
/// Hebei keeps. Standard-check measured value and pass/fail have no Hebei code.
pub static HEBEI: CodeTable<'static> = CodeTable { name: "hebei", entries: &HEBEI_ROWS };

/// A platform-supplied code table, e.g. read from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
pub struct OwnedCodeTable {
    /// The platform's name for it.
    pub name: String,
    /// The rows.
    pub entries: Vec<CodeEntry>,
}

impl OwnedCodeTable {
    /// Borrows it as a [`CodeTable`].
    pub fn as_table(&self) -> CodeTable<'_> {
        CodeTable { name: &self.name, entries: &self.entries }
    }
}

/// The key a profile's `Info` code names: a key's short name, else the code's meaning in the
/// national table, else in the Hebei table, for a `kind` analyzer.
pub fn resolve(code: Code, kind: AnalyzerKind) -> Option<ParamKey> {
    ParamKey::from_name(code.as_str()).or_else(|| {
        [&NATIONAL, &HEBEI]
            .iter()
            .find_map(|t| t.entries.iter().find(|e| e.code == code && e.applies.to(kind)).map(|e| e.key))
    })
}

/// When two numbers count as different: `|a − b| > max(abs, rel · |a|)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deadband {
    /// Absolute tolerance (default 1e-6).
    pub abs: f64,
    /// Relative tolerance (default 1e-5, absorbs f32 register round-off).
    pub rel: f64,
}

impl Default for Deadband {
    fn default() -> Self {
        Self { abs: 1e-6, rel: 1e-5 }
    }
}

impl Deadband {
    /// True if `a` and `b` differ by more than the band.
    pub fn changed(&self, a: f64, b: f64) -> bool {
        (a - b).abs() > self.abs.max(self.rel * a.abs())
    }
}

/// Settings of dynamic control.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DynamicConfig<'t> {
    /// The code table of the platform.
    pub table: CodeTable<'t>,
    /// Interval between full snapshots, ms (default one hour; 0 = only the first).
    pub snapshot_interval_ms: u64,
    /// The deadband for numeric parameters.
    pub deadband: Deadband,
    /// Fraction digits of numeric parameters without an `Nx.y` type (trailing zeros trimmed;
    /// default 4).
    pub decimals: u8,
    /// The platform speaks HJ 212-2025: produce CN 2062 standard-check data.
    pub hj212_2025: bool,
    /// A standard check passes when `|read − ref| / ref` is at most this, % (default 10, the
    /// notes' \[M\] figure for standard-sample checks; used when the analyzer gives no pass flag).
    pub check_tolerance_pct: f64,
}

impl Default for DynamicConfig<'static> {
    fn default() -> Self {
        Self {
            table: NATIONAL,
            snapshot_interval_ms: 3_600_000,
            deadband: Deadband::default(),
            decimals: 4,
            hj212_2025: false,
            check_tolerance_pct: 10.0,
        }
    }
}

/// A tracked value.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Val {
    Int(u32),
    Num(f64),
    Time(crate::profile::DateTime),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Mode,
    Comm,
    Alarm,
    Point(usize),
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    key: Option<ParamKey>,
    raw: Code,
    source: Source,
    last: Option<Val>,
}

/// Change detection for one analyzer.
#[derive(Debug, Clone)]
pub struct Tracker {
    pol_id: Code,
    kind: AnalyzerKind,
    slots: Vec<Slot>,
    last_snapshot_ms: Option<u64>,
}

fn trim(mut s: String) -> String {
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    s
}

impl Tracker {
    /// A tracker for `profile`; `pol_id` defaults to the profile's first pollutant code.
    pub fn new(profile: &Profile<'_>, pol_id: Option<Code>) -> Self {
        let first = profile.points.iter().find_map(|p| match p.target {
            Target::Pollutant(c) => Some(c),
            _ => None,
        });
        let pol_id = pol_id.or(first).unwrap_or(Code::new("w00000"));
        let kind = AnalyzerKind::of(pol_id);
        let mut slots = Vec::new();
        let mut push =
            |key: Option<ParamKey>, raw: Code, source: Source| slots.push(Slot { key, raw, source, last: None });
        if profile.point(&Target::Status).is_some() {
            push(Some(ParamKey::RunState), Code::new("RunState"), Source::Mode);
        }
        push(Some(ParamKey::CommState), Code::new("CommSt"), Source::Comm);
        if profile.point(&Target::Alarm).is_some() {
            push(Some(ParamKey::Alarm), Code::new("Alarm"), Source::Alarm);
        }
        for (i, p) in profile.points.iter().enumerate() {
            // The 2013 record's own inputs are per measurement, not parameters.
            if p.target == crate::acquire::COMPLETE_TIME || p.target == crate::acquire::SAMPLE_TYPE {
                continue;
            }
            if let Target::Info(c) = p.target {
                push(resolve(c, kind), c, Source::Point(i));
            }
        }
        Self { pol_id, kind, slots, last_snapshot_ms: None }
    }

    /// The analyzer's pollutant code (`PolId`).
    pub const fn pol_id(&self) -> Code {
        self.pol_id
    }

    /// The analyzer kind.
    pub const fn kind(&self) -> AnalyzerKind {
        self.kind
    }

    fn read(slot: &Slot, r: &Reading<'_>) -> Option<Val> {
        match slot.source {
            Source::Comm => Some(Val::Int(u32::from(r.comm.i12002()))),
            _ if !r.comm.is_ok() => None,
            Source::Mode => r.mode().map(|m| Val::Int(m as u32)),
            Source::Alarm => r.alarm().map(|a| Val::Int(u32::from(a != 0))),
            Source::Point(i) => match r.values.get(i).copied().flatten()? {
                Value::Number(n) => Some(Val::Num(n)),
                Value::Code(c) => Some(Val::Int(c)),
                Value::Time(t) => Some(Val::Time(t)),
            },
        }
    }

    fn changed(cfg: &DynamicConfig<'_>, old: Option<Val>, new: Val) -> bool {
        match (old, new) {
            (Some(Val::Num(a)), Val::Num(b)) => cfg.deadband.changed(a, b),
            (Some(a), b) => a != b,
            (None, _) => true,
        }
    }

    /// The wire code and text of a slot's value under the configured table, if it has one.
    fn item(&self, cfg: &DynamicConfig<'_>, slot: &Slot, v: Val) -> Option<InfoItem> {
        let (code, modes) = match slot.key {
            Some(k) => {
                let e = cfg.table.entry(k, self.kind)?;
                (e.code, e.modes)
            }
            None => (slot.raw, ModeEncoding::National),
        };
        let value = match (slot.source, v) {
            (Source::Mode, Val::Int(m)) => alloc::format!("{}", modes.encode(mode_from(m))),
            (_, Val::Int(i)) => alloc::format!("{i}"),
            (_, Val::Time(t)) => {
                let mut n14 = [0u8; 14];
                t.write_hj212(&mut n14);
                String::from(core::str::from_utf8(&n14).unwrap_or(""))
            }
            (_, Val::Num(n)) => match info_decimals(code.as_str()) {
                Some(d) => format_decimal(n, d),
                None => trim(format_decimal(n, cfg.decimals)),
            },
        };
        Some(InfoItem { code: code.as_str().into(), value })
    }

    /// Compares this cycle's reading with the last and returns the messages to upload: at most one
    /// CN 3020 (the changes, or a full snapshot when due) and, with `hj212_2025`, a CN 2062 when a
    /// new standard check completed. `now` is the 3020 `DataTime`.
    pub fn update(&mut self, cfg: &DynamicConfig<'_>, reading: &Reading<'_>, now: Time, now_ms: u64) -> Vec<Message> {
        let mut out = Vec::new();
        let snapshot = match self.last_snapshot_ms {
            None => true,
            Some(t) => cfg.snapshot_interval_ms > 0 && now_ms.saturating_sub(t) >= cfg.snapshot_interval_ms,
        };
        let mut items = Vec::new();
        let mut check_done = false;
        for i in 0..self.slots.len() {
            let slot = self.slots[i];
            let new = Self::read(&slot, reading);
            let changed = new.is_some_and(|n| Self::changed(cfg, slot.last, n));
            if changed && slot.key == Some(ParamKey::StandardCheckTime) && slot.last.is_some() {
                check_done = true;
            }
            if let Some(n) = new {
                self.slots[i].last = Some(n);
            }
            let current = self.slots[i].last;
            if let Some(v) = current.filter(|_| snapshot || changed) {
                items.extend(self.item(cfg, &slot, v));
            }
        }
        if check_done {
            if let Some(derived) = self.check_deviation(cfg) {
                items.extend(derived);
            }
        }
        if snapshot {
            self.last_snapshot_ms = Some(now_ms);
        }
        if !items.is_empty() {
            out.push(Message::SiteInfo { data_time: now, pol_id: Some(self.pol_id.as_str().into()), items });
        }
        if check_done && cfg.hj212_2025 {
            out.extend(self.standard_check(cfg));
        }
        out
    }

    fn last(&self, key: ParamKey) -> Option<Val> {
        self.slots.iter().find(|s| s.key == Some(key)).and_then(|s| s.last)
    }

    fn last_num(&self, key: ParamKey) -> Option<f64> {
        match self.last(key)? {
            Val::Num(n) => Some(n),
            Val::Int(i) => Some(f64::from(i)),
            Val::Time(_) => None,
        }
    }

    /// (measured, reference, deviation %, pass) of the last standard check.
    fn check(&self, cfg: &DynamicConfig<'_>) -> Option<(f64, f64, Option<f64>, bool)> {
        let read = self.last_num(ParamKey::StandardCheckResult)?;
        let reference = self.last_num(ParamKey::StandardCheckReference)?;
        let dev = (reference != 0.0).then(|| (read - reference) / reference * 100.0);
        let pass = match self.last_num(ParamKey::StandardCheckPass) {
            Some(p) => p != 0.0,
            None => dev.is_some_and(|d| d.abs() <= cfg.check_tolerance_pct),
        };
        Some((read, reference, dev, pass))
    }

    /// The Hebei deviation item (i13129) derived from measured and reference values, when the
    /// profile reads no deviation and the table has a code for it.
    fn check_deviation(&self, cfg: &DynamicConfig<'_>) -> Option<Option<InfoItem>> {
        if self.slots.iter().any(|s| s.key == Some(ParamKey::StandardCheckDeviation)) {
            return None;
        }
        let (_, _, dev, _) = self.check(cfg)?;
        let code = cfg.table.code(ParamKey::StandardCheckDeviation, self.kind)?;
        Some(dev.map(|d| InfoItem { code: code.as_str().into(), value: format_decimal(d, 1) }))
    }

    /// CN 2062 (HJ 212-2025, provisional): `DataTime` = the check time, `SampleRd`,
    /// `StandardValue`, `ResultType` (1 pass, 0 fail).
    fn standard_check(&self, cfg: &DynamicConfig<'_>) -> Option<Message> {
        let Some(Val::Time(t)) = self.last(ParamKey::StandardCheckTime) else { return None };
        let (read, reference, _, pass) = self.check(cfg)?;
        let dec = crate::acquire::decimals_for(self.pol_id.as_str(), 3);
        let data_time = Time {
            year: t.year,
            month: t.month,
            day: t.day,
            hour: t.hour,
            minute: t.minute,
            second: t.second,
            millis: 0,
        };
        let fields = alloc::vec![
            ("SampleRd".into(), format_decimal(read, dec)),
            ("StandardValue".into(), format_decimal(reference, dec)),
            ("ResultType".into(), String::from(if pass { "1" } else { "0" })),
        ];
        Some(Message::Data {
            cn: Command::StandardCheckData,
            data_time,
            items: alloc::vec![DataItem { code: self.pol_id.as_str().into(), fields }],
        })
    }
}

fn mode_from(m: u32) -> AnalyzerMode {
    use AnalyzerMode as M;
    [M::Idle, M::Measuring, M::Maintenance, M::Fault, M::Calibration, M::Check, M::Cleaning, M::Stopped, M::Other]
        .into_iter()
        .find(|x| *x as u32 == m)
        .unwrap_or(M::Other)
}

/// The fraction digits of an info code's `Nx.y` type in the national or Hebei table.
fn info_decimals(code: &str) -> Option<u8> {
    use hj212_codec::tables::{INFO_CODES, INFO_CODES_HEBEI, info_code_in};
    let t = info_code_in(INFO_CODES, code).or_else(|| info_code_in(INFO_CODES_HEBEI, code))?.data_type;
    let (int, frac) = t.strip_prefix('N')?.split_once('.')?;
    int.parse::<u8>().ok()?;
    frac.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hj212_codec::tables::{INFO_CODES, INFO_CODES_HEBEI, info_code_in};

    #[test]
    fn every_table_code_exists_in_the_codec_tables() {
        for e in NATIONAL.entries {
            assert!(info_code_in(INFO_CODES, e.code.as_str()).is_some(), "{:?}", e.code);
        }
        for e in HEBEI.entries {
            let c = e.code.as_str();
            assert!(info_code_in(INFO_CODES_HEBEI, c).or_else(|| info_code_in(INFO_CODES, c)).is_some(), "{c}");
        }
        for k in ParamKey::ALL {
            assert!(Code::try_new(k.name()).is_some(), "{k:?}");
            assert_eq!(ParamKey::from_name(k.name()), Some(*k));
        }
    }

    #[test]
    fn keys_map_per_table_and_kind() {
        assert_eq!(NATIONAL.code(K::Slope, AnalyzerKind::Gas), Some(Code::new("i13008")));
        assert_eq!(HEBEI.code(K::Slope, AnalyzerKind::Water), Some(Code::new("i13008")));
        assert_eq!(HEBEI.code(K::Slope, AnalyzerKind::Gas), Some(Code::new("i13026")));
        assert_eq!(HEBEI.code(K::RunState, AnalyzerKind::Water), Some(Code::new("i12101")));
        assert_eq!(NATIONAL.code(K::StandardCheckTime, AnalyzerKind::Water), None);
        assert_eq!(resolve(Code::new("i13120"), AnalyzerKind::Water), Some(K::CorrectionIntercept));
        assert_eq!(resolve(Code::new("ChkRead"), AnalyzerKind::Water), Some(K::StandardCheckResult));
        assert_eq!(resolve(Code::new("i99999"), AnalyzerKind::Water), None);
        assert_eq!(ModeEncoding::HebeiWater.encode(AnalyzerMode::Calibration), 5);
        assert_eq!(ModeEncoding::National.encode(AnalyzerMode::Calibration), 3);
        assert!(Deadband::default().changed(1.0, 1.1));
        assert!(!Deadband::default().changed(1.2, f64::from(1.2f32)));
    }
}
