//! The `warden` command.
//!
//! `warden node --name N --cookie C (--found | --join ADDR...) [--data-dir DIR] [--bind IP]
//! [--port P] [--connect ADDR]... [--tls-ca CA.pem --tls-cert NODE.pem --tls-key NODE.key]`
//! runs one node
//! (for users forming a cluster by hand, across machines or on one) and prints what it sees
//! of its peers as one JSON object per line on stdout: first `{"event":"listening",...}`,
//! then `up`, `suspected`, `recovered`, `down` and `refused` events. Logs go to stderr
//! (`RUST_LOG` filters them). Ctrl-C or SIGTERM stops the node.
//!
//! `warden node ... --observe [ADDR]` and `warden demo ... --observe [ADDR]` also serve the
//! observer web page (docs/observer.md).
//!
//! `warden bench-cluster [--reps N] [--quiet-s S] [--failovers F] [--commit-writers W]
//! [--commit-s S]` measures replicated durable commits, node failure detection and singleton
//! failover against real node processes and prints JSON.
//!
//! `warden demo <bank|pipeline> [--nodes N] [--duration D] [--faults PLAN] [--seed S]
//! [--report FILE] [--data-dir DIR]` runs a bundled demo cluster: N node processes (this binary
//! in the hidden `demo-node` mode) on loopback, a workload, injected faults, live progress on
//! stderr and a JSON report on stdout; it exits 1 when the demo's invariant failed. See
//! docs/demos.md.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use warden_cluster::{Node, NodeConfig, TlsSettings};

mod bench;
mod demo;

#[derive(Parser, Debug)]
#[command(name = "warden", about = "warden: fault-tolerant ractor actors")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs a bundled demo cluster under faults and prints its report as JSON.
    Demo(demo::DemoArgs),
    /// One node of a demo cluster (started by `warden demo`).
    #[command(hide = true)]
    DemoNode {
        #[arg(value_enum)]
        demo: demo::Demo,
        #[arg(long)]
        name: String,
        #[arg(long, env = "WARDEN_COOKIE", hide_env_values = true)]
        cookie: String,
        #[arg(long, default_value = "127.0.0.1")]
        bind: IpAddr,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        join: Vec<SocketAddr>,
        #[arg(long)]
        found: bool,
        #[arg(long)]
        accounts: usize,
        #[arg(long)]
        data_dir: std::path::PathBuf,
        #[arg(long, default_value_t = 1)]
        min_members: usize,
    },
    /// Measures replicated durable commits, node failure detection and singleton failover
    /// against real node processes on loopback and prints the figures as JSON:
    /// `replicated_commit_per_s`, `replicated_commit_p99_ms`, `node_down_killed_p99_ms`,
    /// `node_down_frozen_p99_ms`, `false_suspicions`, `singleton_failover_p99_ms`, `failover_leader_killed_p99_ms`, `failover_follower_killed_p99_ms` (each `{"warden": value}`, the shape of warden-bench's output).
    BenchCluster {
        /// Kills and freezes measured, each.
        #[arg(long, default_value_t = 20)]
        reps: usize,
        /// Seconds of three idle nodes watched for false suspicions.
        #[arg(long, default_value_t = 30)]
        quiet_s: u64,
        /// Failovers measured in a 3-node bank demo: kills of the node hosting the auditor and
        /// of the Raft leader, in turn (each restarted 4 s later); 0 skips them.
        #[arg(long, default_value_t = 20)]
        failovers: usize,
        /// Writers (event-sourced singletons) in the replicated-commit run, spread over 3 nodes.
        #[arg(long, default_value_t = 256)]
        commit_writers: usize,
        /// Seconds the replicated-commit run writes 1 KiB events; 0 skips it.
        #[arg(long, default_value_t = 5)]
        commit_s: u64,
    },
    /// One node of the replicated-commit benchmark (started by `warden bench-cluster`).
    #[command(hide = true)]
    BenchNode {
        #[arg(long)]
        name: String,
        #[arg(long)]
        join: SocketAddr,
        #[arg(long)]
        data_dir: std::path::PathBuf,
        #[arg(long)]
        writers: usize,
    },
    /// Runs one cluster node and prints what it sees (its peers, the group) as JSON lines.
    Node {
        /// The node's name, unique in the cluster.
        #[arg(long)]
        name: String,
        /// The cluster cookie (or the WARDEN_COOKIE environment variable).
        #[arg(long, env = "WARDEN_COOKIE", hide_env_values = true)]
        cookie: String,
        /// The address to listen on. Binding anything but loopback exposes the node.
        #[arg(long, default_value = "127.0.0.1")]
        bind: IpAddr,
        /// The port (0: a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Join the group of the node at this address (repeatable: any member will do), when
        /// this node has no past (its data directory is new or empty).
        #[arg(long)]
        join: Vec<SocketAddr>,
        /// Found a new group, when this node has no past: for the first node of a new cluster,
        /// once. A node with no past and neither --join nor --found refuses to start (a founder
        /// whose disk was lost would otherwise found a second group beside the first).
        #[arg(long, conflicts_with = "join")]
        found: bool,
        /// Keep a session with the node at this address without joining its group (repeatable).
        #[arg(long)]
        connect: Vec<SocketAddr>,
        /// Where the node keeps its Raft log and state (default: in memory, a node with no past).
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// Heartbeat interval in milliseconds.
        #[arg(long, default_value_t = 100)]
        heartbeat_ms: u64,
        /// Mutual TLS: the cluster CA certificate(s), PEM (with --tls-cert and --tls-key).
        #[arg(long)]
        tls_ca: Option<std::path::PathBuf>,
        /// Mutual TLS: this node's certificate chain, PEM.
        #[arg(long)]
        tls_cert: Option<std::path::PathBuf>,
        /// Mutual TLS: this node's private key, PEM.
        #[arg(long)]
        tls_key: Option<std::path::PathBuf>,
        /// Mutual TLS: the name the node certificates are issued for.
        #[arg(long, default_value = "warden-node")]
        tls_name: String,
        /// Serve the observer page (this node's view of the membership, with phi), `/metrics`
        /// and the health endpoints on this address, 127.0.0.1 on a free port when none is
        /// given. No fault injection: that exists only in demo mode.
        #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:0")]
        observe: Option<SocketAddr>,
    },
}

