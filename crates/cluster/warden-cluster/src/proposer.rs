//! Getting commands into the Raft log: a node's proposer batches what the node's actors,
//! stores and host want committed, and sends each batch to the leader (itself, or another
//! node over the RPC network).
//!
//! Up to [`BATCHES_IN_FLIGHT`] batches of the ordinary lane are on their way at once (one of
//! the urgent lane); everything submitted while they are waits and goes in the next one, until
//! it holds [`MAX_BATCH_COMMANDS`] commands or [`MAX_BATCH_BYTES`] bytes of payload (the
//! submission that crosses a limit still goes in; none is split). This is group commit across
//! the whole node: many durable actors' writes share one log entry and one `fsync` per node of
//! the group, and the next entry leaves while the previous one is being replicated. Batches in
//! flight together may reach the log in either order: a submitter that needs an order waits
//! for the first answer before it submits again (the checkpoint writer keeps a key in one
//! batch at a time). Lease renewals take the urgent lane ([`Proposer::submit_urgent`]), so they
//! never wait behind a large batch of the ordinary one.
//!
//! Every submission ends in one of three ways, and the difference matters to whoever waits:
//! committed (with each command's outcomes), certainly not committed
//! ([`ProposeError::NotSent`]: no leader within [`PROPOSE_TIMEOUT`], or the leader refused it
//! before appending), or perhaps committed ([`ProposeError::Unknown`]: sent, and no answer in
//! time). A submission is never retried once it may have reached the log.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::ledger::{Command, NodeId, Outcome};
use crate::raft::appender::Appender;
use crate::raft::network::{self, CallError, Declined, NotDone, Reply, Request};
use crate::raft::{Answers, Batch, Raft};
use openraft::error::Fatal;

/// The most commands in one batch.
pub const MAX_BATCH_COMMANDS: usize = 4096;
/// The most payload bytes in one batch (journal entries and snapshots), about.
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// How long a submission may wait for its batch to be committed, leader election included.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a proposal waits before it asks again for a leader (none known, or the one asked
/// named none).
pub const LEADER_RETRY: Duration = Duration::from_millis(10);
/// How many submissions may wait for a batch; past that, submitting fails at once (`NotSent`).
pub const QUEUE_CAPACITY: usize = 65_536;
/// How many batches of the ordinary lane may be on their way to the log at once; past that,
/// submissions wait for one of them to end and go in the next batch.
pub const BATCHES_IN_FLIGHT: usize = 4;

/// A committed submission: the log index of its entry, and each command's outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The log index of the entry that carried it.
    pub index: u64,
    /// One outcome list per submitted command.
    pub outcomes: Vec<Vec<Outcome>>,
}

/// Why a submission was not (known to be) committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// Certainly not committed.
    #[error("not committed: {0}")]
    NotSent(NotSent),
    /// Perhaps committed: sent to the leader, no answer in time.
    #[error("perhaps committed: {0}")]
    Unknown(Uncertain),
}

/// Why a submission certainly did not reach the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotSent {
    /// Its lane held as many submissions as it may ([`QUEUE_CAPACITY`] or [`URGENT_CAPACITY`]).
    #[error("the proposer's queue is full ({capacity} submissions)")]
    QueueFull {
        /// The lane's bound.
        capacity: usize,
    },
    /// The proposer stopped (its node is stopping).
    #[error("the proposer stopped")]
    Stopped,
    /// No leader took it within [`PROPOSE_TIMEOUT`].
    #[error("no leader answered within {within:?} ({last})")]
    NoLeader {
        /// [`PROPOSE_TIMEOUT`].
        within: Duration,
        /// Why the last try did not get through.
        last: NoLeaderYet,
    },
    /// The leader declined it before appending.
    #[error("the leader declined it: {0}")]
    Declined(Declined),
}

/// Why one try to reach the leader did not get through (the batch was not appended).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoLeaderYet {
    /// This node knows no leader (an election).
    #[error("no leader known")]
    NoneKnown,
    /// The node asked does not lead; the leader it names, if any.
    #[error("node {asked} is not the leader (it names {names:?})")]
    NotLeader {
        /// The node asked (this node, when it had stopped leading).
        asked: NodeId,
        /// The leader it names.
        names: Option<NodeId>,
    },
    /// The leader could not be called (not connected, or busy).
    #[error(transparent)]
    Call(CallError),
}

