//! `virtctl start VM`: `PUT …/virtualmachines/{name}/start` with `StartOptions`.

use super::{put_vm_action, ClusterArgs};
use anyhow::Result;
use serde_json::{json, Value};
use std::process::ExitCode;
use virtctl::cluster;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The VirtualMachine.
    pub name: String,
    /// Start the VM with its CPUs paused.
    #[arg(long)]
    pub paused: bool,
    /// Check the request without changing anything.
    #[arg(long)]
    pub dry_run: bool,
}

/// The `StartOptions` body.
pub fn body(paused: bool, dry_run: bool) -> Value {
    let mut body = json!({"kind": "StartOptions", "apiVersion": "subresources.kubevirt.io/v1"});
    if paused {
        body["paused"] = json!(true);
    }
    if let Some(d) = cluster::dry_run_value(dry_run) {
        body["dryRun"] = json!(d);
    }
    body
}

pub fn run(args: &Args, cluster_args: &ClusterArgs) -> Result<ExitCode> {
    put_vm_action(
        cluster_args,
        &args.name,
        "start",
        "starting",
        body(args.paused, args.dry_run),
        args.dry_run,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        let base = json!({"kind": "StartOptions", "apiVersion": "subresources.kubevirt.io/v1"});
        let mut paused = base.clone();
        paused["paused"] = json!(true);
        let mut dry = base.clone();
        dry["dryRun"] = json!(["All"]);
        for (p, d, expected) in [
            (false, false, base),
            (true, false, paused),
            (false, true, dry),
        ] {
            assert_eq!(body(p, d), expected, "{p} {d}");
        }
    }
}
