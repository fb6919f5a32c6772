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
//!
//! **Writer terms.** Catching up a key also *fences* it: the new writer takes a term higher
//! than any a replica has seen for the key, and each replica that answers raises its fence to
//! that term before it answers (persisted in its store under `warden.fence/<key>`). From then
//! on, every batch carries its writer's term for the keys it has one for, and replicas refuse
//! batches with a lower term: a stale instance (on a node cut off and not yet aware of it)
//! cannot get a majority to accept anything, so it cannot acknowledge anything.

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
    /// Commit an encoded batch (terms and ops); the answer is empty on success, else the error.
    #[rpc]
    Commit(Vec<u8>, RpcReplyPort<String>),
    /// Fences a key at a new writer term and answers the newest state held for it (an
    /// encoded catch-up request; the answer is the encoded state).
    #[rpc]
    Fetch(Vec<u8>, RpcReplyPort<Vec<u8>>),
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
    /// The replica's fence for the key before this request raised it.
    #[serde(default)]
    fence: u64,
}

/// A batch on the wire: the writer's term for each key it holds one for, and the ops.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
struct Batch {
    terms: Vec<(String, u64)>,
    ops: Vec<WireOp>,
}

/// A catch-up request: the key, and the term its next writer takes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct FetchReq {
    key: String,
    term: u64,
}

/// Where a replica keeps its fence for `key`: an empty snapshot under this key whose sequence
/// number is the highest writer term seen for `key`.
pub fn fence_key(key: &str) -> String {
    format!("warden.fence/{key}")
}

/// An op that records `term` as the fence of `key`.
fn fence_op(key: &str, term: u64) -> WriteOp {
    WriteOp::Snapshot { key: Arc::from(fence_key(key)), seq: term, bytes: Vec::new(), retain: 1, created_unix_ms: 0 }
}

/// Applies a batch from another node: refuses it if a term is below this replica's fence
/// (`Err`), or if its entries leave holes or rewrite history (`Ok(Some(refusal))`); otherwise
/// commits it, raising fences to the batch's terms, and returns `Ok(None)`.
fn accept(store: &dyn Store, batch: Batch) -> Result<Option<Refusal>, String> {
    let mut fences = Vec::new();
    for (key, term) in &batch.terms {
        let fence = store.last_seq(&fence_key(key)).map_err(|e| e.to_string())?;
        if *term < fence {
            return Err(format!("refused: {key:?} written with term {term}, but its writer now has term {fence}"));
        }
        if *term > fence {
            fences.push(fence_op(key, *term));
        }
    }
    let mut ops: Vec<WriteOp> = batch.ops.into_iter().map(WireOp::into_op).collect();
    let refusal = refusals(store, &ops).map_err(|e| e.to_string())?;
    if !refusal.is_empty() {
        return Ok(Some(refusal));
    }
    ops.extend(fences);
    store.commit(&ops).map(|_| None).map_err(|e| e.to_string())
}

