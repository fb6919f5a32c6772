//! The checker: after a run, it reads every node's store (the Raft log and snapshot in its data
//! directory, replayed to the committed index into the ledger each node holds) and the
//! launcher's history, and judges:
//!
//! * the replicas agree: for every key, the journal entries and snapshots two nodes both hold
//!   are the same bytes (one node may hold a longer prefix than another, never a different one);
//! * every write of every key carried a token that only one node ever wrote with;
//! * bank: replaying each account's journal from its snapshot gives the state the account
//!   served at the end, and no transfer id is journaled twice (debited or credited); every
//!   acknowledged transfer is in the replayed state of its source (debited) and destination
//!   (credited); pipeline: no job is recorded twice;
//! * the register's history is linearizable (stateright's linearizability tester);
//! * how long two instances of one singleton ever answered clients at once (reads and writes,
//!   and writes alone).
//!
//! Each finding is named in the [`Verdict`], which goes into the report; any violation makes
//! the run fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;
use stateright::semantics::register::{Register, RegisterOp, RegisterRet};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester};
use warden_checkpoint::envelope::{self, Kind};
use warden_cluster::ledger::Ledger;

use super::bank::{apply_account, AccountEvent, Book, INITIAL_BALANCE};
use super::launcher::workload::History;
use super::pipeline::{apply_results, Record, ResultsEvent, RESULTS_KEY};
use super::Demo;

/// The most findings of one kind listed (the rest are counted).
pub const MAX_LISTED: usize = 20;

/// The checker's verdict.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Verdict {
    /// No violation found.
    pub ok: bool,
    /// The nodes whose stores were read, with the log index each had applied up to.
    pub nodes_read: BTreeMap<String, u64>,
    /// Stores that could not be read, and why.
    pub read_errors: Vec<String>,
    /// Keys compared across nodes.
    pub keys_compared: usize,
    /// Entries two nodes hold with different bytes.
    pub disagreements: Vec<String>,
    /// Tokens that more than one node wrote with.
    pub tokens_with_two_writers: Vec<String>,
    /// Accounts (or the results record) whose replayed state differs from what was served.
    pub replay_mismatches: Vec<String>,
    /// Transfer ids (or jobs) journaled twice.
    pub journaled_twice: Vec<String>,
    /// Acknowledged transfers missing from the replayed journals.
    pub acknowledged_missing: Vec<String>,
    /// Whether the register's history is linearizable (`None`: not a bank run).
    pub linearizable: Option<bool>,
    /// Register operations checked (completed, and pending ones).
    pub register_ops: usize,
    /// The longest time two instances of one singleton answered clients at once, in ms.
    pub duplicate_serving_ms: u64,
    /// The same, counting only acknowledged writes.
    pub duplicate_write_serving_ms: u64,
}

fn push(list: &mut Vec<String>, item: String) {
    if list.len() < MAX_LISTED {
        list.push(item);
    }
}

/// Checks a run (see the module documentation).
pub fn check(demo: Demo, dirs: &[(String, PathBuf)], history: &History, served_books: &[Book]) -> Verdict {
    let mut v = Verdict::default();
    let mut ledgers: Vec<(String, Ledger, u64)> = Vec::new();
    for (name, dir) in dirs {
        match warden_cluster::raft::state_machine::rebuild(dir) {
            Ok((ledger, applied)) => {
                v.nodes_read.insert(name.clone(), applied);
                ledgers.push((name.clone(), ledger, applied));
            }
            Err(e) => push(&mut v.read_errors, format!("{name}: {e}")),
        }
    }
    agreement(&ledgers, &mut v);
    writers(&ledgers, &mut v);
    // The most advanced ledger holds the most of every key's history.
    if let Some((_, newest, _)) = ledgers.iter().max_by_key(|(_, _, applied)| *applied) {
        match demo {
            Demo::Bank => bank(newest, history, served_books, &mut v),
            Demo::Pipeline => pipeline(newest, &mut v),
        }
    }
    if demo == Demo::Bank {
        let (ok, ops) = linearizable(history);
        v.linearizable = Some(ok);
        v.register_ops = ops;
    }
    let (any, writes) = duplicate_serving(history);
    v.duplicate_serving_ms = any;
    v.duplicate_write_serving_ms = writes;
    v.ok = v.read_errors.is_empty()
        && !ledgers.is_empty()
        && v.disagreements.is_empty()
        && v.tokens_with_two_writers.is_empty()
        && v.replay_mismatches.is_empty()
        && v.journaled_twice.is_empty()
        && v.acknowledged_missing.is_empty()
        && v.linearizable != Some(false)
        && v.duplicate_write_serving_ms == 0;
    v
}

