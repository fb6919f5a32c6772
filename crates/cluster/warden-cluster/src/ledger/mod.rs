//! The replicated ledger: the state every node's Raft state machine holds, and the one pure
//! function that changes it.
//!
//! Everything that must be agreed on goes through the Raft log as a [`Command`] and is applied
//! here, in log order, on every node, with no clock, no I/O and no randomness: the same log
//! gives the same ledger everywhere. The ledger holds:
//!
//! * the **nodes** and their liveness: each node renews its lease with [`Command::Renew`]; the
//!   leader evicts a node whose renewals stopped ([`Command::Evict`], refused if the node
//!   renewed meanwhile);
//! * the **singletons** and who owns each, with a **fencing token** per grant, unique and only
//!   growing (a counter in the ledger): [`Command::Grant`], [`Command::Handoff`],
//!   [`Command::Release`];
//! * every durable **key** (a checkpoint key): its grant, its writer epoch, and its snapshots
//!   and journal. A key is written only by [`Command::Write`] ops that carry the key's current
//!   token and epoch; [`Command::Open`] (a restore) bumps the epoch, which fences every earlier
//!   writer of the key, the same node's earlier incarnations included.
//!
//! Every op of a command gets its own [`Outcome`]: one refused op (a stale token, a hole in a
//! journal) refuses only itself and the later ops of its own key in the same command.
//!
//! ```
//! use warden_cluster::ledger::{Command, KeyOp, Ledger, Outcome, WriteKind};
//!
//! let mut ledger = Ledger::default();
//! ledger.apply(&Command::Renew { node: 1, name: "n1".into(), addr: "10.0.0.1:7000".into() });
//! ledger.apply(&Command::Register { singletons: vec![("auditor".into(), vec!["bank/auditor".into()])] });
//! ledger.apply(&Command::Grant { grants: vec![("auditor".into(), 1)] });
//! let Outcome::Opened { token, epoch } = ledger.apply(&Command::Open { node: 1, key: "bank/auditor".into() })[0]
//! else { unreachable!() };
//! let write = |token, epoch| Command::Write {
//!     node: 1,
//!     ops: vec![KeyOp { key: "bank/auditor".into(), token, epoch, op: WriteKind::Append { seq: 1, bytes: vec![7] } }],
//! };
//! assert_eq!(ledger.apply(&write(token, epoch)), vec![Outcome::Done]);
//! // A second restore fences the first incarnation: its next write is refused.
//! ledger.apply(&Command::Open { node: 1, key: "bank/auditor".into() });
//! assert!(matches!(ledger.apply(&write(token, epoch))[0], Outcome::Refused(_)));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod byte_form;

#[cfg(test)]
mod tests;

/// A node's identity in the Raft group (a new one for every empty data directory).
pub type NodeId = u64;

