//! A simulated analyzer: a Modbus RTU slave serving a profile's register map, sans-IO.
//!
//! Feed it a request ADU with [`Simulator::handle`]; it returns what the device would put on the
//! wire, and after how long, or nothing. Faults can be injected for the next answers or for every
//! answer: no answer, a late answer, a damaged CRC, an exception, another unit answering, noise
//! before the frame, a fragment and a silence before the frame, a pause inside the frame. Values are settable by target (`w01018`, `i13008`, status, ...) so tests and the
//! demo can move a slope, start a calibration or raise an alarm.
//!
//! # Control actions
//!
//! A write to one of the profile's control registers or coils ([`ControlSpec`]) starts that
//! action, as a platform's CN 3011–3015 would through the DAU:
//! - the status point goes to the mode of the action (calibration, measuring, cleaning): the raw
//!   status equal to the written value when the status map gives it that mode (the surface-water
//!   block's status codes follow its control codes), else the first raw value of that mode, else
//!   the raw value equal to the written one; the status goes back to what it was after
//!   [`Simulator::control_cycles`] reads of the status register (poll cycles), and the action
//!   completes then (at once when the profile has no status point);
//! - on completion a zero calibration moves the intercept up by 0.01, a span calibration
//!   multiplies the slope by 1.01, a calibration does both; each stamps the calibration times
//!   the profile has with the simulator's clock ([`Simulator::set_time`], when it was set). A
//!   measurement (immediate or comparison sample) stamps the sample time. These are the
//!   dynamic-control changes a DAU reports with CN 3020;
//! - sample retention advances the retention bottle number (`i43006`) at once;
//! - a value that no control of that register has gets exception 3 (illegal data value), and a
//!   write while the unit is still busy with an action gets exception 6 (device busy).
//!
//! Invariants:
//! - It behaves like a correct slave: requests with a bad CRC, for another unit or too short get no
//!   answer; broadcasts (unit 0) are executed and get no answer; unsupported functions get exception
//!   1, unmapped addresses exception 2, bad counts exception 3.
//! - Readable addresses are, per unit and table, the whole span from the lowest to the highest
//!   register of the profile's points (gaps read as 0), as with a contiguous device register block.
//! - It never panics on any request bytes.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;

use crate::dynamic::{AnalyzerKind, ParamKey, resolve};
use crate::modbus::{ExceptionCode, FunctionCode, crc16};
use crate::profile::{
    AnalyzerMode, ControlAction, ControlSpec, DateTime, OwnedProfile, PointSpec, Profile, Target, VASE_NO, Value,
};

/// The length of a request ADU (unit, function, …, CRC) from its first bytes, once they say it:
/// FC 15 and 16 carry a byte count at offset 6; every other request a master sends is 8 bytes
/// (Modbus over serial line, §6).
#[must_use]
pub fn request_len(buf: &[u8]) -> Option<usize> {
    match *buf.get(1)? {
        0x0F | 0x10 => buf.get(6).map(|n| 9 + usize::from(*n)),
        _ => Some(8),
    }
}

/// A fault to inject into an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Say nothing.
    NoAnswer,
    /// Answer correctly, after `delay_us` microseconds.
    Late {
        /// Delay before the answer, µs.
        delay_us: u32,
    },
    /// Answer with the last CRC byte flipped.
    BadCrc,
    /// Answer with this exception.
    Exception(ExceptionCode),
    /// Answer correctly but with another unit address in the frame.
    OtherUnit(u8),
    /// Put these bytes on the line before the correct answer.
    NoiseBefore(Vec<u8>),
    /// Put these bytes on the line, stay silent for `gap_us`, then give the correct answer: a cut
    /// frame or another device's chatter, ended by a silence.
    FragmentBefore {
        /// The bytes before the silence.
        bytes: Vec<u8>,
        /// The silence, µs.
        gap_us: u32,
    },
    /// Answer correctly, but stop for `gap_us` after the first `after` bytes of the frame (a slow
    /// device; beyond t3.5 the frame is broken in two).
    Pause {
        /// Bytes sent before the pause.
        after: usize,
        /// The pause, µs.
        gap_us: u32,
    },
}

/// What the simulated device puts on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Microseconds between the end of the request and the first byte.
    pub delay_us: u32,
    /// A silence inside the reply: `(n, µs)` stops the line for `µs` after the first `n` bytes.
    pub gap: Option<(usize, u32)>,
}

