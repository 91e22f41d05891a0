#![no_main]
//! Fuzz target `route`: see `ociregistry::fuzzing::route`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ociregistry::fuzzing::route(data));
