//! The metrics `/metrics` reports and the reconcilers record: prometheus-client families in one
//! registry, encoded as OpenMetrics text.
//!
//! prometheus-client appends `_total` to a counter's samples, so the counters are registered
//! without it (`virtshim_reconcile` is exposed as `virtshim_reconcile_total`), and `_seconds`
//! to a family registered with [`Unit::Seconds`] (the histograms).

use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use virtshim_api::types::VirtualMachineInstance;

/// KubeVirt's buckets for phase transition times (seconds).
pub const PHASE_TRANSITION_BUCKETS: [f64; 18] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
    1200.0, 1800.0, 3600.0,
];

/// Buckets for one reconcile pass (seconds).
pub const RECONCILE_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The value KubeVirt writes for a label it has no value for.
pub const NONE: &str = "<none>";
/// The value written instead of an annotation value too long to be a sensible label.
pub const OTHER: &str = "<other>";
/// Longest annotation value used as a label value as is.
const MAX_LABEL_VALUE: usize = 63;

/// The labels of `kubevirt_vmi_phase_count`, in KubeVirt's order (the order of the fields).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, EncodeLabelSet)]
pub struct PhaseCountKey {
    pub node: String,
    pub phase: String,
    pub os: String,
    pub workload: String,
    pub flavor: String,
    pub instance_type: String,
    pub preference: String,
    pub guest_os_kernel_release: String,
    pub guest_os_machine: String,
    pub guest_os_name: String,
    pub guest_os_version_id: String,
}

fn label_value(value: Option<&str>) -> String {
    match value.filter(|v| !v.is_empty()) {
        None => NONE.to_owned(),
        Some(v) if v.len() > MAX_LABEL_VALUE => OTHER.to_owned(),
        Some(v) => v.to_owned(),
    }
}

impl PhaseCountKey {
    /// The key a VMI counts under: its node, its phase in lower case (as KubeVirt writes it),
    /// the `vm.kubevirt.io/{os,workload,flavor}` annotations and its guest OS info.
    /// virtshim has no instance types or preferences: those are always `<none>`.
    pub fn of(vmi: &VirtualMachineInstance) -> Self {
        let annotation = |key: &str| {
            vmi.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(&format!("vm.kubevirt.io/{key}")))
                .map(String::as_str)
        };
        let status = vmi.status.as_ref();
        let guest = status.and_then(|s| s.guest_os_info.as_ref());
        let guest_field = |f: fn(&virtshim_api::types::GuestOsInfo) -> Option<&String>| {
            label_value(guest.and_then(f).map(String::as_str))
        };
        Self {
            node: status.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            phase: status
                .and_then(|s| s.phase.as_deref())
                .unwrap_or("")
                .to_lowercase(),
            os: label_value(annotation("os")),
            workload: label_value(annotation("workload")),
            flavor: label_value(annotation("flavor")),
            instance_type: NONE.to_owned(),
            preference: NONE.to_owned(),
            guest_os_kernel_release: guest_field(|g| g.kernel_release.as_ref()),
            guest_os_machine: guest_field(|g| g.machine.as_ref()),
            guest_os_name: guest_field(|g| g.name.as_ref()),
            guest_os_version_id: guest_field(|g| g.version_id.as_ref()),
        }
    }
}

/// Counts VMIs per [`PhaseCountKey`].
pub fn phase_counts<'a>(
    vmis: impl IntoIterator<Item = &'a VirtualMachineInstance>,
) -> BTreeMap<PhaseCountKey, u64> {
    let mut counts = BTreeMap::new();
    for vmi in vmis {
        *counts.entry(PhaseCountKey::of(vmi)).or_insert(0) += 1;
    }
    counts
}

/// How a reconcile pass ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    Success,
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Error => "error",
        }
    }
}

/// In lower case (the derive would write the variant's name as is).
impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// `virtshim_reconcile_total`'s labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReconcileLabels {
    controller: &'static str,
    result: Outcome,
}

/// `virtshim_reconcile_errors_total`'s labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    controller: &'static str,
    error: &'static str,
}

/// `virtshim_reconcile_duration_seconds`'s labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

/// `virtshim_operations_total`'s labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    kind: &'static str,
    operation: &'static str,
}

/// `kubevirt_vmi_phase_transition_time_from_creation_seconds`'s labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

/// `kubevirt_rest_client_requests_total`'s labels (a subset of KubeVirt's: the HTTP method and
/// the answer's status code, `<error>` when there was no answer).
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RestLabels {
    method: String,
    code: String,
}

