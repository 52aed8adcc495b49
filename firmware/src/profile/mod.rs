//! Analyzer profiles as data: which registers to read and what each becomes.
//!
//! A [`Profile`] is a list of [`PointSpec`]s plus a status map. Each point names a unit, a read
//! function, an address, a [`ValueType`] (which fixes the register count), a [`ByteOrder`], a linear
//! scale and offset, and a [`Target`]: a pollutant value, an analyzer status/alarm/fault word, a
//! dynamic-control parameter (i-code), the analyzer's own measurement time, or a facility
//! electricity quantity.
//!
//! A profile may also list [`ControlSpec`]s: the actions a platform can ask of the analyzer
//! (HJ 212-2017 CN 3011–3015: calibration, immediate sampling, cleaning, comparison sampling,
//! sample retention), each triggered by one Modbus write to a control register or coil. A
//! profile without a known control register lists none, and the DAU refuses those commands.
//!
//! Invariants:
//! - Everything is `Copy` and constructible in `const`/`static` under `no_std`; the shipped profiles in
//!   [`builtin`] are `static`s.
//! - Under `std`, every type also deserialises with serde ([`OwnedProfile`] for the top level).
//! - Decoding never panics: short register slices and invalid BCD or dates are errors.
//! - Byte order names follow one convention: the letters name the bytes of the big-endian value
//!   (A most significant) in the order they appear on the wire. `ABCD` is plain big-endian, `CDAB`
//!   swaps the 16-bit words (low word first, the Hach style), `BADC` swaps the bytes in each word,
//!   `DCBA` reverses everything. For 64-bit values the same permutation applies per 32-bit half, and
//!   word swapping reverses all four words.

pub mod builtin;

use core::fmt;

use crate::modbus::{FunctionCode, ReadBlock, Request};

/// A code of up to 8 ASCII characters: a pollutant code (`w01018`), an i-code (`i13008`) or a
/// facility code. Stored inline so it is `Copy` and `const`-constructible.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code {
    bytes: [u8; 8],
    len: u8,
}

impl Code {
    /// A code from a literal.
    ///
    /// # Panics
    /// If `s` is longer than 8 bytes or not ASCII; in a `const` or `static` this is a compile error.
    /// Use [`Code::try_new`] for codes from configuration.
    pub const fn new(s: &str) -> Self {
        match Self::try_new(s) {
            Some(c) => c,
            None => panic!("a code is at most 8 ASCII bytes"),
        }
    }

    /// A code from `s`, or `None` when it is empty, longer than 8 bytes or not ASCII alphanumeric.
    pub const fn try_new(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.is_empty() || b.len() > 8 {
            return None;
        }
        let mut bytes = [0u8; 8];
        let mut i = 0;
        while i < b.len() {
            if !b[i].is_ascii_alphanumeric() {
                return None;
            }
            bytes[i] = b[i];
            i += 1;
        }
        Some(Self { bytes, len: b.len() as u8 })
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII bytes are ever stored, so this cannot fail; fall back to "" to stay panic-free.
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({:?})", self.as_str())
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(feature = "std")]
impl<'de> serde::Deserialize<'de> for Code {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        Self::try_new(&s).ok_or_else(|| serde::de::Error::custom("a code is 1 to 8 ASCII letters or digits"))
    }
}

/// Byte order of a multi-register value; see the module docs for the naming convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
pub enum ByteOrder {
    /// Big-endian: registers high word first, bytes high first.
    #[default]
    ABCD,
    /// Word-swapped: low register first, bytes high first in each register.
    CDAB,
    /// Byte-swapped within each register, high register first.
    BADC,
    /// Fully little-endian.
    DCBA,
}

/// How the registers of a point are interpreted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
#[cfg_attr(feature = "std", serde(rename_all = "snake_case"))]
pub enum ValueType {
    /// One register, unsigned.
    U16,
    /// One register, two's complement.
    I16,
    /// Two registers, unsigned.
    U32,
    /// Two registers, two's complement.
    I32,
    /// Two registers, IEEE 754 single.
    F32,
    /// Four registers, IEEE 754 double.
    F64,
    /// One register holding four BCD digits (0..=9999).
    Bcd16,
    /// Two registers holding eight BCD digits.
    Bcd32,
    /// A float carried in two registers and used as an integer code (some CEMS report status so).
    F32Code,
    /// Three registers of BCD `YY MM DD hh mm ss` (surface-water block, FPI): year 2000 + YY.
    TimeBcd6,
    /// Four registers: seconds; minute·100 + hour; day·100 + month; year (Hach "dynamic" style).
    TimePackedHach,
    /// Six registers: year, month, day, hour, minute, second, one integer each.
    TimeFields6,
    /// Three registers of bytes `YY MM DD hh mm ss`, binary: year 2000 + YY.
    TimeBytes6,
}

impl ValueType {
    /// Registers this type occupies.
    pub const fn registers(self) -> u16 {
        match self {
            Self::U16 | Self::I16 | Self::Bcd16 => 1,
            Self::U32 | Self::I32 | Self::F32 | Self::Bcd32 | Self::F32Code => 2,
            Self::TimeBcd6 | Self::TimeBytes6 => 3,
            Self::F64 | Self::TimePackedHach => 4,
            Self::TimeFields6 => 6,
        }
    }

