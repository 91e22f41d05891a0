#![no_main]
//! Fuzz target `request_head`: see `ociregistry::fuzzing::request_head`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ociregistry::fuzzing::request_head(data));
