//! Reaching a VM's ports on the cluster with our `virtctl`, as a KubeVirt user does:
//!
//! - `virtctl port-forward vm/NAME.NS 0:80` (through apiserver → controller → handler): an HTTP
//!   request to the printed local port is answered by the guest's web server, twice (a
//!   WebSocket per connection), and `vmi/NAME` works too;
//! - `virtctl expose vm NAME --port 8080 --target-port 80`: a Service selecting the VM's pod
//!   whose endpoint (the pod's IP, port 80) answers from the guest. This cluster has no
//!   kube-proxy, so the endpoint is fetched, not the cluster IP.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;
use virtshim_tests::cluster::{running_vmi, Namespace};
use virtshim_tests::virtctl::Serving;
use virtshim_tests::vm::{self, KERNEL_BOOT_IMAGE};
use virtshim_tests::{wait_for, Kubectl};

const VM: &str = "forwarded";

fn kubeconfig() -> PathBuf {
    PathBuf::from(std::env::var_os("KUBECONFIG").unwrap())
}

/// `GET path` over HTTP/1.0 to `addr`; the whole answer.
fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let mut tcp = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: guest\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer)
        .map_err(|e| format!("{addr}: {e} after {answer:?}"))?;
    Ok(answer)
}

/// A `virtctl port-forward` child and the local address it listens on.
struct Forward {
    /// Stops the child when the forward is dropped.
    _serving: Serving,
    addr: String,
}

impl Forward {
    fn start(bin: &std::path::Path, target: &str) -> Self {
        let serving = Serving::start(bin, &kubeconfig(), &["port-forward", target, "0:80"])
            .unwrap_or_else(|e| panic!("virtctl port-forward {target}: {e}"));
        let addr = serving
            .forwarded_addr()
            .unwrap_or_else(|e| panic!("virtctl port-forward {target}: {e}"));
        Self {
            _serving: serving,
            addr,
        }
    }
}

fn create_vm(k: &Kubectl, ns: &str) {
    let yaml = format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: {VM}, namespace: {ns}}}\n\
         spec:\n  running: true\n  template:\n    metadata: {{labels: {{app: {VM}}}}}\n    spec:\n\
         \x20     domain:\n        memory: {{guest: 128Mi}}\n        devices: {{}}\n\
         \x20       firmware:\n          kernelBoot:\n            kernelArgs: console=ttyS0\n\
         \x20           container: {{image: '{KERNEL_BOOT_IMAGE}', kernelPath: /boot/vmlinuz, initrdPath: /boot/initrd.img}}\n"
    );
    k.run_stdin(&["apply", "-f", "-"], Some(&yaml)).unwrap();
}

#[test]
fn port_forward_and_expose_reach_the_guest() {
    let test = "port_forward_and_expose_reach_the_guest";
    let Some(k) = virtshim_tests::cluster::installed(test) else {
        return;
    };
    let ns = Namespace::new(&k, &format!("virtshim-forward-{}", std::process::id()));
    let ns = ns.name.as_str();
    create_vm(&k, ns);
    let running =
        running_vmi(&k, ns, VM, Duration::from_secs(240)).unwrap_or_else(|e| panic!("{e}"));
    let pod_ip = running.vmi["status"]["interfaces"][0]["ipAddress"]
        .as_str()
        .unwrap()
        .to_owned();
    // The guest's web server answers on the pod's IP once the guest is up.
    wait_for("the guest's web server", Duration::from_secs(120), || {
        http_get(&format!("{pod_ip}:80"), "/healthz")
            .ok()
            .filter(|a| a.contains("\r\n\r\nok"))
    });

    let bin = vm::virtctl_binary();
    for target in [format!("vm/{VM}.{ns}"), format!("vmi/{VM}.{ns}")] {
        let forward = Forward::start(&bin, &target);
        for attempt in 0..2 {
            let answer = http_get(&forward.addr, "/healthz").unwrap_or_else(|e| {
                panic!("virtctl port-forward {target}, connection {attempt}: {e}")
            });
            assert!(
                answer.starts_with("HTTP/1.") && answer.ends_with("ok\n"),
                "virtctl port-forward {target}: the guest's /healthz, got {answer:?}"
            );
        }
        println!("{test}: virtctl port-forward {target} reached the guest");
    }

    let out = Command::new(vm::virtctl_binary())
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args([
            "-n", ns, "expose", "vm", VM, "--name", "web", "--port", "8080",
        ])
        .args(["--target-port", "80"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "virtctl expose: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let endpoint = wait_for(
        "the Service's endpoint is the VM's pod",
        Duration::from_secs(60),
        || {
            let slices = k
                .run(&[
                    "get",
                    "endpointslices",
                    "-n",
                    ns,
                    "-l",
                    "kubernetes.io/service-name=web",
                    "-o",
                    "json",
                ])
                .ok()?;
            let slices: serde_json::Value = serde_json::from_str(&slices).ok()?;
            let slice = slices["items"].as_array()?.first()?.clone();
            let address = slice["endpoints"][0]["addresses"][0].as_str()?.to_owned();
            let port = slice["ports"][0]["port"].as_u64()?;
            (address == pod_ip).then(|| format!("{address}:{port}"))
        },
    );
    assert_eq!(endpoint, format!("{pod_ip}:80"), "the endpoint's port");
    let answer = http_get(&endpoint, "/healthz").unwrap();
    assert!(
        answer.ends_with("ok\n"),
        "the exposed endpoint {endpoint} answers from the guest: {answer:?}"
    );
    k.run(&["delete", "vm", "-n", ns, VM, "--wait=false"])
        .unwrap();
}
