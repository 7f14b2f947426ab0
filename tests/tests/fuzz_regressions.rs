//! The `oci_bundle` fuzz target's check (`fuzz/src/oci_bundle.rs`) under plain `cargo test`:
//! on every finding kept in `fuzz/regressions/oci_bundle/`, and on the seeds `make fuzz` starts
//! from, each with what the shim's bundle reader must make of it. (The `vmi_annotation`
//! target's are in `api/tests/fuzz_regressions.rs`.) Needs no containerd: the reader is pure.

#![allow(clippy::unwrap_used)]

#[path = "../../fuzz/src/oci_bundle.rs"]
mod oci_bundle;
#[allow(dead_code)]
#[path = "../../fuzz/src/seeds.rs"]
mod seeds;
#[path = "../../fuzz/src/target.rs"]
mod target;

use oci_bundle::OciBundle;
use target::Target;

#[test]
fn kept_oci_bundle_findings_stay_fixed() {
    OciBundle::replay_regressions();
}

#[test]
fn bundles_a_vm_pod_must_not_have_are_refused() {
    for seed in seeds::oci_bundles() {
        OciBundle::check_seed(&seed);
    }
}
