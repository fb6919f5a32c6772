//! Checkpoint recovery: restarts restore state under every strategy, durable mode loses no
//! acknowledged update, damaged bytes fall back or fail per policy, migrations, the API.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use warden::checkpoint::envelope::{self, Kind};
use warden::checkpoint::{
    Cause, Checkpoint, CheckpointConfig, CheckpointError, CheckpointEvent, Checkpointed, Checkpoints, EventSourced,
    IfDamaged, MemoryStore, Migration, RedbStore, SnapshotPolicy, Store, WriteOp,
};
use warden::testkit::{inject_panic, EventProbe};
use warden::{ChildRef, ChildSpec, Supervisor, SupervisorEvent, SupervisorSpec};

const DEADLINE: Duration = Duration::from_secs(10);

fn unique(name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{name}-{}", N.fetch_add(1, Ordering::Relaxed))
}

// ---------- a checkpointed counter ----------

#[derive(Clone)]
struct Counter;

enum CMsg {
    Add(u64),
    Get(RpcReplyPort<u64>),
    Panic,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct CounterSnap {
    total: u64,
}

impl Actor for Counter {
    type Msg = CMsg;
    type State = u64;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<CMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }
    async fn handle(&self, _: ActorRef<CMsg>, msg: CMsg, total: &mut u64) -> Result<(), ActorProcessingErr> {
        match msg {
            CMsg::Add(n) => *total += n,
            CMsg::Get(r) => {
                let _ = r.send(*total);
            }
            CMsg::Panic => panic!("counter told to panic"),
        }
        Ok(())
    }
}

impl Checkpoint for Counter {
    type Snapshot = CounterSnap;
    fn snapshot(&self, total: &u64) -> CounterSnap {
        CounterSnap { total: *total }
    }
    fn restore(&self, total: &mut u64, snap: CounterSnap) {
        *total = snap.total;
    }
}

fn counter(ck: &Checkpoints, id: &str, key: &str, policy: SnapshotPolicy) -> (ChildSpec, ChildRef<CMsg>) {
    ChildSpec::worker(id, Checkpointed::new(Counter, ck, key, policy), ()).into_parts()
}

async fn get(h: &ChildRef<CMsg>) -> u64 {
    h.call(CMsg::Get, Some(DEADLINE)).await.expect("counter answers")
}

