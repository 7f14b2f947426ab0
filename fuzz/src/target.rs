//! What the fuzz targets share. Each is one untrusted input of the shim that reaches it as text
//! (`oci_bundle.rs`, `vmi_annotation.rs`), with a check that refuses or accepts it and panics
//! only on a finding; the fuzzer runs each through the same [`Target`].
//!
//! Compiled, with `seeds.rs` and a target's module, into the main workspace's tests too
//! (`api/tests/fuzz_regressions.rs`, `tests/tests/fuzz_regressions.rs`), as `crate::target`.

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
    /// The shim's reading of the text, then what an input it accepts must be. Panics only when a
    /// rule of the target is broken (a finding).
    fn check(text: &str) -> Outcome;

    /// Runs raw fuzzer bytes. The shim only ever gets these inputs as text (the CRI and
    /// containerd carry annotations as strings; containerd writes `config.json` as JSON text and
    /// the shim reads it with `read_to_string`), so bytes that are not UTF-8 never reach it.
    fn run(data: &[u8]) -> Option<Outcome> {
        std::str::from_utf8(data).ok().map(Self::check)
    }
}
