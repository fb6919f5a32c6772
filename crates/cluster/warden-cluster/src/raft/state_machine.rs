//! The Raft state machine: the [`Ledger`] in memory, shared with the rest of the node, and
//! snapshotted into the node's redb file.
//!
//! Applying is in memory only: what makes it durable is the log (openraft replays the entries
//! after the newest snapshot when a node starts) and the snapshots, which openraft asks for
//! every [`SNAPSHOT_EVERY_ENTRIES`](super::timing::SNAPSHOT_EVERY_ENTRIES) entries and which
//! are written durably before the log they cover may be purged. A snapshot is the whole
//! ledger, serialised; cloning the ledger for it copies pointers only (its keys are shared).
//!
//! After each batch of entries the machine publishes the applied index ([`Shared::applied`])
//! and the names of the singletons whose ownership changed ([`Shared::take_changes`]); it also
//! notes, on this node's clock, when it applied each node's lease renewal (the leader's
//! eviction rule reads them).

use std::collections::{BTreeSet, HashMap};
use std::io::Cursor;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StoredMembership};
use redb::{ReadableDatabase, TableDefinition};
use tokio::sync::{watch, Notify};

use super::log_store::RaftDb;
use super::timing::storage_error;
use super::{Answers, LogId, Member, StorageError, TypeConfig};
use crate::ledger::{Command, Ledger, NodeId};

pub(crate) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("warden_raft_snapshot");

type Meta = SnapshotMeta<NodeId, Member>;

/// What the rest of the node reads of the state machine.
pub struct Shared {
    /// The ledger, as of [`Shared::applied`].
    pub ledger: RwLock<Ledger>,
    applied: watch::Sender<u64>,
    changes: Mutex<BTreeSet<String>>,
    changed: Notify,
    renewed_at: Mutex<HashMap<NodeId, Instant>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("applied", &*self.applied.borrow()).finish()
    }
}

/// Every node of `ledger` dated as renewed `now`: for a ledger that came whole (a snapshot
/// loaded at start, or one received from the leader), whose renewals this node never applied
/// one by one. Each of them was committed, so queued by its node, before the snapshot reached
/// this node: `now` is later than the real time, which can only delay an eviction. Without it
/// the node, were it to lead, would see renewal counts with no time (or an older time) and
/// could evict a node whose lease still holds. A leader that restarts resumes leading without
/// an election, so neither the voters' lease nor `NEW_LEADER_WAIT` guards that case.
fn dated_now(ledger: &Ledger, now: Instant) -> HashMap<NodeId, Instant> {
    ledger.nodes.keys().map(|n| (*n, now)).collect()
}

impl Shared {
    fn new(ledger: Ledger, applied: u64) -> Arc<Shared> {
        let renewed_at = dated_now(&ledger, Instant::now());
        Arc::new(Shared {
            ledger: RwLock::new(ledger),
            applied: watch::channel(applied).0,
            changes: Mutex::new(BTreeSet::new()),
            changed: Notify::new(),
            renewed_at: Mutex::new(renewed_at),
        })
    }

