//! Checkpoints replicated to other nodes, over ractor_cluster.
//!
//! Every node runs a replica sink: a ractor actor in the process group [`REPLICA_GROUP`] that
//! commits the batches other nodes send into this node's store, and answers catch-up requests
//! with the newest state it holds for a key. [`Replication::store`] wraps the node's store in
//! warden-checkpoint's synchronous [`Replicated`] mode with a [`ClusterReplicator`]: a batch is
//! committed locally only after enough other nodes committed it (`cluster_size / 2` of them, so
//! that with the writer the batch is on a majority). A singleton that moves to another node
//! first catches up from the live nodes ([`Replication::catch_up`]) and then restores: every
//! acknowledged change is there, as long as a majority of the cluster survived.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use warden_checkpoint::{Replicated, Replicator, Store, StoreError, WriteOp};

use crate::node::NodeView;

/// The process group every node's replica sink joins.
pub const REPLICA_GROUP: &str = "warden.replica";

/// The replica sink's messages. Both are RPCs that cross nodes (ractor_cluster serialises them).
#[derive(ractor_cluster::RactorClusterMessage)]
pub enum ReplicaMsg {
    /// Commit an encoded batch; the answer is empty on success, else the error.
    #[rpc]
    Commit(Vec<u8>, RpcReplyPort<String>),
    /// The newest state held for a key (encoded [`Held`]).
    #[rpc]
    Fetch(String, RpcReplyPort<Vec<u8>>),
}

/// One write on the wire (warden-checkpoint's `WriteOp` is not serialisable by design: it is
/// the store's in-process interface).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum WireOp {
    Snapshot { key: String, seq: u64, bytes: Vec<u8>, retain: u32, created: u64 },
    Append { key: String, seq: u64, bytes: Vec<u8> },
    Delete { key: String, seq: u64 },
}

impl WireOp {
    fn from_op(op: &WriteOp) -> WireOp {
        match op {
            WriteOp::Snapshot { key, seq, bytes, retain, created_unix_ms } => WireOp::Snapshot {
                key: key.to_string(),
                seq: *seq,
                bytes: bytes.clone(),
                retain: (*retain).min(u32::MAX as usize) as u32,
                created: *created_unix_ms,
            },
            WriteOp::Append { key, seq, bytes } => {
                WireOp::Append { key: key.to_string(), seq: *seq, bytes: bytes.clone() }
            }
            WriteOp::DeleteSnapshot { key, seq } => WireOp::Delete { key: key.to_string(), seq: *seq },
        }
    }

    fn into_op(self) -> WriteOp {
        match self {
            WireOp::Snapshot { key, seq, bytes, retain, created } => WriteOp::Snapshot {
                key: Arc::from(key),
                seq,
                bytes,
                retain: (retain as usize).max(1),
                created_unix_ms: created,
            },
            WireOp::Append { key, seq, bytes } => WriteOp::Append { key: Arc::from(key), seq, bytes },
            WireOp::Delete { key, seq } => WriteOp::DeleteSnapshot { key: Arc::from(key), seq },
        }
    }
}

/// What a node holds for one key: its last sequence number, and the ops that rebuild it
/// elsewhere (the newest snapshot and the journal after it).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
struct Held {
    last_seq: u64,
    ops: Vec<WireOp>,
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    rmp_serde::to_vec(value).map_err(|e| format!("cannot encode: {e}"))
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
    rmp_serde::from_slice(bytes).map_err(|e| format!("cannot decode a replication message: {e}"))
}

/// Reads what `store` holds for `key`.
fn held(store: &dyn Store, key: &str) -> Result<Held, StoreError> {
    let last_seq = store.last_seq(key)?;
    let mut ops = Vec::new();
    let newest = store.snapshots(key)?.pop();
    let after = match newest {
        Some(info) => {
            if let Some(bytes) = store.read_snapshot(key, info.seq)? {
                ops.push(WireOp::Snapshot {
                    key: key.to_string(),
                    seq: info.seq,
                    bytes,
                    retain: 2,
                    created: info.created_unix_ms,
                });
            }
            info.seq
        }
        None => 0,
    };
    for (seq, bytes) in store.journal_after(key, after)? {
        ops.push(WireOp::Append { key: key.to_string(), seq, bytes });
    }
    Ok(Held { last_seq, ops })
}

