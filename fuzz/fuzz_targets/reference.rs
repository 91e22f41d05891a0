#![no_main]
//! Fuzz target `reference`: see `ociregistry::fuzzing::reference`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ociregistry::fuzzing::reference(data));
