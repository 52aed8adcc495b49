//! From one poll cycle to HJ 212 data messages: samples, flags, and the real-time, minute, hourly
//! and daily records (HJ 212-2017 §6.6.5 Table 9: CN 2011, 2051, 2061, 2031; facility CN 2021 and
//! 2041; Appendix D for the statistics).
//!
//! The path of a value:
//! 1. [`decode_block`] decodes the points that one answered read block holds into a caller slice of
//!    `Option<Value>` (one slot per profile point). No allocation: it runs inside
//!    [`Master::poll_cycle`](crate::modbus::Master::poll_cycle)'s callback.
//! 2. A [`Reading`] joins those values with the device's [`CommState`] (from
//!    [`modbus::health`](crate::modbus::health)) and yields one [`Sample`] per pollutant point, its
//!    flag derived by [`derive_flag`] (B when the device did not answer, D on fault or fatal
//!    alarm, M maintenance, C calibration or check, F stopped, T above the range i13001).
//! 3. [`Acquisition::ingest`] feeds the samples of all devices to per-pollutant aggregators and
//!    returns the records that came due at `now`, as ready-to-send
//!    [`Message`]s.
//!
//! Statistics (formula numbers are HJ 212-2017 Appendix D's; `stats` documents the corrections):
//! - A 1-minute mean needs `samples_per_minute` valid samples ((23), default 12 at ≤ 5 s polling).
//! - The `MinInterval` record (2051, default 10 min) gives Min/Avg/Max over the valid samples of
//!   the block ((15)).
//! - The hourly record (2061) averages the valid 1-minute means and needs `minutes_per_hour` of them
//!   ((24), k ≥ 45; domain notes §6.2.2); the daily record (2031) averages the valid hourly means and
//!   needs `hours_per_day` ((25), m ≥ 20). The same rule is applied to water by default; configure
//!   it per platform (the notes leave HJ 356's water rule unverified).
//! - `Cou`: the flow code's volume is Σ q·Δt ((1)–(4): water L/s · s · 10⁻³ m³; flue gas m³/s · s);
//!   a pollutant's is Σ volume·c ((8)–(11): water 10⁻³ kg per m³·mg/L; (33): gas 10⁻⁶ kg per
//!   m³·mg/m³). Δt is the time since the previous cycle, capped by `max_slice_ms`.
//! - Water `Avg` is arithmetic ((15)–(17)) or flow-weighted ((12)–(14), `G/D·10³`), per
//!   [`WaterMean`].
//! - Flue gas `Zs…` values use the reference of [`ZsConfig`] ((26)–(28)) with the O₂ of the same
//!   cycle.
//! - Period flags (notes to C.16–C.18): water, any abnormal value makes the period abnormal (the
//!   highest-precedence abnormal flag seen); flue gas, N when ≥ 75 % of the samples are N, else D.
//!   A period below its minimum valid count has no `Avg` and is flagged with the worst abnormal flag
//!   seen, or D (gas) / B (water, no data) when all its samples were normal but too few.
//!
//! Batch analyzers (COD, NH3-N, TP, TN: one result per digestion cycle, tens of minutes apart):
//! a pollutant whose profile reads a `SampleTime` that decodes is a batch series. Each cycle
//! re-reads the same result, but only a `SampleTime` not seen before is a new measurement. It goes
//! up once, in the next real-time record (2011, with `-SampleTime`; without a new measurement the
//! item is left out), and counts once in the 2051, 2061 and 2031 periods in which it is first read
//! (by poll time), whose mean
//! is over their measurements (at least one; the 1-minute and 45-minute rules are for continuous
//! analyzers). A period without a measurement has no item for it. For `Cou`, the last measurement
//! stands for the concentration until the next one. Cycles that read no valid time (comms loss)
//! add nothing to a batch series; comms state goes up through 3020 i12002.
//!
//! HJ 212-2025 (provisional, [`AcquireConfig::hj212_2025`], default off; `docs/devices.md`): a new
//! batch measurement also goes up as one CN 2013 ([`COMPLETE_TIME`], [`SAMPLE_TYPE`]), and the
//! [`FURNACE_TEMPERATURE`] series as a five-minute mean, CN 2111.
//!
//! `DataTime` is the sampling instant for 2011/2021 and the period start for 2051/2061/2031/2041
//! (HJ 212-2017 Table 4). Values are written as decimal text with the fraction digits of the code's
//! Appendix B data type `Nx.y` ([`decimals_for`]).
//!
//! Each period is reported once. When the clock is set back (a platform 1012, an NTP step), the
//! periods it passes again keep accumulating but are not reported a second time: the platform
//! already holds a record for that `DataTime`, and two records with one `DataTime` would be a
//! conflict it cannot resolve.

use alloc::string::String;
use alloc::vec::Vec;

use hj212_codec::codes::Command;
use hj212_codec::message::{DataItem, InfoItem, Message};
use hj212_codec::time::DateTime as Time;

use crate::dynamic::{AnalyzerKind, ParamKey};
use crate::modbus::{CommState, ReadBlock};
use crate::profile::{AnalyzerMode, Code, DateTime, FacilityQuantity, Profile, Target, Value};
use crate::stats::{
    Flag, FlagInputs, FlagSet, GasValidity, MeanAccumulator, Reference, Sum, aggregate_flag_gas, aggregate_flag_water,
    converted, derive_flag, slice_load_kg, slice_volume_m3,
};

