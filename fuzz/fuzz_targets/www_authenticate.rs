#![no_main]
//! Fuzz target `www_authenticate`: see `ociregistry::fuzzing::www_authenticate`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ociregistry::fuzzing::www_authenticate(data));
