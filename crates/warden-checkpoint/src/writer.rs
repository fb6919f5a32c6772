//! The blocking writer thread: group commit of snapshots and journal entries.
//!
//! Everything that reaches the store goes through one OS thread fed by an unbounded
//! crossbeam channel. Each round takes every job waiting (up to a cap), drops snapshots that a
//! newer snapshot of the same key in the same round supersedes, commits the rest with one
//! [`Store::start_commit`] (one durable transaction for a local store) and then answers every
//! job with its own op's result: a store that refuses one key's writes fails only the jobs of
//! that key. Many actors' snapshots thus share one
//! `fsync`, which is what makes tens of thousands of acknowledged snapshots per second possible
//! on a disk that syncs a few thousand times per second.
//!
//! A local store commits one round at a time. A store whose commit is a round trip (a
//! cluster's consensus log) lets up to [`Store::commits_in_flight`] rounds overlap, so the
//! next round leaves while the previous one is on its way; a key is in at most one of them,
//! and a flush waits for every round before it (see [`Writer`]).
//!
//! Why the channel is unbounded: producers are bounded by construction. A durable actor has at
//! most one entry in flight (it waits for the acknowledgement before its next message), an
//! actor waiting for its snapshot has one, and the snapshots a policy asks for without waiting
//! coalesce before they get here (at most one per key waits for the snapshot actor, see
//! `KeyEntry::pending`), so the queue holds at most a few writes per key
//! (`tests/snapshot_queue.rs`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;

use crate::store::{CommitDone, Store, StoreError, WriteOp};

/// The answer to one job.
pub(crate) type Ack = oneshot::Sender<Result<(), StoreError>>;

/// One write, with whoever waits for it.
pub(crate) struct Job {
    pub op: Option<WriteOp>,
    pub ack: Option<Ack>,
    /// Raised to the snapshot's sequence number once its batch is settled (committed or
    /// failed), so a restarting actor knows whether it must wait for it.
    pub settled: Option<(Arc<AtomicU64>, u64)>,
    /// Ends the thread after this round (and so releases the store).
    pub close: bool,
    /// The write is in this slot, taken when the writer takes the job (`op` is then `None`):
    /// until then a newer write of the same key replaces it there instead of queueing.
    pub slot: Option<OpSlot>,
}

/// A key's one encoded snapshot waiting for the writer (see [`Job::slot`]), with its
/// settled mark.
pub(crate) type OpSlot = Arc<std::sync::Mutex<Option<(WriteOp, Option<(Arc<AtomicU64>, u64)>)>>>;

/// Fills a job from its slot, as the writer takes it.
fn resolve(mut job: Job) -> Job {
    if let Some(slot) = job.slot.take() {
        if let Some((op, settled)) = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            job.op = Some(op);
            job.settled = settled;
        }
    }
    job
}

/// The most jobs committed in one transaction.
const MAX_BATCH: usize = 8192;
/// The most payload bytes committed in one transaction (a round stops taking jobs after it).
const MAX_BATCH_BYTES: usize = 64 << 20;

/// Counters of the writer, readable at any time.
#[derive(Debug, Default)]
pub(crate) struct WriterCounters {
    pub commits: AtomicU64,
    pub ops: AtomicU64,
    pub superseded: AtomicU64,
    pub failed_commits: AtomicU64,
    pub commit_nanos: AtomicU64,
}

pub(crate) fn spawn(
    store: Arc<dyn Store>,
    counters: Arc<WriterCounters>,
    on_failure: impl Fn(&StoreError, usize) + Send + 'static,
) -> std::io::Result<(Sender<Job>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::unbounded::<Job>();
    let handle = std::thread::Builder::new()
        .name("warden-checkpoint-writer".into())
        .spawn(move || run(store, rx, counters, on_failure))?;
    Ok((tx, handle))
}

fn op_bytes(op: &WriteOp) -> usize {
    match op {
        WriteOp::Snapshot { bytes, .. } | WriteOp::Append { bytes, .. } => bytes.len(),
        WriteOp::DeleteSnapshot { .. } => 0,
    }
}

