//! The node side: the shim binary, containerd's process, and what the node can run.
//!
//! Run from the installer DaemonSet (privileged, `hostPID`), the installer first enters the host's
//! mount namespace, containerd's ([`enter_host_mounts`]), so every path here is the host's and host tools
//! (`systemctl`, QEMU, the installed shim) run as on the host.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The shim's file name: containerd finds it on its PATH from the runtime type.
pub const SHIM_BINARY: &str = "containerd-shim-virtshim-v2";

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("entering the host's mount namespace (needs a privileged pod with hostPID): {0}")]
    Namespace(nix::Error),
    #[error("no host mount namespace could be opened (needs a privileged pod with hostPID): {0}")]
    NoHostNamespace(String),
    #[error("no containerd of this node reads the config (none runs, or only other nodes' do)")]
    NoContainerd,
    #[error("containerd did not come back within {0:?} after the restart")]
    ContainerdDown(Duration),
    #[error("{command}: {message}")]
    Command { command: String, message: String },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> HostError {
    let context = context.into();
    move |source| HostError::Io { context, source }
}

/// Joins the host's mount namespace: that of the containerd reading `config` (the one this
/// installer configures), else PID 1's. containerd's comes first because some hosts protect
/// PID 1 so that even root cannot open its namespaces (`nsenter -t 1 -m` fails there too),
/// and because containerd's view of the files is the one that matters: it reads the config,
/// runs the shim from its PATH and hands the shim its paths. Must run before the process starts
/// a second thread (the kernel refuses `setns(CLONE_NEWNS)` to multi-threaded processes).
pub fn enter_host_mounts(config: &Path) -> Result<(), HostError> {
    let candidates: Vec<String> = containerd_pid(config)
        .map(|pid| format!("/proc/{pid}/ns/mnt"))
        .into_iter()
        .chain(std::iter::once("/proc/1/ns/mnt".to_owned()))
        .collect();
    let mut failures = Vec::new();
    for path in &candidates {
        match std::fs::File::open(path) {
            Ok(ns) => {
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNS)
                    .map_err(HostError::Namespace)?;
                return std::env::set_current_dir("/").map_err(io("changing to /"));
            }
            Err(e) => failures.push(format!("{path}: {e}")),
        }
    }
    Err(HostError::NoHostNamespace(failures.join("; ")))
}

/// Puts `shim` into `bin_dir` atomically: a running shim keeps its (old) inode, so VMs that
/// run keep running across an upgrade, and containerd never sees a half-written binary.
/// Returns whether the installed file changed.
pub fn install_shim(shim: &Path, bin_dir: &Path) -> Result<bool, HostError> {
    let target = bin_dir.join(SHIM_BINARY);
    let new = std::fs::read(shim).map_err(io(format!("reading {}", shim.display())))?;
    if std::fs::read(&target).is_ok_and(|old| old == new) {
        return Ok(false);
    }
    std::fs::create_dir_all(bin_dir).map_err(io(format!("creating {}", bin_dir.display())))?;
    let tmp = bin_dir.join(format!(".{SHIM_BINARY}.new"));
    std::fs::write(&tmp, &new).map_err(io(format!("writing {}", tmp.display())))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .map_err(io(format!("chmod {}", tmp.display())))?;
    std::fs::rename(&tmp, &target).map_err(io(format!("installing {}", target.display())))?;
    Ok(true)
}

/// Removes the shim binary (running shims keep theirs).
pub fn remove_shim(bin_dir: &Path) -> Result<bool, HostError> {
    match std::fs::remove_file(bin_dir.join(SHIM_BINARY)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(format!("removing {SHIM_BINARY}"))(e)),
    }
}

/// Writes `text` to `path` atomically, keeping the original once as `<path>.virtshim-orig`.
pub fn write_config(path: &Path, text: &str) -> Result<(), HostError> {
    let backup = PathBuf::from(format!("{}.virtshim-orig", path.display()));
    if path.exists() && !backup.exists() {
        std::fs::copy(path, &backup).map_err(io(format!("backing up {}", path.display())))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    let tmp = PathBuf::from(format!("{}.virtshim-new", path.display()));
    std::fs::write(&tmp, text).map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("writing {}", path.display())))
}

/// The pids of processes whose name is `name` (`/proc/<pid>/comm`).
pub fn pids_named(name: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .collect()
}

