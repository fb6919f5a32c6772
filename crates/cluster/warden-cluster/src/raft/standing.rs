//! Early standing: a follower that learns its leader is gone stands for election as soon as
//! the voters' leases allow, instead of waiting out openraft's own timer on top of them.
//!
//! openraft 0.9 lets a follower whose leader was committed stand only when the leader lease
//! and its election timeout have both passed since the last append from that leader:
//! [`VOTER_LEASE`] plus a timeout drawn once per process in [`ELECTION_MIN`, `ELECTION_MAX`),
//! 800-1000 ms here. The lease is needed (every voter refuses a vote for that long after its
//! own last append, which the lease rule of [`timing`](super::timing) relies on); the timeout
//! on top is only a wait when the transport has already declared the leader down (its process
//! died and the session closed, or its heartbeats stopped). So when a node hears that its
//! leader is down, it asks openraft to stand (`Trigger::elect`) at [`stand_at`]: the lease and
//! [`STAND_MARGIN`] after the last append it took from that leader, plus [`STAND_STAGGER`] for
//! each surviving voter with a smaller id, so that the survivors do not all stand at once and
//! split the vote. Just before it stands it reviews the plan ([`review`]): no append came
//! from another leader, openraft knows no other leader, the peer is still down; an append from
//! the lost leader handled after the plan was made (on its way when the session closed) moves
//! the stand to the lease after that one.
//!
//! This decides only *when* a node asks to stand. The election itself (votes, terms, the log
//! check) and its retries are openraft's, and its own timer still runs as the fallback: a node
//! that never heard of the loss, or whose early try lost, stands when openraft would have.
//! The candidate's own vote is the one the lease rule cares about when the candidate is the
//! voter that stored the last renewal: it stands at least [`VOTER_LEASE`] after its last
//! append from the old leader, as openraft's own timer does.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::ServerState;
use tokio::sync::broadcast::error::RecvError;

use super::timing::VOTER_LEASE;
use super::Raft;
use crate::events::{ClusterEvent, Events, Phase};
use crate::ledger::NodeId;
use crate::transport::{NodeEvent, NodeView};

#[cfg(doc)]
use super::timing::{ELECTION_MAX, ELECTION_MIN};

/// Added to [`VOTER_LEASE`] before a node stands early: covers the other voters having taken
/// the leader's last heartbeat a little later than this node did (ms).
pub const STAND_MARGIN: Duration = Duration::from_millis(50);
/// How much later each surviving voter stands than the one before it in id order (ms): more
/// than a vote's round trip with its fsync, so the first normally wins before the next tries.
pub const STAND_STAGGER: Duration = Duration::from_millis(100);

/// The last append this node took from a leader: which leader, and when it was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contact {
    /// The leader that sent it.
    pub leader: NodeId,
    /// When openraft had handled it (at or after openraft's own record of it).
    pub at: Instant,
}

/// Where the RPC actor records each append (or snapshot chunk) openraft took from a leader
/// (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct LastContact(Arc<Mutex<Option<Contact>>>);

impl LastContact {
    /// Records an append from `leader` that openraft has just handled. The time is read under
    /// the lock, so requests handled at once never move it back.
    pub fn heard(&self, leader: NodeId) {
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *last = Some(Contact { leader, at: Instant::now() });
    }

    /// The last one, if any since this process started.
    pub fn get(&self) -> Option<Contact> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// When node `me` should stand after hearing at `now` that node `lost` is down: `None` when it
/// should leave it to openraft (`lost` was not the leader it last heard, it heard none, or
/// `me` is not a voter, or `lost` is `me`).
pub fn stand_at(
    me: NodeId,
    lost: NodeId,
    contact: Option<Contact>,
    voters: &BTreeSet<NodeId>,
    now: Instant,
) -> Option<Instant> {
    let contact = contact.filter(|c| c.leader == lost)?;
    if me == lost || !voters.contains(&me) {
        return None;
    }
    let rank = voters.iter().filter(|v| **v != lost && **v < me).count() as u32;
    Some((contact.at + VOTER_LEASE + STAND_MARGIN + STAND_STAGGER * rank).max(now))
}

/// Why a planned early stand was dropped ([`review`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// An append came from another leader since the plan was made.
    NewLeaderHeard,
    /// openraft names another leader.
    OtherLeader,
    /// This node is no longer a follower: it stands or leads already.
    NotFollower,
    /// This node is no longer a voter.
    NotVoter,
    /// The transport has the lost node up again.
    PeerUp,
}

