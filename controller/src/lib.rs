//! virtshim-controller: KubeVirt's VM → VMI → pod controllers, on kube-runtime.
//!
//! The decisions are pure functions from observed state to an action: nothing in [`observed`],
//! [`decide`] or [`status`] talks to the apiserver, reads a clock or draws a random number, so
//! every rule KubeVirt's controllers follow is tested as a table (see `kubevirt-compat.md`).
//!
//! - [`observed`]: the few facts about a VMI that the decisions read, parsed once.
//! - [`decide`]: what to do — the run strategy, VM → VMI, the start/stop/restart subresources,
//!   crash-loop backoff, replica sets.
//! - [`status`]: what to report — a VMI's phase from its pod, a VM's printable status and
//!   conditions.
//!
//! The rest talks to the cluster:
//! - [`reconcile`]: the VM, VMI and replica-set controllers that carry the decisions out.
//! - [`apiclient`]: the apiserver client: a token bucket (KubeVirt's QPS and burst), every
//!   request counted.
//! - [`leader`]: leader election on a Lease; the controllers run only on the leader.
//! - [`observability`]: `/metrics` (KubeVirt's metric names), `/healthz`, `/readyz`.
//! - [`subresources`]: the aggregated `subresources.kubevirt.io` API (console, VNC, start, stop,
//!   restart, pause, unpause), proxied to the handlers for the streams.
//! - [`error`]: the reconcilers' error type.
//!
//! Every server here (webhooks, subresource API, metrics) is an axum router served by
//! `virtshim_http`, the project's one HTTP stack.

pub mod admission;
pub mod apiclient;
pub mod decide;
pub mod error;
pub mod leader;
pub mod observability;
pub mod observed;
pub mod reconcile;
pub mod status;
pub mod subresources;
