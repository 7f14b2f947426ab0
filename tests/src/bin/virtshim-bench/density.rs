//! `make bench ONLY=cluster-density`: how many small VMs one node of this machine runs, and
//! what each costs it.
//!
//! The VMs are the kernelBoot test guest with 64 MiB, one vCPU, no NIC, each asking for
//! [`CPU_REQUEST`] of CPU (small VMs that idle once booted, as a user sizes them in KubeVirt's
//! `resources.requests`), pinned by `nodeSelector` to the node this benchmark runs on (the
//! first node; its log files and processes are this machine's).
//!
//! - **1 and 10 VMs** created together, then **as many as fit**: as many VMIs as the node
//!   takes pods are created at once; the scheduler decides how many fit (its reason for the
//!   rest is printed, and those VMIs are deleted at once). For each: the time from the first
//!   create to the last guest's ready marker in its pod's log, beside the CPU bound (the CPU
//!   time the single VM's QEMU and shim took to its marker, times the count, over the cores)
//!   and how busy the machine's CPUs were meanwhile.
//! - **Memory per VM beyond guest RAM**, at each count: the node's used memory (MemTotal −
//!   MemAvailable) grown since before the VMs, over their count, less the guest RAM the guests
//!   touched (the resident part of each QEMU's guest-RAM mapping); beside it the processes'
//!   own share (each shim's and QEMU's private pages beyond guest RAM).
//! - **Idle CPU** with the most VMs booted: the node's kubelet and containerd, and each VM's
//!   QEMU and shim, over [`IDLE_WINDOW`], beside the kubelet's and containerd's with no VM.
//!
//! A reading that fails fails the benchmark.

use crate::limits::{boot_limit, CpuWindow};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use virtshim_tests::vm::{self, READY_MARKER};
use virtshim_tests::Kubectl;

/// Each VM's CPU request: small, so that the node's CPU requests do not stop the count first.
const CPU_REQUEST: &str = "10m";
const GUEST_MEMORY: &str = "64Mi";
const GUEST_RAM_KIB: u64 = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(900);
const POLL: Duration = Duration::from_millis(500);
/// How long the VMs are left alone after their markers before memory and idle CPU are read.
const SETTLE: Duration = Duration::from_secs(15);
const IDLE_WINDOW: Duration = Duration::from_secs(30);
const POD_LOGS: &str = "/var/log/pods";
/// `no_timer_check`: with 80 and more TCG guests on 2 cores, a guest's vCPU can be starved for
/// so long while Linux checks its IO-APIC timer that the check fails and the kernel panics
/// ("IO-APIC + timer doesn't work!"; 3 of 88 in the first run). Linux guests on overcommitted
/// hosts are commonly booted with it; it is the VM author's choice, made here in the VMI.
const KERNEL_ARGS: &str = "console=ttyS0 no_timer_check";

fn vmi_yaml(name: &str, node: &str) -> String {
    let rest = format!(
        "  nodeSelector: {{kubernetes.io/hostname: {node}}}\n  terminationGracePeriodSeconds: 0\n"
    );
    let vmi = vm::kernel_boot_vmi(
        &format!("name: {name}"),
        GUEST_MEMORY,
        "autoattachPodInterface: false",
        KERNEL_ARGS,
        &rest,
    );
    // The CPU request goes beside the memory line; without it the scheduler would count each
    // guest at the RuntimeClass overhead alone and the maximum would mean something else.
    let memory = format!("    memory: {{guest: {GUEST_MEMORY}}}\n");
    assert!(
        vmi.contains(&memory),
        "vm::kernel_boot_vmi no longer writes {memory:?}: the density guests' CPU request has no place"
    );
    vmi.replacen(
        &memory,
        &format!("{memory}    resources: {{requests: {{cpu: {CPU_REQUEST}}}}}\n"),
        1,
    )
}

/// The node's memory in use (MemTotal − MemAvailable), KiB.
fn used_kib() -> Result<u64, String> {
    let text =
        std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
    let field = |name: &str| -> Result<u64, String> {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .ok_or_else(|| format!("no {name} in /proc/meminfo"))
    };
    Ok(field("MemTotal:")?.saturating_sub(field("MemAvailable:")?))
}

