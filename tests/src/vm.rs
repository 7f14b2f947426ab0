//! What the VM tests share: the shim binary, the test guests, a private containerd that runs
//! the shim, and checks that nothing was left behind.

use crate::containerd::{Options, PrivateContainerd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use virtctl::cri::blocking::BlockingCri;
use virtctl::cri::log::LogFollower;

/// The shim's folders during tests: short paths (unix sockets live below them), shared by all
/// test containerds so QEMU's capabilities cache and the KVM probe are paid once.
pub const STATE_ROOT: &str = "/tmp/vst";

/// Images of the test guests (built by `images/guest/build.sh`).
pub const CONTAINER_DISK_IMAGE: &str = "localhost/virtshim/guest-container-disk:v1";
pub const KERNEL_BOOT_IMAGE: &str = "localhost/virtshim/guest-kernel-boot:v1";
/// The line the test guest prints when its userspace starts.
pub const READY_MARKER: &str = "VIRTSHIM-GUEST-READY";

/// The folder holding `containerd-shim-virtshim-v2`: cargo builds it (once per test process,
/// a no-op when it is fresh) into the target folder these tests run from, so a test never
/// runs a stale shim.
pub fn shim_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        cargo_build("virtshim-shim", "containerd-shim-virtshim-v2")
            .parent()
            .expect("target folder")
            .to_path_buf()
    })
    .clone()
}

/// `virtshim-installer`, built like the shim.
pub fn installer_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| cargo_build("virtshim-installer", "virtshim-installer"))
        .clone()
}

/// Builds `package` into the target folder (and profile) these tests run from; the path of
/// its binary `binary`.
fn cargo_build(package: &str, binary: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/<test> or target/<profile>/<binary> → target/<profile>
    let mut dir = exe.parent().expect("target folder").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    let target = dir.parent().expect("target root").to_path_buf();
    let mut build = Command::new(env!("CARGO"));
    build
        .args(["build", "-q", "-p", package])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(crate::repo_root());
    if dir.file_name().is_some_and(|p| p == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("cargo build");
    assert!(status.success(), "building {package} failed");
    let path = dir.join(binary);
    assert!(path.exists(), "no {binary} at {}", path.display());
    path
}

/// Builds the test guests once (cached by the build script) and gives their folder.
pub fn guest_images() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = crate::repo_root().join("target/guest-images");
        let status = Command::new("bash")
            .arg(crate::repo_root().join("images/guest/build.sh"))
            .arg(&out)
            .status()
            .expect("run images/guest/build.sh");
        assert!(status.success(), "building the test guests failed");
        out
    })
    .clone()
}

/// The real Debian cloud image (systemd, cloud-init) as a containerDisk.
pub const CLOUD_IMAGE: &str = "localhost/virtshim/debian-cloud:v1";

/// Builds the Debian cloud image (`images/cloud/build.sh`, cached) into `target/guest-images`;
/// the folder holding `debian-cloud.oci.tar`.
pub fn cloud_images() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = crate::repo_root().join("target/guest-images");
        let status = Command::new("bash")
            .arg(crate::repo_root().join("images/cloud/build.sh"))
            .arg(&out)
            .status()
            .expect("run images/cloud/build.sh");
        assert!(status.success(), "building the Debian cloud image failed");
        out
    })
    .clone()
}

/// YAML of a VMI that boots the test guest's kernel and initramfs (kernelBoot): `metadata` and
/// `devices` are flow-map bodies (`name: web, namespace: tenant`; `autoattachPodInterface:
/// false`), `kernel_args` its command line, `spec_rest` further lines of `spec` (indented two
/// spaces, each ending in a newline: volumes, networks, a grace period).
pub fn kernel_boot_vmi(
    metadata: &str,
    memory: &str,
    devices: &str,
    kernel_args: &str,
    spec_rest: &str,
) -> String {
    format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstance\nmetadata: {{{metadata}}}\nspec:\n  domain:\n    memory: {{guest: {memory}}}\n    devices: {{{devices}}}\n    firmware:\n      kernelBoot:\n        kernelArgs: {kernel_args}\n        container: {{image: '{KERNEL_BOOT_IMAGE}', kernelPath: /boot/vmlinuz, initrdPath: /boot/initrd.img}}\n{spec_rest}"
    )
}

/// A private containerd whose `virtshim` runtime is the shim under test.
pub fn containerd(test: &str) -> Option<PrivateContainerd> {
    containerd_with_lib_dir(test, &format!("{STATE_ROOT}/lib"))
}

/// The same, with the shim's disk folder (`VIRTSHIM_LIB_DIR`) somewhere else.
pub fn containerd_with_lib_dir(test: &str, lib_dir: &str) -> Option<PrivateContainerd> {
    containerd_with(test, lib_dir, shim_dir())
}

