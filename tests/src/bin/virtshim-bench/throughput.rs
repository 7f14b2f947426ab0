//! `make bench ONLY=cluster-throughput`: the controller's throughput, with no guest booting.
//!
//! Every node is cordoned, so the pods the controller makes stay Pending and the machine's CPU
//! is left to the apiserver and the controller. 500 VMs with `running: true` are applied in one
//! `kubectl apply` stream; the figure is the time until 500 VMIs and 500 pods exist (from the
//! start of the apply, and from its end: kubectl sends one object at a time through both
//! webhooks, which the admission figure measures on its own). Then the same VMs are applied with
//! `running: false`: the time until every VMI and pod is gone. Beside each: the controller's
//! CPU time, its peak RSS (reset before the run), and the requests it sent to the apiserver, by
//! its own count (`kubevirt_rest_client_requests_total`), with the time they waited for its
//! rate limiter. The nodes are uncordoned and the namespace deleted whatever happens.

use crate::limits::{controller_limit, CpuWindow};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use virtshim_tests::Kubectl;

const TIMEOUT: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_millis(250);

/// The leading controller's process on this node, as the kernel sees it, and its pod's IP.
/// (The Deployment runs two replicas; the one holding the Lease does the work.)
struct ControllerProcess {
    pid: u32,
    ip: String,
}

impl ControllerProcess {
    fn leader(k: &Kubectl) -> Result<Self, String> {
        let holder = k.run(&[
            "get",
            "lease",
            "-n",
            "virtshim-system",
            "virtshim-controller",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])?;
        let holder = holder.trim();
        if holder.is_empty() {
            return Err("no controller holds the virtshim-controller Lease".to_owned());
        }
        let pod = k.run(&[
            "get",
            "pod",
            "-n",
            "virtshim-system",
            holder,
            "-o",
            "jsonpath={.metadata.uid} {.status.podIP}",
        ])?;
        let (uid, ip) = pod
            .trim()
            .split_once(' ')
            .ok_or_else(|| format!("the leader's pod {holder} has no IP yet"))?;
        let out = std::process::Command::new("pgrep")
            .args(["-x", "virtshim-contro"])
            .output()
            .map_err(|e| format!("pgrep: {e}"))?;
        // The pod's cgroup path names its UID (cgroupfs: .../pod<uid>/<container>).
        let pids: Vec<u32> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                    .is_ok_and(|c| c.contains(uid) || c.contains(&uid.replace('-', "_")))
            })
            .collect();
        match pids.as_slice() {
            [pid] => Ok(Self {
                pid: *pid,
                ip: ip.to_owned(),
            }),
            other => Err(format!(
                "expected one process of the leading controller {holder} (pod {uid}) on this node, found {other:?}"
            )),
        }
    }

    /// User and system CPU time so far.
    fn cpu(&self) -> Result<Duration, String> {
        crate::cpu_time(self.pid).map_err(|e| format!("the controller's CPU time: {e}"))
    }

    /// Resets the peak RSS (`VmHWM`) to the current RSS.
    fn reset_peak(&self) -> Result<(), String> {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5")
            .map_err(|e| format!("resetting the controller's peak RSS: {e}"))
    }

    /// The peak RSS since the last reset, MiB.
    fn peak_mib(&self) -> Result<f64, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .map_err(|e| format!("the controller's /proc status: {e}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .ok_or_else(|| "no VmHWM in the controller's /proc status".to_owned())
    }
}

/// What the controller's `/metrics` says about its apiserver requests.
#[derive(Clone, Debug, Default)]
struct Requests {
    sent: f64,
    /// Seconds spent waiting for the rate limiter, summed.
    throttled: f64,
    /// Requests the apiserver refused, by method and code (`PATCH 409`).
    refused: BTreeMap<String, f64>,
}

impl Requests {
    fn since(self, before: &Requests) -> Requests {
        let mut refused = self.refused;
        for (k, v) in &before.refused {
            *refused.entry(k.clone()).or_default() -= v;
        }
        refused.retain(|_, v| *v > 0.0);
        Requests {
            sent: self.sent - before.sent,
            throttled: self.throttled - before.throttled,
            refused,
        }
    }

