//! Side-by-side throughput: `hj212-codec` against the `a` 0.1.1 HJ 212 parser.
//!
//! Both parsers receive the same ~1 MB stream in the same 4 KiB chunks and must accept every frame
//! in it (checked before anything is timed). The stream is built from the packets of
//! `tests/vectors/conforming.txt`, weighted like the traffic a platform receives: mostly `2011`
//! real-time data, then `2051`/`2061` minute and hour data, the `9011`/`9012`/`9014` answers and
//! some `3020` status reports.
//!
//! Benchmarks (group `decode`, throughput in bytes of the whole stream):
//! - `hj212_codec`: [`Deframer`] + [`Decoded::new`] (strict) + `verdict()` + every `CP` pair's key
//!   and value: split, CRC, UTF-8 check and parse.
//! - `a_0_1_1`: `a::Framer` + `String::from_utf8` + `a::parse_frame_strict` + every entry of its
//!   `CP` map: the same work as far as that crate offers it.
//! - `hj212_codec_crc_only`: [`crc::hj212`] over every data segment.
//! - `hj212_codec_split_only`: [`Deframer`] alone.
//!
//! Frames per second: the setup prints the frame count per iteration; divide it by the time per
//! iteration that criterion prints (`docs/performance.md` does this).
//!
//! Run: `cargo bench -p hj212-codec --bench decode -- --warm-up-time 1 --measurement-time 5`

use std::hint::black_box;
use std::ops::Range;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hj212_codec::{DecodeOptions, Decoded, Deframer, Event, Packet, Split, Splitter, crc};

const VECTORS: &str = include_str!("../tests/vectors/conforming.txt");

/// Bytes handed to each parser per read, as a TCP reader would.
const CHUNK: usize = 4096;

/// Size the stream grows to (it stops at the first whole round of packets past this).
const TARGET_BYTES: usize = 1 << 20;

/// The wire bytes of every packet line in the vector file.
fn vector_frames() -> Vec<Vec<u8>> {
    VECTORS
        .lines()
        .filter(|l| l.starts_with("##"))
        .map(|l| {
            let body = l.strip_suffix("\\r\\n").expect("packet lines end with a written \\r\\n");
            let mut wire = body.as_bytes().to_vec();
            wire.extend_from_slice(b"\r\n");
            wire
        })
        .collect()
}

/// How many times a packet appears per round of traffic, by command and content.
fn weight(frame: &[u8]) -> usize {
    let Split::Frame(raw) = Splitter::default().split(frame, true) else { return 0 };
    let Ok(packet) = Packet::parse(raw.data()) else { return 0 };
    let has_data = packet.cp().get("DataTime").is_some();
    match packet.cn() {
        // Real-time data: the bulk of what a platform receives.
        2011 if has_data => 6,
        // Minute and hour data.
        2051 | 2061 if has_data => 3,
        // Answers to platform commands and to data uploads that asked for one.
        9011 | 9012 | 9014 => 2,
        // Status and parameter reports.
        3020 => 1,
        _ => 0,
    }
}

/// A small deterministic generator for the shuffle (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// True when a frame starting at `offset` would have a chunk boundary right after its first `#` or
/// right after three of its four length digits. `a::Framer` mis-handles exactly those two cuts (it
/// drops a lone `#`, and it accepts a three-digit length), so the stream avoids them: the comparison
/// is about speed, and both parsers must see the same, correctly split frames.
fn cut_trips_a(offset: usize) -> bool {
    (offset + 1) % CHUNK == 0 || (offset + 5) % CHUNK == 0
}

struct Stream {
    bytes: Vec<u8>,
    /// Data-segment range of every frame, for the CRC-only benchmark.
    data: Vec<Range<usize>>,
    /// Frames per command code, for the report.
    by_cn: std::collections::BTreeMap<u16, (usize, usize)>,
}

fn build_stream() -> Stream {
    let mut round: Vec<&[u8]> = Vec::new();
    let frames = vector_frames();
    for f in &frames {
        round.extend(std::iter::repeat_n(f.as_slice(), weight(f)));
    }
    assert!(!round.is_empty());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut bytes = Vec::with_capacity(TARGET_BYTES + 64 * 1024);
    let mut data = Vec::new();
    let mut by_cn = std::collections::BTreeMap::new();
    while bytes.len() < TARGET_BYTES {
        // One round in random order; when the next frame would leave the one after it on a cut
        // that `a` gets wrong, take another frame of the round first.
        let mut left = round.clone();
        while !left.is_empty() {
            let mut pick = rng.below(left.len());
            for _ in 0..left.len() {
                if !cut_trips_a(bytes.len() + left[pick].len()) {
                    break;
                }
                pick = (pick + 1) % left.len();
            }
            let f = left.swap_remove(pick);
            let start = bytes.len();
            bytes.extend_from_slice(f);
            let Split::Frame(raw) = Splitter::default().split(f, true) else { unreachable!() };
            data.push(start + 6..start + raw.crc_offset());
            let cn = Packet::parse(raw.data()).map(|p| p.cn()).unwrap_or_default();
            let e = by_cn.entry(cn).or_insert((0, 0));
            e.0 += 1;
            e.1 += f.len();
        }
    }
    Stream { bytes, data, by_cn }
}

