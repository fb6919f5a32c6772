//! A supervisor's children: their records, kept in start order and indexed, so that finding a
//! child by its actor or by its id, and removing one, cost the same with 100 children as with
//! 100,000 (OTP keeps a simple_one_for_one's children in a map for the same reason).
//!
//! Children live in slots in start order. Removing a child empties its slot (nothing
//! shifts); [`Children::compact`] closes the gaps once they outnumber the children, at a point
//! where no slot index is held (the end of a supervisor's handler), so the cost is amortised
//! O(1) per removal. Two maps find a slot: by the actor of the child's current incarnation,
//! and by the child's id. A third set holds the slots whose restart is due or scheduled, so
//! that a retry looks only at those.

use std::collections::{BTreeSet, HashMap};
use std::ops::{Index, IndexMut};

use ractor::{ActorCell, ActorId};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::decision::{BackoffSchedule, ChildView, Phase};
use crate::path::ActorPath;
use crate::protocol::Directive;
use crate::spec::ChildSpec;
use crate::supervisor::ChildStatus;

/// Where a child stands.
pub(super) enum Status {
    Running {
        cell: ActorCell,
    },
    /// Crashed in a handler; the host actor waits for a directive on `reply` (taken once
    /// sent). Shown as restarting.
    Crashed {
        cell: ActorCell,
        reply: Option<oneshot::Sender<Directive>>,
        not_before: Instant,
    },
    /// No live actor; to be started at `not_before`.
    Restarting {
        not_before: Instant,
    },
    Stopped,
}

impl Status {
    fn pending(&self) -> bool {
        matches!(self, Status::Restarting { .. } | Status::Crashed { .. })
    }
}

/// One child's record.
pub(super) struct Child {
    pub(super) spec: ChildSpec,
    pub(super) path: ActorPath,
    /// Private: it changes only through [`Children::set_status`], which keeps the indexes.
    status: Status,
    pub(super) incarnation: u64,
    pub(super) restarts: u64,
    /// Boxed: most children have no backoff, and this keeps `Child` small.
    pub(super) backoff: Option<Box<BackoffSchedule>>,
    /// The task of the latest incarnation (see `SupervisorState::start_at`).
    pub(super) task: Option<ractor::concurrency::JoinHandle<()>>,
}

impl Child {
    /// A child for `spec` at `path`, not started.
    pub(super) fn new(spec: ChildSpec, path: ActorPath) -> Child {
        Child {
            backoff: spec.backoff.as_deref().map(|b| Box::new(BackoffSchedule::new(*b))),
            spec,
            path,
            status: Status::Stopped,
            incarnation: 0,
            restarts: 0,
            task: None,
        }
    }

    /// The child's id: the last segment of its path (for dynamic children, the instance id).
    pub(super) fn id(&self) -> &str {
        self.path.name()
    }

    pub(super) fn status(&self) -> &Status {
        &self.status
    }

    pub(super) fn cell(&self) -> Option<&ActorCell> {
        match &self.status {
            Status::Running { cell } | Status::Crashed { cell, .. } => Some(cell),
            _ => None,
        }
    }

    pub(super) fn public_status(&self) -> ChildStatus {
        match self.status {
            Status::Running { .. } => ChildStatus::Running,
            Status::Crashed { .. } | Status::Restarting { .. } => ChildStatus::Restarting,
            Status::Stopped => ChildStatus::Stopped,
        }
    }

    /// Its phase for the runtime calls' decisions.
    pub(super) fn phase(&self) -> Phase {
        match self.status {
            Status::Running { .. } => Phase::Running,
            Status::Crashed { .. } | Status::Restarting { .. } => Phase::Restarting,
            Status::Stopped => Phase::Stopped,
        }
    }

    pub(super) fn view(&self) -> ChildView {
        ChildView { restart: self.spec.restart, running: self.cell().is_some() }
    }

    /// The directive channel of a child that crashed in a handler and waits, taken (it is
    /// answered once).
    pub(super) fn take_reply(&mut self) -> Option<oneshot::Sender<Directive>> {
        match &mut self.status {
            Status::Crashed { reply, .. } => reply.take(),
            _ => None,
        }
    }
}

/// The children of one supervisor (see the module documentation).
#[derive(Default)]
pub(super) struct Children {
    slots: Vec<Option<Child>>,
    live: usize,
    by_actor: HashMap<ActorId, usize>,
    by_id: HashMap<String, usize>,
    /// Slots whose status is `Restarting` or `Crashed` (a superset: entries are dropped when
    /// a retry finds them settled).
    pending: BTreeSet<usize>,
}

