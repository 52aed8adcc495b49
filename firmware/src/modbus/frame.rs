//! Modbus RTU application data units: request encoding and response parsing, sans-IO.
//!
//! Invariants:
//! - Nothing here allocates, reads a clock or does IO. Requests are written into a caller buffer.
//! - [`parse_response`] never panics, never reads past the bytes it was given, and on any input
//!   returns `Partial`, `Complete` (with the count of noise bytes skipped before the frame) or an
//!   error that names the byte offset where the problem is.
//! - A device exception (the device answered, and said no) is never reported as a transport error,
//!   and a transport error (the frame is missing, damaged or from someone else) is never reported as
//!   an exception.
//!
//! Frame layout (Modbus over serial line v1.02 §2.5.1; GB/T 19582-2008; HJ 212-2017 §7.2.2, Figure 12):
//! `unit (1) | function (1) | data (0..=252) | CRC-16/MODBUS (2, low byte first)`.

use core::fmt;

/// CRC-16/MODBUS (poly 0x8005 reflected, init 0xFFFF), transmitted low byte first.
pub const CRC: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_MODBUS);

/// The largest RTU ADU: 256 bytes (Modbus over serial line §2.5.1).
pub const MAX_ADU_LEN: usize = 256;

/// Most registers one FC 03/04 read may ask for (Modbus application protocol v1.1b3 §6.3).
pub const MAX_READ_REGISTERS: u16 = 125;
/// Most bits one FC 01/02 read may ask for (§6.1).
pub const MAX_READ_BITS: u16 = 2000;
/// Most registers one FC 16 write may carry (§6.12).
pub const MAX_WRITE_REGISTERS: u16 = 123;
/// Most coils one FC 15 write may carry (§6.11).
pub const MAX_WRITE_COILS: u16 = 1968;

/// Computes the CRC-16/MODBUS of `bytes`.
pub fn crc16(bytes: &[u8]) -> u16 {
    CRC.checksum(bytes)
}

/// The function codes this master speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "std", derive(serde::Deserialize))]
#[cfg_attr(feature = "std", serde(rename_all = "snake_case"))]
pub enum FunctionCode {
    /// FC 01, read coils.
    ReadCoils,
    /// FC 02, read discrete inputs.
    ReadDiscreteInputs,
    /// FC 03, read holding registers.
    ReadHoldingRegisters,
    /// FC 04, read input registers.
    ReadInputRegisters,
    /// FC 05, write single coil.
    WriteSingleCoil,
    /// FC 06, write single register.
    WriteSingleRegister,
    /// FC 15, write multiple coils.
    WriteMultipleCoils,
    /// FC 16, write multiple registers.
    WriteMultipleRegisters,
}

impl FunctionCode {
    /// The code byte on the wire.
    pub const fn to_u8(self) -> u8 {
        match self {
            Self::ReadCoils => 0x01,
            Self::ReadDiscreteInputs => 0x02,
            Self::ReadHoldingRegisters => 0x03,
            Self::ReadInputRegisters => 0x04,
            Self::WriteSingleCoil => 0x05,
            Self::WriteSingleRegister => 0x06,
            Self::WriteMultipleCoils => 0x0F,
            Self::WriteMultipleRegisters => 0x10,
        }
    }

    /// The function for a code byte, if this master speaks it.
    pub const fn from_u8(code: u8) -> Option<Self> {
        Some(match code {
            0x01 => Self::ReadCoils,
            0x02 => Self::ReadDiscreteInputs,
            0x03 => Self::ReadHoldingRegisters,
            0x04 => Self::ReadInputRegisters,
            0x05 => Self::WriteSingleCoil,
            0x06 => Self::WriteSingleRegister,
            0x0F => Self::WriteMultipleCoils,
            0x10 => Self::WriteMultipleRegisters,
            _ => return None,
        })
    }

    /// True for FC 01/02/03/04.
    pub const fn is_read(self) -> bool {
        matches!(
            self,
            Self::ReadCoils | Self::ReadDiscreteInputs | Self::ReadHoldingRegisters | Self::ReadInputRegisters
        )
    }

    /// True for the bit functions FC 01/02/05/15.
    pub const fn is_bit(self) -> bool {
        matches!(self, Self::ReadCoils | Self::ReadDiscreteInputs | Self::WriteSingleCoil | Self::WriteMultipleCoils)
    }
}