async fn memory_service() -> Checkpoints {
    Checkpoints::start(MemoryStore::new(), CheckpointConfig::default()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_for_one_restart_restores_the_last_snapshot() {
    let ck = memory_service().await;
    let key = unique("one");
    let (spec, h) = counter(&ck, "counter", &key, SnapshotPolicy::new().every_messages(1));
    let sup = Supervisor::start(&unique("app"), SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    let mut probe = EventProbe::new(&sup);
    for n in 1..=5 {
        h.cast(CMsg::Add(n)).unwrap();
    }
    assert_eq!(get(&h).await, 15);
    h.cast(CMsg::Panic).unwrap();
    let restored = probe
        .wait_for(DEADLINE, |e| matches!(e, SupervisorEvent::StateRestored { .. }))
        .await
        .expect("a StateRestored event");
    let SupervisorEvent::StateRestored { incarnation, from, .. } = restored else { unreachable!() };
    assert_eq!(incarnation, 2);
    assert_eq!(from.seq, 6, "six snapshots, one per message (five adds and a get)");
    assert_eq!(get(&h).await, 15, "the restarted counter resumes from its snapshot");
    // The crash report says which snapshot the next incarnation resumed from.
    let report = sup.crash_reports().into_iter().last().expect("a crash report");
    assert_eq!(report.restored.map(|r| r.seq), Some(6));
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_restarts_restore_every_member() {
    for (name, strategy) in [("all", SupervisorSpec::one_for_all()), ("rest", SupervisorSpec::rest_for_one())] {
        let ck = memory_service().await;
        let keys: Vec<String> = (0..3).map(|i| unique(&format!("{name}-{i}"))).collect();
        let mut spec = strategy;
        let mut handles = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let (s, h) = counter(&ck, &format!("c{i}"), key, SnapshotPolicy::new().every_messages(1));
            spec = spec.child(s);
            handles.push(h);
        }
        let sup = Supervisor::start(&unique(name), spec).await.unwrap();
        for (i, h) in handles.iter().enumerate() {
            h.cast(CMsg::Add(10 * (i as u64 + 1))).unwrap();
            assert_eq!(get(h).await, 10 * (i as u64 + 1));
        }
        let mut probe = EventProbe::new(&sup);
        handles[0].cast(CMsg::Panic).unwrap();
        // Every member is restarted by the group restart and restores its own state.
        for h in &handles {
            probe.restarted(&h.path(), DEADLINE).await.unwrap_or_else(|e| panic!("{name}: {e:?}"));
        }
        for (i, h) in handles.iter().enumerate() {
            assert_eq!(get(h).await, 10 * (i as u64 + 1), "{name}: member {i} restored");
        }
        sup.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_children_restore_too() {
    let ck = memory_service().await;
    let sup = Supervisor::start(&unique("dyn"), SupervisorSpec::dynamic(None)).await.unwrap();
    let key = unique("conn");
    // Every message counts towards the policy, reads included.
    let (spec, h) = counter(&ck, "conn", &key, SnapshotPolicy::new().every_messages(4));
    sup.start_child(spec).await.unwrap();
    for _ in 0..3 {
        h.cast(CMsg::Add(1)).unwrap();
    }
    assert_eq!(get(&h).await, 3); // the fourth message: snapshot of 3
    h.cast(CMsg::Add(100)).unwrap();
    assert_eq!(get(&h).await, 103); // messages five and six: no snapshot yet
    h.cast(CMsg::Panic).unwrap();
    // The recovery point is the last snapshot: changes after it are lost, as documented.
    assert_eq!(get(&h).await, 3);
    inject_panic(&h, "boom").await.unwrap();
    assert_eq!(get(&h).await, 3);
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_snapshots_and_a_new_process_restores_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let key = unique("disk");
    {
        let ck = Checkpoints::open_dir(dir.path(), CheckpointConfig::default()).await.unwrap();
        let (spec, h) = counter(&ck, "counter", &key, SnapshotPolicy::new()); // on stop only
        let sup = Supervisor::start(&unique("first"), SupervisorSpec::one_for_one().child(spec)).await.unwrap();
        h.cast(CMsg::Add(41)).unwrap();
        assert_eq!(get(&h).await, 41);
        sup.shutdown().await;
        ck.close().await.unwrap();
    }
    // Reopening the file stands for a new process: nothing is cached in memory.
    let ck = Checkpoints::open_dir(dir.path(), CheckpointConfig::default()).await.unwrap();
    let listed = ck.list(&key).await.unwrap();
    assert_eq!(listed.len(), 1, "one snapshot, taken on stop: {listed:?}");
    let header = ck.inspect(&key, listed[0].seq).await.unwrap().expect("present").expect("intact");
    assert_eq!(header.kind, Kind::Snapshot);
    let (spec, h) = counter(&ck, "counter", &key, SnapshotPolicy::new());
    let sup = Supervisor::start(&unique("second"), SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    assert_eq!(get(&h).await, 41);
    sup.shutdown().await;
    ck.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_and_on_demand_snapshots() {
    let ck = memory_service().await;
    let key = unique("tick");
    let policy = SnapshotPolicy::new().every(Duration::from_millis(20)).on_stop(false);
    let (spec, h) = counter(&ck, "counter", &key, policy);
    let sup = Supervisor::start(&unique("tick"), SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    h.cast(CMsg::Add(3)).unwrap();
    assert_eq!(get(&h).await, 3);
    // An idle actor with an unsaved change is snapshotted by its ticker.
    let until = tokio::time::Instant::now() + DEADLINE;
    while ck.list(&key).await.unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < until, "no interval snapshot within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = ck.list(&key).await.unwrap().len();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ck.list(&key).await.unwrap().len(), before, "no new snapshot without a change");
    // On demand: answered once committed.
    h.cast(CMsg::Add(4)).unwrap();
    let seq = ck.snapshot_now(&key).await.unwrap();
    // The ticker may add a newer one right after: look for this one, not the last.
    let listed = ck.list(&key).await.unwrap();
    let taken = listed.iter().find(|i| i.seq == seq).unwrap_or_else(|| panic!("{seq} not in {listed:?}"));
    assert!(taken.size > envelope::HEADER_LEN as u64);
    assert!(matches!(ck.snapshot_now("no-such-key").await, Err(CheckpointError::NotRunning(_))));
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_actors_cannot_share_a_key() {
    let ck = memory_service().await;
    let key = unique("shared");
    let (a, _) = counter(&ck, "a", &key, SnapshotPolicy::new());
    let (b, _) = counter(&ck, "b", &key, SnapshotPolicy::new());
    let err = Supervisor::start(&unique("dup"), SupervisorSpec::one_for_one().child(a).child(b)).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&key) && text.contains("already used"), "{text}");
}

// ---------- damage ----------

fn bad_snapshot(key: &str, seq: u64, bytes: Vec<u8>) -> WriteOp {
    WriteOp::Snapshot { key: Arc::from(key), seq, bytes, retain: 10, created_unix_ms: 0 }
}

fn good_snapshot(key: &str, seq: u64, total: u64) -> WriteOp {
    let bytes = envelope::encode(Kind::Snapshot, 1, seq, 0, &CounterSnap { total }).unwrap();
    bad_snapshot(key, seq, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_newest_snapshot_falls_back_to_the_previous_one() {
    let store = MemoryStore::new();
    let key = unique("dmg");
    let mut flipped = envelope::encode(Kind::Snapshot, 1, 3, 0, &CounterSnap { total: 30 }).unwrap();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    store.commit(&[good_snapshot(&key, 1, 10), good_snapshot(&key, 2, 20), bad_snapshot(&key, 3, flipped)]).unwrap();
    let ck = Checkpoints::start(store, CheckpointConfig::default()).await.unwrap();
    let mut events = ck.subscribe();
    let (spec, h) = counter(&ck, "counter", &key, SnapshotPolicy::new());
    let sup = Supervisor::start(&unique("dmg"), SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    assert_eq!(get(&h).await, 20, "restored from snapshot 2");
    let first = events.recv().await.unwrap();
    match first {
        CheckpointEvent::Corrupt { key: k, seq: 3, what: "snapshot", error } => {
            assert_eq!(k, key);
            assert!(error.to_string().contains("checksum"), "{error}");
        }
        other => panic!("expected a Corrupt event first, got {other:?}"),
    }
    // A crash later does not decode the bad bytes again (no event), and still restores 2.
    h.cast(CMsg::Panic).unwrap();
    assert_eq!(get(&h).await, 20);
    loop {
        match events.try_recv() {
            Ok(CheckpointEvent::Corrupt { .. }) => panic!("damage reported twice"),
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    sup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_usable_fails_the_start_or_starts_fresh_per_policy() {
    for (policy, fresh) in [(IfDamaged::FailStart, false), (IfDamaged::Continue, true)] {
        let store = MemoryStore::new();
        let key = unique("gone");
        store.commit(&[bad_snapshot(&key, 1, b"definitely not an envelope at all, long enough".to_vec())]).unwrap();
        let ck = Checkpoints::start(store, CheckpointConfig::default()).await.unwrap();
        let mut events = ck.subscribe();
        let (spec, h) = counter(&ck, "counter", &key, SnapshotPolicy::new().if_damaged(policy));
        let started = Supervisor::start(&unique("gone"), SupervisorSpec::one_for_one().child(spec)).await;
        if fresh {
            let sup = started.expect("Continue starts fresh");
            assert_eq!(get(&h).await, 0);
            let mut saw = false;
            while let Ok(e) = events.try_recv() {
                saw |= matches!(e, CheckpointEvent::StartedFreshAfterDamage { .. });
            }
            assert!(saw, "starting fresh after damage is reported");
            sup.shutdown().await;
        } else {
            let err = started.expect_err("FailStart refuses to start").to_string();
            assert!(err.contains(&key) && err.contains("magic"), "{err}");
        }
    }
}

// ---------- schema evolution ----------

#[derive(Clone)]
struct CounterV2;

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct CounterSnapV2 {
    cents: u64,
    #[serde(default)]
    note: String,
}

impl Actor for CounterV2 {
    type Msg = CMsg;
    type State = (u64, String);
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<CMsg>, _: ()) -> Result<(u64, String), ActorProcessingErr> {
        Ok((0, String::new()))
    }
    async fn handle(&self, _: ActorRef<CMsg>, msg: CMsg, st: &mut (u64, String)) -> Result<(), ActorProcessingErr> {
        if let CMsg::Get(r) = msg {
            let _ = r.send(st.0);
        }
        Ok(())
    }
}

impl Checkpoint for CounterV2 {
    type Snapshot = CounterSnapV2;
    const SCHEMA_VERSION: u32 = 2;
    fn snapshot(&self, st: &(u64, String)) -> CounterSnapV2 {
        CounterSnapV2 { cents: st.0, note: st.1.clone() }
    }
    fn restore(&self, st: &mut (u64, String), s: CounterSnapV2) {
        *st = (s.cents, s.note);
    }
    fn migrate(&self, old: Migration<'_>) -> Result<CounterSnapV2, Cause> {
        match old.version() {
            1 => {
                let v1: CounterSnap = old.decode()?;
                Ok(CounterSnapV2 { cents: v1.total * 100, note: "from v1".into() })
            }
            v => Err(Cause::msg(format!("unknown version {v}"))),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_snapshots_are_migrated() {
    let store = MemoryStore::new();
    let key = unique("mig");
    store.commit(&[good_snapshot(&key, 1, 7)]).unwrap(); // schema version 1
    let ck = Checkpoints::start(store, CheckpointConfig::default()).await.unwrap();
    let spec = ChildSpec::worker("c", Checkpointed::new(CounterV2, &ck, key.as_str(), SnapshotPolicy::new()), ());
    let h = spec.handle();
    let sup = Supervisor::start(&unique("mig"), SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    assert_eq!(get(&h).await, 700);
    sup.shutdown().await;
}

// ---------- durable mode ----------

#[derive(Clone)]
struct Account;

enum AMsg {
    Deposit(u64, RpcReplyPort<u64>),
    Balance(RpcReplyPort<u64>),
    Panic,
}

#[derive(Serialize, Deserialize)]
struct Deposited {
    amount: u64,
}

impl Actor for Account {
    type Msg = AMsg;
    type State = u64;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<AMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }
    async fn handle(&self, _: ActorRef<AMsg>, msg: AMsg, balance: &mut u64) -> Result<(), ActorProcessingErr> {
        match msg {
            AMsg::Deposit(amount, reply) => {
                let seq = self.persist(balance, Deposited { amount }).await?;
                let _ = reply.send(seq);
            }
            AMsg::Balance(reply) => {
                let _ = reply.send(*balance);
            }
            AMsg::Panic => panic!("account told to panic"),
        }
        Ok(())
    }
}

impl Checkpoint for Account {
    type Snapshot = u64;
    fn snapshot(&self, balance: &u64) -> u64 {
        *balance
    }
    fn restore(&self, balance: &mut u64, snap: u64) {
        *balance = snap;
    }
}

impl EventSourced for Account {
    type Event = Deposited;
    fn apply(&self, balance: &mut u64, e: &Deposited) {
        *balance += e.amount;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_mode_loses_no_acknowledged_update_across_panics() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path()).unwrap();
    let ck = Checkpoints::start(store, CheckpointConfig::default()).await.unwrap();
    let key = unique("acct");
    let policy = SnapshotPolicy::new().every_messages(7).retain(2);
    let spec = ChildSpec::worker("acct", Checkpointed::durable(Account, &ck, key.as_str(), policy), ());
    let h = spec.handle();
    let sup = Supervisor::start(
        &unique("bank"),
        SupervisorSpec::one_for_one().intensity(1000, Duration::from_secs(1)).child(spec),
    )
    .await
    .unwrap();
    let mut acknowledged = 0u64;
    for i in 1..=60u64 {
        // A deposit whose answer arrives is acknowledged; one lost to a crash is not.
        if let Ok(_seq) = h.call(|r| AMsg::Deposit(i, r), Some(DEADLINE)).await {
            acknowledged += i;
        }
        if i % 9 == 0 {
            h.cast(AMsg::Panic).unwrap();
        }
    }
    let balance = h.call(AMsg::Balance, Some(DEADLINE)).await.unwrap();
    assert_eq!(balance, acknowledged, "every acknowledged deposit is in the balance, nothing more");
    assert_eq!(acknowledged, (1..=60).sum::<u64>(), "a panic between calls loses no call");
    // Snapshots bound replay and retention drops what they cover.
    let snaps = ck.list(&key).await.unwrap();
    assert!(!snaps.is_empty() && snaps.len() <= 2, "{snaps:?}");
    let oldest = snaps[0].seq;
    let journal = ck.store().unwrap().journal_after(&key, 0).unwrap();
    assert!(journal.iter().all(|(s, _)| *s > oldest), "entries covered by the oldest kept snapshot are gone");
    sup.shutdown().await;
    ck.close().await.unwrap();
    // A new process (the file reopened) sees the same balance.
    let ck = Checkpoints::open_dir(dir.path(), CheckpointConfig::default()).await.unwrap();
    let spec = ChildSpec::worker("acct", Checkpointed::durable(Account, &ck, key.as_str(), SnapshotPolicy::new()), ());
    let h = spec.handle();
    let sup = Supervisor::start(&unique("bank2"), SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    assert_eq!(h.call(AMsg::Balance, Some(DEADLINE)).await.unwrap(), acknowledged);
    sup.shutdown().await;
    ck.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_outside_a_durable_actor_is_an_error() {
    let mut balance = 0;
    let err = Account.persist(&mut balance, Deposited { amount: 1 }).await.unwrap_err();
    assert!(matches!(err, warden::checkpoint::PersistError::NotDurable), "{err:?}");
    assert_eq!(balance, 0, "nothing applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_store_copies_snapshots_to_the_replica() {
    let replica = MemoryStore::new();
    let store = warden::checkpoint::Replicated::new(MemoryStore::new(), replica.clone());
    let ck = Checkpoints::start(store, CheckpointConfig::default()).await.unwrap();
    let key = unique("rep");
    // On demand only: `snapshot_now` answers once the commit (and so the replication) is done.
    let policy = SnapshotPolicy::new().on_demand(true).on_stop(false);
    let (spec, h) = counter(&ck, "counter", &key, policy);
    let sup = Supervisor::start(&unique("rep"), SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    h.cast(CMsg::Add(9)).unwrap();
    assert_eq!(get(&h).await, 9);
    ck.snapshot_now(&key).await.unwrap();
    let copied = replica.snapshots(&key).unwrap();
    assert!(!copied.is_empty());
    assert_eq!(copied, ck.list(&key).await.unwrap(), "the replica holds what the primary holds");
    // The replica alone is enough to restore (what the cluster layer relies on).
    let from_replica = Checkpoints::start(replica, CheckpointConfig::default()).await.unwrap();
    sup.shutdown().await;
    let (spec, h2) = counter(&from_replica, "counter", &key, SnapshotPolicy::new());
    let sup2 = Supervisor::start(&unique("rep2"), SupervisorSpec::one_for_one().child(spec)).await.unwrap();
    assert!(get(&h2).await >= 9);
    sup2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_between_snapshots_do_not_postpone_them() {
    let ck = memory_service().await;
    let key = unique("postpone");
    let policy = SnapshotPolicy::new().every_messages(10).on_stop(false);
    let spec = ChildSpec::worker("acct", Checkpointed::durable(Account, &ck, key.as_str(), policy), ());
    let h = spec.handle();
    let sup = Supervisor::start(
        &unique("pp"),
        SupervisorSpec::one_for_one().intensity(100, Duration::from_secs(1)).child(spec),
    )
    .await
    .unwrap();
    for i in 1..=30u64 {
        h.call(|r| AMsg::Deposit(1, r), Some(DEADLINE)).await.unwrap();
        if i % 7 == 0 {
            h.cast(AMsg::Panic).unwrap();
        }
    }
    // The snapshot after the 30th event is handed over after its reply: one more message makes
    // sure it was, and the flush that it is written.
    h.call(AMsg::Balance, Some(DEADLINE)).await.unwrap();
    ck.flush().await.unwrap();
    let seqs: Vec<u64> = ck.list(&key).await.unwrap().iter().map(|i| i.seq).collect();
    assert_eq!(seqs, vec![10, 20, 30], "a snapshot every 10 events, crashes or not");
    sup.shutdown().await;
}
