//! The VM on the pod network, through the real CRI and CNI: with bridge binding the guest takes
//! the pod's IP (by the shim's DHCP), with masquerade it gets 10.0.2.2 and the pod's IP is NATed
//! to it; either way a client in another pod on the bridge reaches the guest's HTTP server at
//! the pod's IP.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};
use virtctl::cri::api;
use virtctl::cri::blocking::BlockingCri;
use virtctl::local;
use virtshim_api::manifest::parse_documents;
use virtshim_tests::containerd::PrivateContainerd;
use virtshim_tests::{oci, vm};

const BUSYBOX: &str = "localhost/virtshim/busybox:1";

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

fn pod_ip(cri: &BlockingCri, sandbox: &str) -> String {
    let status = cri
        .pod_sandbox_status(sandbox, false)
        .unwrap()
        .status
        .unwrap();
    status.network.unwrap().ip
}

/// Runs a runc pod on the same bridge that asks `ip`:80 for `/healthz` until it answers; its
/// output. (busybox-static's wget crashes in its resolver, so the request goes through nc.)
fn fetch_from_another_pod(containerd: &PrivateContainerd, cri: &BlockingCri, ip: &str) -> String {
    let uid = format!("client-{}-{}", std::process::id(), ip.replace('.', "-"));
    let log_dir = containerd.pod_log_dir(&uid);
    let sandbox = api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: "client".into(),
            uid: uid.clone(),
            namespace: "virtshim-tests".into(),
            attempt: 0,
        }),
        hostname: "client".into(),
        log_directory: log_dir.to_string_lossy().into_owned(),
        linux: Some(api::LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    let pod = cri.run_pod_sandbox(sandbox.clone(), "").unwrap();
    let script = format!(
        "for i in $(seq 60); do if printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 2 {ip} 80 | grep -q '^ok'; then echo FETCHED ok; exit 0; fi; sleep 1; done; echo GAVE-UP"
    );
    let config = api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: "wget".into(),
            attempt: 0,
        }),
        image: Some(virtctl::cri::image_spec(BUSYBOX)),
        command: vec!["/bin/busybox".into(), "sh".into(), "-c".into(), script],
        log_path: "wget/0.log".into(),
        ..Default::default()
    };
    let id = cri.create_container(&pod, config, sandbox).unwrap();
    cri.start_container(&id).unwrap();
    vm::wait_exited(cri, &id, Duration::from_secs(90)).expect("the client finished");
    let lines = virtctl::cri::log::read_log(log_dir.join("wget/0.log")).unwrap();
    cri.stop_pod_sandbox(&pod).unwrap();
    cri.remove_pod_sandbox(&pod).unwrap();
    lines
        .into_iter()
        .map(|l| l.text)
        .collect::<Vec<_>>()
        .join("\n")
}

fn guest_serves_http_at_the_pod_ip(test: &str, interfaces: &str, expected_guest_ip: Option<&str>) {
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    containerd
        .import_image(&oci::busybox_image(BUSYBOX, &["/bin/busybox"]).unwrap())
        .unwrap();
    let cri = containerd.cri().unwrap();
    let plan = local::plan(parse_documents(&vmi("web", interfaces)).remove(0).unwrap()).unwrap();
    let started =
        local::run(&cri, &plan).unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
    let ip = pod_ip(&cri, &started.sandbox_id);
    let guest_ip = expected_guest_ip.unwrap_or(&ip).to_owned();
    let marker = format!("VIRTSHIM-GUEST-UP ip={guest_ip}");
    let took = vm::wait_for_console(&started.console_log(), &marker, Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
    println!("{test}: guest up with {guest_ip} (pod {ip}) after {took:?}");
    let started_fetch = Instant::now();
    let output = fetch_from_another_pod(&containerd, &cri, &ip);
    assert!(
        output.contains("ok") && output.contains("FETCHED"),
        "no answer from the guest at {ip}:\n{output}"
    );
    println!(
        "{test}: another pod fetched http://{ip}/healthz in {:?}",
        started_fetch.elapsed()
    );
    cri.stop_pod_sandbox(&started.sandbox_id).unwrap();
    cri.remove_pod_sandbox(&started.sandbox_id).unwrap();
    vm::assert_nothing_left(&started.sandbox_id);
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
