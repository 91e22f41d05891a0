#![no_main]
//! Fuzz target `range`: see `ociregistry::fuzzing::range`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ociregistry::fuzzing::range(data));