/// The process of this network namespace named `comm` whose command line contains `arg`: the
/// first node's kubelet or containerd, not another node's (each node has its own netns) nor
/// the benchmark's private containerd (its own `--config`).
fn node_process(comm: &str, arg: &str) -> Result<u32, String> {
    let own_net = std::fs::read_link("/proc/self/ns/net").map_err(|e| e.to_string())?;
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if name.trim_end() != comm {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let net = std::fs::read_link(entry.path().join("ns/net")).ok();
        if net.as_ref() == Some(&own_net)
            && String::from_utf8_lossy(&cmdline)
                .split('\0')
                .any(|a| a.contains(arg))
        {
            found.push(pid);
        }
    }
    match found.as_slice() {
        [pid] => Ok(*pid),
        other => Err(format!(
            "expected one {comm} with {arg:?} in this network namespace, found {other:?}"
        )),
    }
}

/// Each VM of the namespace: its QEMU and that QEMU's shim.
fn vm_processes(ns: &str) -> Result<Vec<(u32, u32)>, String> {
    virtshim_tests::cluster::qemu_pids(ns)
        .into_iter()
        .map(|qemu| Ok((qemu, crate::parent_pid(qemu)?)))
        .collect()
}

/// The log folders of the namespace's pods on this node that show the guest's ready marker.
fn markers_seen(ns: &str, seen: &mut BTreeMap<PathBuf, bool>) {
    let prefix = format!("{ns}_");
    for entry in std::fs::read_dir(POD_LOGS).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            seen.entry(entry.path()).or_insert(false);
        }
    }
    for (dir, found) in seen.iter_mut().filter(|(_, found)| !**found) {
        let log = std::fs::read(dir.join("compute/0.log")).unwrap_or_default();
        *found = String::from_utf8_lossy(&log).contains(READY_MARKER);
    }
}

