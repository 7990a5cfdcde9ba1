//! Replays every committed fuzz corpus (`fuzz/corpus/<target>/*`) and the
//! seeds through the targets under stable `cargo test`: a finding fixed once
//! stays fixed, and no target silently rejects everything.
//!
//! `CROWD_FUZZ_WRITE_SEEDS=1 cargo test --workspace -- corpora` writes the
//! seeds into the corpus directories (named by content hash).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

use std::path::PathBuf;

use crowd_fuzzing::{run, seeds, TARGETS};

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

#[test]
fn corpora_every_seed_is_accepted_by_its_target() {
    let seeds = seeds();
    for t in TARGETS {
        let (_, inputs) = seeds
            .iter()
            .find(|(name, _)| *name == t.name)
            .unwrap_or_else(|| panic!("no seeds for target {}", t.name));
        assert!(!inputs.is_empty(), "{}: no seeds", t.name);
        for (i, input) in inputs.iter().enumerate() {
            assert!((t.run)(input), "{}: seed {i} is not accepted", t.name);
            // one flipped byte in the middle: still no panic
            let mut mutated = input.clone();
            let mid = mutated.len() / 2;
            mutated[mid] ^= 0x40;
            let _ = (t.run)(&mutated);
        }
        if std::env::var_os("CROWD_FUZZ_WRITE_SEEDS").is_some() {
            let dir = corpus_dir(t.name);
            std::fs::create_dir_all(&dir).unwrap();
            for input in inputs {
                let name = blake3::hash(input).to_hex();
                std::fs::write(dir.join(&name[..16]), input).unwrap();
            }
        }
    }
}

#[test]
fn corpora_every_committed_input_replays_without_a_panic() {
    let mut total = 0;
    for t in TARGETS {
        let dir = corpus_dir(t.name);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: no corpus at {}: {e}", t.name, dir.display()));
        let mut n = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            // (a fuzzer running meanwhile replaces corpus files)
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("{}: {e}", path.display()),
            };
            let _ = run(t.name, &bytes);
            n += 1;
        }
        assert!(n > 0, "{}: empty corpus", t.name);
        total += n;
    }
    assert!(total >= TARGETS.len());
    // every target has a fuzz_targets file that calls it
    for t in TARGETS {
        let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/fuzz_targets")
            .join(format!("{}.rs", t.name));
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            text.contains(&format!("run(\"{}\"", t.name)),
            "{} does not run its target",
            file.display()
        );
    }
}
