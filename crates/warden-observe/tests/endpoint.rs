//! The Prometheus exposition of a live tree, fetched over HTTP from the loopback endpoint.
//!
//! Alone in its test binary: it installs the process-wide metrics recorder.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect to the endpoint");
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send the request");
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .expect("the endpoint answers")
        .expect("read the answer");
    out
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
    let answer = get(endpoint.addr(), "/metrics").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("text/plain; version=0.0.4"), "{answer}");
    assert!(answer.contains(r#"warden_failures_total{path="/obs/w",reason="error"} 1"#), "{answer}");
    assert!(answer.contains(r#"warden_restarts_total{path="/obs/w"} 1"#), "{answer}");
    assert!(answer.contains("warden_recovery_seconds"), "{answer}");
    assert!(warden_observe::render(&prometheus).lines().count() > 3);
    let missing = get(endpoint.addr(), "/nothing").await;
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    endpoint.stop().await;
    app.shutdown().await;
}
