//! The blocking writer thread: group commit of snapshots and journal entries.
//!
//! Everything that reaches the store goes through one OS thread fed by an unbounded
//! crossbeam channel. Each round takes every job waiting (up to a cap), drops snapshots that a
//! newer snapshot of the same key in the same round supersedes, commits the rest with one
//! [`Store::commit_each`] (one durable transaction for a local store) and then answers every
//! job with its own op's result: a store that refuses one key's writes fails only the jobs of
//! that key. Many actors' snapshots thus share one
//! `fsync`, which is what makes tens of thousands of acknowledged snapshots per second possible
//! on a disk that syncs a few thousand times per second.
//!
//! Why the channel is unbounded: producers are bounded by construction. A durable actor has at
//! most one entry in flight (it waits for the acknowledgement before its next message), an
//! actor waiting for its snapshot has one, and the snapshots a policy asks for without waiting
//! coalesce before they get here (at most one per key waits for the snapshot actor, see
//! `KeyEntry::pending`), so the queue holds at most a few writes per key
//! (`tests/snapshot_queue.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use tokio::sync::oneshot;

use crate::store::{Store, StoreError, WriteOp};

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

fn run(
    store: Arc<dyn Store>,
    rx: Receiver<Job>,
    counters: Arc<WriterCounters>,
    on_failure: impl Fn(&StoreError, usize),
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![resolve(first)];
        let mut bytes = jobs[0].op.as_ref().map_or(0, op_bytes);
        while jobs.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    let job = resolve(job);
                    bytes += job.op.as_ref().map_or(0, op_bytes);
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        // Newest snapshot of each key wins: the highest sequence number (the later of equal
        // ones). Queue order is not enough: a policy's pending snapshot is replaced in place by
        // newer ones (`KeyEntry::pending`), so it can arrive behind a newer-numbered one.
        let mut newest: std::collections::HashMap<Arc<str>, (u64, usize)> = std::collections::HashMap::new();
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
        let mut superseded_by: std::collections::HashMap<Arc<str>, Vec<usize>> = std::collections::HashMap::new();
        let mut marks = Vec::new();
        let mut close = false;
        for (job, keep) in jobs.into_iter().zip(keep) {
            close |= job.close;
            if let Some(mark) = job.settled {
                marks.push(mark);
            }
            let slot = match job.op {
                Some(op) if keep => {
                    ops.push(op);
                    Some(ops.len() - 1)
                }
                Some(op) => {
                    counters.superseded.fetch_add(1, Ordering::Relaxed);
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
        let started = Instant::now();
        let results = if ops.is_empty() { Vec::new() } else { store.commit_each(&ops) };
        counters.commit_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let failed = results.iter().filter(|r| r.is_err()).count();
        if results.len() > failed {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters.ops.fetch_add((results.len() - failed) as u64, Ordering::Relaxed);
        }
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            counters.failed_commits.fetch_add(1, Ordering::Relaxed);
            on_failure(e, failed);
        }
        for (mark, seq) in marks {
            mark.fetch_max(seq, Ordering::Release);
        }
        for (ack, slot) in answers {
            let Some(ack) = ack else { continue };
            let result = match slot {
                Some(i) => results.get(i).cloned().unwrap_or(Err(StoreError::Closed)),
                None => Ok(()),
            };
            // A waiter that gave up is not an error.
            let _ = ack.send(result);
        }
        if close {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

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
            assert_eq!(w.await.unwrap(), Ok(()));
        }
        drop(tx);
        handle.join().unwrap();
        let seqs: Vec<u64> = store.snapshots("k").unwrap().iter().map(|i| i.seq).collect();
        assert_eq!(seqs.last(), Some(&200), "the newest snapshot is always written");
        let committed = counters.ops.load(Ordering::Relaxed);
        let superseded = counters.superseded.load(Ordering::Relaxed);
        assert_eq!(committed + superseded, 200);
    }
}