/// What a node that planned to stand after losing `lost` does when its plan is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Stand now.
    Stand,
    /// An append from `lost` was handled after the plan was made (it was on its way when the
    /// session closed): wait until the lease after that one.
    Wait(Instant),
    /// Leave it to openraft.
    Drop(Dropped),
}

/// What a node sees when its plan is due: its last contact, and what openraft and the
/// transport say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The last append it took from a leader.
    pub contact: Contact,
    /// The leader openraft names.
    pub leader: Option<NodeId>,
    /// Its own state.
    pub state: ServerState,
    /// Whether the transport still has the lost node down.
    pub lost_is_down: bool,
}

/// Reviews, at `now`, a plan to stand after losing `lost`: stand if nothing was heard from
/// another leader, openraft knows no other leader, this node is still a follower and a voter,
/// and the transport still has `lost` down; wait if a later append from `lost` itself came
/// meanwhile (so that the stand is never sooner than [`stand_at`] allows after the last one).
/// A wait needs such an append, and none arrives once `lost`'s session has closed: at most
/// the requests in flight then (`network::MAX_CONCURRENT_REQUESTS`) bound the waits.
pub fn review(me: NodeId, lost: NodeId, seen: Seen, voters: &BTreeSet<NodeId>, now: Instant) -> Step {
    if !seen.lost_is_down {
        return Step::Drop(Dropped::PeerUp);
    }
    if seen.contact.leader != lost {
        return Step::Drop(Dropped::NewLeaderHeard);
    }
    if seen.leader.is_some_and(|l| l != lost) {
        return Step::Drop(Dropped::OtherLeader);
    }
    if seen.state != ServerState::Follower {
        return Step::Drop(Dropped::NotFollower);
    }
    match stand_at(me, lost, Some(seen.contact), voters, now) {
        Some(at) if at > now => Step::Wait(at),
        Some(_) => Step::Stand,
        None => Step::Drop(Dropped::NotVoter),
    }
}

