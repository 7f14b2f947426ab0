//! One module per virtctl verb; [`ClusterArgs`] and [`block_on`] are what the cluster verbs
//! share.

pub mod console;
pub mod expose;
pub mod local;
pub mod pause;
pub mod port_forward;
pub mod shutdown;
pub mod start;
pub mod unpause;
pub mod validate;
pub mod version;
pub mod vnc;

use anyhow::Context as _;
use std::path::PathBuf;
use virtctl::cluster;

/// Where the cluster is, as upstream virtctl's global flags say it.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClusterArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// The namespace (default: the context's, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

impl ClusterArgs {
    pub fn target(&self) -> cluster::Target {
        cluster::Target {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespace: self.namespace.clone(),
        }
    }

    /// A client and the namespace to work in.
    pub async fn connect(&self) -> anyhow::Result<(kube::Client, String)> {
        cluster::connect(&self.target())
            .await
            .context("cannot reach the cluster")
    }
}

/// `PUT …/virtualmachines/{name}/{action}` with `body`: what start, stop and restart do.
/// `doing` and `done` word the error and the success line ("starting", "start").
pub fn put_vm_action(
    cluster_args: &ClusterArgs,
    name: &str,
    action: &str,
    doing: &str,
    body: serde_json::Value,
    dry_run: bool,
) -> anyhow::Result<std::process::ExitCode> {
    block_on(async {
        let (client, ns) = cluster_args.connect().await?;
        if dry_run {
            println!("Dry run: the VM is not changed");
        }
        let path = cluster::subresource_path(&ns, "virtualmachines", name, action);
        cluster::put(&client, &path, body)
            .await
            .map_err(|e| anyhow::anyhow!("{doing} VirtualMachine {name}: {e}"))?;
        println!("VM {name} was scheduled to {action}");
        Ok(std::process::ExitCode::SUCCESS)
    })
}

/// Runs a cluster verb on a fresh runtime.
pub fn block_on<T>(
    future: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(future)
}