    /// True for the time encodings.
    pub const fn is_time(self) -> bool {
        matches!(self, Self::TimeBcd6 | Self::TimePackedHach | Self::TimeFields6 | Self::TimeBytes6)
    }
}

/// A civil date and time (local time at the site; HJ 212 gives no time zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DateTime {
    /// Year, e.g. 2016.
    pub year: u16,
    /// Month 1..=12.
    pub month: u8,
    /// Day 1..=31 (checked against the month).
    pub day: u8,
    /// Hour 0..=23.
    pub hour: u8,
    /// Minute 0..=59.
    pub minute: u8,
    /// Second 0..=59.
    pub second: u8,
}

impl DateTime {
    /// A checked date-time; `None` if any field is out of range.
    pub const fn new(year: u16, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> Option<Self> {
        if month == 0
            || month > 12
            || day == 0
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        Some(Self { year, month, day, hour, minute, second })
    }

    /// Writes `YYYYMMDDhhmmss` (HJ 212 DataTime / SampleTime, 14 digits) into `out`.
    pub fn write_hj212(&self, out: &mut [u8; 14]) {
        let y = self.year;
        let fields = [(y / 100) as u8, (y % 100) as u8, self.month, self.day, self.hour, self.minute, self.second];
        for (i, v) in fields.iter().enumerate() {
            out[2 * i] = b'0' + (v / 10) % 10;
            out[2 * i + 1] = b'0' + v % 10;
        }
    }
}

/// Days in `month` of `year` (Gregorian); 0 for an invalid month.
pub const fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

/// Analyzer work mode, the common ground of the vendor status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
#[cfg_attr(feature = "std", serde(rename_all = "snake_case"))]
pub enum AnalyzerMode {
    /// Idle or standby between measurements.
    Idle,
    /// Measuring a sample.
    Measuring,
    /// Maintenance or O&M.
    Maintenance,
    /// Fault.
    Fault,
    /// Zero/span calibration or standardisation.
    Calibration,
    /// Standard-sample check, zero check, span check, blank test, spike recovery, parallel sample.
    Check,
    /// Cleaning or back-blow.
    Cleaning,
    /// Stopped or offline by declaration.
    Stopped,
    /// Anything else.
    Other,
}

impl AnalyzerMode {
    /// HJ 212-2017 Table B.10 i12001 work status: 0 running, 1 maintenance, 2 fault, 3 calibration,
    /// 5 back-blow, 7 measuring, 9 standby, 10 O&M.
    pub const fn i12001(self) -> u8 {
        match self {
            Self::Idle => 9,
            Self::Measuring => 7,
            Self::Maintenance => 1,
            Self::Fault => 2,
            Self::Calibration | Self::Check => 3,
            Self::Cleaning => 5,
            Self::Stopped => 9,
            Self::Other => 0,
        }
    }
}

/// One raw status value and the mode it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
pub struct StatusEntry {
    /// The raw register value.
    pub raw: u32,
    /// What it means.
    pub mode: AnalyzerMode,
}

/// A facility electricity quantity (HJ 212-2017 i33200..i33202 and the e-codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
#[cfg_attr(feature = "std", serde(rename_all = "snake_case"))]
pub enum FacilityQuantity {
    /// Phase current in A (phase 1..=3).
    Current(u8),
    /// Total active power in kW.
    Power,
    /// Cumulative active energy in kWh (i33201).
    Energy,
}

/// What a point becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
#[cfg_attr(feature = "std", serde(rename_all = "snake_case"))]
pub enum Target {
    /// A pollutant or flow value, e.g. `w01018` (mg/L) or `w00000` (L/s).
    Pollutant(Code),
    /// A cumulative totaliser of a pollutant or flow, e.g. `w00000` in m³.
    Total(Code),
    /// The analyzer's work status word, mapped through the profile's status map.
    Status,
    /// An alarm code or bit word; 0 means no alarm (i12003 = 0).
    Alarm,
    /// A fault code or bit word; 0 means no fault; non-zero gives flag D.
    Fault,
    /// The analyzer's own measurement time of the current result (HJ 212 `SampleTime`).
    SampleTime,
    /// A dynamic-control parameter by i-code, e.g. `i13008` slope; times decode to `YYYYMMDDhhmmss`.
    Info(Code),
    /// A facility electricity quantity.
    Facility(FacilityQuantity),
}

/// The retention bottle number, `i43006` (HJ 212-2017 Table B.10, water sampler): a profile with a
/// point of this target can say which bottle a sample retention (CN 3015) filled.
pub const VASE_NO: Target = Target::Info(Code::new("i43006"));

/// One point: where it is, how to decode it, what it becomes.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
pub struct PointSpec {
    /// Unit address.
    pub unit: u8,
    /// Read function (FC 03 or 04 for registers).
    pub function: FunctionCode,
    /// First register.
    pub address: u16,
    /// Value type; fixes the register count.
    pub value: ValueType,
    /// Byte order.
    #[cfg_attr(feature = "std", serde(default))]
    pub order: ByteOrder,
    /// Multiplier applied to numeric values (default 1).
    #[cfg_attr(feature = "std", serde(default = "one"))]
    pub scale: f64,
    /// Added after scaling (default 0).
    #[cfg_attr(feature = "std", serde(default))]
    pub offset: f64,
    /// What the value becomes.
    pub target: Target,
}

#[cfg(feature = "std")]
fn one() -> f64 {
    1.0
}

/// A decoded point value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A number after scale and offset.
    Number(f64),
    /// A raw integer code (status, alarm, fault words), before any scaling.
    Code(u32),
    /// A time.
    Time(DateTime),
}

