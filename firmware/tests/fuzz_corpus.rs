//! Replays the committed fuzz corpus (`fuzz/corpus/modbus_response/`) through the fuzz target body,
//! so every seed and every minimised crash added there is checked on each test run; and checks that
//! the seeds built from the simulator are committed.
//!
//! To rebuild the seeds after a profile or simulator change:
//! `FIRMWARE_WRITE_SEEDS=1 cargo test -p firmware --test fuzz_corpus`.

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::fs;
use std::path::{Path, PathBuf};

use firmware::modbus::{
    CoalesceConfig, ExceptionCode, FunctionCode, Parsed, Request, coalesce_vec, encode_request, parse_response,
};
use firmware::profile::builtin::{ALL, FLUE_GAS_CEMS, SURFACE_WATER_COD};
use firmware::profile::{DateTime, PointSpec, Target, Value};
use firmware::sim::{Fault, Simulator};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/modbus_response")
}

/// A simulator for `profile` with a plausible value in every point.
fn filled(profile: &firmware::profile::Profile<'_>) -> Simulator {
    let mut sim = Simulator::new(profile);
    for (i, p) in profile.points.iter().enumerate() {
        let value = if p.value.is_time() {
            Value::Time(DateTime::new(2024, 3, 1, 8, (i * 7 % 60) as u8, 30).expect("valid"))
        } else {
            match p.target {
                Target::Status => Value::Code(profile.status_map.get(1).map_or(1, |e| e.raw)),
                Target::Alarm | Target::Fault => Value::Code(0),
                Target::Total(_) => Value::Number(12_345.678),
                _ => Value::Number(12.5 + i as f64 * 0.75),
            }
        };
        sim.set_point(p, value);
    }
    sim
}

fn request(unit: u8, r: &Request<'_>) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let n = encode_request(unit, r, &mut buf).expect("valid request");
    buf[..n].to_vec()
}

/// The seeds: every read block of every builtin profile (coalesced without and with gaps) answered
/// by the simulator, a few writes, and faulty answers.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for profile in ALL {
        let mut sim = filled(profile);
        let points: Vec<_> = profile.points.iter().map(PointSpec::block).collect();
        let mut blocks = Vec::new();
        for max_gap in [0, 64] {
            for b in coalesce_vec(&points, &CoalesceConfig { max_gap, ..Default::default() }).expect("coalesces") {
                if !blocks.contains(&b) {
                    blocks.push(b);
                }
            }
        }
        for b in blocks {
            let r = Request::read(b.function, b.address, b.count).expect("a read");
            let reply = sim.handle(&request(b.unit, &r)).expect("the simulator answers");
            let name =
                format!("sim-{}-u{}-fc{:02}-{:04x}x{}", profile.name, b.unit, b.function.to_u8(), b.address, b.count);
            out.push((name, targets::input(&r.expectation(b.unit), &reply.bytes)));
        }
    }
    // Writes: FC 06 and FC 16 echoes.
    let mut sim = filled(&SURFACE_WATER_COD);
    for (name, r) in [
        ("sim-write-fc06-interval", Request::WriteSingleRegister { address: 0x1089, value: 60 }),
        ("sim-write-fc16-slope", Request::WriteMultipleRegisters { address: 0x10A7, values: &[0x0000, 0x3FA0] }),
    ] {
        let reply = sim.handle(&request(1, &r)).expect("answers");
        out.push((name.into(), targets::input(&r.expectation(1), &reply.bytes)));
    }
    // Faults on the COD result read (unit 1) and the CEMS gas block (unit 7).
    let cod = Request::ReadHoldingRegisters { address: 0x1008, count: 2 };
    let gas = Request::ReadInputRegisters { address: 0x0132, count: 0x28 };
    for (tag, unit, r, mut sim) in
        [("cod", 1, cod, filled(&SURFACE_WATER_COD)), ("cems", 7, gas, filled(&FLUE_GAS_CEMS))]
    {
        let req = request(unit, &r);
        let expect = r.expectation(unit);
        let good = sim.handle(&req).expect("answers").bytes;
        let faults = [
            ("bad-crc", Fault::BadCrc),
            ("exception-busy", Fault::Exception(ExceptionCode::ServerDeviceBusy)),
            ("exception-address", Fault::Exception(ExceptionCode::IllegalDataAddress)),
            ("exception-other", Fault::Exception(ExceptionCode::Other(0x42))),
            ("other-unit", Fault::OtherUnit(unit + 1)),
            ("noise-before", Fault::NoiseBefore(vec![0x00, 0xFF, unit, 0x03])),
        ];
        for (name, fault) in faults {
            sim.inject(fault);
            let reply = sim.handle(&req).expect("answers").bytes;
            out.push((format!("fault-{tag}-{name}"), targets::input(&expect, &reply)));
        }
        out.push((format!("fault-{tag}-truncated"), targets::input(&expect, &good[..good.len() / 2])));
        out.push((format!("fault-{tag}-empty"), targets::input(&expect, &[])));
        // A stale, cut answer, then the real one behind it.
        let mut stale = good[..5].to_vec();
        stale.extend_from_slice(&good);
        out.push((format!("fault-{tag}-stale-fragment-then-answer"), targets::input(&expect, &stale)));
        // Two whole answers back to back (a late answer and then ours).
        out.push((format!("fault-{tag}-two-answers"), targets::input(&expect, &[good.clone(), good.clone()].concat())));
        // The answer with a trailing byte of line noise.
        out.push((format!("fault-{tag}-trailing-noise"), targets::input(&expect, &[&good[..], &[0xFF]].concat())));
        // A valid answer for another function from the same unit.
        let other = if r.function() == FunctionCode::ReadHoldingRegisters {
            Request::read(FunctionCode::ReadInputRegisters, 0, 2)
        } else {
            Request::read(FunctionCode::ReadHoldingRegisters, 0, 2)
        }
        .expect("a read");
        out.push((format!("fault-{tag}-wrong-function"), targets::input(&other.expectation(unit), &good)));
        // The same bytes against an expectation with another byte count.
        let shorter = Request::read(r.function(), 0x0132, 1).expect("a read").expectation(unit);
        out.push((format!("fault-{tag}-byte-count"), targets::input(&shorter, &good)));
    }
    out
}

