//! `make bench ONLY=cluster-percentiles`: creation → Running of many VMIs, as KubeVirt publishes
//! it (100 cirros VMIs created 100 ms apart: P50 15–25 s, P95 20–38 s), for 10 and 50 VMIs on
//! whatever nodes the cluster has (`make cluster NODES=N`; each node of this machine offers
//! its 2 CPUs, and KubeVirt's sizing of a VM's pod, 100m per vCPU, with the RuntimeClass's 10m,
//! lets about 16 schedule on one; 8 when the RuntimeClass asked 100m, as in the first run).
//!
//! Each VMI (the containerDisk test guest, 128 MiB, pod network) is created with its own
//! `kubectl create`, 100 ms after the one before or as soon as kubectl returns when that takes
//! longer; its time is from the start of its create to the first poll (every 200 ms, one
//! request for all) that sees it `Running`: QEMU up, as KubeVirt's phase means. The guests boot
//! on: later VMIs start while earlier guests take the CPU, as in KubeVirt's run.

use crate::limits::{boot_limit, CpuWindow};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use virtshim_tests::Kubectl;

const TIMEOUT: Duration = Duration::from_secs(600);
const APART: Duration = Duration::from_millis(100);
const POLL: Duration = Duration::from_millis(200);

/// The `p`th percentile (nearest rank) of sorted `v`.
fn percentile(v: &[Duration], p: usize) -> Duration {
    let rank = (p * v.len()).div_ceil(100).max(1);
    v[rank.min(v.len()) - 1]
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// The line for `count` VMIs.
pub fn line(k: &Kubectl, count: usize) -> Result<String, String> {
    let nodes = k
        .run(&["get", "nodes", "-l", "virtshim.io/ready=true", "-o", "name"])?
        .lines()
        .count();
    let ns = format!("virtshim-bench-{}-p{count}", std::process::id());
    k.run(&["create", "namespace", &ns])?;
    let cpu = CpuWindow::start()?;
    let result = measure(k, &ns, count);
    let busy = cpu.share()?;
    // Gone before the next measurement, so that it does not share the CPU with these.
    let _ = k.run(&["delete", "namespace", &ns, "--timeout=300s"]);
    let (mut times, span, per_node) = result?;
    times.sort();
    Ok(format!(
        "cluster creation → Running, {count} VMIs created {}ms apart (all created within {}) on {nodes} node(s) ({}): P50 {}, P95 {}, max {}; limited by {}; KubeVirt's published 100 VMIs: P50 15–25 s, P95 20–38 s",
        APART.as_millis(),
        secs(span),
        per_node,
        secs(percentile(&times, 50)),
        secs(percentile(&times, 95)),
        secs(percentile(&times, 100)),
        boot_limit(busy),
    ))
}

/// Each VMI's creation → Running, the time the creates took, and the VMIs per node.
fn measure(
    k: &Kubectl,
    ns: &str,
    count: usize,
) -> Result<(Vec<Duration>, Duration, String), String> {
    let names: Vec<String> = (0..count).map(|i| format!("p-{i}")).collect();
    let created: Mutex<BTreeMap<String, Duration>> = Mutex::new(BTreeMap::new());
    let failed: Mutex<Option<String>> = Mutex::new(None);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let creator = scope.spawn(|| -> Result<Duration, String> {
            let result = create_all(k, ns, &names, started, &created);
            if let Err(e) = &result {
                if let Ok(mut failed) = failed.lock() {
                    *failed = Some(e.clone());
                }
            }
            result
        });
        let template =
            "{range .items[*]}{.metadata.name} {.status.phase} {.status.nodeName}{\"\\n\"}{end}";
        let jsonpath = format!("jsonpath={template}");
        let mut running: BTreeMap<String, (Duration, String)> = BTreeMap::new();
        while running.len() < count {
            if let Some(e) = failed.lock().map_err(|e| e.to_string())?.take() {
                return Err(format!("creating the VMIs: {e}"));
            }
            if started.elapsed() > TIMEOUT {
                let phases = k.run(&["get", "vmi", "-n", ns]).unwrap_or_default();
                return Err(format!(
                    "{} of {count} VMIs Running after {TIMEOUT:?} (too few nodes? each takes about 16):\n{phases}",
                    running.len()
                ));
            }
            let out = k
                .run(&["get", "vmi", "-n", ns, "-o", &jsonpath])
                .unwrap_or_default();
            for line in out.lines() {
                let mut fields = line.split(' ');
                if let (Some(name), Some("Running"), Some(node)) =
                    (fields.next(), fields.next(), fields.next())
                {
                    let at = started.elapsed();
                    running
                        .entry(name.to_owned())
                        .or_insert_with(|| (at, node.to_owned()));
                }
            }
            std::thread::sleep(POLL);
        }
        let span = creator
            .join()
            .map_err(|_| "the creating thread panicked".to_owned())??;
        let created = created.lock().map_err(|e| e.to_string())?;
        let mut times = Vec::with_capacity(count);
        let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
        for (name, (at, node)) in &running {
            let from = created
                .get(name)
                .ok_or_else(|| format!("{name} Running but never created by us"))?;
            times.push(at.saturating_sub(*from));
            *per_node.entry(node.as_str()).or_default() += 1;
        }
        let per_node = per_node
            .iter()
            .map(|(node, n)| format!("{node} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        Ok((times, span, per_node))
    })
}

/// Creates the VMIs `APART` from each other (or back to back when kubectl is slower), noting
/// when each create began; the time they all took.
fn create_all(
    k: &Kubectl,
    ns: &str,
    names: &[String],
    started: Instant,
    created: &Mutex<BTreeMap<String, Duration>>,
) -> Result<Duration, String> {
    for (i, name) in names.iter().enumerate() {
        let due = APART * u32::try_from(i).map_err(|e| e.to_string())?;
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        let at = started.elapsed();
        let yaml = format!(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: {name}}}\nspec:\n{}",
            crate::cluster::vmi_spec("  ")
        );
        k.run_stdin(&["create", "-n", ns, "-f", "-"], Some(&yaml))?;
        created
            .lock()
            .map_err(|e| e.to_string())?
            .insert(name.clone(), at);
    }
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::percentile;
    use std::time::Duration;

    #[test]
    fn nearest_rank() {
        let v: Vec<Duration> = (1..=20).map(Duration::from_secs).collect();
        assert_eq!(percentile(&v, 50), Duration::from_secs(10));
        assert_eq!(percentile(&v, 95), Duration::from_secs(19));
        assert_eq!(percentile(&v, 100), Duration::from_secs(20));
        let one = [Duration::from_secs(3)];
        assert_eq!(percentile(&one, 50), Duration::from_secs(3));
        assert_eq!(percentile(&one, 95), Duration::from_secs(3));
    }
}
