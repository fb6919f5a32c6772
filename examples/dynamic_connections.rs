//! A dynamic supervisor for connections: children come and go at run time.
//!
//! Shows: `SupervisorSpec::dynamic(Some(max))`, `start_child` with generated instance ids,
//! the `max_children` bound and its error, transient connections that end normally and are
//! removed, and a crashed connection restarted one-for-one.
//!
//! Run: `cargo run --example dynamic_connections`

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use warden::prelude::*;

enum ConnMsg {
    Request(String),
    Close,
}

#[derive(Clone)]
struct Connection;

impl Actor for Connection {
    type Msg = ConnMsg;
    type State = String;
    type Arguments = String;
    async fn pre_start(&self, _: ActorRef<ConnMsg>, peer: String) -> Result<String, ActorProcessingErr> {
        Ok(peer)
    }
    async fn handle(&self, me: ActorRef<ConnMsg>, msg: ConnMsg, peer: &mut String) -> Result<(), ActorProcessingErr> {
        match msg {
            ConnMsg::Request(r) if r == "malformed" => return Err(format!("{peer} sent a malformed request").into()),
            ConnMsg::Request(r) => println!("  {peer}: served {r}"),
            ConnMsg::Close => me.stop(None),
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listener = Supervisor::start("listener", SupervisorSpec::dynamic(Some(3))).await?;
    let mut conns = Vec::new();
    for peer in ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"] {
        let spec = ChildSpec::worker("conn", Connection, peer.to_string()).restart(RestartType::Transient);
        let handle = spec.handle();
        match listener.start_child(spec).await {
            Ok(info) => {
                println!("accepted {peer} as {}", info.path);
                conns.push(handle);
            }
            Err(e) => println!("refused {peer}: {e}"),
        }
    }
    conns[0].cast(ConnMsg::Request("GET /".into()))?;
    conns[1].cast(ConnMsg::Request("malformed".into()))?; // crashes, restarted (transient, abnormal)
    conns[1].cast(ConnMsg::Request("GET /retry".into()))?;
    conns[2].cast(ConnMsg::Close)?; // normal exit: removed
    tokio::time::sleep(Duration::from_millis(50)).await;
    for c in listener.which_children().await? {
        println!("child {} {:?} restarts={}", c.path, c.status, c.restarts);
    }
    listener.shutdown().await;
    Ok(())
}