/// Carries the rules out for node `me`: on each `Down` the transport reports, plans with
/// [`stand_at`], waits, reviews the plan ([`review`]), reports [`Phase::Stand`] and asks
/// openraft to stand. Ends when the transport or Raft stops.
pub(crate) async fn run(me: NodeId, raft: Raft, view: NodeView, contact: LastContact, events: Events) {
    let mut downs = view.subscribe();
    loop {
        let peer = match downs.recv().await {
            Ok(NodeEvent::Down { peer, .. }) => peer,
            // Missed events: the next Down is planned from the contact as it is then.
            Ok(_) | Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        let Some(from) = contact.get() else {
            tracing::debug!(target: "warden::cluster", node = me, %peer, "a peer is down: no early stand (no leader heard yet)");
            continue;
        };
        // Only the leader last heard matters; a name a wiped node left behind under another
        // id is not it.
        let (led, voters) = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            let led = membership.nodes().any(|(id, n)| *id == from.leader && n.name == peer);
            (led, membership.voter_ids().collect::<BTreeSet<NodeId>>())
        };
        let lost = from.leader;
        let planned = if led { stand_at(me, lost, Some(from), &voters, Instant::now()) } else { None };
        let Some(mut at) = planned else {
            tracing::debug!(target: "warden::cluster", node = me, %peer, last_leader = lost, "a peer is down: no early stand (not the leader last heard, or not a voter)");
            continue;
        };
        let step = loop {
            tokio::time::sleep_until(at.into()).await;
            let (leader, state) = {
                let metrics = raft.metrics();
                let m = metrics.borrow();
                (m.current_leader, m.state)
            };
            // The contact only ever moves on, so it is still there.
            let seen = Seen {
                contact: contact.get().unwrap_or(from),
                leader,
                state,
                lost_is_down: !view.live_peers().contains(&peer),
            };
            match review(me, lost, seen, &voters, Instant::now()) {
                Step::Wait(later) => at = later,
                step => break step,
            }
        };
        if let Step::Drop(why) = step {
            tracing::debug!(target: "warden::cluster", node = me, lost, ?why, "not standing early");
            continue;
        }
        events.send(ClusterEvent::Phase { step: Phase::Stand, detail: lost.to_string() });
        tracing::info!(target: "warden::cluster", node = me, lost, "the leader is down: standing for election");
        if let Err(fatal) = raft.trigger().elect().await {
            tracing::debug!(target: "warden::cluster", error = %fatal, "Raft stopped: no more early standing");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_follower_stands_once_the_lease_has_passed_and_in_id_order() {
        let t0 = Instant::now();
        let heard = Some(Contact { leader: 2, at: t0 });
        let group = voters(&[1, 2, 3, 4]);
        // Node 1 is the first survivor, 3 the second, 4 the third.
        assert_eq!(stand_at(1, 2, heard, &group, t0), Some(t0 + VOTER_LEASE + STAND_MARGIN));
        assert_eq!(stand_at(3, 2, heard, &group, t0), Some(t0 + VOTER_LEASE + STAND_MARGIN + STAND_STAGGER));
        assert_eq!(stand_at(4, 2, heard, &group, t0), Some(t0 + VOTER_LEASE + STAND_MARGIN + STAND_STAGGER * 2));
        // Never before the lease after the last append, however late the loss is heard of;
        // a loss heard of after that stands at once.
        for me in [1, 3, 4] {
            assert!(stand_at(me, 2, heard, &group, t0).unwrap() >= t0 + VOTER_LEASE);
        }
        let late = t0 + Duration::from_secs(5);
        assert_eq!(stand_at(4, 2, heard, &group, late), Some(late));
    }

    #[test]
    fn only_a_voter_that_lost_the_leader_it_last_heard_stands_early() {
        let t0 = Instant::now();
        let group = voters(&[1, 2, 3]);
        let heard = Some(Contact { leader: 2, at: t0 });
        // A follower that went down is not the leader: openraft's timer is left alone.
        assert_eq!(stand_at(1, 3, heard, &group, t0), None);
        // Nothing heard since the process started.
        assert_eq!(stand_at(1, 2, None, &group, t0), None);
        // A learner does not stand; nor does the lost node itself.
        assert_eq!(stand_at(9, 2, heard, &group, t0), None);
        assert_eq!(stand_at(2, 2, heard, &group, t0), None);
    }

    #[test]
    fn a_plan_is_dropped_when_another_leader_is_heard_or_the_node_is_no_longer_a_follower() {
        let t0 = Instant::now();
        let group = voters(&[1, 2, 3]);
        let from = Contact { leader: 2, at: t0 };
        let due = t0 + VOTER_LEASE + STAND_MARGIN;
        let seen = |contact, leader, state, lost_is_down| Seen { contact, leader, state, lost_is_down };
        let at_due = |s: Seen| review(1, 2, s, &group, due);
        assert_eq!(at_due(seen(from, Some(2), ServerState::Follower, true)), Step::Stand);
        assert_eq!(at_due(seen(from, None, ServerState::Follower, true)), Step::Stand);
        // A new leader was heard; openraft names another; this node already stands or leads.
        let other = Contact { leader: 3, at: t0 + Duration::from_millis(100) };
        assert_eq!(at_due(seen(other, Some(3), ServerState::Follower, true)), Step::Drop(Dropped::NewLeaderHeard));
        assert_eq!(at_due(seen(from, Some(3), ServerState::Follower, true)), Step::Drop(Dropped::OtherLeader));
        assert_eq!(at_due(seen(from, None, ServerState::Candidate, true)), Step::Drop(Dropped::NotFollower));
        assert_eq!(at_due(seen(from, None, ServerState::Leader, true)), Step::Drop(Dropped::NotFollower));
        // The transport has the peer up again; this node was removed from the voters.
        assert_eq!(at_due(seen(from, Some(2), ServerState::Follower, false)), Step::Drop(Dropped::PeerUp));
        let s = seen(from, Some(2), ServerState::Follower, true);
        assert_eq!(review(1, 2, s, &voters(&[2, 3]), due), Step::Drop(Dropped::NotVoter));
    }

    #[test]
    fn a_late_append_from_the_lost_leader_moves_the_stand_after_its_lease() {
        // An append on its way when the session closed was handled after the plan was made:
        // the stand waits for the lease after that one (seen in a run: the first survivor
        // dropped its plan and waited for openraft's timer, a failover of 1.8 s).
        let t0 = Instant::now();
        let group = voters(&[1, 2, 3]);
        let late = Contact { leader: 2, at: t0 + Duration::from_millis(30) };
        let due = t0 + VOTER_LEASE + STAND_MARGIN;
        let later = late.at + VOTER_LEASE + STAND_MARGIN;
        let seen = Seen { contact: late, leader: Some(2), state: ServerState::Follower, lost_is_down: true };
        assert_eq!(review(1, 2, seen, &group, due), Step::Wait(later));
        // Reviewed again then: stand.
        assert_eq!(review(1, 2, seen, &group, later), Step::Stand);
    }
}
