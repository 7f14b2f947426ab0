//! What the controller does: each module turns observed state into one action.
//!
//! - [`run_strategy`]: the VM's effective run strategy.
//! - [`start_failure`]: KubeVirt's crash-loop bookkeeping (`status.startFailure`) and backoff.
//! - [`vm`]: VM → create, delete or keep its VMI; which state change requests are done.
//! - [`subresource`]: the start / stop / restart subresources, as a patch or a refusal.
//! - [`replicaset`]: how many VMIs a replica set creates and which it deletes.

pub mod replicaset;
pub mod run_strategy;
pub mod start_failure;
pub mod subresource;
pub mod vm;