impl Value {
    /// The number, if this is one (codes convert too).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::Number(v) => Some(v),
            Self::Code(c) => Some(c as f64),
            Self::Time(_) => None,
        }
    }
}

/// Why registers could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer registers than the type needs.
    Short {
        /// Registers needed.
        needed: u16,
        /// Registers given.
        got: usize,
    },
    /// A nibble above 9 in a BCD field, at register `index`.
    InvalidBcd {
        /// Register index within the point.
        index: usize,
    },
    /// The fields do not form a valid date and time.
    InvalidTime,
    /// A float is NaN or infinite.
    NotFinite,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Short { needed, got } => write!(f, "{got} registers, {needed} needed"),
            Self::InvalidBcd { index } => write!(f, "invalid BCD digit in register {index}"),
            Self::InvalidTime => f.write_str("invalid date or time"),
            Self::NotFinite => f.write_str("value is NaN or infinite"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}

/// Puts `regs` (2 or 4 registers as read) into big-endian byte order per `order`.
fn to_be_bytes<const N: usize>(regs: &[u16], order: ByteOrder) -> [u8; N] {
    let mut wire = [0u8; N];
    for (i, r) in regs.iter().take(N / 2).enumerate() {
        wire[2 * i..2 * i + 2].copy_from_slice(&r.to_be_bytes());
    }
    permute::<N>(wire, order)
}

/// The permutation is its own inverse for every order, so one function maps both ways.
fn permute<const N: usize>(b: [u8; N], order: ByteOrder) -> [u8; N] {
    let mut out = b;
    match order {
        ByteOrder::ABCD => {}
        ByteOrder::DCBA => out.reverse(),
        ByteOrder::BADC => {
            for pair in out.chunks_exact_mut(2) {
                pair.swap(0, 1);
            }
        }
        ByteOrder::CDAB => {
            let words = N / 2;
            for w in 0..words {
                out[2 * w] = b[2 * (words - 1 - w)];
                out[2 * w + 1] = b[2 * (words - 1 - w) + 1];
            }
        }
    }
    out
}

const fn bcd_byte(b: u8) -> Option<u8> {
    let (hi, lo) = (b >> 4, b & 0x0F);
    if hi > 9 || lo > 9 { None } else { Some(hi * 10 + lo) }
}

fn bcd_u16(r: u16, index: usize) -> Result<u32, DecodeError> {
    let [h, l] = r.to_be_bytes();
    match (bcd_byte(h), bcd_byte(l)) {
        (Some(h), Some(l)) => Ok(h as u32 * 100 + l as u32),
        _ => Err(DecodeError::InvalidBcd { index }),
    }
}

impl PointSpec {
    /// The read block this point needs.
    pub const fn block(&self) -> ReadBlock {
        ReadBlock { unit: self.unit, function: self.function, address: self.address, count: self.value.registers() }
    }

    /// Decodes the point from its registers (`regs[0]` is the register at `address`).
    ///
    /// Status, alarm and fault targets decode to [`Value::Code`]; times to [`Value::Time`]; all
    /// else to [`Value::Number`] after `scale` and `offset`.
    ///
    /// # Errors
    /// [`DecodeError`] for short input, bad BCD, invalid dates or non-finite floats.
    pub fn decode(&self, regs: &[u16]) -> Result<Value, DecodeError> {
        let needed = self.value.registers();
        if regs.len() < needed as usize {
            return Err(DecodeError::Short { needed, got: regs.len() });
        }
        let regs = &regs[..needed as usize];
        let raw: f64 = match self.value {
            ValueType::U16 => self.one_word(regs[0]) as f64,
            ValueType::I16 => self.one_word(regs[0]) as i16 as f64,
            ValueType::U32 => u32::from_be_bytes(to_be_bytes::<4>(regs, self.order)) as f64,
            ValueType::I32 => i32::from_be_bytes(to_be_bytes::<4>(regs, self.order)) as f64,
            ValueType::F32 | ValueType::F32Code => {
                let v = f32::from_be_bytes(to_be_bytes::<4>(regs, self.order));
                if !v.is_finite() {
                    return Err(DecodeError::NotFinite);
                }
                v as f64
            }
            ValueType::F64 => {
                let v = f64::from_be_bytes(to_be_bytes::<8>(regs, self.order));
                if !v.is_finite() {
                    return Err(DecodeError::NotFinite);
                }
                v
            }
            ValueType::Bcd16 => bcd_u16(self.one_word(regs[0]), 0)? as f64,
            ValueType::Bcd32 => {
                let b = to_be_bytes::<4>(regs, self.order);
                let hi = bcd_u16(u16::from_be_bytes([b[0], b[1]]), 0)?;
                let lo = bcd_u16(u16::from_be_bytes([b[2], b[3]]), 1)?;
                (hi * 10_000 + lo) as f64
            }
            ValueType::TimeBcd6 | ValueType::TimePackedHach | ValueType::TimeFields6 | ValueType::TimeBytes6 => {
                return self.decode_time(regs).map(Value::Time);
            }
        };
        Ok(match self.target {
            Target::Status | Target::Alarm | Target::Fault => Value::Code(raw.max(0.0).min(u32::MAX as f64) as u32),
            _ => Value::Number(raw * self.scale + self.offset),
        })
    }

