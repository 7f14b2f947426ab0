//! `/metrics`, `/healthz` (and `/livez`) and `/readyz` as an axum router, served in plain HTTP
//! by the project's one HTTP stack ([`virtshim_http`]).

use super::Metrics;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What Prometheus asks for and gets: OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The routes; GET (and HEAD) only.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(metrics)
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    ([(CONTENT_TYPE, OPENMETRICS)], metrics.render()).into_response()
}

async fn ready(State(metrics): State<Arc<Metrics>>) -> Response {
    if metrics.is_ready() {
        "ok\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet\n").into_response()
    }
}

/// Binds `addr` (port 0 picks a free port) and returns the listener and the address it got.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// Serves the routes on `listener` until the task is dropped (the process's end).
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    virtshim_http::Server::from_listener(listener, "metrics")
        .serve(
            router(metrics),
            virtshim_http::Tls::Plain,
            std::future::pending(),
        )
        .await;
}
