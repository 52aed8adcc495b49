//! The shipped profiles, as `static` data. Each is documented, with its source, in `docs/devices.md`.
//!
//! The register maps come from the domain notes (`dynamic-control-and-analyzers.md` §4, themselves
//! drawn from public driver code, tagged [S-code] there). Where the notes give no map (the flow
//! meter, the flue-gas parameter unit, the energy meter and the furnace temperature) the layout is our own generic choice and
//! says so; check every map against the instrument's manual and firmware before use.
//!
//! Control actions (CN 3011–3015): the surface-water profiles follow the CNEMC block, whose control
//! register 0x1200 (notes §4.1) takes 1 measure a sample, 8 blank calibration, 9 standard
//! calibration, 10 initial cleaning and 19 calibrate; they get those five. The notes give no
//! control register for the other analyzers, so their profiles list no controls and the DAU
//! refuses those commands for them.
//!
//! Default unit addresses: surface-water COD 1, NH3-N 2, TP 3, TN 4; word-swapped COD 5; flow meter
//! 6; CEMS gas analyzer 7 and flue-gas parameter unit 8; energy meter 9; incinerator furnace 10. Copy a profile into an
//! [`OwnedProfile`](super::OwnedProfile) to change them.

use super::{
    AnalyzerMode as M, ByteOrder, Code, ControlAction as A, ControlSpec, FacilityQuantity, FacilityRule, PointSpec,
    Profile, StatusEntry, Target, ValueType,
};
use crate::modbus::FunctionCode;

const HOLD: FunctionCode = FunctionCode::ReadHoldingRegisters;
const INPUT: FunctionCode = FunctionCode::ReadInputRegisters;

const fn p(
    unit: u8,
    function: FunctionCode,
    address: u16,
    value: ValueType,
    order: ByteOrder,
    target: Target,
) -> PointSpec {
    PointSpec { unit, function, address, value, order, scale: 1.0, offset: 0.0, target }
}

const fn scaled(mut point: PointSpec, scale: f64) -> PointSpec {
    point.scale = scale;
    point
}

const fn info(code: &str) -> Target {
    Target::Info(Code::new(code))
}

/// Status codes of the surface-water block's register 0x1083 (notes §4.1).
pub static SURFACE_WATER_STATUS: [StatusEntry; 11] = [
    StatusEntry { raw: 0, mode: M::Idle },
    StatusEntry { raw: 1, mode: M::Measuring },
    StatusEntry { raw: 2, mode: M::Check },        // standard-sample check
    StatusEntry { raw: 3, mode: M::Check },        // zero check
    StatusEntry { raw: 4, mode: M::Check },        // span check
    StatusEntry { raw: 5, mode: M::Check },        // blank test
    StatusEntry { raw: 6, mode: M::Check },        // parallel sample
    StatusEntry { raw: 7, mode: M::Check },        // spike recovery
    StatusEntry { raw: 8, mode: M::Calibration },  // blank calibration
    StatusEntry { raw: 9, mode: M::Calibration },  // standard calibration
    StatusEntry { raw: 10, mode: M::Maintenance }, // initialisation
];

/// Alarm codes at 0x1085 that make the result untrustworthy: no reagent, no sample, no pure water,
/// no standard, leak, heating abnormal (notes §4.1).
pub static SURFACE_WATER_FATAL_ALARMS: [u32; 6] = [1, 2, 3, 4, 5, 8];

macro_rules! surface_water_points {
    ($unit:expr, $code:expr) => {
        [
            p($unit, HOLD, 0x1005, ValueType::TimeBcd6, ByteOrder::ABCD, Target::SampleTime),
            p($unit, HOLD, 0x1008, ValueType::F32, ByteOrder::CDAB, Target::Pollutant(Code::new($code))),
            p($unit, HOLD, 0x1083, ValueType::U16, ByteOrder::ABCD, Target::Status),
            p($unit, HOLD, 0x1085, ValueType::U16, ByteOrder::ABCD, Target::Alarm),
            p($unit, HOLD, 0x1086, ValueType::U16, ByteOrder::ABCD, Target::Fault),
            p($unit, HOLD, 0x1089, ValueType::U16, ByteOrder::ABCD, info("i13003")),
            p($unit, HOLD, 0x10A1, ValueType::U16, ByteOrder::ABCD, info("i13004")),
            p($unit, HOLD, 0x10A2, ValueType::U16, ByteOrder::ABCD, info("i13005")),
            p($unit, HOLD, 0x10A5, ValueType::F32, ByteOrder::CDAB, info("i13001")),
            p($unit, HOLD, 0x10A7, ValueType::F32, ByteOrder::CDAB, info("i13008")),
            p($unit, HOLD, 0x10A9, ValueType::F32, ByteOrder::CDAB, info("i13007")),
            p($unit, HOLD, 0x10AB, ValueType::TimeBcd6, ByteOrder::ABCD, info("i13006")),
            p($unit, HOLD, 0x10CE, ValueType::F32, ByteOrder::CDAB, info("i13009")),
            // The standard-sample check record (notes §4.1): reference, time, measured value.
            p($unit, HOLD, 0x1003, ValueType::F32, ByteOrder::CDAB, info("ChkRef")),
            p($unit, HOLD, 0x1010, ValueType::TimeBcd6, ByteOrder::ABCD, info("ChkTime")),
            p($unit, HOLD, 0x1013, ValueType::F32, ByteOrder::CDAB, info("ChkRead")),
        ]
    };
}