/// One change to the ledger, as it travels in the Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// `node` is alive; its lease runs from when it sent this until
    /// [`LEASE`](crate::raft::timing::LEASE) later. Also (re)introduces the node's name and
    /// address, and brings an evicted node back (owning nothing).
    Renew {
        /// The node.
        node: NodeId,
        /// Its name (`n1`).
        name: String,
        /// Where its cluster port listens.
        addr: String,
    },
    /// The leader: `node`'s lease ran out. `renewals` is how many renewals of `node` the leader
    /// had applied when it decided; if the node renewed since, the eviction is void.
    Evict {
        /// The node.
        node: NodeId,
        /// The node's renewal count the decision was based on.
        renewals: u64,
    },
    /// A node will leave: no new singletons go to it, and the leader hands its own elsewhere.
    Drain {
        /// The node.
        node: NodeId,
    },
    /// The node left the group (the leader removed it from the membership): forget it.
    Forget {
        /// The node.
        node: NodeId,
    },
    /// Singletons a node's program declares, with their checkpoint keys (idempotent).
    Register {
        /// (name, keys).
        singletons: Vec<(String, Vec<String>)>,
    },
    /// The leader places unowned singletons: (name, node).
    Grant {
        /// (name, node).
        grants: Vec<(String, NodeId)>,
    },
    /// The leader asks owners to hand singletons over: (name, from, to).
    Handoff {
        /// (name, from, to).
        moves: Vec<(String, NodeId, NodeId)>,
    },
    /// The leader gives up on handoffs whose owner did not release in time: (name, token).
    CancelHandoff {
        /// (name, token).
        singletons: Vec<(String, u64)>,
    },
    /// An owner stopped these instances (their final snapshots committed): (name, token).
    /// A singleton being handed off goes to its target; one not being handed off is unowned.
    Release {
        /// The owner.
        node: NodeId,
        /// (name, token).
        singletons: Vec<(String, u64)>,
    },
    /// `node` will write `key` from now on (a restore): answers the key's token and a new
    /// writer epoch, which fences every earlier writer.
    Open {
        /// The writing node.
        node: NodeId,
        /// The key.
        key: String,
    },
    /// Writes, each checked on its own.
    Write {
        /// The writing node.
        node: NodeId,
        /// The writes.
        ops: Vec<KeyOp>,
    },
    /// Nothing: the leader's barrier for reads.
    Noop,
}

/// One write of one key, with the credentials it was written under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyOp {
    /// The key.
    pub key: String,
    /// The key's fencing token the writer holds.
    pub token: u64,
    /// The writer epoch the writer opened the key with.
    pub epoch: u64,
    /// The write.
    pub op: WriteKind,
}

/// What a [`KeyOp`] does (the replicated form of `warden_checkpoint::WriteOp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteKind {
    /// A snapshot at `seq`; keeps the newest `retain`, and drops the journal they cover.
    Snapshot {
        /// Its sequence number.
        seq: u64,
        /// The envelope.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
        /// How many snapshots to keep.
        retain: u32,
        /// When it was taken, ms since the Unix epoch.
        created_unix_ms: u64,
    },
    /// A journal entry; `seq` must follow the key's last one.
    Append {
        /// Its sequence number.
        seq: u64,
        /// The envelope.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Removes one snapshot.
    DeleteSnapshot {
        /// Its sequence number.
        seq: u64,
    },
}

/// The answer to one command, or to one op of a [`Command::Write`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied.
    Done,
    /// Applied: the node's renewal, with the node's renewal count now.
    Renewed {
        /// The node's renewals so far.
        renewals: u64,
    },
    /// A key opened: write it with this token and epoch.
    Opened {
        /// The key's fencing token.
        token: u64,
        /// The new writer epoch.
        epoch: u64,
    },
    /// Not applied, and why.
    Refused(Refusal),
}

/// Why a command or op was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The writer's token is not the key's (it lost the key, or never had it).
    #[error("stale token {presented} (the key's token is {current})")]
    StaleToken {
        /// What the writer presented.
        presented: u64,
        /// The key's token now (0: nobody holds it).
        current: u64,
    },
    /// The writer's epoch is not the key's: a later restore of the key fenced this writer.
    #[error("stale writer epoch {presented} (the key was reopened at epoch {current})")]
    StaleEpoch {
        /// What the writer presented.
        presented: u64,
        /// The key's epoch now.
        current: u64,
    },
    /// The key belongs to another node.
    #[error("key is held by node {owner}")]
    NotOwner {
        /// The holder.
        owner: NodeId,
    },
    /// A journal entry out of order: `seq` does not follow `last`.
    #[error("journal entry {seq} does not follow {last}")]
    OutOfOrder {
        /// The entry's sequence number.
        seq: u64,
        /// The key's last one.
        last: u64,
    },
    /// A journal entry already stored with other bytes. (A snapshot at a point already
    /// snapshotted is accepted and leaves the stored one: both are the state after the same
    /// journal entry.)
    #[error("entry {seq} is already stored with other contents")]
    Conflict {
        /// Its sequence number.
        seq: u64,
    },
    /// A snapshot older than what the key already holds.
    #[error("snapshot {seq} is older than the key's newest snapshot ({newest})")]
    StaleSnapshot {
        /// Its sequence number.
        seq: u64,
        /// The key's newest snapshot.
        newest: u64,
    },
    /// An earlier op of the same key in this command was refused.
    #[error("an earlier write of this key in the same batch was refused")]
    AfterRefusal,
    /// The node is not a live member (unknown, evicted or leaving).
    #[error("node {0} is not a live member")]
    NotLive(NodeId),
    /// No singleton of that name is registered.
    #[error("no singleton {0:?} is registered")]
    UnknownSingleton(String),
    /// The singleton is not in the state the command expects.
    #[error("singleton {name:?} is {state}")]
    WrongState {
        /// The singleton.
        name: String,
        /// Its state, in words.
        state: String,
    },
    /// The node renewed after the leader decided to evict it.
    #[error("node {node} renewed since (renewals {now}, the eviction saw {seen})")]
    RenewedMeanwhile {
        /// The node.
        node: NodeId,
        /// Renewals the eviction was based on.
        seen: u64,
        /// Renewals now.
        now: u64,
    },
}

