//! What the fuzz targets share. Each is one untrusted input of the shim that reaches it as text
//! (`oci_bundle.rs`, `vmi_annotation.rs`), with a check that refuses or accepts it and panics
//! only on a finding; the fuzzer, the seeds and the findings kept in `regressions/` all run
//! through the same [`Target`].
//!
//! Compiled, with `seeds.rs` and a target's module, into the main workspace's tests too
//! (`api/tests/fuzz_regressions.rs`, `tests/tests/fuzz_regressions.rs`), as `crate::target`.

use crate::seeds::{Expect, Seed};
use std::path::PathBuf;

/// What the shim made of an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Refused, with the shim's message (for the `virtshim.io/vmi` annotation, the message the
    /// shim puts after "virtshim.io/vmi annotation is invalid: ").
    Refused(String),
    /// Accepted: the shim would go on with it (prepare the VM, run the container).
    Accepted,
}

/// One fuzz target: an input of the shim and the check behind it.
pub trait Target {
    /// The target's name: its `fuzz_targets/` binary, its corpus and its kept findings
    /// (`regressions/<NAME>/`).
    const NAME: &'static str;

    /// The shim's reading of the text, then what an input it accepts must be. Panics only when a
    /// rule of the target is broken (a finding).
    fn check(text: &str) -> Outcome;

    /// Runs raw fuzzer bytes. The shim only ever gets these inputs as text (the CRI and
    /// containerd carry annotations as strings; containerd writes `config.json` as JSON text and
    /// the shim reads it with `read_to_string`), so bytes that are not UTF-8 never reach it.
    fn run(data: &[u8]) -> Option<Outcome> {
        std::str::from_utf8(data).ok().map(Self::check)
    }

    /// Checks a seed; panics unless the shim makes of it what the seed expects (for a refusal,
    /// a message containing the expected part).
    fn check_seed(seed: &Seed) {
        let outcome = Self::check(&seed.text);
        match (seed.expect, &outcome) {
            (Expect::Any, _) | (Expect::Accepted, Outcome::Accepted) => {}
            (Expect::Refused(part), Outcome::Refused(message)) if message.contains(part) => {}
            (expected, _) => panic!("{}: expected {expected:?}, got {outcome:?}", seed.name),
        }
    }

    /// Runs every finding kept for this target ([`regressions`]), printing each one's path
    /// first, so that a finding that panics again is named.
    fn replay_regressions() {
        for file in regressions(Self::NAME) {
            println!("{}", file.display());
            let data = std::fs::read(&file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            Self::run(&data);
        }
    }
}

/// The findings kept for a target, `fuzz/regressions/<target>/*`, in name order; none when the
/// folder does not exist. Found from the crate that compiles this file: `fuzz/` itself and each
/// crate that includes it are one folder below the repository.
pub fn regressions(target: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    files.sort();
    files
}