fn cmdline_of(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The value of `--flag VALUE`, `-f VALUE` or `--flag=VALUE` on a command line.
fn flag_value(cmdline: &[String], long: &str, short: &str) -> Option<String> {
    let mut args = cmdline.iter();
    while let Some(arg) = args.next() {
        if arg == long || arg == short {
            return args.next().cloned();
        }
        if let Some(value) = arg.strip_prefix(&format!("{long}=")) {
            return Some(value.to_owned());
        }
    }
    None
}

/// The pid of the containerd that reads `config` (`--config`, default
/// `/etc/containerd/config.toml`): a node may run more than one.
///
/// Several may read the same path, each in a mount namespace of its own: one per node, where a
/// machine hosts several nodes (the project's multi-node cluster does). The one meant is then
/// this node's: the containerd in the network namespace of the shim that runs this installer's
/// pod, or of the installer itself when run on the node directly. One that belongs elsewhere
/// is never taken, even alone: restarting another node's containerd (which would then run in
/// this node's mount namespace) is worse than finding none.
pub fn containerd_pid(config: &Path) -> Option<i32> {
    let wanted = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf());
    let readers: Vec<(i32, Option<PathBuf>)> = pids_named("containerd")
        .into_iter()
        .filter(|pid| {
            let used = flag_value(&cmdline_of(*pid), "--config", "-c")
                .unwrap_or_else(|| "/etc/containerd/config.toml".to_owned());
            std::fs::canonicalize(&used).unwrap_or_else(|_| PathBuf::from(used)) == wanted
        })
        .map(|pid| (pid, netns_of(pid)))
        .collect();
    this_nodes(&readers, node_netns().as_deref())
}

/// Of the containerds `readers` (pid, network namespace), the one on this node: in its network
/// namespace, even when it is the only one (that of another node, seen through a shared PID
/// namespace, is not this node's). Only when this node's namespace cannot be read does a
/// single reader stand for it.
fn this_nodes(readers: &[(i32, Option<PathBuf>)], node: Option<&Path>) -> Option<i32> {
    match (readers, node) {
        (_, Some(node)) => readers
            .iter()
            .find(|(_, netns)| netns.as_deref() == Some(node))
            .map(|(pid, _)| *pid),
        ([(pid, _)], None) => Some(*pid),
        (_, None) => None,
    }
}

fn netns_of(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
}

/// The network namespace of the node this process runs on: that of the nearest containerd
/// shim among its ancestors (a pod has a network of its own, its shim runs in the node's),
/// else its own.
fn node_netns() -> Option<PathBuf> {
    let own = i32::try_from(std::process::id()).ok()?;
    let mut pid = own;
    for _ in 0..64 {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.starts_with("containerd-shim") {
            return netns_of(pid);
        }
        match parent_of(pid) {
            Some(parent) if parent > 1 => pid = parent,
            _ => break,
        }
    }
    netns_of(own)
}

