//! The observer: a live web page of a cluster's supervision trees, crash reports, membership
//! and checkpoints, served with `/metrics` and health endpoints by one small HTTP server.
//!
//! The server does not collect anything itself: its owner publishes snapshots (one
//! [`ClusterSnapshot`] describing the whole cluster, see [`crate::snapshot`]) on a `watch`
//! channel, and
//! the page receives each new one as a server-sent event (`/events`; the browser's
//! `EventSource` reconnects by itself after a restart). The page is one static HTML file
//! compiled into the binary: no build step, no CDN, works offline.
//!
//! Fault injection (`POST /api/fault`) exists only when the owner hands the server a channel
//! for it (demo mode); otherwise the route is not registered at all, and a request gets 404.
//! The server binds to 127.0.0.1 unless told otherwise.
//!
//! ```
//! use tokio::sync::watch;
//! use warden_observe::snapshot::{ClusterSnapshot, NodeEntry, NodeState};
//! use warden_observe::web::{Observer, ObserverConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (publish, snapshots) = watch::channel(ClusterSnapshot::default());
//! let (set_ready, ready) = watch::channel(false);
//! // Loopback, a free port, no /metrics handle, no fault injection (not a demo).
//! let observer = Observer::serve(ObserverConfig::default(), snapshots, ready).await?;
//! assert!(observer.addr().ip().is_loopback());
//! set_ready.send(true)?;                                // /health/ready answers 200 from now on
//! let n1 = NodeEntry { name: "n1".into(), state: NodeState::Up, addr: None, observed: None };
//! publish.send(ClusterSnapshot { nodes: vec![n1], ..ClusterSnapshot::default() })?; // pages redraw
//! observer.stop().await;
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use futures::Stream;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::snapshot::ClusterSnapshot;
use crate::{ObserveError, CONTENT_TYPE};

/// The page, embedded.
pub const PAGE: &str = include_str!("observer.html");

/// A fault the page may ask for.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Make an actor panic.
    Panic,
    /// Make an actor's handler hang.
    Hang,
    /// Kill a node process.
    Kill,
    /// Freeze a node process for a while.
    Stop,
}

impl FaultKind {
    /// Every kind, as the page names them.
    pub const ALL: [FaultKind; 4] = [FaultKind::Panic, FaultKind::Hang, FaultKind::Kill, FaultKind::Stop];

    /// Its name on the page and in requests.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Panic => "panic",
            FaultKind::Hang => "hang",
            FaultKind::Kill => "kill",
            FaultKind::Stop => "stop",
        }
    }

    /// The kind named `name`, if any.
    pub fn parse(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for FaultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
/// How often the live event stream sends a keep-alive comment while nothing changes.
pub const SSE_KEEP_ALIVE: Duration = Duration::from_secs(10);
/// How long a fault request waits for the demo's answer before it answers 504.
pub const FAULT_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest body a client may send with a fault request, in bytes; a longer one is
/// answered 413 (Payload Too Large) with a JSON error, unread past the limit.
pub const MAX_FAULT_BODY: usize = 4 * 1024;
/// The longest fault target (a node or singleton name), in bytes; a longer one is answered 400.
pub const MAX_TARGET_LEN: usize = 100;

/// A fault asked for from the page: `target` is an actor (for `panic` / `hang`) or a node.
/// The owner answers on `reply` with what it did, or why not.
#[derive(Debug)]
pub struct FaultRequest {
    /// What to do.
    pub kind: FaultKind,
    /// To whom.
    pub target: String,
    /// The answer shown on the page.
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// What the server serves.
#[derive(Debug, Clone, Default)]
pub struct ObserverConfig {
    /// Where to listen; `None`: 127.0.0.1 on a free port.
    pub bind: Option<SocketAddr>,
    /// `/metrics` renders this recorder (404 without one).
    pub metrics: Option<PrometheusHandle>,
    /// Demo mode: fault requests go here. `None`: the fault route does not exist.
    pub faults: Option<mpsc::Sender<FaultRequest>>,
}

#[derive(Clone)]
struct AppState {
    snapshots: watch::Receiver<ClusterSnapshot>,
    ready: watch::Receiver<bool>,
    metrics: Option<PrometheusHandle>,
    faults: Option<mpsc::Sender<FaultRequest>>,
}

/// A running observer server.
#[derive(Debug)]
pub struct Observer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// The answer to a fault request: `{"ok": what was done}` or `{"error": why not}`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FaultAnswer {
    /// Done.
    Ok(String),
    /// Refused or failed, and why.
    Error(String),
}

#[derive(Deserialize)]
struct FaultBody {
    kind: String,
    target: String,
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn snapshot(State(s): State<AppState>) -> Json<ClusterSnapshot> {
    Json(s.snapshots.borrow().clone())
}

/// The current snapshot first, then every new one.
fn snapshot_stream(rx: watch::Receiver<ClusterSnapshot>) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold((rx, true), |(mut rx, first)| async move {
        if !first && rx.changed().await.is_err() {
            return None;
        }
        // Serialising these plain types cannot fail (no maps with non-string keys).
        let data = serde_json::to_string(&*rx.borrow_and_update()).unwrap_or_default();
        Some((Ok(Event::default().event("snapshot").data(data)), (rx, false)))
    })
}

async fn events(State(s): State<AppState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    Sse::new(snapshot_stream(s.snapshots.clone())).keep_alive(KeepAlive::new().interval(SSE_KEEP_ALIVE))
}

async fn metrics(State(s): State<AppState>) -> Response {
    match &s.metrics {
        Some(h) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], h.render()).into_response(),
        None => (StatusCode::NOT_FOUND, "no metrics recorder in this process\n").into_response(),
    }
}