/// Answers a catch-up request: raises the fence of the key to the request's term (if higher)
/// first, then reads what is held, so nothing an older writer sends afterwards is accepted.
fn fetch(store: &dyn Store, req: &FetchReq) -> Result<Held, StoreError> {
    let fence = store.last_seq(&fence_key(&req.key))?;
    if req.term > fence {
        store.commit(&[fence_op(&req.key, req.term)])?;
    }
    Ok(Held { fence, ..held(store, &req.key)? })
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
    Ok(Held { last_seq, ops, fence: 0 })
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
                let outcome = tokio::task::spawn_blocking(move || accept(&*store, decode::<Batch>(&bytes)?))
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
            ReplicaMsg::Fetch(bytes, reply) => {
                let answer = tokio::task::spawn_blocking(move || {
                    let req: FetchReq = decode(&bytes)?;
                    fetch(&*store, &req).map_err(|e| e.to_string())
                })
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
    terms: Terms,
}

/// This node's writer term per key (keys it fenced when it took them over).
type Terms = Arc<std::sync::Mutex<std::collections::HashMap<String, u64>>>;

impl ClusterReplicator {
    /// Waits for `acks_needed` other nodes, each within `timeout`; `local` is the writer's own
    /// store, from which a replica that missed batches is brought up to date. Uses the runtime
    /// it is created on (call from inside it).
    pub fn new(local: Arc<dyn Store>, acks_needed: usize, timeout: Duration) -> Self {
        ClusterReplicator {
            runtime: tokio::runtime::Handle::current(),
            local,
            acks_needed,
            timeout,
            terms: Terms::default(),
        }
    }
}

/// Sends `payload` to `sink`; if the sink lacks earlier entries of some keys, sends those keys'
/// state from `local` (newest snapshot and journal) together with the batch.
async fn replicate_to(
    sink: ActorRef<ReplicaMsg>,
    payload: Vec<u8>,
    batch: Arc<Batch>,
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
        ops.extend(batch.ops.iter().cloned());
        encode(&Batch { terms: batch.terms.clone(), ops })
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
        let terms: Vec<(String, u64)> = {
            let known = self.terms.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut keys: Vec<&str> = ops.iter().map(|op| &**op.key()).collect();
            keys.sort_unstable();
            keys.dedup();
            keys.into_iter().filter_map(|k| known.get(k).map(|t| (k.to_string(), *t))).collect()
        };
        let batch = Batch { terms, ops: ops.iter().map(WireOp::from_op).collect() };
        let payload = encode(&batch)?;
        let batch = Arc::new(batch);
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
                calls.spawn(replicate_to(sink, payload.clone(), batch.clone(), local.clone(), timeout));
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
    terms: Terms,
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
        Ok(Replication {
            local,
            sink,
            cluster_size: cluster_size.max(1),
            timeout: Duration::from_secs(1),
            terms: Terms::default(),
        })
    }

    /// How many other nodes must hold a batch before it counts as committed.
    pub fn acks_needed(&self) -> usize {
        self.cluster_size / 2
    }

    /// The store to give the node's checkpoint service: commits reach `acks_needed` other
    /// nodes before this one (warden-checkpoint's synchronous [`Replicated`] mode).
    pub fn store(&self) -> Replicated<Arc<dyn Store>> {
        let mut replicator = ClusterReplicator::new(self.local.clone(), self.acks_needed(), self.timeout);
        replicator.terms = self.terms.clone();
        Replicated::synchronous(self.local.clone(), replicator)
    }

    /// Takes over `key` as its writer and brings it up to the newest state held by the live
    /// nodes: picks a writer term above every fence known for the key, asks every other live
    /// node's sink to fence the key at that term and answer what it holds, and if one holds a
    /// higher sequence number than this node, imports its newest snapshot and journal. Needs
    /// answers from `acks_needed` other nodes (with this one, a majority: at least one of them
    /// holds every acknowledged change, and from now on a majority refuses older writers).
    /// Returns the sequence number now held.
    pub async fn catch_up(&self, key: &str, view: &NodeView) -> Result<u64, CatchUpError> {
        let store_err = |cause: String| CatchUpError::Store { key: key.to_string(), cause };
        let live = view.live_peers();
        let (store, fk) = (self.local.clone(), fence_key(key));
        let local_fence = tokio::task::spawn_blocking(move || store.last_seq(&fk))
            .await
            .map_err(|e| store_err(e.to_string()))?
            .map_err(|e| store_err(e.to_string()))?;
        let own = self.terms.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).copied().unwrap_or(0);
        let mut term = local_fence.max(own) + 1;
        // A second round only if a replica knew of a later writer than this node did (it was
        // away when the key last moved): the placement check already made sure that writer is
        // gone, so the key is fenced above it.
        for _round in 0..2 {
            let sinks: Vec<ActorRef<ReplicaMsg>> = remote_sinks()
                .into_iter()
                .filter(|s| view.node_of(&s.get_cell()).is_some_and(|n| live.contains(&n)))
                .collect();
            let req = encode(&FetchReq { key: key.to_string(), term }).map_err(store_err)?;
            let mut calls = tokio::task::JoinSet::new();
            for sink in sinks {
                let (req, timeout) = (req.clone(), self.timeout);
                calls.spawn(async move { sink.call(|port| ReplicaMsg::Fetch(req, port), Some(timeout)).await });
            }
            let (mut best, mut answered, mut highest_fence) = (None::<Held>, 0, 0);
            while let Some(done) = calls.join_next().await {
                if let Ok(Ok(ractor::rpc::CallResult::Success(bytes))) = done {
                    if let Ok(held) = decode::<Held>(&bytes) {
                        answered += 1;
                        highest_fence = highest_fence.max(held.fence);
                        if best.as_ref().is_none_or(|b| held.last_seq > b.last_seq) {
                            best = Some(held);
                        }
                    }
                }
            }
            if highest_fence >= term {
                term = highest_fence + 1;
                continue;
            }
            let needed = self.acks_needed();
            if answered < needed {
                return Err(CatchUpError::TooFewAnswers { key: key.to_string(), answered, needed });
            }
            let (store, k) = (self.local.clone(), key.to_string());
            let held_now = tokio::task::spawn_blocking(move || {
                let mine = store.last_seq(&k).map_err(|e| e.to_string())?;
                let mut ops = vec![fence_op(&k, term)];
                let now = match best {
                    Some(held) if held.last_seq > mine && !held.ops.is_empty() => {
                        ops.extend(held.ops.into_iter().map(WireOp::into_op));
                        tracing::info!(target: "warden::cluster", key = %k, from = mine, to = held.last_seq, "caught up from a replica");
                        held.last_seq
                    }
                    _ => mine,
                };
                store.commit(&ops).map_err(|e| e.to_string())?;
                Ok::<u64, String>(now)
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
            .map_err(store_err)?;
            self.terms.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key.to_string(), term);
            return Ok(held_now);
        }
        Err(store_err(format!("another writer keeps taking the key (fence above term {term})")))
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
    fn fences_shut_out_older_writers() {
        let store = MemoryStore::new();
        let a = |seq: u64| WireOp::Append { key: "k".into(), seq, bytes: vec![seq as u8] };
        let batch = |term: u64, seq: u64| Batch { terms: vec![("k".into(), term)], ops: vec![a(seq)] };
        assert_eq!(accept(&store, batch(1, 1)), Ok(None));
        assert_eq!(store.last_seq(&fence_key("k")).unwrap(), 1, "the first writer's term is the fence");
        // A new writer takes over with term 2: the replica fences first, then answers.
        let held = fetch(&store, &FetchReq { key: "k".into(), term: 2 }).unwrap();
        assert_eq!((held.fence, held.last_seq), (1, 1));
        let stale = accept(&store, batch(1, 2)).unwrap_err();
        assert!(stale.contains("term 1") && stale.contains("term 2"), "{stale}");
        assert_eq!(store.last_seq("k").unwrap(), 1, "nothing of the stale writer was kept");
        assert_eq!(accept(&store, batch(2, 2)), Ok(None));
        // Keys without a term (no singleton behind them) are not fenced.
        let plain = Batch { terms: vec![], ops: vec![WireOp::Append { key: "p".into(), seq: 1, bytes: vec![] }] };
        assert_eq!(accept(&store, plain), Ok(None));
        // A lower term asked for in a catch-up does not lower the fence.
        assert_eq!(fetch(&store, &FetchReq { key: "k".into(), term: 1 }).unwrap().fence, 2);
        assert_eq!(store.last_seq(&fence_key("k")).unwrap(), 2);
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
