//! `virtctl start VM`: `PUT …/virtualmachines/{name}/start` with `StartOptions`.

use super::{block_on, ClusterArgs};
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
    block_on(async {
        let (client, ns) = cluster_args.connect().await?;
        if args.dry_run {
            println!("Dry run: the VM is not changed");
        }
        let path = cluster::subresource_path(&ns, "virtualmachines", &args.name, "start");
        cluster::put(&client, &path, body(args.paused, args.dry_run))
            .await
            .map_err(|e| anyhow::anyhow!("starting VirtualMachine {}: {e}", args.name))?;
        println!("VM {} was scheduled to start", args.name);
        Ok(ExitCode::SUCCESS)
    })
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
