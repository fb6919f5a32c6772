//! Reaching singletons on another node: with many singletons spread over two real node
//! processes, every one answers a call from this node, and this node keeps a constant number
//! of ractor_cluster proxies for the other node, not one per singleton it hosts.
//!
//! The other node is this test binary run again (`routing_peer`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use warden_cluster::{Node, NodeConfig, SingletonContext, SingletonSpec};

/// Singletons in the test: enough that one proxy per singleton stands out.
const SINGLETONS: usize = 120;
/// How long the cluster may take to form and spread them (a bound, not a measurement).
const SETTLE: Duration = Duration::from_secs(90);
const COOKIE: &str = "routing-test";

#[derive(ractor_cluster::RactorClusterMessage)]
enum EchoMsg {
    /// Answers the name of the node the instance runs on.
    #[rpc]
    Where(RpcReplyPort<String>),
}

#[derive(Clone)]
struct Echo {
    node: String,
}

impl Actor for Echo {
    type Msg = EchoMsg;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<EchoMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(&self, _: ActorRef<EchoMsg>, msg: EchoMsg, _: &mut ()) -> Result<(), ActorProcessingErr> {
        let EchoMsg::Where(reply) = msg;
        let _ = reply.send(self.node.clone());
        Ok(())
    }
}

fn specs() -> Vec<SingletonSpec> {
    (0..SINGLETONS)
        .map(|i| {
            SingletonSpec::new(format!("echo-{i}"), |ctx: &SingletonContext| {
                (Echo { node: ctx.node_name().to_string() }, ())
            })
        })
        .collect()
}

/// The other node: joins the node at `WARDEN_ROUTING_JOIN` and runs until killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the peer process of the routing test"]
async fn routing_peer() {
    let (Ok(join), Ok(dir)) = (std::env::var("WARDEN_ROUTING_JOIN"), std::env::var("WARDEN_ROUTING_DIR")) else {
        panic!("run by the routing test only");
    };
    let config = NodeConfig::new("routing-b", COOKIE).data_dir(dir).join(join.parse().expect("an address"));
    let _node = Node::start(config, specs()).await.expect("the peer node starts");
    println!("ready");
    tokio::time::sleep(Duration::from_secs(600)).await;
}

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Remote members of all process groups this process knows: each is a ractor_cluster proxy.
fn remote_members() -> usize {
    ractor::pg::which_groups()
        .iter()
        .map(|g| ractor::pg::get_members(g).iter().filter(|c| !c.get_id().is_local()).count())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_singleton_answers_across_nodes_through_a_constant_number_of_proxies() {
    let dirs = (tempfile::tempdir().expect("a dir"), tempfile::tempdir().expect("a dir"));
    let a = Node::start(NodeConfig::new("routing-a", COOKIE).data_dir(dirs.0.path()).found(), specs())
        .await
        .expect("this node founds");
    let _peer = Peer(
        Command::new(std::env::current_exe().expect("the test binary"))
            .args(["--ignored", "--exact", "routing_peer", "--nocapture", "--test-threads", "1"])
            .env("WARDEN_ROUTING_JOIN", a.addr().to_string())
            .env("WARDEN_ROUTING_DIR", dirs.1.path())
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the peer starts"),
    );

    // Until the placement has spread and every singleton answers from where it runs.
    let until = Instant::now() + SETTLE;
    let answers = loop {
        let mut answers = Vec::with_capacity(SINGLETONS);
        for i in 0..SINGLETONS {
            let Some(echo) = a.locate::<EchoMsg>(&format!("echo-{i}")) else { break };
            match echo.call(EchoMsg::Where, Some(Duration::from_secs(2))).await {
                Ok(CallResult::Success(node)) => answers.push(node),
                _ => break,
            }
        }
        let on_b = answers.iter().filter(|n| *n == "routing-b").count();
        if answers.len() == SINGLETONS && on_b >= SINGLETONS / 3 {
            break answers;
        }
        assert!(
            Instant::now() < until,
            "within {SETTLE:?}: {} of {SINGLETONS} answered, {on_b} of them from the other node",
            answers.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let on_b = answers.iter().filter(|n| *n == "routing-b").count();
    let hosted_here = a.hosted().len();
    assert_eq!(on_b + hosted_here, SINGLETONS, "each answered from the node that hosts it: {answers:?}");

    // The other node's heartbeat, Raft and routing actors, not one proxy per singleton.
    let proxies = remote_members();
    assert!(
        proxies < 10,
        "this node holds {proxies} proxies of remote actors while the other node hosts {on_b} singletons"
    );
    a.stop().await;
}