    fn one_word(&self, r: u16) -> u16 {
        match self.order {
            ByteOrder::BADC | ByteOrder::DCBA => r.swap_bytes(),
            ByteOrder::ABCD | ByteOrder::CDAB => r,
        }
    }

    fn decode_time(&self, regs: &[u16]) -> Result<DateTime, DecodeError> {
        let (y, mo, d, h, mi, s): (u32, u32, u32, u32, u32, u32) = match self.value {
            ValueType::TimeBcd6 => {
                let mut f = [0u32; 6];
                for (i, r) in regs.iter().enumerate() {
                    let [a, b] = r.to_be_bytes();
                    f[2 * i] = bcd_byte(a).ok_or(DecodeError::InvalidBcd { index: i })? as u32;
                    f[2 * i + 1] = bcd_byte(b).ok_or(DecodeError::InvalidBcd { index: i })? as u32;
                }
                (2000 + f[0], f[1], f[2], f[3], f[4], f[5])
            }
            ValueType::TimeBytes6 => {
                let b = [regs[0].to_be_bytes(), regs[1].to_be_bytes(), regs[2].to_be_bytes()];
                (2000 + b[0][0] as u32, b[0][1] as u32, b[1][0] as u32, b[1][1] as u32, b[2][0] as u32, b[2][1] as u32)
            }
            ValueType::TimePackedHach => {
                let (sec, min_hour, day_month, year) = (regs[0] as u32, regs[1] as u32, regs[2] as u32, regs[3] as u32);
                (year, day_month % 100, day_month / 100, min_hour % 100, min_hour / 100, sec)
            }
            _ => (regs[0] as u32, regs[1] as u32, regs[2] as u32, regs[3] as u32, regs[4] as u32, regs[5] as u32),
        };
        let small = |v: u32| u8::try_from(v).map_err(|_| DecodeError::InvalidTime);
        let year = u16::try_from(y).map_err(|_| DecodeError::InvalidTime)?;
        DateTime::new(year, small(mo)?, small(d)?, small(h)?, small(mi)?, small(s)?).ok_or(DecodeError::InvalidTime)
    }

    /// Encodes `value` (before scale and offset are applied on decode) into registers, the inverse of
    /// [`PointSpec::decode`]; used by the simulator. Returns the number of registers written.
    pub fn encode(&self, value: Value, out: &mut [u16]) -> usize {
        let n = self.value.registers() as usize;
        if out.len() < n {
            return 0;
        }
        let number = match value {
            Value::Number(v) if self.scale != 0.0 => (v - self.offset) / self.scale,
            Value::Number(v) => v,
            Value::Code(c) => c as f64,
            Value::Time(t) => {
                self.encode_time(t, out);
                return n;
            }
        };
        let put4 = |b: [u8; 4], out: &mut [u16]| {
            let w = permute::<4>(b, self.order);
            out[0] = u16::from_be_bytes([w[0], w[1]]);
            out[1] = u16::from_be_bytes([w[2], w[3]]);
        };
        match self.value {
            ValueType::U16 => out[0] = self.one_word(round(number).clamp(0.0, 65535.0) as u16),
            ValueType::I16 => out[0] = self.one_word(round(number).clamp(-32768.0, 32767.0) as i16 as u16),
            ValueType::U32 => put4((round(number).clamp(0.0, u32::MAX as f64) as u32).to_be_bytes(), out),
            ValueType::I32 => put4((round(number).clamp(i32::MIN as f64, i32::MAX as f64) as i32).to_be_bytes(), out),
            ValueType::F32 | ValueType::F32Code => put4((number as f32).to_be_bytes(), out),
            ValueType::F64 => {
                let w = permute::<8>(number.to_be_bytes(), self.order);
                for i in 0..4 {
                    out[i] = u16::from_be_bytes([w[2 * i], w[2 * i + 1]]);
                }
            }
            ValueType::Bcd16 => out[0] = self.one_word(to_bcd(round(number).clamp(0.0, 9999.0) as u32) as u16),
            ValueType::Bcd32 => {
                let v = round(number).clamp(0.0, 99_999_999.0) as u32;
                let b = ((to_bcd(v / 10_000) << 16) | to_bcd(v % 10_000)).to_be_bytes();
                put4(b, out);
            }
            _ => return 0,
        }
        n
    }