/// Split + CRC + strict verdict + every `CP` pair. Returns (frames accepted, pairs seen).
fn run_codec(stream: &[u8]) -> (usize, usize) {
    let mut deframer = Deframer::default();
    let (mut ok, mut pairs) = (0, 0);
    let mut handle = |ev: Event<'_>| {
        if let Event::Frame { frame, .. } = ev
            && let Ok(packet) = Decoded::new(frame, DecodeOptions::STRICT).verdict()
        {
            ok += 1;
            for pair in packet.cp().pairs() {
                black_box(pair.key());
                black_box(pair.value());
                pairs += 1;
            }
        }
    };
    for chunk in stream.chunks(CHUNK) {
        deframer.feed(chunk);
        while let Some(ev) = deframer.next_event() {
            handle(ev);
        }
    }
    deframer.finish();
    while let Some(ev) = deframer.next_event() {
        handle(ev);
    }
    (ok, pairs)
}

/// `a` 0.1.1: split + UTF-8 + CRC + parse, then every entry of its `CP` map.
fn run_a(stream: &[u8]) -> (usize, usize) {
    let mut framer = a::Framer::new();
    let (mut ok, mut pairs) = (0, 0);
    for chunk in stream.chunks(CHUNK) {
        framer.push(chunk);
        while let Some(frame) = framer.next_frame() {
            let Ok(text) = String::from_utf8(frame) else { continue };
            if let Ok(packet) = a::parse_frame_strict(&text) {
                ok += 1;
                for (k, v) in &packet.cp {
                    black_box(k.as_str());
                    black_box(v.as_str());
                    pairs += 1;
                }
                black_box(&packet);
            }
        }
    }
    (ok, pairs)
}

/// The HJ 212 CRC of every data segment.
fn run_crc(stream: &[u8], data: &[Range<usize>]) -> u16 {
    data.iter().fold(0, |acc, r| acc ^ crc::hj212(&stream[r.clone()]))
}

/// The deframer alone. Returns the number of frames.
fn run_split(stream: &[u8]) -> usize {
    let mut deframer = Deframer::default();
    let mut frames = 0;
    for chunk in stream.chunks(CHUNK) {
        deframer.feed(chunk);
        while let Some(ev) = deframer.next_event() {
            if let Event::Frame { frame, .. } = ev {
                black_box(frame.bytes());
                frames += 1;
            }
        }
    }
    deframer.finish();
    while let Some(ev) = deframer.next_event() {
        if let Event::Frame { frame, .. } = ev {
            black_box(frame.bytes());
            frames += 1;
        }
    }
    frames
}

fn decode(c: &mut Criterion) {
    let stream = build_stream();
    let frames = stream.data.len();
    let bytes = stream.bytes.len();

    // Honesty checks: both parsers accept every frame of the stream, and the split is the same.
    let (codec_ok, codec_pairs) = run_codec(&stream.bytes);
    let (a_ok, a_pairs) = run_a(&stream.bytes);
    assert_eq!(codec_ok, frames, "hj212-codec refused frames of the stream");
    assert_eq!(a_ok, frames, "a 0.1.1 refused or mis-split frames of the stream");
    assert_eq!(run_split(&stream.bytes), frames);
    for r in &stream.data {
        let received = crc::from_hex(&stream.bytes[r.end..r.end + 4]).expect("hex CRC");
        assert_eq!(crc::hj212(&stream.bytes[r.clone()]), received);
    }

    eprintln!(
        "stream: {bytes} bytes, {frames} frames per iteration, mean frame {:.1} bytes; \
         CP pairs per iteration: hj212-codec {codec_pairs} (`;` and `,` split), a {a_pairs} (`;` split only)",
        bytes as f64 / frames as f64
    );
    for (cn, (n, b)) in &stream.by_cn {
        eprintln!(
            "  CN={cn}: {n} frames ({:.1}%), {b} bytes ({:.1}%)",
            100.0 * *n as f64 / frames as f64,
            100.0 * *b as f64 / bytes as f64
        );
    }

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("hj212_codec", |b| b.iter(|| run_codec(black_box(&stream.bytes))));
    group.bench_function("a_0_1_1", |b| b.iter(|| run_a(black_box(&stream.bytes))));
    group.bench_function("hj212_codec_crc_only", |b| b.iter(|| run_crc(black_box(&stream.bytes), &stream.data)));
    group.bench_function("hj212_codec_split_only", |b| b.iter(|| run_split(black_box(&stream.bytes))));
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