/// A node as the ledger knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its name.
    pub name: String,
    /// Its cluster address.
    pub addr: String,
    /// Renewals applied so far.
    pub renewals: u64,
    /// Evicted: its lease ran out; it owns nothing until it renews.
    pub evicted: bool,
    /// Leaving: it gets nothing new, and its singletons are handed off.
    pub draining: bool,
}

impl NodeRecord {
    /// May it own singletons and keys?
    pub fn live(&self) -> bool {
        !self.evicted && !self.draining
    }
}

/// Who owns a singleton.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ownership {
    /// Nobody: the leader will place it.
    Unowned,
    /// `node`, under `token`.
    Owned {
        /// The owner.
        node: NodeId,
        /// Its fencing token.
        token: u64,
    },
    /// `node` still owns it and is asked to hand it to `to`.
    HandingOff {
        /// The owner.
        node: NodeId,
        /// Its fencing token.
        token: u64,
        /// The next owner.
        to: NodeId,
    },
}

impl Ownership {
    /// The owner and its token, if any.
    pub fn holder(&self) -> Option<(NodeId, u64)> {
        match *self {
            Ownership::Unowned => None,
            Ownership::Owned { node, token } | Ownership::HandingOff { node, token, .. } => Some((node, token)),
        }
    }

    fn describe(&self) -> String {
        match self {
            Ownership::Unowned => "unowned".into(),
            Ownership::Owned { node, token } => format!("owned by node {node} (token {token})"),
            Ownership::HandingOff { node, token, to } => {
                format!("being handed from node {node} (token {token}) to node {to}")
            }
        }
    }
}

/// A registered singleton.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SingletonRecord {
    /// Its checkpoint keys.
    pub keys: Vec<String>,
    /// Who owns it.
    pub ownership: Ownership,
}

/// One stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSnapshot {
    /// The envelope.
    #[serde(with = "byte_form::shared")]
    pub bytes: Arc<Vec<u8>>,
    /// When it was taken, ms since the Unix epoch.
    pub created_unix_ms: u64,
}

/// A durable key: who may write it, and what is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The holder and its token (a singleton's key follows the singleton's grant).
    pub grant: Option<(NodeId, u64)>,
    /// Bumped by every [`Command::Open`].
    pub epoch: u64,
    /// The highest sequence number stored (snapshots or journal).
    pub last_seq: u64,
    /// Snapshots by sequence number.
    pub snapshots: BTreeMap<u64, StoredSnapshot>,
    /// Journal entries by sequence number.
    #[serde(with = "byte_form::journal")]
    pub journal: BTreeMap<u64, Arc<Vec<u8>>>,
    /// The (token, node) pairs that wrote the key, for the checker: one per grant of the key
    /// that wrote, the newest [`MAX_WRITERS_PER_KEY`] (tokens only grow: the lowest go first).
    pub writers: BTreeSet<(u64, NodeId)>,
}