    fn encode_time(&self, t: DateTime, out: &mut [u16]) {
        let yy = (t.year % 100) as u8;
        match self.value {
            ValueType::TimeBcd6 => {
                let b = |v: u8| ((v / 10) << 4) | (v % 10);
                out[0] = u16::from_be_bytes([b(yy), b(t.month)]);
                out[1] = u16::from_be_bytes([b(t.day), b(t.hour)]);
                out[2] = u16::from_be_bytes([b(t.minute), b(t.second)]);
            }
            ValueType::TimeBytes6 => {
                out[0] = u16::from_be_bytes([yy, t.month]);
                out[1] = u16::from_be_bytes([t.day, t.hour]);
                out[2] = u16::from_be_bytes([t.minute, t.second]);
            }
            ValueType::TimePackedHach => {
                out[0] = t.second as u16;
                out[1] = t.minute as u16 * 100 + t.hour as u16;
                out[2] = t.day as u16 * 100 + t.month as u16;
                out[3] = t.year;
            }
            ValueType::TimeFields6 => {
                let f = [t.year, t.month as u16, t.day as u16, t.hour as u16, t.minute as u16, t.second as u16];
                out[..6].copy_from_slice(&f);
            }
            _ => {}
        }
    }
}

/// Rounds half away from zero without `std` (values beyond `i64` saturate, then get clamped).
fn round(x: f64) -> f64 {
    let t = x as i64 as f64;
    let f = x - t;
    if f >= 0.5 {
        t + 1.0
    } else if f <= -0.5 {
        t - 1.0
    } else {
        t
    }
}

const fn to_bcd(v: u32) -> u32 {
    ((v / 1000 % 10) << 12) | ((v / 100 % 10) << 8) | ((v / 10 % 10) << 4) | (v % 10)
}

/// Rule deriving a facility's running status from its current (HJ 212 `SBxxx-RS`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
pub struct FacilityRule {
    /// Facility code used on the wire (e.g. `SB1`).
    pub code: Code,
    /// The facility runs when the largest phase current is at or above this, in A.
    pub running_current_a: f64,
}

impl FacilityRule {
    /// `SBxxx-RS`: 1 running, 0 off, from the largest phase current.
    pub fn running_status(&self, max_phase_current_a: f64) -> u8 {
        u8::from(max_phase_current_a >= self.running_current_a)
    }
}

/// An action a platform can ask of an analyzer (HJ 212-2017 Appendix C tables C.30–C.34).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
#[cfg_attr(feature = "std", serde(rename_all = "snake_case"))]
pub enum ControlAction {
    /// Zero-point calibration (CN 3011; in HJ 212-2025 with `CalibrationType=0`).
    ZeroCalibration,
    /// Span calibration (CN 3011; in HJ 212-2025 with `CalibrationType=1`).
    SpanCalibration,
    /// The analyzer's own zero-and-span calibration: an HJ 212-2017 CN 3011, which carries no
    /// `CalibrationType`.
    Calibration,
    /// Immediate sampling: measure a sample now (CN 3012).
    SampleNow,
    /// Cleaning or back-blowing (CN 3013).
    Cleaning,
    /// Comparison sampling (CN 3014).
    ComparisonSample,
    /// Over-limit sample retention (CN 3015).
    RetainSample,
}

impl ControlAction {
    /// Every action.
    pub const ALL: [Self; 7] = [
        Self::ZeroCalibration,
        Self::SpanCalibration,
        Self::Calibration,
        Self::SampleNow,
        Self::Cleaning,
        Self::ComparisonSample,
        Self::RetainSample,
    ];

    /// The HJ 212 command that asks for it.
    pub const fn command(self) -> u16 {
        match self {
            Self::ZeroCalibration | Self::SpanCalibration | Self::Calibration => 3011,
            Self::SampleNow => 3012,
            Self::Cleaning => 3013,
            Self::ComparisonSample => 3014,
            Self::RetainSample => 3015,
        }
    }

    /// The mode the analyzer is in while it carries the action out; `None` for sample retention,
    /// which the sampler does without changing the analyzer's state.
    pub const fn mode(self) -> Option<AnalyzerMode> {
        match self {
            Self::ZeroCalibration | Self::SpanCalibration | Self::Calibration => Some(AnalyzerMode::Calibration),
            Self::SampleNow | Self::ComparisonSample => Some(AnalyzerMode::Measuring),
            Self::Cleaning => Some(AnalyzerMode::Cleaning),
            Self::RetainSample => None,
        }
    }

    /// A short name for logs (the serde name).
    pub const fn name(self) -> &'static str {
        match self {
            Self::ZeroCalibration => "zero_calibration",
            Self::SpanCalibration => "span_calibration",
            Self::Calibration => "calibration",
            Self::SampleNow => "sample_now",
            Self::Cleaning => "cleaning",
            Self::ComparisonSample => "comparison_sample",
            Self::RetainSample => "retain_sample",
        }
    }
}

impl fmt::Display for ControlAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How an analyzer is told to carry out a [`ControlAction`]: one Modbus write.
///
/// `function` is FC 06 (write `value` to the holding register `address`), FC 16 (the same as a
/// one-register multiple write, for devices that take only FC 16) or FC 05 (set the coil
/// `address` when `value` is non-zero, clear it when 0). Anything else is not a valid trigger
/// ([`ControlSpec::request`] gives `None`).
///
/// Example (TOML, in an [`OwnedProfile`] file): the CNEMC surface-water block's control register
/// 0x1200, where 8 starts a blank (zero) calibration:
///
/// ```toml
/// [[controls]]
/// action = "zero_calibration"
/// unit = 1
/// function = "write_single_register"
/// address = 0x1200
/// value = 8
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
pub struct ControlSpec {
    /// The action this write starts.
    pub action: ControlAction,
    /// Unit address.
    pub unit: u8,
    /// The write function: FC 06, FC 16 or FC 05.
    pub function: FunctionCode,
    /// The control register or coil.
    pub address: u16,
    /// The value written (for a coil: non-zero sets it).
    pub value: u16,
}

