//! The simulated analyzers, polled by the blocking master on the in-memory RS-485 line with a manual
//! clock, through acquisition (flags, aggregation) and dynamic control (3020 / 2062); every message
//! produced is encoded and decoded back strictly with the codec.

mod common;

use common::{DePin, Delay, Port, Shared, line};
use firmware::acquire::{AcquireConfig, Acquisition, COMPLETE_TIME, Reading, SAMPLE_TYPE, decode_block};
use firmware::dynamic::{DynamicConfig, HEBEI, NATIONAL, Tracker};
use firmware::modbus::{
    CoalesceConfig, HealthConfig, HealthTable, Master, MasterConfig, ReadBlock, Response, coalesce_vec,
};
use firmware::profile::builtin::{ENERGY_METER, FLOW_METER, FLUE_GAS_CEMS, INCINERATOR_FURNACE, SURFACE_WATER_COD};
use firmware::profile::{
    ByteOrder, Code, DateTime as PDateTime, OwnedProfile, PointSpec, Profile, Target, Value, ValueType,
};
use firmware::sim::{Fault, Simulator};
use firmware::stats::{Flag, GasValidity};
use hj212_codec::codes::Command;
use hj212_codec::message::{Header, Message};
use hj212_codec::time::DateTime as Time;
use hj212_codec::{CrcVariant, DecodeOptions, Decoded, Flag as HFlag, Split, SplitConfig, Splitter, Version};

const BAUD: u32 = 9600;
const COD: Target = Target::Pollutant(Code::new("w01018"));
const FLOW: Target = Target::Pollutant(Code::new("w00000"));
const SLOPE: Target = Target::Info(Code::new("i13008"));
/// 2024-01-01 08:00:00 in the codec's millisecond scale.
fn t0() -> i64 {
    Time { year: 2024, month: 1, day: 1, hour: 8, minute: 0, second: 0, millis: 0 }.to_millis()
}

fn at(ms: u64) -> Time {
    Time::from_millis(t0() + ms as i64).unwrap()
}

/// A bus with the given profiles on one simulated line (the simulator serves their union).
struct Rig {
    master: Master<Port, DePin, Delay>,
    line: Shared,
    profiles: Vec<OwnedProfile>,
    blocks: Vec<ReadBlock>,
    health: HealthTable<8>,
}

impl Rig {
    fn new(profiles: &[&Profile<'_>]) -> Self {
        let owned: Vec<OwnedProfile> = profiles.iter().map(|p| OwnedProfile::from_profile(p)).collect();
        let mut union = OwnedProfile::from_profile(profiles[0]);
        union.points = owned.iter().flat_map(|p| p.points.clone()).collect();
        let sim = Simulator::new(&union.as_profile());
        let l = line(sim, BAUD);
        let mut cfg = MasterConfig::new(BAUD);
        cfg.response_timeout_us = 1_000_000;
        let points: Vec<ReadBlock> = union.points.iter().map(PointSpec::block).collect();
        let blocks = coalesce_vec(&points, &CoalesceConfig { max_gap: 64, ..Default::default() }).unwrap();
        Self {
            master: Master::new(Port(l.clone()), DePin(l.clone()), Delay(l.clone()), cfg),
            line: l,
            profiles: owned,
            blocks,
            health: HealthTable::new(HealthConfig { failures_before_backoff: 3, backoff_ms: 30_000 }),
        }
    }

    fn sim(&self) -> std::cell::RefMut<'_, Simulator> {
        std::cell::RefMut::map(self.line.borrow_mut(), |l| &mut l.sims[0])
    }

    fn set(&self, target: Target, v: Value) {
        assert!(self.sim().set(&target, v), "{target:?}");
    }

    /// One poll cycle: the decoded values of each profile.
    fn poll(&mut self, now_ms: u64) -> Vec<Vec<Option<Value>>> {
        let mut values: Vec<Vec<Option<Value>>> = self.profiles.iter().map(|p| vec![None; p.points.len()]).collect();
        let profiles = &self.profiles;
        self.master.poll_cycle(&self.blocks, &mut self.health, now_ms, |b, r| {
            if let Ok(Response::Registers(regs)) = r {
                let mut buf = [0u16; 125];
                let n = regs.copy_to(&mut buf);
                for (p, v) in profiles.iter().zip(values.iter_mut()) {
                    decode_block(&p.points, b, &buf[..n], v);
                }
            }
        });
        values
    }

    fn comm(&self, i: usize) -> firmware::modbus::CommState {
        self.health.state(self.profiles[i].points[0].unit)
    }
}

/// Encodes `m` into a frame and decodes it back strictly; the message must survive unchanged.
fn round_trip(m: &Message) {
    let v2025 = [Command::StandardCheckData, Command::RawData, Command::FurnaceTemperature];
    let version = if v2025.iter().any(|c| c.value() == m.cn()) { Version::V2025 } else { Version::V2017 };
    let header = Header {
        qn: Some("20240101080000000"),
        st: "32",
        pw: "123456",
        mn: "010000A8900016F000169DC0",
        flag: Some(HFlag::new(version, false, true)),
    };
    let frame = m.to_packet(&header).to_frame(CrcVariant::Hj212).expect("encodes");
    let splitter = Splitter::new(SplitConfig::default());
    let Split::Frame(raw) = splitter.split(&frame, true) else {
        panic!("no frame in {}", String::from_utf8_lossy(&frame))
    };
    assert_eq!(raw.len(), frame.len());
    let decoded = Decoded::new(raw, DecodeOptions::STRICT);
    let packet = decoded.verdict().unwrap_or_else(|e| panic!("{e:?} in {}", String::from_utf8_lossy(&frame)));
    assert_eq!(&Message::from_packet(&packet).unwrap(), m, "{}", String::from_utf8_lossy(&frame));
}

