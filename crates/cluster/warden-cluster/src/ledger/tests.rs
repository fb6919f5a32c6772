//! The ledger's rules, each pinned down without a cluster.

use super::*;

fn renew(l: &mut Ledger, node: NodeId) -> u64 {
    match l.apply(&Command::Renew { node, name: format!("n{node}"), addr: String::new() })[0] {
        Outcome::Renewed { renewals } => renewals,
        ref other => panic!("{other:?}"),
    }
}

fn register(l: &mut Ledger, name: &str, key: &str) {
    l.apply(&Command::Register { singletons: vec![(name.into(), vec![key.into()])] });
}

fn open(l: &mut Ledger, node: NodeId, key: &str) -> (u64, u64) {
    match &l.apply(&Command::Open { node, key: key.into() })[0] {
        Outcome::Opened { token, epoch } => (*token, *epoch),
        other => panic!("open refused: {other:?}"),
    }
}

fn append(node: NodeId, key: &str, (token, epoch): (u64, u64), seq: u64, bytes: &[u8]) -> Command {
    Command::Write {
        node,
        ops: vec![KeyOp { key: key.into(), token, epoch, op: WriteKind::Append { seq, bytes: bytes.to_vec() } }],
    }
}

fn owner(l: &Ledger, name: &str) -> Ownership {
    l.singletons[name].ownership
}

/// Two nodes, one singleton `s` with key `k`, granted to node 1.
fn granted() -> Ledger {
    let mut l = Ledger::default();
    renew(&mut l, 1);
    renew(&mut l, 2);
    register(&mut l, "s", "k");
    assert_eq!(l.apply(&Command::Grant { grants: vec![("s".into(), 1)] }), vec![Outcome::Done]);
    l
}

#[test]
fn every_grant_gets_a_new_larger_token() {
    let mut l = granted();
    let mut seen = vec![owner(&l, "s").holder().unwrap().1];
    for round in 0..5 {
        let (from, to) = if round % 2 == 0 { (1, 2) } else { (2, 1) };
        let token = owner(&l, "s").holder().unwrap().1;
        l.apply(&Command::Handoff { moves: vec![("s".into(), from, to)] });
        assert_eq!(
            l.apply(&Command::Release { node: from, singletons: vec![("s".into(), token)] }),
            vec![Outcome::Done]
        );
        seen.push(owner(&l, "s").holder().unwrap().1);
    }
    // Plain keys take tokens from the same counter.
    let (plain, _) = open(&mut l, 2, "plain");
    seen.push(plain);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "tokens only grow: {seen:?}");
}

#[test]
fn a_key_keeps_the_newest_writer_records_only() {
    let mut l = granted();
    let mut tokens = Vec::new();
    for seq in 1..=(MAX_WRITERS_PER_KEY as u64 + 6) {
        // The singleton's holder opens its key and writes, then hands the singleton over.
        let (holder, token) = owner(&l, "s").holder().unwrap();
        let opened = open(&mut l, holder, "k");
        tokens.push(opened.0);
        assert_eq!(l.apply(&append(holder, "k", opened, seq, b"x")), vec![Outcome::Done]);
        let to = if holder == 1 { 2 } else { 1 };
        l.apply(&Command::Handoff { moves: vec![("s".into(), holder, to)] });
        l.apply(&Command::Release { node: holder, singletons: vec![("s".into(), token)] });
    }
    let writers = &l.keys["k"].writers;
    assert_eq!(writers.len(), MAX_WRITERS_PER_KEY);
    assert_eq!(writers.first().map(|w| w.0), Some(tokens[6]), "the lowest tokens went first");
    assert_eq!(writers.last().map(|w| w.0), tokens.last().copied());
}

#[test]
fn a_writer_with_a_stale_token_is_refused_everywhere() {
    let mut l = granted();
    let old = open(&mut l, 1, "k");
    assert_eq!(l.apply(&append(1, "k", old, 1, b"a")), vec![Outcome::Done]);
    // Node 1 is evicted; the singleton goes to node 2, which opens the key.
    let renewals = l.nodes[&1].renewals;
    l.apply(&Command::Evict { node: 1, renewals });
    l.apply(&Command::Grant { grants: vec![("s".into(), 2)] });
    let new = open(&mut l, 2, "k");
    assert!(new.0 > old.0);
    // The old owner's write, with its own token, applied on any node: refused.
    let mut replica = l.clone();
    for ledger in [&mut l, &mut replica] {
        let out = ledger.apply(&append(1, "k", old, 2, b"stale"));
        assert!(matches!(out[0], Outcome::Refused(Refusal::StaleToken { .. })), "{out:?}");
    }
    assert_eq!(l.apply(&append(2, "k", new, 2, b"b")), vec![Outcome::Done]);
    assert_eq!(l.keys["k"].writers, BTreeSet::from([(old.0, 1), (new.0, 2)]));
}