/// A request PDU, borrowing any values it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request<'a> {
    /// FC 01: `count` coils from `address`.
    ReadCoils {
        /// First coil (0-based protocol address).
        address: u16,
        /// Number of coils, 1..=2000.
        count: u16,
    },
    /// FC 02: `count` discrete inputs from `address`.
    ReadDiscreteInputs {
        /// First input.
        address: u16,
        /// Number of inputs, 1..=2000.
        count: u16,
    },
    /// FC 03: `count` holding registers from `address`.
    ReadHoldingRegisters {
        /// First register.
        address: u16,
        /// Number of registers, 1..=125.
        count: u16,
    },
    /// FC 04: `count` input registers from `address`.
    ReadInputRegisters {
        /// First register.
        address: u16,
        /// Number of registers, 1..=125.
        count: u16,
    },
    /// FC 05: set or clear one coil.
    WriteSingleCoil {
        /// Coil address.
        address: u16,
        /// New state.
        value: bool,
    },
    /// FC 06: write one holding register.
    WriteSingleRegister {
        /// Register address.
        address: u16,
        /// New value.
        value: u16,
    },
    /// FC 15: write consecutive coils.
    WriteMultipleCoils {
        /// First coil.
        address: u16,
        /// New states, 1..=1968 of them.
        values: &'a [bool],
    },
    /// FC 16: write consecutive holding registers.
    WriteMultipleRegisters {
        /// First register.
        address: u16,
        /// New values, 1..=123 of them.
        values: &'a [u16],
    },
}

impl Request<'_> {
    /// The function code of this request.
    pub const fn function(&self) -> FunctionCode {
        match self {
            Self::ReadCoils { .. } => FunctionCode::ReadCoils,
            Self::ReadDiscreteInputs { .. } => FunctionCode::ReadDiscreteInputs,
            Self::ReadHoldingRegisters { .. } => FunctionCode::ReadHoldingRegisters,
            Self::ReadInputRegisters { .. } => FunctionCode::ReadInputRegisters,
            Self::WriteSingleCoil { .. } => FunctionCode::WriteSingleCoil,
            Self::WriteSingleRegister { .. } => FunctionCode::WriteSingleRegister,
            Self::WriteMultipleCoils { .. } => FunctionCode::WriteMultipleCoils,
            Self::WriteMultipleRegisters { .. } => FunctionCode::WriteMultipleRegisters,
        }
    }

    /// A read request of `function` (must be FC 01..=04) for `count` items from `address`.
    pub const fn read(function: FunctionCode, address: u16, count: u16) -> Option<Self> {
        Some(match function {
            FunctionCode::ReadCoils => Self::ReadCoils { address, count },
            FunctionCode::ReadDiscreteInputs => Self::ReadDiscreteInputs { address, count },
            FunctionCode::ReadHoldingRegisters => Self::ReadHoldingRegisters { address, count },
            FunctionCode::ReadInputRegisters => Self::ReadInputRegisters { address, count },
            _ => return None,
        })
    }

    /// What a matching normal response must look like.
    pub fn expectation(&self, unit: u8) -> Expect {
        let function = self.function();
        let shape = match *self {
            Self::ReadCoils { count, .. } | Self::ReadDiscreteInputs { count, .. } => {
                Shape::Read { byte_count: count.div_ceil(8) as u8 }
            }
            Self::ReadHoldingRegisters { count, .. } | Self::ReadInputRegisters { count, .. } => {
                Shape::Read { byte_count: (count.saturating_mul(2)).min(255) as u8 }
            }
            Self::WriteSingleCoil { address, value } => {
                Shape::Echo { address, value: if value { 0xFF00 } else { 0x0000 } }
            }
            Self::WriteSingleRegister { address, value } => Shape::Echo { address, value },
            Self::WriteMultipleCoils { address, values } => Shape::Echo { address, value: values.len() as u16 },
            Self::WriteMultipleRegisters { address, values } => Shape::Echo { address, value: values.len() as u16 },
        };
        Expect { unit, function, shape }
    }
}

/// What a response to one request must look like; built by [`Request::expectation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// The unit the request went to.
    pub unit: u8,
    /// The request's function.
    pub function: FunctionCode,
    /// The body of a normal response.
    pub shape: Shape,
}