/// The start of a sink's answer refusing a batch that would leave holes in its journal,
/// followed by the keys concerned (one per line).
const GAP: &str = "gap:";

/// What a replica refuses in a batch.
#[derive(Debug, Default, PartialEq, Eq)]
struct Refusal {
    /// Keys whose entries would not continue what this replica holds (it was down or frozen
    /// and missed batches): a journal with a hole would look complete to a catch-up, so the
    /// writer is asked to send the whole key first.
    gaps: Vec<String>,
    /// Keys with an entry that differs from one this replica already holds at that sequence
    /// number: a stale writer (an instance on a node that was cut off) must not rewrite
    /// history. Not repairable by the writer; the batch simply does not count here.
    conflicts: Vec<String>,
}

impl Refusal {
    fn is_empty(&self) -> bool {
        self.gaps.is_empty() && self.conflicts.is_empty()
    }
}

/// Checks `ops` against what `store` holds. Snapshots cover everything up to their sequence
/// number and are accepted; an append must continue the journal, or repeat an entry exactly.
fn refusals(store: &dyn Store, ops: &[WriteOp]) -> Result<Refusal, StoreError> {
    let mut next: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    let mut refusal = Refusal::default();
    let push = |list: &mut Vec<String>, key: &str| {
        if !list.iter().any(|k| k == key) {
            list.push(key.to_string());
        }
    };
    for op in ops {
        match op {
            WriteOp::Snapshot { key, seq, .. } => {
                let n = next.entry(key).or_insert(0);
                *n = (*n).max(seq + 1);
            }
            WriteOp::Append { key, seq, bytes } => {
                let expected = match next.get(&**key) {
                    Some(n) => *n,
                    None => store.last_seq(key)? + 1,
                };
                if *seq > expected {
                    push(&mut refusal.gaps, key);
                } else if *seq < expected && !next.contains_key(&**key) {
                    let held = store.journal_after(key, seq.saturating_sub(1))?;
                    if held.first().is_none_or(|(s, b)| s != seq || b != bytes) {
                        push(&mut refusal.conflicts, key);
                    }
                } else {
                    next.insert(key, expected.max(seq + 1));
                }
            }
            WriteOp::DeleteSnapshot { .. } => {}
        }
    }
    Ok(refusal)
}

/// Commits other nodes' batches into this node's store and answers catch-up requests.
struct Sink {
    store: Arc<dyn Store>,
}

impl Actor for Sink {
    type Msg = ReplicaMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<ReplicaMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        ractor::pg::join(REPLICA_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(())
    }

