//! warden's observation layer: the `warden_*` metrics as Prometheus text, for any application
//! to mount, and a small ready-made HTTP endpoint for applications that have none.
//!
//! warden-core counts through the `metrics` facade; this crate installs the Prometheus recorder
//! (metrics-exporter-prometheus, without its own HTTP server) and serves its text on our own
//! axum route. The endpoint binds to loopback unless told otherwise. [`web`] is the observer:
//! a live web page of a cluster's trees, crash reports, membership and checkpoints, with the
//! same `/metrics` and health endpoints; [`snapshot`] holds the types of what it draws.
//!
//! ```no_run
//! # async fn demo() -> Result<(), warden_observe::ObserveError> {
//! let prometheus = warden_observe::install_prometheus()?; // before starting trees
//! let endpoint = warden_observe::MetricsEndpoint::serve(prometheus.clone(), None).await?;
//! println!("metrics at http://{}/metrics", endpoint.addr());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod snapshot;
pub mod web;

use std::net::{Ipv4Addr, SocketAddr};

use axum::routing::get;
pub use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::oneshot;

/// What went wrong, and where.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// Another metrics recorder is already installed in this process.
    #[error("a metrics recorder is already installed in this process: {0}")]
    RecorderInstalled(String),
    /// The endpoint could not bind its address.
    #[error("the HTTP endpoint could not bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// Installs the Prometheus recorder as the process's metrics recorder and returns the handle
/// that renders the exposition text. Install it before starting supervision trees: metric
/// handles registered before stay with the previous (no-op) recorder.
pub fn install_prometheus() -> Result<PrometheusHandle, ObserveError> {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| ObserveError::RecorderInstalled(e.to_string()))?;
    Ok(handle)
}

/// The Prometheus text exposition (format 0.0.4) of every metric recorded so far, to mount on
/// an application's own HTTP server.
pub fn render(handle: &PrometheusHandle) -> String {
    handle.render()
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A running `/metrics` endpoint; stops when dropped or on [`MetricsEndpoint::stop`].
pub struct MetricsEndpoint {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsEndpoint {
    /// Serves `GET /metrics` on `addr`, by default `127.0.0.1` on a port chosen by the system
    /// (loopback: pass another address only to expose metrics beyond this machine).
    pub async fn serve(handle: PrometheusHandle, addr: Option<SocketAddr>) -> Result<Self, ObserveError> {
        let addr = addr.unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| ObserveError::Bind { addr, source })?;
        let bound = listener.local_addr().map_err(|source| ObserveError::Bind { addr, source })?;
        let app = axum::Router::new().route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], handle.render()) }
            }),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = served.await {
                tracing::error!(error = %e, "metrics endpoint stopped with an error");
            }
        });
        tracing::info!(addr = %bound, "metrics endpoint listening");
        Ok(MetricsEndpoint { addr: bound, stop: Some(stop), task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for the server to finish.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}
