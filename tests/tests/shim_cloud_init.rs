//! Real cloud-init in a real Debian cloud image (`images/cloud/build.sh`: debootstrap, systemd,
//! cloud-init 22.4, syslinux), through the real CRI: a `#cloud-config` whose `write_files` and
//! `runcmd` take effect, and `networkData` that cloud-init renders into the guest's network
//! configuration (a static address the shim's DHCP would never give), for NoCloud and
//! ConfigDrive alike. A client in another pod then fetches the written file from the guest at
//! the pod's IP (masquerade), and `ssh` logs in as the image's default user with a key that
//! `spec.accessCredentials` took from a Secret into the cloud-init metadata.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use virtctl::local;
use virtshim_api::manifest::parse_documents;
use virtshim_tests::{peer, vm};

const USER_DATA: &str = r#"#cloud-config
write_files:
- path: /srv/www/healthz
  content: |
    written-by-cloud-init
runcmd:
- [sh, -c, "cd /srv/www && nohup python3 -m http.server 80 >/dev/null 2>&1 &"]
# Waits until the server answers locally, so that a failed fetch from the peer means the network.
- [sh, -c, "for i in $(seq 30); do python3 -c 'import urllib.request as u; print(\"LOCAL-HTTP\", u.urlopen(\"http://127.0.0.1/healthz\").read())' > /dev/ttyS0 2>&1 && break; sleep 1; done"]
- [sh, -c, "echo CLOUD-INIT-RUNCMD $(ip -4 -o addr show dev eth0 | tr -s ' ' | cut -d' ' -f4 | tr '\n' ' ') > /dev/ttyS0"]
"#;

/// The guest's NIC by its MAC: 10.0.2.2 as masquerade needs, plus 10.0.2.99, which only
/// cloud-init applying this network data can give it. NoCloud takes network config v2 (as
/// `network-config`), ConfigDrive OpenStack's `network_data.json`, as in KubeVirt.
const NETWORK_DATA_NO_CLOUD: &str = r#"version: 2
ethernets:
  nic0:
    match: {macaddress: "02:00:00:5e:00:53"}
    addresses: [10.0.2.2/24, 10.0.2.99/24]
    gateway4: 10.0.2.1
"#;
const NETWORK_DATA_CONFIG_DRIVE: &str = r#"{"links": [{"id": "nic0", "type": "phy", "ethernet_mac_address": "02:00:00:5e:00:53"}],
 "networks": [
  {"id": "a", "link": "nic0", "type": "ipv4", "ip_address": "10.0.2.2", "netmask": "255.255.255.0",
   "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.2.1"}]},
  {"id": "b", "link": "nic0", "type": "ipv4", "ip_address": "10.0.2.99", "netmask": "255.255.255.0"}],
 "services": []}
"#;

fn indent(text: &str, spaces: usize) -> String {
    text.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(spaces)))
        .collect()
}

/// A fresh ed25519 key pair in `dir` (`id`, `id.pub`); the public key's text.
fn key_pair(dir: &Path) -> String {
    let status = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "admin@virtshim-test",
            "-f",
        ])
        .arg(dir.join("id"))
        .status()
        .unwrap();
    assert!(status.success(), "ssh-keygen");
    std::fs::read_to_string(dir.join("id.pub")).unwrap()
}

/// Runs `command` on the guest over SSH as `user` with the key in `dir`, retrying while sshd
/// starts; its output.
fn ssh(dir: &Path, user: &str, ip: &str, command: &str) -> Result<String, String> {
    let mut last = String::new();
    for _ in 0..30 {
        let output = std::process::Command::new("ssh")
            .arg("-i")
            .arg(dir.join("id"))
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(format!("{user}@{ip}"))
            .arg(command)
            .output()
            .map_err(|e| e.to_string())?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        last = String::from_utf8_lossy(&output.stderr).into_owned();
        std::thread::sleep(Duration::from_secs(2));
    }
    Err(last)
}