/// The body of a normal response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// FC 01..=04: a byte count, then that many bytes.
    Read {
        /// The byte count the response must carry.
        byte_count: u8,
    },
    /// FC 05/06/15/16: address and value (or quantity) echoed back.
    Echo {
        /// Echoed address.
        address: u16,
        /// Echoed value (FC 05/06) or quantity (FC 15/16).
        value: u16,
    },
}

impl Expect {
    /// Length in bytes of a normal response ADU.
    pub const fn response_len(&self) -> usize {
        match self.shape {
            Shape::Read { byte_count } => 3 + byte_count as usize + 2,
            Shape::Echo { .. } => 8,
        }
    }
}

/// Why a request could not be encoded. These are caller errors, never wire errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The count is zero or above the function's limit.
    InvalidCount {
        /// The count asked for.
        count: usize,
        /// The limit for this function.
        max: u16,
    },
    /// `address + count` runs past 0xFFFF.
    AddressOverflow,
    /// The caller's buffer is shorter than the ADU.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidCount { count, max } => write!(f, "count {count} is outside 1..={max}"),
            Self::AddressOverflow => f.write_str("address range runs past 0xFFFF"),
            Self::BufferTooSmall { needed } => write!(f, "buffer too small, {needed} bytes needed"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EncodeError {}

fn check_range(address: u16, count: usize, max: u16) -> Result<(), EncodeError> {
    if count == 0 || count > max as usize {
        return Err(EncodeError::InvalidCount { count, max });
    }
    if address as usize + count > 0x1_0000 {
        return Err(EncodeError::AddressOverflow);
    }
    Ok(())
}

/// Writes the request ADU for `unit` into `buf` and returns its length.
///
/// # Errors
/// [`EncodeError`] when the count is out of range for the function, the range wraps past 0xFFFF, or
/// `buf` is too short. Nothing is written in that case.
pub fn encode_request(unit: u8, request: &Request<'_>, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let (address, second, payload_len) = match *request {
        Request::ReadCoils { address, count } | Request::ReadDiscreteInputs { address, count } => {
            check_range(address, count as usize, MAX_READ_BITS)?;
            (address, count, 0)
        }
        Request::ReadHoldingRegisters { address, count } | Request::ReadInputRegisters { address, count } => {
            check_range(address, count as usize, MAX_READ_REGISTERS)?;
            (address, count, 0)
        }
        Request::WriteSingleCoil { address, value } => (address, if value { 0xFF00 } else { 0 }, 0),
        Request::WriteSingleRegister { address, value } => (address, value, 0),
        Request::WriteMultipleCoils { address, values } => {
            check_range(address, values.len(), MAX_WRITE_COILS)?;
            (address, values.len() as u16, 1 + values.len().div_ceil(8))
        }
        Request::WriteMultipleRegisters { address, values } => {
            check_range(address, values.len(), MAX_WRITE_REGISTERS)?;
            (address, values.len() as u16, 1 + values.len() * 2)
        }
    };
    let len = 6 + payload_len + 2;
    if buf.len() < len {
        return Err(EncodeError::BufferTooSmall { needed: len });
    }
    buf[0] = unit;
    buf[1] = request.function().to_u8();
    buf[2..4].copy_from_slice(&address.to_be_bytes());
    buf[4..6].copy_from_slice(&second.to_be_bytes());
    match *request {
        Request::WriteMultipleCoils { values, .. } => {
            let n = values.len().div_ceil(8);
            buf[6] = n as u8;
            buf[7..7 + n].fill(0);
            for (i, &on) in values.iter().enumerate() {
                if on {
                    buf[7 + i / 8] |= 1 << (i % 8);
                }
            }
        }
        Request::WriteMultipleRegisters { values, .. } => {
            buf[6] = (values.len() * 2) as u8;
            for (i, v) in values.iter().enumerate() {
                buf[7 + 2 * i..9 + 2 * i].copy_from_slice(&v.to_be_bytes());
            }
        }
        _ => {}
    }
    let crc = crc16(&buf[..len - 2]);
    buf[len - 2..len].copy_from_slice(&crc.to_le_bytes());
    Ok(len)
}

/// A Modbus exception code (application protocol §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExceptionCode {
    /// 0x01: the function is not supported.
    IllegalFunction,
    /// 0x02: the address range is not available.
    IllegalDataAddress,
    /// 0x03: a value in the request is not allowed.
    IllegalDataValue,
    /// 0x04: the device failed while performing the action.
    ServerDeviceFailure,
    /// 0x05: accepted, will take long.
    Acknowledge,
    /// 0x06: busy with a long command.
    ServerDeviceBusy,
    /// 0x08: memory parity error.
    MemoryParityError,
    /// 0x0A: gateway path unavailable.
    GatewayPathUnavailable,
    /// 0x0B: gateway target failed to respond.
    GatewayTargetFailedToRespond,
    /// Any other code.
    Other(u8),
}

