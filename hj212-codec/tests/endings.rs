//! Frames that end in a bare `\n` or in `\r\r\n` instead of CR LF (spec digest §1.3–1.4).
//!
//! The splitter cuts them by either of its two rules (the declared length lines up, or the first
//! line feed after the length field) and marks them [`Deviations::BARE_LF`] or
//! [`Deviations::DOUBLE_CR`]. A lenient receiver accepts and reports them; a strict receiver
//! refuses them with [`ErrorKind::BadTerminator`] at the first byte after the CRC. Whatever the
//! ending and however the stream is cut into reads, the frame after one of them is never lost.
#![cfg(feature = "alloc")]

use hj212_codec::crc::CrcVariant;
use hj212_codec::{DecodeOptions, Decoded, Deframer, Deviations, ErrorKind, Event, SkipReason, Split, Splitter};

/// HJ 212-2017 Appendix A's example (declared length 0101).
const SET_RTD: &str =
    "QN=20160801085857223;ST=32;CN=1062;PW=100000;MN=010000A8900016F000169DC0;Flag=5;CP=&&RtdInterval=30&&";
/// Appendix C.1's answer (declared length 0087).
const DATA_ANSWER: &str = "QN=20160801085000001;ST=91;CN=9014;PW=123456;MN=010000A8900016F000169DC0;Flag=4;CP=&&&&";
/// A real-time upload (Appendix C.14 without its placeholder).
const REALTIME: &str = "QN=20160801085857223;ST=32;CN=2011;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&DataTime=20160801085857;w01001-Rtd=7.1,w01001-Flag=N&&";
/// A log whose Chinese text is six bytes but two characters, so a sender that counts characters
/// declares four bytes too few: only the line feed (rule 2) finds the end of this frame.
const LOG: &str = "QN=20160801085857223;ST=32;CN=3020;PW=123456;MN=010000A8900016F000169DC0;Flag=5;CP=&&DataTime=20160801085857;i11001-Info=//清洗//&&";

/// `##` + the declared length + `seg` + its HJ 212 CRC + `ending`.
fn frame(seg: &str, declared: usize, ending: &[u8]) -> Vec<u8> {
    let mut out = format!("##{declared:04}{seg}").into_bytes();
    out.extend_from_slice(&hj212_codec::crc::to_hex(hj212_codec::crc::hj212(seg.as_bytes())));
    out.extend_from_slice(ending);
    out
}

/// A frame whose length field is right.
fn exact(seg: &str, ending: &[u8]) -> Vec<u8> {
    frame(seg, seg.len(), ending)
}

/// A frame whose length field counts characters, not bytes.
fn by_chars(seg: &str, ending: &[u8]) -> Vec<u8> {
    frame(seg, seg.chars().count(), ending)
}

/// What a [`Deframer`] reported: frames with their offset, bytes and framing deviations, and
/// skipped runs. A run of garbage that arrives over several reads is reported once per read;
/// contiguous runs with the same reason are joined here so that cuts compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Frame { offset: u64, bytes: Vec<u8>, deviations: Deviations },
    Skipped { offset: u64, len: usize, reason: SkipReason },
}

fn deframe<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Vec<Seen> {
    let mut d = Deframer::default();
    let mut seen = Vec::new();
    let drain = |d: &mut Deframer, seen: &mut Vec<Seen>| {
        while let Some(ev) = d.next_event() {
            match ev {
                Event::Frame { offset, frame } => {
                    seen.push(Seen::Frame { offset, bytes: frame.bytes().to_vec(), deviations: frame.deviations() });
                }
                Event::Skipped { offset, len, reason } => match seen.last_mut() {
                    Some(Seen::Skipped { offset: at, len: run, reason: r })
                        if *r == reason && *at + *run as u64 == offset =>
                    {
                        *run += len;
                    }
                    _ => seen.push(Seen::Skipped { offset, len, reason }),
                },
            }
        }
    };
    for piece in pieces {
        d.feed(piece);
        drain(&mut d, &mut seen);
    }
    d.finish();
    drain(&mut d, &mut seen);
    assert_eq!(d.buffered(), 0, "everything is resolved at the end of the stream");
    seen
}

/// The frames of a stream, laid end to end, as the deframer must report them.
fn expected(frames: &[(&[u8], Deviations)]) -> Vec<Seen> {
    let mut offset = 0u64;
    frames
        .iter()
        .map(|(bytes, deviations)| {
            let seen = Seen::Frame { offset, bytes: bytes.to_vec(), deviations: *deviations };
            offset += bytes.len() as u64;
            seen
        })
        .collect()
}

fn split_whole(wire: &[u8], eof: bool) -> hj212_codec::RawFrame<'_> {
    match Splitter::default().split(wire, eof) {
        Split::Frame(f) => f,
        other => panic!("no frame (eof {eof}): {other:?}"),
    }
}