/// Decodes every point of `points` that lies wholly inside `block` from `regs` (the block's
/// registers) into `values[i]` (same index as the point). Points that fail to decode become `None`.
/// No allocation.
pub fn decode_block(
    points: &[crate::profile::PointSpec],
    block: &ReadBlock,
    regs: &[u16],
    values: &mut [Option<Value>],
) {
    for (p, slot) in points.iter().zip(values.iter_mut()) {
        if let Some(off) = block.offset_of(&p.block()) {
            let n = p.value.registers() as usize;
            *slot = regs.get(off..off + n).and_then(|r| p.decode(r).ok());
        }
    }
}

/// One pollutant value of one cycle with its data flag (HJ 212-2017 Table 8).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The pollutant code (`w01018`).
    pub code: Code,
    /// The value; `None` when the device did not answer or the point did not decode.
    pub value: Option<f64>,
    /// The data flag.
    pub flag: Flag,
    /// The analyzer's own measurement time (`SampleTime`), when the profile reads one.
    pub sample_time: Option<DateTime>,
}

/// The values one device gave in one cycle, with its communication state.
#[derive(Debug, Clone, Copy)]
pub struct Reading<'a> {
    /// The device's profile.
    pub profile: &'a Profile<'a>,
    /// One slot per profile point (see [`decode_block`]); `None` where nothing was read.
    pub values: &'a [Option<Value>],
    /// The device's communication state after the cycle ([`crate::modbus::HealthTable::state`]).
    pub comm: CommState,
    /// An operating mode imposed by the DAU (e.g. maintenance declared on site); it replaces the
    /// mode read from the status word.
    pub mode_override: Option<AnalyzerMode>,
}

impl<'a> Reading<'a> {
    /// A reading without mode override.
    pub const fn new(profile: &'a Profile<'a>, values: &'a [Option<Value>], comm: CommState) -> Self {
        Self { profile, values, comm, mode_override: None }
    }

    /// The value of the first point with `target`.
    pub fn value(&self, target: &Target) -> Option<Value> {
        let i = self.profile.points.iter().position(|p| &p.target == target)?;
        self.values.get(i).copied().flatten()
    }

    /// The value of the first parameter point whose code resolves to `key` for `kind`.
    pub fn param(&self, key: ParamKey, kind: AnalyzerKind) -> Option<Value> {
        self.profile.points.iter().zip(self.values).find_map(|(p, v)| match p.target {
            Target::Info(c) if crate::dynamic::resolve(c, kind) == Some(key) => *v,
            _ => None,
        })
    }

    fn code(&self, target: &Target) -> Option<u32> {
        match self.value(target)? {
            Value::Code(c) => Some(c),
            Value::Number(n) if n >= 0.0 => Some(n as u32),
            _ => None,
        }
    }

    /// The analyzer's mode: the override, else the status word through the profile's status map,
    /// else [`AnalyzerMode::Measuring`] for a device without a status word (flow meters).
    pub fn mode(&self) -> Option<AnalyzerMode> {
        if let Some(m) = self.mode_override {
            return Some(m);
        }
        if self.profile.point(&Target::Status).is_none() {
            return Some(AnalyzerMode::Measuring);
        }
        self.code(&Target::Status).map(|raw| self.profile.mode(raw))
    }

    /// The alarm code (0 none), if the profile reads one and it was read.
    pub fn alarm(&self) -> Option<u32> {
        self.code(&Target::Alarm)
    }

    /// The analyzer kind, from its first pollutant code.
    pub fn kind(&self) -> AnalyzerKind {
        self.profile
            .points
            .iter()
            .find_map(|p| match p.target {
                Target::Pollutant(c) => Some(AnalyzerKind::of(c)),
                _ => None,
            })
            .unwrap_or(AnalyzerKind::Water)
    }

    /// The flag inputs for a value `v` of this device (over-range against the range parameter).
    pub fn flag_inputs(&self, v: Option<f64>) -> FlagInputs {
        let range = self.param(ParamKey::Range, self.kind()).and_then(|r| r.as_f64()).filter(|r| *r > 0.0);
        FlagInputs {
            comm: self.comm,
            mode: self.mode().unwrap_or(AnalyzerMode::Other),
            fault: self.code(&Target::Fault).is_some_and(|f| f != 0),
            fatal_alarm: self.alarm().is_some_and(|a| self.profile.fatal_alarms.contains(&a)),
            over_range: matches!((v, range), (Some(v), Some(r)) if v > r),
            manual: false,
        }
    }

    /// One sample per pollutant point, flagged. A device that did not answer gives flag B and no
    /// value (the notes §6.3: comms loss is B); so does a point that did not decode.
    pub fn samples(&self) -> impl Iterator<Item = Sample> + '_ {
        let sample_time = match self.value(&Target::SampleTime) {
            Some(Value::Time(t)) => Some(t),
            _ => None,
        };
        self.profile.points.iter().zip(self.values).filter_map(move |(p, v)| match p.target {
            Target::Pollutant(code) => {
                let value = if self.comm.is_ok() { v.and_then(|v| v.as_f64()) } else { None };
                let mut inputs = self.flag_inputs(value);
                if value.is_none() {
                    inputs.comm = CommState::Failing { consecutive: 1 };
                }
                Some(Sample { code, value, flag: derive_flag(&inputs), sample_time })
            }
            _ => None,
        })
    }
}

