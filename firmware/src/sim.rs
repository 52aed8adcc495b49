//! A simulated analyzer: a Modbus RTU slave serving a profile's register map, sans-IO.
//!
//! Feed it a request ADU with [`Simulator::handle`]; it returns what the device would put on the
//! wire, and after how long, or nothing. Faults can be injected for the next answers or for every
//! answer: no answer, a late answer, a damaged CRC, an exception, another unit answering, noise
//! before the frame, a fragment and a silence before the frame, a pause inside the frame. Values are settable by target (`w01018`, `i13008`, status, ...) so tests and the
//! demo can move a slope, start a calibration or raise an alarm.
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

use crate::modbus::{ExceptionCode, FunctionCode, crc16};
use crate::profile::{OwnedProfile, PointSpec, Profile, Target, Value};

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
    requests: u32,
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
    /// A device serving `profile`: every unit named by its points, every register span zeroed.
    pub fn new(profile: &Profile<'_>) -> Self {
        let mut registers: BTreeMap<(u8, u8), BTreeMap<u16, u16>> = BTreeMap::new();
        let mut units = Vec::new();
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
            requests: 0,
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
        let mut regs = [0u16; 6];
        for (i, r) in regs.iter_mut().take(p.value.registers() as usize).enumerate() {
            *r = self.register(p.unit, p.function, p.address.wrapping_add(i as u16))?;
        }
        p.decode(&regs).ok()
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
        if pdu.len() < 5 {
            return exception(ExceptionCode::IllegalDataValue);
        }
        let address = u16::from_be_bytes([pdu[1], pdu[2]]);
        let second = u16::from_be_bytes([pdu[3], pdu[4]]);
        let table = table_of(function);
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
}
