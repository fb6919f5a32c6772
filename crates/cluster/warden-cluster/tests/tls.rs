//! Mutual TLS between nodes: nodes with certificates from the cluster's CA meet; a node whose
//! certificate comes from another CA is refused, and the refusal names its address and cause.

use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use warden_cluster::{NodeEvent, TlsSettings, Transport, TransportConfig};

const DEADLINE: Duration = Duration::from_secs(10);

/// A CA and a node certificate for "warden-node" signed by it.
struct Pki {
    ca: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn pki() -> Pki {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let node_key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["warden-node".to_string()]).unwrap().signed_by(&node_key, &issuer).unwrap();
    Pki {
        ca: ca.der().clone(),
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(node_key.serialize_der())),
    }
}

fn tls(p: &Pki) -> TlsSettings {
    let mut roots = RootCertStore::empty();
    roots.add(p.ca.clone()).unwrap();
    let roots = Arc::new(roots);
    let verifier = WebPkiClientVerifier::builder(roots.clone()).build().unwrap();
    let server = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![p.cert.clone()], p.key.clone_key())
        .unwrap();
    let client = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![p.cert.clone()], p.key.clone_key())
        .unwrap();
    TlsSettings { server: Arc::new(server), client: Arc::new(client), server_name: "warden-node".into() }
}

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
            assert!(cause.contains("TLS"), "{cause}");
        }
        other => panic!("a node with a foreign certificate got in: {other:?}"),
    }
}
