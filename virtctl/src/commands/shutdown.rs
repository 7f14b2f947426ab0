//! `virtctl stop VM`: `PUT …/virtualmachines/{name}/stop` with `StopOptions`.

use super::{put_vm_action, ClusterArgs};
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::process::ExitCode;
use virtctl::cluster;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The VirtualMachine.
    pub name: String,
    /// Seconds the guest gets to shut down; only with --force (0 stops it at once).
    #[arg(long, allow_hyphen_values = true)]
    pub grace_period: Option<i64>,
    /// Use --grace-period instead of the VM's termination grace period.
    #[arg(long)]
    pub force: bool,
    /// Check the request without changing anything.
    #[arg(long)]
    pub dry_run: bool,
}

/// The grace period to send: `--force` and `--grace-period` go together, as upstream.
pub fn forced_grace_period(force: bool, grace_period: Option<i64>) -> Result<Option<i64>> {
    match (force, grace_period) {
        (true, Some(g)) => Ok(Some(g)),
        (false, None) => Ok(None),
        _ => bail!("--force and --grace-period must be given together"),
    }
}

/// The `StopOptions` body.
pub fn body(grace_period: Option<i64>, dry_run: bool) -> Value {
    let mut body = json!({"kind": "StopOptions", "apiVersion": "subresources.kubevirt.io/v1"});
    if let Some(g) = grace_period {
        body["gracePeriod"] = json!(g);
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
        "stop",
        "stopping",
        body(grace, args.dry_run),
        args.dry_run,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_bodies() {
        assert_eq!(forced_grace_period(false, None).ok(), Some(None));
        assert_eq!(forced_grace_period(true, Some(0)).ok(), Some(Some(0)));
        assert!(forced_grace_period(true, None).is_err());
        assert!(forced_grace_period(false, Some(3)).is_err());
        assert_eq!(
            body(Some(0), true),
            json!({"kind": "StopOptions", "apiVersion": "subresources.kubevirt.io/v1",
                   "gracePeriod": 0, "dryRun": ["All"]})
        );
        assert_eq!(
            body(None, false),
            json!({"kind": "StopOptions", "apiVersion": "subresources.kubevirt.io/v1"})
        );
    }
}