fn agreement(ledgers: &[(String, Ledger, u64)], v: &mut Verdict) {
    let mut keys = BTreeSet::new();
    for (i, (a_name, a, _)) in ledgers.iter().enumerate() {
        for (b_name, b, _) in &ledgers[i + 1..] {
            for (key, ka) in &a.keys {
                let Some(kb) = b.keys.get(key) else { continue };
                keys.insert(key.clone());
                for (seq, bytes) in &ka.journal {
                    if kb.journal.get(seq).is_some_and(|other| other != bytes) {
                        push(&mut v.disagreements, format!("{key} journal #{seq}: {a_name} and {b_name} differ"));
                    }
                }
                for (seq, snap) in &ka.snapshots {
                    if kb.snapshots.get(seq).is_some_and(|other| other.bytes != snap.bytes) {
                        push(&mut v.disagreements, format!("{key} snapshot #{seq}: {a_name} and {b_name} differ"));
                    }
                }
            }
        }
    }
    v.keys_compared = keys.len();
}

fn writers(ledgers: &[(String, Ledger, u64)], v: &mut Verdict) {
    let mut by_token: BTreeMap<(String, u64), BTreeSet<u64>> = BTreeMap::new();
    for (_, l, _) in ledgers {
        for (key, k) in &l.keys {
            for (token, node) in &k.writers {
                by_token.entry((key.clone(), *token)).or_default().insert(*node);
            }
        }
    }
    for ((key, token), nodes) in by_token {
        if nodes.len() > 1 {
            push(&mut v.tokens_with_two_writers, format!("{key}: token {token} written by nodes {nodes:?}"));
        }
    }
}

/// A key's newest snapshot decoded, and its journal after it with sequence numbers.
type Replayed<S, E> = (Option<S>, Vec<(u64, E)>);

/// A key's state: its newest snapshot decoded, then its journal after it replayed.
fn replay<S: serde::de::DeserializeOwned, E: serde::de::DeserializeOwned>(
    ledger: &Ledger,
    key: &str,
) -> Result<Replayed<S, E>, String> {
    let Some(k) = ledger.keys.get(key) else { return Ok((None, Vec::new())) };
    let no_migration = |m: envelope::Migration<'_>| Ok(m.decode::<S>()?);
    let (base_seq, snapshot) = match k.snapshots.iter().next_back() {
        Some((seq, s)) => {
            let (_, value) = envelope::decode::<S>(&s.bytes, Kind::Snapshot, 1, no_migration)
                .map_err(|e| format!("{key} snapshot #{seq}: {e}"))?;
            (*seq, Some(value))
        }
        None => (0, None),
    };
    let mut events = Vec::new();
    for (seq, bytes) in k.journal.range(base_seq + 1..) {
        let (_, e) = envelope::decode::<E>(bytes, Kind::Event, 1, |m| Ok(m.decode::<E>()?))
            .map_err(|err| format!("{key} journal #{seq}: {err}"))?;
        events.push((*seq, e));
    }
    Ok((snapshot, events))
}

fn bank(ledger: &Ledger, history: &History, served: &[Book], v: &mut Verdict) {
    let mut replayed: BTreeMap<String, Book> = BTreeMap::new();
    for book in served {
        let key = super::bank::key_of(&book.name);
        let (snapshot, events) = match replay::<Book, AccountEvent>(ledger, &key) {
            Ok(r) => r,
            Err(e) => {
                push(&mut v.replay_mismatches, e);
                continue;
            }
        };
        let mut state =
            snapshot.unwrap_or_else(|| Book { name: book.name.clone(), balance: INITIAL_BALANCE, ..Book::default() });
        let (mut debited, mut credited) = (state.debited.clone(), state.credited.clone());
        for (seq, e) in &events {
            match e {
                AccountEvent::Debited(t) if !debited.insert(t.id) => {
                    push(&mut v.journaled_twice, format!("{}: transfer {} debited twice (#{seq})", book.name, t.id))
                }
                AccountEvent::Credited(t) if !credited.insert(t.id) => {
                    push(&mut v.journaled_twice, format!("{}: transfer {} credited twice (#{seq})", book.name, t.id))
                }
                _ => {}
            }
            apply_account(&mut state, e);
        }
        let same = state.balance == book.balance
            && state.debited == book.debited
            && state.credited == book.credited
            && state.outbox.iter().map(|t| t.id).collect::<Vec<_>>()
                == book.outbox.iter().map(|t| t.id).collect::<Vec<_>>();
        if !same {
            push(
                &mut v.replay_mismatches,
                format!("{}: replayed balance {} vs served {}", book.name, state.balance, book.balance),
            );
        }
        replayed.insert(book.name.clone(), state);
    }
    if served.is_empty() {
        push(&mut v.replay_mismatches, "no account was served at the end to compare with".into());
    }
    for t in &history.transfers {
        let debited = replayed.get(&t.from).is_some_and(|b| b.debited.contains(&t.id));
        let credited = replayed.get(&t.to).is_some_and(|b| b.credited.contains(&t.id));
        if !(debited && credited) {
            push(
                &mut v.acknowledged_missing,
                format!("transfer {} ({} -> {}): debited {debited}, credited {credited}", t.id, t.from, t.to),
            );
        }
    }
}