/// A control action under way on one unit.
#[derive(Debug, Clone)]
struct Running {
    unit: u8,
    action: ControlAction,
    /// The status point watched, and the value to go back to.
    status: Option<(PointSpec, Value)>,
    /// Reads of the status register left before the action completes.
    reads_left: u32,
}

/// A Modbus RTU slave model for one or more units.
#[derive(Debug, Clone)]
pub struct Simulator {
    profile: OwnedProfile,
    units: Vec<u8>,
    // (unit, table) -> address -> value. Tables: 3 holding, 4 input, 1 coils, 2 discrete inputs.
    registers: BTreeMap<(u8, u8), BTreeMap<u16, u16>>,
    once: VecDeque<Fault>,
    always: Option<Fault>,
    /// Answer delay when no fault says otherwise, µs (default 5 ms).
    pub response_delay_us: u32,
    /// Reads of the status register (poll cycles) a control action lasts (default 3).
    pub control_cycles: u32,
    requests: u32,
    writes: u32,
    running: Vec<Running>,
    accepted: Vec<(u8, ControlAction)>,
    now: Option<DateTime>,
}

fn table_of(function: FunctionCode) -> u8 {
    match function {
        FunctionCode::ReadCoils | FunctionCode::WriteSingleCoil | FunctionCode::WriteMultipleCoils => 1,
        FunctionCode::ReadDiscreteInputs => 2,
        FunctionCode::ReadInputRegisters => 4,
        _ => 3,
    }
}

impl Simulator {
    /// A device serving `profile`: every unit named by its points and controls, every register
    /// span zeroed.
    pub fn new(profile: &Profile<'_>) -> Self {
        let mut registers: BTreeMap<(u8, u8), BTreeMap<u16, u16>> = BTreeMap::new();
        let mut units = Vec::new();
        for c in profile.controls {
            if !units.contains(&c.unit) {
                units.push(c.unit);
            }
        }
        for p in profile.points {
            if !units.contains(&p.unit) {
                units.push(p.unit);
            }
            let map = registers.entry((p.unit, table_of(p.function))).or_default();
            let end = p.block().end().min(0x1_0000);
            for a in p.address as u32..end {
                map.insert(a as u16, 0);
            }
        }
        for map in registers.values_mut() {
            if let (Some(&lo), Some(&hi)) = (map.keys().next(), map.keys().next_back()) {
                for a in lo..=hi {
                    map.entry(a).or_insert(0);
                }
            }
        }
        Self {
            profile: OwnedProfile::from_profile(profile),
            units,
            registers,
            once: VecDeque::new(),
            always: None,
            response_delay_us: 5_000,
            control_cycles: 3,
            requests: 0,
            writes: 0,
            running: Vec::new(),
            accepted: Vec::new(),
            now: None,
        }
    }

