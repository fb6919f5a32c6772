//! The hazards issue 13 found in the previous, home-made replication, each replayed as a
//! scenario against what replaced it: the replicated ledger (applied identically on every
//! node, in Raft's log order) and the leader's placement plan. Each test names its hazard.
//!
//! The previous protocol (replica sinks, writer terms, rank-based duplicate resolution, a
//! fixed `cluster_size`) is gone, so these tests cannot run against it; what failed there is
//! described in each test. The end-to-end counterparts run real node processes under real
//! faults: `crates/cluster/warden-cli/tests/demos.rs` (partitions, wipes, joins, leaves; the
//! checker reads every node's store) and `crates/warden-checkpoint/tests/write_outcomes.rs`
//! (a write of unknown outcome stops its incarnation from numbering on; it failed on the
//! previous writer).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use warden_cluster::ledger::{Command, KeyOp, Ledger, NodeId, Outcome, Refusal, WriteKind};
use warden_cluster::placement::{plan, View};
use warden_cluster::raft::timing::{EVICT_AFTER, NEW_LEADER_WAIT};

fn renew(l: &mut Ledger, node: NodeId) {
    l.apply(&Command::Renew { node, name: format!("n{node}"), addr: String::new() });
}

fn open(l: &mut Ledger, node: NodeId, key: &str) -> (u64, u64) {
    match &l.apply(&Command::Open { node, key: key.into() })[0] {
        Outcome::Opened { token, epoch } => (*token, *epoch),
        other => panic!("open refused: {other:?}"),
    }
}

fn op(key: &str, (token, epoch): (u64, u64), seq: u64, bytes: &[u8]) -> KeyOp {
    KeyOp { key: key.into(), token, epoch, op: WriteKind::Append { seq, bytes: bytes.to_vec() } }
}

/// Three live nodes; singletons `acct-1` (key `bank/acct-1`) and `acct-2` granted to node 1.
fn bank() -> Ledger {
    let mut l = Ledger::default();
    for n in 1..=3 {
        renew(&mut l, n);
    }
    l.apply(&Command::Register {
        singletons: vec![("acct-1".into(), vec!["bank/acct-1".into()]), ("acct-2".into(), vec!["bank/acct-2".into()])],
    });
    l.apply(&Command::Grant { grants: vec![("acct-1".into(), 1), ("acct-2".into(), 1)] });
    l
}

fn journal(l: &Ledger, key: &str) -> Vec<(u64, Vec<u8>)> {
    l.keys.get(key).map(|k| k.journal.iter().map(|(s, b)| (*s, b.to_vec())).collect()).unwrap_or_default()
}

/// Hazard 1: a `persist` that timed out after some replicas committed it gave its sequence
/// number back, and a later write reused it, so a new owner could restore the wrong history.
/// Now the entry is either in the log (and every node has it) or not; a later write of other
/// bytes under the same number is refused, and the next owner reads what was committed.
#[test]
fn hazard_1_a_sequence_number_is_never_given_back() {
    let mut l = bank();
    let creds = open(&mut l, 1, "bank/acct-1");
    // The debit commits, but its writer saw a timeout (its outcome was unknown to it).
    assert_eq!(l.apply(&Command::Write { node: 1, ops: vec![op("bank/acct-1", creds, 1, b"debit")] }), [Outcome::Done]);
    // The old writer reusing number 1 for something else is refused.
    let reuse = l.apply(&Command::Write { node: 1, ops: vec![op("bank/acct-1", creds, 1, b"credit")] });
    assert!(matches!(reuse[0], Outcome::Refused(_)), "{reuse:?}");
    // The next owner (node 2) reads the debit, exactly once.
    l.apply(&Command::Evict { node: 1, renewals: l.nodes[&1].renewals });
    l.apply(&Command::Grant { grants: vec![("acct-1".into(), 2)] });
    open(&mut l, 2, "bank/acct-1");
    assert_eq!(journal(&l, "bank/acct-1"), vec![(1, b"debit".to_vec())]);
}

