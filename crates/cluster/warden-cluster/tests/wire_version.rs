//! A real node's RPC actor serves requests of its own wire version and refuses, without
//! decoding or serving them, requests of another version (a newer build's, or a bare payload
//! from a build before the header): it answers a bare header with its own version, from which
//! the caller's `CallError::Version` names both. A request of its own version that does not
//! decode is answered the same way (the caller fails at once). One real node that founds its
//! own group.

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::ActorRef;
use warden_cluster::raft::network::{group_of, unframe, Reply, Request, RpcMsg, WIRE_VERSION};
use warden_cluster::{Node, NodeConfig};

const WAIT: Duration = Duration::from_secs(10);

async fn ask(actor: &ActorRef<RpcMsg>, payload: Vec<u8>) -> Vec<u8> {
    match actor.call(|port| RpcMsg::Call(payload, port), Some(WAIT)).await {
        Ok(CallResult::Success(bytes)) => bytes,
        other => panic!("no answer within {WAIT:?}: {other:?}"),
    }
}

fn with_header(version: u16, body: &[u8]) -> Vec<u8> {
    let mut payload = vec![0xC1];
    payload.extend_from_slice(&version.to_be_bytes());
    payload.extend_from_slice(body);
    payload
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_another_wire_version_is_refused_unread() {
    let dir = tempfile::tempdir().expect("a dir");
    let node = Node::start(NodeConfig::new("wire-a", "wire-test").data_dir(dir.path()).found(), Vec::new())
        .await
        .expect("the node starts");
    let cell = ractor::pg::get_members(&group_of(node.id())).into_iter().next().expect("its RPC actor");
    let actor = ActorRef::<RpcMsg>::from(cell);
    let body = rmp_serde::to_vec(&Request::ReadIndex).expect("encodes");

    // Its own version: served (the answer, whatever it is, is a read-index reply).
    let answer = ask(&actor, with_header(WIRE_VERSION, &body)).await;
    let (version, reply) = unframe(&answer).expect("a header");
    assert_eq!(version, WIRE_VERSION);
    let reply: Reply = rmp_serde::from_slice(reply).expect("a reply of this version decodes");
    assert!(matches!(reply, Reply::ReadIndex(_)), "{reply:?}");

    // A newer version, and a bare payload from before the header: a bare header back.
    let bare_header = with_header(WIRE_VERSION, &[]);
    assert_eq!(ask(&actor, with_header(WIRE_VERSION + 1, &body)).await, bare_header, "served across versions");
    assert_eq!(ask(&actor, body.clone()).await, bare_header, "served a payload without a header");

    // Its own version with a body that is no request (damaged): answered at once, with the
    // same bare header ("not understood"), so the caller need not wait out its deadline.
    assert_eq!(
        ask(&actor, with_header(WIRE_VERSION, &[0xC1, 0xFF])).await,
        bare_header,
        "a damaged request unanswered"
    );
    node.stop().await;
}
