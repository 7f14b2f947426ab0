//! A containerd of the tests' own: started for a test, torn down after it, sharing nothing with
//! a system containerd that may be running on the same machine.
//!
//! Tests prove virtshim through the same path the kubelet uses (CRI → containerd → shim), so
//! they need a real containerd with the CRI plugin. CI starts from a clean machine with no
//! daemon running, and a developer's machine may run its own containerd, so each
//! [`PrivateContainerd`] has its own config, root, state, sockets, runc root and CNI
//! configuration (bridge [`BRIDGE`] on [`SUBNET`], never the cluster harness's `xk0`), and
//! on drop stops every pod through the CRI, kills containerd and removes what it made.
//!
//! Several instances may run at once (tests in parallel, two `cargo test`s): they share the
//! bridge and the IPAM store under `/run/virtshim-tests`, and a file lock decides which one
//! deletes the bridge at the end. Instances left by a test process that was killed are reaped by
//! the next `start`.

use crate::oci::{self, OciImage};
use rustix::fs::FlockOperation;
use rustix::process::{Pid, Signal};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use virtctl::cri::blocking::BlockingCri;

/// The Linux bridge the private containerds' pods are attached to.
pub const BRIDGE: &str = "vshim0";
/// The pods' addresses; the bridge is the gateway, `10.77.0.1`.
pub const SUBNET: &str = "10.77.0.0/24";
/// The CNI network's name (also the IPAM store's folder name).
pub const NETWORK: &str = "virtshim-tests";
/// The pause image every private containerd uses as its `sandbox_image`, built from
/// busybox-static and imported by [`PrivateContainerd::start`].
pub const PAUSE_IMAGE: &str = "localhost/virtshim/pause:1";
/// The CRI runtime handler that runs pods with virtshim's shim.
pub const VIRTSHIM_HANDLER: &str = "virtshim";
/// containerd's CRI namespace.
pub const K8S_NAMESPACE: &str = "k8s.io";

/// Where Debian's containernetworking-plugins are.
const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// State shared between instances: the bridge lock and marker, the IPAM store.
const SHARED_DIR: &str = "/run/virtshim-tests";
/// Private instances' folders are `/tmp/virtshim-ctrd-XXXXXX`: short, because the sockets
/// inside must fit a unix socket address (108 bytes).
const DIR_PARENT: &str = "/tmp";
const DIR_PREFIX: &str = "virtshim-ctrd-";
/// Written into each instance's folder: the test process's pid and containerd's, so that a
/// later `start` can reap an instance whose test process died.
const OWNER_FILE: &str = "owner";
/// PATH entries containerd and its shims need even when the test's PATH lacks them (runc is in
/// /usr/sbin).
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long containerd may take to answer the CRI (it loads every plugin first).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long containerd may take to exit on SIGTERM before it gets SIGKILL.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shims may take to exit once their pod is removed.
const SHIM_EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The deadline for each CRI call the harness makes itself.
const RPC_TIMEOUT: Duration = Duration::from_secs(60);
/// The same when reaping an instance left by a dead test: that containerd may be unwell, and
/// every test start waits for the reaping.
const REAP_RPC_TIMEOUT: Duration = Duration::from_secs(15);

/// What can go wrong starting or stopping a private containerd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("containerd exited during startup ({status}); its log ends with:\n{log}")]
    Exited { status: ExitStatus, log: String },
    #[error("containerd's CRI was not ready within {after:?} ({last}); its log ends with:\n{log}")]
    NotReady {
        after: Duration,
        last: String,
        log: String,
    },
    #[error("ctr images import {} failed: {stderr}", tar.display())]
    Import { tar: PathBuf, stderr: String },
    #[error("image {image} was imported but the CRI does not list it within {after:?}")]
    ImageNotListed { image: String, after: Duration },
    #[error(transparent)]
    Image(#[from] oci::Error),
    #[error(transparent)]
    Cri(#[from] virtctl::cri::Error),
    /// Teardown finished but had to force things, or could not remove them.
    #[error("teardown was not clean: {}", .0.join("; "))]
    Leftovers(Vec<String>),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// How to start a [`PrivateContainerd`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A folder put first on containerd's PATH: where it finds `containerd-shim-virtshim-v2`
    /// (usually the cargo target folder the shim was built into).
    pub shim_dir: Option<PathBuf>,
    /// Extra environment for containerd, which its shims inherit (the virtshim shim's folders).
    pub env: Vec<(String, String)>,
}

impl Options {
    /// Options with `dir` first on containerd's PATH.
    pub fn with_shim_dir(dir: impl Into<PathBuf>) -> Self {
        Options {
            shim_dir: Some(dir.into()),
            env: Vec::new(),
        }
    }
}

/// The files and folders of one instance, all under its temp folder.
#[derive(Debug, Clone)]
struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }
    fn ttrpc_socket(&self) -> PathBuf {
        self.dir.join("containerd.sock.ttrpc")
    }
    fn cni_conf_dir(&self) -> PathBuf {
        self.dir.join("cni")
    }
    fn log(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }
    fn pods(&self) -> PathBuf {
        self.dir.join("pods")
    }
    fn images(&self) -> PathBuf {
        self.dir.join("images")
    }
    fn opt(&self) -> PathBuf {
        self.dir.join("opt")
    }
    /// runc's state: the runc shim adds the namespace (`…/runc/k8s.io`).
    fn runc_root(&self) -> PathBuf {
        self.dir.join("runc")
    }
}

