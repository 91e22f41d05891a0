#![no_main]
//! Fuzz target `config`: see `ociregistry::fuzzing::config`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ociregistry::fuzzing::config(data));
