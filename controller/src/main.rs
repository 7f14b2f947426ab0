//! `virtshim-controller`: serves health and metrics, campaigns for the leader lease, and runs
//! the VM, VMI and replica-set controllers while it leads (see DESIGN.md).

use anyhow::Context as _;
use clap::Parser;
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use virtshim_controller::admission;
use virtshim_controller::leader::{self, Elector, Timing};
use virtshim_controller::observability::{self, Metrics};
use virtshim_controller::reconcile::{self, Caches, Context};
use virtshim_controller::subresources;

/// KubeVirt-compatible VMs as pods run by the virtshim runtime: the cluster-side controller.
#[derive(Debug, Parser)]
#[command(name = "virtshim-controller", version)]
struct Args {
    /// Where `/metrics` is served (OpenMetrics text format).
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_bind_address: SocketAddr,
    /// Where `/healthz` and `/readyz` are served.
    #[arg(long, default_value = "0.0.0.0:8081")]
    health_bind_address: SocketAddr,
    /// Run the controllers without leader election (a single replica, or local development).
    #[arg(long)]
    no_leader_election: bool,
    /// The Lease's namespace, also the webhooks' Service and Secret namespace (default:
    /// $POD_NAMESPACE, else virtshim-system).
    #[arg(long)]
    leader_election_namespace: Option<String>,
    /// Where the admission webhooks are served (HTTPS, certificate made by the controller).
    #[arg(long, default_value = "0.0.0.0:8443")]
    webhook_bind_address: SocketAddr,
    /// Do not serve admission webhooks (local development).
    #[arg(long)]
    no_webhooks: bool,
    /// Where the aggregated API subresources.kubevirt.io is served (HTTPS, certificate made by
    /// the controller for the Service named by --subresource-service).
    #[arg(long, default_value = "0.0.0.0:8444")]
    subresource_bind_address: SocketAddr,
    /// The Service the APIServices v1/v1alpha3.subresources.kubevirt.io point at.
    #[arg(long, default_value = subresources::DEFAULT_SERVICE)]
    subresource_service: String,
    /// Do not serve the subresource API (nor make the handler certificates).
    #[arg(long)]
    no_subresources: bool,
    /// The port virtshim-handler listens on (on each handler pod's IP).
    #[arg(long, default_value_t = subresources::handler::DEFAULT_PORT)]
    handler_port: u16,
    /// The label selector of handler pods (in the controller's namespace).
    #[arg(long, default_value = subresources::handler::DEFAULT_SELECTOR)]
    handler_selector: String,
    /// The Secret written for the handler DaemonSet: tls.crt, tls.key, ca.crt.
    #[arg(long, default_value = subresources::DEFAULT_HANDLER_SECRET)]
    handler_secret: String,
    /// Requests a second to the apiserver, on average (0: no limit). KubeVirt's: 200.
    #[arg(long, default_value_t = virtshim_controller::apiclient::DEFAULT_QPS)]
    client_qps: f64,
    /// Requests sent at once before --client-qps paces them. KubeVirt's: 400.
    #[arg(long, default_value_t = virtshim_controller::apiclient::DEFAULT_BURST)]
    client_burst: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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

    let metrics = Arc::new(Metrics::new());
    for (addr, what) in [
        (args.metrics_bind_address, "metrics"),
        (args.health_bind_address, "health"),
    ] {
        let (listener, local) = observability::bind(addr)
            .await
            .with_context(|| format!("cannot bind the {what} address {addr}"))?;
        tracing::info!(%local, "serving {what}");
        let m = metrics.clone();
        tokio::spawn(observability::serve(listener, m));
    }

    let config = kube::Config::infer()
        .await
        .context("cannot configure a Kubernetes client (in-cluster or KUBECONFIG)")?;
    let limits = virtshim_controller::apiclient::Limits {
        qps: args.client_qps,
        burst: args.client_burst,
    };
    tracing::info!(
        qps = limits.qps,
        burst = limits.burst,
        "apiserver client rate limit"
    );
    let client = virtshim_controller::apiclient::client(config, limits, metrics.clone())
        .context("cannot build the Kubernetes client")?;

