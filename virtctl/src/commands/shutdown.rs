//! `virtctl stop VM` and `virtctl restart VM`: `PUT …/virtualmachines/{name}/stop|restart`
//! with KubeVirt's `StopOptions` or `RestartOptions`, which differ only in their kind and in
//! what they call the grace period.

use super::{put_vm_action, ClusterArgs};
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::process::ExitCode;
use virtctl::cluster;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The VirtualMachine.
    pub name: String,
    /// Seconds the guest gets to shut down; only with --force (0: at once; restart takes
    /// only 0).
    #[arg(long, allow_hyphen_values = true)]
    pub grace_period: Option<i64>,
    /// Use --grace-period instead of the VM's termination grace period.
    #[arg(long)]
    pub force: bool,
    /// Check the request without changing anything.
    #[arg(long)]
    pub dry_run: bool,
}

/// Which of the two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    Stop,
    Restart,
}

impl Shutdown {
    /// The subresource, and the verb of the success line.
    fn action(self) -> &'static str {
        match self {
            Shutdown::Stop => "stop",
            Shutdown::Restart => "restart",
        }
    }

    fn doing(self) -> &'static str {
        match self {
            Shutdown::Stop => "stopping",
            Shutdown::Restart => "restarting",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Shutdown::Stop => "StopOptions",
            Shutdown::Restart => "RestartOptions",
        }
    }

    /// KubeVirt's field for the grace period, which the two options name differently.
    fn grace_field(self) -> &'static str {
        match self {
            Shutdown::Stop => "gracePeriod",
            Shutdown::Restart => "gracePeriodSeconds",
        }
    }
}

/// The grace period to send: `--force` and `--grace-period` go together, as upstream.
pub fn forced_grace_period(force: bool, grace_period: Option<i64>) -> Result<Option<i64>> {
    match (force, grace_period) {
        (true, Some(g)) => Ok(Some(g)),
        (false, None) => Ok(None),
        _ => bail!("--force and --grace-period must be given together"),
    }
}

/// The `StopOptions` or `RestartOptions` body.
pub fn body(shutdown: Shutdown, grace_period: Option<i64>, dry_run: bool) -> Value {
    let mut body = json!({"kind": shutdown.kind(), "apiVersion": "subresources.kubevirt.io/v1"});
    if let Some(g) = grace_period {
        body[shutdown.grace_field()] = json!(g);
    }
    if let Some(d) = cluster::dry_run_value(dry_run) {
        body["dryRun"] = json!(d);
    }
    body
}

pub fn run(shutdown: Shutdown, args: &Args, cluster_args: &ClusterArgs) -> Result<ExitCode> {
    let grace = forced_grace_period(args.force, args.grace_period)?;
    put_vm_action(
        cluster_args,
        &args.name,
        shutdown.action(),
        shutdown.doing(),
        body(shutdown, grace, args.dry_run),
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
            body(Shutdown::Stop, Some(0), true),
            json!({"kind": "StopOptions", "apiVersion": "subresources.kubevirt.io/v1",
                   "gracePeriod": 0, "dryRun": ["All"]})
        );
        assert_eq!(
            body(Shutdown::Stop, None, false),
            json!({"kind": "StopOptions", "apiVersion": "subresources.kubevirt.io/v1"})
        );
        assert_eq!(
            body(Shutdown::Restart, Some(0), false),
            json!({"kind": "RestartOptions", "apiVersion": "subresources.kubevirt.io/v1",
                   "gracePeriodSeconds": 0})
        );
        assert_eq!(
            body(Shutdown::Restart, None, true),
            json!({"kind": "RestartOptions", "apiVersion": "subresources.kubevirt.io/v1",
                   "dryRun": ["All"]})
        );
    }
}
