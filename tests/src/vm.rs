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

/// `virtctl`, built like the shim.
pub fn virtctl_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| cargo_build("virtctl", "virtctl"))
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
    let mut build = cargo_command();
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

/// `cargo` for a nested build: the cargo that built these tests, pinned to the toolchain of
/// that build. Every nested cargo in tests/ goes through here.
///
/// Run outside cargo (`virtshim-bench` from `make bench`), a cargo child would call rustup's
/// `rustc` proxy from each dependency's folder, and a dependency that ships its own
/// `rust-toolchain.toml` (ttrpc 0.9.0 names 1.81.0) would ask for a toolchain that is not
/// installed. `RUSTUP_TOOLCHAIN` overrides those files.
pub fn cargo_command() -> Command {
    let mut cargo = Command::new(env!("CARGO"));
    if let Some(toolchain) = rust_toolchain() {
        cargo.env("RUSTUP_TOOLCHAIN", toolchain);
    }
    cargo
}

/// The rustup toolchain these tests were built with: `RUSTUP_TOOLCHAIN` of the build (rustup
/// sets it for cargo), else the toolchain folder holding that cargo
/// (`…/toolchains/<name>/bin/cargo`), else the version of the `rustc` beside it. `None` when
/// cargo is not rustup's (nothing to pin).
pub fn rust_toolchain() -> Option<String> {
    if let Some(t) = option_env!("RUSTUP_TOOLCHAIN").filter(|t| !t.is_empty()) {
        return Some(t.to_owned());
    }
    if let Ok(t) = std::env::var("RUSTUP_TOOLCHAIN") {
        if !t.is_empty() {
            return Some(t);
        }
    }
    let cargo = Path::new(env!("CARGO"));
    let bin = cargo.parent()?;
    let toolchain_dir = bin.parent()?;
    if toolchain_dir
        .parent()
        .is_some_and(|p| p.file_name().is_some_and(|n| n == "toolchains"))
    {
        return toolchain_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
    }
    // Not under rustup's toolchains folder: the version of the rustc beside this cargo
    // ("rustc 1.95.0 (…)"), when there is one; rustup accepts it as a toolchain name.
    let out = Command::new(bin.join("rustc"))
        .arg("--version")
        .output()
        .ok()?;
    let version = String::from_utf8_lossy(&out.stdout);
    version.split_whitespace().nth(1).map(str::to_owned)
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

/// The same, with more variables in containerd's (and so the shim's) environment.
pub fn containerd_with_env(test: &str, env: &[(&str, &str)]) -> Option<PrivateContainerd> {
    containerd_with_options(test, &format!("{STATE_ROOT}/lib"), shim_dir(), env)
}

/// The same, with containerd finding the shim in `shim_dir` (first on its PATH).
pub fn containerd_with(test: &str, lib_dir: &str, shim_dir: PathBuf) -> Option<PrivateContainerd> {
    containerd_with_options(test, lib_dir, shim_dir, &[])
}

fn containerd_with_options(
    test: &str,
    lib_dir: &str,
    shim_dir: PathBuf,
    extra_env: &[(&str, &str)],
) -> Option<PrivateContainerd> {
    let mut options = Options {
        shim_dir: Some(shim_dir),
        env: vec![
            ("VIRTSHIM_RUN_DIR".into(), format!("{STATE_ROOT}/run")),
            ("VIRTSHIM_LIB_DIR".into(), lib_dir.to_owned()),
            ("VIRTSHIM_CACHE_DIR".into(), format!("{STATE_ROOT}/cache")),
            ("VIRTSHIM_LOG".into(), "debug".into()),
        ],
    };
    options.env.extend(
        extra_env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
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
    qemu_pids_where(|cmdline| cmdline.contains(&marker))
}

/// The QEMU processes on this machine whose command line (arguments joined by NULs) `matches`,
/// in pid order.
pub fn qemu_pids_where(matches: impl Fn(&str) -> bool) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        let program = cmdline.split('\0').next().unwrap_or("");
        if program.contains("qemu-system") && matches(&cmdline) {
            out.push(pid);
        }
    }
    out.sort();
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
/// for a deleted pod), then its local volume folders and bind mounts (as `virtctl local rm`
/// does), and asserts that nothing of it is left.
pub fn remove_pod(cri: &BlockingCri, sandbox_id: &str) {
    let uid = cri
        .pod_sandbox_status(sandbox_id, false)
        .ok()
        .and_then(|s| s.status)
        .and_then(|s| s.metadata)
        .map(|m| m.uid);
    cri.stop_pod_sandbox(sandbox_id).expect("StopPodSandbox");
    cri.remove_pod_sandbox(sandbox_id)
        .expect("RemovePodSandbox");
    if let Some(uid) = uid.filter(|u| !u.is_empty()) {
        virtctl::local::remove_pod_volumes(&uid);
        assert!(
            !virtctl::local::pod_volumes_dir(&uid).exists(),
            "the pod's local volume folder is left"
        );
    }
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

/// QEMU's confinement, as its `/proc/<pid>/status` shows it: its own non-root user and group,
/// no capability in any set, `no_new_privs`, and a seccomp filter (mode 2); and every file it
/// holds open is its pod's own (or a device). Returns its uid.
pub fn assert_confined(pid: u32, sandbox_id: &str) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("expected QEMU's status (pid {pid}): {e}"));
    let field = |name: &str| -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in QEMU's status:\n{status}"))
            .trim()
            .to_owned()
    };
    let ids = |name: &str| -> Vec<u32> {
        field(name)
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect()
    };
    let uids = ids("Uid");
    let gids = ids("Gid");
    assert!(
        uids.iter().all(|u| *u != 0 && *u == uids[0]),
        "QEMU runs as root (Uid: {uids:?})"
    );
    assert!(
        gids.iter().all(|g| *g != 0),
        "QEMU's group is root (Gid: {gids:?})"
    );
    for caps in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(field(caps), "0000000000000000", "QEMU's {caps}");
    }
    assert_eq!(field("NoNewPrivs"), "1", "QEMU's NoNewPrivs");
    assert_eq!(field("Seccomp"), "2", "QEMU's seccomp mode (2: a filter)");
    let own = pod_dirs(sandbox_id);
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("QEMU's open files")
        .flatten()
    {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        if target.is_absolute() {
            assert!(
                own.iter().any(|d| target.starts_with(d)) || target.starts_with("/dev/"),
                "QEMU holds {} open, outside its pod's folders {own:?}",
                target.display()
            );
        }
    }
    println!(
        "QEMU pid {pid}: Uid {} Gid {} CapEff {} NoNewPrivs {} Seccomp {}",
        uids[0],
        gids[0],
        field("CapEff"),
        field("NoNewPrivs"),
        field("Seccomp")
    );
    uids[0]
}

