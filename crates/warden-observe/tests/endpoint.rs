//! The Prometheus exposition of a live tree, fetched over HTTP from the loopback endpoint.
//!
//! Alone in its test binary: it installs the process-wide metrics recorder.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use warden_core::{ChildSpec, Supervisor, SupervisorEvent, SupervisorSpec};

#[derive(Clone)]
struct Fragile;

impl Actor for Fragile {
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(&self, _: ActorRef<()>, _: (), _: &mut ()) -> Result<(), ActorProcessingErr> {
        Err("fragile".into())
    }
}

/// A GET through a real HTTP client (hyper's): the status code, the content type and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = format!("http://{addr}{path}").parse().expect("a valid address");
    let answer = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .expect("the endpoint answers")
        .expect("an HTTP answer");
    let code = answer.status().as_u16();
    let kind = answer.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let bytes = answer.into_body().collect().await.expect("read the body").to_bytes();
    (code, kind, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn the_endpoint_serves_warden_metrics_on_loopback() {
    let prometheus = warden_observe::install_prometheus().expect("the only recorder here");
    assert!(matches!(warden_observe::install_prometheus(), Err(warden_observe::ObserveError::RecorderInstalled(_))));

    let spec = ChildSpec::worker("w", Fragile, ());
    let h = spec.handle();
    let app = Supervisor::start("obs", SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    let mut events = app.subscribe();
    h.cast(()).unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(SupervisorEvent::ChildRestarted { .. })) => break,
            Ok(Ok(_)) => {}
            other => panic!("no restart: {other:?}"),
        }
    }
    app.count_children().await.unwrap();
    // Counting is deferred by at most `FLUSH_DELAY` after a failure; write it now.
    app.events().flush();

    let endpoint = warden_observe::MetricsEndpoint::serve(prometheus.clone(), None).await.unwrap();
    assert!(endpoint.addr().ip().is_loopback(), "binds to loopback by default");
    let (code, kind, answer) = get(endpoint.addr(), "/metrics").await;
    assert_eq!(code, 200, "{answer}");
    assert!(kind.contains("text/plain; version=0.0.4"), "{kind}");
    assert!(answer.contains(r#"warden_failures_total{path="/obs/w",reason="error"} 1"#), "{answer}");
    assert!(answer.contains(r#"warden_restarts_total{path="/obs/w"} 1"#), "{answer}");
    assert!(answer.contains("warden_recovery_seconds"), "{answer}");
    assert!(warden_observe::render(&prometheus).lines().count() > 3);
    let (code, _, missing) = get(endpoint.addr(), "/nothing").await;
    assert_eq!(code, 404, "{missing}");
    endpoint.stop().await;
    app.shutdown().await;
}