/// How water `Avg` values are computed (domain notes §6.1.2–6.1.3: a per-platform choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WaterMean {
    /// (15)–(17): arithmetic mean of the valid values.
    #[default]
    Arithmetic,
    /// (12)–(14): `G / D · 10³` over the period, falling back to the arithmetic mean without flow.
    FlowWeighted,
}

/// Converted (折算, `Zs`) values for flue gas, Appendix D.2.3.
#[derive(Debug, Clone, PartialEq)]
pub struct ZsConfig {
    /// The reference: O₂ (28) or excess-air coefficient (26).
    pub reference: Reference,
    /// The code whose value is the dry O₂ % (`a19001`).
    pub o2_code: Code,
    /// The pollutant codes that get `Zs` values (e.g. `a21026`, `a21002`, `a34013`).
    pub codes: Vec<Code>,
}

/// The optional profile point with the time the analyzer finished a batch measurement (2013
/// `-CompleteTime`); a time-typed `Info` point with this name. Our own name (codes are 8 bytes).
pub const COMPLETE_TIME: Target = Target::Info(Code::new("CplTime"));
/// The optional profile point with a batch measurement's sampling mode (2013 `-SampleType`).
pub const SAMPLE_TYPE: Target = Target::Info(Code::new("SmpType"));
/// The furnace temperature code whose five-minute mean goes up as CN 2111 (HJ 212-2017 App. B
/// `a01901`, mean combustion temperature in a waste incinerator's furnace, ℃, N4.1).
pub const FURNACE_TEMPERATURE: Code = Code::new("a01901");

fn n14_text(n: [u8; 14]) -> String {
    core::str::from_utf8(&n).unwrap_or("").into()
}

fn profile_time_text(t: DateTime) -> String {
    let mut n = [0u8; 14];
    t.write_hj212(&mut n);
    n14_text(n)
}

/// The provisional HJ 212-2025 CN 2013 record of one new batch measurement `smp` of reading `r`,
/// polled at `now` (digest §5.1 C28, layout of its §13.3 example):
/// `DataTime` = start of the hour of `SampleTime`; `-SampleTime`; `-CompleteTime` from
/// [`COMPLETE_TIME`], else `now`; `-SampleType` from [`SAMPLE_TYPE`], else the config's; `-Avg`;
/// `-Flag`. `None` without a `SampleTime` or value.
fn raw_record(config: &AcquireConfig, r: &Reading<'_>, smp: &Sample, now: Time) -> Option<Message> {
    let st = smp.sample_time?;
    let value = smp.value?;
    let data_time =
        Time { year: st.year, month: st.month, day: st.day, hour: st.hour, minute: 0, second: 0, millis: 0 };
    let complete = match r.value(&COMPLETE_TIME) {
        Some(Value::Time(t)) => profile_time_text(t),
        _ => n14_text(now.n14()),
    };
    let sample_type = match r.value(&SAMPLE_TYPE).and_then(|v| v.as_f64()) {
        Some(v) if (0.0..=99.0).contains(&v) => v as u8,
        _ => config.raw_sample_type,
    };
    let dec = decimals_for(smp.code.as_str(), config.default_decimals);
    let fields = alloc::vec![
        ("SampleTime".into(), profile_time_text(st)),
        ("CompleteTime".into(), complete),
        ("SampleType".into(), alloc::format!("{sample_type}")),
        ("Avg".into(), format_decimal(value, dec)),
        ("Flag".into(), smp.flag.as_char().into()),
    ];
    Some(Message::Data {
        cn: Command::RawData,
        data_time,
        items: alloc::vec![DataItem { code: smp.code.as_str().into(), fields }],
    })
}

/// Settings of an [`Acquisition`].
#[derive(Debug, Clone, PartialEq)]
pub struct AcquireConfig {
    /// `RtdInterval`, seconds between real-time (2011) and facility-state (2021) uploads (30–3600).
    pub rtd_interval_s: u32,
    /// `MinInterval`, minutes per minute record (1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30; default 10).
    pub min_interval: u8,
    /// Flags whose values count towards means (default {N}, appendix-d.md A23).
    pub valid_flags: FlagSet,
    /// Minimum valid counts (23)–(25).
    pub validity: GasValidity,
    /// Water averaging.
    pub water_mean: WaterMean,
    /// Water flow code, L/s (`w00000`).
    pub water_flow: Code,
    /// Flue-gas flow code, m³/s (`a00000`), taken as standard dry flow for (33).
    pub gas_flow: Code,
    /// Converted values, when the source's emission standard sets a reference.
    pub zs: Option<ZsConfig>,
    /// Longest slice counted for `Cou`, ms (default 60 000): a gap longer than this (DAU down) is
    /// not bridged by the last flow.
    pub max_slice_ms: u64,
    /// Fraction digits when Appendix B gives no `Nx.y` for a code (default 3).
    pub default_decimals: u8,
    /// Fraction digits of `Cou` values (default 3).
    pub cou_decimals: u8,
    /// The platform speaks HJ 212-2025 (default off): adds the provisional 2025 records, CN 2013
    /// (one per new batch measurement) and CN 2111 (five-minute mean furnace temperature `a01901`).
    pub hj212_2025: bool,
    /// `SampleType` of a 2013 record when the profile reads none (default 1, routine).
    pub raw_sample_type: u8,
}

