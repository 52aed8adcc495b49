//! Fuzz target `roundtrip`: see `hj212_codec_fuzz::roundtrip`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hj212_codec_fuzz::roundtrip(data));
