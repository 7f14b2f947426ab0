//! The VM on the pod network, through the real CRI and CNI: with bridge binding the guest takes
//! the pod's IP (by the shim's DHCP), with masquerade it gets 10.0.2.2 and the pod's IP is NATed
//! to it; either way a client in another pod on the bridge reaches the guest's HTTP server at
//! the pod's IP.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};
use virtctl::local;
use virtshim_api::manifest::parse_documents;
use virtshim_tests::{peer, vm};

fn vmi(name: &str, interfaces: &str) -> String {
    let mut yaml = format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: {name}}}\nspec:\n  domain:\n    memory: {{guest: 256Mi}}\n    devices: {{{interfaces}}}\n    firmware:\n      kernelBoot:\n        kernelArgs: console=ttyS0\n        container: {{image: '{}', kernelPath: /boot/vmlinuz, initrdPath: /boot/initrd.img}}\n",
        vm::KERNEL_BOOT_IMAGE
    );
    if !interfaces.is_empty() {
        yaml.push_str("  networks: [{name: default, pod: {}}]\n");
    }
    yaml
}

fn guest_serves_http_at_the_pod_ip(test: &str, interfaces: &str, expected_guest_ip: Option<&str>) {
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    let cri = containerd.cri().unwrap();
    let plan = local::plan(parse_documents(&vmi("web", interfaces)).remove(0).unwrap()).unwrap();
    let started =
        local::run(&cri, &plan).unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
    let ip = peer::pod_ip(&cri, &started.sandbox_id);
    let guest_ip = expected_guest_ip.unwrap_or(&ip).to_owned();
    let marker = format!("VIRTSHIM-GUEST-UP ip={guest_ip}");
    let took = vm::wait_for_console(&started.console_log(), &marker, Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
    println!("{test}: guest up with {guest_ip} (pod {ip}) after {took:?}");
    let started_fetch = Instant::now();
    let output = peer::fetch_from_another_pod(&containerd, &cri, &ip, "/healthz", "ok");
    assert!(
        output.contains("ok") && output.contains("FETCHED"),
        "no answer from the guest at {ip}:\n{output}"
    );
    println!(
        "{test}: another pod fetched http://{ip}/healthz in {:?}",
        started_fetch.elapsed()
    );
    vm::remove_pod(&cri, &started.sandbox_id);
    containerd.stop().unwrap();
}

#[test]
fn bridge_binding_gives_the_guest_the_pod_ip() {
    // No interfaces: KubeVirt's default, a bridge on the pod network.
    guest_serves_http_at_the_pod_ip("bridge_binding_gives_the_guest_the_pod_ip", "", None);
}

#[test]
fn masquerade_forwards_the_pod_ip_to_the_guest() {
    guest_serves_http_at_the_pod_ip(
        "masquerade_forwards_the_pod_ip_to_the_guest",
        "interfaces: [{name: default, masquerade: {}, model: e1000, ports: [{port: 80}]}]",
        Some("10.0.2.2"),
    );
}
