//! `virtshim-installer`: puts virtshim on a node and takes it off again. Run by the installer
//! DaemonSet (privileged, `hostPID`, with `--host`), or directly on a node.
//!
//! install: the shim binary into the host's bin directory (atomically: VMs that run keep their
//! shim), the `virtshim` runtime into containerd's config.toml, containerd restarted only when
//! the config changed (running VMs are untouched: their shims outlive containerd), then QEMU,
//! libvirt and KVM checked and the node labelled `virtshim.io/ready=true` and
//! `virtshim.io/accel=kvm|tcg`, with a warning event when VMs will be emulated.
//!
//! uninstall: the labels removed first (no new VMs are scheduled here), then it waits for the
//! node's VMs to stop (the kubelet stops their pods with their grace periods), then removes the
//! runtime from the config, restarts containerd and deletes the binary.

mod containerd_config;
mod host;
mod node;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(name = "virtshim-installer", version, about)]
struct Args {
    /// Work on the host: enter PID 1's mount namespace first (the DaemonSet's way; needs a
    /// privileged pod with hostPID).
    #[arg(long, global = true)]
    host: bool,
    /// containerd's config file.
    #[arg(long, global = true, default_value = "/etc/containerd/config.toml")]
    config: PathBuf,
    /// Where the shim binary goes (must be on containerd's PATH).
    #[arg(long, global = true, default_value = "/usr/local/bin")]
    bin_dir: PathBuf,
    /// Restart containerd when its config changed.
    #[arg(long, global = true, default_value_t = true, action = clap::ArgAction::Set)]
    restart: bool,
    /// The node to label (in a pod: from the downward API).
    #[arg(long, global = true, env = "NODE_NAME")]
    node_name: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install the shim and the runtime handler, check the node, label it.
    Install {
        /// The shim binary to install (read before entering the host's namespace).
        #[arg(long, default_value = "/opt/virtshim/containerd-shim-virtshim-v2")]
        shim: PathBuf,
        /// Then stay running until SIGTERM (a DaemonSet's container must not exit).
        #[arg(long)]
        wait: bool,
    },
    /// Remove labels, wait for the node's VMs to stop, remove the runtime and the shim.
    Uninstall {
        /// How long to wait for running VMs to stop.
        #[arg(long, default_value_t = 300)]
        wait_for_vms: u64,
        /// Do nothing while this DaemonSet (in $POD_NAMESPACE) exists and is not being
        /// deleted: the pod is being replaced (an upgrade), not virtshim removed.
        #[arg(long)]
        keep_if_daemonset: Option<String>,
    },
    /// Check QEMU, libvirt and KVM and print what VMs would get.
    Check,
    /// Set CRI settings some nodes need before they run any pod (a local sandbox image where
    /// there is no registry; no OOM-score changes where containerd lacks CAP_SYS_RESOURCE),
    /// restarting a running containerd when they changed. Prints `sandbox-image <image>`: the
    /// one in effect, which must exist on the node.
    Configure {
        /// The sandbox image, unless the node already names one of its own.
        #[arg(long)]
        sandbox_image: Option<String>,
        #[arg(long)]
        restrict_oom_score_adj: bool,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("virtshim-installer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    if args.host && matches!(args.command, Command::Install { wait: true, .. }) {
        return install_in_child_then_wait();
    }
    // Read what lives in the installer's own image or pod before switching to the host's
    // files: the shim to install and the service account's credentials.
    let shim = match &args.command {
        Command::Install { shim, .. } => {
            Some(std::fs::read(shim).with_context(|| format!("reading {}", shim.display()))?)
        }
        _ => None,
    };
    let cluster = node::in_cluster_config().context("reading the in-cluster configuration")?;
    if args.host {
        host::enter_host_mounts(&args.config)?;
        if args.restart && !matches!(args.command, Command::Check) {
            host::leave_pod_cgroups(&args.config)
                .context("leaving the pod's cgroups before containerd may restart")?;
        }
    }
    match &args.command {
        Command::Install { wait, .. } => {
            let staged = std::env::temp_dir().join(format!("virtshim-shim.{}", std::process::id()));
            std::fs::write(&staged, shim.unwrap_or_default())
                .with_context(|| format!("staging the shim at {}", staged.display()))?;
            let installed = host::install_shim(&staged, &args.bin_dir);
            let _ = std::fs::remove_file(&staged);
            let replaced = installed?;
            println!(
                "shim: {} {}",
                args.bin_dir.join(host::SHIM_BINARY).display(),
                if replaced {
                    "installed"
                } else {
                    "already up to date"
                }
            );
            let text = read_config(&args.config)?;
            let (new, changed) = containerd_config::install(&text)
                .with_context(|| format!("editing {}", args.config.display()))?;
            if changed {
                host::write_config(&args.config, &new)?;
                println!(
                    "containerd: runtime handler '{}' added to {}",
                    containerd_config::HANDLER,
                    args.config.display()
                );
                if args.restart {
                    host::restart_containerd(&args.config).context("restarting containerd")?;
                    println!("containerd: restarted (running VMs keep running)");
                }
            } else {
                println!(
                    "containerd: runtime handler '{}' already configured",
                    containerd_config::HANDLER
                );
            }
            match host::ensure_libvirt_qemu_user() {
                Ok(true) => println!(
                    "node: created the system user '{}' (libvirt's QEMU driver needs it)",
                    host::LIBVIRT_QEMU_USER
                ),
                Ok(false) => {}
                // The check below says what this means for VMs.
                Err(e) => println!("node: cannot create '{}': {e}", host::LIBVIRT_QEMU_USER),
            }
            let report = host::check(&args.bin_dir);
            print_report(&report);
            if !report.ready() {
                bail!("this node cannot run virtshim VMs (see above); it is not labelled ready");
            }
            label(
                cluster,
                args.node_name.as_deref(),
                report.accel.as_deref().ok(),
            )?;
            if *wait {
                wait_for_term()?;
            }
        }
        Command::Uninstall {
            wait_for_vms,
            keep_if_daemonset,
        } => {
            if let (Some(name), Some(config)) = (keep_if_daemonset, cluster.clone()) {
                let namespace =
                    std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "virtshim-system".to_owned());
                if block_on(node::daemonset_remains(config, &namespace, name))? {
                    println!("uninstall: daemonset {namespace}/{name} remains: this pod is being replaced, virtshim stays on the node");
                    return Ok(ExitCode::SUCCESS);
                }
            }
            // Best effort: when virtshim is removed with `kubectl delete -k`, the installer's
            // credentials usually go before this runs; the node is cleaned up all the same
            // (a stale label is harmless once the RuntimeClass is gone).
            if let Err(e) = label(cluster, args.node_name.as_deref(), None) {
                eprintln!("virtshim-installer: the node keeps its labels: {e:#}");
            }
            let left = host::wait_for_shims(Duration::from_secs(*wait_for_vms));
            if left > 0 {
                eprintln!("virtshim-installer: {left} VM(s) still run after {wait_for_vms} s; removing virtshim anyway (they keep running, unmanaged)");
            }
            if args.config.exists() {
                let text = read_config(&args.config)?;
                let (new, changed) = containerd_config::uninstall(&text)
                    .with_context(|| format!("editing {}", args.config.display()))?;
                if changed {
                    host::write_config(&args.config, &new)?;
                    println!(
                        "containerd: runtime handler '{}' removed",
                        containerd_config::HANDLER
                    );
                    if args.restart && (host::has_systemd() || !args.host) {
                        host::restart_containerd(&args.config).context("restarting containerd")?;
                        println!("containerd: restarted");
                    } else if args.restart {
                        // From a terminating pod without systemd, the containerd started
                        // again did not outlive the pod (seen on the project's cluster).
                        println!("containerd: not restarted (no systemd); the runtime handler leaves it at its next restart");
                    }
                }
            }
            if host::remove_shim(&args.bin_dir)? {
                println!("shim: removed from {}", args.bin_dir.display());
            }
        }
        Command::Configure {
            sandbox_image,
            restrict_oom_score_adj,
        } => {
            let settings = containerd_config::NodeSettings {
                sandbox_image: sandbox_image.as_deref(),
                restrict_oom_score_adj: *restrict_oom_score_adj,
            };
            let (new, changed, image) =
                containerd_config::configure(&read_config(&args.config)?, &settings)
                    .with_context(|| format!("editing {}", args.config.display()))?;
            if changed {
                host::write_config(&args.config, &new)?;
                println!(
                    "containerd: CRI settings written to {}",
                    args.config.display()
                );
                let running = host::containerd_pid(&args.config).is_some();
                if args.restart && running {
                    host::restart_containerd(&args.config).context("restarting containerd")?;
                    println!("containerd: restarted (running VMs keep running)");
                }
            }
            if let Some(image) = image {
                println!("sandbox-image {image}");
            }
        }
        Command::Check => {
            let configured = containerd_config::is_installed(&read_config(&args.config)?)
                .with_context(|| format!("reading {}", args.config.display()))?;
            println!(
                "check: runtime handler '{}' {} in {}",
                containerd_config::HANDLER,
                if configured {
                    "configured"
                } else {
                    "NOT configured"
                },
                args.config.display()
            );
            match host::ensure_libvirt_qemu_user() {
                Ok(true) => println!(
                    "node: created the system user '{}' (libvirt's QEMU driver needs it)",
                    host::LIBVIRT_QEMU_USER
                ),
                Ok(false) => {}
                // The check below says what this means for VMs.
                Err(e) => println!("node: cannot create '{}': {e}", host::LIBVIRT_QEMU_USER),
            }
            let report = host::check(&args.bin_dir);
            print_report(&report);
            if !report.ready() {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_config(path: &std::path::Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn print_report(report: &host::NodeReport) {
    let show = |r: &Result<String, String>| match r {
        Ok(v) => format!("ok ({v})"),
        Err(e) => format!("MISSING: {e}"),
    };
    println!("check: qemu {}", show(&report.qemu));
    println!("check: shim and libvirt {}", show(&report.shim));
    println!(
        "check: libvirt's embedded QEMU driver {}",
        show(&report.libvirt)
    );
    println!("check: accelerator {}", show(&report.accel));
    if report.accel.as_deref() == Ok("tcg") {
        println!("check: KVM does not work here: VMs run under emulation (TCG)");
    }
}

/// Labels (or unlabels, `accel: None`) the node when running in a cluster.
fn label(
    cluster: Option<kube::Config>,
    node: Option<&str>,
    accel: Option<&str>,
) -> anyhow::Result<()> {
    let (Some(config), Some(node)) = (cluster, node) else {
        println!("node: not in a cluster (no service account or NODE_NAME): no labels");
        return Ok(());
    };
    block_on(node::report(config, node, accel))?;
    match accel {
        Some(accel) => println!(
            "node: {node} labelled {}=true {}={accel}",
            node::READY_LABEL,
            node::ACCEL_LABEL
        ),
        None => println!("node: {node}: virtshim labels removed"),
    }
    Ok(())
}

/// Runs `future` on a one-thread runtime, made only when needed: the installer's file work is
/// synchronous, and the host's mount namespace is entered before any thread exists.
fn block_on<T, E>(future: impl std::future::Future<Output = Result<T, E>>) -> anyhow::Result<T>
where
    anyhow::Error: From<E>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(runtime.block_on(future)?)
}

/// `--host install --wait`, as the DaemonSet runs it: the host's work is done by a child
/// (the same command without `--wait`), and this process (the container's first) then waits
/// for SIGTERM in the container's own mount namespace. It must not enter the host's itself:
/// `runc exec`, which runs the preStop hook (`/virtshim-installer --host uninstall`), joins
/// the mount namespace the container's first process is in at that moment, where the
/// installer's binary then would not exist and the uninstall would never run.
fn install_in_child_then_wait() -> anyhow::Result<ExitCode> {
    let status = std::process::Command::new("/proc/self/exe")
        .args(std::env::args_os().skip(1).filter(|a| a != "--wait"))
        .status()
        .context("running the install")?;
    if !status.success() {
        return Ok(ExitCode::FAILURE);
    }
    wait_for_term()?;
    Ok(ExitCode::SUCCESS)
}

fn wait_for_term() -> anyhow::Result<()> {
    block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listening for SIGTERM")?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok::<_, anyhow::Error>(())
    })
}