type Info<'m> = (&'m Option<String>, Vec<(String, String)>);

fn site_info(msgs: &[Message]) -> Vec<Info<'_>> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::SiteInfo { pol_id, items, .. } => {
                Some((pol_id, items.iter().map(|i| (i.code.clone(), i.value.clone())).collect()))
            }
            _ => None,
        })
        .collect()
}

fn data(msgs: &[Message], cn: Command) -> Option<&Message> {
    msgs.iter().find(|m| matches!(m, Message::Data { cn: c, .. } if *c == cn))
}

fn field<'m>(m: &'m Message, code: &str, suffix: &str) -> Option<&'m str> {
    let Message::Data { items, .. } = m else { return None };
    items.iter().find(|i| i.code == code)?.get(suffix)
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

/// One cycle of dynamic control for the rig's first profile.
fn dyn_cycle(rig: &mut Rig, tracker: &mut Tracker, cfg: &DynamicConfig<'_>, now_ms: u64) -> Vec<Message> {
    let values = rig.poll(now_ms);
    let profile = rig.profiles[0].as_profile();
    let reading = Reading::new(&profile, &values[0], rig.comm(0));
    let out = tracker.update(cfg, &reading, at(now_ms), now_ms);
    out.iter().for_each(round_trip);
    out
}

#[test]
fn slope_change_gives_exactly_one_3020_national_and_hebei() {
    for (table, code) in [(NATIONAL, "i13008"), (HEBEI, "i13008")] {
        let mut rig = Rig::new(&[&SURFACE_WATER_COD]);
        rig.set(Target::Status, Value::Code(1));
        rig.set(SLOPE, Value::Number(1.0));
        let cfg = DynamicConfig { table, ..DynamicConfig::default() };
        let mut tracker = Tracker::new(&rig.profiles[0].as_profile(), None);
        // Cycle 0: the first full snapshot.
        let first = dyn_cycle(&mut rig, &mut tracker, &cfg, 0);
        let snap = site_info(&first);
        assert_eq!(snap.len(), 1);
        assert!(snap[0].1.contains(&(code.to_string(), "1".to_string())), "{:?}", snap[0].1);
        // Cycle 1: nothing changed, nothing sent.
        assert!(dyn_cycle(&mut rig, &mut tracker, &cfg, 60_000).is_empty());
        // The slope register moves: exactly one 3020 carrying just the slope, PolId = the analyzer.
        rig.set(SLOPE, Value::Number(1.25));
        let out = dyn_cycle(&mut rig, &mut tracker, &cfg, 120_000);
        assert_eq!(out.len(), 1);
        let info = site_info(&out);
        assert_eq!(info, vec![(&Some("w01018".to_string()), pairs(&[(code, "1.25")]))]);
        assert!(dyn_cycle(&mut rig, &mut tracker, &cfg, 180_000).is_empty(), "reported once");
        // An f32 round-off below the deadband is no change.
        rig.set(SLOPE, Value::Number(1.250_000_1));
        assert!(dyn_cycle(&mut rig, &mut tracker, &cfg, 240_000).is_empty());
    }
}

#[test]
fn gas_analyzer_slope_uses_the_gas_code_of_the_table() {
    // The CEMS profile plus a slope register on the gas analyzer (unit 7), named by its key.
    let mut cems = OwnedProfile::from_profile(&FLUE_GAS_CEMS);
    let slope = Target::Info(Code::new("Slope"));
    cems.points.push(PointSpec {
        unit: 7,
        function: firmware::modbus::FunctionCode::ReadInputRegisters,
        address: 0x0214,
        value: ValueType::F32,
        order: ByteOrder::CDAB,
        scale: 1.0,
        offset: 0.0,
        target: slope,
    });
    for (table, code) in [(NATIONAL, "i13008"), (HEBEI, "i13026")] {
        let mut rig = Rig::new(&[&cems.as_profile()]);
        rig.set(Target::Status, Value::Code(1));
        rig.set(slope, Value::Number(0.98));
        let cfg = DynamicConfig { table, ..DynamicConfig::default() };
        let mut tracker = Tracker::new(&rig.profiles[0].as_profile(), None);
        dyn_cycle(&mut rig, &mut tracker, &cfg, 0);
        rig.set(slope, Value::Number(1.02));
        let out = dyn_cycle(&mut rig, &mut tracker, &cfg, 60_000);
        assert_eq!(site_info(&out), vec![(&Some("a21026".to_string()), pairs(&[(code, "1.02")]))]);
    }
}

