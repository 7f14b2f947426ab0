//! `virtctl restart VM`: `PUT …/virtualmachines/{name}/restart` with `RestartOptions`.

use super::stop::forced_grace_period;
use super::{put_vm_action, ClusterArgs};
use anyhow::Result;
use serde_json::{json, Value};
use std::process::ExitCode;
use virtctl::cluster;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The VirtualMachine.
    pub name: String,
    /// Seconds the guest gets to shut down; only with --force, and only 0 is supported.
    #[arg(long, allow_hyphen_values = true)]
    pub grace_period: Option<i64>,
    /// Restart at once (with --grace-period=0).
    #[arg(long)]
    pub force: bool,
    /// Check the request without changing anything.
    #[arg(long)]
    pub dry_run: bool,
}

/// The `RestartOptions` body.
pub fn body(grace_period: Option<i64>, dry_run: bool) -> Value {
    let mut body = json!({"kind": "RestartOptions", "apiVersion": "subresources.kubevirt.io/v1"});
    if let Some(g) = grace_period {
        body["gracePeriodSeconds"] = json!(g);
    }
    if let Some(d) = cluster::dry_run_value(dry_run) {
        body["dryRun"] = json!(d);
    }
    body
}

pub fn run(args: &Args, cluster_args: &ClusterArgs) -> Result<ExitCode> {
    let grace = forced_grace_period(args.force, args.grace_period)?;
    put_vm_action(
        cluster_args,
        &args.name,
        "restart",
        "restarting",
        body(grace, args.dry_run),
        args.dry_run,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        assert_eq!(
            body(Some(0), false),
            json!({"kind": "RestartOptions", "apiVersion": "subresources.kubevirt.io/v1",
                   "gracePeriodSeconds": 0})
        );
        assert_eq!(
            body(None, true),
            json!({"kind": "RestartOptions", "apiVersion": "subresources.kubevirt.io/v1",
                   "dryRun": ["All"]})
        );
    }
}
