//! `virtctl` for virtshim: KubeVirt's CLI verbs, plus `validate` (check KubeVirt YAML offline).
//!
//! One file per verb under `commands/`.

mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "virtctl",
    version,
    about = "Manage KubeVirt virtual machines run by virtshim"
)]
struct Cli {
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => commands::validate::run(&args),
        Command::Local(args) => commands::local::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