/// Hazard 2: a `persist` cancelled by a kill (the hang watchdog, fencing) still landed after
/// the restarted actor had restored, so a transfer was journaled twice or the key stuck on
/// gap repairs. Now the restore opens the key, which bumps its writer epoch; the late write
/// carries the old epoch and is refused wherever it is applied.
#[test]
fn hazard_2_a_write_that_lands_after_the_restore_is_refused() {
    let mut l = bank();
    let first = open(&mut l, 1, "bank/acct-1");
    assert_eq!(
        l.apply(&Command::Write { node: 1, ops: vec![op("bank/acct-1", first, 1, b"t7 debit")] }),
        [Outcome::Done]
    );
    // The incarnation is killed mid-persist; its replacement restores (opens) first.
    let second = open(&mut l, 1, "bank/acct-1");
    assert!(second.1 > first.1, "the restore fenced the earlier incarnation");
    // The killed incarnation's batch arrives late.
    let late = l.apply(&Command::Write { node: 1, ops: vec![op("bank/acct-1", first, 2, b"t7 debit")] });
    assert!(matches!(late[0], Outcome::Refused(Refusal::StaleEpoch { .. })), "{late:?}");
    assert_eq!(journal(&l, "bank/acct-1").len(), 1, "transfer 7 is journaled once");
    // The replacement writes on from what it read: no gap.
    assert_eq!(
        l.apply(&Command::Write { node: 1, ops: vec![op("bank/acct-1", second, 2, b"t8 debit")] }),
        [Outcome::Done]
    );
}

/// Hazard 3: in a partial partition (n1 and n2 cannot reach each other, both reach n3) both
/// started the same singleton and the stale one kept answering. Now only the leader moves a
/// singleton, and only after the owner's renewals stopped for `EVICT_AFTER` (longer than the
/// owner's lease, after which its gate stops answering); the new grant has a new token, and the
/// old owner's writes are refused.
#[test]
fn hazard_3_a_cut_off_owner_is_evicted_only_after_its_lease_and_then_cannot_write() {
    let mut l = bank();
    let old = open(&mut l, 1, "bank/acct-1");
    let t0 = Instant::now();
    let (voters, none, handoffs) = (BTreeSet::from([1, 2, 3]), BTreeSet::new(), HashMap::new());
    // The leader (n3) last applied n1's renewal at t0; n2's and its own keep coming.
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let leader_since = t0 - NEW_LEADER_WAIT - Duration::from_secs(1);
    let before = EVICT_AFTER.as_millis() as u64 - 1;
    let renewed: HashMap<NodeId, Instant> = [(1, t0), (2, at(before)), (3, at(before))].into();
    let early = plan(&View {
        ledger: &l,
        now: at(before),
        leader_since,
        renewed_at: &renewed,
        handoffs_since: &handoffs,
        voters: &voters,
        learners: &none,
        caught_up: &none,
        min_members: 1,
    });
    assert!(!early.commands.iter().any(|c| matches!(c, Command::Evict { .. })), "not before EVICT_AFTER: {early:?}");
    let after = EVICT_AFTER.as_millis() as u64 + 1;
    let renewed: HashMap<NodeId, Instant> = [(1, t0), (2, at(after)), (3, at(after))].into();
    let late = plan(&View {
        ledger: &l,
        now: at(after),
        leader_since,
        renewed_at: &renewed,
        handoffs_since: &handoffs,
        voters: &voters,
        learners: &none,
        caught_up: &none,
        min_members: 1,
    });
    let evict = late.commands.iter().find(|c| matches!(c, Command::Evict { node: 1, .. })).expect("n1 is evicted");
    l.apply(evict);
    l.apply(&Command::Grant { grants: vec![("acct-1".into(), 2)] });
    let new = open(&mut l, 2, "bank/acct-1");
    assert!(new.0 > old.0, "the new instance has a larger token");
    let stale = l.apply(&Command::Write { node: 1, ops: vec![op("bank/acct-1", old, 1, b"stale")] });
    assert!(matches!(stale[0], Outcome::Refused(_)), "{stale:?}");
}

/// Hazard 4: two instances were resolved by placement rank, so the valid one could be the one
/// stopped. Now validity is the token in the ledger: the holder's token writes, every other is
/// refused, whatever the nodes' names or ids.
#[test]
fn hazard_4_the_valid_instance_is_the_one_holding_the_token() {
    let mut l = bank();
    let old = open(&mut l, 1, "bank/acct-1");
    l.apply(&Command::Handoff { moves: vec![("acct-1".into(), 1, 3)] });
    l.apply(&Command::Release { node: 1, singletons: vec![("acct-1".into(), old.0)] });
    let new = open(&mut l, 3, "bank/acct-1");
    assert_eq!(l.singletons["acct-1"].ownership.holder(), Some((3, new.0)));
    // n1 has the lower id (the previous protocol's winner): its instance is the stale one.
    assert!(matches!(
        l.apply(&Command::Write { node: 1, ops: vec![op("bank/acct-1", old, 1, b"x")] })[0],
        Outcome::Refused(_)
    ));
    assert_eq!(l.apply(&Command::Write { node: 3, ops: vec![op("bank/acct-1", new, 1, b"y")] }), [Outcome::Done]);
}