    // The caches run on every replica: readiness means "ready to take the lead".
    let caches = Caches::start(&client);
    metrics.set_vmi_store(caches.vmis.clone());
    {
        let caches = caches.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            match caches.wait_until_ready().await {
                Ok(()) => {
                    tracing::info!("caches synced");
                    metrics.set_ready(true);
                }
                Err(e) => tracing::error!(error = %e, "caches never synced"),
            }
        });
    }

    // The admission webhooks and the subresource API run on every replica (no lease needed):
    // the apiserver may call any of them through the Services. One cert manager makes and
    // renews every certificate; all replicas share its Secret.
    let (tls_stop, mut tls_stopped) = watch::channel(false);
    if !(args.no_webhooks && args.no_subresources) {
        let namespace = args
            .leader_election_namespace
            .clone()
            .unwrap_or_else(leader::namespace);
        let mut webhooks = admission::Settings::new(&namespace);
        webhooks.addr = args.webhook_bind_address;
        let mut api = subresources::Settings::new(&namespace);
        api.addr = args.subresource_bind_address;
        api.service = args.subresource_service.clone();
        api.handler_port = args.handler_port;
        api.handler_selector = args.handler_selector.clone();
        api.handler_secret = args.handler_secret.clone();
        let servers = TlsServers {
            webhooks,
            serve_webhooks: !args.no_webhooks,
            api: (!args.no_subresources).then_some(api),
        };
        let client = client.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = tls_stopped.changed().await;
            };
            servers.run(client, stopped).await;
        });
    }

    let identity = leader::identity();
    let (leading_tx, mut leading) = watch::channel(false);
    let elector = if args.no_leader_election {
        leading_tx.send_replace(true);
        None
    } else {
        let namespace = args
            .leader_election_namespace
            .clone()
            .unwrap_or_else(leader::namespace);
        let elector = Elector::new(
            client.clone(),
            &namespace,
            identity.clone(),
            Timing::default(),
        );
        tokio::spawn(elector.clone().run(leading_tx));
        tracing::info!(%identity, %namespace, "campaigning for the leader lease");
        Some(elector)
    };

    let ctx = Arc::new(Context::new(
        client,
        caches.clone(),
        metrics.clone(),
        identity,
    ));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        // Stand by until this replica leads.
        while !*leading.borrow_and_update() {
            tokio::select! {
                changed = leading.changed() => changed.context("leader election stopped")?,
                () = &mut shutdown => return stop(elector.as_ref(), &metrics, &tls_stop).await,
            }
        }
        // Start from synced caches, then run the controllers until the lease is lost.
        tokio::select! {
            ready = caches.wait_until_ready() => ready.context("caches never synced")?,
            () = &mut shutdown => return stop(elector.as_ref(), &metrics, &tls_stop).await,
        }
        metrics.set_leading(true);
        tracing::info!("leading: controllers start");
        let lost = async {
            while *leading.borrow_and_update() {
                if leading.changed().await.is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            () = reconcile::run(ctx.clone()) => {
                anyhow::bail!("the controllers stopped by themselves");
            }
            () = lost => {
                metrics.set_leading(false);
                tracing::warn!("lost the leader lease: controllers stopped");
            }
            () = &mut shutdown => return stop(elector.as_ref(), &metrics, &tls_stop).await,
        }
    }
}

/// The HTTPS servers and the one cert manager behind them.
struct TlsServers {
    /// Also the cert manager's base settings (Secret, webhook configurations).
    webhooks: admission::Settings,
    serve_webhooks: bool,
    api: Option<subresources::Settings>,
}

impl TlsServers {
    /// Makes the certificates (retrying until the apiserver answers), then serves until
    /// `stopped`, and lets the servers finish.
    async fn run(self, client: kube::Client, stopped: impl std::future::Future<Output = ()>) {
        let mut cert_settings = self.webhooks.cert_settings();
        if let Some(api) = &self.api {
            api.extend_cert_settings(&mut cert_settings);
        }
        let manager = admission::certs::CertManager::new(client.clone(), cert_settings);
        tokio::pin!(stopped);
        let (resolver, set) = loop {
            tokio::select! {
                () = &mut stopped => return,
                made = manager.bootstrap() => match made {
                    Ok(pair) => break pair,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot make the certificates; retrying");
                        tokio::time::sleep(admission::certs::RETRY_INTERVAL).await;
                    }
                },
            }
        };
        let (published, certs) = watch::channel(set);
        let (stop_servers, _) = watch::channel(false);
        let until_stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.changed().await;
        };
        // Each server gets two receivers: one to stop serving, one to wait on after a failure,
        // so that one server failing leaves the other (and the renewals) running.
        let (webhooks_stop, webhooks_wait) = (stop_servers.subscribe(), stop_servers.subscribe());
        let (api_stop, api_wait) = (stop_servers.subscribe(), stop_servers.subscribe());
        let webhooks = async {
            if self.serve_webhooks {
                let done = admission::serve(
                    self.webhooks.addr,
                    resolver.clone(),
                    until_stopped(webhooks_stop),
                )
                .await;
                if let Err(e) = done {
                    tracing::error!(error = %e, "admission webhooks stopped");
                }
            }
            until_stopped(webhooks_wait).await;
        };
        let api = async {
            if let Some(settings) = &self.api {
                let done = subresources::run(
                    client.clone(),
                    settings.clone(),
                    resolver.clone(),
                    certs.clone(),
                    until_stopped(api_stop),
                )
                .await;
                if let Err(e) = done {
                    tracing::error!(error = %e, "subresource API stopped");
                }
            }
            until_stopped(api_wait).await;
        };
        tokio::pin!(webhooks);
        tokio::pin!(api);
        tokio::select! {
            () = &mut stopped => {
                stop_servers.send_replace(true);
                tokio::join!(&mut webhooks, &mut api);
            }
            () = &mut webhooks => {}
            () = &mut api => {}
            () = manager.keep_fresh(resolver.clone(), published) => {}
        }
    }
}

/// Gives up the lease (so a standby takes over at once) and ends.
async fn stop(
    elector: Option<&Elector>,
    metrics: &Metrics,
    admission: &watch::Sender<bool>,
) -> anyhow::Result<()> {
    tracing::info!("shutting down");
    admission.send_replace(true);
    metrics.set_leading(false);
    if let Some(elector) = elector {
        elector
            .release()
            .await
            .context("releasing the leader lease")?;
    }
    Ok(())
}

/// Resolves on SIGTERM (the kubelet stopping the pod) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