/// The most (token, node) writer records a key keeps ([`KeyRecord::writers`]); past it the
/// lowest token's record goes, so the checker sees the key's last this many grants.
pub const MAX_WRITERS_PER_KEY: usize = 64;

/// The replicated state (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Nodes by id.
    pub nodes: BTreeMap<NodeId, NodeRecord>,
    /// Singletons by name.
    pub singletons: BTreeMap<String, SingletonRecord>,
    /// The singleton each singleton key belongs to.
    pub key_singleton: BTreeMap<String, String>,
    /// Durable keys by name. Values are shared, so that cloning the ledger (for a Raft
    /// snapshot) copies pointers, not journals.
    pub keys: BTreeMap<String, Arc<KeyRecord>>,
    /// The last token issued.
    pub last_token: u64,
    /// Nodes the group forgot (they left, or were replaced), newest last, at most
    /// [`MAX_FORGOTTEN`]: their renewals are refused, so a node that left cannot come back by
    /// renewing (it joins again with an empty data directory, under a new id).
    #[serde(default)]
    pub forgotten: std::collections::VecDeque<NodeId>,
    /// Some singleton was granted once: the group's first placement happened (from then on
    /// [`crate::placement`] places whatever the live nodes are, however few).
    #[serde(default)]
    pub placement_started: bool,
}

/// How many forgotten node ids the ledger remembers (the oldest goes first); ids are random 64
/// bits and never reused, so one forgotten long ago cannot come back unnoticed in practice.
pub const MAX_FORGOTTEN: usize = 4096;

impl Ledger {
    /// Applies one command; returns one outcome per op for [`Command::Write`], and one
    /// outcome otherwise.
    pub fn apply(&mut self, command: &Command) -> Vec<Outcome> {
        match command {
            Command::Renew { node, name, addr } => vec![self.renew(*node, name, addr)],
            Command::Evict { node, renewals } => vec![self.evict(*node, *renewals)],
            Command::Drain { node } => vec![self.drain(*node)],
            Command::Forget { node } => vec![self.forget(*node)],
            Command::Register { singletons } => {
                for (name, keys) in singletons {
                    self.register(name, keys);
                }
                vec![Outcome::Done]
            }
            Command::Grant { grants } => grants.iter().map(|(name, node)| self.grant(name, *node)).collect(),
            Command::Handoff { moves } => moves.iter().map(|(name, from, to)| self.handoff(name, *from, *to)).collect(),
            Command::CancelHandoff { singletons } => {
                singletons.iter().map(|(name, token)| self.cancel_handoff(name, *token)).collect()
            }
            Command::Release { node, singletons } => {
                singletons.iter().map(|(name, token)| self.release(*node, name, *token)).collect()
            }
            Command::Open { node, key } => vec![self.open(*node, key)],
            Command::Write { node, ops } => self.write(*node, ops),
            Command::Noop => vec![Outcome::Done],
        }
    }

    /// Whether `node` is a live member.
    pub fn is_live(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(NodeRecord::live)
    }

    /// The singletons `node` owns (being handed off included), with their tokens.
    pub fn owned_by(&self, node: NodeId) -> impl Iterator<Item = (&str, u64)> {
        self.singletons.iter().filter_map(move |(name, s)| match s.ownership.holder() {
            Some((n, token)) if n == node => Some((name.as_str(), token)),
            _ => None,
        })
    }

    fn next_token(&mut self) -> u64 {
        self.last_token += 1;
        self.last_token
    }

    fn renew(&mut self, node: NodeId, name: &str, addr: &str) -> Outcome {
        if self.forgotten.contains(&node) {
            return Outcome::Refused(Refusal::NotLive(node));
        }
        let rec = self.nodes.entry(node).or_insert_with(|| NodeRecord {
            name: name.to_string(),
            addr: addr.to_string(),
            renewals: 0,
            evicted: false,
            draining: false,
        });
        rec.name = name.to_string();
        rec.addr = addr.to_string();
        rec.renewals += 1;
        // An evicted node comes back owning nothing: its grants went when it was evicted.
        rec.evicted = false;
        Outcome::Renewed { renewals: rec.renewals }
    }