#[test]
fn calibration_and_comm_failure_reach_3020_and_the_flags() {
    let mut rig = Rig::new(&[&SURFACE_WATER_COD]);
    rig.set(Target::Status, Value::Code(1));
    rig.set(COD, Value::Number(42.5));
    let cfg = DynamicConfig::default();
    let mut tracker = Tracker::new(&rig.profiles[0].as_profile(), None);
    let profile = rig.profiles[0].as_profile();
    let mut acq = Acquisition::new(AcquireConfig::default(), &[&profile]);
    let mut cycle = |rig: &mut Rig, now_ms: u64| {
        let values = rig.poll(now_ms);
        let profile = rig.profiles[0].as_profile();
        let reading = Reading::new(&profile, &values[0], rig.comm(0));
        let mut out = tracker.update(&cfg, &reading, at(now_ms), now_ms);
        out.extend(acq.ingest(at(now_ms), now_ms, &[reading]));
        out.iter().for_each(round_trip);
        out
    };
    let out = cycle(&mut rig, 0);
    let rtd = data(&out, Command::RealTimeData).unwrap();
    assert_eq!((field(rtd, "w01018", "Rtd"), field(rtd, "w01018", "Flag")), (Some("42.5"), Some("N")));

    // Standard calibration (status 9 in the surface-water map): i12001 = 3 and data flagged C.
    rig.set(Target::Status, Value::Code(9));
    let out = cycle(&mut rig, 30_000);
    assert_eq!(site_info(&out), vec![(&Some("w01018".to_string()), pairs(&[("i12001", "3")]))]);
    assert_eq!(field(data(&out, Command::RealTimeData).unwrap(), "w01018", "Flag"), Some("C"));

    // Back to measuring, then the analyzer stops answering: i12002 = 1 and flag B without a value.
    rig.set(Target::Status, Value::Code(1));
    let out = cycle(&mut rig, 60_000);
    assert_eq!(site_info(&out)[0].1, pairs(&[("i12001", "7")]));
    rig.sim().set_fault(Some(Fault::NoAnswer));
    let out = cycle(&mut rig, 90_000);
    assert_eq!(site_info(&out), vec![(&Some("w01018".to_string()), pairs(&[("i12002", "1")]))]);
    let rtd = data(&out, Command::RealTimeData).unwrap();
    assert_eq!((field(rtd, "w01018", "Rtd"), field(rtd, "w01018", "Flag")), (None, Some("B")));
    // While it stays down nothing else changes (unknown values are not changes).
    assert!(site_info(&cycle(&mut rig, 120_000)).is_empty());
    // It answers again: i12002 = 0.
    rig.sim().set_fault(None);
    let out = cycle(&mut rig, 200_000);
    assert_eq!(site_info(&out)[0].1, pairs(&[("i12002", "0")]));
}

#[test]
fn hebei_state_codes_and_periodic_snapshot() {
    let mut rig = Rig::new(&[&SURFACE_WATER_COD]);
    rig.set(Target::Status, Value::Code(1));
    rig.set(Target::Info(Code::new("i13006")), Value::Time(PDateTime::new(2023, 12, 31, 9, 0, 0).unwrap()));
    let cfg = DynamicConfig { table: HEBEI, snapshot_interval_ms: 600_000, ..DynamicConfig::default() };
    let mut tracker = Tracker::new(&rig.profiles[0].as_profile(), None);
    let first = dyn_cycle(&mut rig, &mut tracker, &cfg, 0);
    let codes: Vec<String> = site_info(&first)[0].1.iter().map(|(c, _)| c.clone()).collect();
    // Hebei water state, national comms, Hebei alarm, then the parameters (range as i13116).
    for c in ["i12101", "i12002", "i12102", "i13003", "i13116", "i13008", "i13007", "i13107"] {
        assert!(codes.contains(&c.to_string()), "{c} in {codes:?}");
    }
    rig.set(Target::Status, Value::Code(9));
    assert_eq!(site_info(&dyn_cycle(&mut rig, &mut tracker, &cfg, 60_000))[0].1, pairs(&[("i12101", "5")]));
    assert!(dyn_cycle(&mut rig, &mut tracker, &cfg, 300_000).is_empty());
    let snap = dyn_cycle(&mut rig, &mut tracker, &cfg, 600_000);
    assert_eq!(site_info(&snap)[0].1.len(), codes.len(), "the periodic snapshot is complete");
}

#[test]
fn standard_check_gives_2062_under_2025_and_hebei_items() {
    // The shipped surface-water profile reads the standard-sample record: reference 0x1003, time
    // 0x1010, result 0x1013.
    let (chk_ref, chk_time, chk_read) =
        (Target::Info(Code::new("ChkRef")), Target::Info(Code::new("ChkTime")), Target::Info(Code::new("ChkRead")));
    for (table, hj2025) in [(HEBEI, true), (NATIONAL, true), (HEBEI, false)] {
        let mut rig = Rig::new(&[&SURFACE_WATER_COD]);
        rig.set(Target::Status, Value::Code(1));
        rig.set(chk_ref, Value::Number(50.0));
        rig.set(chk_read, Value::Number(49.0));
        rig.set(chk_time, Value::Time(PDateTime::new(2024, 1, 1, 6, 0, 0).unwrap()));
        let cfg = DynamicConfig { table, hj212_2025: hj2025, ..DynamicConfig::default() };
        let mut tracker = Tracker::new(&rig.profiles[0].as_profile(), None);
        let first = dyn_cycle(&mut rig, &mut tracker, &cfg, 0);
        assert!(data(&first, Command::StandardCheckData).is_none(), "no check completed since start");
        // A new check: 56.0 against 50.0 is +12 %, beyond the 10 % tolerance: fail.
        rig.set(chk_read, Value::Number(56.0));
        rig.set(chk_time, Value::Time(PDateTime::new(2024, 1, 1, 8, 30, 0).unwrap()));
        let out = dyn_cycle(&mut rig, &mut tracker, &cfg, 60_000);
        let info = site_info(&out);
        if table == HEBEI {
            assert_eq!(info[0].1, pairs(&[("i13128", "20240101083000"), ("i13129", "12.0")]));
        } else {
            assert!(info.is_empty(), "no national code for check data: {info:?}");
        }
        let chk = data(&out, Command::StandardCheckData);
        if hj2025 {
            let chk = chk.unwrap();
            let Message::Data { data_time, .. } = chk else { unreachable!() };
            assert_eq!(data_time.to_string(), "20240101083000");
            assert_eq!(field(chk, "w01018", "SampleRd"), Some("56.0"));
            assert_eq!(field(chk, "w01018", "StandardValue"), Some("50.0"));
            assert_eq!(field(chk, "w01018", "ResultType"), Some("0"));
        } else {
            assert!(chk.is_none());
        }
    }
}