static SW_COD: [PointSpec; 16] = surface_water_points!(1, "w01018");
static SW_NH3N: [PointSpec; 16] = surface_water_points!(2, "w21003");
static SW_TP: [PointSpec; 16] = surface_water_points!(3, "w21011");
static SW_TN: [PointSpec; 16] = surface_water_points!(4, "w21001");

/// The surface-water block's control register (notes §4.1, "Control register 0x1200 (write)").
pub const SURFACE_WATER_CONTROL_REGISTER: u16 = 0x1200;

/// The actions of the control register 0x1200, written with FC 06: 8 blank calibration (zero),
/// 9 standard calibration (span), 19 calibrate (both), 1 measure a sample, 10 initial cleaning.
/// The block has no comparison-sampling or sample-retention code.
macro_rules! surface_water_controls {
    ($unit:expr) => {
        [
            ControlSpec::register(A::ZeroCalibration, $unit, SURFACE_WATER_CONTROL_REGISTER, 8),
            ControlSpec::register(A::SpanCalibration, $unit, SURFACE_WATER_CONTROL_REGISTER, 9),
            ControlSpec::register(A::Calibration, $unit, SURFACE_WATER_CONTROL_REGISTER, 19),
            ControlSpec::register(A::SampleNow, $unit, SURFACE_WATER_CONTROL_REGISTER, 1),
            ControlSpec::register(A::Cleaning, $unit, SURFACE_WATER_CONTROL_REGISTER, 10),
        ]
    };
}

static SW_COD_CONTROLS: [ControlSpec; 5] = surface_water_controls!(1);
static SW_NH3N_CONTROLS: [ControlSpec; 5] = surface_water_controls!(2);
static SW_TP_CONTROLS: [ControlSpec; 5] = surface_water_controls!(3);
static SW_TN_CONTROLS: [ControlSpec; 5] = surface_water_controls!(4);

const fn surface_water(
    name: &'static str,
    points: &'static [PointSpec],
    controls: &'static [ControlSpec],
) -> Profile<'static> {
    Profile {
        name,
        points,
        status_map: &SURFACE_WATER_STATUS,
        fatal_alarms: &SURFACE_WATER_FATAL_ALARMS,
        facility: None,
        controls,
    }
}

/// Surface-water-style COD (CODCr, w01018) analyzer, unit 1.
pub static SURFACE_WATER_COD: Profile<'static> = surface_water("surface-water-cod", &SW_COD, &SW_COD_CONTROLS);
/// Surface-water-style NH3-N (w21003) analyzer, unit 2.
pub static SURFACE_WATER_NH3N: Profile<'static> = surface_water("surface-water-nh3n", &SW_NH3N, &SW_NH3N_CONTROLS);
/// Surface-water-style TP (w21011) analyzer, unit 3.
pub static SURFACE_WATER_TP: Profile<'static> = surface_water("surface-water-tp", &SW_TP, &SW_TP_CONTROLS);
/// Surface-water-style TN (w21001) analyzer, unit 4.
pub static SURFACE_WATER_TN: Profile<'static> = surface_water("surface-water-tn", &SW_TN, &SW_TN_CONTROLS);

/// Operating-mode words of the word-swapped COD analyzer at 0x0033 (notes §4.2).
pub static WORD_SWAPPED_COD_STATUS: [StatusEntry; 11] = [
    StatusEntry { raw: 0x0000, mode: M::Idle },
    StatusEntry { raw: 0x0101, mode: M::Idle },
    StatusEntry { raw: 0x0002, mode: M::Cleaning },
    StatusEntry { raw: 0x4004, mode: M::Calibration },
    StatusEntry { raw: 0x8004, mode: M::Calibration },
    StatusEntry { raw: 0x0008, mode: M::Maintenance },
    StatusEntry { raw: 0x0110, mode: M::Maintenance },
    StatusEntry { raw: 0x0080, mode: M::Maintenance },
    StatusEntry { raw: 0x0120, mode: M::Measuring },
    StatusEntry { raw: 0x2020, mode: M::Measuring },
    StatusEntry { raw: 0x0102, mode: M::Check },
];

