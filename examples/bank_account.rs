//! An event-sourced bank account in durable mode: no acknowledged deposit is ever lost.
//!
//! Shows: `EventSourced` (each change is an event, committed before the reply), a command that
//! is refused without persisting anything (an overdraft), panics between commands that lose
//! nothing acknowledged, recovery as the newest snapshot plus the journal after it, and the
//! snapshot listing.
//!
//! Run: `cargo run --example bank_account`

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use warden::checkpoint::{Checkpoint, CheckpointConfig, Checkpointed, Checkpoints, EventSourced, SnapshotPolicy};
use warden::prelude::*;

#[derive(Clone)]
struct Account;

enum Cmd {
    Deposit(u64, RpcReplyPort<Result<u64, String>>),
    Withdraw(u64, RpcReplyPort<Result<u64, String>>),
    Balance(RpcReplyPort<u64>),
    Crash,
}

#[derive(Serialize, Deserialize)]
enum Event {
    Deposited(u64),
    Withdrew(u64),
}

impl Actor for Account {
    type Msg = Cmd;
    type State = u64;
    type Arguments = ();
    async fn pre_start(&self, _: ActorRef<Cmd>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }
    async fn handle(&self, _: ActorRef<Cmd>, cmd: Cmd, balance: &mut u64) -> Result<(), ActorProcessingErr> {
        match cmd {
            Cmd::Deposit(n, reply) => {
                // Committed to the journal, applied, and only then acknowledged.
                self.persist(balance, Event::Deposited(n)).await?;
                let _ = reply.send(Ok(*balance));
            }
            Cmd::Withdraw(n, reply) if n > *balance => {
                let _ = reply.send(Err(format!("cannot withdraw {n}: balance is {balance}")));
            }
            Cmd::Withdraw(n, reply) => {
                self.persist(balance, Event::Withdrew(n)).await?;
                let _ = reply.send(Ok(*balance));
            }
            Cmd::Balance(reply) => {
                let _ = reply.send(*balance);
            }
            Cmd::Crash => panic!("a bug in the account"),
        }
        Ok(())
    }
}

impl Checkpoint for Account {
    type Snapshot = u64;
    fn snapshot(&self, balance: &u64) -> u64 {
        *balance
    }
    fn restore(&self, balance: &mut u64, saved: u64) {
        *balance = saved;
    }
}

impl EventSourced for Account {
    type Event = Event;
    fn apply(&self, balance: &mut u64, event: &Event) {
        match event {
            Event::Deposited(n) => *balance += n,
            Event::Withdrew(n) => *balance -= n,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn").init();
    let dir = tempfile::tempdir()?;
    let checkpoints = Checkpoints::open_dir(dir.path(), CheckpointConfig::default()).await?;
    // A snapshot every 10 events bounds the replay; keep the newest two.
    let policy = SnapshotPolicy::new().every_messages(10).retain(2);
    let spec = ChildSpec::worker("alice", Checkpointed::durable(Account, &checkpoints, "account/alice", policy), ());
    let alice = spec.handle();
    let bank = Supervisor::start("bank", SupervisorSpec::one_for_one().child(spec)).await?;
    let t = Some(Duration::from_secs(5));

    let mut acknowledged: i64 = 0;
    for i in 1..=25u64 {
        if let Ok(Ok(_)) = alice.call(|r| Cmd::Deposit(i, r), t).await {
            acknowledged += i as i64;
        }
        if i % 7 == 0 {
            alice.cast(Cmd::Crash)?; // the next command meets a restarted, restored account
        }
    }
    match alice.call(|r| Cmd::Withdraw(1_000, r), t).await? {
        Ok(b) => println!("withdrew 1000, balance {b}"),
        Err(refused) => println!("refused: {refused} (nothing persisted)"),
    }
    if let Ok(Ok(_)) = alice.call(|r| Cmd::Withdraw(100, r), t).await {
        acknowledged -= 100;
    }
    let balance = alice.call(Cmd::Balance, t).await?;
    println!(
        "balance {balance}, acknowledged total {acknowledged}: {}",
        if balance as i64 == acknowledged { "nothing lost" } else { "MISMATCH" }
    );
    for info in checkpoints.list("account/alice").await? {
        println!("snapshot #{} ({} bytes)", info.seq, info.size);
    }
    let restarts = bank.crash_reports().len();
    println!("{restarts} crashes, each followed by a restore from snapshot + journal");
    bank.shutdown().await;
    checkpoints.close().await?;
    anyhow::ensure!(balance as i64 == acknowledged, "an acknowledged update was lost");
    Ok(())
}
