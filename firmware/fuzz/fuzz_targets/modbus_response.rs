//! Fuzz target `modbus_response`: see `firmware_fuzz::modbus_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| firmware_fuzz::modbus_response(data));
