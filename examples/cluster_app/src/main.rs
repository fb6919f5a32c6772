//! An application cluster of one's own: several processes of this same program, started by
//! hand, form one warden cluster that keeps a durable counter as a cluster singleton.
//!
//! Shows: a node that founds a group (`--found`, once) and others that join it (`--join`), a singleton whose
//! state is journaled through the cluster (every acknowledged `add` survives the loss of any
//! minority of the nodes), finding it from any node, a linearizable read
//! (`SingletonContext::linearizable` before answering), a node leaving in order, and a typed
//! answer crossing nodes (`ractor::BytesConvertable` over JSON).
//!
//! Run, in three terminals (docs/cluster.md walks through it):
//!
//! ```sh
//! cargo run --manifest-path crates/cluster/Cargo.toml -p warden-cluster-app -- --name n1 --data-dir /tmp/app/n1 --port 7101 --found
//! cargo run --manifest-path crates/cluster/Cargo.toml -p warden-cluster-app -- --name n2 --data-dir /tmp/app/n2 --join 127.0.0.1:7101
//! cargo run --manifest-path crates/cluster/Cargo.toml -p warden-cluster-app -- --name n3 --data-dir /tmp/app/n3 --join 127.0.0.1:7101
//! ```
//!
//! then type `add 5`, `get`, `where`, `leave` or `quit` into any of them. Each answer is one
//! JSON line on stdout.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use warden::checkpoint::{Checkpoint, Checkpointed, EventSourced, SnapshotPolicy};
use warden::cluster::{ClusterEvent, Node, NodeConfig, SingletonContext, SingletonSpec};

/// How long a request waits for the counter's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request looks for the counter while it moves between nodes.
const FIND_WAIT: Duration = Duration::from_secs(10);
/// The longest command line read from stdin (bytes); a longer one is refused.
const MAX_LINE: usize = 1024;

#[derive(Parser)]
struct Args {
    /// This node's name, unique in the cluster.
    #[arg(long)]
    name: String,
    /// The cluster's cookie.
    #[arg(long, env = "APP_COOKIE", default_value = "cluster-app")]
    cookie: String,
    /// Where this node keeps its Raft log and state.
    #[arg(long)]
    data_dir: PathBuf,
    /// A member to join through, when this node has no past.
    #[arg(long)]
    join: Vec<SocketAddr>,
    /// Found a new group, when this node has no past: the first node of a new cluster, once
    /// (a node with no past and neither `--join` nor `--found` refuses to start).
    #[arg(long, conflicts_with = "join")]
    found: bool,
    /// The port to listen on (0: any free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

/// What the counter answers, to a caller on any node.
#[derive(Debug, Serialize, Deserialize)]
enum Answer {
    /// The counter's value, and the node that answered.
    Value { value: u64, node: String },
    /// The counter may not answer (its grant or lease is gone, or no leader confirmed a read).
    Refused { why: String },
}

// Answers cross nodes as bytes: JSON here (any serde format would do).
impl ractor::BytesConvertable for Answer {
    fn into_bytes(self) -> Vec<u8> {
        serde_json::to_vec(&self).unwrap_or_default()
    }
    fn from_bytes(bytes: Vec<u8>) -> Self {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| Answer::Refused { why: format!("an answer that does not decode: {e}") })
    }
}

/// The counter's messages; `#[rpc]` variants are calls that may come from other nodes.
#[derive(ractor_cluster::RactorClusterMessage)]
enum CounterMsg {
    /// Adds to the counter: journaled through the cluster before the answer.
    #[rpc]
    Add(u64, RpcReplyPort<Answer>),
    /// The value, read linearizably.
    #[rpc]
    Get(RpcReplyPort<Answer>),
}

/// The counter: a durable, event-sourced singleton.
#[derive(Clone)]
struct Counter {
    ctx: SingletonContext,
}

impl Actor for Counter {
    type Msg = CounterMsg;
    type State = u64;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<CounterMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0) // restored from the cluster's journal before the first message
    }
    async fn handle(
        &self,
        _: ActorRef<CounterMsg>,
        msg: CounterMsg,
        value: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        let node = self.ctx.node_name().to_string();
        match msg {
            CounterMsg::Add(n, reply) => {
                let (answer, restart) = match self.persist(value, n).await {
                    Ok(_) => (Answer::Value { value: *value, node }, None),
                    Err(e) => (Answer::Refused { why: e.to_string() }, e.restart_required().then_some(e)),
                };
                let _ = reply.send(answer);
                // After a refused or doubtful write this incarnation can write no more: fail
                // the handler, and the restart reopens the key (deciding that write) first.
                if let Some(e) = restart {
                    return Err(e.into());
                }
            }
            CounterMsg::Get(reply) => {
                let answer = match self.ctx.linearizable().await {
                    Ok(()) => Answer::Value { value: *value, node },
                    Err(e) => Answer::Refused { why: e.to_string() },
                };
                let _ = reply.send(answer);
            }
        }
        Ok(())
    }
}