fn pipeline(ledger: &Ledger, v: &mut Verdict) {
    match replay::<Record, ResultsEvent>(ledger, RESULTS_KEY) {
        Ok((snapshot, events)) => {
            let mut record = snapshot.unwrap_or_default();
            for (seq, e) in &events {
                if let ResultsEvent::Completed(id) = e {
                    if record.completed.contains(id) {
                        push(&mut v.journaled_twice, format!("job {id} recorded twice (#{seq})"));
                    }
                }
                apply_results(&mut record, e);
            }
        }
        Err(e) => push(&mut v.replay_mismatches, e),
    }
}

/// Whether the register's history is linearizable, and how many operations it has.
pub fn linearizable(history: &History) -> (bool, usize) {
    // Invocations and returns in time order; at the same millisecond, invocations first (the
    // operations then count as concurrent, which can only make the check more lenient).
    // (at ms, 0 = invoke / 1 = return, client, value written, value read on return)
    type Event = (u64, u8, usize, Option<u64>, Option<Option<u64>>);
    let mut events: Vec<Event> = Vec::new();
    // Operations without an answer may take effect at any time after they were sent, or never,
    // and the tester tries every place for each: its search grows exponentially with their
    // number. Two rules shrink it without changing the verdict, since every written value is
    // unique: a read that never returned constrains nothing, and a write no read ever returned
    // can be taken to have never happened (a linearization with it stays one without it).
    let read: std::collections::HashSet<u64> =
        history.register.iter().filter_map(|op| op.returned.and_then(|(_, value)| value)).collect();
    for op in &history.register {
        if op.returned.is_none() && !op.write.is_some_and(|v| read.contains(&v)) {
            continue;
        }
        events.push((op.invoked_ms, 0, op.client, op.write, None));
        if let Some((at, value)) = op.returned {
            events.push((at, 1, op.client, op.write, Some(value)));
        }
    }
    events.sort_by_key(|e| (e.0, e.1));
    let mut tester = LinearizabilityTester::new(Register(0u64));
    for (_, kind, client, write, ret) in events {
        let step = if kind == 0 {
            let op = match write {
                Some(v) => RegisterOp::Write(v),
                None => RegisterOp::Read,
            };
            tester.on_invoke(client, op).map(|_| ())
        } else {
            let ret = match ret.flatten() {
                Some(v) => RegisterRet::ReadOk(v),
                None => RegisterRet::WriteOk,
            };
            tester.on_return(client, ret).map(|_| ())
        };
        if step.is_err() {
            return (false, history.register.len());
        }
    }
    (tester.is_consistent(), history.register.len())
}

/// The longest overlap, over all singletons, between the answers of an instance and those of
/// the next (a later token): (counting every answer, counting only writes), in ms.
pub fn duplicate_serving(history: &History) -> (u64, u64) {
    let overlap = |answers: &[(u64, super::bank::Served, bool)], writes_only: bool| -> u64 {
        let mut spans: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for (at, served, write) in answers {
            if writes_only && !write {
                continue;
            }
            let span = spans.entry(served.token).or_insert((*at, *at));
            span.0 = span.0.min(*at);
            span.1 = span.1.max(*at);
        }
        let spans: Vec<(u64, u64)> = spans.into_values().collect();
        let mut worst = 0;
        for (i, (_, last)) in spans.iter().enumerate() {
            for (first, _) in &spans[i + 1..] {
                worst = worst.max(last.saturating_sub(*first));
            }
        }
        worst
    };
    let mut any = 0;
    let mut writes = 0;
    for answers in history.answers.values() {
        any = any.max(overlap(answers, false));
        writes = writes.max(overlap(answers, true));
    }
    (any, writes)
}

#[cfg(test)]
mod tests;
