//! Metrics, health and readiness: what the controller tells Prometheus and the kubelet.
//!
//! One small router ([`router`], served by `virtshim_http` in plain HTTP) answers these paths,
//! on whichever addresses `main` binds:
//! - `/metrics`: OpenMetrics text, from a prometheus-client registry ([`Metrics`]). KubeVirt's
//!   names where KubeVirt has the metric (`kubevirt_vmi_phase_count`,
//!   `kubevirt_vmi_phase_transition_time_from_creation_seconds`,
//!   `kubevirt_virt_controller_leading_status`, `kubevirt_virt_controller_ready_status`), the
//!   reconcilers' own counters under `virtshim_`. Labels come from bounded sets only; the few
//!   KubeVirt takes from annotations (`os`, `workload`, `flavor`) are capped in length. A labelled
//!   family shows up once it has a series (prometheus-client leaves out empty families), except
//!   `kubevirt_vmi_phase_count`, whose HELP and TYPE are always there.
//! - `/healthz` (and `/livez`): 200 while the process serves.
//! - `/readyz`: 200 once the caches have synced (ready to take the lead), 503 before.
//!
//! The VMI phase counts are computed at scrape time from the VMI cache (a prometheus-client
//! collector), and only while this replica leads, so that summing over the controller's replicas
//! does not count a VMI twice.

mod metrics;
mod server;

pub use metrics::{
    phase_counts, Metrics, Outcome, PhaseCountKey, NONE, OTHER, PHASE_TRANSITION_BUCKETS,
    RECONCILE_BUCKETS,
};
pub use server::{bind, router, serve, OPENMETRICS};
