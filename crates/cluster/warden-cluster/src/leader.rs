//! The leader's loop: while this node leads the group, it asks [`placement::plan`] what to do
//! every [`PLAN_EVERY`] (or as soon as an ownership changes) and carries the plan out: the
//! commands go through the node's proposer as one batch, then at most one membership change
//! (a promotion, or a removal followed by forgetting the node). It also answers other nodes'
//! join requests by adding them as learners.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{ChangeMembers, ServerState};

use crate::events::{ClusterEvent, Events, Phase};
use crate::ledger::{Command, NodeId, Ownership};
use crate::placement::{self, View};
use crate::proposer::Proposer;
use crate::raft::state_machine::Shared;
use crate::raft::{Member, Raft};

/// How often the leader plans when nothing changes.
pub const PLAN_EVERY: Duration = Duration::from_millis(50);
/// A learner is caught up when its log is at most this many entries behind the leader's.
pub const CATCH_UP_LAG: u64 = 64;
/// The longest a membership change may take before the leader moves on.
pub const MEMBERSHIP_CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn run(
    me: NodeId,
    raft: Raft,
    shared: Arc<Shared>,
    proposer: Proposer,
    events: Events,
    min_members: usize,
) {
    let mut metrics = raft.metrics();
    loop {
        // Wait to lead.
        loop {
            let leads = {
                let m = metrics.borrow();
                m.state == ServerState::Leader && m.current_leader == Some(me)
            };
            if leads {
                break;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
        let leader_since = Instant::now();
        events.send(ClusterEvent::Phase { step: Phase::Leader, detail: me.to_string() });
        tracing::info!(target: "warden::cluster", node = me, "leading the group");
        let mut handoffs_since: HashMap<String, Instant> = HashMap::new();
        loop {
            let m = metrics.borrow().clone();
            if m.state != ServerState::Leader {
                break;
            }
            let membership = m.membership_config.membership();
            let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
            let learners: BTreeSet<NodeId> = membership.learner_ids().collect();
            let last = m.last_log_index.unwrap_or(0);
            let caught_up: BTreeSet<NodeId> = match &m.replication {
                Some(progress) => learners
                    .iter()
                    .filter(|id| progress.get(id).copied().flatten().is_some_and(|l| l.index + CATCH_UP_LAG >= last))
                    .copied()
                    .collect(),
                None => BTreeSet::new(),
            };
            let now = Instant::now();
            let plan = shared.read(|ledger| {
                let renewed_at: HashMap<NodeId, Instant> =
                    ledger.nodes.keys().filter_map(|n| shared.renewed_at(*n).map(|t| (*n, t))).collect();
                handoffs_since.retain(|name, _| {
                    matches!(ledger.singletons.get(name).map(|s| s.ownership), Some(Ownership::HandingOff { .. }))
                });
                for (name, s) in &ledger.singletons {
                    if matches!(s.ownership, Ownership::HandingOff { .. }) {
                        handoffs_since.entry(name.clone()).or_insert(now);
                    }
                }
                placement::plan(&View {
                    ledger,
                    now,
                    leader_since,
                    renewed_at: &renewed_at,
                    handoffs_since: &handoffs_since,
                    voters: &voters,
                    learners: &learners,
                    caught_up: &caught_up,
                    min_members,
                })
            });
            if !plan.commands.is_empty() {
                for c in &plan.commands {
                    if let Command::Evict { node, .. } = c {
                        events.send(ClusterEvent::Phase { step: Phase::Evict, detail: node.to_string() });
                        tracing::warn!(target: "warden::cluster", node, "evicting a node whose lease ran out");
                    }
                }
                if let Err(e) = proposer.submit(plan.commands).await {
                    tracing::debug!(target: "warden::cluster", error = %e, "the leader's plan was not committed");
                }
            }
            if let Some(id) = plan.promote.first() {
                change(&raft, ChangeMembers::AddVoterIds(BTreeSet::from([*id])), "promote", *id).await;
            } else if let Some(id) = plan.remove.first() {
                let change_of = if voters.contains(id) {
                    ChangeMembers::RemoveVoters(BTreeSet::from([*id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([*id]))
                };
                if change(&raft, change_of, "remove", *id).await {
                    // Should this fail, the next plans forget the node (it left the membership).
                    if let Err(e) = proposer.submit(vec![Command::Forget { node: *id }]).await {
                        tracing::debug!(target: "warden::cluster", node = id, error = %e, "forgetting a removed node failed");
                    }
                }
            }
            tokio::select! {
                _ = shared.changed() => {}
                _ = tokio::time::sleep(PLAN_EVERY) => {}
                _ = metrics.changed() => {}
            }
        }
        tracing::info!(target: "warden::cluster", node = me, "no longer leading");
    }
}

async fn change(raft: &Raft, members: ChangeMembers<NodeId, Member>, what: &str, id: NodeId) -> bool {
    match tokio::time::timeout(MEMBERSHIP_CHANGE_TIMEOUT, raft.change_membership(members, false)).await {
        Ok(Ok(_)) => {
            tracing::info!(target: "warden::cluster", node = id, "membership: {what}");
            true
        }
        Ok(Err(e)) => {
            tracing::debug!(target: "warden::cluster", node = id, error = %e, "membership change ({what}) not made");
            false
        }
        Err(_) => {
            tracing::warn!(target: "warden::cluster", node = id, "membership change ({what}) took too long");
            false
        }
    }
}