impl ExceptionCode {
    /// The code for a byte.
    pub const fn from_u8(code: u8) -> Self {
        match code {
            0x01 => Self::IllegalFunction,
            0x02 => Self::IllegalDataAddress,
            0x03 => Self::IllegalDataValue,
            0x04 => Self::ServerDeviceFailure,
            0x05 => Self::Acknowledge,
            0x06 => Self::ServerDeviceBusy,
            0x08 => Self::MemoryParityError,
            0x0A => Self::GatewayPathUnavailable,
            0x0B => Self::GatewayTargetFailedToRespond,
            other => Self::Other(other),
        }
    }

    /// The byte on the wire.
    pub const fn to_u8(self) -> u8 {
        match self {
            Self::IllegalFunction => 0x01,
            Self::IllegalDataAddress => 0x02,
            Self::IllegalDataValue => 0x03,
            Self::ServerDeviceFailure => 0x04,
            Self::Acknowledge => 0x05,
            Self::ServerDeviceBusy => 0x06,
            Self::MemoryParityError => 0x08,
            Self::GatewayPathUnavailable => 0x0A,
            Self::GatewayTargetFailedToRespond => 0x0B,
            Self::Other(code) => code,
        }
    }
}

/// A device's refusal: a well-formed exception response with a valid CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exception {
    /// The unit that answered.
    pub unit: u8,
    /// The function that was refused (without the 0x80 bit).
    pub function: u8,
    /// What the device said.
    pub code: ExceptionCode,
    /// Offset of the exception frame in the received bytes.
    pub offset: usize,
}

impl fmt::Display for Exception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unit {} refused function {:#04x} with exception {:#04x} (at byte {})",
            self.unit,
            self.function,
            self.code.to_u8(),
            self.offset
        )
    }
}

/// What went wrong on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameErrorKind {
    /// Nothing arrived before the response timeout.
    Timeout,
    /// A frame of the right shape arrived but its CRC does not match.
    Crc {
        /// CRC computed over the received bytes.
        computed: u16,
        /// CRC carried by the frame (decoded low byte first).
        received: u16,
    },
    /// A valid frame for this function arrived from another unit.
    WrongUnit {
        /// The unit we asked.
        expected: u8,
        /// The unit that answered.
        got: u8,
    },
    /// A valid frame from our unit carried another function code.
    WrongFunction {
        /// The function we sent.
        expected: u8,
        /// The function that came back.
        got: u8,
    },
    /// A read response whose byte count differs from the request's.
    ByteCount {
        /// Byte count the request implies.
        expected: u8,
        /// Byte count in the response.
        got: u8,
    },
    /// A write response whose echoed address or value differs from the request's.
    EchoMismatch {
        /// The address and value sent.
        expected: (u16, u16),
        /// The address and value echoed.
        got: (u16, u16),
    },
    /// The response timeout ran out in the middle of a frame.
    ShortFrame {
        /// Bytes the frame needs.
        expected: usize,
        /// Bytes that arrived from the frame start.
        got: usize,
    },
    /// Bytes arrived, but none of them start a frame for this request.
    Noise {
        /// Number of bytes received.
        len: usize,
    },
}

/// A transport error, with the byte offset in the received bytes where it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameError {
    /// What went wrong.
    pub kind: FrameErrorKind,
    /// Byte offset in the received bytes (0 for a timeout).
    pub offset: usize,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            FrameErrorKind::Timeout => f.write_str("no response before the timeout"),
            FrameErrorKind::Crc { computed, received } => {
                write!(f, "CRC mismatch: computed {computed:#06x}, received {received:#06x}")
            }
            FrameErrorKind::WrongUnit { expected, got } => {
                write!(f, "response from unit {got}, expected unit {expected}")
            }
            FrameErrorKind::WrongFunction { expected, got } => {
                write!(f, "response with function {got:#04x}, expected {expected:#04x}")
            }
            FrameErrorKind::ByteCount { expected, got } => {
                write!(f, "byte count {got}, expected {expected}")
            }
            FrameErrorKind::EchoMismatch { expected, got } => {
                write!(f, "echo {got:04x?} differs from request {expected:04x?}")
            }
            FrameErrorKind::ShortFrame { expected, got } => {
                write!(f, "frame cut short: {got} of {expected} bytes")
            }
            FrameErrorKind::Noise { len } => write!(f, "{len} bytes of noise and no frame"),
        }?;
        write!(f, " (at byte {})", self.offset)
    }
}

