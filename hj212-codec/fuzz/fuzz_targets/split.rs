//! Fuzz target `split`: see `hj212_codec_fuzz::split`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hj212_codec_fuzz::split(data));