/// `kubevirt_rest_client_rate_limiter_duration_seconds`'s labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VerbLabels {
    verb: String,
}

/// Buckets for the time a request waits for the client's rate limiter (seconds).
pub const RATE_LIMITER_BUCKETS: [f64; 9] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

/// A family of histograms that all have the same buckets.
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Where the VMI cache is, once `main` has one.
type VmiStore = Arc<RwLock<Option<Store<VirtualMachineInstance>>>>;

/// `kubevirt_vmi_phase_count`, counted from the VMI cache at each scrape, and only while this
/// replica leads (so that summing over the controller's replicas does not count a VMI twice).
/// Its HELP and TYPE are written even with no VMI to count.
#[derive(Clone)]
struct PhaseCounts {
    /// The same gauge as `kubevirt_virt_controller_leading_status`.
    leading: Gauge,
    vmis: VmiStore,
}

impl std::fmt::Debug for PhaseCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhaseCounts")
            .field("leading", &self.leading)
            .finish_non_exhaustive()
    }
}

impl PhaseCounts {
    /// The VMIs to count now: the cache's while leading, none otherwise.
    fn vmis(&self) -> Vec<Arc<VirtualMachineInstance>> {
        if self.leading.get() != 1 {
            return Vec::new();
        }
        self.vmis
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(Store::state)
            .unwrap_or_default()
    }
}

impl Collector for PhaseCounts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "kubevirt_vmi_phase_count",
            "Sum of VMIs per phase and node (reported by the leader).",
            None,
            MetricType::Gauge,
        )?;
        for (key, n) in phase_counts(self.vmis().iter().map(AsRef::as_ref)) {
            ConstGauge::new(n).encode(family.encode_family(&key)?)?;
        }
        Ok(())
    }
}

/// Everything `/metrics`, `/healthz` and `/readyz` report.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    leading: Gauge,
    ready: Gauge,
    vmis: VmiStore,
    reconciles: Family<ReconcileLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Histograms<ControllerLabels>,
    operations: Family<OperationLabels, Counter>,
    phase_from_creation: Histograms<PhaseLabels>,
    rest_requests: Family<RestLabels, Counter>,
    rate_limiter: Histograms<VerbLabels>,
}