/// A round started with [`Store::start_commit`] and not finished: whom to answer, and the keys
/// it holds (no other round may write them until it finishes).
struct Round {
    /// Each job's ack and the index of the op whose result is its answer (none: `Ok`).
    answers: Vec<(Option<Ack>, Option<usize>)>,
    marks: Vec<(Arc<AtomicU64>, u64)>,
    keys: HashSet<Arc<str>>,
    started: Instant,
}

/// A round's results, on their way back to the writer thread.
type Finished = (u64, Vec<Result<(), StoreError>>);

/// The writer thread's state between rounds.
///
/// Rounds overlap up to [`Store::commits_in_flight`] (1 for a local store: each round waits
/// for the previous one). Two rules keep that safe:
/// - a key is in at most one round in flight: a job whose key is busy is held back, in order,
///   with every later job of that key behind it, so a key's writes reach the store in the
///   order they were queued, whatever order the store finishes rounds in;
/// - a job without an op (a flush or a close) is a barrier: it is answered only once every
///   job queued before it is, and nothing queued after it starts before it.
struct Writer<F> {
    store: Arc<dyn Store>,
    counters: Arc<WriterCounters>,
    on_failure: F,
    depth: usize,
    rounds: HashMap<u64, Round>,
    next_round: u64,
    busy: HashSet<Arc<str>>,
    /// Jobs taken from the channel and not started yet, in queue order.
    held: VecDeque<Job>,
    done_tx: Sender<Finished>,
    done_rx: Receiver<Finished>,
    /// A close job was taken: nothing more is taken.
    closing: bool,
    /// Every sender is gone.
    disconnected: bool,
}

fn run(
    store: Arc<dyn Store>,
    rx: Receiver<Job>,
    counters: Arc<WriterCounters>,
    on_failure: impl Fn(&StoreError, usize),
) {
    let mut w = Writer::new(store, counters, on_failure);
    loop {
        w.step(&rx);
        let idle = w.rounds.is_empty();
        // Closing: everything queued before the close job is answered once nothing is in
        // flight; jobs queued after it are dropped unanswered (their waiters see the writer gone).
        if idle && (w.closing || (w.disconnected && w.held.is_empty())) {
            return;
        }
        let may_take = w.rounds.len() < w.depth && !w.closing && !w.disconnected;
        if idle {
            // Nothing in flight, so nothing is held back: only a new job can come.
            match rx.recv() {
                Ok(job) => w.held.push_back(resolve(job)),
                Err(_) => w.disconnected = true,
            }
        } else if may_take {
            crossbeam_channel::select! {
                recv(rx) -> job => match job {
                    Ok(job) => w.held.push_back(resolve(job)),
                    Err(_) => w.disconnected = true,
                },
                recv(w.done_rx) -> finished => {
                    if let Ok(finished) = finished {
                        w.finish(finished);
                    }
                }
            }
        } else if let Ok(finished) = w.done_rx.recv() {
            w.finish(finished);
        }
    }
}

/// Whether a job may start in the round being taken.
enum Admit {
    /// Yes.
    Now,
    /// Not yet: its key is in a round in flight (later jobs of other keys may go ahead).
    Later,
    /// Not yet, and nothing after it either: a barrier with something before it unanswered.
    Barrier,
}

impl<F: Fn(&StoreError, usize)> Writer<F> {
    fn new(store: Arc<dyn Store>, counters: Arc<WriterCounters>, on_failure: F) -> Self {
        let depth = store.commits_in_flight().max(1);
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        Writer {
            store,
            counters,
            on_failure,
            depth,
            rounds: HashMap::new(),
            next_round: 0,
            busy: HashSet::new(),
            held: VecDeque::new(),
            done_tx,
            done_rx,
            closing: false,
            disconnected: false,
        }
    }

