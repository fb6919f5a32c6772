//! The checkpoint store of a cluster node: `warden_checkpoint`'s [`Store`] on the replicated
//! ledger.
//!
//! Writes become [`Command::Write`] ops carrying the key's fencing token and writer epoch, and
//! go through the node's [`Proposer`] into the Raft log; each op is checked on every node as it
//! is applied, so a writer that lost its key (another node holds it, or a later restore
//! reopened it) cannot change anything, and one refused key fails only its own writes.
//! Restores first open the key ([`Command::Open`]): that takes the key's token, bumps its
//! epoch (fencing every earlier writer, this node's earlier incarnations included) and waits
//! until this node has applied the entry, so everything read afterwards is final. Reads come
//! from the node's own copy of the ledger.
//!
//! How proposals end maps onto the store's errors: refused ops are
//! [`StoreError::Refused`], a batch that certainly did not reach the log is
//! [`StoreError::Commit`] (the writer may go on), and one that may have is
//! [`StoreError::Uncertain`] (the writer must reopen the key first). Each error's
//! [`cause`](StoreError::cause) is a [`WriteCause`] (or, for an open, an [`OpenFailed`] holding
//! one), so a caller can tell a fenced write from a full queue without reading text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use warden_checkpoint::{Cause, CommitDone, SnapshotInfo, Store, StoreError, WriteOp};

use crate::ledger::{Command, KeyOp, NodeId, Outcome, Refusal, WriteKind};
use crate::proposer::{NotSent, ProposeError, Proposer, Uncertain};
use crate::raft::state_machine::Shared;

/// How long opening a key may wait for this node to apply its entry.
pub const OPEN_APPLY_WAIT: Duration = Duration::from_secs(5);

/// Why the replicated store failed a write: the [`cause`](StoreError::cause) of its
/// [`StoreError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteCause {
    /// The key is not open on this node ([`StoreError::Refused`]; nothing was sent).
    #[error("the key is not open on this node (restore it first)")]
    NotOpen,
    /// The ledger refused the op ([`StoreError::Refused`]): its token or epoch is stale.
    #[error(transparent)]
    Refused(Refusal),
    /// The proposal certainly did not reach the log ([`StoreError::Commit`]).
    #[error(transparent)]
    NotSent(NotSent),
    /// The proposal may have reached the log, and no answer came ([`StoreError::Uncertain`]).
    #[error(transparent)]
    Unknown(Uncertain),
    /// The entry was committed with no outcome for this op ([`StoreError::Uncertain`]).
    #[error("no outcome for this write")]
    NoOutcome,
    /// The key's open was committed, and this node did not apply it within
    /// [`OPEN_APPLY_WAIT`] ([`StoreError::Uncertain`]).
    #[error("this node did not apply entry {index} within {waited:?}")]
    NotApplied {
        /// The open's log index.
        index: u64,
        /// How long the open waited.
        waited: Duration,
    },
}

/// Why opening a key failed: the [`cause`](StoreError::cause) of the [`StoreError`] that
/// [`Store::open_key`] returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("opening {key:?}: {why}")]
pub struct OpenFailed {
    /// The key.
    pub key: String,
    /// Why.
    pub why: WriteCause,
}

/// The replicated store of one node.
pub struct ReplicatedStore {
    me: NodeId,
    shared: Arc<Shared>,
    proposer: Proposer,
    runtime: tokio::runtime::Handle,
    /// The (token, epoch) each key was last opened with on this node. An entry goes when a
    /// write sent with it is refused (the credentials are no good any more); a refusal of a
    /// write sent with older ones (a restore reopened the key meanwhile) leaves it.
    credentials: Credentials,
}

impl std::fmt::Debug for ReplicatedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicatedStore").field("node", &self.me).finish()
    }
}