    /// The profile served.
    pub fn profile(&self) -> Profile<'_> {
        self.profile.as_profile()
    }

    /// Requests seen (valid ones for our units).
    pub const fn requests(&self) -> u32 {
        self.requests
    }

    /// Write requests seen (FC 05, 06, 15, 16; valid ones for our units, taken or refused).
    pub const fn writes(&self) -> u32 {
        self.writes
    }

    /// The control actions started so far, in order, with their unit.
    pub fn accepted(&self) -> &[(u8, ControlAction)] {
        &self.accepted
    }

    /// The action `unit` is busy with, if any.
    pub fn running(&self, unit: u8) -> Option<ControlAction> {
        self.running.iter().find(|r| r.unit == unit).map(|r| r.action)
    }

    /// Sets the analyzer's clock: the time stamped on calibrations and measurements that control
    /// actions complete. Without it those time points are left as they are.
    pub fn set_time(&mut self, now: DateTime) {
        self.now = Some(now);
    }

    /// Injects `fault` into the next answer (faults queue up, one per answer).
    pub fn inject(&mut self, fault: Fault) {
        self.once.push_back(fault);
    }

    /// Applies `fault` to every answer until cleared with `None`.
    pub fn set_fault(&mut self, fault: Option<Fault>) {
        self.always = fault;
    }

    /// Sets raw registers of `unit` in the table of `function` from `address`.
    pub fn set_registers(&mut self, unit: u8, function: FunctionCode, address: u16, values: &[u16]) {
        let map = self.registers.entry((unit, table_of(function))).or_default();
        for (i, v) in values.iter().enumerate() {
            if let Some(a) = address.checked_add(i as u16) {
                map.insert(a, *v);
            }
        }
    }

    /// Reads a raw register.
    pub fn register(&self, unit: u8, function: FunctionCode, address: u16) -> Option<u16> {
        self.registers.get(&(unit, table_of(function)))?.get(&address).copied()
    }

    /// Sets the value of a point (encoded per its type and byte order).
    pub fn set_point(&mut self, point: &PointSpec, value: Value) {
        let mut regs = [0u16; 6];
        let n = point.encode(value, &mut regs);
        self.set_registers(point.unit, point.function, point.address, &regs[..n]);
    }

    /// Sets the first point with `target`; false if the profile has none.
    pub fn set(&mut self, target: &Target, value: Value) -> bool {
        match self.profile.points.iter().find(|p| &p.target == target).copied() {
            Some(point) => {
                self.set_point(&point, value);
                true
            }
            None => false,
        }
    }

    /// Reads the first point with `target` back (as the master would decode it).
    pub fn get(&self, target: &Target) -> Option<Value> {
        let p = self.profile.points.iter().find(|p| &p.target == target)?;
        self.get_point(p)
    }

    /// Serves a byte stream (a serial line read in pieces): appends `incoming` to `pending`, takes
    /// every complete request out of it and returns the answers in order. A request whose
    /// function code does not say its length is taken as 8 bytes; a damaged one gets no answer,
    /// as on a real line.
    pub fn serve_bytes(&mut self, pending: &mut Vec<u8>, incoming: &[u8]) -> Vec<Reply> {
        pending.extend_from_slice(incoming);
        let mut replies = Vec::new();
        while let Some(len) = request_len(pending).filter(|l| pending.len() >= *l) {
            let frame: Vec<u8> = pending.drain(..len).collect();
            replies.extend(self.handle(&frame));
        }
        replies
    }

    /// Handles one request ADU; returns the answer, if any.
    pub fn handle(&mut self, request: &[u8]) -> Option<Reply> {
        if request.len() < 4 || crc16(request) != 0 {
            return None; // Too short or damaged: a slave stays silent.
        }
        let unit = request[0];
        let broadcast = unit == 0;
        if !broadcast && !self.units.contains(&unit) {
            return None;
        }
        self.requests += 1;
        let pdu = &request[1..request.len() - 2];
        let units: Vec<u8> = if broadcast { self.units.clone() } else { alloc::vec![unit] };
        let mut body = Vec::new();
        for u in units {
            body = self.execute(u, pdu);
        }
        if broadcast {
            return None;
        }
        let fault = self.once.pop_front().or_else(|| self.always.clone());
        let mut delay_us = self.response_delay_us;
        let mut frame_unit = unit;
        let mut noise = Vec::new();
        let mut bad_crc = false;
        let mut gap = None;
        match fault {
            Some(Fault::NoAnswer) => return None,
            Some(Fault::Late { delay_us: d }) => delay_us = d,
            Some(Fault::BadCrc) => bad_crc = true,
            Some(Fault::Exception(code)) => body = alloc::vec![pdu[0] | 0x80, code.to_u8()],
            Some(Fault::OtherUnit(u)) => frame_unit = u,
            Some(Fault::NoiseBefore(bytes)) => noise = bytes,
            Some(Fault::FragmentBefore { bytes, gap_us }) => {
                gap = Some((bytes.len(), gap_us));
                noise = bytes;
            }
            Some(Fault::Pause { after, gap_us }) => gap = Some((after, gap_us)),
            None => {}
        }
        let mut bytes = noise;
        let start = bytes.len();
        bytes.push(frame_unit);
        bytes.extend_from_slice(&body);
        let crc = crc16(&bytes[start..]);
        bytes.extend_from_slice(&crc.to_le_bytes());
        if bad_crc {
            if let Some(last) = bytes.last_mut() {
                *last ^= 0xFF;
            }
        }
        Some(Reply { bytes, delay_us, gap })
    }

    /// Executes a PDU for `unit`; returns the response PDU (normal or exception).
    fn execute(&mut self, unit: u8, pdu: &[u8]) -> Vec<u8> {
        let code = pdu[0];
        let exception = |e: ExceptionCode| alloc::vec![code | 0x80, e.to_u8()];
        let Some(function) = FunctionCode::from_u8(code) else {
            return exception(ExceptionCode::IllegalFunction);
        };
        if !function.is_read() {
            self.writes += 1;
        }
        if pdu.len() < 5 {
            return exception(ExceptionCode::IllegalDataValue);
        }
        let address = u16::from_be_bytes([pdu[1], pdu[2]]);
        let second = u16::from_be_bytes([pdu[3], pdu[4]]);
        let table = table_of(function);
        if !function.is_read() && self.is_control(unit, table, address) {
            return match self.control(unit, function, address, pdu) {
                Ok(()) => pdu[..5].to_vec(),
                Err(e) => exception(e),
            };
        }
        let Some(map) = self.registers.get_mut(&(unit, table)) else {
            return exception(ExceptionCode::IllegalDataAddress);
        };
        let span_ok = |map: &BTreeMap<u16, u16>, count: u16| {
            (0..count).all(|i| address.checked_add(i).is_some_and(|a| map.contains_key(&a)))
        };
        match function {
            FunctionCode::ReadHoldingRegisters | FunctionCode::ReadInputRegisters => {
                if second == 0 || second > 125 {
                    return exception(ExceptionCode::IllegalDataValue);
                }
                if !span_ok(map, second) {
                    return exception(ExceptionCode::IllegalDataAddress);
                }
                let mut out = alloc::vec![code, (second * 2) as u8];
                for i in 0..second {
                    out.extend_from_slice(&map[&(address + i)].to_be_bytes());
                }
                self.on_read(unit, table, address, second);
                out
            }
            FunctionCode::ReadCoils | FunctionCode::ReadDiscreteInputs => {
                if second == 0 || second > 2000 {
                    return exception(ExceptionCode::IllegalDataValue);
                }
                if !span_ok(map, second) {
                    return exception(ExceptionCode::IllegalDataAddress);
                }
                let n = second.div_ceil(8) as usize;
                let mut out = alloc::vec![code, n as u8];
                out.resize(2 + n, 0);
                for i in 0..second as usize {
                    if map[&(address + i as u16)] != 0 {
                        out[2 + i / 8] |= 1 << (i % 8);
                    }
                }
                self.on_read(unit, table, address, second);
                out
            }
            FunctionCode::WriteSingleRegister | FunctionCode::WriteSingleCoil => {
                if !map.contains_key(&address) {
                    return exception(ExceptionCode::IllegalDataAddress);
                }
                let value = if function == FunctionCode::WriteSingleCoil {
                    match second {
                        0xFF00 => 1,
                        0x0000 => 0,
                        _ => return exception(ExceptionCode::IllegalDataValue),
                    }
                } else {
                    second
                };
                map.insert(address, value);
                pdu[..5].to_vec()
            }
            FunctionCode::WriteMultipleRegisters | FunctionCode::WriteMultipleCoils => {
                let byte_count = pdu.get(5).copied().unwrap_or(0) as usize;
                let data = pdu.get(6..6 + byte_count).unwrap_or(&[]);
                let needed = if function == FunctionCode::WriteMultipleRegisters {
                    second as usize * 2
                } else {
                    (second as usize).div_ceil(8)
                };
                if second == 0 || byte_count != needed || data.len() != needed {
                    return exception(ExceptionCode::IllegalDataValue);
                }
                if !span_ok(map, second) {
                    return exception(ExceptionCode::IllegalDataAddress);
                }
                for i in 0..second as usize {
                    let v = if function == FunctionCode::WriteMultipleRegisters {
                        u16::from_be_bytes([data[2 * i], data[2 * i + 1]])
                    } else {
                        u16::from(data[i / 8] & (1 << (i % 8)) != 0)
                    };
                    map.insert(address + i as u16, v);
                }
                pdu[..5].to_vec()
            }
        }
    }
}