impl ControlSpec {
    /// A register control (FC 06): write `value` to `address` of `unit`.
    pub const fn register(action: ControlAction, unit: u8, address: u16, value: u16) -> Self {
        Self { action, unit, function: FunctionCode::WriteSingleRegister, address, value }
    }

    /// True when `function` is one a control can be triggered with (FC 05, 06 or 16).
    pub const fn is_valid(&self) -> bool {
        matches!(
            self.function,
            FunctionCode::WriteSingleRegister | FunctionCode::WriteMultipleRegisters | FunctionCode::WriteSingleCoil
        )
    }

    /// The request that triggers the action, or `None` when `function` is not a valid trigger.
    pub fn request(&self) -> Option<Request<'_>> {
        let address = self.address;
        Some(match self.function {
            FunctionCode::WriteSingleRegister => Request::WriteSingleRegister { address, value: self.value },
            FunctionCode::WriteMultipleRegisters => {
                Request::WriteMultipleRegisters { address, values: core::slice::from_ref(&self.value) }
            }
            FunctionCode::WriteSingleCoil => Request::WriteSingleCoil { address, value: self.value != 0 },
            _ => return None,
        })
    }
}

/// An analyzer profile, borrowing its tables (`&'static` for the shipped ones).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile<'a> {
    /// A short name, e.g. `surface-water-cod`.
    pub name: &'a str,
    /// The points to read.
    pub points: &'a [PointSpec],
    /// Raw status value → mode; unknown values map to [`AnalyzerMode::Other`].
    pub status_map: &'a [StatusEntry],
    /// Alarm codes that mean the result cannot be trusted (flag D), e.g. no reagent or no sample.
    pub fatal_alarms: &'a [u32],
    /// The facility rule, for electricity meters.
    pub facility: Option<FacilityRule>,
    /// The actions the analyzer can be asked to carry out, and how (empty: none).
    pub controls: &'a [ControlSpec],
}

impl Profile<'_> {
    /// The mode for a raw status value.
    pub fn mode(&self, raw: u32) -> AnalyzerMode {
        self.status_map.iter().find(|e| e.raw == raw).map_or(AnalyzerMode::Other, |e| e.mode)
    }

    /// The first point with `target`.
    pub fn point(&self, target: &Target) -> Option<&PointSpec> {
        self.points.iter().find(|p| &p.target == target)
    }

    /// The read blocks of all points, one per point, in order (coalesce them before polling).
    pub fn blocks(&self) -> impl Iterator<Item = ReadBlock> + '_ {
        self.points.iter().map(PointSpec::block)
    }

    /// How to trigger `action`, if the analyzer can carry it out (the first spec for it).
    pub fn control(&self, action: ControlAction) -> Option<&ControlSpec> {
        self.controls.iter().find(|c| c.action == action)
    }
}

/// An owned profile, as read from a configuration file.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
pub struct OwnedProfile {
    /// A short name.
    pub name: alloc::string::String,
    /// The points.
    pub points: alloc::vec::Vec<PointSpec>,
    /// Raw status value → mode.
    #[cfg_attr(feature = "std", serde(default))]
    pub status_map: alloc::vec::Vec<StatusEntry>,
    /// Alarm codes that mean flag D.
    #[cfg_attr(feature = "std", serde(default))]
    pub fatal_alarms: alloc::vec::Vec<u32>,
    /// The facility rule, for electricity meters.
    #[cfg_attr(feature = "std", serde(default))]
    pub facility: Option<FacilityRule>,
    /// The control actions and their triggers.
    #[cfg_attr(feature = "std", serde(default))]
    pub controls: alloc::vec::Vec<ControlSpec>,
}