    fn evict(&mut self, node: NodeId, seen: u64) -> Outcome {
        let Some(rec) = self.nodes.get_mut(&node) else { return Outcome::Refused(Refusal::NotLive(node)) };
        if rec.renewals != seen {
            return Outcome::Refused(Refusal::RenewedMeanwhile { node, seen, now: rec.renewals });
        }
        rec.evicted = true;
        self.strip(node);
        Outcome::Done
    }

    /// Takes every singleton and key grant away from `node`.
    fn strip(&mut self, node: NodeId) {
        let names: Vec<String> = self.owned_by(node).map(|(n, _)| n.to_string()).collect();
        for name in names {
            self.set_ownership(&name, Ownership::Unowned);
        }
        for rec in self.keys.values_mut() {
            if rec.grant.is_some_and(|(n, _)| n == node) {
                Arc::make_mut(rec).grant = None;
            }
        }
    }

    fn drain(&mut self, node: NodeId) -> Outcome {
        match self.nodes.get_mut(&node) {
            Some(rec) => {
                rec.draining = true;
                Outcome::Done
            }
            None => Outcome::Refused(Refusal::NotLive(node)),
        }
    }

    fn forget(&mut self, node: NodeId) -> Outcome {
        if self.nodes.remove(&node).is_none() {
            return Outcome::Refused(Refusal::NotLive(node));
        }
        self.forgotten.push_back(node);
        while self.forgotten.len() > MAX_FORGOTTEN {
            self.forgotten.pop_front();
        }
        self.strip(node);
        // Handoffs towards the node are called off.
        let towards: Vec<(String, NodeId, u64)> = self
            .singletons
            .iter()
            .filter_map(|(name, s)| match s.ownership {
                Ownership::HandingOff { node: from, token, to } if to == node => Some((name.clone(), from, token)),
                _ => None,
            })
            .collect();
        for (name, from, token) in towards {
            self.set_ownership(&name, Ownership::Owned { node: from, token });
        }
        Outcome::Done
    }

    fn register(&mut self, name: &str, keys: &[String]) {
        let rec = self
            .singletons
            .entry(name.to_string())
            .or_insert_with(|| SingletonRecord { keys: Vec::new(), ownership: Ownership::Unowned });
        for key in keys {
            if !rec.keys.contains(key) {
                rec.keys.push(key.clone());
            }
            self.key_singleton.insert(key.clone(), name.to_string());
        }
        let holder = rec.ownership.holder();
        for key in keys {
            self.key_grant(key, holder);
        }
    }

    fn key_grant(&mut self, key: &str, grant: Option<(NodeId, u64)>) {
        let rec = self.keys.entry(key.to_string()).or_default();
        if rec.grant != grant {
            Arc::make_mut(rec).grant = grant;
        }
    }

    fn set_ownership(&mut self, name: &str, ownership: Ownership) {
        let Some(rec) = self.singletons.get_mut(name) else { return };
        rec.ownership = ownership;
        let keys = rec.keys.clone();
        let holder = ownership.holder();
        for key in keys {
            self.key_grant(&key, holder);
        }
    }

    fn singleton_state(&self, name: &str) -> Result<Ownership, Refusal> {
        self.singletons.get(name).map(|s| s.ownership).ok_or_else(|| Refusal::UnknownSingleton(name.to_string()))
    }

    fn wrong_state(name: &str, state: Ownership) -> Outcome {
        Outcome::Refused(Refusal::WrongState { name: name.to_string(), state: state.describe() })
    }