/// The same, with containerd finding the shim in `shim_dir` (first on its PATH).
pub fn containerd_with(test: &str, lib_dir: &str, shim_dir: PathBuf) -> Option<PrivateContainerd> {
    let options = Options {
        shim_dir: Some(shim_dir),
        env: vec![
            ("VIRTSHIM_RUN_DIR".into(), format!("{STATE_ROOT}/run")),
            ("VIRTSHIM_LIB_DIR".into(), lib_dir.to_owned()),
            ("VIRTSHIM_CACHE_DIR".into(), format!("{STATE_ROOT}/cache")),
            ("VIRTSHIM_LOG".into(), "debug".into()),
        ],
    };
    let containerd = PrivateContainerd::start_or_skip(test, options)?;
    let images = guest_images();
    for (file, name) in [
        ("guest-container-disk.oci.tar", CONTAINER_DISK_IMAGE),
        ("guest-kernel-boot.oci.tar", KERNEL_BOOT_IMAGE),
    ] {
        containerd
            .import_tar(&images.join(file), name)
            .expect("import test guest");
    }
    Some(containerd)
}

/// The shim's run and lib folders of one pod.
pub fn pod_dirs(sandbox_id: &str) -> [PathBuf; 2] {
    [
        PathBuf::from(STATE_ROOT)
            .join("run/p")
            .join(&sandbox_id[..16.min(sandbox_id.len())]),
        PathBuf::from(STATE_ROOT).join("lib/pods").join(sandbox_id),
    ]
}

/// QEMU processes of one pod (their command line names the pod's embedded libvirt root).
pub fn qemu_pids(sandbox_id: &str) -> Vec<u32> {
    let marker = pod_dirs(sandbox_id)[0].to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.starts_with("/usr/bin/qemu-system") && cmdline.contains(&marker) {
            out.push(pid);
        }
    }
    out
}

/// Waits until the console log shows `text`; returns how long that took, or the log so far.
pub fn wait_for_console(log: &Path, text: &str, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let mut follower = LogFollower::new(log);
    let mut seen = Vec::new();
    while started.elapsed() < timeout {
        for line in follower
            .next_lines_blocking(Duration::from_millis(200))
            .map_err(|e| e.to_string())?
        {
            let hit = line.text.contains(text);
            seen.push(line.text);
            if hit {
                return Ok(started.elapsed());
            }
        }
    }
    Err(format!(
        "no {text:?} within {timeout:?}; console:\n{}",
        seen.join("\n")
    ))
}

/// The pid the CRI reports for a container (from its verbose info).
pub fn container_pid(cri: &BlockingCri, id: &str) -> Option<u32> {
    let status = cri.container_status(id, true).ok()?;
    let info = status.info.get("info")?;
    let value: serde_json::Value = serde_json::from_str(info).ok()?;
    value["pid"].as_u64().map(|p| p as u32)
}

/// Waits until the container has exited; its exit code.
pub fn wait_exited(cri: &BlockingCri, id: &str, timeout: Duration) -> Option<i32> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Ok(response) = cri.container_status(id, false) {
            let status = response.status.unwrap_or_default();
            if status.state == virtctl::cri::api::ContainerState::ContainerExited as i32 {
                return Some(status.exit_code);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// Stops the VM through the CRI (the ACPI power button, `grace` to power off, as the kubelet
/// stops a container) and asserts that the guest powered off by itself (exit code 0).
pub fn stop_cleanly(cri: &BlockingCri, started: &virtctl::local::Started, grace: Duration) {
    cri.stop_container(started.compute_id(), grace)
        .expect("StopContainer");
    assert_eq!(
        wait_exited(cri, started.compute_id(), Duration::from_secs(30)),
        Some(0),
        "the guest did not power off by itself"
    );
}

/// Removes the VM's pod through the CRI (StopPodSandbox, RemovePodSandbox, as the kubelet does
/// for a deleted pod) and asserts that nothing of it is left.
pub fn remove_pod(cri: &BlockingCri, sandbox_id: &str) {
    cri.stop_pod_sandbox(sandbox_id).expect("StopPodSandbox");
    cri.remove_pod_sandbox(sandbox_id)
        .expect("RemovePodSandbox");
    assert_nothing_left(sandbox_id);
}

/// Imports compute's image for VMs with no containerDisk or kernel (a busybox that runs nothing).
pub fn import_placeholder(containerd: &PrivateContainerd) {
    let image = crate::oci::busybox_image(
        virtshim_api::pod::PLACEHOLDER_IMAGE,
        &["/bin/busybox", "true"],
    )
    .expect("placeholder image");
    containerd
        .import_image(&image)
        .expect("importing the placeholder");
}

/// Asserts that a removed pod left no QEMU, no pod folder and no embedded libvirt root (within
/// ten seconds: containerd cleans up after a dead shim in the background).
pub fn assert_nothing_left(sandbox_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let leftovers = || {
        let mut left: Vec<String> = qemu_pids(sandbox_id)
            .iter()
            .map(|p| format!("QEMU pid {p}"))
            .collect();
        left.extend(
            pod_dirs(sandbox_id)
                .iter()
                .filter(|d| d.exists())
                .map(|d| d.display().to_string()),
        );
        left
    };
    while !leftovers().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = leftovers();
    assert!(left.is_empty(), "pod {sandbox_id} left behind: {left:?}");
}