/// A running private containerd. Dropping it tears everything down; [`stop`](Self::stop) does
/// the same and says whether it was clean.
#[derive(Debug)]
pub struct PrivateContainerd {
    layout: Layout,
    /// Removes the folder when dropped (after teardown unmounted what was inside).
    dir: Option<tempfile::TempDir>,
    child: Option<Child>,
    snapshotter: &'static str,
    bridge: Option<BridgeClaim>,
    torn_down: bool,
    /// How it was started, to start it again the same way in [`restart`](Self::restart).
    options: Options,
}

impl PrivateContainerd {
    /// Why a private containerd cannot run on this machine, or `None` when it can.
    pub fn unavailable() -> Option<String> {
        if !rustix::process::geteuid().is_root() {
            return Some(
                "not root: a private containerd needs root (mounts, network namespaces, cgroups)"
                    .to_string(),
            );
        }
        let path = search_path(None);
        for program in ["containerd", "ctr", "runc", "containerd-shim-runc-v2"] {
            if find_program(program, &path).is_none() {
                return Some(format!(
                    "`{program}` is not installed (`make deps` installs containerd and runc)"
                ));
            }
        }
        for plugin in ["bridge", "host-local", "loopback"] {
            if !Path::new(CNI_BIN_DIR).join(plugin).exists() {
                return Some(format!(
                    "CNI plugin {CNI_BIN_DIR}/{plugin} is missing (`make deps` installs \
                     containernetworking-plugins)"
                ));
            }
        }
        if !Path::new(oci::HOST_BUSYBOX).exists() {
            return Some(format!(
                "{} is missing (`make deps` installs busybox-static)",
                oci::HOST_BUSYBOX
            ));
        }
        None
    }