/// Checks one frame on its own: cut whole, reported in lenient mode, refused in strict mode.
fn check_alone(wire: &[u8], framing: Deviations, names: &[&str], strict: (ErrorKind, usize)) {
    for eof in [false, true] {
        let f = split_whole(wire, eof);
        assert_eq!(f.len(), wire.len(), "the whole frame is cut (eof {eof})");
        assert_eq!(f.deviations(), framing);
        let lenient = Decoded::new(f, DecodeOptions::LENIENT);
        let packet = lenient.verdict().unwrap_or_else(|e| panic!("lenient refused: {e}"));
        assert_eq!(lenient.crc, Ok(CrcVariant::Hj212));
        assert_eq!(lenient.deviations().names().collect::<Vec<_>>(), names);
        assert_eq!(packet.as_str().as_bytes(), f.data());
        let e = Decoded::new(f, DecodeOptions::STRICT).verdict().unwrap_err();
        assert_eq!((e.kind(), e.offset()), strict, "strict: {e}");
    }
}

#[test]
fn a_bare_lf_frame_is_read_leniently_and_refused_at_its_terminator_when_strict() {
    let wire = exact(SET_RTD, b"\n");
    assert_eq!(wire.len(), 6 + 101 + 4 + 1);
    // The CRC is at byte 107, so the terminator starts at 111.
    check_alone(&wire, Deviations::BARE_LF, &["bare_lf"], (ErrorKind::BadTerminator, 111));
    let e = Decoded::new(split_whole(&wire, true), DecodeOptions::STRICT).verdict().unwrap_err();
    assert_eq!(e.to_string(), "bad terminator at byte 111: expected CR LF after the CRC");
    // Every proper prefix waits for more bytes.
    for n in 0..wire.len() {
        assert_eq!(Splitter::default().split(&wire[..n], false), Split::Incomplete, "prefix {n}");
    }
}

#[test]
fn a_double_cr_frame_is_read_leniently_and_refused_at_its_terminator_when_strict() {
    let wire = exact(DATA_ANSWER, b"\r\r\n");
    assert_eq!(wire.len(), 6 + 87 + 4 + 3);
    check_alone(&wire, Deviations::DOUBLE_CR, &["double_cr"], (ErrorKind::BadTerminator, 97));
    for n in 0..wire.len() {
        assert_eq!(Splitter::default().split(&wire[..n], false), Split::Incomplete, "prefix {n}");
    }
    // Even with the stream over, `\r\r` without its line feed is not a frame.
    let cut = &wire[..wire.len() - 1];
    assert_eq!(
        Splitter::default().split(cut, true),
        Split::Skip { len: cut.len(), reason: SkipReason::Broken(ErrorKind::Truncated) }
    );
}

#[test]
fn odd_endings_after_a_length_counted_in_characters_are_found_by_the_line_feed() {
    // Rule 2 of the splitter: the declared length does not line up, the line feed ends the frame.
    // Strict receivers refuse the first problem by position: the length field at byte 2.
    let actual = LOG.len();
    let declared = LOG.chars().count();
    assert_eq!(actual - declared, 4);
    let mismatch = (ErrorKind::LengthMismatch { declared, actual }, 2);
    check_alone(
        &by_chars(LOG, b"\n"),
        Deviations::LENGTH_MISMATCH.union(Deviations::BARE_LF),
        &["length_mismatch", "bare_lf"],
        mismatch,
    );
    check_alone(
        &by_chars(LOG, b"\r\r\n"),
        Deviations::LENGTH_MISMATCH.union(Deviations::DOUBLE_CR),
        &["length_mismatch", "double_cr"],
        mismatch,
    );
    // With the length right, the same frames fail only on their terminator.
    let at = 6 + actual + 4;
    check_alone(&exact(LOG, b"\n"), Deviations::BARE_LF, &["bare_lf"], (ErrorKind::BadTerminator, at));
    check_alone(&exact(LOG, b"\r\r\n"), Deviations::DOUBLE_CR, &["double_cr"], (ErrorKind::BadTerminator, at));
}

#[test]
fn back_to_back_odd_endings_lose_no_frame() {
    let lf_a = exact(SET_RTD, b"\n");
    let lf_b = exact(DATA_ANSWER, b"\n");
    let cr_a = exact(REALTIME, b"\r\r\n");
    let cr_b = exact(SET_RTD, b"\r\r\n");
    let chars_lf = by_chars(LOG, b"\n");
    let chars_cr = by_chars(LOG, b"\r\r\n");
    let lm = Deviations::LENGTH_MISMATCH;
    let frames: [(&[u8], Deviations); 8] = [
        (&lf_a, Deviations::BARE_LF),
        (&lf_b, Deviations::BARE_LF),
        (&cr_a, Deviations::DOUBLE_CR),
        (&cr_b, Deviations::DOUBLE_CR),
        (&chars_lf, lm.union(Deviations::BARE_LF)),
        (&chars_lf, lm.union(Deviations::BARE_LF)),
        (&chars_cr, lm.union(Deviations::DOUBLE_CR)),
        (&chars_cr, lm.union(Deviations::DOUBLE_CR)),
    ];
    let stream: Vec<u8> = frames.iter().flat_map(|(b, _)| b.iter().copied()).collect();
    assert_eq!(deframe([stream.as_slice()]), expected(&frames));
}