#[test]
fn reopening_a_key_fences_the_earlier_incarnation_of_the_same_node() {
    let mut l = granted();
    let first = open(&mut l, 1, "k");
    let second = open(&mut l, 1, "k");
    assert_eq!(first.0, second.0, "same owner, same token");
    assert!(second.1 > first.1, "a new epoch");
    let late = l.apply(&append(1, "k", first, 1, b"from the killed incarnation"));
    assert!(matches!(late[0], Outcome::Refused(Refusal::StaleEpoch { .. })), "{late:?}");
    assert_eq!(l.apply(&append(1, "k", second, 1, b"ok")), vec![Outcome::Done]);
}

#[test]
fn a_refused_key_refuses_only_its_own_ops() {
    let mut l = granted();
    register(&mut l, "t", "other");
    l.apply(&Command::Grant { grants: vec![("t".into(), 1)] });
    let k = open(&mut l, 1, "k");
    let other = open(&mut l, 1, "other");
    let op = |key: &str, c: (u64, u64), seq: u64| KeyOp {
        key: key.into(),
        token: c.0,
        epoch: c.1,
        op: WriteKind::Append { seq, bytes: vec![seq as u8] },
    };
    let stale = (k.0, k.1 - 1);
    let out = l.apply(&Command::Write {
        node: 1,
        ops: vec![op("k", stale, 1), op("other", other, 1), op("k", k, 2), op("other", other, 2)],
    });
    assert!(matches!(out[0], Outcome::Refused(_)));
    assert_eq!(out[1], Outcome::Done);
    assert_eq!(out[2], Outcome::Refused(Refusal::AfterRefusal), "later ops of a refused key in the same batch");
    assert_eq!(out[3], Outcome::Done);
    assert_eq!(l.keys["other"].last_seq, 2);
}

#[test]
fn a_journal_number_is_never_reused_for_other_contents() {
    let mut l = granted();
    let c = open(&mut l, 1, "k");
    assert_eq!(l.apply(&append(1, "k", c, 1, b"debit 5")), vec![Outcome::Done]);
    // The same entry again (a retry): accepted, nothing changes.
    assert_eq!(l.apply(&append(1, "k", c, 1, b"debit 5")), vec![Outcome::Done]);
    // The same number with other contents: refused.
    let out = l.apply(&append(1, "k", c, 1, b"credit 5"));
    assert_eq!(out, vec![Outcome::Refused(Refusal::Conflict { seq: 1 })]);
    // A hole: refused.
    let out = l.apply(&append(1, "k", c, 3, b"x"));
    assert_eq!(out, vec![Outcome::Refused(Refusal::OutOfOrder { seq: 3, last: 1 })]);
    assert_eq!(l.keys["k"].journal.len(), 1);
}

#[test]
fn snapshots_keep_the_newest_and_drop_the_journal_they_cover() {
    let mut l = granted();
    let c = open(&mut l, 1, "k");
    for seq in 1..=4 {
        l.apply(&append(1, "k", c, seq, &[seq as u8]));
    }
    let snap = |seq: u64| Command::Write {
        node: 1,
        ops: vec![KeyOp {
            key: "k".into(),
            token: c.0,
            epoch: c.1,
            op: WriteKind::Snapshot { seq, bytes: vec![9], retain: 1, created_unix_ms: 0 },
        }],
    };
    assert_eq!(l.apply(&snap(3)), vec![Outcome::Done]);
    assert_eq!(l.keys["k"].journal.keys().copied().collect::<Vec<_>>(), vec![4]);
    assert!(matches!(l.apply(&snap(2))[0], Outcome::Refused(Refusal::StaleSnapshot { .. })));
    assert_eq!(l.apply(&snap(4)), vec![Outcome::Done]);
    assert_eq!(l.keys["k"].snapshots.keys().copied().collect::<Vec<_>>(), vec![4]);
    assert!(l.keys["k"].journal.is_empty());
    // A second snapshot of point 4 (a later incarnation's final snapshot, taken at another
    // time: other bytes) is accepted and changes nothing: stored snapshots never change.
    let again = Command::Write {
        node: 1,
        ops: vec![KeyOp {
            key: "k".into(),
            token: c.0,
            epoch: c.1,
            op: WriteKind::Snapshot { seq: 4, bytes: vec![7, 7], retain: 1, created_unix_ms: 5 },
        }],
    };
    assert_eq!(l.apply(&again), vec![Outcome::Done]);
    assert_eq!(*l.keys["k"].snapshots[&4].bytes, vec![9]);
}

#[test]
fn an_eviction_is_void_if_the_node_renewed_meanwhile() {
    let mut l = granted();
    let seen = l.nodes[&1].renewals;
    renew(&mut l, 1);
    let out = l.apply(&Command::Evict { node: 1, renewals: seen });
    assert!(matches!(out[0], Outcome::Refused(Refusal::RenewedMeanwhile { .. })));
    assert!(matches!(owner(&l, "s"), Ownership::Owned { node: 1, .. }));
    let now = l.nodes[&1].renewals;
    assert_eq!(l.apply(&Command::Evict { node: 1, renewals: now }), vec![Outcome::Done]);
    assert_eq!(owner(&l, "s"), Ownership::Unowned);
    assert_eq!(l.keys["k"].grant, None);
    // An evicted node gets nothing until it renews, and then owns nothing.
    assert!(matches!(l.apply(&Command::Grant { grants: vec![("s".into(), 1)] })[0], Outcome::Refused(_)));
    renew(&mut l, 1);
    assert!(l.is_live(1));
    assert_eq!(l.owned_by(1).count(), 0);
}

