//! The shim's parts, as a library so that what judges untrusted input (the OCI bundle, the VMI
//! annotation) can be fuzzed and unit-tested apart from the binary (`main.rs`).

pub mod accel;
pub mod bundle;
pub mod cgroup;
pub mod command;
pub mod console;
pub mod error;
pub mod host;
pub mod libvirt;
pub mod lifecycle;
pub mod network;
pub mod paths;
pub mod pod;
pub mod qemu_ids;
pub mod reaper;
pub mod rootfs;
pub mod service;
pub mod state;
pub mod vm;

/// The shapes of containerd's bundles for a virtshim pod (and the fuzzers' seeds), shared with
/// the unit tests so that one description of them serves the fuzzer, the bundle reader's tests
/// and the pod's.
#[cfg(test)]
#[path = "../../fuzz/src/seeds.rs"]
#[allow(dead_code)]
mod seeds;