static WS_COD: [PointSpec; 9] = [
    p(5, HOLD, 0x0000, ValueType::F32, ByteOrder::CDAB, Target::Pollutant(Code::new("w01018"))),
    p(5, HOLD, 0x0002, ValueType::TimePackedHach, ByteOrder::ABCD, Target::SampleTime),
    p(5, HOLD, 0x0006, ValueType::U16, ByteOrder::ABCD, info("i13005")),
    // System status: 0 OK, 1 warning, 2 error; "error" is listed as fatal below.
    p(5, HOLD, 0x0007, ValueType::U16, ByteOrder::ABCD, Target::Alarm),
    p(5, HOLD, 0x0014, ValueType::F32, ByteOrder::CDAB, info("i13120")),
    // Measurement interval in hours; i13003 is in minutes.
    scaled(p(5, HOLD, 0x0016, ValueType::U16, ByteOrder::ABCD, info("i13003")), 60.0),
    p(5, HOLD, 0x0033, ValueType::U16, ByteOrder::ABCD, Target::Status),
    p(5, HOLD, 0x008E, ValueType::F32, ByteOrder::CDAB, info("i13004")),
    p(5, HOLD, 0x00F4, ValueType::F32, ByteOrder::CDAB, info("i13008")),
];

/// A COD analyzer sending floats low word first (CDAB), in the style of notes §4.2; unit 5.
pub static WORD_SWAPPED_COD: Profile<'static> = Profile {
    name: "word-swapped-cod",
    points: &WS_COD,
    status_map: &WORD_SWAPPED_COD_STATUS,
    fatal_alarms: &[2],
    facility: None,
    controls: &[],
};

static FLOW: [PointSpec; 2] = [
    p(6, INPUT, 0x0000, ValueType::F32, ByteOrder::ABCD, Target::Pollutant(Code::new("w00000"))),
    p(6, INPUT, 0x0002, ValueType::F64, ByteOrder::ABCD, Target::Total(Code::new("w00000"))),
];

/// A generic flow meter (w00000): instantaneous flow in L/s and a totaliser in m³; unit 6.
/// Our own layout, not from the notes.
pub static FLOW_METER: Profile<'static> =
    Profile { name: "flow-meter", points: &FLOW, status_map: &[], fatal_alarms: &[], facility: None, controls: &[] };

/// Status values of the CEMS gas analyzer at 0x0212, carried as a float (notes §4.4).
pub static CEMS_STATUS: [StatusEntry; 8] = [
    StatusEntry { raw: 1, mode: M::Measuring },
    StatusEntry { raw: 2, mode: M::Calibration },
    StatusEntry { raw: 3, mode: M::Calibration },
    StatusEntry { raw: 4, mode: M::Fault },
    StatusEntry { raw: 5, mode: M::Maintenance },
    StatusEntry { raw: 6, mode: M::Cleaning },
    StatusEntry { raw: 7, mode: M::Cleaning },
    StatusEntry { raw: 8, mode: M::Fault },
];

/// NO reported as NOx expressed as NO2: HJ 212-2017 Appendix D formula (21) with NO2 = 0, M 46/30.
const NO_AS_NO2: f64 = 46.0 / 30.0;

static CEMS: [PointSpec; 10] = [
    // Gas analyzer, FC 04, floats CDAB (notes §4.4).
    p(7, INPUT, 0x0132, ValueType::F32, ByteOrder::CDAB, Target::Pollutant(Code::new("a21026"))),
    scaled(p(7, INPUT, 0x015A, ValueType::F32, ByteOrder::CDAB, Target::Pollutant(Code::new("a21002"))), NO_AS_NO2),
    p(7, INPUT, 0x01AA, ValueType::F32, ByteOrder::CDAB, Target::Pollutant(Code::new("a19001"))),
    p(7, INPUT, 0x01E6, ValueType::F32, ByteOrder::CDAB, Target::Pollutant(Code::new("a01014"))),
    p(7, INPUT, 0x0212, ValueType::F32Code, ByteOrder::CDAB, Target::Status),
    // Flue-gas parameter unit: our own layout, FC 04, floats ABCD from 0x0000.
    p(8, INPUT, 0x0000, ValueType::F32, ByteOrder::ABCD, Target::Pollutant(Code::new("a34013"))),
    p(8, INPUT, 0x0002, ValueType::F32, ByteOrder::ABCD, Target::Pollutant(Code::new("a01012"))),
    p(8, INPUT, 0x0004, ValueType::F32, ByteOrder::ABCD, Target::Pollutant(Code::new("a01013"))),
    p(8, INPUT, 0x0006, ValueType::F32, ByteOrder::ABCD, Target::Pollutant(Code::new("a01011"))),
    p(8, INPUT, 0x0008, ValueType::F32, ByteOrder::ABCD, Target::Pollutant(Code::new("a00000"))),
];