impl Simulator {
    /// True when some control of the profile is written at `address` of `unit`'s `table`.
    fn is_control(&self, unit: u8, table: u8, address: u16) -> bool {
        self.profile.controls.iter().any(|c| c.unit == unit && table_of(c.function) == table && c.address == address)
    }

    /// A write to a control register or coil: finds the action the value names and starts it.
    fn control(&mut self, unit: u8, function: FunctionCode, address: u16, pdu: &[u8]) -> Result<(), ExceptionCode> {
        let second = u16::from_be_bytes([pdu[3], pdu[4]]);
        // The one value written: FC 05/06 carry it in place; FC 15/16 must write exactly one.
        let value = match function {
            FunctionCode::WriteSingleRegister => second,
            FunctionCode::WriteSingleCoil => match second {
                0xFF00 => 1,
                0x0000 => 0,
                _ => return Err(ExceptionCode::IllegalDataValue),
            },
            FunctionCode::WriteMultipleRegisters if second == 1 && pdu.get(5) == Some(&2) && pdu.len() >= 8 => {
                u16::from_be_bytes([pdu[6], pdu[7]])
            }
            FunctionCode::WriteMultipleCoils if second == 1 && pdu.get(5) == Some(&1) && pdu.len() >= 7 => {
                u16::from(pdu[6] & 1)
            }
            _ => return Err(ExceptionCode::IllegalDataValue),
        };
        let coil = function.is_bit();
        let spec = self
            .profile
            .controls
            .iter()
            .find(|c| {
                c.unit == unit
                    && c.address == address
                    && c.function.is_bit() == coil
                    && if coil { (c.value != 0) == (value != 0) } else { c.value == value }
            })
            .copied()
            .ok_or(ExceptionCode::IllegalDataValue)?;
        if self.running(unit).is_some() {
            return Err(ExceptionCode::ServerDeviceBusy);
        }
        self.accepted.push((unit, spec.action));
        self.start(&spec);
        Ok(())
    }