#[cfg(feature = "alloc")]
impl OwnedProfile {
    /// Borrows it as a [`Profile`].
    pub fn as_profile(&self) -> Profile<'_> {
        Profile {
            name: &self.name,
            points: &self.points,
            status_map: &self.status_map,
            fatal_alarms: &self.fatal_alarms,
            facility: self.facility,
            controls: &self.controls,
        }
    }

    /// Moves every point and every control to `unit`: the same analyzer at another address.
    pub fn set_unit(&mut self, unit: u8) {
        for p in &mut self.points {
            p.unit = unit;
        }
        for c in &mut self.controls {
            c.unit = unit;
        }
    }

    /// True when the points and controls all address one unit.
    pub fn is_single_unit(&self) -> bool {
        let mut units = self.points.iter().map(|p| p.unit).chain(self.controls.iter().map(|c| c.unit));
        let first = units.next();
        units.all(|u| Some(u) == first)
    }

    /// Copies a borrowed profile.
    pub fn from_profile(p: &Profile<'_>) -> Self {
        Self {
            name: p.name.into(),
            points: p.points.to_vec(),
            status_map: p.status_map.to_vec(),
            fatal_alarms: p.fatal_alarms.to_vec(),
            facility: p.facility,
            controls: p.controls.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(value: ValueType, order: ByteOrder) -> PointSpec {
        PointSpec {
            unit: 1,
            function: FunctionCode::ReadHoldingRegisters,
            address: 0,
            value,
            order,
            scale: 1.0,
            offset: 0.0,
            target: Target::Pollutant(Code::new("w01018")),
        }
    }

    #[test]
    fn f32_in_all_four_orders() {
        // 42.5f32 = 0x422A0000: bytes A=0x42 B=0x2A C=0x00 D=0x00.
        let cases = [
            (ByteOrder::ABCD, [0x422A, 0x0000]),
            (ByteOrder::CDAB, [0x0000, 0x422A]),
            (ByteOrder::BADC, [0x2A42, 0x0000]),
            (ByteOrder::DCBA, [0x0000, 0x2A42]),
        ];
        for (order, regs) in cases {
            assert_eq!(pt(ValueType::F32, order).decode(&regs), Ok(Value::Number(42.5)), "{order:?}");
            let mut out = [0u16; 2];
            pt(ValueType::F32, order).encode(Value::Number(42.5), &mut out);
            assert_eq!(out, regs, "{order:?}");
        }
    }

    #[test]
    fn integers_bcd_and_scale() {
        let mut p = pt(ValueType::I16, ByteOrder::ABCD);
        p.scale = 0.1;
        assert_eq!(p.decode(&[0xFF9C]), Ok(Value::Number(-100.0 * 0.1)));
        assert_eq!(
            pt(ValueType::U32, ByteOrder::CDAB).decode(&[0x5678, 0x1234]),
            Ok(Value::Number(0x1234_5678 as f64))
        );
        assert_eq!(pt(ValueType::Bcd16, ByteOrder::ABCD).decode(&[0x1234]), Ok(Value::Number(1234.0)));
        assert_eq!(pt(ValueType::Bcd32, ByteOrder::ABCD).decode(&[0x0012, 0x3456]), Ok(Value::Number(123456.0)));
        assert_eq!(pt(ValueType::Bcd16, ByteOrder::ABCD).decode(&[0x12A4]), Err(DecodeError::InvalidBcd { index: 0 }));
        assert_eq!(pt(ValueType::F32, ByteOrder::ABCD).decode(&[0x7FC0, 0]), Err(DecodeError::NotFinite));
        assert_eq!(pt(ValueType::F64, ByteOrder::ABCD).decode(&[0; 3]), Err(DecodeError::Short { needed: 4, got: 3 }));
        let mut out = [0u16; 4];
        pt(ValueType::F64, ByteOrder::CDAB).encode(Value::Number(1234.5678), &mut out);
        assert_eq!(pt(ValueType::F64, ByteOrder::CDAB).decode(&out), Ok(Value::Number(1234.5678)));
    }

    #[test]
    fn time_encodings() {
        let t = DateTime::new(2016, 8, 1, 7, 0, 30).unwrap();
        // BCD YY MM DD hh mm ss: 0x1608, 0x0107, 0x0030.
        assert_eq!(pt(ValueType::TimeBcd6, ByteOrder::ABCD).decode(&[0x1608, 0x0107, 0x0030]), Ok(Value::Time(t)));
        // Hach packed: seconds; minute*100 + hour; day*100 + month; year.
        assert_eq!(pt(ValueType::TimePackedHach, ByteOrder::ABCD).decode(&[30, 7, 108, 2016]), Ok(Value::Time(t)));
        assert_eq!(pt(ValueType::TimeFields6, ByteOrder::ABCD).decode(&[2016, 8, 1, 7, 0, 30]), Ok(Value::Time(t)));
        assert_eq!(pt(ValueType::TimeBytes6, ByteOrder::ABCD).decode(&[0x1008, 0x0107, 0x001E]), Ok(Value::Time(t)));
        assert_eq!(
            pt(ValueType::TimeFields6, ByteOrder::ABCD).decode(&[2017, 2, 29, 0, 0, 0]),
            Err(DecodeError::InvalidTime)
        );
        for vt in [ValueType::TimeBcd6, ValueType::TimePackedHach, ValueType::TimeFields6, ValueType::TimeBytes6] {
            let mut out = [0u16; 6];
            pt(vt, ByteOrder::ABCD).encode(Value::Time(t), &mut out);
            assert_eq!(pt(vt, ByteOrder::ABCD).decode(&out), Ok(Value::Time(t)), "{vt:?}");
        }
        let mut s = [0u8; 14];
        t.write_hj212(&mut s);
        assert_eq!(&s, b"20160801070030");
    }

    #[test]
    fn control_specs_build_their_trigger_and_refuse_reads() {
        let fc06 = ControlSpec::register(ControlAction::SpanCalibration, 1, 0x1200, 9);
        assert_eq!(fc06.request(), Some(Request::WriteSingleRegister { address: 0x1200, value: 9 }));
        let fc16 = ControlSpec { function: FunctionCode::WriteMultipleRegisters, ..fc06 };
        assert_eq!(fc16.request(), Some(Request::WriteMultipleRegisters { address: 0x1200, values: &[9] }));
        let coil = ControlSpec { function: FunctionCode::WriteSingleCoil, address: 7, value: 1, ..fc06 };
        assert_eq!(coil.request(), Some(Request::WriteSingleCoil { address: 7, value: true }));
        let read = ControlSpec { function: FunctionCode::ReadHoldingRegisters, ..fc06 };
        assert!(!read.is_valid());
        assert_eq!(read.request(), None);
        assert!(fc06.is_valid() && fc16.is_valid() && coil.is_valid());

        let controls = [fc06, ControlSpec::register(ControlAction::SpanCalibration, 1, 0x1200, 19)];
        let profile =
            Profile { name: "t", points: &[], status_map: &[], fatal_alarms: &[], facility: None, controls: &controls };
        // The first spec for an action wins; an action without a spec has none.
        assert_eq!(profile.control(ControlAction::SpanCalibration).map(|c| c.value), Some(9));
        assert_eq!(profile.control(ControlAction::Cleaning), None);
    }

    #[test]
    #[cfg(feature = "alloc")]
    fn set_unit_moves_points_and_controls() {
        let mut owned = OwnedProfile::from_profile(&builtin::SURFACE_WATER_TP);
        assert!(owned.is_single_unit());
        owned.set_unit(9);
        assert!(owned.points.iter().all(|p| p.unit == 9));
        assert!(!owned.controls.is_empty() && owned.controls.iter().all(|c| c.unit == 9));
        owned.controls[0].unit = 8;
        assert!(!owned.is_single_unit());
    }

    #[test]
    fn control_actions_name_their_command_and_mode() {
        let commands: [u16; 7] = ControlAction::ALL.map(ControlAction::command);
        assert_eq!(commands, [3011, 3011, 3011, 3012, 3013, 3014, 3015]);
        assert_eq!(ControlAction::ZeroCalibration.mode(), Some(AnalyzerMode::Calibration));
        assert_eq!(ControlAction::SampleNow.mode(), Some(AnalyzerMode::Measuring));
        assert_eq!(ControlAction::Cleaning.mode(), Some(AnalyzerMode::Cleaning));
        assert_eq!(ControlAction::RetainSample.mode(), None);
    }

    #[test]
    fn codes_are_checked() {
        assert_eq!(Code::new("w01018").as_str(), "w01018");
        assert!(Code::try_new("w01018-Rtd").is_none());
        assert!(Code::try_new("").is_none());
        assert!(Code::try_new("a b").is_none());
    }
}

#[cfg(all(test, feature = "std"))]
mod serde_tests {
    use super::*;

    #[test]
    fn owned_profile_deserialises_from_json() {
        let json = r#"{
            "name": "custom-cod",
            "points": [
                {"unit": 3, "function": "read_holding_registers", "address": 4104, "value": "f32",
                 "order": "CDAB", "target": {"pollutant": "w01018"}},
                {"unit": 3, "function": "read_holding_registers", "address": 4227, "value": "u16",
                 "target": "status"},
                {"unit": 3, "function": "read_holding_registers", "address": 4263, "value": "f32",
                 "order": "CDAB", "scale": 0.5, "target": {"info": "i13008"}}
            ],
            "status_map": [{"raw": 1, "mode": "measuring"}],
            "fatal_alarms": [1, 2]
        }"#;
        let p: OwnedProfile = serde_json::from_str(json).unwrap();
        let p = p.as_profile();
        assert_eq!(p.points.len(), 3);
        assert_eq!(p.points[0].target, Target::Pollutant(Code::new("w01018")));
        assert_eq!(p.points[1].order, ByteOrder::ABCD);
        assert_eq!(p.points[2].scale, 0.5);
        assert_eq!(p.mode(1), AnalyzerMode::Measuring);
        assert_eq!(p.mode(7), AnalyzerMode::Other);
        let bad = json.replace("w01018", "w01018-Rtd");
        assert!(serde_json::from_str::<OwnedProfile>(&bad).is_err());
        // No `controls`: none.
        assert!(p.controls.is_empty());
    }

    #[test]
    fn owned_profile_reads_controls() {
        let json = r#"{
            "name": "sampler",
            "points": [{"unit": 3, "function": "read_holding_registers", "address": 16,
                        "value": "u16", "target": {"info": "i43006"}}],
            "controls": [
                {"action": "retain_sample", "unit": 3, "function": "write_single_coil", "address": 5, "value": 1},
                {"action": "zero_calibration", "unit": 3, "function": "write_multiple_registers",
                 "address": 4608, "value": 8}
            ]
        }"#;
        let owned: OwnedProfile = serde_json::from_str(json).unwrap();
        let p = owned.as_profile();
        assert_eq!(
            p.control(ControlAction::RetainSample),
            Some(&ControlSpec {
                action: ControlAction::RetainSample,
                unit: 3,
                function: FunctionCode::WriteSingleCoil,
                address: 5,
                value: 1,
            })
        );
        assert_eq!(p.control(ControlAction::ZeroCalibration).map(|c| (c.address, c.value)), Some((0x1200, 8)));
        assert_eq!(OwnedProfile::from_profile(&p), owned);
        let bad = json.replace("retain_sample", "reboot");
        assert!(serde_json::from_str::<OwnedProfile>(&bad).is_err());
    }
}
