//! The bodies of the fuzz targets, one public function per target.
//!
//! `hj212-codec/tests/corpus.rs` includes this file with `#[path]` and replays the committed
//! corpus through the same functions on every test run, so keep it free of crate-level
//! attributes and of dependencies other than `hj212_codec` and `std`.
//!
//! Each function panics when a property of the codec does not hold; libFuzzer reports that as a
//! crash.

use hj212_codec::crc::CrcVariant;
use hj212_codec::encode::{self, OwnedPacket};
use hj212_codec::{DecodeOptions, Decoded, Deframer, Event, Packet, RawFrame, Split, SplitConfig, Splitter};

/// `split`: the input is a byte stream, fed to a [`Deframer`] in pieces whose sizes come from a
/// hash of the input. Events must tile the stream, carry its bytes, keep the buffer bounded and,
/// after `finish`, resolve everything (but a lone trailing `#`, a known gap).
pub fn split(data: &[u8]) {
    for max_data_len in [64, hj212_codec::frame::MAX_DATA_LEN_FIELD] {
        let mut d = Deframer::new(Splitter::new(SplitConfig { max_data_len }));
        let mut next = 0usize;
        let mut state = fnv1a(data);
        let mut rest = data;
        while !rest.is_empty() {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let n = (1 + (state >> 33) as usize % 97).min(rest.len());
            d.feed(&rest[..n]);
            rest = &rest[n..];
            drain(&mut d, data, &mut next);
            assert!(d.buffered() < max_data_len + 13, "holding {} bytes", d.buffered());
        }
        d.finish();
        drain(&mut d, data, &mut next);
        let lone_hash = next + 1 == data.len() && data.ends_with(b"#");
        assert!(next == data.len() || lone_hash, "resolved {next} of {} bytes", data.len());
    }
}

fn drain(d: &mut Deframer, data: &[u8], next: &mut usize) {
    while let Some(event) = d.next_event() {
        match event {
            Event::Frame { offset, frame } => {
                assert_eq!(offset, *next as u64);
                assert_eq!(frame.bytes(), &data[*next..*next + frame.len()]);
                let _ = Decoded::new(frame, DecodeOptions::STRICT).verdict();
                *next += frame.len();
            }
            Event::Skipped { offset, len, .. } => {
                assert_eq!(offset, *next as u64);
                assert!(len > 0 && *next + len <= data.len());
                *next += len;
            }
        }
    }
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// `parse`: the input is a data segment, and also a stream. Every accessor of a parsed packet is
/// walked, and every offset must point at the text it describes.
pub fn parse(data: &[u8]) {
    if let Ok(p) = Packet::parse(data) {
        walk(&p);
    }
    if data.len() <= hj212_codec::frame::MAX_DATA_LEN_FIELD {
        let wire = encode::frame(data, CrcVariant::Hj212, false);
        match Splitter::default().split(&wire, true) {
            Split::Frame(f) => verdicts(f),
            other => panic!("a framed data segment was not cut as a frame: {other:?}"),
        }
    }
    let mut rest = data;
    while !rest.is_empty() {
        match Splitter::default().split(rest, true) {
            Split::Frame(f) => {
                verdicts(f);
                rest = &rest[f.len()..];
            }
            Split::Skip { len, .. } => rest = &rest[len..],
            Split::Incomplete => break,
        }
    }
}

fn verdicts(f: RawFrame<'_>) {
    for options in [DecodeOptions::STRICT, DecodeOptions::LENIENT] {
        let d = Decoded::new(f, options);
        let _ = d.deviations().names().count();
        if let Ok(p) = d.verdict() {
            walk(&p);
            if options.strict {
                assert!(d.deviations().is_empty(), "strictly valid with deviations {:?}", d.deviations());
            }
        }
    }
}

fn walk(p: &Packet<'_>) {
    let text = p.as_str();
    let _ = (p.qn(), p.reference_qn(), p.st(), p.cn(), p.pw(), p.mn(), p.flag(), p.pnum(), p.pno());
    let _ = (p.version(), p.wants_ack(), p.is_sub_packet(), p.header_fields().count());
    let cp = p.cp();
    assert!(text[cp.offset()..].starts_with(cp.as_str()), "CP offset");
    for g in cp.groups() {
        assert!(text[g.offset()..].starts_with(g.as_str()), "group offset {}", g.offset());
        for pair in g.pairs() {
            assert!(text[pair.offset()..].starts_with(pair.raw_key()), "pair offset {}", pair.offset());
            if let Some(v) = pair.raw_value() {
                assert!(text[pair.value_offset()..].starts_with(v), "value offset {}", pair.value_offset());
            }
            let _ = (pair.key(), pair.value(), pair.code_and_suffix());
        }
    }
    let _ = OwnedPacket::from_packet(p).data_segment();
}

/// `roundtrip`: every frame in the input that decodes strictly must be written back by
/// `OwnedPacket::from_packet(..).to_frame_unchecked(..)` as the same bytes, CRC case aside.
pub fn roundtrip(data: &[u8]) {
    let mut rest = data;
    while !rest.is_empty() {
        match Splitter::default().split(rest, true) {
            Split::Frame(f) => {
                same_bytes(f);
                rest = &rest[f.len()..];
            }
            Split::Skip { len, .. } => rest = &rest[len..],
            Split::Incomplete => break,
        }
    }
}

fn same_bytes(f: RawFrame<'_>) {
    let Ok(p) = Decoded::new(f, DecodeOptions::STRICT).verdict() else { return };
    let owned = OwnedPacket::from_packet(&p);
    let again = owned.to_frame_unchecked(CrcVariant::Hj212, f.crc_is_lowercase()).expect("a strict frame fits");
    let at = f.crc_offset();
    let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert_eq!(show(&again[..at.min(again.len())]), show(&f.bytes()[..at]), "data segment differs");
    assert!(again[at..at + 4].eq_ignore_ascii_case(f.crc_text()), "crc differs");
    assert_eq!(&again[at + 4..], b"\r\n");
    assert_eq!(owned.to_frame(CrcVariant::Hj212).expect("at most 1024 bytes").len(), f.len());
}