    /// The raw status value that `spec`'s action shows, per the module docs.
    fn status_for(&self, spec: &ControlSpec) -> Option<u32> {
        let mode = spec.action.mode()?;
        let map = &self.profile.status_map;
        let written = u32::from(spec.value);
        map.iter()
            .find(|e| e.raw == written && e.mode == mode)
            .or_else(|| map.iter().find(|e| e.mode == mode))
            .or_else(|| map.iter().find(|e| e.raw == written))
            .map(|e| e.raw)
    }

    fn start(&mut self, spec: &ControlSpec) {
        let status_point = self
            .profile
            .points
            .iter()
            .filter(|p| p.target == Target::Status)
            .min_by_key(|p| p.unit != spec.unit)
            .copied();
        let raw = self.status_for(spec);
        let watched = match (status_point, raw) {
            (Some(point), Some(raw)) if self.control_cycles > 0 => {
                let previous = self.get_point(&point).unwrap_or(Value::Code(0));
                self.set_point(&point, Value::Code(raw));
                Some((point, previous))
            }
            _ => None,
        };
        match watched {
            Some(status) => self.running.push(Running {
                unit: spec.unit,
                action: spec.action,
                status: Some(status),
                reads_left: self.control_cycles,
            }),
            None => self.complete(spec.action),
        }
    }

    /// A read of `count` items from `address` of `unit`'s `table`: counts a cycle for every
    /// action whose status register it covers, and completes those that are done.
    fn on_read(&mut self, unit: u8, table: u8, address: u16, count: u16) {
        let end = u32::from(address) + u32::from(count);
        let mut done = Vec::new();
        self.running.retain_mut(|r| {
            let Some((point, previous)) = r.status else { return true };
            let covered = point.unit == unit
                && table_of(point.function) == table
                && u32::from(point.address) >= u32::from(address)
                && u32::from(point.address) < end;
            if covered {
                r.reads_left = r.reads_left.saturating_sub(1);
                if r.reads_left == 0 {
                    done.push((r.action, point, previous));
                    return false;
                }
            }
            true
        });
        for (action, point, previous) in done {
            self.set_point(&point, previous);
            self.complete(action);
        }
    }

