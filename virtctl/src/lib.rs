//! virtctl's library half: code that the `virtctl` binary and the integration tests share.
//!
//! The binary's verbs (`commands/`) stay in the binary; what lives here is plumbing that must
//! behave identically for `virtctl local` and for the tests that prove virtshim against a real
//! containerd, so that a passing test says something about the CLI.

pub mod cluster;
pub mod cri;
pub mod local;