/// Why a response was not accepted: the device refused, or the transport failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    /// The device answered with an exception.
    Exception(Exception),
    /// The answer was missing, damaged or not ours.
    Frame(FrameError),
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exception(e) => e.fmt(f),
            Self::Frame(e) => e.fmt(f),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ResponseError {}

/// A parsed normal response, borrowing its data from the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response<'a> {
    /// FC 01/02: packed bits, least significant bit first.
    Bits(Bits<'a>),
    /// FC 03/04: big-endian registers.
    Registers(Registers<'a>),
    /// FC 05/06/15/16: the echo matched the request.
    Written {
        /// Echoed address.
        address: u16,
        /// Echoed value (FC 05/06) or quantity (FC 15/16).
        value: u16,
    },
}

/// A view of register data in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registers<'a> {
    bytes: &'a [u8],
}

impl<'a> Registers<'a> {
    /// Wraps big-endian register bytes; an odd trailing byte is ignored.
    pub const fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }
    /// Number of registers.
    pub const fn len(&self) -> usize {
        self.bytes.len() / 2
    }
    /// True when there are no registers.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Register `i`, if present.
    pub fn get(&self, i: usize) -> Option<u16> {
        let b = self.bytes.get(2 * i..2 * i + 2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    /// The raw bytes, two per register, big-endian.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
    /// Iterates over the registers.
    pub fn iter(&self) -> impl Iterator<Item = u16> + 'a {
        self.bytes.chunks_exact(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    /// Copies the registers into `out`, returning how many were copied.
    pub fn copy_to(&self, out: &mut [u16]) -> usize {
        let mut n = 0;
        for (slot, v) in out.iter_mut().zip(self.iter()) {
            *slot = v;
            n += 1;
        }
        n
    }
}

/// A view of bit data in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bits<'a> {
    bytes: &'a [u8],
}

impl<'a> Bits<'a> {
    /// Wraps packed bits.
    pub const fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }
    /// Bit `i` (coil or input `address + i`), if present.
    pub fn get(&self, i: usize) -> Option<bool> {
        self.bytes.get(i / 8).map(|b| b & (1 << (i % 8)) != 0)
    }
    /// The packed bytes.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// The outcome of [`parse_response`] on the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// Not enough bytes yet; keep reading. `hint` is the best guess of how many more are needed.
    Partial {
        /// Bytes probably still missing.
        hint: usize,
    },
    /// A valid response.
    Complete {
        /// The response.
        response: Response<'a>,
        /// Noise bytes skipped before the frame (resync).
        skipped: usize,
        /// Bytes consumed, noise included.
        consumed: usize,
    },
}

fn frame_crc(frame: &[u8]) -> (u16, u16) {
    let n = frame.len();
    let computed = crc16(&frame[..n - 2]);
    let received = u16::from_le_bytes([frame[n - 2], frame[n - 1]]);
    (computed, received)
}

