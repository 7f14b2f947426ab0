//! `virtctl version`: this client's version, then the server's from
//! `GET /apis/subresources.kubevirt.io/v1/version`.

use super::{block_on, ClusterArgs};
use anyhow::Result;
use serde_json::Value;
use std::process::ExitCode;
use virtctl::cluster;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print only the client's version.
    #[arg(long)]
    pub client: bool,
}

/// One line for a `version.Info`.
pub fn describe(info: &Value) -> String {
    let field = |k: &str| info[k].as_str().unwrap_or("").to_owned();
    let mut line = field("gitVersion");
    let commit = field("gitCommit");
    if !commit.is_empty() {
        line.push_str(&format!(" (commit {commit})"));
    }
    let platform = field("platform");
    if !platform.is_empty() {
        line.push_str(&format!(" {platform}"));
    }
    line
}

pub fn run(args: &Args, cluster_args: &ClusterArgs) -> Result<ExitCode> {
    println!(
        "Client Version: v{} (virtshim virtctl) {}/{}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    );
    if args.client {
        return Ok(ExitCode::SUCCESS);
    }
    block_on(async {
        let (client, _) = cluster_args.connect().await?;
        let info = cluster::get_json(&client, &cluster::version_path())
            .await
            .map_err(|e| anyhow::anyhow!("getting the server's version: {e}"))?;
        println!("Server Version: {}", describe(&info));
        Ok(ExitCode::SUCCESS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn describes() {
        assert_eq!(
            describe(
                &json!({"gitVersion": "v0.1.0", "gitCommit": "abc", "platform": "linux/amd64"})
            ),
            "v0.1.0 (commit abc) linux/amd64"
        );
        assert_eq!(describe(&json!({"gitVersion": "v1.3.0"})), "v1.3.0");
    }
}