    async fn handle(&self, _: ActorRef<ReplicaMsg>, msg: ReplicaMsg, _: &mut ()) -> Result<(), ActorProcessingErr> {
        let store = self.store.clone();
        match msg {
            ReplicaMsg::Commit(bytes, reply) => {
                let outcome = tokio::task::spawn_blocking(move || {
                    let ops: Vec<WireOp> = decode(&bytes)?;
                    let ops: Vec<WriteOp> = ops.into_iter().map(WireOp::into_op).collect();
                    let refusal = refusals(&*store, &ops).map_err(|e| e.to_string())?;
                    if !refusal.is_empty() {
                        return Ok(Some(refusal));
                    }
                    store.commit(&ops).map(|_| None).map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(format!("replica commit task failed: {e}")));
                let answer = match outcome {
                    Ok(None) => String::new(),
                    Ok(Some(r)) if r.conflicts.is_empty() => format!("{GAP}{}", r.gaps.join("\n")),
                    Ok(Some(r)) => {
                        let e = format!("refused: entries differ from the ones held for {}", r.conflicts.join(", "));
                        tracing::warn!(target: "warden::cluster", error = %e, "replicated batch refused");
                        e
                    }
                    Err(e) => {
                        tracing::warn!(target: "warden::cluster", error = %e, "replicated batch refused");
                        e
                    }
                };
                let _ = reply.send(answer);
            }
            ReplicaMsg::Fetch(key, reply) => {
                let answer = tokio::task::spawn_blocking(move || held(&*store, &key).map_err(|e| e.to_string()))
                    .await
                    .unwrap_or_else(|e| Err(format!("replica read task failed: {e}")));
                // An unreadable replica answers nothing; the caller counts it as not answering.
                if let Ok(bytes) = answer.and_then(|h| encode(&h)) {
                    let _ = reply.send(bytes);
                }
            }
        }
        Ok(())
    }
}

/// Sends each batch to the other nodes' replica sinks and waits until `acks_needed` of them
/// committed it (or fails).
pub struct ClusterReplicator {
    runtime: tokio::runtime::Handle,
    local: Arc<dyn Store>,
    acks_needed: usize,
    timeout: Duration,
}

impl ClusterReplicator {
    /// Waits for `acks_needed` other nodes, each within `timeout`; `local` is the writer's own
    /// store, from which a replica that missed batches is brought up to date. Uses the runtime
    /// it is created on (call from inside it).
    pub fn new(local: Arc<dyn Store>, acks_needed: usize, timeout: Duration) -> Self {
        ClusterReplicator { runtime: tokio::runtime::Handle::current(), local, acks_needed, timeout }
    }
}

/// Sends `payload` to `sink`; if the sink lacks earlier entries of some keys, sends those keys'
/// state from `local` (newest snapshot and journal) together with the batch.
async fn replicate_to(
    sink: ActorRef<ReplicaMsg>,
    payload: Vec<u8>,
    wire: Arc<Vec<WireOp>>,
    local: Arc<dyn Store>,
    timeout: Duration,
) -> Result<(), String> {
    let answer = |r: Result<ractor::rpc::CallResult<String>, ractor::MessagingErr<ReplicaMsg>>| match r {
        Ok(ractor::rpc::CallResult::Success(e)) => Ok(e),
        Ok(ractor::rpc::CallResult::Timeout) => Err(format!("no answer within {timeout:?}")),
        Ok(ractor::rpc::CallResult::SenderError) => Err("the replica went away".to_string()),
        Err(e) => Err(e.to_string()),
    };
    let first = answer(sink.call(|port| ReplicaMsg::Commit(payload, port), Some(timeout)).await)?;
    let Some(keys) = first.strip_prefix(GAP) else {
        return if first.is_empty() { Ok(()) } else { Err(first) };
    };
    let keys: Vec<String> = keys.lines().map(str::to_string).collect();
    let repair = tokio::task::spawn_blocking(move || {
        let mut ops = Vec::new();
        for key in &keys {
            ops.extend(held(&*local, key).map_err(|e| e.to_string())?.ops);
        }
        ops.extend(wire.iter().cloned());
        encode(&ops)
    })
    .await
    .map_err(|e| e.to_string())??;
    let second = answer(sink.call(|port| ReplicaMsg::Commit(repair, port), Some(timeout)).await)?;
    if second.is_empty() {
        Ok(())
    } else {
        Err(second)
    }
}

fn remote_sinks() -> Vec<ActorRef<ReplicaMsg>> {
    ractor::pg::get_members(&REPLICA_GROUP.to_string())
        .into_iter()
        .filter(|c| !c.get_id().is_local())
        .map(ActorRef::<ReplicaMsg>::from)
        .collect()
}

impl Replicator for ClusterReplicator {
    fn replicate(&self, ops: &[WriteOp]) -> Result<(), String> {
        if self.acks_needed == 0 {
            return Ok(());
        }
        let wire: Vec<WireOp> = ops.iter().map(WireOp::from_op).collect();
        let payload = encode(&wire)?;
        let wire = Arc::new(wire);
        let sinks = remote_sinks();
        if sinks.len() < self.acks_needed {
            return Err(format!("{} other node(s) reachable, {} needed", sinks.len(), self.acks_needed));
        }
        let (needed, timeout) = (self.acks_needed, self.timeout);
        let local = self.local.clone();
        // The writer thread is not a runtime thread: it may block on the calls.
        self.runtime.block_on(async move {
            let mut calls = tokio::task::JoinSet::new();
            for sink in sinks {
                calls.spawn(replicate_to(sink, payload.clone(), wire.clone(), local.clone(), timeout));
            }
            let (mut acks, mut errors) = (0, Vec::new());
            while let Some(done) = calls.join_next().await {
                match done {
                    Ok(Ok(())) => {
                        acks += 1;
                        if acks >= needed {
                            calls.detach_all(); // the slower replicas finish on their own
                            return Ok(());
                        }
                    }
                    Ok(Err(e)) => errors.push(e),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            Err(format!("{acks} of {needed} replica(s) committed: {}", errors.join("; ")))
        })
    }
}

/// A node's replication: its store, its replica sink, and the settings both directions share.
pub struct Replication {
    local: Arc<dyn Store>,
    sink: ActorRef<ReplicaMsg>,
    cluster_size: usize,
    timeout: Duration,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication").field("cluster_size", &self.cluster_size).finish()
    }
}

/// Why a catch-up could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatchUpError {
    /// Too few other nodes answered to be sure the newest state is among the answers.
    #[error("catching up {key:?}: {answered} other node(s) answered, {needed} needed")]
    TooFewAnswers {
        /// The key.
        key: String,
        /// How many answered.
        answered: usize,
        /// How many must.
        needed: usize,
    },
    /// The local store failed.
    #[error("catching up {key:?}: {cause}")]
    Store {
        /// The key.
        key: String,
        /// Why.
        cause: String,
    },
}

impl Replication {
    /// Starts this node's replica sink on `local` (the node's own store) for a cluster of
    /// `cluster_size` nodes. One per process (the sink joins a process-wide group).
    pub async fn start(local: Arc<dyn Store>, cluster_size: usize) -> Result<Replication, crate::ClusterError> {
        let (sink, _) =
            Actor::spawn(None, Sink { store: local.clone() }, ()).await.map_err(|e| crate::ClusterError::Start {
                name: "replica sink".into(),
                addr: ([127, 0, 0, 1], 0).into(),
                cause: e.to_string(),
            })?;
        Ok(Replication { local, sink, cluster_size: cluster_size.max(1), timeout: Duration::from_secs(1) })
    }