impl ReplicatedStore {
    /// The store of node `me`. Call from within the node's runtime.
    pub fn new(me: NodeId, shared: Arc<Shared>, proposer: Proposer) -> ReplicatedStore {
        ReplicatedStore {
            me,
            shared,
            proposer,
            runtime: tokio::runtime::Handle::current(),
            credentials: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn creds(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, u64)>> {
        lock(&self.credentials)
    }

    /// Forgets the credentials of `key` (its instance stopped here).
    pub fn forget(&self, key: &str) {
        self.creds().remove(key);
    }

    fn to_key_op(op: &WriteOp, token: u64, epoch: u64) -> KeyOp {
        let op_kind = match op {
            WriteOp::Snapshot { seq, bytes, retain, created_unix_ms, .. } => WriteKind::Snapshot {
                seq: *seq,
                bytes: bytes.clone(),
                retain: (*retain).min(u32::MAX as usize) as u32,
                created_unix_ms: *created_unix_ms,
            },
            WriteOp::Append { seq, bytes, .. } => WriteKind::Append { seq: *seq, bytes: bytes.clone() },
            WriteOp::DeleteSnapshot { seq, .. } => WriteKind::DeleteSnapshot { seq: *seq },
        };
        KeyOp { key: op.key().to_string(), token, epoch, op: op_kind }
    }
}

/// How many of the writer thread's commits may be on their way through the log at once
/// (see [`Store::commits_in_flight`]); with the proposer's own
/// [`BATCHES_IN_FLIGHT`](crate::proposer::BATCHES_IN_FLIGHT), the next batch of a node's writes
/// leaves while the previous one is being replicated.
pub const COMMITS_IN_FLIGHT: usize = 4;

/// A commit turned into one [`Command::Write`]: the ops refused before sending (their key is
/// not open here) already have their result.
struct Prepared {
    results: Vec<Option<Result<(), StoreError>>>,
    /// Where each sent op's result goes, its key, and the credentials it was sent with.
    slots: Vec<(usize, String, (u64, u64))>,
    commands: Option<Vec<Command>>,
}

impl Prepared {
    fn results(self) -> Vec<Result<(), StoreError>> {
        self.results.into_iter().map(|r| r.unwrap_or(Err(StoreError::Closed))).collect()
    }
}

type Credentials = Arc<Mutex<HashMap<String, (u64, u64)>>>;

fn lock(credentials: &Credentials) -> std::sync::MutexGuard<'_, HashMap<String, (u64, u64)>> {
    credentials.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Each sent op's result from how its proposal ended; a refused key's credentials go.
fn settle(
    credentials: &Credentials,
    mut prepared: Prepared,
    answer: Result<crate::proposer::Committed, ProposeError>,
) -> Vec<Result<(), StoreError>> {
    let n = prepared.slots.len();
    match answer {
        Ok(committed) => {
            let outcomes = committed.outcomes.into_iter().next().unwrap_or_default();
            for (j, (slot, key, sent_with)) in prepared.slots.drain(..).enumerate() {
                prepared.results[slot] = Some(match outcomes.get(j) {
                    Some(Outcome::Done) => Ok(()),
                    Some(Outcome::Refused(why)) => {
                        // Only the credentials it was refused with: a restore may have opened
                        // the key again meanwhile (that open is what fenced this write).
                        let mut creds = lock(credentials);
                        if creds.get(&key) == Some(&sent_with) {
                            creds.remove(&key);
                        }
                        Err(StoreError::Refused { key, cause: Cause::new(WriteCause::Refused(why.clone())) })
                    }
                    _ => Err(StoreError::Uncertain { ops: 1, cause: Cause::new(WriteCause::NoOutcome) }),
                });
            }
        }
        Err(ProposeError::NotSent(why)) => {
            let cause = Cause::new(WriteCause::NotSent(why));
            for (slot, _, _) in prepared.slots.drain(..) {
                prepared.results[slot] = Some(Err(StoreError::Commit { ops: n, cause: cause.clone() }));
            }
        }
        Err(ProposeError::Unknown(why)) => {
            let cause = Cause::new(WriteCause::Unknown(why));
            for (slot, _, _) in prepared.slots.drain(..) {
                prepared.results[slot] = Some(Err(StoreError::Uncertain { ops: n, cause: cause.clone() }));
            }
        }
    }
    prepared.results()
}

impl ReplicatedStore {
    /// `ops` as one write command with each key's credentials; a key not open here is refused
    /// without sending.
    fn prepare(&self, ops: &[WriteOp]) -> Prepared {
        let mut results: Vec<Option<Result<(), StoreError>>> = vec![None; ops.len()];
        let mut slots = Vec::new();
        let mut key_ops = Vec::new();
        {
            let creds = self.creds();
            for (i, op) in ops.iter().enumerate() {
                match creds.get(&**op.key()) {
                    Some(&(token, epoch)) => {
                        slots.push((i, op.key().to_string(), (token, epoch)));
                        key_ops.push(Self::to_key_op(op, token, epoch));
                    }
                    None => {
                        results[i] = Some(Err(StoreError::Refused {
                            key: op.key().to_string(),
                            cause: Cause::new(WriteCause::NotOpen),
                        }))
                    }
                }
            }
        }
        let commands = (!key_ops.is_empty()).then(|| vec![Command::Write { node: self.me, ops: key_ops }]);
        Prepared { results, slots, commands }
    }

    fn settle(
        &self,
        prepared: Prepared,
        answer: Result<crate::proposer::Committed, ProposeError>,
    ) -> Vec<Result<(), StoreError>> {
        settle(&self.credentials, prepared, answer)
    }
}

impl Store for ReplicatedStore {
    fn commit(&self, ops: &[WriteOp]) -> Result<(), StoreError> {
        // Not atomic across keys (nothing in a cluster store is): the first failure, if any.
        self.commit_each(ops).into_iter().find(|r| r.is_err()).unwrap_or(Ok(()))
    }

    fn commit_each(&self, ops: &[WriteOp]) -> Vec<Result<(), StoreError>> {
        let mut prepared = self.prepare(ops);
        let Some(commands) = prepared.commands.take() else { return prepared.results() };
        let answer = self.proposer.submit_blocking(commands);
        self.settle(prepared, answer)
    }

    fn commits_in_flight(&self) -> usize {
        COMMITS_IN_FLIGHT
    }

    fn start_commit(&self, ops: Vec<WriteOp>, done: CommitDone) {
        let mut prepared = self.prepare(&ops);
        let Some(commands) = prepared.commands.take() else { return done.finish(prepared.results()) };
        match self.proposer.submit_later(commands) {
            Err(e) => done.finish(self.settle(prepared, Err(e))),
            Ok(answer) => {
                let credentials = self.credentials.clone();
                self.runtime.spawn(async move {
                    let answer = answer.await.unwrap_or(Err(ProposeError::NotSent(NotSent::Stopped)));
                    done.finish(settle(&credentials, prepared, answer));
                });
            }
        }
    }

    fn open_key(&self, key: &str) -> Result<(), StoreError> {
        let failed = |why: WriteCause| Cause::new(OpenFailed { key: key.to_string(), why });
        let uncertain = |why: WriteCause| StoreError::Uncertain { ops: 1, cause: failed(why) };
        let committed = self
            .proposer
            .submit_blocking(vec![Command::Open { node: self.me, key: key.to_string() }])
            .map_err(|e| match e {
                ProposeError::NotSent(why) => StoreError::Commit { ops: 1, cause: failed(WriteCause::NotSent(why)) },
                ProposeError::Unknown(why) => uncertain(WriteCause::Unknown(why)),
            })?;
        match committed.outcomes.first().and_then(|o| o.first()) {
            Some(Outcome::Opened { token, epoch }) => {
                self.creds().insert(key.to_string(), (*token, *epoch));
            }
            Some(Outcome::Refused(why)) => {
                return Err(StoreError::Refused {
                    key: key.to_string(),
                    cause: failed(WriteCause::Refused(why.clone())),
                })
            }
            _ => return Err(uncertain(WriteCause::NoOutcome)),
        }
        // Everything written before the open is applied here once the open is.
        let shared = self.shared.clone();
        let index = committed.index;
        let applied = self
            .runtime
            .block_on(async move { tokio::time::timeout(OPEN_APPLY_WAIT, shared.applied_at_least(index)).await });
        applied.map_err(|_| uncertain(WriteCause::NotApplied { index, waited: OPEN_APPLY_WAIT }))
    }

    fn snapshots(&self, key: &str) -> Result<Vec<SnapshotInfo>, StoreError> {
        Ok(self.shared.read(|l| {
            l.keys
                .get(key)
                .map(|k| {
                    k.snapshots
                        .iter()
                        .map(|(seq, s)| SnapshotInfo {
                            seq: *seq,
                            size: s.bytes.len() as u64,
                            created_unix_ms: s.created_unix_ms,
                        })
                        .collect()
                })
                .unwrap_or_default()
        }))
    }

    fn read_snapshot(&self, key: &str, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.shared.read(|l| l.keys.get(key).and_then(|k| k.snapshots.get(&seq)).map(|s| s.bytes.as_ref().clone())))
    }

    fn journal_after(&self, key: &str, after: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        Ok(self.shared.read(|l| {
            l.keys
                .get(key)
                .map(|k| k.journal.range(after + 1..).map(|(seq, b)| (*seq, b.as_ref().clone())).collect())
                .unwrap_or_default()
        }))
    }

    fn last_seq(&self, key: &str) -> Result<u64, StoreError> {
        Ok(self.shared.read(|l| l.keys.get(key).map_or(0, |k| k.last_seq)))
    }

    fn keys(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.shared.read(|l| {
            l.keys
                .iter()
                .filter(|(_, k)| !k.snapshots.is_empty() || !k.journal.is_empty())
                .map(|(name, _)| name.clone())
                .collect()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proposer::Committed;

    fn refused_with(sent_with: (u64, u64)) -> Prepared {
        Prepared { results: vec![None], slots: vec![(0, "k".into(), sent_with)], commands: None }
    }

    fn refusal() -> Result<Committed, ProposeError> {
        let why = Refusal::StaleEpoch { presented: 1, current: 2 };
        Ok(Committed { index: 9, outcomes: vec![vec![Outcome::Refused(why)]] })
    }

    #[test]
    fn a_refused_write_forgets_only_the_credentials_it_was_sent_with() {
        // A restore reopened the key (epoch 2) while a write of epoch 1 was on its way: the
        // refusal of the old write must not forget the new incarnation's credentials.
        let credentials: Credentials = Arc::new(Mutex::new(HashMap::from([("k".to_string(), (1, 2))])));
        let results = settle(&credentials, refused_with((1, 1)), refusal());
        assert!(matches!(results[..], [Err(StoreError::Refused { .. })]));
        assert_eq!(lock(&credentials).get("k"), Some(&(1, 2)), "the newer open's credentials stay");
        // Refused with the credentials it holds now: they are no good any more.
        settle(&credentials, refused_with((1, 2)), refusal());
        assert_eq!(lock(&credentials).get("k"), None);
    }

    #[test]
    fn each_failure_carries_its_cause_as_a_value() {
        let credentials: Credentials = Arc::new(Mutex::new(HashMap::new()));
        let cause = |r: &Result<(), StoreError>| {
            r.as_ref().err().and_then(StoreError::cause).and_then(|c| c.downcast_ref::<WriteCause>()).cloned()
        };
        let refused = settle(&credentials, refused_with((1, 1)), refusal());
        assert_eq!(cause(&refused[0]), Some(WriteCause::Refused(Refusal::StaleEpoch { presented: 1, current: 2 })));
        let full = NotSent::QueueFull { capacity: 3 };
        let not_sent = settle(&credentials, refused_with((1, 1)), Err(ProposeError::NotSent(full.clone())));
        assert!(matches!(not_sent[..], [Err(StoreError::Commit { ops: 1, .. })]), "{not_sent:?}");
        assert_eq!(cause(&not_sent[0]), Some(WriteCause::NotSent(full)));
        let silent = Ok(Committed { index: 9, outcomes: vec![vec![]] });
        let unknown = settle(&credentials, refused_with((1, 1)), silent);
        assert!(matches!(unknown[..], [Err(StoreError::Uncertain { .. })]), "{unknown:?}");
        assert_eq!(cause(&unknown[0]), Some(WriteCause::NoOutcome));
        // The text still says what happened, for logs.
        assert!(refused[0].as_ref().unwrap_err().to_string().contains("write refused"), "{refused:?}");
    }
}