fn parent_of(pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Where containerd listens: `[grpc] address` in its config, `--address` on its command line,
/// else the default.
fn containerd_socket(cmdline: &[String], config_text: &str) -> PathBuf {
    let from_config = config_text
        .parse::<toml_edit::DocumentMut>()
        .ok()
        .and_then(|doc| doc.get("grpc")?.get("address")?.as_str().map(PathBuf::from));
    from_config
        .or_else(|| flag_value(cmdline, "--address", "-a").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/run/containerd/containerd.sock"))
}

/// Restarts containerd so that it reads its config again. Running VMs are not touched: their
/// shims are separate processes that containerd reconnects to.
///
/// With systemd, `systemctl restart containerd`. Without a service manager (some test hosts),
/// containerd is stopped and started again with the same command line, detached (`setsid`),
/// and put back into the cgroups it had: started from the installer's pod it would otherwise
/// live in the pod's cgroups and die with the pod.
pub fn restart_containerd(config: &Path) -> Result<(), HostError> {
    let pid = containerd_pid(config).ok_or(HostError::NoContainerd)?;
    let cmdline = cmdline_of(pid);
    let socket = containerd_socket(
        &cmdline,
        &std::fs::read_to_string(config).unwrap_or_default(),
    );
    let systemd = Path::new("/run/systemd/system").is_dir()
        && Command::new("systemctl")
            .args(["is-active", "--quiet", "containerd"])
            .status()
            .is_ok_and(|s| s.success());
    if systemd {
        run("systemctl", &["restart", "containerd"])?;
    } else {
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        // Opened before the old containerd goes: its namespaces live on through these files.
        let namespaces = host_namespaces_of(pid)?;
        let target = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM);
        let started = Instant::now();
        while nix::sys::signal::kill(target, None).is_ok()
            && started.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open("/var/log/containerd.log")
            .map_err(io("opening /var/log/containerd.log"))?;
        let err = log
            .try_clone()
            .map_err(io("opening /var/log/containerd.log"))?;
        // `setsid` without `-f` execs containerd in the child itself (a fresh child is no
        // process group leader), so the child's pid is containerd's. It is spawned from a
        // thread that joined the old containerd's network, UTS and IPC namespaces: started
        // from the installer's pod as it is, containerd would otherwise plumb every later
        // pod's network into the installer pod's namespace. (setns of these is per thread.)
        let spawn = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    for (file, flag) in namespaces {
                        nix::sched::setns(file, flag).map_err(HostError::Namespace)?;
                    }
                    Command::new("setsid")
                        .args(&cmdline)
                        .stdin(std::process::Stdio::null())
                        .stdout(log)
                        .stderr(err)
                        .spawn()
                        .map_err(io("starting containerd again (setsid)"))
                })
                .join()
        });
        let child =
            spawn.map_err(|_| HostError::NoHostNamespace("the spawning thread died".into()))??;
        // Started from the installer's pod, containerd would live in the pod's cgroups and be
        // killed with the pod; it goes back where it was before the restart.
        for failure in move_to_cgroups(child.id(), &cgroups) {
            eprintln!("containerd: {failure}");
        }
    }
    let limit = Duration::from_secs(30);
    let started = Instant::now();
    while started.elapsed() < limit {
        if std::os::unix::net::UnixStream::connect(&socket).is_ok()
            && containerd_pid(config).is_some()
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(HostError::ContainerdDown(limit))
}

/// Whether systemd manages this host (containerd then restarts as its service).
pub fn has_systemd() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Moves this process into the cgroups of the containerd reading `config`, out of its pod's.
/// The uninstall runs as the installer pod's preStop hook and restarts containerd: that ends
/// the hook's exec stream, the kubelet then kills the container's cgroups, and an installer
/// still in them would die before containerd is back, leaving the node without one.
pub fn leave_pod_cgroups(config: &Path) -> Result<(), HostError> {
    // With systemd, containerd restarts as a service and nothing of ours needs to move.
    if has_systemd() {
        return Ok(());
    }
    let pid = containerd_pid(config).ok_or(HostError::NoContainerd)?;
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map_err(io(format!("reading /proc/{pid}/cgroup")))?;
    match move_to_cgroups(std::process::id(), &cgroups).as_slice() {
        [] => Ok(()),
        failures => Err(HostError::Command {
            command: "moving the installer out of its pod's cgroups".into(),
            message: failures.join("; "),
        }),
    }
}

/// containerd's network, UTS and IPC namespaces, which the containerd started again must
/// share (the host's, whatever the installer's pod has).
fn host_namespaces_of(pid: i32) -> Result<Vec<(std::fs::File, nix::sched::CloneFlags)>, HostError> {
    use nix::sched::CloneFlags;
    [
        ("net", CloneFlags::CLONE_NEWNET),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("ipc", CloneFlags::CLONE_NEWIPC),
    ]
    .into_iter()
    .map(|(name, flag)| {
        let path = format!("/proc/{pid}/ns/{name}");
        std::fs::File::open(&path)
            .map(|f| (f, flag))
            .map_err(io(format!("opening {path}")))
    })
    .collect()
}

/// The `cgroup.procs` files of the cgroups that `/proc/<pid>/cgroup` (`cgroups`) names:
/// v1 lines (`4:memory:/path`, `1:cpu,cpuacct:/path`, `9:name=systemd:/path`) under their
/// hierarchy's mount in /sys/fs/cgroup, the v2 line (`0::/path`) under the unified mount.
fn cgroup_procs_files(cgroups: &str) -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    let unified = if base.join("cgroup.controllers").exists() {
        base.to_path_buf()
    } else {
        base.join("unified")
    };
    cgroups
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let path = path.trim_start_matches('/');
            let dir = match controllers {
                "" => unified.join(path),
                c => base.join(c.strip_prefix("name=").unwrap_or(c)).join(path),
            };
            Some(dir.join("cgroup.procs"))
        })
        .collect()
}