async fn live() -> &'static str {
    "live\n"
}

async fn ready(State(s): State<AppState>) -> Response {
    if *s.ready.borrow() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn fault(
    State(s): State<AppState>,
    body: Result<Json<FaultBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let bad = |msg: String| (StatusCode::BAD_REQUEST, Json(FaultAnswer::Error(msg))).into_response();
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let error = format!("a fault request is at most {MAX_FAULT_BODY} bytes: {e}");
            return (StatusCode::PAYLOAD_TOO_LARGE, Json(FaultAnswer::Error(error))).into_response();
        }
        Err(e) => return bad(format!("expected {{\"kind\": ..., \"target\": ...}}: {e}")),
    };
    let Some(kind) = FaultKind::parse(&body.kind) else {
        let kinds: Vec<&str> = FaultKind::ALL.iter().map(|k| k.as_str()).collect();
        return bad(format!("unknown fault {:?} (one of {})", body.kind, kinds.join(", ")));
    };
    if body.target.is_empty() || body.target.len() > MAX_TARGET_LEN {
        return bad(format!("bad target {:?} (1 to {MAX_TARGET_LEN} bytes)", body.target));
    }
    let Some(faults) = &s.faults else {
        return (StatusCode::NOT_FOUND, "fault injection exists only in demo mode\n").into_response();
    };
    let (reply, answer) = oneshot::channel();
    if faults.send(FaultRequest { kind, target: body.target, reply }).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(FaultAnswer::Error("the demo is over".into()))).into_response();
    }
    match tokio::time::timeout(FAULT_ANSWER_TIMEOUT, answer).await {
        Ok(Ok(Ok(done))) => (StatusCode::OK, Json(FaultAnswer::Ok(done))).into_response(),
        Ok(Ok(Err(why))) => bad(why),
        _ => (StatusCode::GATEWAY_TIMEOUT, Json(FaultAnswer::Error("no answer from the demo".into()))).into_response(),
    }
}

