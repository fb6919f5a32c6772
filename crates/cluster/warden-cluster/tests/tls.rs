//! Mutual TLS between nodes: nodes with certificates from the cluster's CA meet; a node whose
//! certificate comes from another CA is refused, and the refusal names its address and cause.

mod support;

use std::time::Duration;

use support::pki::{pki, tls, Pki};
use warden_cluster::{NodeEvent, RefusedCause, Transport, TransportConfig};

const DEADLINE: Duration = Duration::from_secs(10);

fn config(name: &str, p: &Pki) -> TransportConfig {
    let mut c = TransportConfig::new(name, "tls-cookie");
    c.tls = Some(tls(p));
    c
}

async fn next(rx: &mut tokio::sync::broadcast::Receiver<NodeEvent>, pred: impl Fn(&NodeEvent) -> bool) -> NodeEvent {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Ok(e)) if pred(&e) => return e,
            Ok(Ok(_)) => continue,
            other => panic!("no matching event within {DEADLINE:?}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_one_ca_meet_and_a_foreign_certificate_is_refused() {
    let cluster = pki();
    let a = Transport::start(config("tls-a", &cluster)).await.unwrap();
    let b = Transport::start(config("tls-b", &cluster)).await.unwrap();
    assert!(a.addr().ip().is_loopback());
    let mut ea = a.subscribe();
    b.connect(a.addr()).await.unwrap();
    next(&mut ea, |e| matches!(e, NodeEvent::Up { peer, .. } if peer == "tls-b")).await;

    let stranger = Transport::start(config("tls-x", &pki())).await.unwrap();
    let _ = stranger.connect(a.addr()).await; // fails on either side's certificate check
    match next(&mut ea, |e| matches!(e, NodeEvent::Refused { .. } | NodeEvent::Up { .. })).await {
        NodeEvent::Refused { addr, cause } => {
            assert!(addr.starts_with("127.0.0.1:"), "{addr}");
            assert!(matches!(cause, RefusedCause::Tls { .. } | RefusedCause::TlsTimeout { .. }), "{cause}");
        }
        other => panic!("a node with a foreign certificate got in: {other:?}"),
    }
}