impl Default for AcquireConfig {
    fn default() -> Self {
        Self {
            rtd_interval_s: 30,
            min_interval: 10,
            valid_flags: FlagSet::MEASURED,
            validity: GasValidity::default(),
            water_mean: WaterMean::Arithmetic,
            water_flow: Code::new("w00000"),
            gas_flow: Code::new("a00000"),
            zs: None,
            max_slice_ms: 60_000,
            default_decimals: 3,
            cou_decimals: 3,
            hj212_2025: false,
            raw_sample_type: 1,
        }
    }
}

/// Fraction digits for `code`: the `y` of its Appendix B data type `Nx.y`, 0 for `Nx`, else
/// `default`.
pub fn decimals_for(code: &str, default: u8) -> u8 {
    match hj212_codec::tables::pollutant(code).map(|p| p.data_type) {
        Some(t) if t.starts_with('N') => match t.split_once('.') {
            Some((_, y)) => y.parse().unwrap_or(default),
            None => 0,
        },
        _ => default,
    }
}

/// `v` as decimal text with `decimals` fraction digits, without a negative zero.
pub fn format_decimal(v: f64, decimals: u8) -> String {
    let s = alloc::format!("{:.*}", decimals as usize, v);
    if s.starts_with('-') && s[1..].bytes().all(|b| b == b'0' || b == b'.') { String::from(&s[1..]) } else { s }
}

#[derive(Debug, Clone, Copy, Default)]
struct Agg {
    mean: MeanAccumulator,
    zs: MeanAccumulator,
    worst: Option<Flag>,
    normal: u32,
    total: u32,
    volume: Sum,
    load: Sum,
    n_flow: u32,
}

