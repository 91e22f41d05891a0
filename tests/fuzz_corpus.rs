//! Replays the committed fuzz corpora on stable Rust: every file of
//! `fuzz/corpus/<target>/` goes through the same library entry point as the
//! cargo-fuzz target of that name (`ociregistry::fuzzing`). Passing proves
//! that no input the fuzzers have kept, nor any found crash added since,
//! panics or breaks an invariant the entry points check; and that every
//! target has a corpus and a `fuzz/fuzz_targets/<target>.rs`, and every
//! corpus a target.

use std::path::{Path, PathBuf};

use ociregistry::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

#[test]
fn every_corpus_file_replays_without_a_panic() {
    let mut panicked = Vec::new();
    for (name, entry_point) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(name);
        let files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .filter(|p| p.is_file())
            .collect();
        assert!(!files.is_empty(), "{} has no inputs", dir.display());
        for file in files {
            let data = std::fs::read(&file).expect("corpus file");
            if std::panic::catch_unwind(|| entry_point(&data)).is_err() {
                panicked.push(format!("{name}: {}", file.display()));
            }
        }
    }
    assert!(panicked.is_empty(), "inputs that panic (messages above):\n{}", panicked.join("\n"));
}

#[test]
fn every_target_has_a_fuzz_target_and_every_corpus_a_target() {
    for (name, _) in TARGETS {
        let target = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        assert!(target.is_file(), "{} is missing", target.display());
    }
    for entry in std::fs::read_dir(fuzz_dir().join("corpus")).expect("fuzz/corpus") {
        let name = entry.expect("corpus dir").file_name();
        let name = name.to_string_lossy();
        assert!(TARGETS.iter().any(|(t, _)| *t == name), "fuzz/corpus/{name} has no target in ociregistry::fuzzing");
    }
}
