//! The checks behind each fuzz target, one module per untrusted input (`fuzz_targets/*.rs` are
//! one-line wrappers), so the main workspace's tests can run the same checks on the seeds and
//! on every finding kept in `regressions/`.

#![forbid(unsafe_code)]

pub mod oci_bundle;
pub mod seeds;
pub mod target;
pub mod vmi_annotation;