/// HJ 212-2017 Appendix D over one hour of 1-minute polls of a COD analyzer and a flow meter.
///
/// COD at minute i is 40 + (i mod 10) mg/L; flow is 2.00 L/s throughout. Hand computation:
/// - Avg (16), arithmetic over the 60 valid 1-minute means: 6 · (40 + … + 49) / 60 = 44.5;
///   Min 40.0, Max 49.0.
/// - Flow Cou (1)–(3): 60 slices of 60 s · 2 L/s · 10⁻³ = 0.12 m³ each: 7.2 m³.
/// - COD Cou (8)–(10): Σ 0.12 m³ · cᵢ · 10⁻³ kg = 0.12 · 2670 · 10⁻³ = 0.3204 kg.
/// - Flow Avg: (6) with the 10³ restored, 7.2 m³ / 3600 s · 10³ = 2.00 L/s.
///
/// The next hour has 44 normal minutes and 16 in calibration: fewer than 45 valid minutes (24),
/// domain notes §6.2.2, so no Avg and the period flag is C (the worst abnormal flag seen).
#[test]
fn hourly_aggregation_matches_appendix_d_and_the_45_minute_rule() {
    let mut rig = Rig::new(&[&SURFACE_WATER_COD, &FLOW_METER, &ENERGY_METER]);
    rig.set(Target::Status, Value::Code(1));
    rig.set(FLOW, Value::Number(2.0));
    for (phase, a) in [(1u8, 5.0), (2, 1.0), (3, 0.5)] {
        rig.set(Target::Facility(firmware::profile::FacilityQuantity::Current(phase)), Value::Number(a));
    }
    rig.set(Target::Facility(firmware::profile::FacilityQuantity::Energy), Value::Number(1000.0));
    let cfg = AcquireConfig {
        rtd_interval_s: 60,
        validity: GasValidity { samples_per_minute: 1, minutes_per_hour: 45, hours_per_day: 20 },
        cou_decimals: 4,
        ..AcquireConfig::default()
    };
    let profiles: Vec<OwnedProfile> = rig.profiles.clone();
    let views: Vec<Profile<'_>> = profiles.iter().map(OwnedProfile::as_profile).collect();
    let mut acq = Acquisition::new(cfg, &views.iter().collect::<Vec<_>>());
    let mut all = Vec::new();
    for minute in 0..=120u64 {
        let now_ms = minute * 60_000;
        let m = minute % 60;
        if minute < 60 {
            rig.set(COD, Value::Number(40.0 + (m % 10) as f64));
        } else {
            rig.set(COD, Value::Number(45.0));
            rig.set(Target::Status, Value::Code(if m >= 44 { 9 } else { 1 }));
        }
        rig.set(Target::Facility(firmware::profile::FacilityQuantity::Energy), Value::Number(1000.0 + minute as f64));
        let values = rig.poll(now_ms);
        let readings: Vec<Reading<'_>> =
            views.iter().zip(&values).enumerate().map(|(i, (p, v))| Reading::new(p, v, rig.comm(i))).collect();
        let out = acq.ingest(at(now_ms), now_ms, &readings);
        out.iter().for_each(round_trip);
        all.extend(out);
    }
    let hours: Vec<&Message> =
        all.iter().filter(|m| matches!(m, Message::Data { cn: Command::HourlyData, .. })).collect();
    assert_eq!(hours.len(), 2);
    let h = hours[0];
    let Message::Data { data_time, .. } = h else { unreachable!() };
    assert_eq!(data_time.to_string(), "20240101080000", "DataTime is the period start");
    let f = |code, suffix| field(h, code, suffix);
    assert_eq!(
        (f("w01018", "Min"), f("w01018", "Avg"), f("w01018", "Max")),
        (Some("40.0"), Some("44.5"), Some("49.0"))
    );
    assert_eq!((f("w01018", "Cou"), f("w01018", "Flag")), (Some("0.3204"), Some("N")));
    assert_eq!(
        (f("w00000", "Cou"), f("w00000", "Avg"), f("w00000", "Flag")),
        (Some("7.2000"), Some("2.00"), Some("N"))
    );

    let h = hours[1];
    assert_eq!(field(h, "w01018", "Avg"), None, "44 valid minutes: no hourly mean");
    assert_eq!(field(h, "w01018", "Flag"), Some("C"));
    assert_eq!(field(h, "w00000", "Flag"), Some("N"), "the flow meter was fine");

    // Minute records every 10 minutes, stamped with their start; the first block: 40..49, Avg 44.5.
    let minutes: Vec<&Message> =
        all.iter().filter(|m| matches!(m, Message::Data { cn: Command::MinuteData, .. })).collect();
    assert_eq!(minutes.len(), 12);
    let Message::Data { data_time, .. } = minutes[1] else { unreachable!() };
    assert_eq!(data_time.to_string(), "20240101081000");
    assert_eq!(field(minutes[0], "w01018", "Avg"), Some("44.5"));
    // Facility state: 5 A ≥ 2 A, running; power items with each minute record, as read in the
    // block's last cycle (08:09: 1009 kWh, 9 kWh since the day's first reading).
    let rs = data(&all, Command::FacilityState).unwrap();
    assert_eq!(field(rs, "SB1", "RS"), Some("1"));
    let power = site_info(&all);
    assert_eq!(power[0], (&None, pairs(&[("i33200", "5.00"), ("i33201", "1009"), ("i33202", "9")])));
}