/// Why a submission that may have reached the log has no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Uncertain {
    /// The leader's Raft failed (stopped, panicked, a storage error) after perhaps appending.
    #[error("the leader's Raft failed: {0}")]
    RaftFailed(Box<Fatal<NodeId>>),
    /// The leader's commit did not come within the time given ([`PROPOSE_TIMEOUT`] on this
    /// node, or the leader's own hold on a write).
    #[error("no commit within {0:?}")]
    NoCommit(Duration),
    /// The leader answered with a reply of another kind.
    #[error("node {0} answered with a reply of another kind")]
    WrongReply(NodeId),
    /// The call to the leader timed out or broke after the batch was sent.
    #[error(transparent)]
    Call(CallError),
}

struct Pending {
    commands: Vec<Command>,
    reply: oneshot::Sender<Result<Committed, ProposeError>>,
}

/// How many submissions may wait in the urgent lane (lease renewals: the host has one in
/// flight at a time); past that, submitting fails at once (`NotSent`).
pub const URGENT_CAPACITY: usize = 16;

/// A node's proposer (cheap to clone).
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
    /// The urgent lane: batches of its own, sent without waiting for the ordinary lane's batch
    /// in flight (see [`Proposer::submit_urgent`]).
    urgent: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Proposer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Proposer")
    }
}

/// A command's payload bytes (journal entries and snapshots), for the batch bounds.
pub(crate) fn payload_bytes(c: &Command) -> usize {
    match c {
        Command::Write { ops, .. } => {
            ops.iter()
                .map(|o| match &o.op {
                    crate::ledger::WriteKind::Append { bytes, .. }
                    | crate::ledger::WriteKind::Snapshot { bytes, .. } => bytes.len(),
                    crate::ledger::WriteKind::DeleteSnapshot { .. } => 0,
                })
                .sum()
        }
        _ => 64,
    }
}

impl Proposer {
    /// Starts the proposer of node `me`.
    pub fn start(me: NodeId, raft: Raft, appender: Appender) -> Proposer {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (urgent, urgent_rx) = mpsc::channel(URGENT_CAPACITY);
        let to_log = move |raft: Raft, appender: Appender| {
            move |batch: Batch| {
                let (raft, appender) = (raft.clone(), appender.clone());
                async move { send(me, &raft, &appender, batch).await }
            }
        };
        tokio::spawn(run(rx, BATCHES_IN_FLIGHT, to_log(raft.clone(), appender.clone())));
        tokio::spawn(run(urgent_rx, 1, to_log(raft, appender)));
        Proposer { tx, urgent }
    }

    /// Submits `commands` and waits for their batch.
    pub async fn submit(&self, commands: Vec<Command>) -> Result<Committed, ProposeError> {
        Proposer::submit_to(&self.tx, commands).await
    }

    /// Submits `commands` in the urgent lane: its batches go to the leader without waiting
    /// for the ordinary lane's batch in flight, which may be thousands of starts' key opens
    /// and snapshots taking a second or more to commit under load. For small commands whose
    /// delay costs availability (lease renewals: a renewal stuck behind a node's own mass
    /// start got the node evicted, and its singletons started elsewhere). The two lanes' entries
    /// may reach the log in either order.
    pub async fn submit_urgent(&self, commands: Vec<Command>) -> Result<Committed, ProposeError> {
        Proposer::submit_to(&self.urgent, commands).await
    }

    async fn submit_to(lane: &mpsc::Sender<Pending>, commands: Vec<Command>) -> Result<Committed, ProposeError> {
        Proposer::enqueue(lane, commands)?.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Queues `commands` in the ordinary lane without waiting: the answer comes on the
    /// receiver (for a caller that is not async and must not block, such as the checkpoint
    /// writer with several commits in flight).
    pub fn submit_later(
        &self,
        commands: Vec<Command>,
    ) -> Result<oneshot::Receiver<Result<Committed, ProposeError>>, ProposeError> {
        Proposer::enqueue(&self.tx, commands)
    }

    /// [`Proposer::submit`] for a thread outside the runtime (a store's writer thread).
    pub fn submit_blocking(&self, commands: Vec<Command>) -> Result<Committed, ProposeError> {
        Proposer::enqueue(&self.tx, commands)?.blocking_recv().unwrap_or_else(|_| Err(stopped()))
    }

    /// Queues `commands` in `lane` (refused at once when the lane is full); the answer comes
    /// on the receiver.
    fn enqueue(
        lane: &mpsc::Sender<Pending>,
        commands: Vec<Command>,
    ) -> Result<oneshot::Receiver<Result<Committed, ProposeError>>, ProposeError> {
        let (reply, rx) = oneshot::channel();
        lane.try_send(Pending { commands, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                ProposeError::NotSent(NotSent::QueueFull { capacity: lane.max_capacity() })
            }
            mpsc::error::TrySendError::Closed(_) => stopped(),
        })?;
        Ok(rx)
    }
}