    fn grant(&mut self, name: &str, node: NodeId) -> Outcome {
        let state = match self.singleton_state(name) {
            Ok(s) => s,
            Err(r) => return Outcome::Refused(r),
        };
        if state != Ownership::Unowned {
            return Self::wrong_state(name, state);
        }
        if !self.is_live(node) {
            return Outcome::Refused(Refusal::NotLive(node));
        }
        let token = self.next_token();
        self.set_ownership(name, Ownership::Owned { node, token });
        self.placement_started = true;
        Outcome::Done
    }

    fn handoff(&mut self, name: &str, from: NodeId, to: NodeId) -> Outcome {
        let state = match self.singleton_state(name) {
            Ok(s) => s,
            Err(r) => return Outcome::Refused(r),
        };
        match state {
            Ownership::Owned { node, token } if node == from && to != from => {
                if !self.is_live(to) {
                    return Outcome::Refused(Refusal::NotLive(to));
                }
                self.set_ownership(name, Ownership::HandingOff { node, token, to });
                Outcome::Done
            }
            other => Self::wrong_state(name, other),
        }
    }

    fn cancel_handoff(&mut self, name: &str, token: u64) -> Outcome {
        match self.singleton_state(name) {
            Ok(Ownership::HandingOff { node, token: t, .. }) if t == token => {
                self.set_ownership(name, Ownership::Owned { node, token });
                Outcome::Done
            }
            Ok(other) => Self::wrong_state(name, other),
            Err(r) => Outcome::Refused(r),
        }
    }

    fn release(&mut self, node: NodeId, name: &str, token: u64) -> Outcome {
        match self.singleton_state(name) {
            Ok(Ownership::HandingOff { node: owner, token: t, to }) if owner == node && t == token => {
                if self.is_live(to) {
                    let token = self.next_token();
                    self.set_ownership(name, Ownership::Owned { node: to, token });
                } else {
                    self.set_ownership(name, Ownership::Unowned);
                }
                Outcome::Done
            }
            Ok(Ownership::Owned { node: owner, token: t }) if owner == node && t == token => {
                self.set_ownership(name, Ownership::Unowned);
                Outcome::Done
            }
            Ok(other) => Self::wrong_state(name, other),
            Err(r) => Outcome::Refused(r),
        }
    }

    fn open(&mut self, node: NodeId, key: &str) -> Outcome {
        // A leaving node still opens keys: it writes its final snapshots while it hands off.
        if self.nodes.get(&node).is_none_or(|n| n.evicted) {
            return Outcome::Refused(Refusal::NotLive(node));
        }
        let singleton_holder = match self.key_singleton.get(key) {
            Some(name) => Some(self.singletons.get(name).and_then(|s| s.ownership.holder())),
            None => None,
        };
        let grant = match singleton_holder {
            // A singleton's key: only the singleton's owner opens it, under its token.
            Some(Some((owner, token))) if owner == node => (owner, token),
            Some(Some((owner, _))) => return Outcome::Refused(Refusal::NotOwner { owner }),
            Some(None) => return Outcome::Refused(Refusal::StaleToken { presented: 0, current: 0 }),
            // Any other key: the first live node to open it holds it until it is evicted or
            // forgotten; the holder reopening keeps its token.
            None => match self.keys.get(key).and_then(|k| k.grant) {
                Some((owner, token)) if owner == node => (owner, token),
                Some((owner, _)) if self.nodes.contains_key(&owner) && !self.nodes[&owner].evicted => {
                    return Outcome::Refused(Refusal::NotOwner { owner })
                }
                _ => (node, self.next_token()),
            },
        };
        let rec = Arc::make_mut(self.keys.entry(key.to_string()).or_default());
        rec.grant = Some(grant);
        rec.epoch += 1;
        Outcome::Opened { token: grant.1, epoch: rec.epoch }
    }

