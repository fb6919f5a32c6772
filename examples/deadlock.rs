//! A deadlock between two actors that warden detects and breaks.
//!
//! Shows: `ChildSpec::deadline`, the watchdog reporting a handler stuck past its deadline
//! (`ExitReason::Hung`, with how long and which message type), the stuck child killed and
//! restarted by its supervisor, and both actors serving again afterwards.
//!
//! Run: `cargo run --example deadlock`

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use warden::prelude::*;

enum Msg {
    /// Ask the peer, and answer with what it said.
    AskPeer(RpcReplyPort<&'static str>),
    Ping(RpcReplyPort<&'static str>),
}

#[derive(Clone)]
struct Clerk {
    name: &'static str,
    peer: Arc<OnceLock<ChildRef<Msg>>>,
}

impl Actor for Clerk {
    type Msg = Msg;
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Msg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle(&self, _: ActorRef<Msg>, msg: Msg, _: &mut ()) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::AskPeer(reply) => {
                // Each clerk asks the other before answering: with both asked at once, each
                // waits for the other forever.
                if let Some(peer) = self.peer.get() {
                    let answer = peer.call(Msg::AskPeer, None).await?;
                    let _ = reply.send(answer);
                }
            }
            Msg::Ping(reply) => {
                let _ = reply.send(self.name);
            }
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let deadline = Duration::from_millis(300);
    let (alice, bob) = (Clerk { name: "alice", peer: Arc::default() }, Clerk { name: "bob", peer: Arc::default() });
    let (a, b) = (
        ChildSpec::worker("alice", alice.clone(), ()).deadline(deadline),
        ChildSpec::worker("bob", bob.clone(), ()).deadline(deadline),
    );
    let (ha, hb) = (a.handle(), b.handle());
    let _ = alice.peer.set(hb.clone());
    let _ = bob.peer.set(ha.clone());
    let app = Supervisor::start("office", SupervisorSpec::one_for_one().child(a).child(b)).await?;
    let mut events = app.subscribe();

    let t0 = Instant::now();
    println!("asking alice, who asks bob, who asks alice... (deadline {deadline:?})");
    let waiting = tokio::spawn({
        let ha = ha.clone();
        async move { ha.call(Msg::AskPeer, Some(Duration::from_secs(10))).await }
    });
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_secs(2), events.recv()).await {
        match e {
            SupervisorEvent::ChildExited { path, reason, .. } => {
                println!("{:>5} ms  {path}: {reason}", t0.elapsed().as_millis())
            }
            SupervisorEvent::ChildRestarted { path, incarnation, .. } => {
                println!("{:>5} ms  {path} restarted (incarnation {incarnation})", t0.elapsed().as_millis())
            }
            _ => {}
        }
    }
    println!("the original caller got: {:?}", waiting.await?.map_err(|e| e.to_string()));
    for h in [&ha, &hb] {
        println!("{} answers: {:?}", h.path(), h.call(Msg::Ping, Some(Duration::from_secs(1))).await?);
    }
    app.shutdown().await;
    Ok(())
}