/// A flue-gas CEMS: gas analyzer (SO2, NOx, O2, humidity, status) on unit 7 in the style of notes
/// §4.4, and a parameter unit (particulates, temperature, pressure in kPa, velocity, flow) on unit 8.
pub static FLUE_GAS_CEMS: Profile<'static> = Profile {
    name: "flue-gas-cems",
    points: &CEMS,
    status_map: &CEMS_STATUS,
    fatal_alarms: &[],
    facility: None,
    controls: &[],
};

static METER: [PointSpec; 5] = [
    p(9, HOLD, 0x200C, ValueType::F32, ByteOrder::ABCD, Target::Facility(FacilityQuantity::Current(1))),
    p(9, HOLD, 0x200E, ValueType::F32, ByteOrder::ABCD, Target::Facility(FacilityQuantity::Current(2))),
    p(9, HOLD, 0x2010, ValueType::F32, ByteOrder::ABCD, Target::Facility(FacilityQuantity::Current(3))),
    p(9, HOLD, 0x2012, ValueType::F32, ByteOrder::ABCD, Target::Facility(FacilityQuantity::Power)),
    p(9, HOLD, 0x4000, ValueType::F32, ByteOrder::ABCD, Target::Facility(FacilityQuantity::Energy)),
];

/// A three-phase energy meter on a treatment facility, unit 9: phase currents (A), total power (kW),
/// cumulative energy (kWh). The facility runs at 2 A or more. Register layout modelled on common
/// DIN-rail meters; not from the notes.
pub static ENERGY_METER: Profile<'static> = Profile {
    name: "energy-meter",
    points: &METER,
    status_map: &[],
    fatal_alarms: &[],
    facility: Some(FacilityRule { code: Code::new("SB1"), running_current_a: 2.0 }),
    controls: &[],
};

static FURNACE: [PointSpec; 1] =
    [p(10, INPUT, 0x0000, ValueType::F32, ByteOrder::ABCD, Target::Pollutant(Code::new("a01901")))];

/// A waste-incinerator furnace temperature transmitter, unit 10: the furnace mean combustion
/// temperature `a01901` (℃), FC 04, one float ABCD at 0x0000. Our own layout, not from the notes;
/// with HJ 212-2025 on, its five-minute means go up as CN 2111.
pub static INCINERATOR_FURNACE: Profile<'static> = Profile {
    name: "incinerator-furnace",
    points: &FURNACE,
    status_map: &[],
    fatal_alarms: &[],
    facility: None,
    controls: &[],
};

/// Every shipped profile.
pub static ALL: [&Profile<'static>; 9] = [
    &SURFACE_WATER_COD,
    &SURFACE_WATER_NH3N,
    &SURFACE_WATER_TP,
    &SURFACE_WATER_TN,
    &WORD_SWAPPED_COD,
    &FLOW_METER,
    &FLUE_GAS_CEMS,
    &ENERGY_METER,
    &INCINERATOR_FURNACE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_point_is_a_valid_read() {
        for profile in ALL {
            for p in profile.points {
                assert!(p.function.is_read(), "{}", profile.name);
                assert!(p.block().end() <= 0x1_0000);
            }
        }
    }

    #[test]
    fn surface_water_profiles_control_through_register_0x1200_and_the_others_not_at_all() {
        for profile in ALL {
            let units: Vec<u8> = profile.points.iter().map(|p| p.unit).collect();
            for c in profile.controls {
                assert!(c.is_valid(), "{}", profile.name);
                assert!(units.contains(&c.unit), "{}: control on a unit without points", profile.name);
            }
            if !profile.name.starts_with("surface-water-") {
                assert!(profile.controls.is_empty(), "{}", profile.name);
                continue;
            }
            let code = |a: A| profile.control(a).map(|c| (c.function, c.address, c.value));
            let fc06 = crate::modbus::FunctionCode::WriteSingleRegister;
            assert_eq!(code(A::ZeroCalibration), Some((fc06, 0x1200, 8)));
            assert_eq!(code(A::SpanCalibration), Some((fc06, 0x1200, 9)));
            assert_eq!(code(A::Calibration), Some((fc06, 0x1200, 19)));
            assert_eq!(code(A::SampleNow), Some((fc06, 0x1200, 1)));
            assert_eq!(code(A::Cleaning), Some((fc06, 0x1200, 10)));
            assert_eq!(code(A::ComparisonSample), None);
            assert_eq!(code(A::RetainSample), None);
        }
    }
}