    fn write(&mut self, node: NodeId, ops: &[KeyOp]) -> Vec<Outcome> {
        let mut refused_keys: BTreeSet<&str> = BTreeSet::new();
        let mut out = Vec::with_capacity(ops.len());
        for op in ops {
            if refused_keys.contains(op.key.as_str()) {
                out.push(Outcome::Refused(Refusal::AfterRefusal));
                continue;
            }
            let outcome = match self.write_one(node, op) {
                Ok(()) => Outcome::Done,
                Err(r) => {
                    refused_keys.insert(op.key.as_str());
                    Outcome::Refused(r)
                }
            };
            out.push(outcome);
        }
        out
    }

    fn write_one(&mut self, node: NodeId, op: &KeyOp) -> Result<(), Refusal> {
        // Checked on a borrow, so that the copy-on-write below copies nothing when the ledger
        // is not shared with a snapshot being built.
        let (grant, epoch, newest_snapshot) = match self.keys.get(&op.key) {
            Some(rec) => (rec.grant, rec.epoch, rec.snapshots.keys().next_back().copied().unwrap_or(0)),
            None => (None, 0, 0),
        };
        match grant {
            Some((owner, token)) if owner == node && token == op.token => {}
            Some((owner, token)) if owner != node && token == op.token => return Err(Refusal::NotOwner { owner }),
            Some((_, token)) => return Err(Refusal::StaleToken { presented: op.token, current: token }),
            None => return Err(Refusal::StaleToken { presented: op.token, current: 0 }),
        }
        if epoch != op.epoch {
            return Err(Refusal::StaleEpoch { presented: op.epoch, current: epoch });
        }
        let entry = Arc::make_mut(self.keys.entry(op.key.clone()).or_default());
        match &op.op {
            WriteKind::Append { seq, bytes } => {
                if *seq == entry.last_seq + 1 {
                    entry.journal.insert(*seq, Arc::new(bytes.clone()));
                    entry.last_seq = *seq;
                } else if entry.journal.get(seq).is_some_and(|b| **b == *bytes) {
                    // The same entry again (a retried write): already there.
                } else if *seq <= entry.last_seq {
                    return Err(Refusal::Conflict { seq: *seq });
                } else {
                    return Err(Refusal::OutOfOrder { seq: *seq, last: entry.last_seq });
                }
            }
            WriteKind::Snapshot { seq, bytes, retain, created_unix_ms } => {
                // Journal entries past the snapshot stay and replay after it; only a snapshot
                // older than one already stored is refused (it would roll the key back).
                let newest = newest_snapshot;
                if *seq < newest {
                    return Err(Refusal::StaleSnapshot { seq: *seq, newest });
                }
                // A snapshot of a point already snapshotted (a durable actor snapshots the state
                // after its last event: the same state) leaves the stored one: a stored snapshot
                // never changes, so replicas at any index agree on it.
                if entry.snapshots.contains_key(seq) {
                    entry.note_writer(op.token, node);
                    return Ok(());
                }
                entry
                    .snapshots
                    .insert(*seq, StoredSnapshot { bytes: Arc::new(bytes.clone()), created_unix_ms: *created_unix_ms });
                entry.last_seq = entry.last_seq.max(*seq);
                let keep = (*retain).max(1) as usize;
                while entry.snapshots.len() > keep {
                    let oldest = *entry.snapshots.keys().next().unwrap_or(&0);
                    entry.snapshots.remove(&oldest);
                }
                if let Some(&oldest_kept) = entry.snapshots.keys().next() {
                    entry.journal = entry.journal.split_off(&(oldest_kept + 1));
                }
            }
            WriteKind::DeleteSnapshot { seq } => {
                entry.snapshots.remove(seq);
            }
        }
        entry.note_writer(op.token, node);
        Ok(())
    }
}

impl KeyRecord {
    /// Records that `node` wrote with `token`, keeping the newest [`MAX_WRITERS_PER_KEY`].
    fn note_writer(&mut self, token: u64, node: NodeId) {
        self.writers.insert((token, node));
        while self.writers.len() > MAX_WRITERS_PER_KEY {
            self.writers.pop_first();
        }
    }
}
