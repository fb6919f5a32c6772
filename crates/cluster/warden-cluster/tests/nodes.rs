//! Nodes over real loopback TCP in one process: the handshake with the cookie, heartbeats
//! without false suspicion, a stopped peer declared down, a wrong cookie refused.

use std::time::Duration;

use tokio::sync::broadcast::Receiver;
use warden_cluster::{NodeEvent, RefusedCause, Transport, TransportConfig};

const DEADLINE: Duration = Duration::from_secs(10);

async fn next(rx: &mut Receiver<NodeEvent>, what: &str, pred: impl Fn(&NodeEvent) -> bool) -> NodeEvent {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Ok(e)) if pred(&e) => return e,
            Ok(Ok(_)) => continue,
            other => panic!("no {what} within {DEADLINE:?}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_meet_beat_and_see_a_stopped_peer_go_down() {
    let a = Transport::start(TransportConfig::new("node-a", "cookie-1")).await.unwrap();
    let b = Transport::start(TransportConfig::new("node-b", "cookie-1")).await.unwrap();
    assert!(a.addr().ip().is_loopback() && b.addr().ip().is_loopback(), "loopback by default");
    let (mut ea, mut eb) = (a.subscribe(), b.subscribe());
    b.connect(a.addr()).await.unwrap();
    next(&mut ea, "up on a", |e| matches!(e, NodeEvent::Up { peer, .. } if peer == "node-b")).await;
    next(&mut eb, "up on b", |e| matches!(e, NodeEvent::Up { peer, .. } if peer == "node-a")).await;
    // A second of heartbeats: no suspicion either way.
    tokio::time::sleep(Duration::from_secs(1)).await;
    while let Ok(e) = ea.try_recv() {
        assert!(!matches!(e, NodeEvent::Suspected { .. } | NodeEvent::Down { .. }), "false suspicion: {e:?}");
    }
    drop(b);
    match next(&mut ea, "down", |e| matches!(e, NodeEvent::Down { .. })).await {
        NodeEvent::Down { peer, .. } => assert_eq!(peer, "node-b"),
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cookie_is_refused_with_the_peer_address() {
    let a = Transport::start(TransportConfig::new("node-c", "right")).await.unwrap();
    let intruder = Transport::start(TransportConfig::new("node-x", "wrong")).await.unwrap();
    let mut ea = a.subscribe();
    intruder.connect(a.addr()).await.unwrap();
    match next(&mut ea, "refusal", |e| matches!(e, NodeEvent::Refused { .. } | NodeEvent::Up { .. })).await {
        NodeEvent::Refused { addr, cause } => {
            assert!(addr.contains("127.0.0.1"), "{addr}");
            assert_eq!(cause, RefusedCause::Handshake);
            assert!(cause.to_string().contains("cookie"), "{cause}");
        }
        other => panic!("the intruder got in: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_completes_the_handshake_is_closed() {
    use tokio::io::AsyncReadExt;
    let mut config = TransportConfig::new("node-h", "cookie-h");
    config.handshake_timeout = Duration::from_millis(300);
    let a = Transport::start(config).await.unwrap();
    let mut ea = a.subscribe();
    // A client that connects and says nothing.
    let mut silent = tokio::net::TcpStream::connect(a.addr()).await.unwrap();
    match next(&mut ea, "refusal", |e| matches!(e, NodeEvent::Refused { .. })).await {
        NodeEvent::Refused { cause, .. } => assert_eq!(cause, RefusedCause::HandshakeTimeout { ms: 300 }),
        _ => unreachable!(),
    }
    // The node closed its end.
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(DEADLINE, silent.read(&mut buf)).await.expect("the node closes the connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