/// The CRI config of a plan's compute container (the pod's last), as the kubelet would send it.
pub fn compute_config(
    plan: &virtctl::local::Plan,
) -> Result<virtctl::cri::api::ContainerConfig, String> {
    let compute = plan
        .pod
        .spec
        .as_ref()
        .and_then(|spec| spec.containers.last())
        .ok_or("the pod has no containers")?;
    virtctl::local::container_config(plan, compute).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value `cmd` sets for `RUSTUP_TOOLCHAIN`, if it sets one.
    fn pinned(cmd: &Command) -> Option<String> {
        cmd.get_envs()
            .find(|(k, _)| *k == "RUSTUP_TOOLCHAIN")
            .and_then(|(_, v)| v)
            .map(|v| v.to_string_lossy().into_owned())
    }

    /// Whether the cargo that built these tests is rustup's (then every nested cargo must be
    /// pinned).
    fn under_rustup() -> bool {
        option_env!("RUSTUP_TOOLCHAIN").is_some() || env!("CARGO").contains("/toolchains/")
    }

    #[test]
    fn nested_cargo_is_pinned_to_this_toolchain() {
        let cargo = cargo_command();
        assert_eq!(cargo.get_program(), env!("CARGO"));
        assert_eq!(pinned(&cargo), rust_toolchain());
        if under_rustup() {
            assert!(
                pinned(&cargo).is_some(),
                "a nested cargo under rustup must get RUSTUP_TOOLCHAIN"
            );
        }
    }

    /// The bug `make bench` hit: a crate carrying a `rust-toolchain.toml` that names a toolchain
    /// that is not there (ttrpc 0.9.0 names 1.81.0). This one names a folder that does not exist,
    /// so rustup never tries to download anything.
    #[test]
    fn nested_cargo_ignores_a_crate_toolchain_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir(root.join("src")).unwrap();
        std::fs::write(
            root.join("Cargo.toml"),
            "[package]\nname = \"pinned\"\nversion = \"0.1.0\"\nedition = \"2021\"\n[workspace]\n",
        )
        .unwrap();
        std::fs::write(root.join("src/lib.rs"), "").unwrap();
        std::fs::write(
            root.join("rust-toolchain.toml"),
            "[toolchain]\npath = \"/nonexistent/virtshim-missing-toolchain\"\n",
        )
        .unwrap();
        let build = |mut cargo: Command| {
            cargo
                .args(["build", "--offline", "-q"])
                .current_dir(root)
                .env("CARGO_TARGET_DIR", root.join("target"))
                .output()
                .expect("cargo runs")
        };
        let ours = build(cargo_command());
        assert!(
            ours.status.success(),
            "nested cargo failed: {}",
            String::from_utf8_lossy(&ours.stderr)
        );
        if under_rustup() {
            // The same cargo unpinned, as `virtshim-bench` ran it outside cargo: rustup's
            // rustc proxy obeys the crate's file and fails. Proves the set-up shows the bug.
            let mut bare = Command::new(cargo_command().get_program());
            bare.env_remove("RUSTUP_TOOLCHAIN");
            let bare = build(bare);
            assert!(
                !bare.status.success(),
                "an unpinned cargo built a crate pinned to a missing toolchain"
            );
        }
    }

    /// No nested cargo in tests/ bypasses [`cargo_command`].
    #[test]
    fn every_nested_cargo_uses_the_helper() {
        let tests = crate::repo_root().join("tests");
        // Spelled in pieces so this test does not find itself.
        let direct = ["Command::new(", "env!(\"CARGO\")"].concat();
        let by_var = ["var(", "\"CARGO\")"].concat();
        let by_name = ["Command::new(", "\"cargo\")"].concat();
        let mut offenders = Vec::new();
        let mut files = Vec::new();
        for sub in ["src", "src/bin", "tests"] {
            for entry in std::fs::read_dir(tests.join(sub)).unwrap().flatten() {
                if entry.path().extension().is_some_and(|e| e == "rs") {
                    files.push(entry.path());
                }
            }
        }
        assert!(files.len() > 10, "found only {files:?}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let allowed = usize::from(file.ends_with("src/vm.rs"));
            if text.matches(&direct).count() > allowed
                || text.contains(&by_var)
                || text.contains(&by_name)
            {
                offenders.push(file.display().to_string());
            }
        }
        assert!(
            offenders.is_empty(),
            "nested cargo without vm::cargo_command(): {offenders:?}"
        );
    }
}
