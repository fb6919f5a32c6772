//! Test certificates: a CA and a node certificate signed by it (rcgen), and the TLS settings
//! of a node that trusts that CA.

use std::sync::Arc;

use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use warden_cluster::TlsSettings;

/// A CA and a node certificate for "warden-node" signed by it.
pub struct Pki {
    ca: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

/// A fresh CA, and a node certificate for "warden-node" signed by it with its key.
fn generate() -> (rcgen::Certificate, rcgen::Certificate, rcgen::KeyPair) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let node_key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["warden-node".to_string()]).unwrap().signed_by(&node_key, &issuer).unwrap();
    (ca, cert, node_key)
}

pub fn pki() -> Pki {
    let (ca, cert, node_key) = generate();
    Pki {
        ca: ca.der().clone(),
        cert: cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(node_key.serialize_der())),
    }
}

/// A fresh CA, node certificate and key as PEM files in `dir`: `(ca, cert, key)` paths.
pub fn pem_files(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let (ca, cert, node_key) = generate();
    let paths = (dir.join("ca.pem"), dir.join("node.pem"), dir.join("node.key"));
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, node_key.serialize_pem()).unwrap();
    paths
}

pub fn tls(p: &Pki) -> TlsSettings {
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
