//! `virtctl vnc VMI`: a local TCP port relaying RFB to the VMI's display. With `--proxy-only`
//! (or when no viewer is installed) it prints the port as upstream's `{"port":N}` line and
//! waits for one VNC client; otherwise it starts `remote-viewer` or `vncviewer` on it.

use super::{block_on, ClusterArgs};
use anyhow::{Context as _, Result};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use virtctl::cluster;

/// How long a started viewer gets to connect.
pub const VIEWER_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The VirtualMachineInstance.
    pub name: String,
    /// Only run the proxy and print its port as JSON.
    #[arg(long)]
    pub proxy_only: bool,
    /// The local port (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// The local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: IpAddr,
    /// Ask the server to keep an existing VNC session (passed on as `preserveSession`).
    #[arg(long)]
    pub preserve_session: bool,
}

/// The line `--proxy-only` prints.
pub fn port_line(port: u16) -> String {
    serde_json::json!({ "port": port }).to_string()
}

/// The viewer to start for `port`: remote-viewer, else vncviewer, as `find` locates them.
pub fn viewer_command(
    find: impl Fn(&str) -> Option<PathBuf>,
    address: IpAddr,
    port: u16,
) -> Option<(PathBuf, Vec<String>)> {
    let host = match address {
        IpAddr::V4(a) if a.is_unspecified() => "127.0.0.1".to_owned(),
        IpAddr::V6(a) if a.is_unspecified() => "[::1]".to_owned(),
        IpAddr::V6(a) => format!("[{a}]"),
        IpAddr::V4(a) => a.to_string(),
    };
    if let Some(path) = find("remote-viewer") {
        return Some((path, vec![format!("vnc://{host}:{port}")]));
    }
    find("vncviewer").map(|path| (path, vec![format!("{host}:{port}")]))
}

/// An executable named `name` on `$PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub fn run(args: &Args, cluster_args: &ClusterArgs) -> Result<ExitCode> {
    block_on(async {
        let (client, ns) = cluster_args.connect().await?;
        let mut path = cluster::subresource_path(&ns, "virtualmachineinstances", &args.name, "vnc");
        if args.preserve_session {
            path.push_str("?preserveSession=true");
        }
        let ws = cluster::open_stream_once(&client, &path)
            .await
            .map_err(|e| anyhow::anyhow!("connecting to the display of {}: {e}", args.name))?;
        let listener = tokio::net::TcpListener::bind((args.address, args.port))
            .await
            .with_context(|| format!("listening on {}:{}", args.address, args.port))?;
        let port = listener.local_addr()?.port();
        let viewer = if args.proxy_only {
            None
        } else {
            viewer_command(on_path, args.address, port)
        };
        let mut child = None;
        match viewer {
            None => {
                if !args.proxy_only {
                    eprintln!(
                        "No VNC viewer found (remote-viewer, vncviewer): serving the proxy only."
                    );
                }
                println!("{}", port_line(port));
            }
            Some((program, viewer_args)) => {
                child = Some(
                    tokio::process::Command::new(&program)
                        .args(&viewer_args)
                        .kill_on_drop(true)
                        .spawn()
                        .with_context(|| format!("starting {}", program.display()))?,
                );
            }
        }
        let accepted = if child.is_some() {
            tokio::time::timeout(VIEWER_TIMEOUT, listener.accept())
                .await
                .context("the VNC viewer did not connect in time")?
        } else {
            listener.accept().await
        };
        let (tcp, _) = accepted.context("accepting the VNC client")?;
        drop(listener);
        let ended = cluster::relay(ws, tcp).await;
        if let Some(mut child) = child {
            let _ = child.wait().await;
        }
        match ended {
            cluster::Ended::Broken(why) => anyhow::bail!("the VNC connection broke: {why}"),
            _ => Ok(ExitCode::SUCCESS),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lines() {
        assert_eq!(port_line(5900), r#"{"port":5900}"#);
    }

    #[test]
    fn viewers() {
        let local: IpAddr = "127.0.0.1".parse().expect("ip");
        let any: IpAddr = "0.0.0.0".parse().expect("ip");
        let both = |name: &str| Some(PathBuf::from(format!("/usr/bin/{name}")));
        let tiger = |name: &str| (name == "vncviewer").then(|| PathBuf::from("/usr/bin/vncviewer"));
        let none = |_: &str| None;
        assert_eq!(
            viewer_command(both, local, 5901),
            Some((
                PathBuf::from("/usr/bin/remote-viewer"),
                vec!["vnc://127.0.0.1:5901".to_owned()]
            ))
        );
        assert_eq!(
            viewer_command(tiger, any, 5901),
            Some((
                PathBuf::from("/usr/bin/vncviewer"),
                vec!["127.0.0.1:5901".to_owned()]
            ))
        );
        assert_eq!(viewer_command(none, local, 1), None);
    }
}
