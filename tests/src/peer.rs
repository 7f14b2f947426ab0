//! Peers on the tests' bridge: the pod IP the CNI gave a sandbox, and a runc pod that fetches
//! from a guest over HTTP, as a client in another pod of the cluster would.

use crate::containerd::PrivateContainerd;
use crate::{oci, vm};
use std::time::Duration;
use virtctl::cri::api;
use virtctl::cri::blocking::BlockingCri;

const BUSYBOX: &str = "localhost/virtshim/busybox:1";

/// The IP the CNI gave the sandbox.
pub fn pod_ip(cri: &BlockingCri, sandbox: &str) -> String {
    let status = cri
        .pod_sandbox_status(sandbox, false)
        .expect("CRI")
        .status
        .expect("CRI");
    status.network.expect("CRI").ip
}

/// Runs a runc pod on the same bridge that asks `ip`:80 for `path` until the answer has a line
/// starting with `expect` (for at most a minute); its output, ending in `FETCHED` or `GAVE-UP`.
/// (busybox-static's wget crashes in its resolver, so the request goes through nc.)
pub fn fetch_from_another_pod(
    containerd: &PrivateContainerd,
    cri: &BlockingCri,
    ip: &str,
    path: &str,
    expect: &str,
) -> String {
    containerd
        .import_image(&oci::busybox_image(BUSYBOX, &["/bin/busybox"]).expect("busybox image"))
        .expect("importing busybox");
    let script = format!(
        "for i in $(seq 60); do if printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | /bin/busybox nc -w 2 {ip} 80 | grep '^{expect}'; then echo FETCHED; exit 0; fi; sleep 1; done; echo GAVE-UP"
    );
    let uid = format!("client-{}-{}", std::process::id(), ip.replace('.', "-"));
    let command = ["/bin/busybox", "sh", "-c", script.as_str()];
    run_to_completion(
        containerd,
        cri,
        &uid,
        BUSYBOX,
        &command,
        Duration::from_secs(240),
    )
    .1
}

/// Runs `command` in image `image` as a runc pod (`uid` names it) until it exits (or `limit`
/// passes: then it is stopped); its exit code and output.
pub fn run_to_completion(
    containerd: &PrivateContainerd,
    cri: &BlockingCri,
    uid: &str,
    image: &str,
    command: &[&str],
    limit: Duration,
) -> (Option<i32>, String) {
    let log_dir = containerd.pod_log_dir(uid);
    let sandbox = api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: "client".into(),
            uid: uid.to_owned(),
            namespace: "virtshim-tests".into(),
            attempt: 0,
        }),
        hostname: "client".into(),
        log_directory: log_dir.to_string_lossy().into_owned(),
        linux: Some(api::LinuxPodSandboxConfig::default()),
        ..Default::default()
    };
    let pod = cri.run_pod_sandbox(sandbox.clone(), "").expect("CRI");
    let config = api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: "main".into(),
            attempt: 0,
        }),
        image: Some(virtctl::cri::image_spec(image)),
        command: command.iter().map(|c| c.to_string()).collect(),
        log_path: "main/0.log".into(),
        ..Default::default()
    };
    let id = cri.create_container(&pod, config, sandbox).expect("CRI");
    cri.start_container(&id).expect("CRI");
    let exited = vm::wait_exited(cri, &id, limit);
    let lines = virtctl::cri::log::read_log(log_dir.join("main/0.log")).expect("CRI");
    if exited.is_none() {
        let _ = cri.stop_container(&id, Duration::from_secs(1));
    }
    cri.stop_pod_sandbox(&pod).expect("CRI");
    cri.remove_pod_sandbox(&pod).expect("CRI");
    let output = lines
        .into_iter()
        .map(|l| l.text)
        .collect::<Vec<_>>()
        .join("\n");
    (exited, output)
}
