//! Replays the committed fuzz corpus (`fuzz/corpus/TARGET/*`) through the
//! same target bodies the fuzzers run, on the stable toolchain: a decoder
//! change that panics on any input the fuzzers once reached fails here.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

fn corpus_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

#[test]
fn every_target_has_a_corpus_and_every_corpus_a_target() {
    let mut dirs: Vec<String> = std::fs::read_dir(corpus_root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    dirs.sort();
    let mut names: Vec<String> = idweb_fuzzing::TARGETS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    names.sort();
    assert_eq!(dirs, names);
    for (name, _) in idweb_fuzzing::TARGETS {
        let target = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/fuzz_targets")
            .join(format!("{name}.rs"));
        assert!(target.is_file(), "no fuzz target file for {name}");
    }
}

#[test]
fn the_corpus_replays_without_a_panic() {
    let mut replayed = 0;
    for (name, target) in idweb_fuzzing::TARGETS {
        let dir = corpus_root().join(name);
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| target(&data));
            assert!(outcome.is_ok(), "{name}: {} panics", path.display());
            files += 1;
        }
        assert!(files > 0, "the corpus of {name} is empty");
        replayed += files;
    }
    assert!(replayed >= idweb_fuzzing::TARGETS.len());
}