#[test]
fn daily_records_and_run_time() {
    let mut rig = Rig::new(&[&SURFACE_WATER_COD, &ENERGY_METER]);
    rig.set(Target::Status, Value::Code(1));
    rig.set(COD, Value::Number(30.0));
    let cfg = AcquireConfig {
        rtd_interval_s: 3600,
        max_slice_ms: 1_800_000,
        validity: GasValidity { samples_per_minute: 1, minutes_per_hour: 1, hours_per_day: 20 },
        ..AcquireConfig::default()
    };
    let profiles: Vec<OwnedProfile> = rig.profiles.clone();
    let views: Vec<Profile<'_>> = profiles.iter().map(OwnedProfile::as_profile).collect();
    let mut acq = Acquisition::new(cfg, &views.iter().collect::<Vec<_>>());
    let mut all = Vec::new();
    // 08:00 to 00:00 the next day, one poll every 30 minutes; the facility runs from 08:00 to 14:00.
    for step in 0..=32u64 {
        let now_ms = step * 1_800_000;
        let amps = if step < 12 { 3.0 } else { 0.0 };
        rig.set(Target::Facility(firmware::profile::FacilityQuantity::Current(1)), Value::Number(amps));
        let values = rig.poll(now_ms);
        let readings: Vec<Reading<'_>> =
            views.iter().zip(&values).enumerate().map(|(i, (p, v))| Reading::new(p, v, rig.comm(i))).collect();
        let out = acq.ingest(at(now_ms), now_ms, &readings);
        out.iter().for_each(round_trip);
        all.extend(out);
    }
    // 16 valid hours of the day (08:00–24:00) < 20 (25): no daily mean.
    let day = data(&all, Command::DailyData).unwrap();
    let Message::Data { data_time, .. } = day else { unreachable!() };
    assert_eq!(data_time.to_string(), "20240101000000");
    assert_eq!(field(day, "w01018", "Avg"), None);
    assert_eq!(field(day, "w01018", "Min"), Some("30.0"));
    // Running 08:00–14:00 is 6.00 h (slices are counted with the state at their start).
    assert_eq!(field(data(&all, Command::DailyRunTime).unwrap(), "SB1", "RT"), Some("6.00"));
    assert_eq!(Flag::N.as_char(), 'N');
}

/// A batch analyzer (the surface-water COD reads its own `SampleTime`): a value is a new measurement
/// only when the time changes. It goes up in one real-time record, counts once in each period, and
/// a period's mean is over its measurements (the 45-minute rule is for continuous analyzers).
#[test]
fn batch_analyzer_value_is_reported_once_per_measurement() {
    let mut rig = Rig::new(&[&SURFACE_WATER_COD]);
    rig.set(Target::Status, Value::Code(1));
    let cfg = AcquireConfig {
        rtd_interval_s: 60,
        validity: GasValidity { samples_per_minute: 1, minutes_per_hour: 45, hours_per_day: 20 },
        ..AcquireConfig::default()
    };
    let owned = rig.profiles[0].clone();
    let profile = owned.as_profile();
    let mut acq = Acquisition::new(cfg, &[&profile]);
    let mut rtd = Vec::new();
    let mut all = Vec::new();
    for minute in 0..=70u64 {
        // A measurement every 20 minutes, finished 5 minutes before it is read: 30, 40, 50, 60 mg/L.
        if minute % 20 == 0 {
            let t = Time::from_millis(t0() + (minute as i64 * 60 - 300) * 1000).unwrap();
            let t = PDateTime::new(t.year, t.month, t.day, t.hour, t.minute, t.second).unwrap();
            rig.set(Target::SampleTime, Value::Time(t));
            rig.set(COD, Value::Number(30.0 + minute as f64 / 2.0));
        }
        let now_ms = minute * 60_000;
        let values = rig.poll(now_ms);
        let reading = Reading::new(&profile, &values[0], rig.comm(0));
        let out = acq.ingest(at(now_ms), now_ms, &[reading]);
        out.iter().for_each(round_trip);
        // The profile has no other pollutant: without a new measurement there is no 2011 at all.
        if let Some(m) = data(&out, Command::RealTimeData) {
            let f = |suffix| field(m, "w01018", suffix).map(String::from);
            rtd.push((minute, f("Rtd"), f("SampleTime")));
        }
        all.extend(out);
    }
    assert_eq!(
        rtd,
        vec![
            (0, Some("30.0".into()), Some("20240101075500".into())),
            (20, Some("40.0".into()), Some("20240101081500".into())),
            (40, Some("50.0".into()), Some("20240101083500".into())),
            (60, Some("60.0".into()), Some("20240101085500".into())),
        ]
    );
    let hour = data(&all, Command::HourlyData).unwrap();
    let f = |suffix| field(hour, "w01018", suffix);
    assert_eq!((f("Min"), f("Avg"), f("Max"), f("Flag")), (Some("30.0"), Some("40.0"), Some("50.0"), Some("N")));
    // Ten-minute blocks: 08:00 holds the first measurement; 08:10 none, so no COD item.
    let blocks: Vec<&Message> = all.iter().filter(|m| m.cn() == Command::MinuteData.value()).collect();
    assert_eq!(field(blocks[0], "w01018", "Avg"), Some("30.0"));
    let Message::Data { items, .. } = blocks[1] else { unreachable!() };
    assert!(items.iter().all(|i| i.code != "w01018"), "{items:?}");
}

