//! Fuzz target `parse`: see `hj212_codec_fuzz::parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hj212_codec_fuzz::parse(data));