/// Parses the bytes received so far against what `expect` says the answer must be.
///
/// It scans for the first offset where a frame for `expect.unit` and `expect.function` (or its
/// exception, `function | 0x80`) starts and checks its CRC. Bytes before that frame are noise and are
/// reported in `skipped`. A candidate with a bad CRC is passed over so a real frame behind a false
/// start is still found; if nothing better turns up, the CRC error is returned.
///
/// Call it again with more bytes while it returns `Partial`; when the response timeout expires, call
/// [`finish_response`] for the final error.
///
/// # Errors
/// - [`ResponseError::Exception`] for a valid exception frame from our unit;
/// - [`ResponseError::Frame`] for a valid frame from another unit ([`FrameErrorKind::WrongUnit`]),
///   with another function ([`FrameErrorKind::WrongFunction`]), with the wrong byte count or echo, or a
///   complete candidate with a bad CRC and nothing after it that could still become a frame.
pub fn parse_response<'a>(expect: &Expect, buf: &'a [u8]) -> Result<Parsed<'a>, ResponseError> {
    let fc = expect.function.to_u8();
    let mut crc_error: Option<FrameError> = None;
    // End of the first damaged frame: a candidate starting inside it is a false start.
    let mut crc_end = 0usize;
    let mut partial_hint: Option<usize> = None;
    for start in 0..buf.len() {
        let rest = &buf[start..];
        if rest.len() < 2 {
            if start >= crc_end {
                partial_hint.get_or_insert(5 - rest.len());
            }
            break;
        }
        let (unit, code) = (rest[0], rest[1]);
        if code != fc && code != (fc | 0x80) {
            continue;
        }
        let need = if code & 0x80 != 0 { 5 } else { expect.response_len() };
        // A read response with another byte count may still be a whole, valid frame.
        let need = match (code & 0x80 == 0, expect.shape, rest.get(2)) {
            (true, Shape::Read { byte_count }, Some(&got)) if got != byte_count => 3 + got as usize + 2,
            _ => need,
        };
        if rest.len() < need {
            if start >= crc_end {
                partial_hint.get_or_insert(need - rest.len());
            }
            continue;
        }
        let frame = &rest[..need];
        let (computed, received) = frame_crc(frame);
        if computed != received {
            if crc_error.is_none() {
                crc_error = Some(FrameError { kind: FrameErrorKind::Crc { computed, received }, offset: start });
                crc_end = start + need;
            }
            continue;
        }
        if unit != expect.unit {
            return Err(ResponseError::Frame(FrameError {
                kind: FrameErrorKind::WrongUnit { expected: expect.unit, got: unit },
                offset: start,
            }));
        }
        if code & 0x80 != 0 {
            return Err(ResponseError::Exception(Exception {
                unit,
                function: fc,
                code: ExceptionCode::from_u8(frame[2]),
                offset: start,
            }));
        }
        let response = match expect.shape {
            Shape::Read { byte_count } => {
                if frame[2] != byte_count {
                    return Err(ResponseError::Frame(FrameError {
                        kind: FrameErrorKind::ByteCount { expected: byte_count, got: frame[2] },
                        offset: start + 2,
                    }));
                }
                let data = &frame[3..3 + byte_count as usize];
                if expect.function.is_bit() {
                    Response::Bits(Bits::new(data))
                } else {
                    Response::Registers(Registers::new(data))
                }
            }
            Shape::Echo { address, value } => {
                let got = (u16::from_be_bytes([frame[2], frame[3]]), u16::from_be_bytes([frame[4], frame[5]]));
                if got != (address, value) {
                    return Err(ResponseError::Frame(FrameError {
                        kind: FrameErrorKind::EchoMismatch { expected: (address, value), got },
                        offset: start + 2,
                    }));
                }
                Response::Written { address, value }
            }
        };
        return Ok(Parsed::Complete { response, skipped: start, consumed: start + need });
    }
    // A whole frame from our unit with an unexpected function (its CRC covers everything after it).
    if let Some(err) = wrong_function(expect, buf) {
        return Err(ResponseError::Frame(err));
    }
    match (partial_hint, crc_error) {
        (Some(hint), _) => Ok(Parsed::Partial { hint }),
        (None, Some(err)) => Err(ResponseError::Frame(err)),
        (None, None) => Ok(Parsed::Partial { hint: if buf.is_empty() { expect.response_len() } else { 1 } }),
    }
}

fn wrong_function(expect: &Expect, buf: &[u8]) -> Option<FrameError> {
    let fc = expect.function.to_u8();
    (0..buf.len()).find_map(|start| {
        let rest = &buf[start..];
        if rest.len() < 4 || rest[0] != expect.unit || rest[1] == fc || rest[1] == fc | 0x80 {
            return None;
        }
        let (computed, received) = frame_crc(rest);
        (computed == received).then_some(FrameError {
            kind: FrameErrorKind::WrongFunction { expected: fc, got: rest[1] },
            offset: start + 1,
        })
    })
}