#[test]
fn seeds_are_committed() {
    let dir = corpus_dir();
    let write = std::env::var_os("FIRMWARE_WRITE_SEEDS").is_some();
    let seeds = seeds();
    assert!(seeds.len() >= 48, "only {} seeds", seeds.len());
    for (name, bytes) in &seeds {
        let path = dir.join(name);
        if write {
            fs::create_dir_all(&dir).expect("corpus directory");
            fs::write(&path, bytes).expect("seed written");
        }
        let committed = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; rebuild the seeds", path.display()));
        assert_eq!(&committed, bytes, "{} is stale; rebuild the seeds", path.display());
    }
}

/// The simulator's answers are whole valid frames: a seed that did not parse would seed nothing.
#[test]
fn simulator_seeds_parse_complete() {
    let mut n = 0;
    for (name, bytes) in seeds().iter().filter(|(n, _)| n.starts_with("sim-")) {
        let (head, wire) = bytes.split_first_chunk::<{ targets::HEADER_LEN }>().expect("header");
        let expect = targets::expectation(head);
        match parse_response(&expect, wire) {
            Ok(Parsed::Complete { skipped: 0, consumed, .. }) if consumed == wire.len() => n += 1,
            other => panic!("{name}: {other:?}"),
        }
    }
    assert!(n >= 30, "{n} simulator seeds");
}

#[test]
fn corpus_replays_without_failures() {
    let mut entries: Vec<_> = fs::read_dir(corpus_dir())
        .expect("the committed corpus")
        .map(|e| e.expect("readable directory").path())
        .collect();
    entries.sort();
    assert!(entries.len() >= 48, "only {} inputs", entries.len());
    for path in entries {
        let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| targets::modbus_response(&data));
        assert!(outcome.is_ok(), "fuzz target `modbus_response` fails on {}", path.display());
    }
}

#[test]
fn header_round_trips() {
    let cases = [
        Request::ReadCoils { address: 3, count: 9 }.expectation(1),
        Request::ReadHoldingRegisters { address: 0x1008, count: 2 }.expectation(247),
        Request::WriteSingleRegister { address: 0x1089, value: 60 }.expectation(5),
        Request::WriteMultipleCoils { address: 0x13, values: &[true; 10] }.expectation(9),
    ];
    for e in cases {
        let input = targets::input(&e, &[]);
        let head = input.first_chunk::<{ targets::HEADER_LEN }>().expect("header");
        assert_eq!(targets::expectation(head), e);
    }
}