#[test]
fn a_handoff_moves_the_singleton_only_when_its_owner_releases_it() {
    let mut l = granted();
    let token = owner(&l, "s").holder().unwrap().1;
    l.apply(&Command::Handoff { moves: vec![("s".into(), 1, 2)] });
    // The owner still holds it (and may write its final snapshot) until it releases.
    let c = open(&mut l, 1, "k");
    assert_eq!(l.apply(&append(1, "k", c, 1, b"final")), vec![Outcome::Done]);
    assert!(matches!(
        l.apply(&Command::Release { node: 1, singletons: vec![("s".into(), token + 100)] })[0],
        Outcome::Refused(_)
    ));
    assert_eq!(l.apply(&Command::Release { node: 1, singletons: vec![("s".into(), token)] }), vec![Outcome::Done]);
    assert!(matches!(owner(&l, "s"), Ownership::Owned { node: 2, .. }));
    assert!(matches!(l.apply(&append(1, "k", c, 2, b"late"))[0], Outcome::Refused(_)));
}

#[test]
fn forgetting_a_node_calls_off_handoffs_towards_it() {
    let mut l = granted();
    let token = owner(&l, "s").holder().unwrap().1;
    l.apply(&Command::Handoff { moves: vec![("s".into(), 1, 2)] });
    l.apply(&Command::Forget { node: 2 });
    assert_eq!(owner(&l, "s"), Ownership::Owned { node: 1, token });
}

#[test]
fn plain_keys_belong_to_the_first_live_node_that_opens_them() {
    let mut l = granted();
    let (token, _) = open(&mut l, 1, "cache");
    assert!(matches!(
        l.apply(&Command::Open { node: 2, key: "cache".into() })[0],
        Outcome::Refused(Refusal::NotOwner { owner: 1 })
    ));
    // A singleton's key opens only on its owner.
    assert!(matches!(
        l.apply(&Command::Open { node: 2, key: "k".into() })[0],
        Outcome::Refused(Refusal::NotOwner { owner: 1 })
    ));
    let renewals = l.nodes[&1].renewals;
    l.apply(&Command::Evict { node: 1, renewals });
    let (taken, _) = open(&mut l, 2, "cache");
    assert!(taken > token, "taken over with a new token");
}

#[test]
fn the_same_log_gives_the_same_ledger() {
    let commands = [
        Command::Renew { node: 1, name: "n1".into(), addr: "a".into() },
        Command::Renew { node: 2, name: "n2".into(), addr: "b".into() },
        Command::Register { singletons: vec![("s".into(), vec!["k".into()])] },
        Command::Grant { grants: vec![("s".into(), 2)] },
        Command::Open { node: 2, key: "k".into() },
        Command::Evict { node: 1, renewals: 1 },
    ];
    let (mut a, mut b) = (Ledger::default(), Ledger::default());
    let out_a: Vec<_> = commands.iter().map(|c| a.apply(c)).collect();
    let out_b: Vec<_> = commands.iter().map(|c| b.apply(c)).collect();
    assert_eq!(out_a, out_b);
    assert_eq!(a, b);
}

#[test]
fn a_forgotten_node_cannot_come_back_by_renewing() {
    let mut l = granted();
    l.apply(&Command::Drain { node: 2 });
    assert_eq!(l.apply(&Command::Forget { node: 2 }), vec![Outcome::Done]);
    // A renewal it sent before it stopped arrives late: refused, the node stays gone.
    let late = l.apply(&Command::Renew { node: 2, name: "n2".into(), addr: String::new() });
    assert_eq!(late, vec![Outcome::Refused(Refusal::NotLive(2))]);
    assert!(!l.nodes.contains_key(&2));
}

#[test]
fn the_forgotten_list_keeps_the_newest_max_forgotten_ids() {
    let mut l = Ledger::default();
    let first = 1_000;
    for id in first..first + MAX_FORGOTTEN as u64 + 1 {
        l.apply(&Command::Renew { node: id, name: format!("n{id}"), addr: String::new() });
        assert_eq!(l.apply(&Command::Forget { node: id }), vec![Outcome::Done]);
    }
    assert_eq!(l.forgotten.len(), MAX_FORGOTTEN, "bounded");
    assert!(!l.forgotten.contains(&first), "the oldest went first");
    assert!(l.forgotten.contains(&(first + 1)));
    // What the bound costs: the id dropped from the list could renew again.
    let renewed = l.apply(&Command::Renew { node: first, name: "back".into(), addr: String::new() });
    assert_eq!(renewed, vec![Outcome::Renewed { renewals: 1 }]);
    let refused = l.apply(&Command::Renew { node: first + 1, name: "n".into(), addr: String::new() });
    assert_eq!(refused, vec![Outcome::Refused(Refusal::NotLive(first + 1))]);
}