    /// Starts one for `test`, or says why it cannot and gives `None` so the test can return.
    /// In CI (`CI` set) a missing prerequisite is a failure, not a skip: CI installs them all,
    /// and a skipped proof must never pass for a passed one. A start that fails on a machine
    /// that has everything panics with containerd's log.
    pub fn start_or_skip(test: &str, options: Options) -> Option<Self> {
        if let Some(why) = Self::unavailable() {
            if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
                panic!("{test} cannot run in CI: {why}");
            }
            crate::skip(test, &why);
            return None;
        }
        match Self::start(options) {
            Ok(containerd) => Some(containerd),
            Err(e) => panic!("{test}: cannot start a private containerd: {e}"),
        }
    }

    /// Starts a private containerd, waits until its CRI answers with runtime and network
    /// ready, and imports the pause image.
    pub fn start(options: Options) -> Result<Self, Error> {
        reap_stale();
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir_in(DIR_PARENT)
            .map_err(io_error(format!("cannot make a folder in {DIR_PARENT}")))?;
        let layout = Layout {
            dir: dir.path().to_path_buf(),
        };
        write_owner(&layout, None)?;
        for folder in [
            layout.root(),
            layout.state(),
            layout.cni_conf_dir(),
            layout.pods(),
            layout.images(),
            layout.opt(),
            layout.runc_root(),
        ] {
            std::fs::create_dir_all(&folder)
                .map_err(io_error(format!("cannot make {}", folder.display())))?;
        }
        let snapshotter = snapshotter(&layout.root());
        let bridge = BridgeClaim::claim()?;
        let mut containerd = PrivateContainerd {
            layout,
            dir: Some(dir),
            child: None,
            snapshotter,
            bridge: Some(bridge),
            torn_down: false,
            options: options.clone(),
        };
        containerd.write_configs()?;
        containerd.spawn(&options)?;
        containerd.wait_ready()?;
        let pause = oci::busybox_image(PAUSE_IMAGE, &["/bin/busybox", "sleep", "infinity"])?;
        containerd.import_image(&pause)?;
        Ok(containerd)
    }

    /// containerd's gRPC socket, where the CRI is.
    /// The containerd task state of container `id` (`ctr tasks ls`: RUNNING, PAUSED, STOPPED),
    /// empty when there is no task.
    pub fn task_status(&self, id: &str) -> String {
        let out = Command::new("ctr")
            .env("PATH", search_path(None))
            .arg("--address")
            .arg(self.socket())
            .args(["-n", K8S_NAMESPACE, "tasks", "ls"])
            .output();
        let Ok(out) = out else {
            return String::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with(id))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or("")
            .to_owned()
    }

    /// Its config.toml (what a node installer edits).
    pub fn config_file(&self) -> PathBuf {
        self.layout.config()
    }

    pub fn socket(&self) -> PathBuf {
        self.layout.socket()
    }

    /// The instance's folder (config, root, state, logs).
    pub fn dir(&self) -> &Path {
        &self.layout.dir
    }

    /// The snapshotter in use: `overlayfs`, or `native` where overlay mounts fail.
    pub fn snapshotter(&self) -> &'static str {
        self.snapshotter
    }

    /// A folder for a pod's logs (its `log_directory`), inside the instance's folder.
    pub fn pod_log_dir(&self, pod: &str) -> PathBuf {
        self.layout.pods().join(pod)
    }

    /// A blocking CRI client for this containerd, with a deadline on every call. Do not use it
    /// from inside an async task; connect a [`virtctl::cri::Cri`] to [`socket`](Self::socket)
    /// there.
    pub fn cri(&self) -> Result<BlockingCri, Error> {
        Ok(BlockingCri::connect(self.socket())?.with_timeout(RPC_TIMEOUT))
    }

    /// The last lines of containerd's log, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.layout.log(), 40)
    }

    /// Imports an OCI image tarball into the CRI's namespace, unpacked for this instance's
    /// snapshotter, and waits until the CRI lists `image` (its name inside the tarball).
    pub fn import_tar(&self, tar: &Path, image: &str) -> Result<(), Error> {
        let output = Command::new("ctr")
            .env("PATH", search_path(None))
            .arg("--address")
            .arg(self.socket())
            .args(["--namespace", K8S_NAMESPACE, "images", "import"])
            .args(["--snapshotter", self.snapshotter])
            .arg(tar)
            .output()
            .map_err(|source| Error::Spawn {
                program: "ctr",
                source,
            })?;
        if !output.status.success() {
            return Err(Error::Import {
                tar: tar.to_path_buf(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        // The CRI learns of images from containerd's events: give it a moment. On a thread of
        // its own, like everything the harness does through the blocking client, so that
        // async tests can call this.
        const LISTED_WITHIN: Duration = Duration::from_secs(10);
        let socket = self.socket();
        let listed = on_own_thread(|| -> Result<bool, virtctl::cri::Error> {
            let cri = BlockingCri::connect(&socket)?.with_timeout(RPC_TIMEOUT);
            Ok(wait_for(LISTED_WITHIN, || {
                matches!(cri.image_status(image), Ok(Some(_)))
            }))
        });
        match listed {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) | Err(_) => Err(Error::ImageNotListed {
                image: image.to_string(),
                after: LISTED_WITHIN,
            }),
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// Writes `image` as a tarball in the instance's folder and imports it.
    pub fn import_image(&self, image: &OciImage) -> Result<(), Error> {
        let file_name: String = image
            .name()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let tar = self.layout.images().join(format!("{file_name}.tar"));
        image.write_tar(&tar)?;
        self.import_tar(&tar, image.name())
    }

    /// The pids of the shims this containerd started that are still running.
    pub fn shim_pids(&self) -> Vec<i32> {
        shims_of(&self.socket())
    }

    /// Stops every pod, containerd and its leftovers, and removes the folder; an error lists
    /// what had to be forced or could not be removed.
    pub fn stop(mut self) -> Result<(), Error> {
        let problems = self.teardown();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Leftovers(problems))
        }
    }

    fn write_configs(&self) -> Result<(), Error> {
        let cni = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": NETWORK,
            "plugins": [{
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                // No masquerading: test pods talk only to the host and to each other, and NAT
                // rules would be iptables state to clean up.
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": SUBNET }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    // Shared by every instance: they share the bridge, so they must share
                    // the address pool too (host-local locks it).
                    "dataDir": Path::new(SHARED_DIR).join("ipam"),
                },
            }],
        });
        let cni_file = self
            .layout
            .cni_conf_dir()
            .join("10-virtshim-tests.conflist");
        let cni = serde_json::to_string_pretty(&cni).unwrap_or_default();
        std::fs::write(&cni_file, cni)
            .map_err(io_error(format!("cannot write {}", cni_file.display())))?;
        let config = config_toml(&self.layout, self.snapshotter);
        std::fs::write(self.layout.config(), config).map_err(io_error(format!(
            "cannot write {}",
            self.layout.config().display()
        )))
    }

    fn spawn(&mut self, options: &Options) -> Result<(), Error> {
        // Appended to, so a restart keeps what the first run logged.
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.layout.log())
            .map_err(io_error(format!(
                "cannot create {}",
                self.layout.log().display()
            )))?;
        let log_err = log
            .try_clone()
            .map_err(io_error("cannot duplicate the log file"))?;
        // A process group of its own: Ctrl-C on the tests must not stop containerd with its pods
        // still there (then nobody could remove them through the CRI); a `drop` or the next
        // start's reaping does.
        let child = Command::new("containerd")
            .process_group(0)
            .arg("--config")
            .arg(self.layout.config())
            .env("PATH", search_path(options.shim_dir.as_deref()))
            .envs(options.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: "containerd",
                source,
            })?;
        let pid = child.id();
        self.child = Some(child);
        write_owner(&self.layout, Some(pid))
    }

    /// Stops containerd (SIGTERM, as a service manager would) and starts it again with the same
    /// configuration, leaving its shims — and so their pods — running, as on a node where
    /// containerd is restarted or upgraded.
    pub fn restart(&mut self) -> Result<(), Error> {
        if let Some(mut child) = self.child.take() {
            let pid = rustix::process::Pid::from_raw(child.id() as i32);
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let options = self.options.clone();
        self.spawn(&options)?;
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), Error> {
        let socket = self.socket();
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::from("no answer yet");
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(Error::Exited {
                        status,
                        log: self.log_tail(),
                    });
                }
            }
            if socket.exists() {
                let probe = on_own_thread(|| -> Result<Vec<String>, virtctl::cri::Error> {
                    let cri = BlockingCri::connect(&socket)?.with_timeout(RPC_TIMEOUT);
                    let status = cri.status(false)?;
                    let conditions = status.status.map(|s| s.conditions).unwrap_or_default();
                    Ok(["RuntimeReady", "NetworkReady"]
                        .into_iter()
                        .filter(|want| !conditions.iter().any(|c| c.r#type == *want && c.status))
                        .map(|c| format!("{c} is false"))
                        .collect())
                });
                match probe {
                    Ok(Ok(not_ready)) if not_ready.is_empty() => return Ok(()),
                    Ok(Ok(not_ready)) => last = not_ready.join(", "),
                    Ok(Err(e)) => last = e.to_string(),
                    Err(panic) => last = panic,
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    after: START_TIMEOUT,
                    last,
                    log: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Everything `stop` and `drop` do; gives what was not clean.
    fn teardown(&mut self) -> Vec<String> {
        if self.torn_down {
            return Vec::new();
        }
        self.torn_down = true;
        let mut problems = Vec::new();
        let socket = self.socket();
        let mut netns = Vec::new();

        let alive = match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                problems.push(format!("containerd had already exited ({status})"));
                false
            }
            Some(Err(e)) => {
                problems.push(format!("cannot query containerd's state: {e}"));
                false
            }
            None => false,
        };
        if alive {
            match on_own_thread(|| remove_all_pods(&socket, RPC_TIMEOUT)) {
                Ok(Ok(outcome)) => {
                    problems.extend(outcome.problems);
                    netns = outcome.netns;
                }
                Ok(Err(e)) => problems.push(format!("cannot remove the pods: {e}")),
                Err(panic) => problems.push(format!("removing the pods panicked: {panic}")),
            }
            wait_for(SHIM_EXIT_TIMEOUT, || shims_of(&socket).is_empty());
        }
        if let Some(child) = self.child.take() {
            problems.extend(stop_child(child));
        }
        problems.extend(kill_leftovers(&self.layout));
        problems.extend(unmount_under(&self.layout.dir));
        for path in netns {
            if path.exists() {
                problems.push(format!("network namespace {} was left", path.display()));
                let _ = rustix::mount::unmount(&path, rustix::mount::UnmountFlags::DETACH);
                if let Err(e) = std::fs::remove_file(&path) {
                    problems.push(format!("cannot remove {}: {e}", path.display()));
                }
            }
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().to_path_buf();
            if let Err(e) = dir.close() {
                problems.push(format!("cannot remove {}: {e}", path.display()));
            }
        }
        if let Some(bridge) = self.bridge.take() {
            problems.extend(bridge.release());
        }
        problems
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        let problems = self.teardown();
        if !problems.is_empty() {
            eprintln!(
                "private containerd {}: teardown was not clean: {}",
                self.layout.dir.display(),
                problems.join("; ")
            );
        }
    }
}

/// containerd's configuration (version 2 format, as containerd 1.6 reads it).
fn config_toml(layout: &Layout, snapshotter: &str) -> String {
    let q = |path: PathBuf| toml_string(&path.to_string_lossy());
    let mut toml = String::new();
    // `write!` to a String cannot fail.
    let _ = write!(
        toml,
        r#"# A private containerd for virtshim's integration tests (tests/src/containerd.rs).
version = 2
root = {root}
state = {state}
# Plugins that cannot work in this sandbox or that the tests never use; disabling them keeps
# the log about what matters.
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # CAP_SYS_RESOURCE is missing in this sandbox: runc cannot set a negative oom_score_adj.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  # Port 0: a system containerd may already hold the default streaming port (10010).
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  systemd_cgroup = false
  # Pods' network namespaces under the private state folder, not /var/run/netns: whatever a
  # crash leaves there goes with the folder.
  netns_mounts_under_state_dir = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snapshotter}"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # cgroup v1 on this machine, and no systemd: the cgroupfs driver.
        SystemdCgroup = false
        # runc's own state, private too (the default /run/containerd/runc is shared).
        Root = {runc_root}

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{handler}]
      runtime_type = "io.containerd.virtshim.v2"
      pod_annotations = ["virtshim.io/*"]

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = {cni_conf}
    max_conf_num = 1
"#,
        root = q(layout.root()),
        state = q(layout.state()),
        socket = q(layout.socket()),
        ttrpc = q(layout.ttrpc_socket()),
        opt = q(layout.opt()),
        pause = PAUSE_IMAGE,
        snapshotter = snapshotter,
        runc_root = q(layout.runc_root()),
        handler = VIRTSHIM_HANDLER,
        cni_bin = CNI_BIN_DIR,
        cni_conf = q(layout.cni_conf_dir()),
    );
    toml
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `overlayfs` when an overlay mount works in `root`'s file system, else `native` (slower,
/// copies each layer, but works everywhere). `VIRTSHIM_TESTS_SNAPSHOTTER=native` forces the
/// fallback, to check it on a machine where overlay works.
fn snapshotter(root: &Path) -> &'static str {
    if std::env::var("VIRTSHIM_TESTS_SNAPSHOTTER").as_deref() == Ok("native") {
        return "native";
    }
    let probe = root.join("overlay-probe");
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| probe.join(d));
    let works = (|| -> std::io::Result<()> {
        for d in [&lower, &upper, &work, &merged] {
            std::fs::create_dir_all(d)?;
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let data = std::ffi::CString::new(data).map_err(std::io::Error::other)?;
        rustix::mount::mount(
            "overlay",
            &merged,
            "overlay",
            rustix::mount::MountFlags::empty(),
            data.as_c_str(),
        )?;
        rustix::mount::unmount(&merged, rustix::mount::UnmountFlags::empty())?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&probe);
    match works {
        Ok(()) => "overlayfs",
        Err(e) => {
            eprintln!(
                "private containerd: overlay mounts fail here ({e}); using the native snapshotter"
            );
            "native"
        }
    }
}

/// The PATH containerd and ctr run with: `first` (the shim's folder), the test's PATH, and
/// the system folders.
fn search_path(first: Option<&Path>) -> String {
    let mut parts = Vec::new();
    if let Some(first) = first {
        parts.push(first.to_string_lossy().into_owned());
    }
    if let Some(path) = std::env::var_os("PATH") {
        parts.push(path.to_string_lossy().into_owned());
    }
    parts.push(SYSTEM_PATH.to_string());
    parts.join(":")
}

fn find_program(program: &str, path: &str) -> Option<PathBuf> {
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

fn write_owner(layout: &Layout, containerd: Option<u32>) -> Result<(), Error> {
    let path = layout.dir.join(OWNER_FILE);
    let text = match containerd {
        Some(pid) => format!("{} {pid}\n", std::process::id()),
        None => format!("{}\n", std::process::id()),
    };
    std::fs::write(&path, text).map_err(io_error(format!("cannot write {}", path.display())))
}

/// Runs `f` on a thread of its own, so that the blocking CRI client works even when the
/// caller is inside an async runtime (where `block_on` would panic). A panic in `f` comes
/// back as its message, so teardown in `drop` never panics twice.
fn on_own_thread<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        scope.spawn(f).join().map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".to_string())
        })
    })
}

