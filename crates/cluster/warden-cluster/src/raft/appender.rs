//! The leader's half of group commit: the batches a node is asked to commit while it leads
//! (its own proposer's and every other node's) are merged into one log entry per round.
//!
//! Why: openraft 0.9 appends each client write on its own, one after another, and waits for
//! each append's `fsync` before it looks at the next write (`RaftCore::append_to_log`), so
//! three nodes' proposers with a few batches each on their way cost the leader as many
//! `fsync`s in a row per round, before anything is replicated. Merged, a round is one append
//! and one `fsync` on each node, however many nodes and batches it carries.
//!
//! Up to [`APPENDS_IN_FLIGHT`] merged writes are on their way at once; every batch that comes
//! meanwhile waits and goes in the next one, until it holds [`MAX_ENTRY_COMMANDS`] commands or
//! [`MAX_ENTRY_BYTES`] of payload (the batch that crosses a bound is the entry's last; none is
//! split). Each caller gets its own commands' answers and the entry's index; a write that
//! fails fails every batch in it the same way (not leading: none of them reached the log), and
//! one that does not end within [`SLOT_HOLD`] is answered `NoAnswer` and gives its slot back.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

use super::network::NotDone;
use super::{Answers, Batch, Raft};
use crate::proposer::payload_bytes;

/// How many merged writes may be on their way through openraft at once: one being appended
/// while the one before is replicated and applied.
pub const APPENDS_IN_FLIGHT: usize = 2;
/// How long a merged write may hold its slot ([`PROPOSE_TIMEOUT`](crate::proposer::PROPOSE_TIMEOUT),
/// after which the node's own callers of it have given up): past that its callers are
/// answered [`NotDone::NoAnswer`] ("perhaps committed") and the next entry may start. openraft does not always
/// answer a client write soon: a leader that steps down with the entry uncommitted may answer
/// only when the entry is decided, or never if a new leader truncates it. Without this bound,
/// two such writes stopped every commit of the node until it was restarted (`bench-cluster`
/// leader kills: failovers of 9 and 17 s).
pub const SLOT_HOLD: std::time::Duration = crate::proposer::PROPOSE_TIMEOUT;
/// The most commands in one merged entry.
pub const MAX_ENTRY_COMMANDS: usize = 16_384;
/// The most payload bytes in one merged entry, about.
pub const MAX_ENTRY_BYTES: usize = 2 << 20;
/// How many batches may wait for an entry. Callers are few and bounded (the RPC actor's
/// `MAX_CONCURRENT_REQUESTS` remote proposals and the node's own proposer's batches), so one
/// that finds it full waits for room.
pub const QUEUE_CAPACITY: usize = 2048;

type Answer = Result<(u64, Answers), NotDone>;

struct Waiting {
    batch: Batch,
    reply: oneshot::Sender<Answer>,
}

/// A node's appender (cheap to clone).
#[derive(Clone)]
pub struct Appender {
    tx: mpsc::Sender<Waiting>,
}

impl std::fmt::Debug for Appender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Appender")
    }
}

impl Appender {
    /// Starts the appender of a node's Raft.
    pub fn start(raft: Raft) -> Appender {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let write = move |batch: Batch| {
            let raft = raft.clone();
            async move {
                match raft.client_write(batch).await {
                    Ok(resp) => Ok((resp.log_id.index, resp.data)),
                    Err(e) => Err(NotDone::of_write(e)),
                }
            }
        };
        tokio::spawn(run(rx, APPENDS_IN_FLIGHT, write));
        Appender { tx }
    }

    /// Commits `batch` in the next entry, if this node leads: the entry's index and the
    /// batch's own answers.
    pub async fn write(&self, batch: Batch) -> Answer {
        let (reply, answer) = oneshot::channel();
        let stopped = || NotDone::Unknown(Box::new(openraft::error::Fatal::Stopped));
        // Gone: the node is stopping, and its Raft with it.
        self.tx.send(Waiting { batch, reply }).await.map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// Takes merged entries off `rx` and hands each to `write`, at most `in_flight` at once.
async fn run<W, F>(mut rx: mpsc::Receiver<Waiting>, in_flight: usize, write: W)
where
    W: Fn(Batch) -> F,
    F: Future<Output = Answer> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(in_flight.max(1)));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let Some(first) = rx.recv().await else { return };
        let (batch, replies) = merge(first, &mut rx);
        let written = write(batch);
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(SLOT_HOLD, written).await {
                Ok(answer) => split(replies, answer),
                // The node's own callers have given up by now (each waits at most
                // `PROPOSE_TIMEOUT`); any that still wait learn it may or may not be committed.
                Err(_) => {
                    tracing::warn!(
                        target: "warden::cluster",
                        hold_ms = SLOT_HOLD.as_millis() as u64,
                        batches = replies.len(),
                        "a log write did not end in time; the next one goes ahead"
                    );
                    split(replies, Err(NotDone::NoAnswer(SLOT_HOLD.as_millis() as u64)));
                }
            }
        });
    }
}