    /// How many other nodes must hold a batch before it counts as committed.
    pub fn acks_needed(&self) -> usize {
        self.cluster_size / 2
    }

    /// The store to give the node's checkpoint service: commits reach `acks_needed` other
    /// nodes before this one (warden-checkpoint's synchronous [`Replicated`] mode).
    pub fn store(&self) -> Replicated<Arc<dyn Store>> {
        Replicated::synchronous(
            self.local.clone(),
            ClusterReplicator::new(self.local.clone(), self.acks_needed(), self.timeout),
        )
    }

    /// Brings `key` up to the newest state held by the live nodes: asks every other node's
    /// sink, and if one holds a higher sequence number than this node, imports its newest
    /// snapshot and journal. Needs answers from `acks_needed` other nodes (with this one, a
    /// majority: at least one of them holds every acknowledged change). Returns the sequence
    /// number now held.
    pub async fn catch_up(&self, key: &str, view: &NodeView) -> Result<u64, CatchUpError> {
        let live = view.live_peers();
        let sinks: Vec<ActorRef<ReplicaMsg>> = remote_sinks()
            .into_iter()
            .filter(|s| view.node_of(&s.get_cell()).is_some_and(|n| live.contains(&n)))
            .collect();
        let mut calls = tokio::task::JoinSet::new();
        for sink in sinks {
            let (key, timeout) = (key.to_string(), self.timeout);
            calls.spawn(async move { sink.call(|port| ReplicaMsg::Fetch(key, port), Some(timeout)).await });
        }
        let mut best: Option<Held> = None;
        let mut answered = 0;
        while let Some(done) = calls.join_next().await {
            if let Ok(Ok(ractor::rpc::CallResult::Success(bytes))) = done {
                if let Ok(held) = decode::<Held>(&bytes) {
                    answered += 1;
                    if best.as_ref().is_none_or(|b| held.last_seq > b.last_seq) {
                        best = Some(held);
                    }
                }
            }
        }
        let needed = self.acks_needed();
        if answered < needed {
            return Err(CatchUpError::TooFewAnswers { key: key.to_string(), answered, needed });
        }
        let store = self.local.clone();
        let k = key.to_string();
        tokio::task::spawn_blocking(move || {
            let mine = store.last_seq(&k).map_err(|e| e.to_string())?;
            match best {
                Some(held) if held.last_seq > mine && !held.ops.is_empty() => {
                    let ops: Vec<WriteOp> = held.ops.into_iter().map(WireOp::into_op).collect();
                    store.commit(&ops).map_err(|e| e.to_string())?;
                    tracing::info!(target: "warden::cluster", key = %k, from = mine, to = held.last_seq, "caught up from a replica");
                    Ok(held.last_seq)
                }
                _ => Ok(mine),
            }
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
        .map_err(|cause| CatchUpError::Store { key: key.to_string(), cause })
    }

    /// Stops the replica sink.
    pub fn stop(&self) {
        self.sink.stop(None);
    }
}

impl Drop for Replication {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_checkpoint::MemoryStore;

    #[test]
    fn ops_survive_the_wire() {
        let ops = vec![
            WriteOp::Snapshot { key: Arc::from("a"), seq: 3, bytes: vec![1, 2, 200], retain: 2, created_unix_ms: 9 },
            WriteOp::Append { key: Arc::from("a"), seq: 4, bytes: vec![] },
            WriteOp::DeleteSnapshot { key: Arc::from("b"), seq: 1 },
        ];
        let wire: Vec<WireOp> = ops.iter().map(WireOp::from_op).collect();
        let back: Vec<WireOp> = decode(&encode(&wire).unwrap()).unwrap();
        assert_eq!(back.into_iter().map(WireOp::into_op).collect::<Vec<_>>(), ops);
        assert!(decode::<Vec<WireOp>>(&[0xc1]).unwrap_err().contains("cannot decode"));
    }

    #[test]
    fn a_replica_refuses_holes_and_rewrites() {
        let store = MemoryStore::new();
        let a = |key: &str, seq: u64, b: u8| WriteOp::Append { key: Arc::from(key), seq, bytes: vec![b] };
        store.commit(&[a("k", 1, 1), a("k", 2, 2)]).unwrap();
        assert!(refusals(&store, &[a("k", 3, 3), a("k", 4, 4), a("new", 1, 0)]).unwrap().is_empty());
        assert!(refusals(&store, &[a("k", 2, 2)]).unwrap().is_empty(), "repeating an entry exactly is fine");
        let r = refusals(&store, &[a("k", 4, 4), a("new", 2, 0), a("new", 3, 0)]).unwrap();
        assert_eq!(r.gaps, vec!["k", "new"]);
        let r = refusals(&store, &[a("k", 2, 9)]).unwrap();
        assert_eq!(r, Refusal { gaps: vec![], conflicts: vec!["k".into()] }, "a stale writer rewriting seq 2");
        let snap = WriteOp::Snapshot { key: Arc::from("k"), seq: 9, bytes: vec![], retain: 2, created_unix_ms: 0 };
        assert!(refusals(&store, &[snap, a("k", 10, 0)]).unwrap().is_empty(), "a snapshot covers what came before");
    }

    #[test]
    fn held_state_rebuilds_a_key_elsewhere() {
        let a = MemoryStore::new();
        let k: Arc<str> = Arc::from("acct");
        let append = |seq: u64| WriteOp::Append { key: k.clone(), seq, bytes: vec![seq as u8] };
        a.commit(&[append(1), append(2)]).unwrap();
        a.commit(&[WriteOp::Snapshot { key: k.clone(), seq: 2, bytes: vec![9], retain: 2, created_unix_ms: 1 }])
            .unwrap();
        a.commit(&[append(3)]).unwrap();
        let h = held(&a, "acct").unwrap();
        assert_eq!(h.last_seq, 3);
        let b = MemoryStore::new();
        b.commit(&h.ops.into_iter().map(WireOp::into_op).collect::<Vec<_>>()).unwrap();
        assert_eq!(b.last_seq("acct").unwrap(), 3);
        assert_eq!(b.read_snapshot("acct", 2).unwrap(), Some(vec![9]));
        assert_eq!(b.journal_after("acct", 2).unwrap(), vec![(3, vec![3])]);
        assert_eq!(held(&b, "none").unwrap(), Held::default());
    }
}