/// Polls `done` until it holds or `timeout` passes; gives whether it held.
fn wait_for(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[derive(Debug, Default)]
struct PodsRemoved {
    problems: Vec<String>,
    netns: Vec<PathBuf>,
}

/// Stops and removes every pod sandbox (and so every container) through the CRI, as the
/// kubelet would; notes each pod's network namespace so teardown can check it is gone.
fn remove_all_pods(socket: &Path, timeout: Duration) -> Result<PodsRemoved, virtctl::cri::Error> {
    let cri = BlockingCri::connect(socket)?.with_timeout(timeout);
    let mut outcome = PodsRemoved::default();
    for pod in cri.list_pod_sandbox(None)? {
        if let Ok(status) = cri.pod_sandbox_status(&pod.id, true) {
            outcome.netns.extend(netns_path(&status.info));
        }
        for result in [
            cri.stop_pod_sandbox(&pod.id),
            cri.remove_pod_sandbox(&pod.id),
        ] {
            match result {
                Err(e) if !e.is_not_found() => outcome.problems.push(e.to_string()),
                _ => {}
            }
        }
    }
    Ok(outcome)
}

/// The network namespace file of a pod, from containerd's verbose `PodSandboxStatus` info
/// (the sandbox's OCI spec names it).
pub fn netns_path(info: &HashMap<String, String>) -> Option<PathBuf> {
    let info: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()?
        .iter()
        .find(|ns| ns["type"] == "network")?["path"]
        .as_str()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// SIGTERM, then SIGKILL if containerd has not exited in time.
fn stop_child(mut child: Child) -> Vec<String> {
    let mut problems = Vec::new();
    if let Ok(Some(_)) = child.try_wait() {
        return problems;
    }
    if let Some(pid) = Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process(pid, Signal::TERM);
    }
    if !wait_for(EXIT_TIMEOUT, || matches!(child.try_wait(), Ok(Some(_)))) {
        problems.push(format!(
            "containerd did not exit within {EXIT_TIMEOUT:?} of SIGTERM"
        ));
        let _ = child.kill();
        let _ = child.wait();
    }
    problems
}

/// Kills the shims and runc containers an instance left behind (after containerd died, or
/// when a pod could not be removed).
fn kill_leftovers(layout: &Layout) -> Vec<String> {
    let mut problems = Vec::new();
    for pid in shims_of(&layout.socket()) {
        problems.push(format!("shim {pid} was still running: killed"));
        // A virtshim shim serves a pod whose run folder is `<run>/p/<sandbox id prefix>/`,
        // named on its QEMU's command line: with the shim killed and no containerd left to run
        // the shim's cleanup, the test harness stops that QEMU itself.
        let sandbox = std::fs::read(format!("/proc/{pid}/cmdline"))
            .ok()
            .and_then(|c| {
                let args: Vec<String> = c
                    .split(|&b| b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                args.windows(2)
                    .find(|w| w[0] == "-id")
                    .map(|w| w[1].clone())
            });
        if let Some(pid) = Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
        if let Some(id) = sandbox.filter(|id| id.len() >= 16) {
            for qemu in qemus_naming(&format!("/p/{}/", &id[..16])) {
                problems.push(format!(
                    "QEMU {qemu} of that shim was still running: killed"
                ));
                if let Some(qemu) = Pid::from_raw(qemu) {
                    let _ = rustix::process::kill_process(qemu, Signal::KILL);
                }
            }
        }
    }
    let runc_root = layout.runc_root().join(K8S_NAMESPACE);
    let Ok(entries) = std::fs::read_dir(&runc_root) else {
        return problems;
    };
    for entry in entries.flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        problems.push(format!("runc container {id} was left: deleted"));
        let deleted = Command::new("runc")
            .env("PATH", search_path(None))
            .arg("--root")
            .arg(&runc_root)
            .args(["delete", "--force", &id])
            .output();
        match deleted {
            Ok(out) if out.status.success() => {}
            Ok(out) => problems.push(format!(
                "runc delete --force {id}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => problems.push(format!("cannot run runc: {e}")),
        }
    }
    problems
}

/// The pids of QEMU processes whose command line contains `text`.
fn qemus_naming(text: &str) -> Vec<i32> {
    crate::vm::qemu_pids_where(|cmdline| cmdline.contains(text))
        .into_iter()
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect()
}

/// The pids of `containerd-shim-*` processes started by the containerd listening on `socket`
/// (their command line says `-address SOCKET`).
fn shims_of(socket: &Path) -> Vec<i32> {
    let socket = socket.to_string_lossy();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_shim = args
            .first()
            .and_then(|a| Path::new(a).file_name())
            .is_some_and(|name| name.to_string_lossy().starts_with("containerd-shim"));
        let ours = args
            .windows(2)
            .any(|w| w[0] == "-address" && w[1] == socket);
        if is_shim && ours {
            pids.push(pid);
        }
    }
    pids
}

/// Unmounts everything mounted at or under `dir`, deepest first (snapshots, shm, rootfs).
fn unmount_under(dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return problems;
    };
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(unescape_mount_path(point)))
        .filter(|point| point.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    for point in points {
        problems.push(format!("{} was still mounted", point.display()));
        if let Err(e) = rustix::mount::unmount(&point, rustix::mount::UnmountFlags::DETACH) {
            problems.push(format!("cannot unmount {}: {e}", point.display()));
        }
    }
    problems
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let value = digits.iter().fold(0u32, |v, d| v * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The last `lines` lines of a file, for error messages.
fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Tears down instances whose test process is gone (killed before its `drop` ran, by a
/// timeout or Ctrl-C, which containerd, in a process group of its own, does not get). While
/// such a containerd still runs, its pods are removed through its CRI first, so CNI gives their
/// addresses back and deletes their network namespaces; then it is stopped, its shims and
/// runc containers killed (only processes whose command line names that instance's config or
/// socket), its mounts undone and its folder removed. One starter at a time does this.
fn reap_stale() {
    let Ok(lock) = open_shared_file("reap.lock") else {
        return;
    };
    if rustix::fs::flock(&lock, FlockOperation::LockExclusive).is_err() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(DIR_PARENT) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = entry.path();
        let Ok(owner) = std::fs::read_to_string(dir.join(OWNER_FILE)) else {
            continue;
        };
        let mut pids = owner.split_whitespace().map(|p| p.parse::<i32>().ok());
        let (Some(Some(test_pid)), containerd_pid) = (pids.next(), pids.next().flatten()) else {
            continue;
        };
        if !process_gone(test_pid) {
            continue;
        }
        let layout = Layout { dir: dir.clone() };
        let config = layout.config().to_string_lossy().into_owned();
        let running = containerd_pid.filter(|&pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            !process_gone(pid) && String::from_utf8_lossy(&cmdline).contains(&config)
        });
        if let Some(pid) = running.and_then(Pid::from_raw) {
            let socket = layout.socket();
            let _ = on_own_thread(|| remove_all_pods(&socket, REAP_RPC_TIMEOUT));
            wait_for(SHIM_EXIT_TIMEOUT, || shims_of(&socket).is_empty());
            let _ = rustix::process::kill_process(pid, Signal::TERM);
            if !wait_for(EXIT_TIMEOUT, || process_gone(pid.as_raw_nonzero().get())) {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
                wait_for(EXIT_TIMEOUT, || process_gone(pid.as_raw_nonzero().get()));
            }
        }
        let _ = kill_leftovers(&layout);
        let _ = unmount_under(&dir);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => eprintln!(
                "private containerd: reaped {} left by a dead test",
                dir.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!(
                "private containerd: cannot remove stale {}: {e}",
                dir.display()
            ),
        }
    }
}

/// Opens (creating) a file in the folder the instances share.
fn open_shared_file(name: &str) -> Result<File, Error> {
    std::fs::create_dir_all(SHARED_DIR).map_err(io_error(format!("cannot make {SHARED_DIR}")))?;
    let path = Path::new(SHARED_DIR).join(name);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_error(format!("cannot open {}", path.display())))
}

/// Whether `pid` has exited: no such process, or a zombie its (new) parent has yet to reap.
fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// This instance's share of the bridge: a shared lock held while it runs. The instance that
/// ends last (it alone can take the lock exclusively) deletes the bridge, if the tests made
/// it (a marker file says so; a bridge that was there before any test is left alone).
#[derive(Debug)]
struct BridgeClaim {
    _lock: File,
}

impl BridgeClaim {
    fn lock_path() -> PathBuf {
        Path::new(SHARED_DIR).join(format!("{BRIDGE}.lock"))
    }

    fn marker_path() -> PathBuf {
        Path::new(SHARED_DIR).join(format!("{BRIDGE}.made-by-tests"))
    }

    fn open_lock() -> Result<File, Error> {
        open_shared_file(&format!("{BRIDGE}.lock"))
    }

    fn claim() -> Result<Self, Error> {
        let lock = Self::open_lock()?;
        // Waits while an instance that is ending holds it exclusively (deleting the bridge).
        rustix::fs::flock(&lock, FlockOperation::LockShared).map_err(|e| Error::Io {
            what: format!("cannot lock {}", Self::lock_path().display()),
            source: e.into(),
        })?;
        if !bridge_exists() {
            File::create(Self::marker_path()).map_err(io_error(format!(
                "cannot write {}",
                Self::marker_path().display()
            )))?;
        }
        Ok(BridgeClaim { _lock: lock })
    }

    /// Gives up the claim; deletes the bridge when this was the last one and the tests made it.
    fn release(self) -> Vec<String> {
        drop(self);
        let mut problems = Vec::new();
        let Ok(lock) = Self::open_lock() else {
            return problems;
        };
        if rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
            return problems; // another instance still uses the bridge
        }
        if Self::marker_path().exists() {
            if bridge_exists() {
                match Command::new("ip")
                    .env("PATH", search_path(None))
                    .args(["link", "delete", BRIDGE])
                    .output()
                {
                    Ok(out) if out.status.success() => {}
                    Ok(out) => problems.push(format!(
                        "ip link delete {BRIDGE}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )),
                    Err(e) => problems.push(format!("cannot run ip: {e}")),
                }
            }
            let _ = std::fs::remove_file(Self::marker_path());
        }
        problems
    }
}

/// Whether the bridge exists now.
pub fn bridge_exists() -> bool {
    Path::new("/sys/class/net").join(BRIDGE).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_private_paths_and_both_runtimes() {
        let layout = Layout {
            dir: PathBuf::from("/tmp/virtshim-ctrd-abc"),
        };
        let toml = config_toml(&layout, "overlayfs");
        for want in [
            "root = \"/tmp/virtshim-ctrd-abc/root\"",
            "address = \"/tmp/virtshim-ctrd-abc/containerd.sock\"",
            "address = \"/tmp/virtshim-ctrd-abc/containerd.sock.ttrpc\"",
            "restrict_oom_score_adj = true",
            "sandbox_image = \"localhost/virtshim/pause:1\"",
            "runtime_type = \"io.containerd.virtshim.v2\"",
            "pod_annotations = [\"virtshim.io/*\"]",
            "SystemdCgroup = false",
            "snapshotter = \"overlayfs\"",
        ] {
            assert!(toml.contains(want), "missing {want:?} in\n{toml}");
        }
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn mount_paths_are_unescaped() {
        assert_eq!(unescape_mount_path(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_path(r"/tmp/x\"), r"/tmp/x\");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }

    #[test]
    fn netns_path_comes_from_the_sandbox_spec() {
        let info = serde_json::json!({
            "runtimeSpec": { "linux": { "namespaces": [
                { "type": "pid" },
                { "type": "network", "path": "/var/run/netns/cni-1234" },
            ]}}
        });
        let map = HashMap::from([("info".to_string(), info.to_string())]);
        assert_eq!(
            netns_path(&map),
            Some(PathBuf::from("/var/run/netns/cni-1234"))
        );
        assert_eq!(netns_path(&HashMap::new()), None);
    }
}