fn stopped() -> ProposeError {
    ProposeError::NotSent(NotSent::Stopped)
}

/// `first` and what already waits behind it, up to [`MAX_BATCH_COMMANDS`] commands or
/// [`MAX_BATCH_BYTES`] of payload (the submission that crosses a bound is the batch's last);
/// the rest stays queued for the next batch.
fn take_batch(first: Pending, rx: &mut mpsc::Receiver<Pending>) -> Vec<Pending> {
    let mut bytes: usize = first.commands.iter().map(payload_bytes).sum();
    let mut count = first.commands.len();
    let mut pending = vec![first];
    while count < MAX_BATCH_COMMANDS && bytes < MAX_BATCH_BYTES {
        match rx.try_recv() {
            Ok(p) => {
                count += p.commands.len();
                bytes += p.commands.iter().map(payload_bytes).sum::<usize>();
                pending.push(p);
            }
            Err(_) => break,
        }
    }
    pending
}

/// Takes batches off `rx` and hands each to `send`, with at most `in_flight` on their way at
/// once.
async fn run<S, F>(mut rx: mpsc::Receiver<Pending>, in_flight: usize, send: S)
where
    S: Fn(Batch) -> F,
    F: Future<Output = Result<(u64, Answers), ProposeError>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(in_flight.max(1)));
    loop {
        // Wait for room before taking: what arrives meanwhile goes in one batch.
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let Some(first) = rx.recv().await else { return };
        let (batch, replies) = join(take_batch(first, &mut rx));
        let sent = send(batch);
        tokio::spawn(async move {
            let _slot = slot;
            answer(replies, sent.await);
        });
    }
}

/// Whom to answer, with how many of the batch's commands each submitted.
type Replies = Vec<(oneshot::Sender<Result<Committed, ProposeError>>, usize)>;

/// The submissions' commands as one batch.
fn join(pending: Vec<Pending>) -> (Batch, Replies) {
    let mut commands = Vec::with_capacity(pending.iter().map(|p| p.commands.len()).sum());
    let mut replies = Vec::with_capacity(pending.len());
    for p in pending {
        replies.push((p.reply, p.commands.len()));
        commands.extend(p.commands);
    }
    (Batch(commands), replies)
}