/// Normal frames, frames with odd endings, and garbage, in one stream.
struct Mixed {
    stream: Vec<u8>,
    want: Vec<Seen>,
}

fn mixed() -> Mixed {
    let normal_a = exact(SET_RTD, b"\r\n");
    let normal_b = exact(DATA_ANSWER, b"\r\n");
    let normal_c = exact(REALTIME, b"\r\n");
    let lf = exact(REALTIME, b"\n");
    let cr = exact(DATA_ANSWER, b"\r\r\n");
    let chars_lf = by_chars(LOG, b"\n");
    let chars_cr = by_chars(LOG, b"\r\r\n");
    let lm = Deviations::LENGTH_MISMATCH;
    let none = Deviations::NONE;
    let parts: [(&[u8], Option<Deviations>); 13] = [
        (&normal_a, Some(none)),
        (&lf, Some(Deviations::BARE_LF)),
        (&normal_b, Some(none)),
        (&cr, Some(Deviations::DOUBLE_CR)),
        (&normal_c, Some(none)),
        (b"noise\r\n", None),
        (&chars_lf, Some(lm.union(Deviations::BARE_LF))),
        (&normal_a, Some(none)),
        (&chars_cr, Some(lm.union(Deviations::DOUBLE_CR))),
        (&lf, Some(Deviations::BARE_LF)),
        (&cr, Some(Deviations::DOUBLE_CR)),
        (&normal_b, Some(none)),
        (&chars_lf, Some(lm.union(Deviations::BARE_LF))),
    ];
    let mut stream = Vec::new();
    let mut want = Vec::new();
    for (bytes, deviations) in parts {
        let offset = stream.len() as u64;
        want.push(match deviations {
            Some(deviations) => Seen::Frame { offset, bytes: bytes.to_vec(), deviations },
            None => Seen::Skipped { offset, len: bytes.len(), reason: SkipReason::Garbage },
        });
        stream.extend_from_slice(bytes);
    }
    Mixed { stream, want }
}

#[test]
fn odd_endings_mixed_with_normal_frames_are_each_reported_and_judged() {
    let Mixed { stream, want } = mixed();
    let seen = deframe([stream.as_slice()]);
    assert_eq!(seen, want);
    // Judge every frame in both modes.
    for s in &seen {
        let Seen::Frame { bytes, deviations, .. } = s else { continue };
        let f = split_whole(bytes, true);
        let lenient = Decoded::new(f, DecodeOptions::LENIENT);
        assert!(lenient.is_valid(), "{}", String::from_utf8_lossy(bytes));
        assert_eq!(lenient.deviations(), *deviations);
        let strict = Decoded::new(f, DecodeOptions::STRICT).verdict();
        if deviations.is_empty() {
            assert!(strict.is_ok());
        } else if deviations.contains(Deviations::LENGTH_MISMATCH) {
            assert_eq!(strict.unwrap_err().offset(), 2);
        } else {
            let e = strict.unwrap_err();
            assert_eq!((e.kind(), e.offset()), (ErrorKind::BadTerminator, f.crc_offset() + 4));
        }
    }
}

#[test]
fn odd_endings_split_in_two_at_every_offset_give_the_same_events() {
    let Mixed { stream, want } = mixed();
    for cut in 0..=stream.len() {
        let (a, b) = stream.split_at(cut);
        assert_eq!(deframe([a, b]), want, "cut at {cut}");
    }
}

#[test]
fn odd_endings_fed_one_byte_at_a_time_give_the_same_events() {
    let Mixed { stream, want } = mixed();
    assert_eq!(deframe(stream.chunks(1)), want);
    for size in [2, 3, 5, 7, 64] {
        assert_eq!(deframe(stream.chunks(size)), want, "pieces of {size}");
    }
}

#[test]
fn every_three_way_cut_around_an_odd_ending_keeps_the_next_frame() {
    // Cut the stream twice anywhere in the last bytes of an odd-ending frame and the first bytes
    // of the frame after it, so that `\r`, `\r` and `\n` each arrive in a read of their own.
    let first = [exact(SET_RTD, b"\r\r\n"), exact(SET_RTD, b"\n"), by_chars(LOG, b"\r\r\n"), by_chars(LOG, b"\n")];
    let next = exact(DATA_ANSWER, b"\r\n");
    for head in &first {
        let mut stream = head.clone();
        stream.extend_from_slice(&next);
        let want = deframe([stream.as_slice()]);
        assert_eq!(want.len(), 2, "{want:?}");
        assert!(matches!(&want[1], Seen::Frame { bytes, .. } if *bytes == next));
        let window = head.len() - 8..head.len() + 8;
        for i in window.clone() {
            for j in i..window.end {
                let pieces = [&stream[..i], &stream[i..j], &stream[j..]];
                assert_eq!(deframe(pieces), want, "cuts at {i} and {j}");
            }
        }
    }
}