/// Whom to answer, with how many of the entry's commands each sent.
type Replies = Vec<(oneshot::Sender<Answer>, usize)>;

/// `first` and the batches waiting behind it as one, within the entry's bounds.
fn merge(first: Waiting, rx: &mut mpsc::Receiver<Waiting>) -> (Batch, Replies) {
    let mut bytes: usize = first.batch.0.iter().map(payload_bytes).sum();
    let mut replies = vec![(first.reply, first.batch.0.len())];
    let mut commands = first.batch.0;
    while commands.len() < MAX_ENTRY_COMMANDS && bytes < MAX_ENTRY_BYTES {
        let Ok(next) = rx.try_recv() else { break };
        bytes += next.batch.0.iter().map(payload_bytes).sum::<usize>();
        replies.push((next.reply, next.batch.0.len()));
        commands.extend(next.batch.0);
    }
    (Batch(commands), replies)
}

/// Each batch's own answers, in order, and the entry's index; a failure for all.
fn split(replies: Replies, answer: Answer) {
    match answer {
        Ok((index, Answers(all))) => {
            let mut rest = all.into_iter();
            for (reply, n) in replies {
                let _ = reply.send(Ok((index, Answers(rest.by_ref().take(n).collect()))));
            }
        }
        Err(e) => {
            for (reply, _) in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Command, Outcome};

    fn batch(n: usize, node: u64) -> Batch {
        Batch((0..n).map(|_| Command::Drain { node }).collect())
    }

    #[tokio::test(flavor = "current_thread")]
    async fn batches_that_wait_share_one_entry_and_each_gets_its_own_answers() {
        type Started = (Vec<Command>, oneshot::Sender<Answer>);
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (started_tx, mut started) = mpsc::unbounded_channel::<Started>();
        let write = move |batch: Batch| {
            let (done, result) = oneshot::channel();
            let _ = started_tx.send((batch.0, done));
            async move { result.await.unwrap_or(Err(NotDone::NotLeader(None))) }
        };
        tokio::spawn(run(rx, APPENDS_IN_FLIGHT, write));
        let appender = Appender { tx };
        let send = |b: Batch| {
            let a = appender.clone();
            tokio::spawn(async move { a.write(b).await })
        };
        // Two slow entries take both slots.
        let slow = send(batch(1, 100));
        let (_, slow_done) = started.recv().await.expect("an entry starts while there is room");
        let other = send(batch(1, 101));
        let (_, other_done) = started.recv().await.expect("the second slot is taken");
        // Three nodes' batches (1, 2 and 3 commands) wait behind them.
        let waiting: Vec<_> =
            [(1u64, 1usize), (2, 2), (3, 3)].into_iter().map(|(node, n)| send(batch(n, node))).collect();
        for _ in 0..20 {
            // One thread, no timers: whatever can run, runs.
            tokio::task::yield_now().await;
        }
        assert!(started.try_recv().is_err(), "no entry past APPENDS_IN_FLIGHT starts");
        let _ = slow_done.send(Ok((5, Answers(vec![vec![Outcome::Done]]))));
        assert_eq!(slow.await.expect("joined"), Ok((5, Answers(vec![vec![Outcome::Done]]))));
        let (commands, done) = started.recv().await.expect("room again");
        let nodes: Vec<u64> = commands
            .iter()
            .map(|c| match c {
                Command::Drain { node } => *node,
                _ => unreachable!("drains only"),
            })
            .collect();
        assert_eq!(nodes, vec![1, 2, 2, 3, 3, 3], "the three batches ride in one entry, in order");
        let answers: Vec<Vec<Outcome>> = (0..6).map(|i| vec![Outcome::Renewed { renewals: i }]).collect();
        let _ = done.send(Ok((8, Answers(answers.clone()))));
        let mut got = Vec::new();
        for w in waiting {
            got.push(w.await.expect("joined").expect("committed"));
        }
        assert_eq!(got[0], (8, Answers(answers[0..1].to_vec())));
        assert_eq!(got[1], (8, Answers(answers[1..3].to_vec())));
        assert_eq!(got[2], (8, Answers(answers[3..6].to_vec())));
        let _ = other_done.send(Err(NotDone::NotLeader(Some(9))));
        assert_eq!(other.await.expect("joined"), Err(NotDone::NotLeader(Some(9))));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failed_entry_fails_every_batch_in_it_alike() {
        let (tx, mut rx) = mpsc::channel(QUEUE_CAPACITY);
        let mut answers = Vec::new();
        for node in 0..3 {
            let (reply, answer) = oneshot::channel();
            tx.try_send(Waiting { batch: batch(1, node), reply }).expect("room");
            answers.push(answer);
        }
        let first = rx.try_recv().expect("queued");
        let (merged, replies) = merge(first, &mut rx);
        assert_eq!(merged.0.len(), 3);
        split(replies, Err(NotDone::NotLeader(Some(2))));
        for a in answers {
            assert_eq!(a.await.expect("answered"), Err(NotDone::NotLeader(Some(2))));
        }
    }

    #[test]
    fn an_entry_stops_after_the_batch_that_crosses_max_entry_commands() {
        let (tx, mut rx) = mpsc::channel(QUEUE_CAPACITY);
        for node in 0..3 {
            let (reply, _answer) = oneshot::channel();
            tx.try_send(Waiting { batch: batch(MAX_ENTRY_COMMANDS / 2 + 1, node), reply }).expect("room");
        }
        let first = rx.try_recv().expect("queued");
        let (merged, replies) = merge(first, &mut rx);
        assert_eq!(replies.len(), 2, "the second batch crosses the bound and is the entry's last");
        assert_eq!(merged.0.len(), 2 * (MAX_ENTRY_COMMANDS / 2 + 1));
        assert!(rx.try_recv().is_ok(), "the third waits for the next entry");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_makes_the_caller_wait_for_room() {
        // No runner takes entries (as when the leader's disk stalls): fill the queue.
        let (tx, mut rx) = mpsc::channel(QUEUE_CAPACITY);
        let appender = Appender { tx };
        for node in 0..QUEUE_CAPACITY as u64 {
            let (reply, _answer) = oneshot::channel();
            appender.tx.try_send(Waiting { batch: batch(1, node), reply }).expect("room up to the bound");
        }
        let a = appender.clone();
        let late = tokio::spawn(async move { a.write(batch(1, 7)).await });
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert_eq!(rx.len(), QUEUE_CAPACITY, "the late batch waits outside the full queue");
        assert!(!late.is_finished());
        drop(rx.try_recv().expect("one leaves"));
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert_eq!(rx.len(), QUEUE_CAPACITY, "room made, the late batch is queued");
        drop(rx);
        assert!(matches!(late.await.expect("joined"), Err(NotDone::Unknown(_))), "no runner: it ends unanswered");
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_write_that_never_ends_gives_its_slot_back_after_the_hold() {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (started_tx, mut started) = mpsc::unbounded_channel::<usize>();
        // Writes that never end (openraft not answering), each counted as it starts.
        let write = move |batch: Batch| {
            let _ = started_tx.send(batch.0.len());
            std::future::pending::<Answer>()
        };
        tokio::spawn(run(rx, APPENDS_IN_FLIGHT, write));
        let appender = Appender { tx };
        let send = |n: usize| {
            let a = appender.clone();
            tokio::spawn(async move { a.write(batch(n, 1)).await })
        };
        let mut stuck = Vec::new();
        for _ in 0..APPENDS_IN_FLIGHT {
            stuck.push(send(1));
            assert_eq!(started.recv().await, Some(1), "an entry of its own while there is room");
        }
        let next = send(3);
        tokio::time::sleep(SLOT_HOLD - std::time::Duration::from_millis(1)).await;
        assert!(started.try_recv().is_err(), "both slots still held just before the hold ends");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert_eq!(started.try_recv(), Ok(3), "the next entry starts as soon as the hold is over");
        for s in stuck {
            assert_eq!(
                s.await.expect("joined"),
                Err(NotDone::NoAnswer(SLOT_HOLD.as_millis() as u64)),
                "perhaps committed"
            );
        }
        assert!(!next.is_finished(), "its own write has not ended yet");
    }
}
