//! `virtshim-handler`: serves this node's VM consoles, VNC displays and pause/unpause to the
//! controller over mutual TLS (see the library's docs). Runs as a DaemonSet with the host's
//! `/run/virtshim` and containerd's socket mounted.

use anyhow::Context;
use clap::Parser;
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use virtshim_handler::server::{self, Handler};
use virtshim_handler::tasks::Tasks;
use virtshim_handler::tls::{self, TlsFiles};

#[derive(Debug, Parser)]
#[command(name = "virtshim-handler", version, about)]
struct Args {
    /// Where the controller connects (mutual TLS).
    #[arg(long, default_value = "0.0.0.0:8186")]
    listen: SocketAddr,
    /// Plain-HTTP /healthz for the kubelet's probes (nothing else is served there).
    #[arg(long, default_value = "0.0.0.0:8187")]
    health_listen: SocketAddr,
    /// The shim's run directory (the host's /run/virtshim).
    #[arg(long, env = "VIRTSHIM_RUN_DIR", default_value = virtshim_wire::node::DEFAULT_RUN_DIR)]
    run_dir: PathBuf,
    /// This server's certificate chain (PEM).
    #[arg(long)]
    tls_cert: PathBuf,
    /// Its private key (PEM).
    #[arg(long)]
    tls_key: PathBuf,
    /// The CA that issues the controller's client certificate (PEM).
    #[arg(long)]
    client_ca: PathBuf,
    /// The DNS name the controller's client certificate must carry.
    #[arg(long, default_value = "virtshim-controller.virtshim-system.svc")]
    client_name: String,
    /// containerd's socket (pause/unpause go through its task API).
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    containerd: PathBuf,
    /// containerd namespace of the kubelet's containers.
    #[arg(long, default_value = "k8s.io")]
    containerd_namespace: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Colour only on a terminal: `kubectl logs` shows escape codes verbatim. The formatter
    // writes to stdout. NO_COLOR (https://no-color.org) turns it off on a terminal too.
    let ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_ansi(ansi)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    // The controller renews these in their Secret; new connections pick them up.
    let tls = Arc::new(
        tls::ReloadingConfig::new(
            TlsFiles {
                cert: args.tls_cert.clone(),
                key: args.tls_key.clone(),
                client_ca: args.client_ca.clone(),
            },
            &args.client_name,
        )
        .context("loading the TLS configuration")?,
    );
    let handler = Arc::new(Handler::new(
        &args.run_dir,
        Tasks::new(&args.containerd, &args.containerd_namespace),
    ));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let health = tokio::net::TcpListener::bind(args.health_listen)
        .await
        .with_context(|| format!("listening on {}", args.health_listen))?;
    tokio::spawn(serve_health(health));
    tracing::info!(listen = %args.listen, run_dir = %args.run_dir.display(), "virtshim-handler serving");
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    server::serve(
        listener,
        virtshim_http::Tls::Reloading(tls),
        handler,
        shutdown,
    )
    .await;
    tracing::info!("virtshim-handler stopped");
    Ok(())
}

/// `/healthz` on plain HTTP: the process is up and serving. It never stops on its own: the
/// process ends with the main server.
async fn serve_health(listener: tokio::net::TcpListener) {
    let router = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    virtshim_http::Server::from_listener(listener, "handler health")
        .serve(router, virtshim_http::Tls::Plain, std::future::pending())
        .await;
}
