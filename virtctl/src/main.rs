//! `virtctl` for virtshim: KubeVirt's CLI verbs (console, vnc, start, stop, restart, pause,
//! unpause, version, expose — through the cluster's `subresources.kubevirt.io` API), plus
//! `validate` (check KubeVirt YAML offline) and `local` (no cluster).
//!
//! One file per verb under `commands/` (stop and restart, which differ only in their options
//! body, share `shutdown.rs`).

mod commands;

use clap::{Parser, Subcommand};
use commands::shutdown::Shutdown;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "virtctl",
    version,
    about = "Manage KubeVirt virtual machines run by virtshim"
)]
struct Cli {
    #[command(flatten)]
    cluster: commands::ClusterArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check VirtualMachine, VirtualMachineInstance and VirtualMachineInstanceReplicaSet YAML
    /// offline, as virtshim's admission webhooks would; print the defaulted objects with -o.
    Validate(commands::validate::Args),
    /// Run VMs on this node through containerd's CRI, without a cluster.
    Local(commands::local::Args),
    /// Connect to the serial console of a VirtualMachineInstance (Ctrl+] leaves).
    Console(commands::console::Args),
    /// Open a VNC connection to a VirtualMachineInstance (a local proxy, and a viewer if one
    /// is installed).
    Vnc(commands::vnc::Args),
    /// Forward local TCP ports to a VM's ports: `port-forward vm/NAME[.NAMESPACE] [LOCAL:]REMOTE…`.
    PortForward(commands::port_forward::Args),
    /// Start a VirtualMachine.
    Start(commands::start::Args),
    /// Stop a VirtualMachine.
    Stop(commands::shutdown::Args),
    /// Restart a VirtualMachine.
    Restart(commands::shutdown::Args),
    /// Pause a VirtualMachine's instance: `pause vm|vmi NAME`.
    Pause(commands::pause::Args),
    /// Unpause a VirtualMachine's instance: `unpause vm|vmi NAME`.
    Unpause(commands::pause::Args),
    /// Print the client's and the server's versions.
    Version(commands::version::Args),
    /// Expose a VirtualMachine, VirtualMachineInstance or replica set as a Service.
    Expose(commands::expose::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => commands::validate::run(&args),
        Command::Local(args) => commands::local::run(&args),
        Command::Console(args) => commands::console::run(&args, &cli.cluster),
        Command::Vnc(args) => commands::vnc::run(&args, &cli.cluster),
        Command::PortForward(args) => commands::port_forward::run(&args, &cli.cluster),
        Command::Start(args) => commands::start::run(&args, &cli.cluster),
        Command::Stop(args) => commands::shutdown::run(Shutdown::Stop, &args, &cli.cluster),
        Command::Restart(args) => commands::shutdown::run(Shutdown::Restart, &args, &cli.cluster),
        Command::Pause(args) => commands::pause::run(&args, &cli.cluster),
        Command::Unpause(args) => commands::unpause::run(&args, &cli.cluster),
        Command::Version(args) => commands::version::run(&args, &cli.cluster),
        Command::Expose(args) => commands::expose::run(&args, &cli.cluster),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