    /// Reads the ledger.
    pub fn read<T>(&self, f: impl FnOnce(&Ledger) -> T) -> T {
        f(&self.ledger.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The index of the last entry applied.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until the entry at `index` is applied.
    pub async fn applied_at_least(&self, index: u64) {
        let mut rx = self.applied.subscribe();
        let _ = rx.wait_for(|a| *a >= index).await;
    }

    /// A receiver of the applied index.
    pub fn watch_applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// The singletons whose ownership changed since the last call (bounded by the number of
    /// singletons registered).
    pub fn take_changes(&self) -> BTreeSet<String> {
        std::mem::take(&mut *self.changes.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Waits until some singleton's ownership changes.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// When this node applied `node`'s latest renewal, on its own clock.
    pub fn renewed_at(&self, node: NodeId) -> Option<Instant> {
        self.renewed_at.lock().unwrap_or_else(PoisonError::into_inner).get(&node).copied()
    }
}

/// The state machine openraft drives.
pub struct StateMachine {
    db: RaftDb,
    shared: Arc<Shared>,
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, Member>,
    snapshots_built: u64,
}

impl StateMachine {
    /// Loads the newest snapshot from `db`, if any.
    #[allow(clippy::result_large_err)] // openraft's own error type, built once at start-up
    pub fn open(db: RaftDb) -> Result<StateMachine, StorageError> {
        let stored = read_snapshot(&db).map_err(|e| storage_error("read the snapshot", e))?;
        let (ledger, last_applied, membership) = match stored {
            Some((meta, data)) => {
                let ledger: Ledger =
                    rmp_serde::from_slice(&data).map_err(|e| storage_error("decode the snapshot", e))?;
                (ledger, meta.last_log_id, meta.last_membership)
            }
            None => (Ledger::default(), None, StoredMembership::default()),
        };
        let shared = Shared::new(ledger, last_applied.map_or(0, |l| l.index));
        Ok(StateMachine { db, shared, last_applied, membership, snapshots_built: 0 })
    }

    /// The part the rest of the node reads.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }
}

fn read_snapshot(db: &RaftDb) -> Result<Option<(Meta, Vec<u8>)>, redb::Error> {
    let tx = db.db.begin_read()?;
    let table = tx.open_table(SNAPSHOT)?;
    let (Some(meta), Some(data)) = (table.get("meta")?, table.get("data")?) else { return Ok(None) };
    let meta: Meta = rmp_serde::from_slice(meta.value())
        .map_err(|e| redb::Error::Io(std::io::Error::other(format!("a damaged snapshot: {e}"))))?;
    Ok(Some((meta, data.value().to_vec())))
}

fn write_snapshot(db: &RaftDb, meta: &Meta, data: &[u8]) -> Result<(), redb::Error> {
    let meta = rmp_serde::to_vec(meta).map_err(|e| redb::Error::Io(std::io::Error::other(e.to_string())))?;
    db.write(|tx| {
        let mut table = tx.open_table(SNAPSHOT)?;
        table.insert("meta", meta.as_slice())?;
        table.insert("data", data)?;
        Ok(())
    })
}

/// The names of the singletons `command` may change the ownership of.
fn touched(ledger: &Ledger, command: &Command, out: &mut BTreeSet<String>) {
    match command {
        Command::Grant { grants } => out.extend(grants.iter().map(|(n, _)| n.clone())),
        Command::Handoff { moves } => out.extend(moves.iter().map(|(n, _, _)| n.clone())),
        Command::CancelHandoff { singletons } | Command::Release { singletons, .. } => {
            out.extend(singletons.iter().map(|(n, _)| n.clone()))
        }
        Command::Register { singletons } => out.extend(singletons.iter().map(|(n, _)| n.clone())),
        Command::Evict { node, .. } | Command::Forget { node } => {
            out.extend(ledger.owned_by(*node).map(|(n, _)| n.to_string()));
            // Handoffs towards a forgotten node are called off.
            out.extend(ledger.singletons.iter().filter_map(|(n, s)| match s.ownership {
                crate::ledger::Ownership::HandingOff { to, .. } if to == *node => Some(n.clone()),
                _ => None,
            }));
        }
        Command::Renew { .. }
        | Command::Drain { .. }
        | Command::Open { .. }
        | Command::Write { .. }
        | Command::Noop => {}
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership<NodeId, Member>), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Answers>, StorageError>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut answers = Vec::new();
        let mut changed = BTreeSet::new();
        let mut renewed = Vec::new();
        {
            let mut ledger = self.shared.ledger.write().unwrap_or_else(PoisonError::into_inner);
            for entry in entries {
                self.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => answers.push(Answers::default()),
                    EntryPayload::Normal(batch) => {
                        let mut out = Vec::with_capacity(batch.0.len());
                        for command in &batch.0 {
                            touched(&ledger, command, &mut changed);
                            if let Command::Renew { node, .. } = command {
                                renewed.push(*node);
                            }
                            out.push(ledger.apply(command));
                        }
                        answers.push(Answers(out));
                    }
                    EntryPayload::Membership(m) => {
                        self.membership = StoredMembership::new(Some(entry.log_id), m);
                        answers.push(Answers::default());
                    }
                }
            }
            // Renewal times change under the ledger's write lock, with the renewal counts: a
            // reader (the leader's plan) never sees a count with an older renewal's time, which
            // would let it evict a node that has just renewed. Forgotten nodes' times go.
            let now = Instant::now();
            let mut at = self.shared.renewed_at.lock().unwrap_or_else(PoisonError::into_inner);
            for node in renewed.drain(..) {
                at.insert(node, now);
            }
            at.retain(|node, _| ledger.nodes.contains_key(node));
        }
        // Changes first: whoever sees the new applied index must also find its changes.
        let any_change = !changed.is_empty();
        if any_change {
            self.shared.changes.lock().unwrap_or_else(PoisonError::into_inner).extend(changed);
        }
        if let Some(last) = self.last_applied {
            self.shared.applied.send_replace(last.index);
        }
        if any_change {
            self.shared.changed.notify_waiters();
        }
        Ok(answers)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots_built += 1;
        Builder {
            db: self.db.clone(),
            ledger: self.shared.read(Ledger::clone),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            id: self.snapshots_built,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &Meta, snapshot: Box<Cursor<Vec<u8>>>) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let ledger: Ledger =
            rmp_serde::from_slice(&data).map_err(|e| storage_error("decode a received snapshot", e))?;
        let db = self.db.clone();
        let m = meta.clone();
        tokio::task::spawn_blocking(move || write_snapshot(&db, &m, &data))
            .await
            .map_err(|e| storage_error("store a received snapshot", e))?
            .map_err(|e| storage_error("store a received snapshot", e))?;
        let names: BTreeSet<String> = ledger.singletons.keys().cloned().collect();
        {
            // Renewal times change under the ledger's write lock, with the renewal counts.
            let mut current = self.shared.ledger.write().unwrap_or_else(PoisonError::into_inner);
            *self.shared.renewed_at.lock().unwrap_or_else(PoisonError::into_inner) = dated_now(&ledger, Instant::now());
            *current = ledger;
        }
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        if let Some(last) = self.last_applied {
            self.shared.applied.send_replace(last.index);
        }
        self.shared.changes.lock().unwrap_or_else(PoisonError::into_inner).extend(names);
        self.shared.changed.notify_waiters();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let db = self.db.clone();
        let stored = tokio::task::spawn_blocking(move || read_snapshot(&db))
            .await
            .map_err(|e| storage_error("read the snapshot", e))?
            .map_err(|e| storage_error("read the snapshot", e))?;
        Ok(stored.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}

/// Builds one snapshot from the view taken when openraft asked for it.
pub struct Builder {
    db: RaftDb,
    ledger: Ledger,
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, Member>,
    id: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let ledger = std::mem::take(&mut self.ledger);
        let meta = Meta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!("{}-{}", self.last_applied.map_or(0, |l| l.index), self.id),
        };
        let db = self.db.clone();
        let m = meta.clone();
        let data = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
            let data = rmp_serde::to_vec(&ledger).map_err(|e| e.to_string())?;
            write_snapshot(&db, &m, &data).map_err(|e| e.to_string())?;
            Ok(data)
        })
        .await
        .map_err(|e| storage_error("build a snapshot", e))?
        .map_err(|e| storage_error("build a snapshot", e))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

/// Why a store could not be rebuilt.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RebuildError(String);

/// The ledger a stopped node's data directory holds: its newest snapshot, and every log entry
/// after it up to the committed index it recorded, applied (the checker's view of a node's
/// store; the node must not be running). Returns the ledger and the index applied.
pub fn rebuild(dir: &std::path::Path) -> Result<(Ledger, u64), RebuildError> {
    let err = |what: &str, e: &dyn std::fmt::Display| RebuildError(format!("{what}: {e}"));
    let db = RaftDb::open(Some(dir)).map_err(|e| err("opening", &e))?;
    let (mut ledger, mut applied) = match read_snapshot(&db).map_err(|e| err("reading the snapshot", &e))? {
        Some((meta, data)) => {
            let ledger: Ledger = rmp_serde::from_slice(&data).map_err(|e| err("decoding the snapshot", &e))?;
            (ledger, meta.last_log_id.map_or(0, |l| l.index))
        }
        None => (Ledger::default(), 0),
    };
    let committed: Option<LogId> =
        db.meta::<Option<LogId>>("committed").map_err(|e| err("reading the commit index", &e))?.flatten();
    let committed = committed.map_or(0, |l| l.index);
    for entry in db.entries_from(applied + 1).map_err(|e| err("reading the log", &e))? {
        if entry.log_id.index > committed {
            break;
        }
        if let EntryPayload::Normal(batch) = &entry.payload {
            for command in &batch.0 {
                ledger.apply(command);
            }
        }
        applied = entry.log_id.index;
    }
    Ok((ledger, applied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId as RaftLogId};

    fn renewed(node: NodeId) -> Ledger {
        let mut ledger = Ledger::default();
        ledger.apply(&Command::Renew { node, name: format!("n{node}"), addr: "127.0.0.1:1".into() });
        ledger
    }

    fn meta(index: u64) -> Meta {
        SnapshotMeta {
            last_log_id: Some(RaftLogId::new(CommittedLeaderId::new(1, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("test-{index}"),
        }
    }

    /// A node that loads a snapshot, or is sent one, dates every renewal in it no earlier than
    /// that moment: were it to lead, it must not take a node whose renewals came inside the
    /// snapshot for one that never renewed (and evict it while its lease holds).
    #[tokio::test]
    async fn renewals_inside_a_snapshot_are_dated_when_the_snapshot_arrives() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = RaftDb::open(Some(dir.path())).expect("opens");
        let data = rmp_serde::to_vec(&renewed(7)).expect("encodes");
        write_snapshot(&db, &meta(10), &data).expect("stores");
        drop(db);

        let before_open = Instant::now();
        let mut sm = StateMachine::open(RaftDb::open(Some(dir.path())).expect("reopens")).expect("loads");
        let shared = sm.shared();
        assert!(shared.read(|l| l.nodes.contains_key(&7)), "the snapshot's ledger is loaded");
        let at = shared.renewed_at(7).expect("the snapshot's renewal is dated");
        assert!(at >= before_open, "dated when the snapshot was loaded, not earlier");

        // A snapshot from the leader: its nodes are dated on arrival, older dates replaced.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let mut both = renewed(7);
        both.apply(&Command::Renew { node: 8, name: "n8".into(), addr: "127.0.0.1:2".into() });
        let before_install = Instant::now();
        let data = rmp_serde::to_vec(&both).expect("encodes");
        sm.install_snapshot(&meta(20), Box::new(Cursor::new(data))).await.expect("installs");
        for node in [7, 8] {
            let at = shared.renewed_at(node).expect("dated");
            assert!(at >= before_install, "node {node} dated on the snapshot's arrival");
        }
    }
}