impl Default for Metrics {
    fn default() -> Self {
        let leading = Gauge::default();
        let ready = Gauge::default();
        let vmis = VmiStore::default();
        let reconciles = Family::default();
        let errors = Family::default();
        let durations: Histograms<ControllerLabels> =
            Family::new_with_constructor(|| Histogram::new(RECONCILE_BUCKETS));
        let operations = Family::default();
        let phase_from_creation: Histograms<PhaseLabels> =
            Family::new_with_constructor(|| Histogram::new(PHASE_TRANSITION_BUCKETS));
        let rest_requests = Family::default();
        let rate_limiter: Histograms<VerbLabels> =
            Family::new_with_constructor(|| Histogram::new(RATE_LIMITER_BUCKETS));

        // The help texts have no final full stop: the registry adds one.
        let mut registry = Registry::default();
        registry.register(
            "kubevirt_virt_controller_leading_status",
            "Indication for an operating virt-controller",
            leading.clone(),
        );
        registry.register(
            "kubevirt_virt_controller_ready_status",
            "Indication for a virt-controller that is ready to take the lead",
            ready.clone(),
        );
        registry.register_collector(Box::new(PhaseCounts {
            leading: leading.clone(),
            vmis: vmis.clone(),
        }));
        // kubevirt_vmi_phase_transition_time_from_creation_seconds
        registry.register_with_unit(
            "kubevirt_vmi_phase_transition_time_from_creation",
            "Histogram of VM phase transitions duration from creation time in seconds",
            Unit::Seconds,
            phase_from_creation.clone(),
        );
        // virtshim_reconcile_total
        registry.register(
            "virtshim_reconcile",
            "Reconcile passes per controller and outcome",
            reconciles.clone(),
        );
        // virtshim_reconcile_errors_total
        registry.register(
            "virtshim_reconcile_errors",
            "Failed reconcile passes per controller and error kind",
            errors.clone(),
        );
        // virtshim_reconcile_duration_seconds
        registry.register_with_unit(
            "virtshim_reconcile_duration",
            "Duration of one reconcile pass",
            Unit::Seconds,
            durations.clone(),
        );
        // virtshim_operations_total
        registry.register(
            "virtshim_operations",
            "Objects the controller created, deleted or patched, per kind",
            operations.clone(),
        );
        // kubevirt_rest_client_requests_total
        registry.register(
            "kubevirt_rest_client_requests",
            "Number of HTTP requests to the apiserver, partitioned by method and status code",
            rest_requests.clone(),
        );
        // kubevirt_rest_client_rate_limiter_duration_seconds
        registry.register_with_unit(
            "kubevirt_rest_client_rate_limiter_duration",
            "Client side rate limiter latency in seconds, by verb",
            Unit::Seconds,
            rate_limiter.clone(),
        );
        Self {
            registry,
            leading,
            ready,
            vmis,
            reconciles,
            errors,
            durations,
            operations,
            phase_from_creation,
            rest_requests,
            rate_limiter,
        }
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one reconcile pass of `controller`.
    pub fn reconciled(
        &self,
        controller: &'static str,
        took: Duration,
        error: Option<&'static str>,
    ) {
        let result = if error.is_some() {
            Outcome::Error
        } else {
            Outcome::Success
        };
        self.reconciles
            .get_or_create(&ReconcileLabels { controller, result })
            .inc();
        if let Some(error) = error {
            self.errors
                .get_or_create(&ErrorLabels { controller, error })
                .inc();
        }
        self.durations
            .get_or_create(&ControllerLabels { controller })
            .observe(took.as_secs_f64());
    }

    /// Counts one write to the cluster, e.g. `("pod", "create")`.
    pub fn operation(&self, kind: &'static str, operation: &'static str) {
        self.operations
            .get_or_create(&OperationLabels { kind, operation })
            .inc();
    }

    /// Counts one request to the apiserver and its answer's status code (`None`: no answer).
    pub fn rest_request(&self, method: &str, code: Option<u16>) {
        let code = code.map_or_else(|| "<error>".to_owned(), |c| c.to_string());
        self.rest_requests
            .get_or_create(&RestLabels {
                method: method.to_owned(),
                code,
            })
            .inc();
    }

    /// Records how long a request waited for the client's rate limiter.
    pub fn rate_limited(&self, verb: &str, waited: Duration) {
        self.rate_limiter
            .get_or_create(&VerbLabels {
                verb: verb.to_owned(),
            })
            .observe(waited.as_secs_f64());
    }

    /// Records that a VMI reached `phase` this long after it was created.
    pub fn phase_reached(&self, phase: &'static str, seconds_since_creation: f64) {
        self.phase_from_creation
            .get_or_create(&PhaseLabels { phase })
            .observe(seconds_since_creation.max(0.0));
    }

    pub fn set_leading(&self, leading: bool) {
        self.leading.set(i64::from(leading));
    }

    pub fn is_leading(&self) -> bool {
        self.leading.get() == 1
    }

    /// Marks the caches synced: `/readyz` answers 200 from now on.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    pub fn is_ready(&self) -> bool {
        self.ready.get() == 1
    }

    /// The VMI cache the phase counts are read from.
    pub fn set_vmi_store(&self, store: Store<VirtualMachineInstance>) {
        *self.vmis.write().unwrap_or_else(PoisonError::into_inner) = Some(store);
    }

    /// The whole `/metrics` page: OpenMetrics text, ending with `# EOF`.
    pub fn render(&self) -> String {
        let mut page = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut page, &self.registry) {
            // Writing to a String does not fail, nor do our metrics' encoders.
            tracing::error!(error = %e, "could not encode the metrics");
        }
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::{reflector, watcher};
    use virtshim_api::types::{GuestOsInfo, VirtualMachineInstanceStatus};

    fn vmi(phase: &str, node: Option<&str>, os: Option<&str>) -> VirtualMachineInstance {
        let mut v = VirtualMachineInstance::new("v", Default::default());
        if let Some(os) = os {
            v.metadata.annotations = Some([("vm.kubevirt.io/os".to_owned(), os.to_owned())].into());
        }
        v.status = Some(VirtualMachineInstanceStatus {
            phase: Some(phase.to_owned()),
            node_name: node.map(str::to_owned),
            ..Default::default()
        });
        v
    }

    /// Metrics whose VMI cache holds `vmis` (named v0, v1, …).
    fn with_vmis(vmis: impl IntoIterator<Item = VirtualMachineInstance>) -> Metrics {
        let (store, mut writer) = reflector::store();
        for (i, mut v) in vmis.into_iter().enumerate() {
            v.metadata.name = Some(format!("v{i}"));
            writer.apply_watcher_event(&watcher::Event::Apply(v));
        }
        let m = Metrics::new();
        m.set_vmi_store(store);
        m
    }