/// The last console line of each guest that has not shown the marker (a panic, a stall).
fn last_lines(seen: &BTreeMap<PathBuf, bool>) -> String {
    seen.iter()
        .filter(|(_, found)| !**found)
        .map(|(dir, _)| {
            let log = std::fs::read(dir.join("compute/0.log")).unwrap_or_default();
            let log = String::from_utf8_lossy(&log);
            let last = log.lines().last().unwrap_or("(nothing)");
            format!(
                "  {}: {last}",
                dir.file_name().unwrap_or_default().to_string_lossy()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The VMIs of the namespace whose pods the scheduler placed, and the scheduler's word for
/// those it could not place; waits until every VMI has a pod that is one or the other.
fn placed(
    k: &Kubectl,
    ns: &str,
    count: usize,
    started: Instant,
) -> Result<(usize, String), String> {
    let template = "{range .items[*]}{.metadata.labels.kubevirt\\.io/domain}|{.spec.nodeName}|{range .status.conditions[?(@.type==\"PodScheduled\")]}{.reason}:{.message}{end}{\"\\n\"}{end}";
    loop {
        let out = k.run(&[
            "get",
            "pods",
            "-n",
            ns,
            "-o",
            &format!("jsonpath={template}"),
        ])?;
        let (mut on_node, mut refused) = (Vec::new(), BTreeMap::new());
        for line in out.lines() {
            let mut f = line.splitn(3, '|');
            let (Some(vmi), Some(node), Some(condition)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if !node.is_empty() {
                on_node.push(vmi.to_owned());
            } else if condition.starts_with("Unschedulable:") {
                refused.insert(vmi.to_owned(), condition.to_owned());
            }
        }
        if on_node.len() + refused.len() >= count {
            if !refused.is_empty() {
                let names: Vec<&str> = refused.keys().map(String::as_str).collect();
                let mut args = vec!["delete", "vmi", "-n", ns, "--wait=false"];
                args.extend(names.iter().copied());
                k.run(&args)?;
            }
            let why = refused.values().next().cloned().unwrap_or_default();
            return Ok((on_node.len(), why));
        }
        if started.elapsed() > TIMEOUT {
            return Err(format!(
                "after {TIMEOUT:?} {} of {count} pods placed and {} refused",
                on_node.len(),
                refused.len()
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// One count's figures.
struct Run {
    /// VMs that ran (the scheduler's count for "as many as fit").
    vms: usize,
    /// Why the scheduler placed no more (only when it refused some).
    refused: String,
    create_span: Duration,
    to_all_markers: Duration,
    /// The machine's CPUs' busy share from the first create to the last marker.
    busy: f64,
    /// For one VM: its QEMU's and shim's CPU time at its marker.
    boot_cpu: Option<Duration>,
    /// Per VM, KiB: node's used memory beyond guest RAM; guest RAM touched; processes' private.
    node_beyond_guest: f64,
    guest_touched: f64,
    private_beyond_guest: f64,
    idle: Option<Idle>,
}

struct Idle {
    kubelet: Duration,
    containerd: Duration,
    per_vm_qemu: Duration,
    per_vm_shim: Duration,
}

/// Starts `count` VMIs together on `node`, waits for every guest's marker, and reads the
/// node's memory (and, when `idle`, everyone's idle CPU); the VMIs are deleted afterwards.
fn run(k: &Kubectl, node: &str, count: usize, idle: bool) -> Result<Run, String> {
    let ns = format!("virtshim-bench-{}-d{count}", std::process::id());
    k.run(&["create", "namespace", &ns])?;
    let result = measure(k, &ns, node, count, idle);
    let _ = k.run(&["delete", "namespace", &ns, "--timeout=600s"]);
    // Gone from the node before the next count's baseline.
    let gone = Instant::now();
    while !virtshim_tests::cluster::qemu_pids(&ns).is_empty() && gone.elapsed() < TIMEOUT {
        std::thread::sleep(POLL);
    }
    result
}

fn measure(k: &Kubectl, ns: &str, node: &str, count: usize, idle: bool) -> Result<Run, String> {
    let used_before = used_kib()?;
    let yaml = (0..count)
        .map(|i| vmi_yaml(&format!("d-{i}"), node))
        .collect::<Vec<_>>()
        .join("---\n");
    let cpu = CpuWindow::start()?;
    let started = Instant::now();
    k.run_stdin(&["create", "-n", ns, "-f", "-"], Some(&yaml))?;
    let create_span = started.elapsed();
    let (vms, refused) = placed(k, ns, count, started)?;
    if vms == 0 {
        return Err(format!("the scheduler placed no VM on {node}: {refused}"));
    }
    let mut seen = BTreeMap::new();
    let mut boot_cpu = None;
    loop {
        markers_seen(ns, &mut seen);
        let ready = seen.values().filter(|f| **f).count();
        if count == 1 && ready == 1 && boot_cpu.is_none() {
            let [(qemu, shim)] = vm_processes(ns)?[..] else {
                return Err("one VM, but not one QEMU".to_owned());
            };
            boot_cpu = Some(crate::cpu_time(qemu)? + crate::cpu_time(shim)?);
        }
        if ready >= vms {
            break;
        }
        if started.elapsed() > TIMEOUT {
            return Err(format!(
                "{ready} of {vms} guests showed {READY_MARKER} within {TIMEOUT:?}; the others' last lines:\n{}",
                last_lines(&seen)
            ));
        }
        std::thread::sleep(POLL);
    }
    let to_all_markers = started.elapsed();
    let busy = cpu.share()?;
    std::thread::sleep(SETTLE);
    let processes = vm_processes(ns)?;
    if processes.len() != vms {
        return Err(format!(
            "{vms} VMs placed, {} QEMUs running",
            processes.len()
        ));
    }
    let used_after = used_kib()?;
    let (mut touched, mut private) = (0u64, 0u64);
    for (qemu, shim) in &processes {
        let overhead = crate::qemu_overhead_kib(*qemu, GUEST_RAM_KIB)?;
        touched += crate::rss_kib(*qemu)?.saturating_sub(overhead.rss);
        private += overhead.private + crate::private_kib(*shim)?;
    }
    let n = vms as f64;
    let guest_touched = touched as f64 / n;
    let grown = used_after as f64 - used_before as f64;
    let idle = if idle {
        Some(idle_cpu(node, &processes)?)
    } else {
        None
    };
    Ok(Run {
        vms,
        refused,
        create_span,
        to_all_markers,
        busy,
        boot_cpu,
        node_beyond_guest: grown / n - guest_touched,
        guest_touched,
        private_beyond_guest: private as f64 / n,
        idle,
    })
}

/// CPU time over [`IDLE_WINDOW`] of the node's kubelet and containerd and, per VM, of the
/// VMs' QEMUs and shims.
fn idle_cpu(node: &str, vms: &[(u32, u32)]) -> Result<Idle, String> {
    let kubelet = node_process("kubelet", &format!("--hostname-override={node}"))?;
    let containerd = node_process("containerd", "/etc/containerd/config.toml")?;
    let read = || -> Result<(Duration, Duration, Duration, Duration), String> {
        let (mut qemu, mut shim) = (Duration::ZERO, Duration::ZERO);
        for (q, s) in vms {
            qemu += crate::cpu_time(*q)?;
            shim += crate::cpu_time(*s)?;
        }
        Ok((
            crate::cpu_time(kubelet)?,
            crate::cpu_time(containerd)?,
            qemu,
            shim,
        ))
    };
    let before = read()?;
    std::thread::sleep(IDLE_WINDOW);
    let after = read()?;
    let n = u32::try_from(vms.len().max(1)).map_err(|e| e.to_string())?;
    Ok(Idle {
        kubelet: after.0 - before.0,
        containerd: after.1 - before.1,
        per_vm_qemu: (after.2 - before.2) / n,
        per_vm_shim: (after.3 - before.3) / n,
    })
}

/// CPU over the idle window as millicores.
fn millicores(d: Duration) -> f64 {
    d.as_secs_f64() / IDLE_WINDOW.as_secs_f64() * 1000.0
}

/// Measures and says each density line as soon as it is measured (a later failure keeps the
/// earlier figures on the screen).
pub fn lines(k: &Kubectl, say: &mut dyn FnMut(String)) -> Result<(), String> {
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| format!("this machine's hostname: {e}"))?
        .trim()
        .to_owned();
    let pods = k.run(&[
        "get",
        "node",
        &node,
        "-o",
        "jsonpath={.status.allocatable.pods}",
    ])?;
    let most: usize = pods
        .trim()
        .parse()
        .map_err(|e| format!("node {node}'s allocatable pods {pods:?}: {e}"))?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    // The kubelet and containerd with none of these VMs, for comparison.
    let quiet = idle_cpu(&node, &[])?;
    say(format!(
        "density on node {node} ({cores} cores, {pods} pods allocatable): kernelBoot guests, {GUEST_MEMORY} each, 1 vCPU, {CPU_REQUEST} CPU requested, TCG; with no VM the kubelet idles at {:.0}m CPU, containerd at {:.0}m",
        millicores(quiet.kubelet),
        millicores(quiet.containerd),
        pods = pods.trim(),
    ));
    let one = run(k, &node, 1, false)?;
    let boot_cpu = one.boot_cpu.ok_or("no boot CPU read for the single VM")?;
    let mib = |kib: f64| kib / 1024.0;
    let mut say_run = |r: &Run, label: &str| {
        let bound = boot_cpu.as_secs_f64() * r.vms as f64 / cores as f64;
        let mut line = format!(
            "density {label}: {} VM(s) created in {:.1} s, all guest markers {:.1} s after the first create; CPU bound {:.1} s ({:.2} CPU-s per VM to its marker × {} ÷ {cores} cores), limited by {}; node memory per VM beyond guest RAM {:.1} MiB (guest RAM touched {:.1} MiB of {GUEST_MEMORY}; shim and QEMU private pages beyond guest RAM {:.1} MiB)",
            r.vms,
            r.create_span.as_secs_f64(),
            r.to_all_markers.as_secs_f64(),
            bound,
            boot_cpu.as_secs_f64(),
            r.vms,
            boot_limit(r.busy),
            mib(r.node_beyond_guest),
            mib(r.guest_touched),
            mib(r.private_beyond_guest),
        );
        if !r.refused.is_empty() {
            line += &format!("; no more fit: {}", r.refused);
        }
        say(line);
    };
    say_run(&one, "1");
    say_run(&run(k, &node, 10, false)?, "10");
    let full = run(k, &node, most, true)?;
    say_run(&full, "as many as fit");
    let idle = full.idle.as_ref().ok_or("no idle reading")?;
    say(format!(
        "density idle with {} VMs booted: kubelet {:.0}m CPU, containerd {:.0}m; per VM QEMU {:.1}m, shim {:.2}m (over {} s)",
        full.vms,
        millicores(idle.kubelet),
        millicores(idle.containerd),
        millicores(idle.per_vm_qemu),
        millicores(idle.per_vm_shim),
        IDLE_WINDOW.as_secs(),
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{vmi_yaml, CPU_REQUEST};

    #[test]
    fn the_density_guest_is_a_valid_vmi_with_its_cpu_request() {
        let yaml = vmi_yaml("density-0", "node-1");
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).expect("YAML");
        assert_eq!(
            doc["spec"]["domain"]["resources"]["requests"]["cpu"].as_str(),
            Some(CPU_REQUEST),
            "{yaml}"
        );
        assert_eq!(
            doc["spec"]["nodeSelector"]["kubernetes.io/hostname"].as_str(),
            Some("node-1")
        );
        let object = virtshim_api::manifest::parse_documents(&yaml)
            .into_iter()
            .next()
            .expect("one document")
            .expect("parses as a KubeVirt object");
        object.validate().expect("the validator accepts it");
    }
}