impl Checkpoint for Counter {
    type Snapshot = u64;
    fn snapshot(&self, value: &u64) -> u64 {
        *value
    }
    fn restore(&self, value: &mut u64, saved: u64) {
        *value = saved;
    }
}

impl EventSourced for Counter {
    type Event = u64;
    fn apply(&self, value: &mut u64, added: &u64) {
        *value += added;
    }
}

fn counter_spec() -> SingletonSpec {
    SingletonSpec::new("counter", |ctx: &SingletonContext| {
        let policy = SnapshotPolicy::new().every_messages(100).retain(2);
        (Checkpointed::durable(Counter { ctx: ctx.clone() }, ctx.checkpoints(), "app/counter", policy), ())
    })
    .checkpoint_key("app/counter")
}

fn say(value: serde_json::Value) {
    println!("{value}");
}

/// Calls the counter wherever it runs, looking again while it moves.
async fn ask(node: &Node, make: impl Fn(RpcReplyPort<Answer>) -> CounterMsg) -> serde_json::Value {
    let until = Instant::now() + FIND_WAIT;
    loop {
        if let Some(counter) = node.locate::<CounterMsg>("counter") {
            match counter.call(&make, Some(CALL_TIMEOUT)).await {
                Ok(ractor::rpc::CallResult::Success(Answer::Value { value, node })) => {
                    return serde_json::json!({ "value": value, "on": node });
                }
                Ok(ractor::rpc::CallResult::Success(Answer::Refused { why })) => {
                    return serde_json::json!({ "error": why });
                }
                // A timeout or an instance that went away: its outcome is unknown.
                Ok(_) | Err(_) => return serde_json::json!({ "error": "no answer from the counter" }),
            }
        }
        if Instant::now() > until {
            return serde_json::json!({ "error": format!("the counter was not found within {FIND_WAIT:?}") });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).init();
    let args = Args::parse();
    anyhow::ensure!(!args.cookie.is_empty(), "--cookie must not be empty");
    let mut config = NodeConfig::new(args.name.clone(), args.cookie).data_dir(&args.data_dir);
    config.transport.port = args.port;
    if args.found {
        config = config.found();
    }
    for addr in &args.join {
        config = config.join(*addr);
    }
    let node = Node::start(config, vec![counter_spec()]).await?;
    say(serde_json::json!({ "ready": { "addr": node.addr().to_string(), "id": node.id() } }));
    let mut events = node.subscribe();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            match e {
                ClusterEvent::Joined { .. } => say(serde_json::json!({ "event": "joined" })),
                ClusterEvent::Serving => say(serde_json::json!({ "event": "serving" })),
                ClusterEvent::NotServing => say(serde_json::json!({ "event": "not_serving" })),
                _ => {}
            }
        }
    });

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let line = tokio::select! {
            line = lines.next_line() => line?,
            _ = term.recv() => None,
        };
        let Some(line) = line else { break };
        if line.len() > MAX_LINE {
            say(serde_json::json!({ "error": format!("a command of {} bytes (at most {MAX_LINE})", line.len()) }));
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["add", n] => match n.parse::<u64>() {
                Ok(n) => say(ask(&node, |reply| CounterMsg::Add(n, reply)).await),
                Err(_) => say(serde_json::json!({ "error": format!("add {n:?}: not a number") })),
            },
            ["get"] => say(ask(&node, CounterMsg::Get).await),
            ["where"] => say(serde_json::json!({ "hosted": node.hosted(), "leader": node.membership().leader })),
            ["leave"] => {
                let left = node.leave().await;
                say(serde_json::json!({ "left": left.is_ok(), "error": left.err().map(|e| e.to_string()) }));
                return Ok(());
            }
            ["quit"] => break,
            [] => {}
            _ => say(serde_json::json!({ "error": format!("{line:?}: commands are add N, get, where, leave, quit") })),
        }
    }
    node.stop().await;
    Ok(())
}
