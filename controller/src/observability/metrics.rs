//! The metrics `/metrics` reports and the reconcilers record.

use kube::runtime::reflector::Store;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
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

/// A Prometheus histogram with fixed buckets.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    bounds: Vec<f64>,
    /// Observations `<=` each bound (not cumulative; rendering sums them).
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.counts[i] += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, n) in self.bounds.iter().zip(&self.counts) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

/// The labels of `kubevirt_vmi_phase_count`, in KubeVirt's order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
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

    fn labels(&self) -> String {
        let pairs = [
            ("node", &self.node),
            ("phase", &self.phase),
            ("os", &self.os),
            ("workload", &self.workload),
            ("flavor", &self.flavor),
            ("instance_type", &self.instance_type),
            ("preference", &self.preference),
            ("guest_os_kernel_release", &self.guest_os_kernel_release),
            ("guest_os_machine", &self.guest_os_machine),
            ("guest_os_name", &self.guest_os_name),
            ("guest_os_version_id", &self.guest_os_version_id),
        ];
        pairs
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect::<Vec<_>>()
            .join(",")
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

/// Escapes a label value for the text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// How a reconcile pass ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
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

#[derive(Debug, Default)]
struct Counters {
    /// (controller, outcome) → passes.
    reconciles: BTreeMap<(&'static str, Outcome), u64>,
    /// (controller, error kind) → failed passes.
    errors: BTreeMap<(&'static str, &'static str), u64>,
    /// controller → pass durations.
    durations: BTreeMap<&'static str, Histogram>,
    /// (kind, operation) → objects created / deleted / patched.
    operations: BTreeMap<(&'static str, &'static str), u64>,
    /// phase → seconds from the VMI's creation to it reaching the phase.
    phase_from_creation: BTreeMap<&'static str, Histogram>,
}

/// Everything `/metrics`, `/healthz` and `/readyz` report.
#[derive(Default)]
pub struct Metrics {
    counters: Mutex<Counters>,
    leading: AtomicBool,
    ready: AtomicBool,
    vmis: RwLock<Option<Store<VirtualMachineInstance>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("leading", &self.leading)
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one reconcile pass of `controller`.
    pub fn reconciled(
        &self,
        controller: &'static str,
        took: Duration,
        error: Option<&'static str>,
    ) {
        let mut c = self.counters();
        let outcome = if error.is_some() {
            Outcome::Error
        } else {
            Outcome::Success
        };
        *c.reconciles.entry((controller, outcome)).or_insert(0) += 1;
        if let Some(kind) = error {
            *c.errors.entry((controller, kind)).or_insert(0) += 1;
        }
        c.durations
            .entry(controller)
            .or_insert_with(|| Histogram::new(&RECONCILE_BUCKETS))
            .observe(took.as_secs_f64());
    }

    /// Counts one write to the cluster, e.g. `("pod", "create")`.
    pub fn operation(&self, kind: &'static str, op: &'static str) {
        *self.counters().operations.entry((kind, op)).or_insert(0) += 1;
    }

    /// Records that a VMI reached `phase` this long after it was created.
    pub fn phase_reached(&self, phase: &'static str, seconds_since_creation: f64) {
        self.counters()
            .phase_from_creation
            .entry(phase)
            .or_insert_with(|| Histogram::new(&PHASE_TRANSITION_BUCKETS))
            .observe(seconds_since_creation.max(0.0));
    }

    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::SeqCst);
    }

    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::SeqCst)
    }

    /// Marks the caches synced: `/readyz` answers 200 from now on.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The VMI cache the phase counts are read from.
    pub fn set_vmi_store(&self, store: Store<VirtualMachineInstance>) {
        *self.vmis.write().unwrap_or_else(PoisonError::into_inner) = Some(store);
    }

    /// The whole `/metrics` page.
    pub fn render(&self) -> String {
        let vmis: Vec<Arc<VirtualMachineInstance>> = if self.is_leading() {
            self.vmis
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map(Store::state)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        self.render_with(vmis.iter().map(|v| v.as_ref()))
    }

    /// The `/metrics` page with these VMIs counted.
    pub fn render_with<'a>(
        &self,
        vmis: impl IntoIterator<Item = &'a VirtualMachineInstance>,
    ) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, value: bool| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {}", u8::from(value));
        };
        gauge(
            &mut out,
            "kubevirt_virt_controller_leading_status",
            "Indication for an operating virt-controller.",
            self.is_leading(),
        );
        gauge(
            &mut out,
            "kubevirt_virt_controller_ready_status",
            "Indication for a virt-controller that is ready to take the lead.",
            self.is_ready(),
        );

        let _ = writeln!(
            out,
            "# HELP kubevirt_vmi_phase_count Sum of VMIs per phase and node (reported by the leader)."
        );
        let _ = writeln!(out, "# TYPE kubevirt_vmi_phase_count gauge");
        for (key, n) in phase_counts(vmis) {
            let _ = writeln!(out, "kubevirt_vmi_phase_count{{{}}} {n}", key.labels());
        }

        let c = self.counters();
        let name = "kubevirt_vmi_phase_transition_time_from_creation_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Histogram of VM phase transitions duration from creation time in seconds."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (phase, h) in &c.phase_from_creation {
            h.render(&mut out, name, &format!("phase=\"{phase}\""));
        }

        let name = "virtshim_reconcile_total";
        let _ = writeln!(
            out,
            "# HELP {name} Reconcile passes per controller and outcome."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for ((controller, outcome), n) in &c.reconciles {
            let _ = writeln!(
                out,
                "{name}{{controller=\"{controller}\",result=\"{}\"}} {n}",
                outcome.as_str()
            );
        }
        let name = "virtshim_reconcile_errors_total";
        let _ = writeln!(
            out,
            "# HELP {name} Failed reconcile passes per controller and error kind."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for ((controller, kind), n) in &c.errors {
            let _ = writeln!(
                out,
                "{name}{{controller=\"{controller}\",error=\"{kind}\"}} {n}"
            );
        }
        let name = "virtshim_reconcile_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Duration of one reconcile pass.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (controller, h) in &c.durations {
            h.render(&mut out, name, &format!("controller=\"{controller}\""));
        }
        let name = "virtshim_operations_total";
        let _ = writeln!(
            out,
            "# HELP {name} Objects the controller created, deleted or patched, per kind."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for ((kind, op), n) in &c.operations {
            let _ = writeln!(out, "{name}{{kind=\"{kind}\",operation=\"{op}\"}} {n}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn histogram_is_cumulative() {
        let mut h = Histogram::new(&[1.0, 5.0]);
        for v in [0.5, 0.7, 3.0, 9.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "m", "phase=\"Running\"");
        assert_eq!(
            out,
            "m_bucket{phase=\"Running\",le=\"1\"} 2\n\
             m_bucket{phase=\"Running\",le=\"5\"} 3\n\
             m_bucket{phase=\"Running\",le=\"+Inf\"} 4\n\
             m_sum{phase=\"Running\"} 13.2\n\
             m_count{phase=\"Running\"} 4\n"
        );
    }

    #[test]
    fn page_has_kubevirt_and_virtshim_metrics() {
        let m = Metrics::new();
        m.set_leading(true);
        m.reconciled("vmi", Duration::from_millis(3), None);
        m.reconciled("vmi", Duration::from_millis(3), Some("conflict"));
        m.operation("pod", "create");
        m.phase_reached("Running", 12.0);
        let page = m.render_with([vmi("Running", Some("n1"), None)].iter());
        for line in [
            "kubevirt_virt_controller_leading_status 1",
            "kubevirt_virt_controller_ready_status 0",
            "kubevirt_vmi_phase_count{node=\"n1\",phase=\"running\",os=\"<none>\",workload=\"<none>\",flavor=\"<none>\",instance_type=\"<none>\",preference=\"<none>\",guest_os_kernel_release=\"<none>\",guest_os_machine=\"<none>\",guest_os_name=\"<none>\",guest_os_version_id=\"<none>\"} 1",
            "kubevirt_vmi_phase_transition_time_from_creation_seconds_bucket{phase=\"Running\",le=\"20\"} 1",
            "virtshim_reconcile_total{controller=\"vmi\",result=\"success\"} 1",
            "virtshim_reconcile_total{controller=\"vmi\",result=\"error\"} 1",
            "virtshim_reconcile_errors_total{controller=\"vmi\",error=\"conflict\"} 1",
            "virtshim_reconcile_duration_seconds_count{controller=\"vmi\"} 2",
            "virtshim_operations_total{kind=\"pod\",operation=\"create\"} 1",
        ] {
            assert!(page.lines().any(|l| l == line), "missing {line:?} in\n{page}");
        }
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