impl Agg {
    fn note_flag(&mut self, flag: Flag) {
        self.total += 1;
        if flag == Flag::N {
            self.normal += 1;
        } else if self.worst.is_none_or(|w| flag.precedence() > w.precedence()) {
            self.worst = Some(flag);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Series {
    code: Code,
    kind: AnalyzerKind,
    is_flow: bool,
    /// A batch analyzer: its samples carry the analyzer's `SampleTime`, and only a new time is a
    /// new measurement.
    batch: bool,
    last_sample_time: Option<DateTime>,
    /// A new measurement arrived since the last real-time record.
    fresh: bool,
    latest: Option<Sample>,
    latest_zs: Option<f64>,
    /// Samples of the open five-minute window (kept for [`FURNACE_TEMPERATURE`] only).
    five: MeanAccumulator,
    minute: Agg,
    block: Agg,
    hour: Agg,
    day: Agg,
}

#[derive(Debug, Clone, Copy)]
struct Facility {
    code: Code,
    rs: Option<u8>,
    current: Option<f64>,
    energy: Option<f64>,
    energy_day_start: Option<f64>,
    run_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Starts {
    /// The five-minute window of CN 2111.
    five: i64,
    minute: i64,
    block: i64,
    hour: i64,
    day: i64,
}

/// Per-pollutant aggregation across cycles, and the data messages it produces.
#[derive(Debug, Clone)]
pub struct Acquisition {
    config: AcquireConfig,
    series: Vec<Series>,
    facilities: Vec<Facility>,
    starts: Option<Starts>,
    last_ms: Option<u64>,
    last_rtd_ms: Option<u64>,
    /// The latest period start already reported, per granularity: after the clock is set back,
    /// periods at or before these are accumulated but never reported a second time.
    reported: Option<Starts>,
}

fn period_ms(t: &Time, minutes: i64) -> i64 {
    let ms = t.truncate(hj212_codec::time::TimeUnit::Minute).to_millis();
    ms - ms.rem_euclid(minutes * 60_000)
}

fn starts(t: &Time, min_interval: u8) -> Starts {
    let m = if min_interval > 0 && 60 % min_interval == 0 { i64::from(min_interval) } else { 1 };
    Starts {
        five: period_ms(t, 5),
        minute: period_ms(t, 1),
        block: period_ms(t, m),
        hour: period_ms(t, 60),
        day: period_ms(t, 1440),
    }
}

fn time_at(ms: i64) -> Time {
    Time::from_millis(ms).unwrap_or(Time { year: 1970, month: 1, day: 1, hour: 0, minute: 0, second: 0, millis: 0 })
}

impl Acquisition {
    /// An empty aggregator; the series of `profiles` are created now so that ingesting never
    /// allocates for them.
    pub fn new(config: AcquireConfig, profiles: &[&Profile<'_>]) -> Self {
        let mut a = Self {
            config,
            series: Vec::new(),
            facilities: Vec::new(),
            starts: None,
            last_ms: None,
            last_rtd_ms: None,
            reported: None,
        };
        for p in profiles {
            for point in p.points {
                if let Target::Pollutant(c) = point.target {
                    a.series_index(c);
                }
            }
            if let Some(rule) = p.facility {
                a.facility_index(rule.code);
            }
        }
        a
    }

    /// The settings.
    pub const fn config(&self) -> &AcquireConfig {
        &self.config
    }

    fn series_index(&mut self, code: Code) -> usize {
        if let Some(i) = self.series.iter().position(|s| s.code == code) {
            return i;
        }
        let kind = AnalyzerKind::of(code);
        let is_flow = code == self.config.water_flow || code == self.config.gas_flow;
        self.series.push(Series {
            code,
            kind,
            is_flow,
            latest: None,
            latest_zs: None,
            batch: false,
            last_sample_time: None,
            fresh: false,
            five: MeanAccumulator::default(),
            minute: Agg::default(),
            block: Agg::default(),
            hour: Agg::default(),
            day: Agg::default(),
        });
        self.series.len() - 1
    }

    fn facility_index(&mut self, code: Code) -> usize {
        if let Some(i) = self.facilities.iter().position(|f| f.code == code) {
            return i;
        }
        self.facilities.push(Facility {
            code,
            rs: None,
            current: None,
            energy: None,
            energy_day_start: None,
            run_ms: 0,
        });
        self.facilities.len() - 1
    }

    /// The latest sample of `code`.
    pub fn latest(&self, code: &str) -> Option<Sample> {
        self.series.iter().find(|s| s.code.as_str() == code).and_then(|s| s.latest)
    }

    /// Says which statistics periods were reported before this acquisition was made (the
    /// `DataTime` of the latest 2051, 2061 and 2031 kept, in civil milliseconds), so that a
    /// restart does not report a period a second time when the clock was set back before it.
    pub fn seed_reported(&mut self, block_ms: Option<i64>, hour_ms: Option<i64>, day_ms: Option<i64>) {
        const NONE: i64 = i64::MIN;
        let mut r = self.reported.unwrap_or(Starts { five: NONE, minute: NONE, block: NONE, hour: NONE, day: NONE });
        r.block = r.block.max(block_ms.unwrap_or(NONE));
        r.hour = r.hour.max(hour_ms.unwrap_or(NONE));
        r.day = r.day.max(day_ms.unwrap_or(NONE));
        self.reported = Some(r);
    }

    /// Sets `RtdInterval` (CN 1062) from now on; the open statistics periods go on. A value
    /// measured since the last real-time upload (a batch analyzer's new result) is kept for the
    /// next one.
    pub fn set_rtd_interval(&mut self, seconds: u32) {
        self.config.rtd_interval_s = seconds;
    }

    /// Feeds one cycle at civil time `now` and tick `now_ms`, and returns the records that came due:
    /// closed minute blocks (2051), hours (2061), days (2031, 2041), the facility power items (3020
    /// i33200–i33202, with each minute record) and, every `RtdInterval`, real-time data (2011) and
    /// facility states (2021); with HJ 212-2025, CN 2111 each five minutes and one CN 2013 per new
    /// batch measurement.
    ///
    /// The slice since the previous cycle is added to the open periods with the previous cycle's
    /// values, then the periods that ended are closed, then this cycle's samples start the new ones;
    /// so call it once per cycle, after the poll. Ingesting allocates only for codes not seen at construction and for messages.
    pub fn ingest(&mut self, now: Time, now_ms: u64, readings: &[Reading<'_>]) -> Vec<Message> {
        let mut out = Vec::new();
        let s = starts(&now, self.config.min_interval);
        let dt_ms = self.last_ms.map_or(0, |l| now_ms.saturating_sub(l).min(self.config.max_slice_ms));
        self.last_ms = Some(now_ms);
        self.add_slices(dt_ms);
        if let Some(prev) = self.starts {
            self.close(prev, s, &mut out);
        }
        self.starts = Some(s);
        self.add_samples(now, readings, &mut out);
        let due =
            self.last_rtd_ms.is_none_or(|l| now_ms.saturating_sub(l) >= u64::from(self.config.rtd_interval_s) * 1000);
        if due {
            self.last_rtd_ms = Some(now_ms);
            out.extend(self.realtime(now));
            for s in &mut self.series {
                s.fresh = false;
            }
            out.extend(self.facility_state(now));
        }
        out
    }

    /// Adds the slice `[last cycle, now)` to every open period, with the flow and concentrations of
    /// the last cycle (they held over the slice): (1), (8), (33).
    fn add_slices(&mut self, dt_ms: u64) {
        if dt_ms == 0 {
            return;
        }
        let dt_s = dt_ms as f64 / 1000.0;
        let valid_flags = self.config.valid_flags;
        let valid = |s: &Series| s.latest.filter(|x| valid_flags.contains(x.flag)).and_then(|x| x.value);
        let flow = |code: Code| self.series.iter().find(|s| s.code == code).and_then(valid);
        let water_q = flow(self.config.water_flow);
        let gas_q = flow(self.config.gas_flow);
        for ser in &mut self.series {
            let (d, factor) = match ser.kind {
                AnalyzerKind::Water => (water_q.map(|q| slice_volume_m3(q, dt_s)), 1.0),
                AnalyzerKind::Gas => (gas_q.map(|q| q * dt_s), 1e-3),
            };
            let Some(d) = d else { continue };
            let c = if ser.is_flow { None } else { valid(ser) };
            for agg in [&mut ser.minute, &mut ser.block, &mut ser.hour, &mut ser.day] {
                agg.volume.add(d);
                agg.n_flow += 1;
                if let Some(c) = c {
                    // (8): water kg = m³ · mg/L · 10⁻³; (33): gas kg = m³ · mg/m³ · 10⁻⁶.
                    agg.load.add(slice_load_kg(d, c) * factor);
                }
            }
        }
        for f in &mut self.facilities {
            if f.rs == Some(1) {
                f.run_ms += dt_ms;
            }
        }
    }

    fn add_samples(&mut self, now: Time, readings: &[Reading<'_>], out: &mut Vec<Message>) {
        let valid_flags = self.config.valid_flags;
        let o2 = self.config.zs.as_ref().and_then(|z| {
            readings
                .iter()
                .flat_map(Reading::samples)
                .find(|s| s.code == z.o2_code && valid_flags.contains(s.flag))?
                .value
        });
        for r in readings {
            for smp in r.samples() {
                let i = self.series_index(smp.code);
                let zs = match &self.config.zs {
                    Some(z) if z.codes.contains(&smp.code) => {
                        smp.value.zip(o2).and_then(|(c, o)| converted(c, o, z.reference))
                    }
                    _ => None,
                };
                let ser = &mut self.series[i];
                if smp.sample_time.is_some() || ser.batch {
                    ser.batch = true;
                    let new = smp.value.is_some() && smp.sample_time.is_some_and(|t| ser.last_sample_time != Some(t));
                    if !new {
                        // The same measurement again, or none: nothing to add.
                        continue;
                    }
                    ser.last_sample_time = smp.sample_time;
                    ser.fresh = true;
                    ser.latest = Some(smp);
                    ser.latest_zs = zs;
                    if self.config.hj212_2025 {
                        out.extend(raw_record(&self.config, r, &smp, now));
                    }
                    let value = smp.value.unwrap_or(f64::NAN);
                    for agg in [&mut ser.minute, &mut ser.block, &mut ser.hour, &mut ser.day] {
                        agg.note_flag(smp.flag);
                    }
                    // One measurement counts once, in every period it falls in (no 1-minute means).
                    for agg in [&mut ser.block, &mut ser.hour, &mut ser.day] {
                        agg.mean.push(value, smp.flag, valid_flags);
                        if let Some(z) = zs {
                            agg.zs.push(z, smp.flag, valid_flags);
                        }
                    }
                    continue;
                }
                ser.latest = Some(smp);
                ser.latest_zs = zs;
                for agg in [&mut ser.minute, &mut ser.block, &mut ser.hour, &mut ser.day] {
                    agg.note_flag(smp.flag);
                }
                // Sample-level means: the 1-minute mean (23) and the MinInterval block (15).
                let value = smp.value.unwrap_or(f64::NAN);
                if self.config.hj212_2025 && ser.code == FURNACE_TEMPERATURE {
                    ser.five.push(value, smp.flag, valid_flags);
                }
                ser.minute.mean.push(value, smp.flag, valid_flags);
                ser.block.mean.push(value, smp.flag, valid_flags);
                if let Some(z) = zs {
                    ser.minute.zs.push(z, smp.flag, valid_flags);
                    ser.block.zs.push(z, smp.flag, valid_flags);
                }
            }
            if let Some(rule) = r.profile.facility {
                let i = self.facility_index(rule.code);
                let mut max_i = None::<f64>;
                let mut energy = None;
                if r.comm.is_ok() {
                    for (p, v) in r.profile.points.iter().zip(r.values) {
                        match (p.target, v.and_then(|v| v.as_f64())) {
                            (Target::Facility(FacilityQuantity::Current(_)), Some(a)) => {
                                max_i = Some(max_i.map_or(a, |m| m.max(a)));
                            }
                            (Target::Facility(FacilityQuantity::Energy), Some(e)) => energy = Some(e),
                            _ => {}
                        }
                    }
                }
                let f = &mut self.facilities[i];
                f.rs = max_i.map(|a| rule.running_status(a));
                f.current = max_i;
                if energy.is_some() {
                    f.energy = energy;
                    if f.energy_day_start.is_none() {
                        f.energy_day_start = energy;
                    }
                }
            }
        }
    }

    fn close(&mut self, prev: Starts, now: Starts, out: &mut Vec<Message>) {
        let v = self.config.validity;
        let valid_flags = self.config.valid_flags;
        // A period is reported once: when the clock was set back, a period that closes again is
        // not sent a second time (its values are dropped), and neither is an earlier one.
        const NONE: i64 = i64::MIN;
        let rep = self.reported.unwrap_or(Starts { five: NONE, minute: NONE, block: NONE, hour: NONE, day: NONE });
        let fresh = |reported: i64, start: i64| start > reported;
        let mut now_reported = rep;
        if prev.five != now.five {
            if self.config.hj212_2025 && fresh(rep.five, prev.five) {
                out.extend(self.furnace_record(time_at(prev.five)));
                now_reported.five = prev.five;
            }
            for s in &mut self.series {
                s.five = MeanAccumulator::default();
            }
        }
        if prev.minute != now.minute {
            for s in &mut self.series {
                if s.batch {
                    s.minute = Agg::default();
                    continue;
                }
                let m = s.minute.mean.finish(v.samples_per_minute);
                let flag = if m.avg.is_some() { Flag::N } else { s.minute.worst.unwrap_or(Flag::B) };
                let zs = s.minute.zs.finish(v.samples_per_minute).avg;
                s.hour.mean.push(m.avg.unwrap_or(f64::NAN), flag, valid_flags);
                if let Some(z) = zs {
                    s.hour.zs.push(z, Flag::N, valid_flags);
                }
                s.minute = Agg::default();
            }
        }
        if prev.block != now.block {
            if fresh(rep.block, prev.block) {
                out.push(self.record(Command::MinuteData, time_at(prev.block), |s| &s.block, 1));
                now_reported.block = prev.block;
            }
            for s in &mut self.series {
                s.block = Agg::default();
            }
            out.extend(self.power_items(time_at(now.block)));
        }
        if prev.hour != now.hour {
            if fresh(rep.hour, prev.hour) {
                out.push(self.record(Command::HourlyData, time_at(prev.hour), |s| &s.hour, v.minutes_per_hour));
                now_reported.hour = prev.hour;
            }
            for s in &mut self.series {
                if s.batch {
                    s.hour = Agg::default();
                    continue;
                }
                let h = s.hour.mean.finish(v.minutes_per_hour);
                let flag = if h.avg.is_some() { Flag::N } else { s.hour.worst.unwrap_or(Flag::B) };
                s.day.mean.push(h.avg.unwrap_or(f64::NAN), flag, valid_flags);
                if let Some(z) = s.hour.zs.finish(v.minutes_per_hour).avg {
                    s.day.zs.push(z, Flag::N, valid_flags);
                }
                s.hour = Agg::default();
            }
        }
        if prev.day != now.day {
            if fresh(rep.day, prev.day) {
                out.push(self.record(Command::DailyData, time_at(prev.day), |s| &s.day, v.hours_per_day));
                out.push(self.run_times(time_at(prev.day)));
                now_reported.day = prev.day;
            }
            for s in &mut self.series {
                s.day = Agg::default();
            }
            for f in &mut self.facilities {
                f.run_ms = 0;
                f.energy_day_start = f.energy;
            }
        }
        self.reported = Some(now_reported);
    }

    fn record(&self, cn: Command, start: Time, agg: impl Fn(&Series) -> &Agg, min_valid: u32) -> Message {
        let mut items = Vec::new();
        for s in &self.series {
            let a = agg(s);
            if a.total == 0 {
                continue;
            }
            // A batch analyzer's period mean is over its measurements: one is enough.
            let min_valid = if s.batch { 1 } else { min_valid };
            let sum = a.mean.finish(min_valid);
            let dec = decimals_for(s.code.as_str(), self.config.default_decimals);
            let mut fields: Vec<(String, String)> = Vec::new();
            let cou = if s.is_flow {
                (a.n_flow > 0).then(|| a.volume.value())
            } else {
                (a.n_flow > 0).then(|| a.load.value())
            };
            if let Some(c) = cou {
                fields.push(("Cou".into(), format_decimal(c, self.config.cou_decimals)));
            }
            let avg = match (s.kind, self.config.water_mean, sum.avg) {
                (AnalyzerKind::Water, WaterMean::FlowWeighted, Some(avg)) if !s.is_flow => {
                    // (12)–(14): C = G / D · 10³ (mg/L), when the period had flow.
                    let d = a.volume.value();
                    if d > 0.0 { Some(a.load.value() / d * 1e3) } else { Some(avg) }
                }
                (_, _, avg) => avg,
            };
            for (k, v) in [("Min", sum.min), ("Avg", avg), ("Max", sum.max)] {
                if let Some(v) = v {
                    fields.push((k.into(), format_decimal(v, dec)));
                }
            }
            let zs = a.zs.finish(min_valid);
            if zs.valid > 0 {
                for (k, v) in [("ZsMin", zs.min), ("ZsAvg", zs.avg), ("ZsMax", zs.max)] {
                    if let Some(v) = v {
                        fields.push((k.into(), format_decimal(v, dec)));
                    }
                }
            }
            let flag = if sum.avg.is_none() {
                a.worst.unwrap_or(match s.kind {
                    AnalyzerKind::Gas => Flag::D,
                    AnalyzerKind::Water => Flag::B,
                })
            } else {
                match s.kind {
                    AnalyzerKind::Water => aggregate_flag_water(a.worst),
                    AnalyzerKind::Gas => aggregate_flag_gas(a.normal, a.total),
                }
            };
            fields.push(("Flag".into(), flag.as_char().into()));
            items.push(DataItem { code: s.code.as_str().into(), fields });
        }
        Message::Data { cn, data_time: start, items }
    }

    /// The provisional HJ 212-2025 CN 2111 record of the five-minute window starting at `start`:
    /// `a01901-Avg`, the mean of its valid samples (digest §5.1 C31 gives no flag). `None` when the
    /// window had no valid sample or no furnace point.
    fn furnace_record(&self, start: Time) -> Option<Message> {
        let s = self.series.iter().find(|s| s.code == FURNACE_TEMPERATURE)?;
        let avg = s.five.finish(1).avg?;
        let dec = decimals_for(s.code.as_str(), self.config.default_decimals);
        Some(Message::Data {
            cn: Command::FurnaceTemperature,
            data_time: start,
            items: alloc::vec![DataItem {
                code: s.code.as_str().into(),
                fields: alloc::vec![("Avg".into(), format_decimal(avg, dec))],
            }],
        })
    }

    fn realtime(&self, now: Time) -> Option<Message> {
        let mut items = Vec::new();
        for s in &self.series {
            let Some(smp) = s.latest else { continue };
            if s.batch && !s.fresh {
                continue;
            }
            let dec = decimals_for(s.code.as_str(), self.config.default_decimals);
            let mut fields: Vec<(String, String)> = Vec::new();
            if let Some(v) = smp.value {
                fields.push(("Rtd".into(), format_decimal(v, dec)));
            }
            if let Some(z) = s.latest_zs {
                fields.push(("ZsRtd".into(), format_decimal(z, dec)));
            }
            fields.push(("Flag".into(), smp.flag.as_char().into()));
            if let Some(t) = smp.sample_time {
                let mut n14 = [0u8; 14];
                t.write_hj212(&mut n14);
                fields.push(("SampleTime".into(), core::str::from_utf8(&n14).unwrap_or("").into()));
            }
            items.push(DataItem { code: s.code.as_str().into(), fields });
        }
        (!items.is_empty()).then_some(Message::Data { cn: Command::RealTimeData, data_time: now, items })
    }

    fn facility_state(&self, now: Time) -> Option<Message> {
        let items: Vec<DataItem> = self
            .facilities
            .iter()
            .filter_map(|f| {
                f.rs.map(|rs| DataItem {
                    code: f.code.as_str().into(),
                    fields: alloc::vec![("RS".into(), alloc::format!("{rs}"))],
                })
            })
            .collect();
        (!items.is_empty()).then_some(Message::Data { cn: Command::FacilityState, data_time: now, items })
    }

    fn run_times(&self, day: Time) -> Message {
        let items = self
            .facilities
            .iter()
            .map(|f| DataItem {
                code: f.code.as_str().into(),
                // SBn-RT, N2.2 hours of the day (Table 4).
                fields: alloc::vec![("RT".into(), format_decimal(f.run_ms as f64 / 3_600_000.0, 2))],
            })
            .collect();
        Message::Data { cn: Command::DailyRunTime, data_time: day, items }
    }

    /// i33200 current (N4.2), i33201 cumulative energy (N13) and i33202 energy of the day so far
    /// (N7), Table B.10, as one CN 3020 without PolId (C.40 note: no analyzer), stamped `at` (the
    /// end of the minute block; the values are the block's last reading).
    fn power_items(&self, at: Time) -> Option<Message> {
        let f = self.facilities.first()?;
        let mut items = Vec::new();
        if let Some(a) = f.current {
            items.push(InfoItem { code: "i33200".into(), value: format_decimal(a, 2) });
        }
        if let Some(e) = f.energy {
            items.push(InfoItem { code: "i33201".into(), value: format_decimal(e, 0) });
            let day = crate::stats::daily_energy_kwh(e, f.energy_day_start.unwrap_or(e));
            items.push(InfoItem { code: "i33202".into(), value: format_decimal(day, 0) });
        }
        (!items.is_empty()).then_some(Message::SiteInfo { data_time: at, pol_id: None, items })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_follow_appendix_b() {
        assert_eq!(decimals_for("w01018", 3), 1); // N5.1
        assert_eq!(decimals_for("w00000", 3), 2); // N5.2
        assert_eq!(decimals_for("a34013", 3), 0); // N4
        assert_eq!(decimals_for("zzz", 3), 3);
        assert_eq!(format_decimal(-0.0001, 2), "0.00");
        assert_eq!(format_decimal(41.25, 1), "41.2");
    }

    fn field<'m>(m: &'m Message, code: &str, suffix: &str) -> Option<&'m str> {
        let Message::Data { items, .. } = m else { return None };
        items.iter().find(|i| i.code == code)?.get(suffix)
    }

    /// Flue gas: (28) converted values, (33) emission, and an hour below 45 valid minutes → D.
    #[test]
    fn flue_gas_zs_cou_and_invalid_hour() {
        use crate::profile::builtin::FLUE_GAS_CEMS;
        // Points: SO2, NOx, O2, humidity, status, dust, temperature, pressure, velocity, flow.
        let values = [100.0, 50.0, 9.0, 5.0, 1.0, 10.0, 120.0, 0.1, 12.0, 10.0].map(|v| Some(Value::Number(v)));
        let cfg = AcquireConfig {
            validity: GasValidity { samples_per_minute: 1, ..GasValidity::default() },
            zs: Some(ZsConfig {
                reference: Reference::O2(6.0),
                o2_code: Code::new("a19001"),
                codes: alloc::vec![Code::new("a21026")],
            }),
            ..AcquireConfig::default()
        };
        let mut acq = Acquisition::new(cfg, &[&FLUE_GAS_CEMS]);
        let t0 = Time { year: 2024, month: 1, day: 1, hour: 8, minute: 0, second: 0, millis: 0 }.to_millis();
        let at = |ms: u64| Time::from_millis(t0 + ms as i64).unwrap();
        let r = Reading::new(&FLUE_GAS_CEMS, &values, CommState::Ok);
        let out = acq.ingest(at(0), 0, &[r]);
        // (28): 100 · (21 − 6) / (21 − 9) = 125 mg/m³.
        assert_eq!(field(&out[0], "a21026", "ZsRtd"), Some("125.00"));
        let mut all = Vec::new();
        for m in 1..=10u64 {
            all.extend(acq.ingest(at(m * 60_000), m * 60_000, &[r]));
        }
        // Jump to 09:00: the 08:00 hour has 10 valid minutes.
        all.extend(acq.ingest(at(3_600_000), 3_600_000, &[r]));
        let block = all.iter().find(|m| m.cn() == 2051).unwrap();
        // (33): 10 slices of 60 s · 10 m³/s = 6000 m³; SO2 100 mg/m³ · 6000 m³ · 10⁻⁶ = 0.6 kg.
        assert_eq!(field(block, "a00000", "Cou"), Some("6000.000"));
        assert_eq!(field(block, "a21026", "Cou"), Some("0.600"));
        assert_eq!(field(block, "a21026", "ZsAvg"), Some("125.00"));
        let hour = all.iter().find(|m| m.cn() == 2061).unwrap();
        assert_eq!(field(hour, "a21026", "Avg"), None);
        assert_eq!(field(hour, "a21026", "Flag"), Some("D"));
    }
}
