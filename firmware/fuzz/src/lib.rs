//! The bodies of the fuzz targets, one public function per target, and the input format they share
//! with the seed corpus.
//!
//! `firmware/tests/fuzz_corpus.rs` includes this file with `#[path]`, replays the committed corpus
//! through the same functions on every test run, and builds the seeds with [`input`]; so keep it
//! free of crate-level attributes and of dependencies other than `firmware` and `std`.
//!
//! Each function panics when a property of the parser does not hold; libFuzzer reports that as a
//! crash.

use firmware::modbus::frame::MAX_ADU_LEN;
use firmware::modbus::{
    Expect, FunctionCode, Parsed, Response, ResponseError, Shape, crc16, finish_response, parse_response,
};

/// Bytes of expectation in front of the wire bytes of a `modbus_response` input.
///
/// | byte | meaning |
/// |---|---|
/// | 0 | unit asked |
/// | 1 | bits 0–2: function ([`FUNCTIONS`] index); bit 7: use the other shape than the function's |
/// | 2 | read shape: byte count; echo shape: address high byte |
/// | 3 | echo shape: address low byte |
/// | 4, 5 | echo shape: value (or quantity), big-endian |
///
/// Bit 7 of byte 1 builds inconsistent expectations (an echo for a read, a byte count for a write),
/// which the driver never builds but `parse_response` must survive.
pub const HEADER_LEN: usize = 6;

/// The functions byte 1 of the header selects.
pub const FUNCTIONS: [FunctionCode; 8] = [
    FunctionCode::ReadCoils,
    FunctionCode::ReadDiscreteInputs,
    FunctionCode::ReadHoldingRegisters,
    FunctionCode::ReadInputRegisters,
    FunctionCode::WriteSingleCoil,
    FunctionCode::WriteSingleRegister,
    FunctionCode::WriteMultipleCoils,
    FunctionCode::WriteMultipleRegisters,
];

/// The expectation a header describes.
pub fn expectation(h: &[u8; HEADER_LEN]) -> Expect {
    let function = FUNCTIONS[usize::from(h[1] & 0x07)];
    let read_shape = function.is_read() != (h[1] & 0x80 != 0);
    let shape = if read_shape {
        Shape::Read { byte_count: h[2] }
    } else {
        Shape::Echo { address: u16::from_be_bytes([h[2], h[3]]), value: u16::from_be_bytes([h[4], h[5]]) }
    };
    Expect { unit: h[0], function, shape }
}

/// A `modbus_response` input: the header for `expect` followed by `wire`.
pub fn input(expect: &Expect, wire: &[u8]) -> Vec<u8> {
    let index = FUNCTIONS.iter().position(|f| *f == expect.function).unwrap_or(0) as u8;
    let mut h = [expect.unit, index, 0, 0, 0, 0];
    match expect.shape {
        Shape::Read { byte_count } => {
            h[1] |= if expect.function.is_read() { 0 } else { 0x80 };
            h[2] = byte_count;
        }
        Shape::Echo { address, value } => {
            h[1] |= if expect.function.is_read() { 0x80 } else { 0 };
            h[2..4].copy_from_slice(&address.to_be_bytes());
            h[4..6].copy_from_slice(&value.to_be_bytes());
        }
    }
    let mut out = h.to_vec();
    out.extend_from_slice(wire);
    out
}

/// `modbus_response`: the input is a header (see [`HEADER_LEN`]) and then the bytes received.
///
/// [`parse_response`] and [`finish_response`] run over the whole input and, when it is no longer
/// than an ADU, over every prefix of it, as the drivers call them while bytes trickle in. Neither
/// may panic; a complete answer must be a whole frame for the unit and function asked, with a
/// good CRC and the expected shape, lying inside the input (`skipped < consumed <= len`); errors must
/// point inside the input; and re-parsing exactly the consumed bytes must give the same answer
/// (the drivers re-parse their buffer once the loop has seen the frame complete).
pub fn modbus_response(data: &[u8]) {
    let Some((head, wire)) = data.split_first_chunk::<HEADER_LEN>() else { return };
    let expect = expectation(head);
    check(&expect, wire);
    if wire.len() <= MAX_ADU_LEN {
        for k in 0..wire.len() {
            check(&expect, &wire[..k]);
        }
    }
}

fn check(expect: &Expect, wire: &[u8]) {
    let fc = expect.function.to_u8();
    let parsed = parse_response(expect, wire);
    match parsed {
        Ok(Parsed::Complete { response, skipped, consumed }) => {
            assert!(consumed <= wire.len(), "consumed {consumed} of {} bytes", wire.len());
            assert!(skipped < consumed, "skipped {skipped}, consumed {consumed}");
            let frame = &wire[skipped..consumed];
            assert_eq!(frame.len(), expect.response_len(), "frame length");
            assert_eq!(crc16(frame), 0, "a complete frame checks to zero with its CRC");
            assert_eq!((frame[0], frame[1]), (expect.unit, fc), "unit and function");
            match (response, expect.shape) {
                (Response::Registers(r), Shape::Read { byte_count }) => {
                    assert!(!expect.function.is_bit());
                    assert_eq!(frame[2], byte_count);
                    assert_eq!(r.as_bytes(), &frame[3..3 + usize::from(byte_count)]);
                    assert_eq!(r.len(), usize::from(byte_count) / 2);
                }
                (Response::Bits(b), Shape::Read { byte_count }) => {
                    assert!(expect.function.is_bit());
                    assert_eq!(b.as_bytes(), &frame[3..3 + usize::from(byte_count)]);
                }
                (Response::Written { address, value }, Shape::Echo { address: a, value: v }) => {
                    assert_eq!((address, value), (a, v));
                    assert_eq!(&frame[2..6], &[a.to_be_bytes(), v.to_be_bytes()].concat()[..]);
                }
                (response, shape) => panic!("{response:?} for {shape:?}"),
            }
            assert_eq!(parse_response(expect, &wire[..consumed]), parsed, "re-parse of the consumed bytes");
        }
        Ok(Parsed::Partial { hint }) => assert!(hint >= 1, "a partial answer asks for at least one byte"),
        Err(ResponseError::Exception(e)) => {
            assert_eq!((e.unit, e.function), (expect.unit, fc));
            let frame = wire.get(e.offset..e.offset + 5).expect("the exception frame lies inside the input");
            assert_eq!(frame[1], fc | 0x80);
            assert_eq!(crc16(frame), 0, "exception CRC");
        }
        Err(ResponseError::Frame(e)) => assert!(e.offset < wire.len(), "error at {} of {} bytes", e.offset, wire.len()),
    }
    match finish_response(expect, wire) {
        ResponseError::Exception(e) => assert!(e.offset + 5 <= wire.len()),
        ResponseError::Frame(e) if wire.is_empty() => assert_eq!(e.offset, 0),
        ResponseError::Frame(e) => assert!(e.offset < wire.len(), "final error at {} of {}", e.offset, wire.len()),
    }
}