    /// Everything that can be done without waiting: answers the rounds that finished, then
    /// starts rounds while there is room and something may start.
    fn step(&mut self, rx: &Receiver<Job>) {
        loop {
            while let Ok(finished) = self.done_rx.try_recv() {
                self.finish(finished);
            }
            if self.rounds.len() >= self.depth {
                return;
            }
            let jobs = self.take(rx);
            if jobs.is_empty() {
                return;
            }
            self.start(jobs);
        }
    }

    fn admit(&self, job: &Job, earlier_waiting: bool) -> Admit {
        match &job.op {
            Some(op) if self.busy.contains(op.key()) => Admit::Later,
            Some(_) => Admit::Now,
            None if self.rounds.is_empty() && !earlier_waiting => Admit::Now,
            None => Admit::Barrier,
        }
    }

    /// The next round: held jobs first, then what waits in the channel, up to [`MAX_BATCH`]
    /// jobs or [`MAX_BATCH_BYTES`] (the job that crosses it is the round's last). Jobs of busy
    /// keys stay held; a barrier ends the round (it goes in only when nothing is in flight or
    /// held before it).
    fn take(&mut self, rx: &Receiver<Job>) -> Vec<Job> {
        if self.closing {
            return Vec::new();
        }
        let mut jobs: Vec<Job> = Vec::new();
        let mut bytes = 0usize;
        let mut stop = false;
        let mut rest = VecDeque::with_capacity(self.held.len());
        while let Some(job) = self.held.pop_front() {
            if stop || jobs.len() >= MAX_BATCH || bytes >= MAX_BATCH_BYTES {
                rest.push_back(job);
                continue;
            }
            match self.admit(&job, !rest.is_empty()) {
                Admit::Now => {
                    stop = job.op.is_none();
                    self.closing |= job.close;
                    bytes += job.op.as_ref().map_or(0, op_bytes);
                    jobs.push(job);
                }
                Admit::Later => rest.push_back(job),
                Admit::Barrier => {
                    stop = true;
                    rest.push_back(job);
                }
            }
        }
        self.held = rest;
        while !stop && !self.closing && !self.disconnected && jobs.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            let job = match rx.try_recv() {
                Ok(job) => resolve(job),
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => {
                    self.disconnected = true;
                    break;
                }
            };
            match self.admit(&job, !self.held.is_empty()) {
                Admit::Now => {
                    stop = job.op.is_none();
                    self.closing |= job.close;
                    bytes += job.op.as_ref().map_or(0, op_bytes);
                    jobs.push(job);
                }
                Admit::Later => self.held.push_back(job),
                Admit::Barrier => {
                    stop = true;
                    self.held.push_back(job);
                }
            }
        }
        jobs
    }

    /// Starts committing one round.
    fn start(&mut self, jobs: Vec<Job>) {
        // Newest snapshot of each key wins: the highest sequence number (the later of equal
        // ones). Queue order is not enough: a policy's pending snapshot is replaced in place by
        // newer ones (`KeyEntry::pending`), so it can arrive behind a newer-numbered one.
        let mut newest: HashMap<Arc<str>, (u64, usize)> = HashMap::new();
        for (i, job) in jobs.iter().enumerate() {
            if let Some(WriteOp::Snapshot { key, seq, .. }) = &job.op {
                let best = newest.entry(key.clone()).or_insert((*seq, i));
                if *seq >= best.0 {
                    *best = (*seq, i);
                }
            }
        }
        let mut keep = vec![true; jobs.len()];
        for (i, job) in jobs.iter().enumerate() {
            if let Some(WriteOp::Snapshot { key, .. }) = &job.op {
                keep[i] = newest.get(key).is_some_and(|(_, at)| *at == i);
            }
        }
        // Each job's answer is the result of one op: its own, or for a superseded snapshot
        // that of the newer snapshot of its key that replaced it.
        let mut ops = Vec::with_capacity(jobs.len());
        let mut answers: Vec<(Option<Ack>, Option<usize>)> = Vec::with_capacity(jobs.len());
        let mut superseded_by: HashMap<Arc<str>, Vec<usize>> = HashMap::new();
        let mut marks = Vec::new();
        let mut keys = HashSet::new();
        for (job, keep) in jobs.into_iter().zip(keep) {
            if let Some(mark) = job.settled {
                marks.push(mark);
            }
            if let Some(op) = &job.op {
                keys.insert(op.key().clone());
            }
            let slot = match job.op {
                Some(op) if keep => {
                    ops.push(op);
                    Some(ops.len() - 1)
                }
                Some(op) => {
                    self.counters.superseded.fetch_add(1, Ordering::Relaxed);
                    superseded_by.entry(op.key().clone()).or_default().push(answers.len());
                    None
                }
                None => None,
            };
            answers.push((job.ack, slot));
        }
        // A superseded snapshot shares the fate of the newest snapshot of its key.
        for (i, op) in ops.iter().enumerate() {
            if let WriteOp::Snapshot { key, .. } = op {
                for &j in superseded_by.get(key).map(Vec::as_slice).unwrap_or(&[]) {
                    answers[j].1 = Some(i);
                }
            }
        }
        let id = self.next_round;
        self.next_round += 1;
        self.busy.extend(keys.iter().cloned());
        self.rounds.insert(id, Round { answers, marks, keys, started: Instant::now() });
        if ops.is_empty() {
            self.finish((id, Vec::new()));
            return;
        }
        let done_tx = self.done_tx.clone();
        let done = CommitDone::new(ops.len(), move |results| {
            // The writer thread outlives every round it started; if it is gone, so is whoever
            // waited.
            let _ = done_tx.send((id, results));
        });
        self.store.start_commit(ops, done);
    }

    /// Answers one finished round's jobs and frees its keys.
    fn finish(&mut self, (id, results): Finished) {
        let Some(round) = self.rounds.remove(&id) else { return };
        for key in &round.keys {
            self.busy.remove(key);
        }
        let counters = &self.counters;
        counters.commit_nanos.fetch_add(round.started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let failed = results.iter().filter(|r| r.is_err()).count();
        if results.len() > failed {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters.ops.fetch_add((results.len() - failed) as u64, Ordering::Relaxed);
        }
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            counters.failed_commits.fetch_add(1, Ordering::Relaxed);
            (self.on_failure)(e, failed);
        }
        for (mark, seq) in round.marks {
            mark.fetch_max(seq, Ordering::Release);
        }
        for (ack, slot) in round.answers {
            let Some(ack) = ack else { continue };
            let result = match slot {
                Some(i) => results.get(i).cloned().unwrap_or(Err(StoreError::Closed)),
                None => Ok(()),
            };
            // A waiter that gave up is not an error.
            let _ = ack.send(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Cause, MemoryStore};

    /// Queues journal appends of `sizes` bytes on distinct keys, closes the queue and runs the
    /// writer to its end on this thread: the number of transactions it committed.
    fn commits_for(sizes: impl Iterator<Item = usize>) -> u64 {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        for (i, size) in sizes.enumerate() {
            let op = WriteOp::Append { key: Arc::from(format!("batch/{i}")), seq: 1, bytes: vec![0; size] };
            tx.send(Job { op: Some(op), ack: None, settled: None, close: false, slot: None }).unwrap();
        }
        drop(tx);
        let counters = Arc::new(WriterCounters::default());
        run(Arc::new(MemoryStore::new()), rx, counters.clone(), |_, _| {});
        counters.commits.load(Ordering::Relaxed)
    }

    #[test]
    fn a_transaction_takes_at_most_max_batch_jobs_or_max_batch_bytes() {
        assert_eq!(commits_for(std::iter::repeat_n(1, MAX_BATCH)), 1, "a full batch is one transaction");
        assert_eq!(commits_for(std::iter::repeat_n(1, MAX_BATCH + 1)), 2, "one job past the bound waits");
        // Bytes: the job that crosses the bound is the transaction's last.
        let big = MAX_BATCH_BYTES / 2 + 1;
        assert_eq!(commits_for(std::iter::repeat_n(big, 3)), 2);
    }

    #[tokio::test]
    async fn every_job_is_answered_and_superseded_snapshots_are_skipped() {
        let store = MemoryStore::new();
        let counters = Arc::new(WriterCounters::default());
        let (tx, handle) = spawn(Arc::new(store.clone()), counters.clone(), |_, _| {}).unwrap();
        let key: Arc<str> = Arc::from("k");
        let mut waits = Vec::new();
        for seq in 1..=200u64 {
            let (ack, rx) = oneshot::channel();
            let op = WriteOp::Snapshot { key: key.clone(), seq, bytes: vec![1], retain: 3, created_unix_ms: 0 };
            tx.send(Job { op: Some(op), ack: Some(ack), settled: None, close: false, slot: None }).unwrap();
            waits.push(rx);
        }
        for w in waits {
            w.await.unwrap().expect("committed");
        }
        drop(tx);
        handle.join().unwrap();
        let seqs: Vec<u64> = store.snapshots("k").unwrap().iter().map(|i| i.seq).collect();
        assert_eq!(seqs.last(), Some(&200), "the newest snapshot is always written");
        let committed = counters.ops.load(Ordering::Relaxed);
        let superseded = counters.superseded.load(Ordering::Relaxed);
        assert_eq!(committed + superseded, 200);
    }

    /// A store that lets two commits overlap and finishes them only when the test says.
    #[derive(Default)]
    struct Gated {
        started: std::sync::Mutex<Vec<(Vec<WriteOp>, CommitDone)>>,
    }

    impl Store for Gated {
        fn commit(&self, _: &[WriteOp]) -> Result<(), StoreError> {
            unreachable!("the writer starts commits")
        }
        fn snapshots(&self, _: &str) -> Result<Vec<crate::store::SnapshotInfo>, StoreError> {
            Ok(Vec::new())
        }
        fn read_snapshot(&self, _: &str, _: u64) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(None)
        }
        fn journal_after(&self, _: &str, _: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
            Ok(Vec::new())
        }
        fn last_seq(&self, _: &str) -> Result<u64, StoreError> {
            Ok(0)
        }
        fn keys(&self) -> Result<Vec<String>, StoreError> {
            Ok(Vec::new())
        }
        fn commits_in_flight(&self) -> usize {
            2
        }
        fn start_commit(&self, ops: Vec<WriteOp>, done: CommitDone) {
            self.started.lock().unwrap().push((ops, done));
        }
    }

    impl Gated {
        /// The (key, seq) of each op of every commit started so far, and their `done`s.
        fn take_started(&self) -> (Vec<Vec<(String, u64)>>, Vec<CommitDone>) {
            let started = std::mem::take(&mut *self.started.lock().unwrap());
            let names = started
                .iter()
                .map(|(ops, _)| {
                    ops.iter()
                        .map(|o| match o {
                            WriteOp::Append { key, seq, .. } => (key.to_string(), *seq),
                            _ => unreachable!("appends only"),
                        })
                        .collect()
                })
                .collect();
            (names, started.into_iter().map(|(_, d)| d).collect())
        }
    }

    fn append(tx: &Sender<Job>, key: &str, seq: u64) -> oneshot::Receiver<Result<(), StoreError>> {
        let (ack, rx) = oneshot::channel();
        let op = WriteOp::Append { key: Arc::from(key), seq, bytes: vec![0; 8] };
        tx.send(Job { op: Some(op), ack: Some(ack), settled: None, close: false, slot: None }).unwrap();
        rx
    }

    /// A writer over a fresh [`Gated`] store, driven by the test through `step`.
    #[allow(clippy::type_complexity)]
    fn gated() -> (Arc<Gated>, Sender<Job>, Receiver<Job>, Writer<impl Fn(&StoreError, usize)>) {
        let store = Arc::new(Gated::default());
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let w = Writer::new(store.clone(), Arc::new(WriterCounters::default()), |_: &StoreError, _: usize| {});
        (store, tx, rx, w)
    }

    fn ok(n: usize) -> Vec<Result<(), StoreError>> {
        vec![Ok(()); n]
    }

    fn name(key: &str, seq: u64) -> (String, u64) {
        (key.to_string(), seq)
    }

    #[test]
    fn overlapping_rounds_never_share_a_key_and_stop_at_the_stores_depth() {
        let (store, tx, rx, mut w) = gated();
        let mut a1 = append(&tx, "a", 1);
        w.step(&rx);
        let (started, mut first) = store.take_started();
        assert_eq!(started, vec![vec![name("a", 1)]]);
        // While `a` is in flight its next write waits; `b`'s, queued after it, goes ahead.
        let mut a2 = append(&tx, "a", 2);
        let mut b1 = append(&tx, "b", 1);
        w.step(&rx);
        let (started, mut second) = store.take_started();
        assert_eq!(started, vec![vec![name("b", 1)]], "a's second write is held back, b's goes");
        // Two rounds in flight: the store's depth. Nothing more starts, whatever its key.
        let mut c1 = append(&tx, "c", 1);
        w.step(&rx);
        assert!(store.take_started().0.is_empty(), "no third round while two are in flight");
        // The first round ends: its job is answered, and `a`'s held write leaves with `c`'s.
        first.remove(0).finish(ok(1));
        w.step(&rx);
        assert!(matches!(a1.try_recv(), Ok(Ok(()))));
        let (started, mut third) = store.take_started();
        assert_eq!(started, vec![vec![name("a", 2), name("c", 1)]]);
        assert!(a2.try_recv().is_err() && b1.try_recv().is_err() && c1.try_recv().is_err());
        second.remove(0).finish(ok(1));
        third.remove(0).finish(vec![
            Ok(()),
            Err(StoreError::Refused { key: "c".into(), cause: Cause::new(std::io::Error::other("fenced")) }),
        ]);
        w.step(&rx);
        assert!(matches!(b1.try_recv(), Ok(Ok(()))));
        assert!(matches!(a2.try_recv(), Ok(Ok(()))));
        assert!(matches!(c1.try_recv(), Ok(Err(StoreError::Refused { .. }))), "each job gets its own op's result");
    }

    #[test]
    fn a_flush_waits_for_every_round_before_it_and_nothing_after_it_goes_first() {
        let (store, tx, rx, mut w) = gated();
        let _a1 = append(&tx, "a", 1);
        w.step(&rx);
        let (_, mut first) = store.take_started();
        let (flush, mut flushed) = oneshot::channel();
        tx.send(Job { op: None, ack: Some(flush), settled: None, close: false, slot: None }).unwrap();
        let mut b1 = append(&tx, "b", 1);
        w.step(&rx);
        assert!(store.take_started().0.is_empty(), "b's write, queued after the flush, does not go before it");
        assert!(flushed.try_recv().is_err(), "the flush waits for the round in flight");
        first.remove(0).finish(ok(1));
        w.step(&rx);
        assert!(matches!(flushed.try_recv(), Ok(Ok(()))), "answered once everything before it is");
        let (started, mut next) = store.take_started();
        assert_eq!(started, vec![vec![name("b", 1)]]);
        next.remove(0).finish(ok(1));
        w.step(&rx);
        assert!(matches!(b1.try_recv(), Ok(Ok(()))));
    }

    #[test]
    fn a_commit_the_store_drops_unanswered_fails_its_jobs_as_uncertain() {
        let (store, tx, rx, mut w) = gated();
        let mut a1 = append(&tx, "a", 1);
        w.step(&rx);
        drop(store.take_started());
        w.step(&rx);
        assert!(matches!(a1.try_recv(), Ok(Err(StoreError::Uncertain { .. }))));
        assert!(w.rounds.is_empty() && w.busy.is_empty(), "the key is free again");
    }
}