impl Children {
    pub(super) fn with_capacity(n: usize) -> Children {
        Children { slots: Vec::with_capacity(n), ..Children::default() }
    }

    /// How many children there are.
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Appends a child (after every other, in start order) and returns its slot.
    pub(super) fn push(&mut self, child: Child) -> usize {
        let idx = self.slots.len();
        self.by_id.insert(child.id().to_string(), idx);
        self.slots.push(Some(child));
        self.live += 1;
        idx
    }

    /// Takes child `idx` out (its slot stays empty until [`Children::compact`]).
    pub(super) fn remove(&mut self, idx: usize) -> Option<Child> {
        let child = self.slots.get_mut(idx)?.take()?;
        self.live -= 1;
        if self.by_id.get(child.id()) == Some(&idx) {
            self.by_id.remove(child.id());
        }
        if let Some(cell) = child.cell() {
            if self.by_actor.get(&cell.get_id()) == Some(&idx) {
                self.by_actor.remove(&cell.get_id());
            }
        }
        self.pending.remove(&idx);
        Some(child)
    }

    /// Sets child `idx`'s status and returns the previous one, keeping the indexes.
    pub(super) fn set_status(&mut self, idx: usize, status: Status) -> Status {
        let Some(Some(child)) = self.slots.get_mut(idx) else { return Status::Stopped };
        let new_actor = match &status {
            Status::Running { cell } | Status::Crashed { cell, .. } => Some(cell.get_id()),
            _ => None,
        };
        let pending = status.pending();
        let old = std::mem::replace(&mut child.status, status);
        if let Some(old_actor) = match &old {
            Status::Running { cell } | Status::Crashed { cell, .. } => Some(cell.get_id()),
            _ => None,
        } {
            if Some(old_actor) != new_actor && self.by_actor.get(&old_actor) == Some(&idx) {
                self.by_actor.remove(&old_actor);
            }
        }
        if let Some(actor) = new_actor {
            self.by_actor.insert(actor, idx);
        }
        if pending {
            self.pending.insert(idx);
        }
        old
    }

    /// The slot of the child whose current incarnation is `actor`.
    pub(super) fn by_actor(&self, actor: ActorId) -> Option<usize> {
        self.by_actor.get(&actor).copied()
    }

    /// The slot of the child with id `id`.
    pub(super) fn by_id(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// The children in start order, with their slots.
    pub(super) fn iter(&self) -> impl DoubleEndedIterator<Item = (usize, &Child)> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, c)| c.as_ref().map(|c| (i, c)))
    }

    /// The slots of the children, in start order.
    pub(super) fn order(&self) -> Vec<usize> {
        self.iter().map(|(i, _)| i).collect()
    }

    /// The slots whose restart may be due, in start order.
    pub(super) fn pending(&self) -> Vec<usize> {
        self.pending.iter().copied().collect()
    }

    /// Forgets that slot `idx` may have a restart due (it settled).
    pub(super) fn settled(&mut self, idx: usize) {
        self.pending.remove(&idx);
    }

    /// Closes the empty slots once they outnumber the children. Call only where no slot
    /// index is held.
    pub(super) fn compact(&mut self) {
        let empty = self.slots.len() - self.live;
        if empty <= self.live.max(64) {
            return;
        }
        let old = std::mem::take(&mut self.slots);
        let old_pending = std::mem::take(&mut self.pending);
        self.by_actor.clear();
        self.by_id.clear();
        self.slots.reserve(self.live);
        for (old_idx, child) in old.into_iter().enumerate() {
            let Some(child) = child else { continue };
            let idx = self.slots.len();
            self.by_id.insert(child.id().to_string(), idx);
            if let Some(cell) = child.cell() {
                self.by_actor.insert(cell.get_id(), idx);
            }
            if old_pending.contains(&old_idx) {
                self.pending.insert(idx);
            }
            self.slots.push(Some(child));
        }
    }
}

impl Index<usize> for Children {
    type Output = Child;

    /// Slot indexes come from [`Children::push`], the lookups or the iterators, within one
    /// handler (before any compaction), and name a child not removed since.
    fn index(&self, idx: usize) -> &Child {
        match self.slots.get(idx) {
            Some(Some(child)) => child,
            _ => unreachable!("supervisor child slot {idx} is empty"),
        }
    }
}

impl IndexMut<usize> for Children {
    fn index_mut(&mut self, idx: usize) -> &mut Child {
        match self.slots.get_mut(idx) {
            Some(Some(child)) => child,
            _ => unreachable!("supervisor child slot {idx} is empty"),
        }
    }
}