/// A batch analyzer's new result read between two real-time uploads is kept for the next one:
/// polled every 10 s with `RtdInterval` 60 s, a result first read at 00:30 goes up at 01:00 with
/// its `SampleTime` (the gateway once paced uploads itself and dropped every result that did not
/// land on a due cycle). A CN 1062 that shortens the interval takes effect at once.
#[test]
fn a_batch_result_read_between_real_time_uploads_goes_up_with_the_next_one() {
    let mut rig = Rig::new(&[&SURFACE_WATER_COD]);
    rig.set(Target::Status, Value::Code(1));
    let cfg = AcquireConfig {
        rtd_interval_s: 60,
        validity: GasValidity { samples_per_minute: 1, minutes_per_hour: 45, hours_per_day: 20 },
        ..AcquireConfig::default()
    };
    let owned = rig.profiles[0].clone();
    let profile = owned.as_profile();
    let mut acq = Acquisition::new(cfg, &[&profile]);
    let mut rtd = Vec::new();
    for step in 0..=18u64 {
        let now_ms = step * 10_000;
        // Results first read at 00:00 (30 mg/L), 00:30 (31 mg/L) and 02:10 (32 mg/L).
        for (at_step, value, minute) in [(0, 30.0, 0), (3, 31.0, 1), (13, 32.0, 2)] {
            if step == at_step {
                let t = Time::from_millis(t0() + minute * 60_000).unwrap();
                rig.set(
                    Target::SampleTime,
                    Value::Time(PDateTime::new(t.year, t.month, t.day, t.hour, t.minute, t.second).unwrap()),
                );
                rig.set(COD, Value::Number(value));
            }
        }
        if step == 12 {
            // CN 1062 at 02:00: every 20 s from now on.
            acq.set_rtd_interval(20);
        }
        let values = rig.poll(now_ms);
        let reading = Reading::new(&profile, &values[0], rig.comm(0));
        let out = acq.ingest(at(now_ms), now_ms, &[reading]);
        out.iter().for_each(round_trip);
        if let Some(m) = data(&out, Command::RealTimeData) {
            let f = |suffix| field(m, "w01018", suffix).map(String::from);
            rtd.push((now_ms / 1000, f("Rtd"), f("SampleTime")));
        }
    }
    assert_eq!(
        rtd,
        vec![
            (0, Some("30.0".into()), Some("20240101080000".into())),
            (60, Some("31.0".into()), Some("20240101080100".into())),
            // 02:00: due, but no new result since 01:00; 02:10 is not due under the new 20 s;
            // 02:10's result (read at 02:10) goes at 02:20.
            (140, Some("32.0".into()), Some("20240101080200".into())),
        ]
    );
}

/// After a restart, an acquisition seeded with the periods the store holds does not report one of
/// them again when the clock passes it a second time (it was set back before the restart): the
/// one-hour soak found an hour reported twice under two QNs this way.
#[test]
fn a_seeded_acquisition_does_not_report_a_stored_period_again() {
    let hourly = |seed: bool| {
        let mut rig = Rig::new(&[&FLOW_METER]);
        rig.set(FLOW, Value::Number(3.0));
        let cfg = AcquireConfig {
            rtd_interval_s: 3600,
            validity: GasValidity { samples_per_minute: 1, minutes_per_hour: 1, hours_per_day: 20 },
            ..AcquireConfig::default()
        };
        let owned = rig.profiles[0].clone();
        let profile = owned.as_profile();
        let mut acq = Acquisition::new(cfg, &[&profile]);
        if seed {
            // The store holds 08:00's hourly record (and 08:50's minute block) from before.
            acq.seed_reported(Some(t0() + 50 * 60_000), Some(t0()), None);
        }
        let mut hours = Vec::new();
        // 08:00 to 10:05, a poll every 5 minutes.
        for step in 0..=25u64 {
            let now_ms = step * 300_000;
            let values = rig.poll(now_ms);
            let reading = Reading::new(&profile, &values[0], rig.comm(0));
            for m in acq.ingest(at(now_ms), now_ms, &[reading]) {
                if let Message::Data { cn: Command::HourlyData, data_time, .. } = m {
                    hours.push(data_time.to_string());
                }
            }
        }
        hours
    };
    assert_eq!(hourly(false), ["20240101080000", "20240101090000"]);
    assert_eq!(hourly(true), ["20240101090000"]);
}

