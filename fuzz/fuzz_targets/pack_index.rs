#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mlv_fuzz::pack_index(data));