/// Answers each submission of a batch with its own commands' outcomes, in order.
fn answer(replies: Replies, result: Result<(u64, Answers), ProposeError>) {
    match result {
        Ok((index, Answers(all))) => {
            let mut rest = all.into_iter();
            for (reply, n) in replies {
                let outcomes: Vec<Vec<Outcome>> = rest.by_ref().take(n).collect();
                let _ = reply.send(Ok(Committed { index, outcomes }));
            }
        }
        Err(e) => {
            for (reply, _) in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// Sends one batch to the leader, waiting for one to be known; retries only while the batch
/// certainly did not reach the log.
async fn send(me: NodeId, raft: &Raft, appender: &Appender, batch: Batch) -> Result<(u64, Answers), ProposeError> {
    let deadline = Instant::now() + PROPOSE_TIMEOUT;
    let mut hint: Option<NodeId> = None;
    // Why the last try did not get through, for the error.
    let mut last = NoLeaderYet::NoneKnown;
    let not_sent = |e: NotSent| ProposeError::NotSent(e);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(not_sent(NotSent::NoLeader { within: PROPOSE_TIMEOUT, last }));
        }
        let leader = match hint.take().or_else(|| raft.metrics().borrow().current_leader) {
            Some(l) => l,
            None => {
                last = NoLeaderYet::NoneKnown;
                tokio::time::sleep(LEADER_RETRY.min(left)).await;
                continue;
            }
        };
        if leader == me {
            match tokio::time::timeout(left, appender.write(batch.clone())).await {
                Ok(Ok(done)) => return Ok(done),
                // Raft itself failed (stopped, storage): the entry may have been replicated.
                Ok(Err(e)) => match e {
                    NotDone::Unknown(fatal) => return Err(ProposeError::Unknown(Uncertain::RaftFailed(fatal))),
                    NotDone::NoAnswer(ms) => {
                        return Err(ProposeError::Unknown(Uncertain::NoCommit(Duration::from_millis(ms))))
                    }
                    // Not appended: it is safe to send it elsewhere.
                    NotDone::NotLeader(names) => {
                        last = NoLeaderYet::NotLeader { asked: me, names };
                        hint = names.filter(|l| *l != me);
                        if hint.is_none() {
                            tokio::time::sleep(LEADER_RETRY.min(left)).await;
                        }
                    }
                    NotDone::Failed(declined) => return Err(not_sent(NotSent::Declined(declined))),
                },
                Err(_) => return Err(ProposeError::Unknown(Uncertain::NoCommit(PROPOSE_TIMEOUT))),
            }
            continue;
        }
        match network::call(leader, &Request::Propose(batch.clone()), left).await {
            Ok(Reply::Proposed(Ok(done))) => return Ok(done),
            Ok(Reply::Proposed(Err(NotDone::NotLeader(names)))) => {
                last = NoLeaderYet::NotLeader { asked: leader, names };
                hint = names.filter(|l| *l != leader);
                if hint.is_none() {
                    tokio::time::sleep(LEADER_RETRY.min(left)).await;
                }
            }
            Ok(Reply::Proposed(Err(NotDone::Failed(declined)))) => return Err(not_sent(NotSent::Declined(declined))),
            Ok(Reply::Proposed(Err(NotDone::NoAnswer(ms)))) => {
                return Err(ProposeError::Unknown(Uncertain::NoCommit(Duration::from_millis(ms))))
            }
            Ok(Reply::Proposed(Err(NotDone::Unknown(fatal)))) => {
                return Err(ProposeError::Unknown(Uncertain::RaftFailed(fatal)))
            }
            Ok(_) => return Err(ProposeError::Unknown(Uncertain::WrongReply(leader))),
            // Refused before it was read, by a leader of another wire version: not sent.
            Err(e @ (CallError::Unreachable(_) | CallError::Busy(_) | CallError::Version { .. })) => {
                last = NoLeaderYet::Call(e);
                tokio::time::sleep(LEADER_RETRY.min(left)).await;
            }
            Err(e @ CallError::Timeout(..)) | Err(e @ CallError::Failed(..)) => {
                return Err(ProposeError::Unknown(Uncertain::Call(e)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_command() -> (Pending, oneshot::Receiver<Result<Committed, ProposeError>>) {
        let (reply, answer) = oneshot::channel();
        (Pending { commands: vec![Command::Drain { node: 1 }], reply }, answer)
    }

    #[test]
    fn a_batch_holds_at_most_max_batch_commands_and_the_rest_waits() {
        let (tx, mut rx) = mpsc::channel(QUEUE_CAPACITY);
        let mut answers = Vec::new();
        for _ in 0..MAX_BATCH_COMMANDS + 5 {
            let (p, a) = one_command();
            tx.try_send(p).expect("room");
            answers.push(a);
        }
        let first = rx.try_recv().expect("queued");
        assert_eq!(take_batch(first, &mut rx).len(), MAX_BATCH_COMMANDS);
        let next = rx.try_recv().expect("the rest stayed queued");
        assert_eq!(take_batch(next, &mut rx).len(), 5);
    }

    #[test]
    fn a_batch_stops_after_the_submission_that_crosses_max_batch_bytes() {
        use crate::ledger::{KeyOp, WriteKind};
        // Each submission carries a third of the byte bound and a byte, so the third crosses it.
        let big = |seq| {
            let (reply, answer) = oneshot::channel();
            let op = KeyOp {
                key: "k".into(),
                token: 1,
                epoch: 1,
                op: WriteKind::Append { seq, bytes: vec![0; MAX_BATCH_BYTES / 3 + 1] },
            };
            (Pending { commands: vec![Command::Write { node: 1, ops: vec![op] }], reply }, answer)
        };
        let (tx, mut rx) = mpsc::channel(QUEUE_CAPACITY);
        let mut answers = Vec::new();
        for seq in 0..6 {
            let (p, a) = big(seq);
            tx.try_send(p).expect("room");
            answers.push(a);
        }
        let first = rx.try_recv().expect("queued");
        let batch = take_batch(first, &mut rx);
        assert_eq!(batch.len(), 3, "three thirds and a bit cross the bound: the third is the last taken");
        assert!(batch.iter().flat_map(|p| &p.commands).map(payload_bytes).sum::<usize>() >= MAX_BATCH_BYTES);
        let next = rx.try_recv().expect("the rest stayed queued");
        assert_eq!(take_batch(next, &mut rx).len(), 3);
        assert!(rx.try_recv().is_err(), "nothing lost, nothing left");
    }

    #[tokio::test]
    async fn a_full_queue_refuses_a_submission_at_once() {
        // No batcher drains the queue (as when the leader stalls): fill it to the bound.
        let (tx, _rx) = mpsc::channel(QUEUE_CAPACITY);
        let (urgent, _urgent_rx) = mpsc::channel(URGENT_CAPACITY);
        let proposer = Proposer { tx, urgent };
        let mut waiting = Vec::new();
        for _ in 0..QUEUE_CAPACITY {
            let (reply, answer) = oneshot::channel();
            proposer.tx.try_send(Pending { commands: Vec::new(), reply }).expect("room up to the bound");
            waiting.push(answer);
        }
        match proposer.submit(Vec::new()).await {
            Err(ProposeError::NotSent(NotSent::QueueFull { capacity })) => assert_eq!(capacity, QUEUE_CAPACITY),
            other => panic!("expected NotSent at once, got {other:?}"),
        }
        // The urgent lane has a bound of its own, and is not blocked by the full ordinary one.
        for _ in 0..URGENT_CAPACITY {
            let (reply, answer) = oneshot::channel();
            proposer.urgent.try_send(Pending { commands: Vec::new(), reply }).expect("room in the urgent lane");
            waiting.push(answer);
        }
        match proposer.submit_urgent(Vec::new()).await {
            Err(ProposeError::NotSent(NotSent::QueueFull { capacity })) => assert_eq!(capacity, URGENT_CAPACITY),
            other => panic!("expected NotSent at once, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn at_most_batches_in_flight_are_sent_at_once_and_the_rest_ride_together() {
        type Started = (usize, oneshot::Sender<Result<(u64, Answers), ProposeError>>);
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (started_tx, mut started) = mpsc::unbounded_channel::<Started>();
        let to_log = move |batch: Batch| {
            let (done, result) = oneshot::channel();
            let _ = started_tx.send((batch.0.len(), done));
            async move { result.await.unwrap_or(Err(stopped())) }
        };
        tokio::spawn(run(rx, BATCHES_IN_FLIGHT, to_log));
        let settle = || async {
            // Every task that can run runs (one thread, no timers): what has not started now
            // is waiting for room.
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
        };
        let mut in_flight = Vec::new();
        let mut answers = Vec::new();
        for _ in 0..BATCHES_IN_FLIGHT {
            let (p, a) = one_command();
            tx.try_send(p).expect("room");
            answers.push(a);
            let (len, done) = started.recv().await.expect("a batch starts while there is room");
            assert_eq!(len, 1);
            in_flight.push(done);
        }
        let mut later = Vec::new();
        for _ in 0..3 {
            let (p, a) = one_command();
            tx.try_send(p).expect("room");
            later.push(a);
        }
        settle().await;
        assert!(started.try_recv().is_err(), "no batch past BATCHES_IN_FLIGHT starts");
        // One batch ends: its submission is answered, and the three waiting go in one batch.
        let first = in_flight.remove(0);
        let _ = first.send(Ok((7, Answers(vec![vec![Outcome::Done]]))));
        let (len, _done) = started.recv().await.expect("room again");
        assert_eq!(len, 3, "what waited for room rides in one batch");
        let committed = answers.remove(0).await.expect("answered").expect("committed");
        assert_eq!(committed, Committed { index: 7, outcomes: vec![vec![Outcome::Done]] });
    }
}