/// 2024-06-01 09:00:00, the hour of the HJ 212-2025 digest's 2013 example (§13.3).
fn june(ms: u64) -> Time {
    let base = Time { year: 2024, month: 6, day: 1, hour: 9, minute: 0, second: 0, millis: 0 }.to_millis();
    Time::from_millis(base + ms as i64).unwrap()
}

fn pdt(t: Time) -> PDateTime {
    PDateTime::new(t.year, t.month, t.day, t.hour, t.minute, t.second).unwrap()
}

/// The surface-water COD, optionally with the profile points of 2013's `CompleteTime` and
/// `SampleType` (our own addresses in the block's gaps).
fn cod_profile(with_points: bool) -> OwnedProfile {
    let mut owned = OwnedProfile::from_profile(&SURFACE_WATER_COD);
    if with_points {
        let point = |address, value, target| PointSpec {
            unit: 1,
            function: firmware::modbus::FunctionCode::ReadHoldingRegisters,
            address,
            value,
            order: ByteOrder::ABCD,
            scale: 1.0,
            offset: 0.0,
            target,
        };
        owned.points.push(point(0x1020, ValueType::TimeBcd6, COMPLETE_TIME));
        owned.points.push(point(0x1023, ValueType::U16, SAMPLE_TYPE));
    }
    owned
}

/// Drives the batch COD through the master: measurements sampled at 09:01:09 (17.5 mg/L) and
/// 10:01:09 (18.4 mg/L), each first read at hh:42:00, polled every minute 09:40–10:50.
fn drive_batch(hj212_2025: bool, profile: &OwnedProfile) -> Vec<(u64, Vec<Message>)> {
    let mut rig = Rig::new(&[&profile.as_profile()]);
    rig.set(Target::Status, Value::Code(1));
    let cfg = AcquireConfig { hj212_2025, rtd_interval_s: 60, ..AcquireConfig::default() };
    let owned = rig.profiles[0].clone();
    let profile = owned.as_profile();
    let mut acq = Acquisition::new(cfg, &[&profile]);
    let mut all = Vec::new();
    for minute in 40..=110u64 {
        let now_ms = minute * 60_000;
        if minute == 42 || minute == 102 {
            let hour_ms = (minute / 60) * 3_600_000;
            rig.set(Target::SampleTime, Value::Time(pdt(june(hour_ms + 69_000))));
            rig.set(COD, Value::Number(if minute == 42 { 17.5 } else { 18.4 }));
            if profile.point(&COMPLETE_TIME).is_some() {
                // The analyzer finished 40 s before the poll; the second was a check sample.
                rig.set(COMPLETE_TIME, Value::Time(pdt(june(now_ms - 40_000))));
                rig.set(SAMPLE_TYPE, Value::Number(if minute == 42 { 1.0 } else { 2.0 }));
            }
        }
        let values = rig.poll(now_ms);
        let reading = Reading::new(&profile, &values[0], rig.comm(0));
        let out = acq.ingest(june(now_ms), now_ms, &[reading]);
        out.iter().for_each(round_trip);
        all.push((minute, out));
    }
    all
}

fn raw_records(all: &[(u64, Vec<Message>)]) -> Vec<(u64, &Message)> {
    all.iter()
        .flat_map(|(minute, out)| out.iter().filter(|m| m.cn() == Command::RawData.value()).map(move |m| (*minute, m)))
        .collect()
}

/// HJ 212-2025 CN 2013 (provisional): one record per new batch measurement, in the layout of the
/// digest's example packet (§13.3), which the encoder reproduces byte for byte.
#[test]
fn raw_data_2013_once_per_measurement_in_the_example_layout() {
    let all = drive_batch(true, &cod_profile(false));
    let raw = raw_records(&all);
    assert_eq!(raw.iter().map(|(m, _)| *m).collect::<Vec<_>>(), vec![42, 102]);
    let header = Header {
        qn: Some("20240601085857223"),
        st: "32",
        pw: "123456",
        mn: "010000A8900016F000169DC0",
        flag: Some(HFlag::new(Version::V2025, false, true)),
    };
    let frame = raw[0].1.to_packet(&header).to_frame(CrcVariant::Hj212).expect("encodes");
    let expected = "##0228QN=20240601085857223;ST=32;CN=2013;PW=123456;MN=010000A8900016F000169DC0;Flag=9;\
                    CP=&&DataTime=20240601090000;w01018-SampleTime=20240601090109,w01018-CompleteTime=20240601094200,\
                    w01018-SampleType=1,w01018-Avg=17.5,w01018-Flag=N&&35C0";
    assert_eq!(String::from_utf8(frame.clone()).unwrap().trim_end(), expected);
    let Split::Frame(cut) = Splitter::new(SplitConfig::default()).split(&frame, true) else { panic!("no frame") };
    let packet = Decoded::new(cut, DecodeOptions::STRICT).verdict().expect("strict");
    assert_eq!(&Message::from_packet(&packet).unwrap(), raw[0].1);
    // The second measurement: DataTime is the start of its SampleTime's hour.
    let Message::Data { data_time, items, .. } = raw[1].1 else { unreachable!() };
    assert_eq!(*data_time, june(3_600_000));
    assert_eq!(
        items[0].fields,
        pairs(&[
            ("SampleTime", "20240601100109"),
            ("CompleteTime", "20240601104200"),
            ("SampleType", "1"),
            ("Avg", "18.4"),
            ("Flag", "N")
        ])
    );
}

