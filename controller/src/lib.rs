//! The controller's decisions, as pure functions from observed state to an action.
//!
//! The reconcilers fetch objects, call these functions and apply what they return; nothing here
//! talks to the apiserver, reads a clock or draws a random number, so every rule KubeVirt's
//! controllers follow can be tested as a table (see `kubevirt-compat.md`).
//!
//! - [`observed`]: the few facts about a VMI that the decisions read, parsed once.
//! - [`decide`]: what to do — the run strategy, VM → VMI, the start/stop/restart subresources,
//!   crash-loop backoff, replica sets.
//! - [`status`]: what to report — a VMI's phase from its pod, a VM's printable status and
//!   conditions.

pub mod decide;
pub mod observed;
pub mod status;
