//! The workload: clients that send the demo's requests to random running nodes, a register
//! client whose operations the checker tests for linearizability, and a probe that follows
//! the demo's key singleton (where it answers from, and whether its counter ever goes back).
//! Everything acknowledged goes into the [`History`] the final checks read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::Launcher;
use crate::demo::bank::{self, Served, Transfer};
use crate::demo::pipeline::JobOutcome;
use crate::demo::protocol::{Answer, Op, RegisterOutcome, TransferOutcome};
use crate::demo::{Demo, RunSettings};

/// How long a client waits for a transfer's answer.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a client waits for a job's answer.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(6);
/// How long a job is retried on other nodes before the client gives up on it (also after the
/// workload's end: the run waits for its clients' jobs).
pub const JOB_GIVE_UP: Duration = Duration::from_secs(60);
/// How often the probe asks the key singleton.
pub const PROBE_EVERY: Duration = Duration::from_millis(50);
/// The most register operations kept for the linearizability check (the tester's work grows
/// fast with the history: the client stops recording after this many).
pub const MAX_REGISTER_OPS: usize = 400;
/// The most answers per singleton kept for the duplicate-serving measure.
pub const MAX_ANSWERS_PER_SINGLETON: usize = 20_000;

/// One register operation, as a client saw it (ms since the workload started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterOp {
    /// Which client.
    pub client: usize,
    /// A write of this value, or a read.
    pub write: Option<u64>,
    /// When it was sent.
    pub invoked_ms: u64,
    /// When it returned, with the value read (writes: `None`), if it returned.
    pub returned: Option<(u64, Option<u64>)>,
}

/// What the workload saw.
#[derive(Debug, Default)]
pub struct History {
    /// Bank: acknowledged transfers.
    pub transfers: Vec<Transfer>,
    /// Pipeline: every job handed to the cluster, and its outcome (`None`: none known).
    pub jobs: BTreeMap<u64, Option<JobOutcome>>,
    /// The register's operations.
    pub register: Vec<RegisterOp>,
    /// Per singleton: (ms, serving instance, whether a write) of each answer.
    pub answers: BTreeMap<String, Vec<(u64, Served, bool)>>,
    /// The probe: answers, the highest counter, answers below one seen before, hosts seen.
    pub probe_samples: u64,
    /// The highest counter the probe saw.
    pub probe_max: u64,
    /// Answers whose counter was below one seen before (state lost on a move).
    pub probe_regressions: u64,
    /// Where the key singleton answered from.
    pub probe_hosts: Vec<String>,
}

impl History {
    fn answered(&mut self, singleton: &str, at: u64, served: Served, write: bool) {
        let list = self.answers.entry(singleton.to_string()).or_default();
        if list.len() < MAX_ANSWERS_PER_SINGLETON {
            list.push((at, served, write));
        }
    }
}

fn pick(rng: &mut Xoshiro256PlusPlus, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

/// Starts the clients, the register client and the probe; they run until `stop`.
pub fn start(l: &Arc<Launcher>, settings: &RunSettings, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for w in 0..settings.concurrency {
        let (l, stop) = (l.clone(), stop.clone());
        let rng = Xoshiro256PlusPlus::seed_from_u64(settings.seed.wrapping_mul(31).wrapping_add(w as u64));
        tasks.push(tokio::spawn(async move { client(l, rng, stop).await }));
    }
    if settings.demo == Demo::Bank {
        let (l, stop) = (l.clone(), stop.clone());
        let rng = Xoshiro256PlusPlus::seed_from_u64(settings.seed ^ 0x5eed);
        tasks.push(tokio::spawn(async move { register_client(l, rng, stop).await }));
    }
    let (l, stop) = (l.clone(), stop.clone());
    tasks.push(tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            probe(&l).await;
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }));
    tasks
}