impl Observer {
    /// Serves the page, `/events`, `/api/snapshot`, `/metrics`, `/health/live` and
    /// `/health/ready` (200 once `ready` is true, 503 before), and in demo mode
    /// `POST /api/fault`.
    pub async fn serve(
        config: ObserverConfig,
        snapshots: watch::Receiver<ClusterSnapshot>,
        ready_rx: watch::Receiver<bool>,
    ) -> Result<Observer, ObserveError> {
        let addr = config.bind.unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| ObserveError::Bind { addr, source })?;
        let bound = listener.local_addr().map_err(|source| ObserveError::Bind { addr, source })?;
        let demo = config.faults.is_some();
        let state = AppState { snapshots, ready: ready_rx, metrics: config.metrics, faults: config.faults };
        let mut app = axum::Router::new()
            .route("/", get(page))
            .route("/events", get(events))
            .route("/api/snapshot", get(snapshot))
            .route("/metrics", get(metrics))
            .route("/health/live", get(live))
            .route("/health/ready", get(ready));
        if demo {
            app = app.route("/api/fault", post(fault).layer(DefaultBodyLimit::max(MAX_FAULT_BODY)));
        }
        let app = app.with_state(state);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async {
                let _ = stopped.await;
            });
            if let Err(e) = served.await {
                tracing::error!(error = %e, "observer stopped with an error");
            }
        });
        tracing::info!(addr = %bound, demo, "observer listening");
        Ok(Observer { addr: bound, stop: Some(stop), task })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving (open event streams end) and waits for the server to finish.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{NodeEntry, NodeState};

    /// One HTTP request through a real client (hyper's): the status code and the body.
    async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
        use http_body_util::{BodyExt, Full};
        use hyper::body::Bytes;
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http::<Full<Bytes>>();
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("a well-formed request");
        let answer = client.request(request).await.expect("the observer answers");
        let code = answer.status().as_u16();
        let bytes = answer.into_body().collect().await.expect("read the body").to_bytes();
        (code, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn serves_the_page_health_and_snapshots_and_refuses_faults_outside_demo_mode() {
        let (snap_tx, snap_rx) = watch::channel(ClusterSnapshot::default());
        let (ready_tx, ready_rx) = watch::channel(false);
        let obs = Observer::serve(ObserverConfig::default(), snap_rx, ready_rx).await.unwrap();
        let addr = obs.addr();
        assert!(addr.ip().is_loopback(), "loopback by default: {addr}");
        let (code, body) = http(addr, "GET", "/", "").await;
        assert_eq!(code, 200);
        assert!(body.contains("warden observer"));
        assert_eq!(http(addr, "GET", "/health/live", "").await.0, 200);
        assert_eq!(http(addr, "GET", "/health/ready", "").await.0, 503);
        ready_tx.send(true).unwrap();
        assert_eq!(http(addr, "GET", "/health/ready", "").await.0, 200);
        let n1 = NodeEntry { name: "n1".into(), state: NodeState::Up, addr: None, observed: None };
        snap_tx.send(ClusterSnapshot { nodes: vec![n1], ..ClusterSnapshot::default() }).unwrap();
        let (_, body) = http(addr, "GET", "/api/snapshot", "").await;
        assert!(body.contains("\"n1\""), "{body}");
        assert_eq!(http(addr, "GET", "/metrics", "").await.0, 404, "no recorder given");
        let (code, _) = http(addr, "POST", "/api/fault", r#"{"kind":"panic","target":"acct-1"}"#).await;
        assert_eq!(code, 404, "no fault route outside demo mode");
        obs.stop().await;
    }

    #[tokio::test]
    async fn demo_mode_passes_checked_faults_to_its_owner() {
        let (_snap_tx, snap_rx) = watch::channel(ClusterSnapshot::default());
        let (_ready_tx, ready_rx) = watch::channel(true);
        let (faults, mut requests) = mpsc::channel(4);
        let config = ObserverConfig { faults: Some(faults), ..ObserverConfig::default() };
        let obs = Observer::serve(config, snap_rx, ready_rx).await.unwrap();
        tokio::spawn(async move {
            while let Some(r) = requests.recv().await {
                let _ = r.reply.send(Ok(format!("{} {}", r.kind, r.target)));
            }
        });
        let (code, body) = http(obs.addr(), "POST", "/api/fault", r#"{"kind":"hang","target":"acct-2"}"#).await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("hang acct-2"), "{body}");
        let (code, body) = http(obs.addr(), "POST", "/api/fault", r#"{"kind":"explode","target":"n1"}"#).await;
        assert_eq!(code, 400);
        assert!(body.contains("unknown fault"), "{body}");
        let (code, _) = http(obs.addr(), "POST", "/api/fault", "not json").await;
        assert_eq!(code, 400);
        let long = format!(r#"{{"kind":"hang","target":"{}"}}"#, "x".repeat(MAX_FAULT_BODY));
        let (code, body) = http(obs.addr(), "POST", "/api/fault", &long).await;
        assert_eq!(code, 413, "{body}");
        assert!(body.contains("at most 4096 bytes"), "{body}");
        let (code, body) = http(obs.addr(), "POST", "/api/fault", r#"{"kind":"hang","target":""}"#).await;
        assert_eq!(code, 400);
        assert!(body.contains("bad target"), "{body}");
    }

    #[tokio::test]
    async fn the_event_stream_starts_with_the_current_snapshot() {
        let (tx, rx) = watch::channel(ClusterSnapshot::default());
        let mut stream = Box::pin(snapshot_stream(rx));
        use futures::StreamExt;
        assert!(stream.next().await.is_some());
        tx.send(ClusterSnapshot { elapsed_ms: 2, ..ClusterSnapshot::default() }).unwrap();
        assert!(stream.next().await.is_some(), "each new snapshot is an event");
        drop(tx);
        assert!(stream.next().await.is_none(), "the stream ends with its source");
    }
}