    /// The effects of a completed action (module docs).
    fn complete(&mut self, action: ControlAction) {
        let zero = matches!(action, ControlAction::ZeroCalibration | ControlAction::Calibration);
        let span = matches!(action, ControlAction::SpanCalibration | ControlAction::Calibration);
        if zero {
            self.adjust(ParamKey::Intercept, |b| b + 0.01);
        }
        if span {
            self.adjust(ParamKey::Slope, |k| k * 1.01);
        }
        if let Some(now) = self.now {
            let stamp = |key: ParamKey| match key {
                ParamKey::CalibrationTime => zero || span,
                ParamKey::ZeroCalibrationTime => zero,
                ParamKey::SpanCalibrationTime => span,
                _ => false,
            };
            for point in self.points_with(stamp) {
                self.set_point(&point, Value::Time(now));
            }
            if action.mode() == Some(AnalyzerMode::Measuring) {
                self.set(&Target::SampleTime, Value::Time(now));
            }
        }
        if action == ControlAction::RetainSample {
            let next = match self.get(&VASE_NO).and_then(|v| v.as_f64()) {
                Some(n) if n >= 1.0 => n + 1.0,
                _ => 1.0,
            };
            self.set(&VASE_NO, Value::Number(next));
        }
    }

    /// The parameter points whose key `wanted` accepts.
    fn points_with(&self, wanted: impl Fn(ParamKey) -> bool) -> Vec<PointSpec> {
        let kind = self
            .profile
            .points
            .iter()
            .find_map(|p| match p.target {
                Target::Pollutant(c) => Some(AnalyzerKind::of(c)),
                _ => None,
            })
            .unwrap_or(AnalyzerKind::Water);
        self.profile
            .points
            .iter()
            .filter(|p| match p.target {
                Target::Info(c) => resolve(c, kind).is_some_and(&wanted),
                _ => false,
            })
            .copied()
            .collect()
    }

    /// Applies `f` to every numeric point of `key`.
    fn adjust(&mut self, key: ParamKey, f: impl Fn(f64) -> f64) {
        for point in self.points_with(|k| k == key) {
            if let Some(v) = self.get_point(&point).and_then(|v| v.as_f64()) {
                self.set_point(&point, Value::Number(f(v)));
            }
        }
    }