fn history(l: &Launcher) -> std::sync::MutexGuard<'_, History> {
    l.history.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn client(l: Arc<Launcher>, mut rng: Xoshiro256PlusPlus, stop: Arc<AtomicBool>) {
    let accounts = l.settings.accounts;
    while !stop.load(Ordering::Relaxed) {
        let up = l.up_nodes();
        if up.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let node = up[pick(&mut rng, up.len())].clone();
        let id = l.fresh_id();
        match l.demo {
            Demo::Bank => {
                let from = pick(&mut rng, accounts);
                let to = (from + 1 + pick(&mut rng, accounts - 1)) % accounts;
                let t = Transfer {
                    id,
                    from: bank::account_name(from),
                    to: bank::account_name(to),
                    amount: 1 + (rng.next_u64() % 20) as i64,
                };
                let answer = l.request(&node, Op::Transfer { transfer: t.clone() }, TRANSFER_TIMEOUT).await;
                let at = l.workload_now();
                match answer {
                    Some(Answer::Transfer(TransferOutcome::Ok { served })) => {
                        l.acked.fetch_add(1, Ordering::Relaxed);
                        l.success();
                        let mut h = history(&l);
                        h.answered(&t.from, at, served, true);
                        h.transfers.push(t);
                    }
                    Some(Answer::Transfer(TransferOutcome::Insufficient { served })) => {
                        l.success();
                        history(&l).answered(&t.from, at, served, false);
                    }
                    _ => {
                        l.failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Demo::Pipeline => {
                history(&l).jobs.insert(id, None);
                // A job stays with the client until it has an outcome: on an error or a lost
                // node it goes to another node (it may then run twice; it is recorded once).
                let mut node = node;
                let give_up = tokio::time::Instant::now() + JOB_GIVE_UP;
                loop {
                    match l.request(&node, Op::Job { job: id }, JOB_TIMEOUT).await {
                        Some(Answer::Job(outcome @ (JobOutcome::Completed | JobOutcome::Failed { .. }))) => {
                            l.acked.fetch_add(1, Ordering::Relaxed);
                            l.success();
                            history(&l).jobs.insert(id, Some(outcome));
                            break;
                        }
                        other => {
                            tracing::debug!(target: "warden::demo", job = id, %node, answer = ?other, "a job is not done yet");
                            l.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    // The end of the workload does not abandon a job: it is retried (up to
                    // JOB_GIVE_UP) until it has an outcome, as a real client would.
                    if tokio::time::Instant::now() > give_up {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let up = l.up_nodes();
                    if !up.is_empty() {
                        node = up[pick(&mut rng, up.len())].clone();
                    }
                }
            }
        }
    }
}

/// Writes increasing values and reads them back, recording each operation with its times.
async fn register_client(l: Arc<Launcher>, mut rng: Xoshiro256PlusPlus, stop: Arc<AtomicBool>) {
    let mut next_value = 1u64;
    let mut client = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let up = l.up_nodes();
        if up.is_empty() || history(&l).register.len() >= MAX_REGISTER_OPS {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let node = up[pick(&mut rng, up.len())].clone();
        let write = rng.next_u64().is_multiple_of(2).then(|| {
            next_value += 1;
            next_value
        });
        let invoked_ms = l.workload_now();
        let op = match write {
            Some(value) => Op::RegisterWrite { value },
            None => Op::RegisterRead,
        };
        let answer = l.request(&node, op, TRANSFER_TIMEOUT).await;
        let at = l.workload_now();
        let returned = match answer {
            Some(Answer::Register(RegisterOutcome::Written { served })) => {
                l.success();
                history(&l).answered("register", at, served, true);
                Some((at, None))
            }
            Some(Answer::Register(RegisterOutcome::Value { value, served })) => {
                l.success();
                history(&l).answered("register", at, served, false);
                Some((at, Some(value)))
            }
            _ => None,
        };
        history(&l).register.push(RegisterOp { client, write, invoked_ms, returned });
        if returned.is_none() {
            // An operation without an answer stays pending (it may take effect at any time
            // after it was sent, or never): the next operations are another client's.
            client += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks the key singleton where it is and how far its counter got.
async fn probe(l: &Arc<Launcher>) {
    let Some(node) = l.up_nodes().first().cloned() else { return };
    let Some(Answer::Probe(p)) = l.request(&node, Op::Probe, Duration::from_secs(1)).await else { return };
    let at = l.workload_now();
    let key = l.demo.key_singleton();
    {
        let mut h = history(l);
        h.probe_samples += 1;
        if p.count < h.probe_max {
            h.probe_regressions += 1;
        }
        h.probe_max = h.probe_max.max(p.count);
        if !h.probe_hosts.contains(&p.served.node) {
            h.probe_hosts.push(p.served.node.clone());
        }
        h.answered(key, at, p.served.clone(), false);
    }
    if p.count > 0 {
        let mut w = l.world();
        for f in w.faults.iter_mut().filter(|f| f.key_displaced && f.rec.singleton_back_ms.is_none()) {
            if f.node.as_deref() != Some(p.served.node.as_str()) && at > f.injected {
                f.rec.singleton_back_ms = Some(at - f.injected);
            }
        }
    }
}
