//! `virtctl pause vm|vmi NAME`: `PUT …/virtualmachineinstances/{name}/pause`. For a VM, the VM
//! is read first (kubevirt.io/v1), as upstream does, so that a VM that is not running says so.
//! [`unpause`](super::unpause) shares all of it.

use super::{block_on, ClusterArgs};
use anyhow::{bail, Result};
use serde_json::{json, Value};
use std::process::ExitCode;
use virtctl::cluster::{self, ClusterError};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `vm` (virtualmachine) or `vmi` (virtualmachineinstance).
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Check the request without changing anything.
    #[arg(long)]
    pub dry_run: bool,
}

/// What was named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Vm,
    Vmi,
}

pub fn parse_kind(kind: &str) -> Result<Kind> {
    match kind {
        "vm" | "vms" | "virtualmachine" | "virtualmachines" => Ok(Kind::Vm),
        "vmi" | "vmis" | "virtualmachineinstance" | "virtualmachineinstances" => Ok(Kind::Vmi),
        other => bail!("unsupported resource type {other:?}: use vm or vmi"),
    }
}

/// The `PauseOptions` / `UnpauseOptions` body.
pub fn body(pause: bool, dry_run: bool) -> Value {
    let kind = if pause {
        "PauseOptions"
    } else {
        "UnpauseOptions"
    };
    let mut body = json!({"kind": kind, "apiVersion": "subresources.kubevirt.io/v1"});
    if let Some(d) = cluster::dry_run_value(dry_run) {
        body["dryRun"] = json!(d);
    }
    body
}

/// Whether a VM's spec says it should run (runStrategy, else `running`).
pub fn vm_set_to_run(vm: &Value) -> bool {
    match vm["spec"]["runStrategy"].as_str() {
        Some(strategy) => strategy != "Halted",
        None => vm["spec"]["running"].as_bool().unwrap_or(false),
    }
}

/// Pauses (`pause`) or unpauses the named VM's or VMI's instance.
pub fn run_either(args: &Args, cluster_args: &ClusterArgs, pause: bool) -> Result<ExitCode> {
    let kind = parse_kind(&args.kind)?;
    let verb = if pause { "pause" } else { "unpause" };
    let doing = if pause { "pausing" } else { "unpausing" };
    block_on(async {
        let (client, ns) = cluster_args.connect().await?;
        if args.dry_run {
            println!("Dry run: the VMI is not changed");
        }
        let vm =
            match kind {
                Kind::Vm => {
                    let path = format!(
                        "/apis/kubevirt.io/v1/namespaces/{ns}/virtualmachines/{}",
                        args.name
                    );
                    Some(cluster::get_json(&client, &path).await.map_err(|e| {
                        anyhow::anyhow!("getting VirtualMachine {}: {e}", args.name)
                    })?)
                }
                Kind::Vmi => None,
            };
        let path = cluster::subresource_path(&ns, "virtualmachineinstances", &args.name, verb);
        match cluster::put(&client, &path, body(pause, args.dry_run)).await {
            Ok(()) => {}
            Err(e @ ClusterError::Refused { code: 404, .. }) => match &vm {
                Some(vm) if !vm_set_to_run(vm) => bail!(
                    "{doing} VirtualMachineInstance {}: VirtualMachine {} is not set to run",
                    args.name,
                    args.name
                ),
                Some(_) => bail!(
                    "{doing} VirtualMachineInstance {}: it does not exist",
                    args.name
                ),
                None => bail!("{doing} VirtualMachineInstance {}: {e}", args.name),
            },
            Err(e) => bail!("{doing} VirtualMachineInstance {}: {e}", args.name),
        }
        println!("VMI {} was scheduled to {verb}", args.name);
        Ok(ExitCode::SUCCESS)
    })
}

pub fn run(args: &Args, cluster_args: &ClusterArgs) -> Result<ExitCode> {
    run_either(args, cluster_args, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        for (input, expected) in [
            ("vm", Some(Kind::Vm)),
            ("virtualmachine", Some(Kind::Vm)),
            ("vmi", Some(Kind::Vmi)),
            ("virtualmachineinstances", Some(Kind::Vmi)),
            ("pod", None),
        ] {
            assert_eq!(parse_kind(input).ok(), expected, "{input}");
        }
    }

    #[test]
    fn bodies_and_run_strategies() {
        assert_eq!(
            body(true, true),
            json!({"kind": "PauseOptions", "apiVersion": "subresources.kubevirt.io/v1", "dryRun": ["All"]})
        );
        assert_eq!(
            body(false, false),
            json!({"kind": "UnpauseOptions", "apiVersion": "subresources.kubevirt.io/v1"})
        );
        for (spec, expected) in [
            (json!({"runStrategy": "Always"}), true),
            (json!({"runStrategy": "Halted"}), false),
            (json!({"runStrategy": "Manual"}), true),
            (json!({"running": true}), true),
            (json!({"running": false}), false),
            (json!({}), false),
        ] {
            assert_eq!(vm_set_to_run(&json!({"spec": spec})), expected, "{spec}");
        }
    }
}