    /// `957 × PATCH 409, 788 × PATCH 422`, or `none`.
    fn refused_text(&self) -> String {
        if self.refused.is_empty() {
            return "none".to_owned();
        }
        self.refused
            .iter()
            .map(|(k, v)| format!("{v:.0} × {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `METHOD CODE` of a `kubevirt_rest_client_requests_total{method="PATCH",code="409"} N` line
/// whose code is an error (4xx, 5xx or `<error>`), and N.
fn refused_request(line: &str) -> Option<(String, f64)> {
    let labels = line
        .strip_prefix("kubevirt_rest_client_requests_total{")?
        .split_once('}')?;
    let label = |name: &str| -> Option<&str> {
        labels.0.split(',').find_map(|kv| {
            kv.strip_prefix(name)?
                .strip_prefix("=\"")?
                .strip_suffix('"')
        })
    };
    let (method, code) = (label("method")?, label("code")?);
    if code.starts_with('2') || code.starts_with('3') {
        return None;
    }
    Some((format!("{method} {code}"), labels.1.trim().parse().ok()?))
}

/// Reads the leader's `/metrics` on its pod IP.
fn scrape(leader: &ControllerProcess) -> Result<Requests, String> {
    let ip = leader.ip.as_str();
    let mut tcp = TcpStream::connect((ip, 8080)).map_err(|e| format!("{ip}:8080: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("scraping the controller: {e}"))?;
    let mut page = String::new();
    tcp.read_to_string(&mut page)
        .map_err(|e| format!("scraping the controller: {e}"))?;
    let sum = |prefix: &str| -> f64 {
        page.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let requests = Requests {
        sent: sum("kubevirt_rest_client_requests_total{"),
        throttled: sum("kubevirt_rest_client_rate_limiter_duration_seconds_sum{"),
        refused: page
            .lines()
            .filter_map(refused_request)
            .fold(BTreeMap::new(), |mut m, (k, v)| {
                *m.entry(k).or_default() += v;
                m
            }),
    };
    if requests.sent == 0.0 {
        return Err("the controller's /metrics counts no apiserver request".to_owned());
    }
    Ok(requests)
}

/// VMIs and pods in `ns` now.
fn counts(k: &Kubectl, ns: &str) -> Result<(usize, usize), String> {
    let out = k.run(&["get", "vmi,pods", "-n", ns, "-o", "name"])?;
    let vmis = out
        .lines()
        .filter(|l| l.starts_with("virtualmachineinstance"))
        .count();
    let pods = out.lines().filter(|l| l.starts_with("pod/")).count();
    Ok((vmis, pods))
}

/// Polls until `done(vmis, pods)`; when it became true, from `started`.
fn until(
    k: &Kubectl,
    ns: &str,
    started: Instant,
    what: &str,
    done: impl Fn(usize, usize) -> bool,
) -> Result<Duration, String> {
    loop {
        let (vmis, pods) = counts(k, ns)?;
        if done(vmis, pods) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > TIMEOUT {
            return Err(format!(
                "{what}: not within {TIMEOUT:?} ({vmis} VMIs, {pods} pods)"
            ));
        }
        std::thread::sleep(POLL);
    }
}

fn vms(count: usize, running: bool) -> String {
    (0..count)
        .map(|i| {
            format!(
                "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: vm-{i}}}\nspec:\n  running: {running}\n  template:\n    spec:\n{}---\n",
                crate::cluster::vmi_spec("      ")
            )
        })
        .collect()
}

/// One phase: apply `yaml`, wait for `done`; its line.
struct Phase {
    apply: Duration,
    done: Duration,
    cpu: Duration,
    requests: Requests,
    /// The machine's CPU busy share over the phase.
    busy: f64,
}

fn phase(
    k: &Kubectl,
    ns: &str,
    controller: &ControllerProcess,
    yaml: &str,
    what: &str,
    done: impl Fn(usize, usize) -> bool,
) -> Result<Phase, String> {
    let cpu_before = controller.cpu()?;
    let before = scrape(controller)?;
    let machine = CpuWindow::start()?;
    let started = Instant::now();
    k.run_stdin(&["apply", "-n", ns, "-f", "-"], Some(yaml))?;
    let apply = started.elapsed();
    let done = until(k, ns, started, what, done)?;
    let busy = machine.share()?;
    // The controller may still be writing status: let it settle before reading its totals.
    std::thread::sleep(Duration::from_secs(2));
    Ok(Phase {
        apply,
        done,
        cpu: controller.cpu()?.saturating_sub(cpu_before),
        requests: scrape(controller)?.since(&before),
        busy,
    })
}

fn nodes(k: &Kubectl) -> Result<Vec<String>, String> {
    Ok(k.run(&["get", "nodes", "-o", "name"])?
        .lines()
        .map(str::to_owned)
        .collect())
}

/// The controller's lines for `count` VMs.
pub fn lines(k: &Kubectl, count: usize) -> Result<Vec<String>, String> {
    let controller = ControllerProcess::leader(k)?;
    let ns = format!("virtshim-bench-{}-throughput", std::process::id());
    let nodes = nodes(k)?;
    for node in &nodes {
        k.run(&["cordon", node])?;
    }
    let result = (|| -> Result<Vec<String>, String> {
        k.run(&["create", "namespace", &ns])?;
        controller.reset_peak()?;
        let up = phase(
            k,
            &ns,
            &controller,
            &vms(count, true),
            "VMIs and pods",
            |v, p| v >= count && p >= count,
        )?;
        let up_peak = controller.peak_mib()?;
        controller.reset_peak()?;
        let down = phase(
            k,
            &ns,
            &controller,
            &vms(count, false),
            "all gone",
            |v, p| v == 0 && p == 0,
        )?;
        let down_peak = controller.peak_mib()?;
        let line = |what: &str, p: &Phase, peak: f64| {
            format!(
                "controller, {count} VMs {what}: {:.2} s from the apply's start ({:.2} s after kubectl's last object, {:.2} s applying); controller CPU {:.2} s, peak RSS {:.1} MiB; {} apiserver requests ({:.0}/s over the run; refused: {}), {:.2} s waited for the client rate limiter in all; limited by {}",
                p.done.as_secs_f64(),
                p.done.saturating_sub(p.apply).as_secs_f64(),
                p.apply.as_secs_f64(),
                p.cpu.as_secs_f64(),
                peak,
                p.requests.sent,
                p.requests.sent / p.done.as_secs_f64(),
                p.requests.refused_text(),
                p.requests.throttled,
                controller_limit(
                    p.apply.as_secs_f64(),
                    p.done.saturating_sub(p.apply).as_secs_f64(),
                    p.requests.throttled,
                    p.busy,
                ),
            )
        };
        Ok(vec![
            line(
                &format!("running: true (nodes cordoned) → {count} VMIs and {count} pods"),
                &up,
                up_peak,
            ),
            line("running: false → every VMI and pod gone", &down, down_peak),
        ])
    })();
    let _ = k.run(&["delete", "namespace", &ns, "--timeout=600s"]);
    for node in &nodes {
        let _ = k.run(&["uncordon", node]);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::refused_request;

    #[test]
    fn refused_requests_by_method_and_code() {
        let line = r#"kubevirt_rest_client_requests_total{method="PATCH",code="409"} 957"#;
        assert_eq!(refused_request(line), Some(("PATCH 409".to_owned(), 957.0)));
        let ok = r#"kubevirt_rest_client_requests_total{method="GET",code="200"} 391"#;
        assert_eq!(refused_request(ok), None);
        let none = r#"kubevirt_rest_client_requests_total{method="POST",code="<error>"} 2"#;
        assert_eq!(
            refused_request(none),
            Some(("POST <error>".to_owned(), 2.0))
        );
        assert_eq!(refused_request("kubevirt_other{code=\"409\"} 1"), None);
    }
}