fn cloud_init_configures_the_guest(test: &str, source: &str) {
    let Some(containerd) = vm::containerd(test) else {
        return;
    };
    containerd
        .import_tar(
            &vm::cloud_images().join("debian-cloud.oci.tar"),
            vm::CLOUD_IMAGE,
        )
        .unwrap();
    let cri = containerd.cri().unwrap();
    // The Secret with the public key, as the kubelet would mount it.
    let keys = tempfile::tempdir().unwrap();
    let secret = tempfile::tempdir().unwrap();
    std::fs::write(secret.path().join("admin"), key_pair(keys.path())).unwrap();
    let propagation = if source == "cloudInitNoCloud" {
        "noCloud"
    } else {
        "configDrive"
    };
    let yaml = format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{name: debian}}\nspec:\n  accessCredentials:\n  - sshPublicKey: {{source: {{secret: {{secretName: ssh-keys}}}}, propagationMethod: {{{propagation}: {{}}}}}}\n  domain:\n    memory: {{guest: 512Mi}}\n    devices:\n      disks:\n      - {{name: root, disk: {{bus: virtio}}}}\n      - {{name: ci, disk: {{bus: virtio}}}}\n      interfaces: [{{name: default, masquerade: {{}}, macAddress: '02:00:00:5e:00:53'}}]\n  networks: [{{name: default, pod: {{}}}}]\n  volumes:\n  - {{name: root, containerDisk: {{image: '{}'}}}}\n  - name: ci\n    {source}:\n      userData: |\n{}      networkData: |\n{}",
        vm::CLOUD_IMAGE,
        indent(USER_DATA, 8),
        indent(
            if source == "cloudInitNoCloud" {
                NETWORK_DATA_NO_CLOUD
            } else {
                NETWORK_DATA_CONFIG_DRIVE
            },
            8
        ),
    );
    let mut plan = local::plan(parse_documents(&yaml).remove(0).unwrap()).unwrap();
    plan.set_host_volumes(local::HostVolumes {
        secrets: HashMap::from([("ssh-keys".to_owned(), secret.path().to_path_buf())]),
        ..Default::default()
    })
    .unwrap();
    let started =
        local::run(&cri, &plan).unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
    let took = vm::wait_for_console(
        &started.console_log(),
        "CLOUD-INIT-RUNCMD",
        Duration::from_secs(600),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", containerd.log_tail()));
    println!("{test}: cloud-init ran the runcmd {took:?} after start");
    let console = virtctl::cri::log::read_log(started.console_log())
        .unwrap()
        .into_iter()
        .map(|l| l.text)
        .collect::<Vec<_>>()
        .join("\n");
    let line = console
        .lines()
        .find(|l| l.contains("CLOUD-INIT-RUNCMD"))
        .unwrap();
    assert!(
        line.contains("10.0.2.2/24") && line.contains("10.0.2.99/24"),
        "networkData did not configure eth0: {line}"
    );
    // The data source cloud-init found is the one the VMI asked for.
    let datasource = if source == "cloudInitNoCloud" {
        "DataSourceNoCloud"
    } else {
        "DataSourceConfigDrive"
    };
    vm::wait_for_console(
        &started.console_log(),
        &format!("Datasource {datasource}"),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("cloud-init did not use {datasource}: {e}"));
    let ip = peer::pod_ip(&cri, &started.sandbox_id);
    let output =
        peer::fetch_from_another_pod(&containerd, &cri, &ip, "/healthz", "written-by-cloud-init");
    assert!(
        output.contains("FETCHED"),
        "the file cloud-init wrote is not served at {ip}:\n{output}"
    );
    // The key from accessCredentials lets the image's default user in (masquerade forwards
    // every port when the interface lists none).
    let answer = ssh(keys.path(), "debian", &ip, "echo SSH-OK $(hostname)")
        .unwrap_or_else(|e| panic!("ssh debian@{ip} with the accessCredentials key: {e}"));
    assert_eq!(answer.trim(), "SSH-OK debian");
    cri.stop_container(started.compute_id(), Duration::from_secs(120))
        .unwrap();
    assert_eq!(
        vm::wait_exited(&cri, started.compute_id(), Duration::from_secs(30)),
        Some(0),
        "systemd powered the guest off on the ACPI button"
    );
    vm::remove_pod(&cri, &started.sandbox_id);
    containerd.stop().unwrap();
}

#[test]
fn no_cloud_configures_a_debian_guest() {
    cloud_init_configures_the_guest("no_cloud_configures_a_debian_guest", "cloudInitNoCloud");
}

#[test]
fn config_drive_configures_a_debian_guest() {
    cloud_init_configures_the_guest(
        "config_drive_configures_a_debian_guest",
        "cloudInitConfigDrive",
    );
}