    fn assert_has_lines(page: &str, lines: &[&str]) {
        for line in lines {
            assert!(
                page.lines().any(|l| l == *line),
                "missing {line:?} in\n{page}"
            );
        }
    }

    #[test]
    fn phase_count_keys() {
        let long = "x".repeat(64);
        // (phase, node, os annotation) → (phase label, node label, os label)
        let table = [
            (
                "Running",
                Some("n1"),
                Some("fedora"),
                ("running", "n1", "fedora"),
            ),
            ("Pending", None, None, ("pending", "", NONE)),
            ("Failed", Some("n1"), Some(""), ("failed", "n1", NONE)),
            (
                "Running",
                Some("n1"),
                Some(long.as_str()),
                ("running", "n1", OTHER),
            ),
        ];
        for (phase, node, os, (p, n, o)) in table {
            let key = PhaseCountKey::of(&vmi(phase, node, os));
            assert_eq!(
                (key.phase.as_str(), key.node.as_str(), key.os.as_str()),
                (p, n, o)
            );
            assert_eq!(key.instance_type, NONE);
            assert_eq!(key.guest_os_name, NONE);
        }
        let mut with_guest = vmi("Running", Some("n1"), None);
        if let Some(s) = with_guest.status.as_mut() {
            s.guest_os_info = Some(GuestOsInfo {
                name: Some("CirrOS".into()),
                ..Default::default()
            });
        }
        assert_eq!(PhaseCountKey::of(&with_guest).guest_os_name, "CirrOS");
    }

    #[test]
    fn counts_group_vmis() {
        let vmis = [
            vmi("Running", Some("n1"), None),
            vmi("Running", Some("n1"), None),
            vmi("Running", Some("n2"), None),
            vmi("Scheduling", None, None),
        ];
        let counts = phase_counts(vmis.iter());
        let values: Vec<(String, String, u64)> = counts
            .into_iter()
            .map(|(k, n)| (k.node, k.phase, n))
            .collect();
        assert_eq!(
            values,
            vec![
                ("".into(), "scheduling".into(), 1),
                ("n1".into(), "running".into(), 2),
                ("n2".into(), "running".into(), 1),
            ]
        );
    }