    /// Reads a point back (as the master would decode it).
    fn get_point(&self, p: &PointSpec) -> Option<Value> {
        let mut regs = [0u16; 6];
        for (i, r) in regs.iter_mut().take(p.value.registers() as usize).enumerate() {
            *r = self.register(p.unit, p.function, p.address.wrapping_add(i as u16))?;
        }
        p.decode(&regs).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Code;
    use crate::profile::builtin::SURFACE_WATER_COD;

    #[test]
    fn serves_a_float_in_the_profiles_byte_order() {
        let mut sim = Simulator::new(&SURFACE_WATER_COD);
        assert!(sim.set(&Target::Pollutant(Code::new("w01018")), Value::Number(42.5)));
        // Read 2 holding registers at 0x1008 from unit 1.
        let mut req = alloc::vec![0x01, 0x03, 0x10, 0x08, 0x00, 0x02];
        let crc = crc16(&req);
        req.extend_from_slice(&crc.to_le_bytes());
        let reply = sim.handle(&req).unwrap();
        assert_eq!(&reply.bytes[..7], &[0x01, 0x03, 0x04, 0x00, 0x00, 0x42, 0x2A]); // CDAB: low word first
        assert_eq!(crc16(&reply.bytes), 0);
    }

    #[test]
    fn silent_on_damage_and_strangers_and_exceptions_on_bad_addresses() {
        let mut sim = Simulator::new(&SURFACE_WATER_COD);
        let mut req = alloc::vec![0x01, 0x03, 0x20, 0x00, 0x00, 0x01];
        let crc = crc16(&req);
        req.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(sim.handle(&req).unwrap().bytes[..3], [0x01, 0x83, 0x02]);
        req[7] ^= 1;
        assert_eq!(sim.handle(&req), None);
        assert_eq!(sim.handle(&[0x09, 0x03, 0x00]), None);
        for len in 0..12 {
            let _ = sim.handle(&[0x01; 12][..len]);
        }
    }

    /// `pdu` to `unit` with its CRC.
    fn adu(unit: u8, pdu: &[u8]) -> Vec<u8> {
        let mut req = alloc::vec![unit];
        req.extend_from_slice(pdu);
        let crc = crc16(&req);
        req.extend_from_slice(&crc.to_le_bytes());
        req
    }

    /// The PDU of the answer to `pdu` sent to unit 1.
    fn ask(sim: &mut Simulator, pdu: &[u8]) -> Vec<u8> {
        let reply = sim.handle(&adu(1, pdu)).expect("an answer");
        assert_eq!(crc16(&reply.bytes), 0);
        reply.bytes[1..reply.bytes.len() - 2].to_vec()
    }

    /// One poll of the surface-water status block (0x1083..0x1086), as a poll cycle reads it.
    fn poll_status(sim: &mut Simulator) -> u16 {
        let out = ask(sim, &[0x03, 0x10, 0x83, 0x00, 0x04]);
        u16::from_be_bytes([out[2], out[3]])
    }

    fn cod() -> Simulator {
        let mut sim = Simulator::new(&SURFACE_WATER_COD);
        sim.set(&Target::Status, Value::Code(1));
        sim.set(&Target::Info(Code::new("i13008")), Value::Number(1.0));
        sim.set(&Target::Info(Code::new("i13007")), Value::Number(0.5));
        sim
    }

    fn number(sim: &Simulator, code: &str) -> f64 {
        sim.get(&Target::Info(Code::new(code))).and_then(|v| v.as_f64()).unwrap()
    }

    #[test]
    fn a_span_calibration_write_calibrates_for_three_cycles_then_moves_the_slope() {
        let mut sim = cod();
        let now = DateTime::new(2026, 3, 1, 8, 30, 0).unwrap();
        sim.set_time(now);
        // FC 06, register 0x1200 = 9 (standard calibration): echoed.
        let write = [0x06, 0x12, 0x00, 0x00, 0x09];
        assert_eq!(ask(&mut sim, &write), write);
        assert_eq!(sim.accepted(), &[(1, ControlAction::SpanCalibration)]);
        assert_eq!(sim.running(1), Some(ControlAction::SpanCalibration));
        assert_eq!(sim.writes(), 1);
        // Status 9 (standard calibration) for three polls; the slope moves when it is done.
        for _ in 0..3 {
            assert_eq!(number(&sim, "i13008"), 1.0);
            assert_eq!(poll_status(&mut sim), 9);
        }
        assert_eq!(poll_status(&mut sim), 1, "back to measuring");
        assert_eq!(sim.running(1), None);
        assert!((number(&sim, "i13008") - 1.01).abs() < 1e-6);
        assert_eq!(number(&sim, "i13007"), 0.5, "a span calibration leaves the intercept");
        assert_eq!(sim.get(&Target::Info(Code::new("i13006"))), Some(Value::Time(now)));
        // Reads elsewhere are not cycles of the status register.
        assert_eq!(ask(&mut sim, &write), write);
        for _ in 0..5 {
            ask(&mut sim, &[0x03, 0x10, 0x08, 0x00, 0x02]);
        }
        assert_eq!(sim.running(1), Some(ControlAction::SpanCalibration));
    }

    #[test]
    fn zero_and_full_calibration_cleaning_and_measuring_enter_their_modes() {
        let mut sim = cod();
        // 8: blank (zero) calibration, status 8, the intercept moves.
        ask(&mut sim, &[0x06, 0x12, 0x00, 0x00, 0x08]);
        assert_eq!(poll_status(&mut sim), 8);
        sim.control_cycles = 1;
        // 19: calibrate (zero and span): the block has no status 19, so the first calibration
        // status (8); both slope and intercept move.
        for _ in 0..3 {
            poll_status(&mut sim);
        }
        assert!((number(&sim, "i13007") - 0.51).abs() < 1e-6);
        assert_eq!(number(&sim, "i13008"), 1.0);
        // No clock set: the calibration time is left as it was (zeroed registers, no valid time).
        assert_eq!(sim.get(&Target::Info(Code::new("i13006"))), None);
        ask(&mut sim, &[0x06, 0x12, 0x00, 0x00, 0x13]);
        assert_eq!(poll_status(&mut sim), 8);
        assert_eq!(poll_status(&mut sim), 1);
        assert!((number(&sim, "i13007") - 0.52).abs() < 1e-6);
        assert!((number(&sim, "i13008") - 1.01).abs() < 1e-6);
        // 1: measure a sample (status 1), stamped with the clock once it is done.
        let now = DateTime::new(2026, 3, 1, 9, 0, 0).unwrap();
        sim.set_time(now);
        sim.control_cycles = 2;
        sim.set(&Target::Status, Value::Code(0));
        ask(&mut sim, &[0x06, 0x12, 0x00, 0x00, 0x01]);
        assert_eq!(poll_status(&mut sim), 1);
        assert_eq!(poll_status(&mut sim), 1);
        assert_eq!(poll_status(&mut sim), 0, "back to idle");
        assert_eq!(sim.get(&Target::SampleTime), Some(Value::Time(now)));
        // 10: initial cleaning; the block's status for it is 10 (initialisation).
        ask(&mut sim, &[0x06, 0x12, 0x00, 0x00, 0x0A]);
        assert_eq!(poll_status(&mut sim), 10);
        assert_eq!(
            sim.accepted().iter().map(|(_, a)| *a).collect::<Vec<_>>(),
            [
                ControlAction::ZeroCalibration,
                ControlAction::Calibration,
                ControlAction::SampleNow,
                ControlAction::Cleaning
            ]
        );
    }

    #[test]
    fn unknown_values_get_illegal_data_value_and_a_busy_unit_says_so() {
        let mut sim = cod();
        // 42 is no action of the control register: exception 3, nothing started.
        assert_eq!(ask(&mut sim, &[0x06, 0x12, 0x00, 0x00, 42]), [0x86, 0x03]);
        assert!(sim.accepted().is_empty());
        assert_eq!(sim.running(1), None);
        // A one-register FC 16 is the same write.
        assert_eq!(ask(&mut sim, &[0x10, 0x12, 0x00, 0x00, 0x01, 0x02, 0x00, 0x09]), [0x10, 0x12, 0x00, 0x00, 0x01]);
        assert_eq!(sim.running(1), Some(ControlAction::SpanCalibration));
        // Another action while calibrating: exception 6 (busy).
        assert_eq!(ask(&mut sim, &[0x06, 0x12, 0x00, 0x00, 0x01]), [0x86, 0x06]);
        // Two registers at the control address: not a control value.
        assert_eq!(ask(&mut sim, &[0x10, 0x12, 0x00, 0x00, 0x02, 0x04, 0, 9, 0, 9]), [0x90, 0x03]);
        assert_eq!(sim.writes(), 4);
        assert_eq!(sim.accepted().len(), 1);
        // A profile without controls: the register does not exist.
        let mut plain = Simulator::new(&crate::profile::builtin::WORD_SWAPPED_COD);
        let reply = plain.handle(&adu(5, &[0x06, 0x12, 0x00, 0x00, 0x09])).unwrap();
        assert_eq!(reply.bytes[1..3], [0x86, 0x02]);
        assert!(plain.accepted().is_empty());
    }

    #[test]
    fn sample_retention_on_a_coil_advances_the_bottle_number_at_once() {
        use crate::modbus::FunctionCode as F;
        use crate::profile::{ByteOrder, ControlSpec, OwnedProfile, PointSpec, ValueType};
        let mut owned = OwnedProfile::from_profile(&SURFACE_WATER_COD);
        owned.points.push(PointSpec {
            unit: 1,
            function: F::ReadHoldingRegisters,
            address: 0x10E0,
            value: ValueType::U16,
            order: ByteOrder::ABCD,
            scale: 1.0,
            offset: 0.0,
            target: VASE_NO,
        });
        owned.controls.push(ControlSpec {
            action: ControlAction::RetainSample,
            unit: 1,
            function: F::WriteSingleCoil,
            address: 0x0020,
            value: 1,
        });
        let mut sim = Simulator::new(&owned.as_profile());
        sim.set(&Target::Status, Value::Code(1));
        // Coil on: retention, bottle 1 then 2; the status does not change.
        for bottle in [1.0, 2.0] {
            assert_eq!(ask(&mut sim, &[0x05, 0x00, 0x20, 0xFF, 0x00]), [0x05, 0x00, 0x20, 0xFF, 0x00]);
            assert_eq!(sim.get(&VASE_NO), Some(Value::Number(bottle)));
            assert_eq!(sim.running(1), None);
            assert_eq!(poll_status(&mut sim), 1);
        }
        // Coil off is no action; a coil value other than 0xFF00/0x0000 is illegal.
        assert_eq!(ask(&mut sim, &[0x05, 0x00, 0x20, 0x00, 0x00]), [0x85, 0x03]);
        assert_eq!(ask(&mut sim, &[0x05, 0x00, 0x20, 0x12, 0x34]), [0x85, 0x03]);
        assert_eq!(sim.accepted(), &[(1, ControlAction::RetainSample), (1, ControlAction::RetainSample)]);
    }
}