/// Hazard 5: one fenced or conflicting key made a replica refuse the whole group-commit
/// batch, failing unrelated singletons on that node. Now every op has its own outcome.
#[test]
fn hazard_5_one_refused_key_fails_only_its_own_writes() {
    let mut l = bank();
    let a1 = open(&mut l, 1, "bank/acct-1");
    let a2 = open(&mut l, 1, "bank/acct-2");
    let stale = (a1.0, a1.1 - 1);
    let out = l.apply(&Command::Write {
        node: 1,
        ops: vec![
            op("bank/acct-1", stale, 1, b"fenced"),
            op("bank/acct-2", a2, 1, b"fine"),
            op("bank/acct-1", a1, 1, b"ok"),
        ],
    });
    assert!(matches!(out[0], Outcome::Refused(_)), "{out:?}");
    assert_eq!(out[1], Outcome::Done, "the unrelated key is written: {out:?}");
    assert!(matches!(out[2], Outcome::Refused(Refusal::AfterRefusal)), "later ops of the refused key wait: {out:?}");
}

/// Hazard 6: a replica that was down, or restarted empty, counted as a full voter, and idle
/// keys were never re-replicated. Now a new (or wiped) node is a learner until it has caught up
/// with the log and renewed its lease, and every key, idle or not, is in the ledger every
/// member holds (a learner receives it whole, as a snapshot of the ledger).
#[test]
fn hazard_6_an_empty_node_votes_only_once_caught_up_and_idle_keys_are_in_every_copy() {
    let mut l = bank();
    let creds = open(&mut l, 1, "bank/acct-2");
    l.apply(&Command::Write { node: 1, ops: vec![op("bank/acct-2", creds, 1, b"idle since")] });
    let now = Instant::now();
    let handoffs = HashMap::new();
    let voters = BTreeSet::from([1, 2, 3]);
    let learners = BTreeSet::from([9]);
    renew(&mut l, 9);
    let renewed: HashMap<NodeId, Instant> = [(1, now), (2, now), (3, now), (9, now)].into();
    let since = now - Duration::from_secs(10);
    let behind = plan(&View {
        ledger: &l,
        now,
        leader_since: since,
        renewed_at: &renewed,
        handoffs_since: &handoffs,
        voters: &voters,
        learners: &learners,
        caught_up: &BTreeSet::new(),
        min_members: 1,
    });
    assert!(behind.promote.is_empty(), "a learner that has not caught up does not vote: {behind:?}");
    let caught_up = BTreeSet::from([9]);
    let ready = plan(&View {
        ledger: &l,
        now,
        leader_since: since,
        renewed_at: &renewed,
        handoffs_since: &handoffs,
        voters: &voters,
        learners: &learners,
        caught_up: &caught_up,
        min_members: 1,
    });
    assert_eq!(ready.promote, vec![9]);
    // What the learner installs is the ledger, the idle key included.
    let copy: Ledger = rmp_serde::from_slice(&rmp_serde::to_vec(&l).unwrap()).unwrap();
    assert_eq!(journal(&copy, "bank/acct-2"), vec![(1, b"idle since".to_vec())]);
}

/// Hazard 8: terms were not unique (two owners could take the same term), and the old
/// writer's own store skipped the fence check. Now tokens come from one counter in the ledger
/// (unique, only growing), and every write, the writing node's own included, is checked as it
/// is applied: there is no local shortcut.
#[test]
fn hazard_8_tokens_are_unique_and_the_writers_own_node_checks_them() {
    let mut l = bank();
    let mut tokens = BTreeSet::new();
    let mut last = 0;
    for (from, to) in [(1, 2), (2, 3), (3, 1), (1, 2)] {
        let t = l.singletons["acct-1"].ownership.holder().unwrap().1;
        assert!(t > last && tokens.insert(t), "token {t} after {last}");
        last = t;
        l.apply(&Command::Handoff { moves: vec![("acct-1".into(), from, to)] });
        l.apply(&Command::Release { node: from, singletons: vec![("acct-1".into(), t)] });
    }
    // The owner's earlier incarnation on the owner's own node is fenced too.
    let owner = l.singletons["acct-1"].ownership.holder().unwrap().0;
    let first = open(&mut l, owner, "bank/acct-1");
    let _second = open(&mut l, owner, "bank/acct-1");
    let out = l.apply(&Command::Write { node: owner, ops: vec![op("bank/acct-1", first, 1, b"x")] });
    assert!(matches!(out[0], Outcome::Refused(Refusal::StaleEpoch { .. })), "{out:?}");
}