/// Moves `pid` into the cgroups `/proc/<pid>/cgroup` text `cgroups` names; returns what failed
/// (a hierarchy this node does not mount, say), which the caller reports and survives.
fn move_to_cgroups(pid: u32, cgroups: &str) -> Vec<String> {
    cgroup_procs_files(cgroups)
        .into_iter()
        .filter(|procs| procs.exists())
        .filter_map(|procs| {
            std::fs::write(&procs, pid.to_string())
                .err()
                .map(|e| format!("moving pid {pid} into {}: {e}", procs.display()))
        })
        .collect()
}

fn run(program: &str, args: &[&str]) -> Result<String, HostError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| HostError::Command {
            command: command.clone(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(HostError::Command {
            command,
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// What the node can run VMs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// `qemu-system-x86_64 --version`'s first line, or why it is missing.
    pub qemu: Result<String, String>,
    /// The installed shim runs (it links libvirt: a missing libvirt fails here).
    pub shim: Result<String, String>,
    /// libvirt's embedded QEMU driver opens as the shim opens it for every VM
    /// (`--check-node`): its driver module and the QEMU user it needs are there.
    pub libvirt: Result<String, String>,
    /// `kvm` or `tcg`, as the shim probes it for VMs (a `/dev/kvm` that exists is not enough).
    pub accel: Result<String, String>,
}

impl NodeReport {
    pub fn ready(&self) -> bool {
        self.qemu.is_ok() && self.shim.is_ok() && self.libvirt.is_ok() && self.accel.is_ok()
    }
}

/// The user and group Debian's libvirt resolves for QEMU as root, before it reads the config
/// virtshim gives it; only Debian's `libvirt-daemon-system` (a daemon virtshim does not need)
/// creates them.
pub const LIBVIRT_QEMU_USER: &str = "libvirt-qemu";

/// Creates libvirt's QEMU user and group on the node when they are missing; returns whether
/// it created anything.
pub fn ensure_libvirt_qemu_user() -> Result<bool, HostError> {
    let exists = |db: &str| {
        Command::new("getent")
            .args([db, LIBVIRT_QEMU_USER])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let mut created = false;
    if !exists("group") {
        run("groupadd", &["--system", LIBVIRT_QEMU_USER])?;
        created = true;
    }
    if !exists("passwd") {
        run(
            "useradd",
            &[
                "--system",
                "--gid",
                LIBVIRT_QEMU_USER,
                "--no-create-home",
                "--home-dir",
                "/var/lib/libvirt",
                "--shell",
                "/usr/sbin/nologin",
                LIBVIRT_QEMU_USER,
            ],
        )?;
        created = true;
    }
    Ok(created)
}

/// Checks QEMU, libvirt (through the shim) and the accelerator.
pub fn check(bin_dir: &Path) -> NodeReport {
    let shim = bin_dir.join(SHIM_BINARY);
    let shim_str = shim.to_string_lossy().into_owned();
    let first_line = |r: Result<String, HostError>| {
        r.map(|s| s.lines().next().unwrap_or("").to_owned())
            .map_err(|e| e.to_string())
    };
    let qemu = first_line(run("qemu-system-x86_64", &["--version"]))
        .map_err(|e| format!("{e} (install qemu-system-x86)"));
    let shim_version = first_line(run(&shim_str, &["--version"])).map_err(|e| {
        format!("{e} (libvirt's QEMU driver missing? install libvirt-daemon-driver-qemu)")
    });
    let libvirt = if shim_version.is_ok() {
        first_line(run(&shim_str, &["--check-node"]))
    } else {
        Err("not checked: the shim cannot run".to_owned())
    };
    let accel = if shim_version.is_ok() && qemu.is_ok() {
        first_line(run(&shim_str, &["--probe-accel"]))
    } else {
        Err("not probed: QEMU or the shim cannot run".to_owned())
    };
    NodeReport {
        qemu,
        shim: shim_version,
        libvirt,
        accel,
    }
}

/// Waits (up to `limit`) until no virtshim shim runs on the node: their VMs' pods are being
/// stopped by the kubelet with their grace periods. Returns how many still run. Only this
/// node's count (shims run in their containerd's network namespace): a machine may host
/// several nodes.
pub fn wait_for_shims(limit: Duration) -> usize {
    let started = Instant::now();
    let node = node_netns();
    loop {
        // A process's name is cut to 15 characters: every shim shows "containerd-shim".
        let running = pids_named("containerd-shim")
            .iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(SHIM_BINARY))
                    && (node.is_none() || netns_of(**pid) == node)
            })
            .count();
        if running == 0 || started.elapsed() >= limit {
            return running;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_shim_is_replaced_atomically_and_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("shim-v1");
        std::fs::write(&src, b"v1").unwrap();
        let bin = dir.path().join("bin");
        assert!(install_shim(&src, &bin).unwrap());
        assert!(!install_shim(&src, &bin).unwrap());
        // A file opened before the upgrade (a running shim's binary) keeps its content.
        let before = std::fs::File::open(bin.join(SHIM_BINARY)).unwrap();
        std::fs::write(&src, b"v2").unwrap();
        assert!(install_shim(&src, &bin).unwrap());
        let mut old = String::new();
        std::io::Read::read_to_string(&mut &before, &mut old).unwrap();
        assert_eq!(old, "v1");
        assert_eq!(std::fs::read(bin.join(SHIM_BINARY)).unwrap(), b"v2");
        assert!(remove_shim(&bin).unwrap());
        assert!(!remove_shim(&bin).unwrap());
        assert_eq!(
            std::fs::read_dir(&bin).unwrap().count(),
            0,
            "no temporary file left"
        );
    }

    #[test]
    fn cgroup_lines_name_their_procs_files() {
        let files = super::cgroup_procs_files(
            "9:name=systemd:/\n4:memory:/pods/x\n1:cpu,cpuacct:/pods/x\n0::/pods/x\n",
        );
        let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        assert_eq!(files[0], "/sys/fs/cgroup/systemd/cgroup.procs");
        assert_eq!(files[1], "/sys/fs/cgroup/memory/pods/x/cgroup.procs");
        assert_eq!(files[2], "/sys/fs/cgroup/cpu,cpuacct/pods/x/cgroup.procs");
        assert!(files[3].ends_with("/pods/x/cgroup.procs"), "{}", files[3]);
    }

    #[test]
    fn config_writes_keep_the_original_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "original").unwrap();
        write_config(&config, "one").unwrap();
        write_config(&config, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&config).unwrap(), "two");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("config.toml.virtshim-orig")).unwrap(),
            "original"
        );
    }

    #[test]
    fn the_containerd_meant_is_this_nodes() {
        let ns = |n: &str| Some(PathBuf::from(format!("net:[{n}]")));
        let one = [(10, ns("1"))];
        assert_eq!(this_nodes(&one, ns("1").as_deref()), Some(10));
        assert_eq!(
            this_nodes(&one, ns("2").as_deref()),
            None,
            "the only one, but another node's"
        );
        assert_eq!(
            this_nodes(&one, None),
            Some(10),
            "nothing to tell them apart"
        );
        let three = [(10, ns("1")), (20, ns("2")), (30, ns("3"))];
        assert_eq!(this_nodes(&three, ns("2").as_deref()), Some(20));
        assert_eq!(
            this_nodes(&three, ns("9").as_deref()),
            None,
            "all elsewhere"
        );
        assert_eq!(this_nodes(&three, None), None);
        assert_eq!(this_nodes(&[], ns("1").as_deref()), None);
    }

    #[test]
    fn the_socket_comes_from_the_config_or_the_command_line() {
        let cmd = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            containerd_socket(&cmd("containerd --config c.toml --address /tmp/x.sock"), ""),
            Path::new("/tmp/x.sock")
        );
        assert_eq!(
            containerd_socket(
                &cmd("containerd --config c.toml"),
                "version = 2\n[grpc]\naddress = \"/tmp/y.sock\"\n"
            ),
            Path::new("/tmp/y.sock")
        );
        assert_eq!(
            containerd_socket(&cmd("/usr/bin/containerd"), ""),
            Path::new("/run/containerd/containerd.sock")
        );
        assert_eq!(
            flag_value(&cmd("containerd --config=/a.toml"), "--config", "-c").as_deref(),
            Some("/a.toml")
        );
        assert_eq!(
            flag_value(&cmd("containerd -c /b.toml"), "--config", "-c").as_deref(),
            Some("/b.toml")
        );
    }
}