    #[test]
    fn phase_counts_only_while_leading() {
        let m = with_vmis([
            vmi("Running", Some("n1"), None),
            vmi("Running", Some("n1"), None),
        ]);
        let sample = "kubevirt_vmi_phase_count{node=\"n1\",phase=\"running\",os=\"<none>\",workload=\"<none>\",flavor=\"<none>\",instance_type=\"<none>\",preference=\"<none>\",guest_os_kernel_release=\"<none>\",guest_os_machine=\"<none>\",guest_os_name=\"<none>\",guest_os_version_id=\"<none>\"} 2";
        let page = m.render();
        assert_has_lines(&page, &["# TYPE kubevirt_vmi_phase_count gauge"]);
        assert!(
            !page.contains("kubevirt_vmi_phase_count{"),
            "a replica that does not lead counts no VMI:\n{page}"
        );
        m.set_leading(true);
        assert_has_lines(&m.render(), &[sample]);
    }

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::new();
        let values = [0.5, 0.7, 3.0, 9.0];
        for v in values {
            m.phase_reached("Running", v);
        }
        let name = "kubevirt_vmi_phase_transition_time_from_creation_seconds";
        // prometheus-client writes `le` before the family's labels, and bounds as floats.
        let mut expected: Vec<String> = PHASE_TRANSITION_BUCKETS
            .iter()
            .map(|bound| {
                let below = values.iter().filter(|v| *v <= bound).count();
                format!("{name}_bucket{{le=\"{bound:?}\",phase=\"Running\"}} {below}")
            })
            .collect();
        expected.push(format!("{name}_bucket{{le=\"+Inf\",phase=\"Running\"}} 4"));
        let page = m.render();
        let buckets: Vec<&str> = page
            .lines()
            .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
            .collect();
        assert_eq!(buckets, expected);
        // le="1.0" holds 0.5 and 0.7, le="5.0" adds 3, le="10.0" adds 9.
        assert_has_lines(
            &page,
            &[
                "kubevirt_vmi_phase_transition_time_from_creation_seconds_bucket{le=\"1.0\",phase=\"Running\"} 2",
                "kubevirt_vmi_phase_transition_time_from_creation_seconds_bucket{le=\"5.0\",phase=\"Running\"} 3",
                "kubevirt_vmi_phase_transition_time_from_creation_seconds_bucket{le=\"10.0\",phase=\"Running\"} 4",
                "kubevirt_vmi_phase_transition_time_from_creation_seconds_sum{phase=\"Running\"} 13.2",
                "kubevirt_vmi_phase_transition_time_from_creation_seconds_count{phase=\"Running\"} 4",
            ],
        );
    }

    #[test]
    fn page_has_kubevirt_and_virtshim_metrics() {
        let m = with_vmis([vmi("Running", Some("n1"), None)]);
        m.set_leading(true);
        m.reconciled("vmi", Duration::from_millis(3), None);
        m.reconciled("vmi", Duration::from_millis(3), Some("conflict"));
        m.operation("pod", "create");
        m.phase_reached("Running", 12.0);
        let page = m.render();
        assert_has_lines(
            &page,
            &[
                "kubevirt_virt_controller_leading_status 1",
                "kubevirt_virt_controller_ready_status 0",
                "kubevirt_vmi_phase_count{node=\"n1\",phase=\"running\",os=\"<none>\",workload=\"<none>\",flavor=\"<none>\",instance_type=\"<none>\",preference=\"<none>\",guest_os_kernel_release=\"<none>\",guest_os_machine=\"<none>\",guest_os_name=\"<none>\",guest_os_version_id=\"<none>\"} 1",
                "kubevirt_vmi_phase_transition_time_from_creation_seconds_bucket{le=\"20.0\",phase=\"Running\"} 1",
                "virtshim_reconcile_total{controller=\"vmi\",result=\"success\"} 1",
                "virtshim_reconcile_total{controller=\"vmi\",result=\"error\"} 1",
                "virtshim_reconcile_errors_total{controller=\"vmi\",error=\"conflict\"} 1",
                "virtshim_reconcile_duration_seconds_count{controller=\"vmi\"} 2",
                "virtshim_operations_total{kind=\"pod\",operation=\"create\"} 1",
            ],
        );
        assert!(page.ends_with("\n# EOF\n"), "{page}");
    }

    /// The families and their types are the ones exposed before prometheus-client (a counter's
    /// family name lacks the `_total` of its samples in OpenMetrics), and no sample is named
    /// other than its family's name with its type's suffixes.
    #[test]
    fn exposes_the_same_metric_names() {
        let m = with_vmis([vmi("Running", Some("n1"), None)]);
        m.set_leading(true);
        m.reconciled("vmi", Duration::from_millis(3), Some("conflict"));
        m.operation("pod", "create");
        m.phase_reached("Running", 12.0);
        let page = m.render();
        let families: Vec<(&str, &str)> = page
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' '))
            .collect();
        assert_eq!(
            families,
            [
                ("kubevirt_virt_controller_leading_status", "gauge"),
                ("kubevirt_virt_controller_ready_status", "gauge"),
                (
                    "kubevirt_vmi_phase_transition_time_from_creation_seconds",
                    "histogram"
                ),
                ("virtshim_reconcile", "counter"),
                ("virtshim_reconcile_errors", "counter"),
                ("virtshim_reconcile_duration_seconds", "histogram"),
                ("virtshim_operations", "counter"),
                ("kubevirt_vmi_phase_count", "gauge"),
            ]
        );
        let mut samples: Vec<&str> = page
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        samples.dedup();
        samples.sort_unstable();
        samples.dedup();
        assert_eq!(
            samples,
            [
                "kubevirt_virt_controller_leading_status",
                "kubevirt_virt_controller_ready_status",
                "kubevirt_vmi_phase_count",
                "kubevirt_vmi_phase_transition_time_from_creation_seconds_bucket",
                "kubevirt_vmi_phase_transition_time_from_creation_seconds_count",
                "kubevirt_vmi_phase_transition_time_from_creation_seconds_sum",
                "virtshim_operations_total",
                "virtshim_reconcile_duration_seconds_bucket",
                "virtshim_reconcile_duration_seconds_count",
                "virtshim_reconcile_duration_seconds_sum",
                "virtshim_reconcile_errors_total",
                "virtshim_reconcile_total",
            ]
        );
    }

    #[test]
    fn escapes_label_values() {
        let m = with_vmis([vmi("Running", Some("n1"), Some("a\"b\\c\nd"))]);
        m.set_leading(true);
        let page = m.render();
        assert!(
            page.contains(",os=\"a\\\"b\\\\c\\nd\","),
            "the os label escaped as a\\\"b\\\\c\\nd in\n{page}"
        );
    }
}
