//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz target bodies,
//! so every seed and every minimised crash that was added there is checked on each test run.

// The deframer and the encoder need `alloc`.
#![cfg(feature = "alloc")]

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::fs;
use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("readable directory").path())
        .collect();
    entries.sort();
    assert!(entries.len() >= 100, "{} holds only {} inputs", dir.display(), entries.len());
    for path in entries {
        let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let outcome = std::panic::catch_unwind(|| body(&data));
        assert!(outcome.is_ok(), "fuzz target `{target}` fails on {}", path.display());
    }
}

#[test]
fn split_corpus() {
    replay("split", targets::split);
}

#[test]
fn parse_corpus() {
    replay("parse", targets::parse);
}

#[test]
fn roundtrip_corpus() {
    replay("roundtrip", targets::roundtrip);
}

/// The seeds are the golden vectors with real CR LF, so most of them must be whole valid frames.
#[test]
fn roundtrip_seeds_are_valid_frames() {
    use hj212_codec::{DecodeOptions, Decoded, Split, Splitter};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/roundtrip");
    let mut valid = 0;
    for entry in fs::read_dir(dir).expect("corpus") {
        let data = fs::read(entry.expect("entry").path()).expect("seed");
        if let Split::Frame(f) = Splitter::default().split(&data, true) {
            valid += usize::from(f.len() == data.len() && Decoded::new(f, DecodeOptions::STRICT).is_valid());
        }
    }
    assert!(valid >= 100, "only {valid} seeds are strictly valid frames");
}