/// `CompleteTime` and `SampleType` come from profile points when the profile reads them.
#[test]
fn raw_data_2013_takes_complete_time_and_sample_type_from_the_profile() {
    let all = drive_batch(true, &cod_profile(true));
    let raw = raw_records(&all);
    assert_eq!(raw.len(), 2);
    let f = |i: usize, suffix| field(raw[i].1, "w01018", suffix);
    assert_eq!((f(0, "CompleteTime"), f(0, "SampleType")), (Some("20240601094120"), Some("1")));
    assert_eq!((f(1, "CompleteTime"), f(1, "SampleType")), (Some("20240601104120"), Some("2")));
}

/// The furnace temperature transmitter polled every 10 s, 08:00:00–08:15:00, with a value that
/// changes every sample.
fn drive_furnace(hj212_2025: bool) -> (Vec<Message>, Vec<f64>) {
    let furnace = Target::Pollutant(Code::new("a01901"));
    let mut rig = Rig::new(&[&INCINERATOR_FURNACE]);
    let cfg = AcquireConfig { hj212_2025, ..AcquireConfig::default() };
    let mut acq = Acquisition::new(cfg, &[&INCINERATOR_FURNACE]);
    let mut all = Vec::new();
    let mut sent = Vec::new();
    for k in 0..=90u64 {
        let v = 840.0 + (k % 7) as f64 * 3.3;
        rig.set(furnace, Value::Number(v));
        // What the master reads back: the register holds an f32.
        sent.push(f64::from(v as f32));
        let now_ms = k * 10_000;
        let values = rig.poll(now_ms);
        let reading = Reading::new(&INCINERATOR_FURNACE, &values[0], rig.comm(0));
        let out = acq.ingest(at(now_ms), now_ms, &[reading]);
        out.iter().for_each(round_trip);
        all.extend(out);
    }
    (all, sent)
}

/// HJ 212-2025 CN 2111 (provisional): every five minutes, `DataTime` the window start and
/// `a01901-Avg` the mean of the window's samples.
#[test]
fn furnace_temperature_2111_every_five_minutes() {
    let (all, sent) = drive_furnace(true);
    let got: Vec<(Time, Vec<(String, String)>)> = all
        .iter()
        .filter_map(|m| match m {
            Message::Data { cn: Command::FurnaceTemperature, data_time, items } => {
                assert_eq!(items.len(), 1);
                assert_eq!(items[0].code, "a01901");
                Some((*data_time, items[0].fields.clone()))
            }
            _ => None,
        })
        .collect();
    // Windows 08:00, 08:05, 08:10 (30 samples each) close at 08:05, 08:10, 08:15.
    let expected: Vec<(Time, Vec<(String, String)>)> = (0..3)
        .map(|w| {
            let window = &sent[w * 30..(w + 1) * 30];
            let mean = window.iter().sum::<f64>() / 30.0;
            (at(w as u64 * 300_000), pairs(&[("Avg", &format!("{mean:.1}"))]))
        })
        .collect();
    assert_eq!(got, expected);
}

/// Without HJ 212-2025 there is neither 2013 nor 2111, and every other record is the same as with it.
#[test]
fn no_2025_records_when_2025_is_off() {
    let is_2025 = |m: &Message| m.cn() == Command::RawData.value() || m.cn() == Command::FurnaceTemperature.value();
    let without = |all: Vec<(u64, Vec<Message>)>| -> Vec<Message> {
        all.into_iter().flat_map(|(_, out)| out).filter(|m| !is_2025(m)).collect()
    };
    let off = drive_batch(false, &cod_profile(true));
    assert!(raw_records(&off).is_empty());
    let off = without(off);
    assert!(off.iter().any(|m| m.cn() == Command::RealTimeData.value()));
    assert_eq!(off, without(drive_batch(true, &cod_profile(true))));
    let (furnace_off, _) = drive_furnace(false);
    assert!(!furnace_off.iter().any(is_2025));
    assert!(furnace_off.iter().any(|m| m.cn() == Command::MinuteData.value() && field(m, "a01901", "Avg").is_some()));
    let (furnace_on, _) = drive_furnace(true);
    assert_eq!(furnace_off, furnace_on.into_iter().filter(|m| !is_2025(m)).collect::<Vec<_>>());
}

/// The 2013 inputs `CplTime` and `SmpType` are not dynamic-control parameters: no 3020 item.
#[test]
fn raw_data_inputs_stay_out_of_3020() {
    let owned = cod_profile(true);
    let mut rig = Rig::new(&[&owned.as_profile()]);
    rig.set(Target::Status, Value::Code(1));
    rig.set(SAMPLE_TYPE, Value::Number(2.0));
    let cfg = DynamicConfig::default();
    let mut tracker = Tracker::new(&rig.profiles[0].as_profile(), None);
    let out = dyn_cycle(&mut rig, &mut tracker, &cfg, 0);
    let info = site_info(&out);
    assert!(!info.is_empty());
    for (_, items) in info {
        assert!(items.iter().all(|(c, _)| c != "CplTime" && c != "SmpType"), "{items:?}");
    }
}