/// What is logged when `RUST_LOG` is not set: warnings, except ractor_cluster's node session,
/// which warns of every remote actor's ordinary exit ("unknown child actor exit event"): one
/// line per singleton per peer when a node restarts many of them, which costs a busy node
/// real CPU.
const DEFAULT_LOG: &str = "warn,ractor_cluster::node::node_session=error";

/// Prints one report line on stdout (the shape demo nodes use).
fn print(report: &demo::protocol::Report) {
    println!("{}", serde_json::to_string(report).unwrap_or_default());
}

/// How often a bare node's observer page is refreshed.
const OBSERVE_EVERY: Duration = Duration::from_millis(500);

/// Serves the observer for a bare node: itself and its peers as it sees them (a bare node runs
/// no supervision tree of its own), refreshed twice a second; no fault injection.
async fn observe_node(node: &Node, addr: SocketAddr) -> anyhow::Result<warden_observe::web::Observer> {
    use warden_observe::snapshot::{ClusterSnapshot, NodeEntry, NodeState, NodeView, PeerState, PeerView};
    let view = node.transport().view();
    let (tx, rx) = tokio::sync::watch::channel(ClusterSnapshot::default());
    let (_ready_tx, ready_rx) = tokio::sync::watch::channel(true);
    let config = warden_observe::web::ObserverConfig {
        bind: Some(addr),
        metrics: warden_observe::install_prometheus().ok(),
        faults: None,
    };
    let observer = warden_observe::web::Observer::serve(config, rx, ready_rx).await?;
    let me = node.addr().to_string();
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        loop {
            let peers = view.peers();
            let observed_peers: Vec<PeerView> = peers
                .iter()
                .map(|p| PeerView {
                    name: p.name.clone(),
                    state: demo::gateway::peer_state(p.state),
                    phi: p.phi.is_finite().then_some(p.phi),
                    silent_ms: p.silent_ms,
                })
                .collect();
            let own = NodeView { node: view.name().to_string(), peers: observed_peers, ..NodeView::default() };
            let mut nodes = vec![NodeEntry {
                name: view.name().to_string(),
                state: NodeState::Up,
                addr: Some(me.clone()),
                observed: Some(own),
            }];
            nodes.extend(peers.iter().map(|p| NodeEntry {
                name: p.name.clone(),
                state: match demo::gateway::peer_state(p.state) {
                    PeerState::Up => NodeState::Up,
                    PeerState::Suspected => NodeState::Suspected,
                    PeerState::Down => NodeState::Down,
                },
                addr: None,
                observed: None,
            }));
            let snapshot = ClusterSnapshot {
                ready: true,
                elapsed_ms: started.elapsed().as_millis() as u64,
                nodes,
                ..ClusterSnapshot::default()
            };
            if tx.send(snapshot).is_err() {
                return;
            }
            tokio::time::sleep(OBSERVE_EVERY).await;
        }
    });
    eprintln!("observer: http://{}/", observer.addr());
    Ok(observer)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a demo node's log goes to its launcher through a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_LOG.into()))
        .init();
    match Cli::parse().command {
        Command::Demo(args) => {
            let code = demo::run(args).await?;
            if code != 0 {
                std::process::exit(code);
            }
        }
        Command::DemoNode { demo, name, cookie, bind, port, join, found, accounts, data_dir, min_members } => {
            anyhow::ensure!(!cookie.is_empty(), "the cookie must not be empty");
            let settings = demo::node::NodeSettings {
                demo,
                name,
                cookie,
                bind,
                port,
                join,
                found,
                data_dir,
                accounts,
                min_members,
            };
            demo::node::run(settings).await?;
        }
        Command::BenchCluster { reps, quiet_s, failovers, commit_writers, commit_s } => {
            bench::run(bench::BenchSettings {
                reps: reps.max(1),
                quiet: Duration::from_secs(quiet_s),
                failovers,
                commit_writers,
                commit_for: Duration::from_secs(commit_s),
            })
            .await?
        }
        Command::BenchNode { name, join, data_dir, writers } => {
            bench::commits::node(name, join, data_dir, writers).await?
        }
        Command::Node {
            name,
            cookie,
            bind,
            port,
            join,
            found,
            connect,
            data_dir,
            heartbeat_ms,
            tls_ca,
            tls_cert,
            tls_key,
            tls_name,
            observe,
        } => {
            use demo::protocol::Report;
            anyhow::ensure!(!cookie.is_empty(), "--cookie must not be empty");
            anyhow::ensure!(heartbeat_ms > 0, "--heartbeat-ms must be at least 1");
            let tls = match (tls_ca, tls_cert, tls_key) {
                (None, None, None) => None,
                (Some(ca), Some(cert), Some(key)) => Some(TlsSettings::from_pem_files(&ca, &cert, &key, tls_name)?),
                _ => anyhow::bail!("--tls-ca, --tls-cert and --tls-key go together: give all three or none"),
            };
            let mut config = NodeConfig::new(name.clone(), cookie);
            config.transport.tls = tls;
            config.transport.bind = bind;
            config.transport.port = port;
            config.transport.heartbeat_interval = Duration::from_millis(heartbeat_ms);
            config.join = join;
            config.found = found;
            config.data_dir = data_dir;
            let node = Node::start(config, Vec::new()).await.with_context(|| format!("starting node {name}"))?;
            let mut peers = node.transport().subscribe();
            let mut cluster = node.subscribe();
            print(&Report::Ready {
                node: name.clone(),
                addr: node.addr().to_string(),
                pid: std::process::id(),
                id: node.id(),
            });
            let _observer = match observe {
                Some(addr) => Some(observe_node(&node, addr).await?),
                None => None,
            };
            for addr in connect {
                node.transport().connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
            }
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            loop {
                tokio::select! {
                    e = peers.recv() => match e {
                        Ok(e) => print(&Report::Peer { node: name.clone(), event: e }),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => break,
                    },
                    e = cluster.recv() => match e {
                        Ok(e) => print(&Report::Cluster { node: name.clone(), event: e.clone() }),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => break,
                    },
                    _ = tokio::signal::ctrl_c() => break,
                    _ = term.recv() => break,
                }
            }
            node.stop().await;
        }
    }
    Ok(())
}
