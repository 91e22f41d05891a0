#![no_main]
//! Fuzz target `go_manifest`: see `ociregistry::fuzzing::go_manifest`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ociregistry::fuzzing::go_manifest(data));
