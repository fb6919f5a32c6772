//! TLS handshakes in progress are capped (issue 15): a connection accepted while
//! `max_tls_handshakes` others are still in their handshake is closed at once and reported as
//! refused, naming the cap; once a handshake ends, a new connection is taken again.

mod support;

use std::time::Duration;

use support::pki::{pki, tls};
use tokio::io::AsyncReadExt;
use warden_cluster::{NodeEvent, RefusedCause, Transport, TransportConfig};

const DEADLINE: Duration = Duration::from_secs(10);

async fn refusal(rx: &mut tokio::sync::broadcast::Receiver<NodeEvent>) -> RefusedCause {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Ok(NodeEvent::Refused { cause, .. })) => return cause,
            Ok(Ok(_)) => continue,
            other => panic!("no refusal within {DEADLINE:?}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_the_handshake_cap_is_closed_at_once() {
    let mut config = TransportConfig::new("tls-cap", "tls-cap-cookie");
    config.tls = Some(tls(&pki()));
    config.max_tls_handshakes = 2;
    // Long enough that the silent connections below hold their permits for the whole test.
    config.handshake_timeout = Duration::from_secs(30);
    let node = Transport::start(config).await.unwrap();
    let mut events = node.subscribe();
    // Two clients that connect and never start their handshake take both permits.
    let _first = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
    let _second = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
    let mut third = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
    let cause = refusal(&mut events).await;
    assert_eq!(cause, RefusedCause::TooManyTlsHandshakes { max: 2 });
    assert!(cause.to_string().contains("2 TLS handshakes already in progress"), "{cause}");
    // The node closed the third connection.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(DEADLINE, third.read(&mut buf)).await.expect("the node closes the connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // A handshake that ends (the client goes away) frees its permit: the next connection gets
    // a handshake of its own (it fails, since this client speaks no TLS, but it is not refused
    // for the cap).
    drop(_first);
    let failed = refusal(&mut events).await;
    assert!(matches!(failed, RefusedCause::Tls { .. }), "{failed}");
    let mut fourth = tokio::net::TcpStream::connect(node.addr()).await.unwrap();
    use tokio::io::AsyncWriteExt;
    fourth.write_all(b"not a TLS client hello\r\n\r\n").await.unwrap();
    let cause = refusal(&mut events).await;
    assert!(matches!(cause, RefusedCause::Tls { .. }), "taken, not refused for the cap: {cause}");
}
