#![no_main]
//! Fuzz target `manifest`: see `ociregistry::fuzzing::manifest`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ociregistry::fuzzing::manifest(data));