/// The error to report when the response timeout expired on `buf` (the bytes received by then).
///
/// `Timeout` when nothing arrived; the CRC, unit or function error when a whole frame was there;
/// `ShortFrame` when a frame for us had started; otherwise `Noise`.
pub fn finish_response(expect: &Expect, buf: &[u8]) -> ResponseError {
    if buf.is_empty() {
        return ResponseError::Frame(FrameError { kind: FrameErrorKind::Timeout, offset: 0 });
    }
    match parse_response(expect, buf) {
        Err(e) => return e,
        // A complete frame is not an error; the caller should not be here, but say what was seen.
        Ok(Parsed::Complete { .. }) => {}
        Ok(Parsed::Partial { .. }) => {}
    }
    let fc = expect.function.to_u8();
    let mut first_crc: Option<FrameError> = None;
    for start in 0..buf.len() {
        let rest = &buf[start..];
        if rest[0] != expect.unit {
            continue;
        }
        match rest.get(1) {
            Some(&code) if code == fc || code == fc | 0x80 => {
                let need = if code & 0x80 != 0 { 5 } else { expect.response_len() };
                if rest.len() < need {
                    return ResponseError::Frame(FrameError {
                        kind: FrameErrorKind::ShortFrame { expected: need, got: rest.len() },
                        offset: start,
                    });
                }
                let (computed, received) = frame_crc(&rest[..need]);
                if computed != received {
                    first_crc
                        .get_or_insert(FrameError { kind: FrameErrorKind::Crc { computed, received }, offset: start });
                }
            }
            None => {
                return ResponseError::Frame(FrameError {
                    kind: FrameErrorKind::ShortFrame { expected: expect.response_len(), got: 1 },
                    offset: start,
                });
            }
            Some(_) => {}
        }
    }
    ResponseError::Frame(first_crc.unwrap_or(FrameError { kind: FrameErrorKind::Noise { len: buf.len() }, offset: 0 }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_holding_request_matches_the_spec_example() {
        // Modbus application protocol §6.3 example (unit 0x11 from the serial line guide):
        // read 3 registers from 0x006B.
        let mut buf = [0u8; 8];
        let n = encode_request(0x11, &Request::ReadHoldingRegisters { address: 0x006B, count: 3 }, &mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            &[
                0x11, // unit
                0x03, // function: read holding registers
                0x00, 0x6B, // start address
                0x00, 0x03, // quantity
                0x76, 0x87, // CRC-16/MODBUS, low byte first
            ]
        );
    }

    #[test]
    fn write_multiple_coils_packs_lsb_first() {
        let mut buf = [0u8; 16];
        let coils = [true, false, true, true, false, false, true, true, true, false];
        let n = encode_request(1, &Request::WriteMultipleCoils { address: 0x13, values: &coils }, &mut buf).unwrap();
        assert_eq!(&buf[..7], &[0x01, 0x0F, 0x00, 0x13, 0x00, 0x0A, 0x02]);
        assert_eq!(&buf[7..9], &[0b1100_1101, 0b0000_0001]);
        assert_eq!(n, 11);
        assert_eq!(crc16(&buf[..n]), 0, "a frame with its CRC appended checks to zero");
    }

    #[test]
    fn encode_rejects_bad_counts_and_short_buffers() {
        let mut buf = [0u8; 8];
        assert_eq!(
            encode_request(1, &Request::ReadHoldingRegisters { address: 0, count: 126 }, &mut buf),
            Err(EncodeError::InvalidCount { count: 126, max: 125 })
        );
        assert_eq!(
            encode_request(1, &Request::ReadHoldingRegisters { address: 0xFFFF, count: 2 }, &mut buf),
            Err(EncodeError::AddressOverflow)
        );
        assert_eq!(
            encode_request(1, &Request::WriteMultipleRegisters { address: 0, values: &[1, 2] }, &mut buf),
            Err(EncodeError::BufferTooSmall { needed: 13 })
        );
    }

    fn with_crc(body: &[u8]) -> ([u8; 64], usize) {
        let mut out = [0u8; 64];
        out[..body.len()].copy_from_slice(body);
        let crc = crc16(body).to_le_bytes();
        out[body.len()..body.len() + 2].copy_from_slice(&crc);
        (out, body.len() + 2)
    }

    #[test]
    fn parses_registers_after_noise() {
        let expect = Request::ReadHoldingRegisters { address: 0, count: 2 }.expectation(1);
        let (frame, n) = with_crc(&[0x01, 0x03, 0x04, 0x12, 0x34, 0xAB, 0xCD]);
        let mut wire = [0u8; 64];
        wire[0] = 0x00; // line glitch while the slave's driver turned on
        wire[1] = 0xFF; // and another
        wire[2..2 + n].copy_from_slice(&frame[..n]);
        match parse_response(&expect, &wire[..2 + n]).unwrap() {
            Parsed::Complete { response: Response::Registers(r), skipped, consumed } => {
                assert_eq!(skipped, 2);
                assert_eq!(consumed, 2 + n);
                assert_eq!(r.get(0), Some(0x1234));
                assert_eq!(r.get(1), Some(0xABCD));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn partial_frames_ask_for_more_at_every_cut() {
        let expect = Request::ReadInputRegisters { address: 0, count: 1 }.expectation(7);
        let (frame, n) = with_crc(&[0x07, 0x04, 0x02, 0x00, 0x2A]);
        for cut in 0..n {
            assert!(matches!(parse_response(&expect, &frame[..cut]), Ok(Parsed::Partial { .. })), "cut {cut}");
        }
        assert!(matches!(parse_response(&expect, &frame[..n]), Ok(Parsed::Complete { .. })));
    }

    #[test]
    fn exception_is_not_a_transport_error() {
        let expect = Request::ReadHoldingRegisters { address: 0, count: 1 }.expectation(1);
        let (frame, n) = with_crc(&[0x01, 0x83, 0x02]); // unit 1, FC 03 | 0x80, illegal data address
        assert_eq!(
            parse_response(&expect, &frame[..n]),
            Err(ResponseError::Exception(Exception {
                unit: 1,
                function: 3,
                code: ExceptionCode::IllegalDataAddress,
                offset: 0
            }))
        );
    }

    #[test]
    fn crc_error_carries_both_values_and_offset() {
        let expect = Request::ReadHoldingRegisters { address: 0, count: 1 }.expectation(1);
        let (mut frame, n) = with_crc(&[0x01, 0x03, 0x02, 0x00, 0x01]);
        let good = u16::from_le_bytes([frame[n - 2], frame[n - 1]]);
        frame[n - 1] ^= 0xFF;
        let err = parse_response(&expect, &frame[..n]).unwrap_err();
        assert_eq!(
            err,
            ResponseError::Frame(FrameError {
                kind: FrameErrorKind::Crc { computed: good, received: good ^ 0xFF00 },
                offset: 0
            })
        );
    }

    #[test]
    fn wrong_unit_and_wrong_function_are_named() {
        let expect = Request::ReadHoldingRegisters { address: 0, count: 1 }.expectation(1);
        let (frame, n) = with_crc(&[0x02, 0x03, 0x02, 0x00, 0x01]);
        assert!(matches!(
            parse_response(&expect, &frame[..n]),
            Err(ResponseError::Frame(FrameError {
                kind: FrameErrorKind::WrongUnit { expected: 1, got: 2 },
                offset: 0
            }))
        ));
        let (frame, n) = with_crc(&[0x01, 0x04, 0x02, 0x00, 0x01]);
        assert!(matches!(
            parse_response(&expect, &frame[..n]),
            Err(ResponseError::Frame(FrameError {
                kind: FrameErrorKind::WrongFunction { expected: 3, got: 4 },
                offset: 1
            }))
        ));
    }

    #[test]
    fn finish_names_timeout_short_frame_and_noise() {
        let expect = Request::ReadHoldingRegisters { address: 0, count: 2 }.expectation(1);
        assert!(matches!(
            finish_response(&expect, &[]),
            ResponseError::Frame(FrameError { kind: FrameErrorKind::Timeout, .. })
        ));
        assert!(matches!(
            finish_response(&expect, &[0xAA, 0x01, 0x03, 0x04, 0x00]),
            ResponseError::Frame(FrameError { kind: FrameErrorKind::ShortFrame { expected: 9, got: 4 }, offset: 1 })
        ));
        assert!(matches!(
            finish_response(&expect, &[0xAA, 0x55, 0xAA]),
            ResponseError::Frame(FrameError { kind: FrameErrorKind::Noise { len: 3 }, offset: 0 })
        ));
    }

    #[test]
    fn parse_never_panics_on_any_short_input() {
        let expect = Request::ReadCoils { address: 0, count: 9 }.expectation(1);
        let mut buf = [0u8; 6];
        for a in 0..=255u8 {
            for b in [0x00, 0x01, 0x81, 0x03, 0xFF] {
                buf[0] = 1;
                buf[1] = b;
                buf[2] = a;
                buf[3] = a.wrapping_mul(7);
                for cut in 0..buf.len() {
                    let _ = parse_response(&expect, &buf[..cut]);
                    let _ = finish_response(&expect, &buf[..cut]);
                }
            }
        }
    }
}
