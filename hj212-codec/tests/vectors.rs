//! Data-driven tests over the golden vectors in `tests/vectors/`.
#![cfg(feature = "alloc")]

use hj212_codec::crc::CrcVariant;
use hj212_codec::encode::OwnedPacket;
use hj212_codec::{DecodeOptions, Decoded, Deviations, ErrorKind, Split, Splitter};

/// A packet line with the comment line above it.
struct Vector {
    line: usize,
    comment: String,
    wire: Vec<u8>,
}

fn load(text: &str) -> Vec<Vector> {
    let mut out = Vec::new();
    let mut comment = String::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(c) = line.strip_prefix("# ") {
            comment = c.to_string();
        } else if line.starts_with("##") {
            let body = line.strip_suffix("\\r\\n").unwrap_or_else(|| panic!("line {} lacks \\r\\n", i + 1));
            let mut wire = body.as_bytes().to_vec();
            wire.extend_from_slice(b"\r\n");
            out.push(Vector { line: i + 1, comment: std::mem::take(&mut comment), wire });
        }
    }
    out
}

fn decode(wire: &[u8], options: DecodeOptions) -> Decoded<'_> {
    match Splitter::default().split(wire, true) {
        Split::Frame(f) => {
            assert_eq!(f.len(), wire.len(), "the frame is the whole line");
            Decoded::new(f, options)
        }
        other => panic!("no frame: {other:?}"),
    }
}

fn conforming() -> Vec<Vector> {
    load(include_str!("vectors/conforming.txt"))
}

#[test]
fn every_conforming_packet_is_valid_when_strict_and_re_encodes_byte_identical() {
    let vectors = conforming();
    assert_eq!(vectors.len(), 127);
    for v in &vectors {
        let d = decode(&v.wire, DecodeOptions::STRICT);
        let packet = d.verdict().unwrap_or_else(|e| panic!("line {}: {e}", v.line));
        assert_eq!(d.crc, Ok(CrcVariant::Hj212), "line {}", v.line);
        assert!(d.deviations().is_empty(), "line {}: {:?}", v.line, d.deviations());
        let owned = OwnedPacket::from_packet(&packet);
        let again = owned.to_frame_unchecked(CrcVariant::Hj212, d.frame.crc_is_lowercase()).unwrap();
        assert_eq!(String::from_utf8_lossy(&again), String::from_utf8_lossy(&v.wire), "line {}", v.line);
        if !d.frame.crc_is_lowercase() {
            assert_eq!(owned.to_frame_unchecked(CrcVariant::Hj212, false).unwrap(), v.wire);
        }
    }
}

#[test]
fn conforming_stream_splits_identically_at_every_chunk_size() {
    let vectors = conforming();
    let stream: Vec<u8> = vectors.iter().flat_map(|v| v.wire.iter().copied()).collect();
    for chunk in [1usize, 2, 3, 7, 64, 1500, stream.len()] {
        let mut d = hj212_codec::Deframer::default();
        let mut frames = Vec::new();
        for piece in stream.chunks(chunk) {
            d.feed(piece);
            while let Some(ev) = d.next_event() {
                match ev {
                    hj212_codec::Event::Frame { offset, frame } => frames.push((offset, frame.bytes().to_vec())),
                    hj212_codec::Event::Skipped { offset, len, reason } => {
                        panic!("chunk {chunk}: skipped {len} bytes at {offset}: {reason:?}")
                    }
                }
            }
        }
        assert_eq!(frames.len(), vectors.len(), "chunk {chunk}");
        for (f, v) in frames.iter().zip(&vectors) {
            assert_eq!(f.1, v.wire, "chunk {chunk}, line {}", v.line);
        }
    }
}

/// What the comment of a non-conforming vector says is wrong with it.
#[derive(Debug, PartialEq)]
enum Expect {
    Modbus(CrcVariant),
    LengthMismatch,
    StaleCrc,
}

fn classify(comment: &str) -> Expect {
    if comment.contains("CRC == CRC-16/MODBUS printed LOW byte first") {
        Expect::Modbus(CrcVariant::ModbusLowFirst)
    } else if comment.contains("CRC == CRC-16/MODBUS printed high byte first") {
        Expect::Modbus(CrcVariant::ModbusHighFirst)
    } else if comment.contains("declared length") {
        Expect::LengthMismatch
    } else if comment.contains("matches neither") {
        Expect::StaleCrc
    } else {
        panic!("unclassified vector comment: {comment}")
    }
}

#[test]
fn every_non_conforming_packet_is_refused_when_strict_and_read_when_lenient() {
    let vectors = load(include_str!("vectors/nonconforming.txt"));
    assert_eq!(vectors.len(), 24);
    let mut seen = [0usize; 3];
    for v in &vectors {
        let expect = classify(&v.comment);
        let strict = decode(&v.wire, DecodeOptions::STRICT);
        let err = strict.verdict().expect_err(&format!("line {} must be refused", v.line));
        let lenient = decode(&v.wire, DecodeOptions::LENIENT);
        // Every one of them still has a readable structure.
        let packet = lenient.packet.unwrap_or_else(|e| panic!("line {}: {e}", v.line));
        assert!(!packet.cn_str().is_empty());
        match expect {
            Expect::Modbus(variant) => {
                seen[0] += 1;
                assert!(err.is_crc() || matches!(err.kind(), ErrorKind::DataTooLong { .. }), "line {}: {err}", v.line);
                assert_eq!(lenient.crc, Ok(variant), "line {}", v.line);
                assert!(lenient.deviations().contains(Deviations::NON_STANDARD_CRC));
                assert!(lenient.is_valid(), "line {}: {:?}", v.line, lenient.verdict());
                // The same frame with that variant selected for the peer.
                let chosen = DecodeOptions { strict: false, crc: hj212_codec::CrcPolicy::Only(variant) };
                assert!(decode(&v.wire, chosen).is_valid());
            }
            Expect::LengthMismatch => {
                seen[1] += 1;
                assert!(matches!(err.kind(), ErrorKind::LengthMismatch { .. }), "line {}: {err}", v.line);
                assert_eq!(err.offset(), 2);
                assert!(lenient.deviations().contains(Deviations::LENGTH_MISMATCH));
            }
            Expect::StaleCrc => {
                seen[2] += 1;
                assert!(matches!(err.kind(), ErrorKind::CrcMismatch { .. }), "line {}: {err}", v.line);
                assert_eq!(err.offset(), v.wire.len() - 6, "line {}", v.line);
                assert_eq!(lenient.verdict().unwrap_err().kind(), err.kind(), "line {}", v.line);
            }
        }
    }
    assert_eq!(seen, [16, 3, 5]);
}

#[test]
fn over_long_modbus_frames_report_both_deviations() {
    let vectors = load(include_str!("vectors/nonconforming.txt"));
    let long = vectors.iter().find(|v| v.wire.starts_with(b"##1623")).unwrap();
    let strict = decode(&long.wire, DecodeOptions::STRICT);
    assert_eq!(
        strict.verdict().unwrap_err().to_string(),
        "data segment too long at byte 6: 1623 bytes, HJ 212-2017 allows 1024"
    );
    let lenient = decode(&long.wire, DecodeOptions::LENIENT);
    let names: Vec<_> = lenient.deviations().names().collect();
    assert_eq!(names, ["over_1024", "non_standard_crc"]);
}
